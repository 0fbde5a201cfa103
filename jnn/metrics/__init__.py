"""Metrics: per-example means, and stateful metrics over a whole dataset.

Two kinds, both computed by :func:`jnn.fit` and :func:`jnn.evaluate` inside the
compiled epoch:

- **per-example means**: functions ``metric(pred, target, *, weights=None,
  mask=None)`` sharing the losses' signature and conventions (no broadcasting,
  per-example weights/mask, weighted mean), so any loss is also a metric. An
  epoch's value is the weighted mean of the batch values weighted by their
  examples: exact for any metric that is a mean over examples. **Any plain
  function passed in** ``metrics=`` **is treated this way**; one that is not a
  mean over examples (an AUC, an F1, a median) would come out as a mean of batch
  values, so ``fit`` refuses a function marked ``fn.decomposable = False``: write
  it as a :class:`Metric` instead.
- **stateful metrics** (:class:`Metric`: ``init``, ``update``, ``result``) whose
  state of sufficient statistics is summed over batches, chunks, stream groups and
  mesh devices: :func:`AUC`, :func:`Precision`, :func:`Recall`, :func:`F1`,
  :func:`TopKAccuracy`, :func:`ConfusionMatrix`, :func:`MAE`, :func:`RMSE`,
  :func:`R2`. By name: ``"auc"``, ``"pr_auc"``, ``"precision"``, ``"recall"``,
  ``"f1"``, ``"top_5_accuracy"`` (any k), ``"rmse"``, ``"r2"``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, cast

import jax.numpy as jnp

from jnn import losses as _losses
from jnn._data import close_match
from jnn._reduce import as_array, check_same_shape, weighted_reduce
from jnn._typing import Array, ArrayLike
from jnn.metrics._stateful import (
    AUC,
    F1,
    MAE,
    R2,
    RMSE,
    ConfusionMatrix,
    Metric,
    Precision,
    Recall,
    TopKAccuracy,
    by_name,
)

__all__ = [
    "AUC",
    "F1",
    "MAE",
    "R2",
    "RMSE",
    "ConfusionMatrix",
    "Metric",
    "Precision",
    "Recall",
    "TopKAccuracy",
    "accuracy",
    "binary_accuracy",
    "categorical_accuracy",
    "get",
]


def binary_accuracy(
    pred: ArrayLike,
    labels: ArrayLike,
    *,
    threshold: float = 0.5,
    weights: ArrayLike | None = None,
    mask: ArrayLike | None = None,
) -> Array:
    """Fraction of ``pred > threshold`` that agree with ``labels > 0.5``.

    Use ``threshold=0.5`` for probabilities and ``threshold=0.0`` for logits.

    Args:
      pred: predicted probabilities (or logits), any shape.
      labels: 0/1 labels, the same shape as ``pred``.
      threshold: predictions above it count as positive.
      weights: optional per-example weights, shaped like the leading axes.
      mask: optional per-example 0/1 (or bool) mask, likewise.

    Returns:
      The (weighted) fraction of correct predictions, a scalar in [0, 1].

    Raises:
      ValueError: if the shapes differ.

    Example:
      >>> import jax.numpy as jnp, jnn
      >>> jnn.metrics.binary_accuracy(jnp.array([0.9, 0.2, 0.7]), jnp.array([1, 0, 0]))
      Array(0.6666667, dtype=float32)
    """
    pred = as_array("binary_accuracy", "predictions", pred)
    labels = as_array("binary_accuracy", "labels", labels)
    check_same_shape("binary_accuracy", pred, labels)
    hits = ((pred > threshold) == (labels > 0.5)).astype(jnp.float32)
    return weighted_reduce("binary_accuracy", hits, weights=weights, mask=mask)


def categorical_accuracy(
    pred: ArrayLike,
    labels: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    mask: ArrayLike | None = None,
) -> Array:
    """Fraction of ``argmax(pred, -1)`` equal to the class (integer or one-hot labels).

    Args:
      pred: ``(..., C)`` scores (probabilities or logits).
      labels: integer class ids ``(...)`` or one-hot ``(..., C)``.
      weights: optional per-example weights, shaped like the leading axes.
      mask: optional per-example 0/1 (or bool) mask, likewise.

    Returns:
      The (weighted) fraction of correct predictions, a scalar in [0, 1].

    Raises:
      ValueError: for labels of any other shape, or ids outside ``[0, C)``.

    Example:
      >>> import jax.numpy as jnp, jnn
      >>> scores = jnp.array([[0.1, 0.9], [0.8, 0.2]])
      >>> jnn.metrics.categorical_accuracy(scores, jnp.array([1, 1]))
      Array(0.5, dtype=float32)
    """
    pred = as_array("categorical_accuracy", "predictions", pred)
    labels, sparse = _losses._class_labels("categorical_accuracy", "predictions", pred, labels)
    target = labels if sparse else jnp.argmax(labels, axis=-1)
    hits = (jnp.argmax(pred, axis=-1) == target).astype(jnp.float32)
    return weighted_reduce("categorical_accuracy", hits, weights=weights, mask=mask)


def accuracy(
    pred: ArrayLike,
    labels: ArrayLike,
    *,
    threshold: float = 0.5,
    weights: ArrayLike | None = None,
    mask: ArrayLike | None = None,
) -> Array:
    """Binary accuracy for one output unit, categorical accuracy for several.

    ``pred`` of shape ``(..., 1)`` or ``(...)`` with labels of the same shape is
    binary (thresholded at ``threshold``); ``(..., C)`` with ``C > 1`` is
    categorical (argmax). For multi-label outputs call :func:`binary_accuracy`.

    Args:
      pred: predictions, ``(..., 1)``/``(...)`` (binary) or ``(..., C)``.
      labels: labels as :func:`binary_accuracy` or :func:`categorical_accuracy` take them.
      threshold: the binary threshold (0.5 for probabilities, 0 for logits).
      weights: optional per-example weights, shaped like the leading axes.
      mask: optional per-example 0/1 (or bool) mask, likewise.

    Returns:
      The (weighted) fraction of correct predictions, a scalar in [0, 1].

    Raises:
      ValueError: if the labels do not fit the predictions.

    Example:
      >>> import jax.numpy as jnp, jnn
      >>> float(jnn.metrics.accuracy(jnp.array([[0.8], [0.3]]), jnp.array([[1.0], [1.0]])))
      0.5
    """
    pred = as_array("accuracy", "predictions", pred)
    if pred.ndim >= 1 and pred.shape[-1] > 1:
        return categorical_accuracy(pred, labels, weights=weights, mask=mask)
    return binary_accuracy(pred, labels, threshold=threshold, weights=weights, mask=mask)


_METRICS: dict[str, Callable[..., Array]] = {
    "accuracy": accuracy,
    "acc": accuracy,
    "binary_accuracy": binary_accuracy,
    "categorical_accuracy": categorical_accuracy,
}


# One object per metric, not a new partial per call: fit caches its compiled
# epoch by the metric functions, and a fresh partial would recompile every call.
_AT_ZERO = {fn: partial(fn, threshold=0.0) for fn in (accuracy, binary_accuracy)}


def get(
    metric: str | Metric | Callable[..., Array], *, from_logits: bool = False
) -> Callable[..., Any]:
    """Resolve a metric (or any loss) by name, or pass a callable through.

    Args:
      metric: a name from this module or :mod:`jnn.losses`, a :class:`Metric`,
        or a callable.
      from_logits: whether predictions are logits; binary accuracy then
        thresholds at 0 instead of 0.5, and a :class:`Metric` with a logits
        variant (AUC, precision...) applies the sigmoid/softmax first.

    Returns:
      The metric function ``m(pred, target, *, weights=None, mask=None)``, or
      the :class:`Metric` (also callable so).

    Raises:
      ValueError: for an unknown name, suggesting the closest.
      TypeError: for anything that is neither a name nor a callable.

    Example:
      >>> import jax.numpy as jnp, jnn
      >>> acc = jnn.metrics.get("accuracy", from_logits=True)
      >>> float(acc(jnp.array([[2.0], [-1.0]]), jnp.array([[1.0], [1.0]])))
      0.5
    """
    if isinstance(metric, Metric):
        chosen: Metric = metric.logits if from_logits and metric.logits is not None else metric
        return cast(Callable[..., Any], chosen)
    if callable(metric):
        return metric
    if not isinstance(metric, str):
        raise TypeError(f"metric must be a name or a callable, got {type(metric).__name__}.")
    stateful = by_name(metric)
    if stateful is not None:
        return get(stateful, from_logits=from_logits)
    if metric in _METRICS:
        fn = _METRICS[metric]
        if from_logits and fn in _AT_ZERO:
            return _AT_ZERO[fn]
        return fn
    try:
        return _losses.get(metric)
    except ValueError:
        known = [*_METRICS, *_losses._LOSSES, "auc", "pr_auc", "precision", "recall", "f1"]
        known += ["top_5_accuracy", "rmse", "r2"]
        raise ValueError(
            f"Unknown metric {metric!r}.{close_match(metric, known)} Known: "
            f"{', '.join(sorted(known))}; or pass a function metric(pred, target, *, mask)."
        ) from None
