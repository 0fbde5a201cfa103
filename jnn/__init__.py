"""jnn: a functional neural-network training library on JAX.

Layers are pairs of pure functions ``(init, apply)``; losses and metrics are
pure functions of arrays; training is one compiled ``lax.scan`` per epoch.
Everything is a pytree and composes with ``jax.jit``, ``jax.grad`` and
``jax.vmap``.

``import jnn`` is cheap: each public name is imported from its home module
on first use (:pep:`562`), so the JAX-free parts (``jnn serve model.onnx``,
:mod:`jnn.cli`) never import jax.

Example:
  >>> import jax, jnn
  >>> model = jnn.serial(jnn.Dense(10, activation="relu"),
  ...                    jnn.Dense(10, activation="relu"),
  ...                    jnn.Dense(1, activation="sigmoid"))
  >>> out_shape, params = model.init(jax.random.key(0), (-1, 10))
  >>> out_shape
  (-1, 1)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from jnn._version import __version__

# Each public name -> the module it comes from (a name equal to its module's is the module).
# To add a public name: add its line here, and its import in the TYPE_CHECKING block below
# (for type checkers); tests/test_public_api.py fails if the two lists disagree.
_LAZY: dict[str, str] = {
    "Activation": "jnn.layers",
    "AvgPool": "jnn.layers",
    "BatchNorm": "jnn.layers",
    "Bidirectional": "jnn.layers",
    "Callback": "jnn.train",
    "Conv": "jnn.layers",
    "ConvTranspose": "jnn.layers",
    "Dense": "jnn.layers",
    "Dropout": "jnn.layers",
    "EarlyStopping": "jnn.train",
    "Elu": "jnn.layers",
    "Embedding": "jnn.layers",
    "FanInConcat": "jnn.layers",
    "FanInSum": "jnn.layers",
    "FanOut": "jnn.layers",
    "FitResult": "jnn.train",
    "Flatten": "jnn.layers",
    "GRU": "jnn.layers",
    "GRUCell": "jnn.layers",
    "Gelu": "jnn.layers",
    "GlobalAvgPool": "jnn.layers",
    "GlobalMaxPool": "jnn.layers",
    "Identity": "jnn.layers",
    "LSTM": "jnn.layers",
    "LSTMCell": "jnn.layers",
    "Layer": "jnn.layers",
    "LayerNorm": "jnn.layers",
    "LeakyRelu": "jnn.layers",
    "LogSoftmax": "jnn.layers",
    "MaxPool": "jnn.layers",
    "MultiHeadAttention": "jnn.layers",
    "NonFiniteError": "jnn.train",
    "PositionalEmbedding": "jnn.layers",
    "RMSNorm": "jnn.layers",
    "Relu": "jnn.layers",
    "Reshape": "jnn.layers",
    "Selu": "jnn.layers",
    "Sigmoid": "jnn.layers",
    "Silu": "jnn.layers",
    "SimpleRNN": "jnn.layers",
    "Softmax": "jnn.layers",
    "Softplus": "jnn.layers",
    "StatefulLayer": "jnn.layers",
    "Tanh": "jnn.layers",
    "TrainState": "jnn.train",
    "callbacks": "jnn.callbacks",
    "checkpoint": "jnn.checkpoint",
    "compile_cache": "jnn.train",
    "distributed": "jnn.distributed",
    "evaluate": "jnn.train",
    "experiments": "jnn.experiments",
    "fit": "jnn.train",
    "get_optimizer": "jnn.train",
    "is_stateful": "jnn.layers",
    "layers": "jnn.layers",
    "losses": "jnn.losses",
    "make_train_step": "jnn.train",
    "metrics": "jnn.metrics",
    "parallel": "jnn.layers",
    "predict": "jnn.train",
    "remat": "jnn.layers",
    "repeat": "jnn.layers",
    "residual": "jnn.layers",
    "serial": "jnn.layers",
    "stateful": "jnn.layers",
    "summary": "jnn.summary",  # the module, callable: jnn.summary(model, shape) is summary()
}

if TYPE_CHECKING:
    from jnn import callbacks, checkpoint, distributed, experiments, layers, losses, metrics
    from jnn.layers import (
        GRU,
        LSTM,
        Activation,
        AvgPool,
        BatchNorm,
        Bidirectional,
        Conv,
        ConvTranspose,
        Dense,
        Dropout,
        Elu,
        Embedding,
        FanInConcat,
        FanInSum,
        FanOut,
        Flatten,
        Gelu,
        GlobalAvgPool,
        GlobalMaxPool,
        GRUCell,
        Identity,
        Layer,
        LayerNorm,
        LeakyRelu,
        LogSoftmax,
        LSTMCell,
        MaxPool,
        MultiHeadAttention,
        PositionalEmbedding,
        Relu,
        Reshape,
        RMSNorm,
        Selu,
        Sigmoid,
        Silu,
        SimpleRNN,
        Softmax,
        Softplus,
        StatefulLayer,
        Tanh,
        is_stateful,
        parallel,
        remat,
        repeat,
        residual,
        serial,
        stateful,
    )
    from jnn.summary import summary
    from jnn.train import (
        Callback,
        EarlyStopping,
        FitResult,
        NonFiniteError,
        TrainState,
        compile_cache,
        evaluate,
        fit,
        get_optimizer,
        make_train_step,
        predict,
    )

__all__ = [*sorted(_LAZY), "__version__"]


def __getattr__(name: str) -> Any:
    """Import a public name from its home module on first use (then it is a plain global)."""
    home = _LAZY.get(name)
    if home is None:
        raise AttributeError(f"module 'jnn' has no attribute {name!r}")
    module = importlib.import_module(home)
    value = module if home == f"jnn.{name}" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
