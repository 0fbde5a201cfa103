"""Recurrent cells: one time step of a SimpleRNN, LSTM or GRU (private module).

The math of each recurrence lives here once, as a :class:`Recurrence` (param
init, zero state, one step), and is shared by the public cells
(:func:`LSTMCell`, :func:`GRUCell`) and the sequence layers of
``jnn/layers/_recurrent.py``, which scan the same step over time.

Params are ``{"w_ih": (F, G*H), "w_hh": (H, G*H), ...biases}``: an input
kernel and a recurrent kernel holding the ``G`` gates side by side, in
PyTorch's gate order, so a torch weight maps across by a transpose
(``w_ih = weight_ih_l0.T``, ``w_hh = weight_hh_l0.T``):

- LSTM, gates ``(i, f, g, o)``: ``b = bias_ih_l0 + bias_hh_l0`` (one bias;
  torch's two only ever appear summed). State ``(h, c)``.
- GRU, gates ``(r, z, n)``: ``b_ih = bias_ih_l0``, ``b_hh = bias_hh_l0`` (two
  biases: the reset gate multiplies the recurrent candidate *with* its bias,
  torch's and Keras's ``reset_after=True`` variant). State ``h``.
- SimpleRNN: ``b = bias_ih_l0 + bias_hh_l0``. State ``h``.

A step computes its input projection ``x_t @ w_ih + b`` and adds the recurrent
part ``h @ w_hh``; the projection is not hoisted out of the time loop, which on
XLA:CPU made training ~3x slower (``benchmarks/bench_lstm.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.nn import initializers

from jnn._data import check_key, check_positive_int
from jnn._typing import ActivationLike, Array, Params, PRNGKey
from jnn.layers._activations import get_activation
from jnn.layers._base import Layer, check_inexact, describe, init_param, normalize_shape

Initializer = Callable[..., Array]
#: Keras's defaults: glorot-uniform input kernels, orthogonal recurrent kernels.
GLOROT_UNIFORM = initializers.glorot_uniform()
ORTHOGONAL = initializers.orthogonal()
RecurrentState = Any  # h, or (h, c) for an LSTM


class Recurrence(NamedTuple):
    """One recurrence (private): what a cell and a sequence layer share.

    ``init(key, in_dim) -> params``; ``zero_state(batch, dtype) -> state`` for
    a batch of shape ``batch``; ``step(params, state, xw) -> (state, y)`` where
    ``xw = x_t @ w_ih + params[input_bias]`` is this step's input projection.
    """

    kind: str
    features: int
    init: Callable[[PRNGKey, int], Params]
    zero_state: Callable[[tuple[int, ...], Any], RecurrentState]
    step: Callable[[Params, RecurrentState, Array], tuple[RecurrentState, Array]]
    input_bias: str  # the key of the bias added to the input projection
    state_is_pair: bool  # (h, c) rather than h


def _kernels(name, key, in_dim, features, gates, kernel_init, recurrent_init, dtype) -> Params:
    """The input and recurrent kernels, through init_param (sizes checked, named)."""
    k_in, k_rec = jax.random.split(key)
    return {
        "w_ih": init_param(name, "w_ih", kernel_init, k_in, (in_dim, gates * features), dtype),
        "w_hh": init_param(
            name, "w_hh", recurrent_init, k_rec, (features, gates * features), dtype
        ),
    }


def _plus_bias(y: Array, b: Array) -> Array:
    """``y + b`` for a per-unit ``b``, reshaped to ``y``'s rank (no implicit rank promotion)."""
    return y + b.reshape((1,) * (y.ndim - 1) + b.shape)


def _h_state(features: int) -> Callable:
    return lambda batch, dtype: jnp.zeros((*batch, features), dtype)


def simple_rnn(
    features: int,
    activation: ActivationLike,
    kernel_init: Initializer,
    recurrent_init: Initializer,
    bias_init: Initializer,
    dtype: Any,
) -> Recurrence:
    """``h' = activation(x @ w_ih + h @ w_hh + b)``; the output is ``h'``."""
    act = get_activation(activation)

    def init(key: PRNGKey, in_dim: int) -> Params:
        key, k_b = jax.random.split(key)
        name = f"SimpleRNN({features})"
        params = _kernels(name, key, in_dim, features, 1, kernel_init, recurrent_init, dtype)
        params["b"] = init_param(name, "b", bias_init, k_b, (features,), dtype)
        return params

    def step(params: Params, h: Array, xw: Array) -> tuple[Array, Array]:
        h = act(xw + h @ params["w_hh"])
        return h, h

    return Recurrence("simple_rnn", features, init, _h_state(features), step, "b", False)


