"""Shape helpers shared by convolution and pooling layers (private).

Spatial layers take channels-last input ``(*batch, *spatial, channels)`` with
any number of leading batch axes (none under ``vmap`` over single examples):
:func:`fold_batch` folds them into the single batch axis that ``jax.lax``
wants and :func:`unfold_batch` restores them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jax import lax

from jnn._data import is_int
from jnn._typing import Array, Shape
from jnn.layers._base import normalize_shape

Padding = str | int | Sequence[tuple[int, int]]


def int_tuple(name: str, what: str, value: Any, nd: int) -> tuple[int, ...]:
    """``value`` (an int or a length-``nd`` sequence of positive ints) as a tuple."""
    if is_int(value):
        value = (value,) * nd
    try:
        out = tuple(value)
    except TypeError:
        out = ()
    if len(out) != nd or any(not is_int(v) or v < 1 for v in out):
        raise ValueError(
            f"{name}: {what} must be a positive int or a tuple of {nd} positive ints, "
            f"got {value!r}."
        )
    return tuple(int(v) for v in out)


def check_padding(name: str, padding: Any, nd: int) -> str | tuple[tuple[int, int], ...]:
    """``"SAME"``, ``"VALID"``, or explicit ``((lo, hi), ...)`` per spatial axis."""
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            raise ValueError(
                f"{name}: padding must be 'SAME', 'VALID', an int, or {nd} (low, high) "
                f"pairs, got {padding!r}."
            )
        return padding.upper()
    if is_int(padding) and padding >= 0:
        return ((int(padding), int(padding)),) * nd
    try:
        pairs = tuple((lo, hi) for lo, hi in padding)
    except (TypeError, ValueError):
        pairs = ()
    if len(pairs) != nd or any(not (is_int(v) and v >= 0) for pair in pairs for v in pair):
        raise ValueError(
            f"{name}: padding must be 'SAME', 'VALID', a non-negative int, or {nd} "
            f"non-negative (low, high) pairs, got {padding!r}."
        )
    return tuple((int(lo), int(hi)) for lo, hi in pairs)


def spatial_input_shape(name: str, input_shape: Any, nd: int, channels: str) -> Shape:
    """Validate ``(*batch, *spatial, C)`` at ``init``: rank and known spatial/channel dims."""
    shape = normalize_shape(name, input_shape)
    if len(shape) < nd + 1:
        raise ValueError(
            f"{name}.init: expected an input_shape of rank >= {nd + 1}, "
            f"(*batch, {channels}), got {shape}."
        )
    if -1 in shape[-nd - 1 :]:
        raise ValueError(
            f"{name}.init: the spatial and channel dimensions must be known, got {shape}; "
            "only leading batch dimensions may be -1 or None."
        )
    return shape


def spatial_and_channels(shape: Shape, nd: int) -> tuple[tuple[int, ...], int]:
    """The (known) spatial sizes and channel count of a shape checked by
    :func:`spatial_input_shape`."""
    known = tuple(int(d) for d in shape[-nd - 1 :] if d is not None)
    assert len(known) == nd + 1, shape
    return known[:-1], known[-1]


def check_rank(name: str, x: Array, nd: int, channels: str) -> None:
    """Refuse input with fewer than ``nd + 1`` axes, or an empty spatial or channel axis."""
    if x.ndim < nd + 1 or 0 in x.shape[x.ndim - nd - 1 :]:
        raise ValueError(
            f"{name}: expected input of shape (*batch, {channels}) with rank >= {nd + 1} and "
            f"non-empty spatial and channel axes, got {tuple(x.shape)}."
        )


def fold_batch(x: Array, nd: int) -> tuple[Array, tuple[int, ...]]:
    """Fold all axes before the last ``nd + 1`` into one batch axis."""
    lead = x.shape[: x.ndim - nd - 1]
    return x.reshape((-1, *x.shape[x.ndim - nd - 1 :])), lead


def unfold_batch(y: Array, lead: tuple[int, ...]) -> Array:
    """Undo :func:`fold_batch` on an output ``(B, *spatial', C')``."""
    return y.reshape((*lead, *y.shape[1:]))


def window_out_size(
    size: int, window: int, stride: int, dilation: int, pads: tuple[int, int]
) -> int:
    """Output length of a strided, dilated window sliding over padded input."""
    effective = (window - 1) * dilation + 1
    return (size + pads[0] + pads[1] - effective) // stride + 1


def window_output(
    name: str,
    shape: Sequence[Any],
    spatial: Sequence[int],
    window: Sequence[int],
    strides: Sequence[int],
    dilation: Sequence[int],
    padding: str | tuple[tuple[int, int], ...],
) -> tuple[int, ...]:
    """The output spatial sizes of a window over ``spatial``; a ValueError if one is empty.

    ``shape`` (the whole input shape) is named in the message. Shared by
    convolutions and pooling, at ``init`` and at ``apply``: an input smaller
    than the window gives an error, never a silently empty output.
    """
    pads = explicit_pads(padding, spatial, window, strides, dilation)
    args = zip(spatial, window, strides, dilation, pads, strict=True)
    out = tuple(window_out_size(*a) for a in args)
    if min(out) < 1:
        raise ValueError(
            f"{name}: input of shape {tuple(shape)} is too small for the window "
            f"{tuple(window)}: the output spatial size would be {out}, empty. Use "
            "padding='SAME' or a smaller window."
        )
    return out


def explicit_pads(
    padding: str | tuple[tuple[int, int], ...],
    spatial: Sequence[int],
    window: Sequence[int],
    strides: Sequence[int],
    dilation: Sequence[int],
) -> tuple[tuple[int, int], ...]:
    """Resolve ``"SAME"``/``"VALID"`` into ``(lo, hi)`` pairs as ``jax.lax`` does."""
    if not isinstance(padding, str):
        return tuple(padding)
    effective = [(w - 1) * d + 1 for w, d in zip(window, dilation, strict=True)]
    return tuple(lax.padtype_to_pads(tuple(spatial), effective, tuple(strides), padding))


def dimension_numbers(nd: int) -> tuple[str, str, str]:
    """Channels-last specs for ``conv_general_dilated``: e.g. ``NHWC, HWIO, NHWC``."""
    sp = {1: "W", 2: "HW", 3: "DHW"}[nd]
    return f"N{sp}C", f"{sp}IO", f"N{sp}C"
