"""jnn: a functional neural-network training library on JAX.

Layers are pairs of pure functions ``(init, apply)``; losses and metrics are
pure functions of arrays; training is one compiled ``lax.scan`` per epoch.
Everything is a pytree and composes with ``jax.jit``, ``jax.grad`` and
``jax.vmap``.

Example:
  >>> import jax, jnn
  >>> model = jnn.serial(jnn.Dense(10, activation="relu"),
  ...                    jnn.Dense(10, activation="relu"),
  ...                    jnn.Dense(1, activation="sigmoid"))
  >>> out_shape, params = model.init(jax.random.key(0), (-1, 10))
  >>> out_shape
  (-1, 1)
"""

from jnn import distributed, layers, losses, metrics
from jnn._version import __version__
from jnn.layers import (
    Activation,
    Dense,
    Dropout,
    Elu,
    FanInConcat,
    FanInSum,
    FanOut,
    Flatten,
    Gelu,
    Identity,
    Layer,
    LeakyRelu,
    LogSoftmax,
    Relu,
    Selu,
    Sigmoid,
    Silu,
    Softmax,
    Softplus,
    StatefulLayer,
    Tanh,
    is_stateful,
    parallel,
    residual,
    serial,
    stateful,
)
from jnn.train import (
    Callback,
    EarlyStopping,
    FitResult,
    TrainState,
    evaluate,
    fit,
    get_optimizer,
    make_train_step,
    predict,
)

__all__ = [
    "Activation",
    "Callback",
    "Dense",
    "Dropout",
    "EarlyStopping",
    "Elu",
    "FanInConcat",
    "FanInSum",
    "FanOut",
    "FitResult",
    "Flatten",
    "Gelu",
    "Identity",
    "Layer",
    "LeakyRelu",
    "LogSoftmax",
    "Relu",
    "Selu",
    "Sigmoid",
    "Silu",
    "Softmax",
    "Softplus",
    "StatefulLayer",
    "Tanh",
    "TrainState",
    "__version__",
    "distributed",
    "evaluate",
    "fit",
    "get_optimizer",
    "is_stateful",
    "layers",
    "losses",
    "make_train_step",
    "metrics",
    "parallel",
    "predict",
    "residual",
    "serial",
    "stateful",
]
