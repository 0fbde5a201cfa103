"""Layers: pairs of pure functions ``(init, apply)``, and their combinators.

A :class:`Layer` is a NamedTuple of two functions (the stax idea)::

    init(key, input_shape) -> (output_shape, params)
    apply(params, x, *, key=None, train=False) -> y

``init`` threads shapes forward without running the network, with ``-1`` or
``None`` for the batch dimension. ``params`` are nested dicts with string keys.
Kernels are ``(in, out)``; ``apply`` works on any leading batch dimensions.

Stateful layers (BatchNorm's running statistics) are :class:`StatefulLayer`:
``init`` also returns ``state`` and ``apply(params, state, x, ...)`` returns
``(y, new_state)``. State lives apart from params, so an optimizer never
touches it; combinators become stateful only when a child is, and
:func:`jnn.fit`, :func:`jnn.evaluate` and :func:`jnn.predict` handle both kinds.

Constructors are CamelCase (``Dense``, ``Relu``, ``Dropout``); combinators are
snake_case (``serial``, ``parallel``, ``residual``).
"""

from jnn.layers._activations import (
    ACTIVATIONS,
    Activation,
    Elu,
    Gelu,
    LeakyRelu,
    LogSoftmax,
    Relu,
    Selu,
    Sigmoid,
    Silu,
    Softmax,
    Softplus,
    Tanh,
    get_activation,
    sigmoid,
)
from jnn.layers._attention import MultiHeadAttention, attention_mask
from jnn.layers._base import Layer, StatefulLayer, is_stateful, stateful
from jnn.layers._combinators import FanInConcat, FanInSum, FanOut, parallel, residual, serial
from jnn.layers._conv import Conv, ConvTranspose
from jnn.layers._core import Dense, Dropout, Flatten, Identity
from jnn.layers._embed import Embedding, PositionalEmbedding
from jnn.layers._norm import BatchNorm, LayerNorm, RMSNorm
from jnn.layers._pool import AvgPool, GlobalAvgPool, GlobalMaxPool, MaxPool, Reshape

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "AvgPool",
    "BatchNorm",
    "Conv",
    "ConvTranspose",
    "Dense",
    "Dropout",
    "Elu",
    "Embedding",
    "FanInConcat",
    "FanInSum",
    "FanOut",
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
    "attention_mask",
    "get_activation",
    "is_stateful",
    "parallel",
    "residual",
    "serial",
    "sigmoid",
    "stateful",
]
