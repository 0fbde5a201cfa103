"""Bidirectional: a recurrent layer run forwards and backwards over time (private module).

See ``jnn/layers/_recurrent.py`` for the inputs (``x``, ``(x, mask)``,
``(x, mask, initial_state)``) and outputs the wrapped layer sets.
"""

from __future__ import annotations

from typing import Any, cast

import jax
import jax.numpy as jnp

from jnn._data import check_key, close_match
from jnn._typing import Params, PRNGKey
from jnn.layers._base import (
    AnyLayer,
    Layer,
    _check_layer,
    describe,
    normalize_shape,
    spec_of,
)
from jnn.layers._recurrent import CONSTRUCTORS, pack, split_inputs, type_name, unpack

_MERGES = ("concat", "sum")


def Bidirectional(layer: AnyLayer, *, merge: str = "concat") -> Layer:
    """Run a recurrent layer forwards and backwards over time and merge the two.

    The backward copy is the same layer with ``reverse`` flipped and params of
    its own, so its outputs stay aligned with the input steps and, with a
    mask, it starts at each sequence's last real step (as PyTorch's
    ``bidirectional=True`` on packed sequences). Inputs as for the layer:
    ``x``, ``(x, mask)`` or ``(x, mask, (state_forward, state_backward))``.

    Args:
      layer: a :func:`jnn.SimpleRNN`, :func:`jnn.LSTM` or :func:`jnn.GRU`; its
        ``return_sequences``/``return_state`` settings decide the output.
      merge: ``"concat"`` (features ``2H``, forward first, as PyTorch and
        Keras) or ``"sum"`` (``H``).

    Returns:
      A :class:`Layer` with params ``{"forward": ..., "backward": ...}`` (each
      the layer's own; PyTorch's ``*_l0`` and ``*_l0_reverse``). With
      ``return_state=True`` the state is ``(state_forward, state_backward)``.
      Without ``return_sequences``, the output merges the forward direction's
      last output and the backward one's (after the first step).

    Raises:
      TypeError: if ``layer`` is not one of the recurrent layers.
      ValueError: for an unknown ``merge`` (with the closest name).

    Example:
      >>> import jax, jax.numpy as jnp, jnn
      >>> bi = jnn.Bidirectional(jnn.LSTM(8, return_sequences=True))
      >>> shape, params = bi.init(jax.random.key(0), (-1, 5, 3))
      >>> shape, sorted(params)
      ((-1, 5, 16), ['backward', 'forward'])
    """
    _check_layer(layer, "Bidirectional: layer: ")
    spec = spec_of(layer)
    if spec is None or spec.kind not in CONSTRUCTORS:
        got = spec.kind if spec is not None else type(layer).__name__
        raise TypeError(
            f"Bidirectional: expected jnn.SimpleRNN, jnn.LSTM or jnn.GRU, got a {got!r} layer."
        )
    if merge not in _MERGES:
        raise ValueError(
            f"Bidirectional: merge must be one of {_MERGES}, got {merge!r}."
            + close_match(str(merge), _MERGES)
        )
    config = dict(spec.config)
    forward = cast(Layer, layer)  # one of the constructors above: a plain Layer
    backward = CONSTRUCTORS[spec.kind](**{**config, "reverse": not config["reverse"]})
    return_sequences, return_state = config["return_sequences"], config["return_state"]
    name = f"Bidirectional({type_name(spec.kind)}({config['features']}))"

    def merged(a: Any, b: Any, *, shapes: bool) -> Any:
        if merge == "sum":
            return a
        return (*a[:-1], 2 * a[-1]) if shapes else jnp.concatenate([a, b], axis=-1)

    def init(key: PRNGKey, input_shape: Any) -> tuple[Any, Params]:
        x, mask, state = split_inputs(name, input_shape, shapes=True)
        pair = _state_pair(name, state)
        k_f, k_b = jax.random.split(check_key(f"{name}.init", key))
        params, outs = {}, []
        for direction, child, k, s in zip(
            ("forward", "backward"), (forward, backward), (k_f, k_b), pair, strict=True
        ):
            shape, params[direction] = child.init(k, (x, mask, s))
            outs.append(unpack(shape, mask is not None, return_sequences, return_state))
        (y_f, s_f), (_, s_b) = outs
        out = merged(y_f, None, shapes=True)
        mask_shape = None if mask is None else normalize_shape(name, mask)
        return pack(out, mask_shape, (s_f, s_b), return_sequences, return_state), params

    def apply(params: Params, x: Any, *, key: PRNGKey | None = None, train: bool = False):
        del key, train
        x, mask, state = split_inputs(name, x, shapes=False)
        pair = _state_pair(name, state)
        results = []
        for direction, child, s in zip(
            ("forward", "backward"), (forward, backward), pair, strict=True
        ):
            value = child.apply(params[direction], (x, mask, s))
            results.append(unpack(value, mask is not None, return_sequences, return_state))
        (y_f, s_f), (y_b, s_b) = results
        out = y_f + y_b if merge == "sum" else merged(y_f, y_b, shapes=False)
        return pack(out, mask, (s_f, s_b), return_sequences, return_state)

    return describe(
        Layer(init, apply),
        "bidirectional",
        {"merge": merge},
        [("forward", layer), ("backward", backward)],
    )


def _state_pair(name: str, state: Any) -> tuple[Any, Any]:
    if state is None:
        return None, None
    if not isinstance(state, (tuple, list)) or len(state) != 2:
        raise ValueError(
            f"{name}: the initial state must be a pair (state_forward, state_backward), got "
            f"{type(state).__name__}."
        )
    return state[0], state[1]


__all__ = ["Bidirectional"]
