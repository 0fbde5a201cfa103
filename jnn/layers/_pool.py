"""MaxPool, AvgPool, GlobalAvgPool, GlobalMaxPool and Reshape (private module)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax.numpy as jnp
from jax import lax

from jnn._data import check_positive_int, is_int
from jnn._typing import Array, Params, PRNGKey, Shape
from jnn.layers._base import (
    Layer,
    check_inexact,
    check_numeric,
    describe,
    normalize_shape,
    snake_case,
)
from jnn.layers._spatial import (
    Padding,
    check_padding,
    check_rank,
    explicit_pads,
    fold_batch,
    int_tuple,
    spatial_and_channels,
    spatial_input_shape,
    unfold_batch,
    window_output,
)

_MAX_RANK = 32  # far beyond any real input; bounds the axes tuple built from spatial_dims


def _pool(
    kind: str,
    window_shape: Sequence[int],
    strides: int | Sequence[int] | None,
    padding: Padding,
    reduce: Callable[[Array, tuple, tuple, tuple], Array],
) -> Layer:
    if isinstance(window_shape, int) or not isinstance(window_shape, (tuple, list)):
        raise TypeError(
            f"{kind}: window_shape must be a tuple with one int per spatial axis, e.g. (2, 2) "
            f"for 2-D input, got {window_shape!r}."
        )
    nd = len(window_shape)
    window = int_tuple(kind, "window_shape", window_shape, nd)
    name = f"{kind}({window})"
    strides_ = window if strides is None else int_tuple(name, "strides", strides, nd)
    padding_ = check_padding(name, padding, nd)
    ones = (1,) * nd

    def init(key: PRNGKey, input_shape: Shape) -> tuple[Shape, Params]:
        del key
        shape = spatial_input_shape(name, input_shape, nd, f"*spatial[{nd}], channels")
        spatial, _ = spatial_and_channels(shape, nd)
        out = window_output(f"{name}.init", shape, spatial, window, strides_, ones, padding_)
        return (*shape[: -nd - 1], *out, shape[-1]), {}

    def apply(params: Params, x: Array, *, key: PRNGKey | None = None, train: bool = False):
        del params, key, train
        x = check_inexact(name, x)
        check_rank(name, x, nd, f"*spatial[{nd}], channels")
        xb, lead = fold_batch(x, nd)
        window_output(name, x.shape, xb.shape[1:-1], window, strides_, ones, padding_)
        pads = explicit_pads(padding_, xb.shape[1:-1], window, strides_, ones)
        y = reduce(xb, (1, *window, 1), (1, *strides_, 1), ((0, 0), *pads, (0, 0)))
        return unfold_batch(y, lead)

    config = {"window_shape": window, "strides": strides_, "padding": padding_}
    return describe(Layer(init, apply), snake_case(kind), config)


def MaxPool(
    window_shape: Sequence[int],
    *,
    strides: int | Sequence[int] | None = None,
    padding: Padding = "VALID",
) -> Layer:
    """Max over sliding windows of channels-last input ``(*batch, *spatial, C)``.

    Args:
      window_shape: one size per spatial axis, e.g. ``(2, 2)``; its length sets
        the dimensionality.
      strides: defaults to ``window_shape`` (non-overlapping windows).
      padding: ``"VALID"`` (default), ``"SAME"``, an int, or ``(low, high)``
        pairs; padded cells never win the max.

    Returns:
      A parameter-free :class:`Layer`: ``(*batch, *spatial, C) -> (*batch,
      *pooled_spatial, C)``.

    Raises:
      TypeError: if ``window_shape`` is not a tuple or list.
      ValueError: for bad ``strides``/``padding``; from ``init``, if the input
        is smaller than the window.

    Example:
      >>> import jax, jax.numpy as jnp, jnn
      >>> pool = jnn.MaxPool((2, 2))
      >>> pool.init(jax.random.key(0), (-1, 8, 8, 3))[0]
      (-1, 4, 4, 3)
      >>> pool.apply({}, jnp.arange(4.0).reshape(1, 2, 2, 1)).ravel()
      Array([3.], dtype=float32)
    """

    def reduce(x, dims, strides, pads):
        return lax.reduce_window(x, -jnp.inf, lax.max, dims, strides, pads)

    return _pool("MaxPool", window_shape, strides, padding, reduce)


def AvgPool(
    window_shape: Sequence[int],
    *,
    strides: int | Sequence[int] | None = None,
    padding: Padding = "VALID",
) -> Layer:
    """Mean over sliding windows of channels-last input ``(*batch, *spatial, C)``.

    With padding, each window's mean is over its real (unpadded) cells only,
    as in Keras, so borders are not darkened by zeros.

    Args:
      window_shape, strides, padding: as in :func:`MaxPool`.

    Returns:
      A parameter-free :class:`Layer`: ``(*batch, *spatial, C) -> (*batch,
      *pooled_spatial, C)``.

    Raises:
      TypeError, ValueError: as in :func:`MaxPool`.

    Example:
      >>> import jax.numpy as jnp, jnn
      >>> jnn.AvgPool((2, 2)).apply({}, jnp.arange(4.0).reshape(1, 2, 2, 1)).ravel()
      Array([1.5], dtype=float32)
    """

    def reduce(x, dims, strides, pads):
        total = lax.reduce_window(x, 0.0, lax.add, dims, strides, pads)
        ones = jnp.ones((1, *x.shape[1:-1], 1), x.dtype)
        count = lax.reduce_window(ones, 0.0, lax.add, dims, strides, pads)
        return total / count

    return _pool("AvgPool", window_shape, strides, padding, reduce)


def _global(kind: str, spatial_dims: int, reduce: Callable) -> Layer:
    nd = check_positive_int(kind, "spatial_dims", spatial_dims, maximum=_MAX_RANK)
    name = f"{kind}(spatial_dims={nd})"
    axes = tuple(range(-nd - 1, -1))

    def init(key: PRNGKey, input_shape: Shape) -> tuple[Shape, Params]:
        del key
        shape = spatial_input_shape(name, input_shape, nd, f"*spatial[{nd}], channels")
        return (*shape[: -nd - 1], shape[-1]), {}

    def apply(params: Params, x: Array, *, key: PRNGKey | None = None, train: bool = False):
        del params, key, train
        x = check_inexact(name, x)
        check_rank(name, x, nd, f"*spatial[{nd}], channels")
        return reduce(x, axis=axes)

    return describe(Layer(init, apply), snake_case(kind), {"spatial_dims": nd})


def GlobalAvgPool(spatial_dims: int = 2) -> Layer:
    """Mean over all spatial axes: ``(*batch, *spatial, C) -> (*batch, C)``.

    Args:
      spatial_dims: how many axes before the channels to average (2 for images).

    Returns:
      A parameter-free :class:`Layer`.

    Raises:
      ValueError: if ``spatial_dims`` is not a positive int.

    Example:
      >>> import jax, jax.numpy as jnp, jnn
      >>> jnn.GlobalAvgPool().init(jax.random.key(0), (-1, 7, 7, 32))[0]
      (-1, 32)
      >>> jnn.GlobalAvgPool(1).apply({}, jnp.ones((2, 5, 3))).shape
      (2, 3)
    """
    return _global("GlobalAvgPool", spatial_dims, jnp.mean)


def GlobalMaxPool(spatial_dims: int = 2) -> Layer:
    """Max over all spatial axes: ``(*batch, *spatial, C) -> (*batch, C)``.

    Args:
      spatial_dims: how many axes before the channels to reduce (2 for images).

    Returns:
      A parameter-free :class:`Layer`.

    Raises:
      ValueError: if ``spatial_dims`` is not a positive int.

    Example:
      >>> import jax.numpy as jnp, jnn
      >>> jnn.GlobalMaxPool(1).apply({}, jnp.arange(6.0).reshape(1, 3, 2))
      Array([[4., 5.]], dtype=float32)
    """
    return _global("GlobalMaxPool", spatial_dims, jnp.max)


def Reshape(target_shape: Sequence[int], *, ndim: int | None = None) -> Layer:
    """Reshape the trailing (feature) axes to ``target_shape``.

    Args:
      target_shape: the new trailing shape; one entry may be ``-1``.
      ndim: how many trailing axes to reshape. ``None`` (Keras's behaviour)
        keeps only the first (batch) axis: ``(N, 64) -> (N, 8, 8, 1)``. Give it
        for extra leading axes or ``vmap`` over single examples.

    Returns:
      A parameter-free :class:`Layer`.

    Raises:
      ValueError: for a bad ``target_shape`` or ``ndim``; from ``init`` or
        ``apply``, if the element counts differ (nothing is dropped or padded).

    Example:
      >>> import jax, jax.numpy as jnp, jnn
      >>> jnn.Reshape((8, 8, 1)).init(jax.random.key(0), (-1, 64))[0]
      (-1, 8, 8, 1)
      >>> jnn.Reshape((2, -1), ndim=1).apply({}, jnp.ones((3, 4, 6))).shape
      (3, 4, 2, 3)
    """
    try:
        target = tuple(target_shape)
    except TypeError:
        target = ()
    if (
        not target
        or any(not is_int(d) or (d < 1 and d != -1) for d in target)
        or (target.count(-1) > 1)
    ):
        raise ValueError(
            "Reshape: target_shape must be a tuple of positive ints with at most one -1, "
            f"got {target_shape!r}."
        )
    target = tuple(int(d) for d in target)
    if ndim is not None:
        ndim = check_positive_int("Reshape", "ndim", ndim, hint=" or None")
    name = f"Reshape({target})"

    def resolve(shape: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
        lead = 1 if ndim is None else len(shape) - ndim
        if lead < (1 if ndim is None else 0):
            raise ValueError(f"{name}: input of shape {shape} has too few axes.")
        tail = shape[lead:]
        if -1 in tail:
            raise ValueError(f"{name}: the reshaped axes {tail} must all be known.")
        size, known = math.prod(tail), math.prod(d for d in target if d != -1)
        out = tuple(size // known if d == -1 else d for d in target)
        if math.prod(out) != size:
            raise ValueError(
                f"{name}: cannot reshape trailing axes {tail} ({size} elements) of input "
                f"{shape} into {target}."
            )
        return lead, out

    def init(key: PRNGKey, input_shape: Shape) -> tuple[Shape, Params]:
        del key
        shape = normalize_shape(name, input_shape)
        lead, out = resolve(shape)
        return (*shape[:lead], *out), {}

    def apply(params: Params, x: Array, *, key: PRNGKey | None = None, train: bool = False):
        del params, key, train
        x = check_numeric(name, x)
        lead, out = resolve(tuple(x.shape))
        return x.reshape((*x.shape[:lead], *out))

    return describe(Layer(init, apply), "reshape", {"target_shape": target, "ndim": ndim})
