"""Shape checks and weighted reductions shared by losses and metrics (private)."""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from jnn import _data
from jnn._typing import Array, ArrayLike

Reduction = Literal["mean", "sum", "none"]


def as_array(name: str, what: str, x: ArrayLike) -> Array:
    """``x`` as a numeric ``jax.Array``: :func:`jnn._data.as_array` (its one message), on device."""
    return jnp.asarray(_data.as_array(name, what, x))


def check_values(name: str, what: str, x: Array, *, floating: bool = True) -> Array:
    """Refuse integer predictions, empty arrays, and (outside of tracing) NaN values."""
    if floating and not jnp.issubdtype(x.dtype, jnp.inexact):
        raise TypeError(
            f"{name}: {what} must be floating point (a model's outputs), got {x.dtype}. "
            "Only labels may be integers; cast with x.astype(jnp.float32)."
        )
    if x.size == 0:
        raise ValueError(f"{name}: {what} is empty (shape {tuple(x.shape)}); nothing to average.")
    if not isinstance(x, jax.core.Tracer) and jnp.issubdtype(x.dtype, jnp.inexact):
        nans = int(np.count_nonzero(np.isnan(np.asarray(x))))
        if nans:
            raise ValueError(
                f"{name}: {what} holds {nans} NaN value(s) (shape {tuple(x.shape)}); the loss "
                "would be NaN. Find where they come from (e.g. jax.debug_nans)."
            )
    return x


class ShapeMismatchError(ValueError):
    """Predictions and labels of different shapes (jnn never broadcasts one against the other).

    Attributes:
      name: the loss or metric.
      pred_shape, target_shape: the two shapes.
    """

    def __init__(self, message: str, name: str, pred_shape: tuple, target_shape: tuple):
        super().__init__(message)
        self.name, self.pred_shape, self.target_shape = name, pred_shape, target_shape


def check_same_shape(name: str, pred: Array, target: Array) -> None:
    """Refuse broadcasting: ``pred`` and ``target`` must have one shape."""
    if pred.shape != target.shape:
        hint = ""
        if pred.shape == (*target.shape, 1):
            hint = f" Reshape the labels with labels.reshape({', '.join(map(str, pred.shape))})."
        elif target.shape == (*pred.shape, 1):
            hint = " Reshape the labels with labels.squeeze(-1)."
        raise ShapeMismatchError(
            f"{name}: shape mismatch: predictions {tuple(pred.shape)} vs labels "
            f"{tuple(target.shape)}. jnn never broadcasts them against each other (an (N, 1) "
            f"output and (N,) labels would silently give an (N, N) loss)."
            + (hint or " Make both shapes equal."),
            name,
            tuple(pred.shape),
            tuple(target.shape),
        )


def weighted_reduce(
    name: str,
    values: Array,
    *,
    weights: ArrayLike | None,
    mask: ArrayLike | None,
    reduction: Reduction = "mean",
) -> Array:
    """Reduce per-element ``values`` with optional per-example weights and mask.

    ``weights`` and ``mask`` must have exactly the leading shape of ``values``
    (e.g. ``(N,)`` for ``(N, 1)`` values). Trailing axes are averaged per
    example; the ``"mean"`` is then ``sum(w * l) / sum(w)``, so masked-out
    examples count for nothing, and an all-zero weight gives 0, not NaN.
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{name}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}.")
    if values.size == 0:
        raise ValueError(
            f"{name}: the predictions and labels are empty (shape {tuple(values.shape)}); "
            "nothing to average."
        )
    w = None
    for what, extra in (("weights", weights), ("mask", mask)):
        if extra is None:
            continue
        extra = as_array(name, what, extra)
        if extra.shape != values.shape[: extra.ndim]:
            raise ValueError(
                f"{name}: {what} of shape {tuple(extra.shape)} must match the leading "
                f"(per-example) axes of the loss values {tuple(values.shape)}, e.g. "
                f"{tuple(values.shape[:1])}. Nothing is broadcast."
            )
        extra = extra.astype(values.dtype)
        w = extra if w is None else _expand_to(w, extra.ndim) * _expand_to(extra, w.ndim)
    if w is None:
        if reduction == "mean":
            return jnp.mean(values)
        return jnp.sum(values) if reduction == "sum" else values
    per_example = (
        jnp.mean(values, axis=tuple(range(w.ndim, values.ndim))) if values.ndim > w.ndim else values
    )
    if reduction == "none":
        return per_example * w
    total = jnp.sum(per_example * w)
    if reduction == "sum":
        return total
    denom = jnp.sum(w)
    return jnp.where(denom > 0, total / jnp.where(denom > 0, denom, 1.0), 0.0)


def _expand_to(x: Array, ndim: int) -> Array:
    return x.reshape(x.shape + (1,) * max(0, ndim - x.ndim))