def lstm(
    features: int,
    kernel_init: Initializer,
    recurrent_init: Initializer,
    bias_init: Initializer,
    unit_forget_bias: bool,
    dtype: Any,
) -> Recurrence:
    """Gates ``(i, f, g, o)``: ``c' = s(f) c + s(i) tanh(g)``, ``h' = s(o) tanh(c')``, s sigmoid."""

    def init(key: PRNGKey, in_dim: int) -> Params:
        key, k_b = jax.random.split(key)
        name = f"LSTM({features})"
        params = _kernels(name, key, in_dim, features, 4, kernel_init, recurrent_init, dtype)
        b = init_param(name, "b", bias_init, k_b, (4 * features,), dtype)
        if unit_forget_bias:  # Keras's unit_forget_bias: the forget gate starts open
            b = b.at[features : 2 * features].set(1.0)
        params["b"] = b
        return params

    def zero_state(batch: tuple[int, ...], dtype: Any) -> tuple[Array, Array]:
        return (jnp.zeros((*batch, features), dtype), jnp.zeros((*batch, features), dtype))

    def step(params: Params, state: tuple[Array, Array], xw: Array):
        h, c = state
        i, f, g, o = jnp.split(xw + h @ params["w_hh"], 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    return Recurrence("lstm", features, init, zero_state, step, "b", True)


def gru(
    features: int,
    kernel_init: Initializer,
    recurrent_init: Initializer,
    bias_init: Initializer,
    dtype: Any,
) -> Recurrence:
    """Gates ``(r, z, n)``, reset after the recurrent matmul (torch's GRU, Keras ``reset_after``).

    ``r = sigmoid(x_r + h_r)``, ``z = sigmoid(x_z + h_z)``, ``n = tanh(x_n + r * h_n)``,
    ``h' = (1 - z) n + z h``, where ``x_* = x @ w_ih + b_ih`` and
    ``h_* = h @ w_hh + b_hh`` (per gate).
    """

    def init(key: PRNGKey, in_dim: int) -> Params:
        key, k_bi, k_bh = jax.random.split(key, 3)
        name = f"GRU({features})"
        params = _kernels(name, key, in_dim, features, 3, kernel_init, recurrent_init, dtype)
        params["b_ih"] = init_param(name, "b_ih", bias_init, k_bi, (3 * features,), dtype)
        params["b_hh"] = init_param(name, "b_hh", bias_init, k_bh, (3 * features,), dtype)
        return params

    def step(params: Params, h: Array, xw: Array) -> tuple[Array, Array]:
        x_r, x_z, x_n = jnp.split(xw, 3, axis=-1)
        h_r, h_z, h_n = jnp.split(_plus_bias(h @ params["w_hh"], params["b_hh"]), 3, axis=-1)
        r = jax.nn.sigmoid(x_r + h_r)
        z = jax.nn.sigmoid(x_z + h_z)
        n = jnp.tanh(x_n + r * h_n)
        h = (1.0 - z) * n + z * h
        return h, h

    return Recurrence("gru", features, init, _h_state(features), step, "b_ih", False)


def check_features(name: str, params: Params, x: Array) -> None:
    """A clear error, naming the layer, when ``x``'s last axis is not the input kernel's."""
    w = params["w_ih"]
    if x.shape[-1] != w.shape[0]:
        raise ValueError(
            f"{name}: expected inputs with {w.shape[0]} features (the last axis), got shape "
            f"{tuple(x.shape)}. The last axis must hold the features the layer was initialized "
            "with."
        )


def input_projection(rec: Recurrence, params: Params, x: Array) -> Array:
    """``x @ w_ih + bias`` for one step ``(*batch, F)`` (features checked beforehand)."""
    return _plus_bias(x @ params["w_ih"].astype(x.dtype), params[rec.input_bias].astype(x.dtype))


def state_shapes(rec: Recurrence, batch: tuple[int, ...]) -> Any:
    """The shape (or ``(h, c)`` pair of shapes) of the state for a batch of shape ``batch``."""
    shape = (*batch, rec.features)
    return (shape, shape) if rec.state_is_pair else shape


def check_state(name: str, rec: Recurrence, state: Any, batch: tuple[int, ...]) -> RecurrentState:
    """``state`` as arrays of exactly the shapes the layer needs, or a clear error."""
    want = state_shapes(rec, batch)
    form = "a pair (h, c)" if rec.state_is_pair else "an array h"
    if rec.state_is_pair and (not isinstance(state, (tuple, list)) or len(state) != 2):
        raise ValueError(f"{name}: the state must be {form} of shapes {want}, got {_desc(state)}.")
    leaves = tuple(state) if rec.state_is_pair else (state,)
    arrays = tuple(check_inexact(f"{name}: state", leaf) for leaf in leaves)
    got = tuple(tuple(a.shape) for a in arrays)
    if got != (want if rec.state_is_pair else (want,)):
        raise ValueError(
            f"{name}: the state must be {form} of shape {want[0] if rec.state_is_pair else want} "
            f"each (batch axes, then features), got {got if rec.state_is_pair else got[0]}."
        )
    return arrays if rec.state_is_pair else arrays[0]


def _desc(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of length {len(value)}"
    shape = getattr(value, "shape", None)
    return f"shape {tuple(shape)}" if shape is not None else type(value).__name__


def _cell(rec: Recurrence, name: str, config: dict[str, Any]) -> Layer:
    """A Layer over one time step: ``x`` or ``(x, state)`` -> ``(y, new_state)``."""

    def init(key: PRNGKey, input_shape: Any) -> tuple[Any, Params]:
        if isinstance(input_shape, (tuple, list)) and input_shape and _is_shape(input_shape[0]):
            # (x_shape, state_shape): only x's shape matters
            if len(input_shape) != 2:
                raise ValueError(
                    f"{name}.init: expected the shape of x, or of (x, state), got {input_shape!r}."
                )
            input_shape = input_shape[0]
        shape = normalize_shape(name, input_shape)
        if not shape or shape[-1] == -1:
            raise ValueError(
                f"{name}.init: expected the shape of one step's input (*batch, features) with "
                f"known features, got {shape}."
            )
        params = rec.init(check_key(f"{name}.init", key), shape[-1])
        return ((*shape[:-1], rec.features), state_shapes(rec, shape[:-1])), params

    def apply(params: Params, x: Any, *, key: PRNGKey | None = None, train: bool = False):
        del key, train
        if isinstance(x, (tuple, list)):
            if len(x) != 2:
                raise ValueError(f"{name}: expected x or (x, state), got {_desc(x)}.")
            x, state = x
        else:
            state = None
        x = check_inexact(name, x)
        if x.ndim < 1:
            raise ValueError(f"{name}: expected one step's input (*batch, features), got a scalar.")
        batch = tuple(x.shape[:-1])
        if state is None:
            state = rec.zero_state(batch, x.dtype)
        else:
            state = check_state(name, rec, state, batch)
        check_features(name, params, x)
        state, y = rec.step(params, state, input_projection(rec, params, x))
        return y, state

    return describe(Layer(init, apply), rec.kind + "_cell", config)


def _is_shape(value: Any) -> bool:
    return isinstance(value, (tuple, list))


def LSTMCell(
    features: int,
    *,
    kernel_init: Initializer = GLOROT_UNIFORM,
    recurrent_init: Initializer = ORTHOGONAL,
    bias_init: Initializer = initializers.zeros,
    unit_forget_bias: bool = True,
    dtype: Any = jnp.float32,
) -> Layer:
    r"""One step of an LSTM, for hand-written loops (the math of :func:`jnn.LSTM`).

    .. math::
        (i, f, g, o) = x W_{ih} + h W_{hh} + b,\quad
        c' = \sigma(f) c + \sigma(i)\tanh(g),\quad h' = \sigma(o)\tanh(c')

    ``apply(params, x)`` starts from a zero state; ``apply(params, (x, state))``
    continues from ``state = (h, c)``. Both return ``(y, (h', c'))`` with ``y = h'``.

    Args:
      features: the hidden size ``H``.
      kernel_init: initializer of the ``(F, 4H)`` input kernel (Keras's
        glorot-uniform by default).
      recurrent_init: initializer of the ``(H, 4H)`` recurrent kernel (Keras's
        orthogonal by default).
      bias_init: initializer of the ``(4H,)`` bias (zeros).
      unit_forget_bias: set the forget gate's bias to 1 after ``bias_init``
        (Keras's default), so the cell starts by remembering.
      dtype: dtype of the params.

    Returns:
      A :class:`Layer` with params ``{"w_ih": (F, 4H), "w_hh": (H, 4H), "b": (4H,)}``,
      gates in the order ``(i, f, g, o)`` (PyTorch's and Keras's). ``init(key,
      (*batch, F))`` returns the output shape ``((*batch, H), ((*batch, H),
      (*batch, H)))``: ``y`` and the state.

    Raises:
      ValueError: if ``features`` is not a positive int; from ``apply``, for an
        input or state of the wrong shape (both shapes are named).

    Example:
      A hand-written loop over time with ``lax.scan``:

      >>> import jax, jax.numpy as jnp, jnn
      >>> cell = jnn.LSTMCell(16)
      >>> (y_shape, state_shape), params = cell.init(jax.random.key(0), (-1, 8))
      >>> y_shape, state_shape
      ((-1, 16), ((-1, 16), (-1, 16)))
      >>> xs = jnp.ones((4, 10, 8))                       # (batch, T, F)
      >>> def step(state, x_t):
      ...     y, state = cell.apply(params, (x_t, state))
      ...     return state, y
      >>> state0 = (jnp.zeros((4, 16)), jnp.zeros((4, 16)))
      >>> (h, c), ys = jax.lax.scan(step, state0, jnp.swapaxes(xs, 0, 1))
      >>> h.shape, ys.shape
      ((4, 16), (10, 4, 16))
    """
    check_positive_int("LSTMCell", "features", features)
    features = int(features)
    rec = lstm(features, kernel_init, recurrent_init, bias_init, unit_forget_bias, dtype)
    config = dict(
        features=features,
        kernel_init=kernel_init,
        recurrent_init=recurrent_init,
        bias_init=bias_init,
        unit_forget_bias=unit_forget_bias,
        dtype=dtype,
    )
    return _cell(rec, f"LSTMCell({features})", config)


def GRUCell(
    features: int,
    *,
    kernel_init: Initializer = GLOROT_UNIFORM,
    recurrent_init: Initializer = ORTHOGONAL,
    bias_init: Initializer = initializers.zeros,
    dtype: Any = jnp.float32,
) -> Layer:
    r"""One step of a GRU, for hand-written loops (the math of :func:`jnn.GRU`).

    The "reset after" variant of PyTorch's ``nn.GRU`` and Keras's default
    ``reset_after=True``: the reset gate scales the recurrent candidate after
    its matmul and bias.

    .. math::
        r = \sigma(x_r + h_r),\quad z = \sigma(x_z + h_z),\quad
        n = \tanh(x_n + r \odot h_n),\quad h' = (1 - z) n + z h

    with ``(x_r, x_z, x_n) = x W_{ih} + b_{ih}`` and ``(h_r, h_z, h_n) = h W_{hh} + b_{hh}``.
    ``apply(params, x)`` starts from a zero state; ``apply(params, (x, h))``
    continues from ``h``. Both return ``(y, h')`` with ``y = h'``.

    Args:
      features: the hidden size ``H``.
      kernel_init: initializer of the ``(F, 3H)`` input kernel (glorot-uniform).
      recurrent_init: initializer of the ``(H, 3H)`` recurrent kernel (orthogonal).
      bias_init: initializer of both ``(3H,)`` biases (zeros).
      dtype: dtype of the params.

    Returns:
      A :class:`Layer` with params ``{"w_ih": (F, 3H), "w_hh": (H, 3H), "b_ih":
      (3H,), "b_hh": (3H,)}``, gates in PyTorch's order ``(r, z, n)``. ``init(key,
      (*batch, F))`` returns the output shape ``((*batch, H), (*batch, H))``.

    Raises:
      ValueError: if ``features`` is not a positive int; from ``apply``, for an
        input or state of the wrong shape.

    Example:
      >>> import jax, jax.numpy as jnp, jnn
      >>> cell = jnn.GRUCell(4)
      >>> _, params = cell.init(jax.random.key(0), (-1, 3))
      >>> y, h = cell.apply(params, jnp.ones((2, 3)))           # from a zero state
      >>> y, h = cell.apply(params, (jnp.ones((2, 3)), h))      # one more step
      >>> y.shape, bool((y == h).all())
      ((2, 4), True)
    """
    check_positive_int("GRUCell", "features", features)
    features = int(features)
    rec = gru(features, kernel_init, recurrent_init, bias_init, dtype)
    config = dict(
        features=features,
        kernel_init=kernel_init,
        recurrent_init=recurrent_init,
        bias_init=bias_init,
        dtype=dtype,
    )
    return _cell(rec, f"GRUCell({features})", config)


__all__ = ["GRUCell", "LSTMCell"]
