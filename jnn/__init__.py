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

from jnn import experiments, layers, losses, metrics
from jnn._version import __version__
from jnn.layers import (
    Activation,
    AvgPool,
    BatchNorm,
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
    Identity,
    Layer,
    LayerNorm,
    LeakyRelu,
    LogSoftmax,
    MaxPool,
    MultiHeadAttention,
    PositionalEmbedding,
    Relu,
    Reshape,
    RMSNorm,
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
from jnn.summary import summary
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
    "AvgPool",
    "BatchNorm",
    "Callback",
    "Conv",
    "ConvTranspose",
    "Dense",
    "Dropout",
    "EarlyStopping",
    "Elu",
    "Embedding",
    "FanInConcat",
    "FanInSum",
    "FanOut",
    "FitResult",
    "Flatten",
    "Gelu",
    "GlobalAvgPool",
    "GlobalMaxPool",
    "Identity",
    "Layer",
    "LayerNorm",
    "LeakyRelu",
    "LogSoftmax",
    "MaxPool",
    "MultiHeadAttention",
    "PositionalEmbedding",
    "RMSNorm",
    "Relu",
    "Reshape",
    "Selu",
    "Sigmoid",
    "Silu",
    "Softmax",
    "Softplus",
    "StatefulLayer",
    "Tanh",
    "TrainState",
    "__version__",
    "evaluate",
    "experiments",
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
    "summary",
]
