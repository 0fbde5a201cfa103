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

BatchNorm is the stateful layer jnn ships. Its design:

- ``init`` returns ``params = {"scale", "bias"}`` (trainable) and
  ``state = {"mean": zeros, "var": ones}`` (running statistics), apart.
- ``apply(params, state, x, train=True)`` normalizes with the batch's mean and
  (biased) variance over every axis but the last, and returns the state moved
  by ``momentum`` towards them, computed under ``stop_gradient``;
  ``train=False`` normalizes with the running statistics and returns the state
  unchanged. ``train`` is a Python bool: each mode is its own trace.
- State goes in and out as values, so everything stays pure: no mutable
  collections, and ``jit``/``grad``/``vmap`` apply as to any function
  (``BatchNorm(axis_name=...)`` averages statistics over a vmapped or sharded
  axis). ``serial``/``parallel``/``residual`` nest child states under the same
  names as their params (``{"batch_norm_0": {"mean", "var"}}``).
- :func:`jnn.fit` keeps the state in ``TrainState.model_state``, threads it
  through the compiled ``lax.scan`` (the step's forward pass returns it as an
  auxiliary output of ``value_and_grad``), and hands it back as
  ``result.model_state``; gradients and the optimizer only ever see
  ``params``. ``evaluate``/``predict`` take ``model_state=`` and run in eval
  mode. The padded last batch of an epoch is filled with other real examples
  (weight 0 in the loss), so batch statistics never see fake rows.

Layers with several inputs take them as a tuple, exactly like
:func:`parallel`: ``apply(params, (a, b), ...)`` and ``init`` gets the tuple of
shapes ``((-1, T, D), (-1, S, E))``. ``MultiHeadAttention`` accepts ``x``
(self-attention), ``(query, key_value)`` or ``(query, key_value, mask)``, so
self-attention drops into ``serial``/``residual`` unchanged. The recurrent
layers (``SimpleRNN``, ``LSTM``, ``GRU``, ``Bidirectional``) accept ``x``
``(*batch, T, F)``, ``(x, mask)`` or ``(x, mask, initial_state)``; masked
steps keep the state and output zeros, and with ``return_sequences=True`` a
masked layer returns ``(outputs, mask)`` so that the next one in ``serial``
sees the same padding.

Deep stacks: :func:`repeat` applies ``n`` copies of a layer (params stacked on
a leading axis) with one ``lax.scan``, so the program holds the layer once;
:func:`remat` recomputes a layer's activations in the backward pass.

Constructors are CamelCase (``Dense``, ``Conv``, ``BatchNorm``); combinators are
snake_case (``serial``, ``parallel``, ``residual``). Spatial layers (``Conv``,
pools) are channels-last, ``(*batch, *spatial, channels)``, and take any
number of leading batch axes, including none under ``vmap``.

Example: a ResNet block and a pre-norm transformer block.

  >>> import jax, jnn
  >>> resnet_block = jnn.serial(
  ...     jnn.residual(jnn.Conv(16, (3, 3)), jnn.BatchNorm(), jnn.Relu(),
  ...                  jnn.Conv(16, (3, 3)), jnn.BatchNorm()),
  ...     jnn.Relu())
  >>> shape, params, state = resnet_block.init(jax.random.key(0), (-1, 8, 8, 16))
  >>> sorted(state["residual_0"]["batch_norm_1"]), state["residual_0"]["conv_0"]
  (['mean', 'var'], {})
  >>> transformer_block = jnn.serial(
  ...     jnn.residual(jnn.LayerNorm(), jnn.MultiHeadAttention(4, causal=True)),
  ...     jnn.residual(jnn.LayerNorm(), jnn.Dense(128, activation="gelu"), jnn.Dense(32)))
  >>> transformer_block.init(jax.random.key(0), (-1, 10, 32))[0]
  (-1, 10, 32)
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
from jnn.layers._base import (
    Layer,
    LayerSpec,
    StatefulLayer,
    describe,
    is_stateful,
    spec_of,
    stateful,
)
from jnn.layers._bidirectional import Bidirectional
from jnn.layers._cells import GRUCell, LSTMCell
from jnn.layers._combinators import FanInConcat, FanInSum, FanOut, parallel, residual, serial
from jnn.layers._conv import Conv, ConvTranspose
from jnn.layers._core import Dense, Dropout, Flatten, Identity
from jnn.layers._embed import Embedding, PositionalEmbedding
from jnn.layers._norm import BatchNorm, LayerNorm, RMSNorm
from jnn.layers._pool import AvgPool, GlobalAvgPool, GlobalMaxPool, MaxPool, Reshape
from jnn.layers._recurrent import GRU, LSTM, SimpleRNN, sequence_mask
from jnn.layers._repeat import remat, repeat

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "AvgPool",
    "BatchNorm",
    "Bidirectional",
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
    "GRU",
    "GRUCell",
    "Gelu",
    "GlobalAvgPool",
    "GlobalMaxPool",
    "Identity",
    "LSTM",
    "LSTMCell",
    "Layer",
    "LayerNorm",
    "LayerSpec",
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
    "SimpleRNN",
    "Softmax",
    "Softplus",
    "StatefulLayer",
    "Tanh",
    "attention_mask",
    "describe",
    "get_activation",
    "is_stateful",
    "parallel",
    "remat",
    "repeat",
    "residual",
    "sequence_mask",
    "serial",
    "sigmoid",
    "spec_of",
    "stateful",
]
