"""Recurrent layers over sequences: SimpleRNN, LSTM and GRU (private module).

A recurrent layer runs one cell (``jnn/layers/_cells.py``) over the time axis
of a ``(*batch, T, F)`` input with ``lax.scan``. Like every layer with
several inputs, it takes them as a tuple:

- ``x``: the sequences, ``(*batch, T, F)``; a zero initial state.
- ``(x, mask)``: ``mask`` is boolean ``(*batch, T)``, True at real steps
  (:func:`sequence_mask` builds it from lengths). A masked step neither
  updates the state nor produces output: the state carries over, the
  per-step output there is zeros (like PyTorch's ``pad_packed_sequence``).
  ``mask`` may be None.
- ``(x, mask, initial_state)``: ``initial_state`` is ``h`` ``(*batch, H)``
  (SimpleRNN, GRU) or ``(h, c)`` (LSTM); ``mask`` may be None.

What comes out:

- ``return_sequences=False``: the last output ``(*batch, H)``, which is the
  final ``h``: with a mask, the ``h`` after the last real step (the initial
  ``h`` for a sequence with no real step).
- ``return_sequences=True``: every step's output ``(*batch, T, H)``, and, if
  a mask came in, ``(outputs, mask)``: the mask travels with the sequence, so
  a second recurrent layer in :func:`jnn.serial` sees the same padding.
- ``return_state=True``: ``(output, final_state)``, ``output`` as above.

``reverse=True`` runs from the last step to the first (skipping padding at the
end); the outputs stay aligned with the input steps (unlike Keras's
``go_backwards``, like PyTorch's reverse direction).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.nn import initializers

from jnn._data import check_key, check_positive_int
from jnn._typing import ActivationLike, Array, ArrayLike, Params, PRNGKey
from jnn.layers._base import (
    Layer,
    check_inexact,
    describe,
    normalize_shape,
)
from jnn.layers._cells import (
    GLOROT_UNIFORM,
    ORTHOGONAL,
    Initializer,
    Recurrence,
    check_features,
    check_state,
    gru,
    input_projection,
    lstm,
    simple_rnn,
    state_shapes,
)

_FORMS = "x, (x, mask) or (x, mask, initial_state)"


def sequence_mask(lengths: ArrayLike, max_length: int) -> Array:
    """A ``(*batch, max_length)`` boolean padding mask from sequence lengths.

    Args:
      lengths: integers ``(*batch,)``, the number of real (leading) steps of
        each sequence, in ``[0, max_length]``.
      max_length: ``T``, the padded length.

    Returns:
      ``arange(max_length) < lengths[..., None]``: True at real steps.

    Raises:
      TypeError: if ``lengths`` is not integer.
      ValueError: if ``max_length`` is not a positive int, or (for concrete
        lengths) a length lies outside ``[0, max_length]``.

    Example:
      >>> import jax.numpy as jnp, jnn
      >>> jnn.layers.sequence_mask(jnp.array([3, 1]), 4).astype(int)
      Array([[1, 1, 1, 0],
             [1, 0, 0, 0]], dtype=int32)
    """
    max_length = check_positive_int("sequence_mask", "max_length", max_length)
    lengths = jnp.asarray(lengths)
    if not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise TypeError(f"sequence_mask: lengths must be integers, got dtype {lengths.dtype}.")
    try:  # concrete lengths are checked; traced ones (under jit) cannot be
        low, high = (int(lengths.min()), int(lengths.max())) if lengths.size else (0, 0)
    except jax.errors.ConcretizationTypeError:
        low, high = 0, 0
    if low < 0 or high > max_length:
        raise ValueError(
            f"sequence_mask: lengths must lie in [0, {max_length}], got values in "
            f"[{low}, {high}]; pad the sequences to the longest length."
        )
    steps = jnp.arange(max_length).reshape((1,) * lengths.ndim + (max_length,))
    return steps < lengths[..., None]


def split_inputs(name: str, value: Any, *, shapes: bool) -> tuple[Any, Any, Any]:
    """``x | (x, mask) | (x, mask, initial_state)`` -> ``(x, mask, state)`` (shapes at init)."""
    is_tuple = isinstance(value, (tuple, list)) and (
        not shapes or (bool(value) and isinstance(value[0], (tuple, list)))
    )
    if not is_tuple:
        return value, None, None
    if len(value) == 2:
        return value[0], value[1], None
    if len(value) == 3:
        return tuple(value)
    raise ValueError(
        f"{name}: expected {_FORMS}, got a {type(value).__name__} of length {len(value)}."
    )


def _x_shape(name: str, shape: Any) -> tuple[int, ...]:
    x = normalize_shape(name, shape)
    if len(x) < 3:
        raise ValueError(
            f"{name}.init: expected an input shape (batch, T, features), got {x}. " + _rank_hint(x)
        )
    if x[-1] == -1:
        raise ValueError(f"{name}.init: the feature (last) dimension must be known, got {x}.")
    return x


def _rank_hint(shape: tuple[int, ...]) -> str:
    if len(shape) == 2:
        return (
            "For one sequence of shape (T, features) add a batch axis (x[None]); for one "
            "time step per example use a cell (jnn.LSTMCell, jnn.GRUCell) or reshape to "
            "(batch, 1, features)."
        )
    return "Recurrent layers need a time axis before the features."


def _same(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """Equal shapes, -1 (unknown at init) matching anything."""
    return len(a) == len(b) and all(p == q or -1 in (p, q) for p, q in zip(a, b, strict=True))


def _check_init_extras(name, rec, x, mask, state) -> None:
    if mask is not None:
        m = normalize_shape(name, mask)
        if not _same(m, x[:-1]):
            raise ValueError(
                f"{name}.init: the mask must have shape (*batch, T) = {x[:-1]} for x of shape "
                f"{x}, got {m}."
            )
    if state is not None:
        want = state_shapes(rec, x[:-2])
        leaves = state if rec.state_is_pair else (state,)
        wants = want if rec.state_is_pair else (want,)
        ok = isinstance(leaves, (tuple, list)) and len(leaves) == len(wants)
        ok = ok and all(
            _same(normalize_shape(name, s), w) for s, w in zip(leaves, wants, strict=True)
        )
        if not ok:
            raise ValueError(
                f"{name}.init: the initial state must have shape {want}, got {state!r}."
            )


def _check_mask(name: str, mask: Any, x: Array) -> Array | None:
    if mask is None:
        return None
    mask = jnp.asarray(mask)
    if tuple(mask.shape) != tuple(x.shape[:-1]):
        raise ValueError(
            f"{name}: the mask must have shape (*batch, T) = {tuple(x.shape[:-1])} for x of "
            f"shape {tuple(x.shape)}, got {tuple(mask.shape)}."
        )
    if mask.dtype != jnp.bool_:
        raise TypeError(
            f"{name}: the mask must be boolean (True at real steps), got dtype {mask.dtype}; "
            "use mask.astype(bool), or jnn.layers.sequence_mask(lengths, T) for lengths."
        )
    return mask


def _check_x(name: str, x: Any) -> Array:
    x = check_inexact(name, x)
    if x.ndim < 3:
        raise ValueError(
            f"{name}: expected input of shape (batch, T, features), got {tuple(x.shape)}. "
            + _rank_hint(tuple(x.shape))
        )
    return x


def run(
    rec: Recurrence,
    params: Params,
    x: Array,
    mask: Array | None,
    state: Any,
    *,
    reverse: bool,
    return_sequences: bool,
) -> tuple[Array, Any]:
    """Scan ``rec`` over the time axis of ``x`` ``(*batch, T, F)``: ``(outputs, final_state)``.

    ``outputs`` is ``(*batch, T, H)`` (zeros at masked steps) or, without
    ``return_sequences``, the final ``h`` ``(*batch, H)``.
    """
    batch, steps, f = x.shape[:-2], x.shape[-2], x.shape[-1]
    b = math.prod(batch)
    params = jax.tree.map(lambda p: p.astype(x.dtype), params)  # compute in x's dtype
    if state is None:
        state = rec.zero_state((b,), x.dtype)
    else:
        state = jax.tree.map(lambda s: s.reshape(b, rec.features).astype(x.dtype), state)
    xs = jnp.swapaxes(x.reshape(b, steps, f), 0, 1)  # time-major (T, B, F)
    ms = None if mask is None else jnp.swapaxes(mask.reshape(b, steps), 0, 1)[..., None]

    def body(carry: Any, inputs: tuple[Array, Array | None]) -> tuple[Any, Array | None]:
        x_t, m = inputs
        # The input projection inside the step, not hoisted over the whole sequence: on
        # XLA:CPU the hoisted form trains ~3x slower (benchmarks/bench_lstm.py).
        new, y = rec.step(params, carry, input_projection(rec, params, x_t))
        if m is not None:  # a masked step keeps the state and outputs zeros
            new = jax.tree.map(lambda n, o: jnp.where(m, n, o), new, carry)
            y = jnp.where(m, y, jnp.zeros_like(y))
        return new, (y if return_sequences else None)

    final, ys = lax.scan(body, state, (xs, ms), reverse=reverse)
    unflat = lambda a: a.reshape(*batch, *a.shape[1:])  # noqa: E731
    final = jax.tree.map(unflat, final)
    if ys is not None:  # return_sequences
        out = jnp.swapaxes(ys, 0, 1).reshape(*batch, steps, rec.features)
    else:
        out = final[0] if rec.state_is_pair else final
    return out, final


def pack(out: Any, mask: Any, state: Any, return_sequences: bool, return_state: bool) -> Any:
    """The documented output structure (works on arrays and on shapes alike)."""
    if mask is not None and return_sequences:
        out = (out, mask)
    return (out, state) if return_state else out


def unpack(value: Any, masked: bool, return_sequences: bool, return_state: bool) -> tuple:
    """Inverse of :func:`pack`: ``(out, state)`` (state None without return_state)."""
    out, state = value if return_state else (value, None)
    if masked and return_sequences:
        out = out[0]
    return out, state


def _sequence_layer(
    rec: Recurrence,
    kind: str,
    config: dict[str, Any],
) -> Layer:
    name = f"{type_name(kind)}({rec.features})"
    return_sequences, return_state = config["return_sequences"], config["return_state"]
    reverse = config["reverse"]

    def init(key: PRNGKey, input_shape: Any) -> tuple[Any, Params]:
        x, mask, state = split_inputs(name, input_shape, shapes=True)
        x = _x_shape(name, x)
        _check_init_extras(name, rec, x, mask, state)
        params = rec.init(check_key(f"{name}.init", key), x[-1])
        batch = x[:-2]
        out = (*x[:-1], rec.features) if return_sequences else (*batch, rec.features)
        mask_shape = None if mask is None else x[:-1]
        return pack(out, mask_shape, state_shapes(rec, batch), return_sequences, return_state), (
            params
        )

    def apply(params: Params, x: Any, *, key: PRNGKey | None = None, train: bool = False):
        del key, train
        x, mask, state = split_inputs(name, x, shapes=False)
        x = _check_x(name, x)
        check_features(name, params, x)
        mask = _check_mask(name, mask, x)
        if state is not None:
            state = check_state(f"{name}: initial_state", rec, state, tuple(x.shape[:-2]))
        out, final = run(
            rec, params, x, mask, state, reverse=reverse, return_sequences=return_sequences
        )
        return pack(out, mask, final, return_sequences, return_state)

    return describe(Layer(init, apply), kind, config)


def type_name(kind: str) -> str:
    return {"simple_rnn": "SimpleRNN", "lstm": "LSTM", "gru": "GRU"}[kind]


def _flags(where: str, **flags: Any) -> None:
    for flag, value in flags.items():
        if not isinstance(value, bool):
            raise TypeError(f"{where}: {flag} must be True or False, got {value!r}.")


def SimpleRNN(
    features: int,
    *,
    activation: ActivationLike = "tanh",
    return_sequences: bool = False,
    return_state: bool = False,
    reverse: bool = False,
    kernel_init: Initializer = GLOROT_UNIFORM,
    recurrent_init: Initializer = ORTHOGONAL,
    bias_init: Initializer = initializers.zeros,
    dtype: Any = jnp.float32,
) -> Layer:
    """A fully recurrent layer: ``h_t = activation(x_t @ w_ih + h_{t-1} @ w_hh + b)``.

    Inputs and outputs as described in :mod:`jnn.layers` (recurrent layers):
    ``x``, ``(x, mask)`` or ``(x, mask, h0)``; the last output, every step's
    output, and the final state with ``return_state=True``.

    Args:
      features: the hidden size ``H``.
      activation: a name or callable (``"tanh"``, PyTorch's and Keras's default).
      return_sequences: output every step ``(*batch, T, H)`` instead of the last ``(*batch, H)``.
      return_state: also return the final ``h``.
      reverse: run from the last step to the first (outputs stay aligned with the inputs).
      kernel_init: initializer of the ``(F, H)`` input kernel (glorot-uniform).
      recurrent_init: initializer of the ``(H, H)`` recurrent kernel (orthogonal).
      bias_init: initializer of the ``(H,)`` bias (zeros).
      dtype: dtype of the params.

    Returns:
      A :class:`Layer` with params ``{"w_ih": (F, H), "w_hh": (H, H), "b": (H,)}``
      (PyTorch's ``weight_ih_l0.T``, ``weight_hh_l0.T`` and ``bias_ih_l0 + bias_hh_l0``).

    Raises:
      ValueError: for a bad ``features``; for inputs that are not ``(batch, T,
        F)`` (a 2-D input included), masks or states of the wrong shape.
      TypeError: for a non-boolean mask or non-bool flags.

    Example:
      >>> import jax, jax.numpy as jnp, jnn
      >>> rnn = jnn.SimpleRNN(8, return_sequences=True)
      >>> shape, params = rnn.init(jax.random.key(0), (-1, 5, 3))
      >>> shape, rnn.apply(params, jnp.ones((2, 5, 3))).shape
      ((-1, 5, 8), (2, 5, 8))
    """
    check_positive_int("SimpleRNN", "features", features)
    _flags("SimpleRNN", return_sequences=return_sequences, return_state=return_state,
           reverse=reverse)  # fmt: skip
    rec = simple_rnn(int(features), activation, kernel_init, recurrent_init, bias_init, dtype)
    config = dict(
        features=int(features),
        activation=activation,
        return_sequences=return_sequences,
        return_state=return_state,
        reverse=reverse,
        kernel_init=kernel_init,
        recurrent_init=recurrent_init,
        bias_init=bias_init,
        dtype=dtype,
    )
    return _sequence_layer(rec, "simple_rnn", config)


def LSTM(
    features: int,
    *,
    return_sequences: bool = False,
    return_state: bool = False,
    reverse: bool = False,
    kernel_init: Initializer = GLOROT_UNIFORM,
    recurrent_init: Initializer = ORTHOGONAL,
    bias_init: Initializer = initializers.zeros,
    unit_forget_bias: bool = True,
    dtype: Any = jnp.float32,
) -> Layer:
    """A long short-term memory layer over ``(*batch, T, F)``: :func:`jnn.LSTMCell` scanned over T.

    Inputs: ``x``, ``(x, mask)`` or ``(x, mask, (h0, c0))`` (see
    :mod:`jnn.layers`); masked steps keep the state and output zeros. Equal
    to ``torch.nn.LSTM(batch_first=True)`` with the weights mapped as below
    (tested to 1e-5, packed padded sequences included).

    Args:
      features: the hidden size ``H``.
      return_sequences: output every step ``(*batch, T, H)`` instead of the last ``(*batch, H)``.
      return_state: also return the final state ``(h, c)``.
      reverse: run from the last step to the first (outputs stay aligned with the inputs).
      kernel_init: initializer of the ``(F, 4H)`` input kernel (glorot-uniform, as in Keras).
      recurrent_init: initializer of the ``(H, 4H)`` recurrent kernel (orthogonal, as in Keras).
      bias_init: initializer of the ``(4H,)`` bias (zeros).
      unit_forget_bias: set the forget gate's bias to 1 (Keras's default).
      dtype: dtype of the params.

    Returns:
      A :class:`Layer` with params ``{"w_ih": (F, 4H), "w_hh": (H, 4H), "b": (4H,)}``,
      gates ``(i, f, g, o)``; from PyTorch: ``w_ih = weight_ih_l0.T``,
      ``w_hh = weight_hh_l0.T``, ``b = bias_ih_l0 + bias_hh_l0``.

    Raises:
      ValueError: for a bad ``features``; for inputs that are not ``(batch, T,
        F)`` (a 2-D input included), masks or states of the wrong shape.
      TypeError: for a non-boolean mask or non-bool flags.

    Example:
      A padded batch: the second sequence has 2 real steps out of 4.

      >>> import jax, jax.numpy as jnp, jnn
      >>> lstm = jnn.LSTM(16, return_state=True)
      >>> shape, params = lstm.init(jax.random.key(0), (-1, 4, 3))
      >>> shape
      ((-1, 16), ((-1, 16), (-1, 16)))
      >>> x = jax.random.normal(jax.random.key(1), (2, 4, 3))
      >>> mask = jnn.layers.sequence_mask(jnp.array([4, 2]), 4)
      >>> last, (h, c) = lstm.apply(params, (x, mask))
      >>> short, _ = lstm.apply(params, x[1:, :2])            # the same sequence, unpadded
      >>> bool(jnp.allclose(last[1], short[0], atol=1e-6)), bool((last == h).all())
      (True, True)
    """
    check_positive_int("LSTM", "features", features)
    _flags("LSTM", return_sequences=return_sequences, return_state=return_state,
           reverse=reverse, unit_forget_bias=unit_forget_bias)  # fmt: skip
    rec = lstm(int(features), kernel_init, recurrent_init, bias_init, unit_forget_bias, dtype)
    config = dict(
        features=int(features),
        return_sequences=return_sequences,
        return_state=return_state,
        reverse=reverse,
        kernel_init=kernel_init,
        recurrent_init=recurrent_init,
        bias_init=bias_init,
        unit_forget_bias=unit_forget_bias,
        dtype=dtype,
    )
    return _sequence_layer(rec, "lstm", config)


def GRU(
    features: int,
    *,
    return_sequences: bool = False,
    return_state: bool = False,
    reverse: bool = False,
    kernel_init: Initializer = GLOROT_UNIFORM,
    recurrent_init: Initializer = ORTHOGONAL,
    bias_init: Initializer = initializers.zeros,
    dtype: Any = jnp.float32,
) -> Layer:
    """A gated recurrent unit layer over ``(*batch, T, F)``: :func:`jnn.GRUCell` scanned over T.

    The "reset after" GRU of ``torch.nn.GRU`` and of Keras's default
    ``reset_after=True`` (see :func:`jnn.GRUCell` for the math). Inputs:
    ``x``, ``(x, mask)`` or ``(x, mask, h0)``; masked steps keep the state
    and output zeros.

    Args:
      features: the hidden size ``H``.
      return_sequences: output every step ``(*batch, T, H)`` instead of the last ``(*batch, H)``.
      return_state: also return the final ``h``.
      reverse: run from the last step to the first (outputs stay aligned with the inputs).
      kernel_init: initializer of the ``(F, 3H)`` input kernel (glorot-uniform).
      recurrent_init: initializer of the ``(H, 3H)`` recurrent kernel (orthogonal).
      bias_init: initializer of the two ``(3H,)`` biases (zeros).
      dtype: dtype of the params.

    Returns:
      A :class:`Layer` with params ``{"w_ih": (F, 3H), "w_hh": (H, 3H), "b_ih":
      (3H,), "b_hh": (3H,)}``, gates ``(r, z, n)``; from PyTorch: ``w_ih =
      weight_ih_l0.T``, ``w_hh = weight_hh_l0.T``, ``b_ih = bias_ih_l0``,
      ``b_hh = bias_hh_l0``.

    Raises:
      ValueError: for a bad ``features``; for inputs that are not ``(batch, T,
        F)`` (a 2-D input included), masks or states of the wrong shape.
      TypeError: for a non-boolean mask or non-bool flags.

    Example:
      >>> import jax, jax.numpy as jnp, jnn
      >>> model = jnn.serial(jnn.GRU(32, return_sequences=True), jnn.GRU(32), jnn.Dense(1))
      >>> shape, params = model.init(jax.random.key(0), (-1, 12, 1))
      >>> shape, sorted(params["gru_0"])
      ((-1, 1), ['b_hh', 'b_ih', 'w_hh', 'w_ih'])
    """
    check_positive_int("GRU", "features", features)
    _flags("GRU", return_sequences=return_sequences, return_state=return_state,
           reverse=reverse)  # fmt: skip
    rec = gru(int(features), kernel_init, recurrent_init, bias_init, dtype)
    config = dict(
        features=int(features),
        return_sequences=return_sequences,
        return_state=return_state,
        reverse=reverse,
        kernel_init=kernel_init,
        recurrent_init=recurrent_init,
        bias_init=bias_init,
        dtype=dtype,
    )
    return _sequence_layer(rec, "gru", config)


#: The recurrent layers by kind: how Bidirectional builds the reversed copy of one.
CONSTRUCTORS: dict[str, Callable[..., Layer]] = {
    "simple_rnn": SimpleRNN,
    "lstm": LSTM,
    "gru": GRU,
}


__all__ = ["GRU", "LSTM", "SimpleRNN", "sequence_mask"]
