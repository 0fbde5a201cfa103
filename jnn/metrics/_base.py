"""The stateful metric contract, :class:`Metric`, and the input handling it shares (private).

See :mod:`jnn.metrics._stateful` for the built-in metrics.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jnn import losses as _losses
from jnn._reduce import check_same_shape
from jnn._typing import Array, ArrayLike

_F32 = jnp.float32


class Metric(NamedTuple):
    """A metric as three pure functions over a pytree of sufficient statistics.

    Attributes:
      init: ``init() -> state``, zero statistics (a pytree of float32 arrays).
      update: ``update(state, pred, labels, weights) -> state``, the state plus one
        batch's statistics; ``weights`` is None or per-example weights (0 for
        padding).
      result: ``result(state) -> value``, a scalar or an array (a confusion matrix).
      name: the history key (``"auc"``, ``"top_5_accuracy"``, ...).
      logits: the same metric for logits predictions, or None when the
        predictions' link does not matter. ``fit`` uses it when its loss takes
        logits (``"bce_with_logits"``, ``"cross_entropy"``), as for accuracy.

    States add: ``merge(a, b)`` is their leaf-wise sum, so states of batches,
    chunks, stream groups and devices combine exactly. Calling the metric on
    arrays computes it in one go.

    Example:
      >>> import jax.numpy as jnp, jnn
      >>> auc = jnn.metrics.AUC()
      >>> s = auc.update(auc.init(), jnp.array([0.9, 0.2]), jnp.array([1, 0]), None)
      >>> s = auc.update(s, jnp.array([0.7, 0.4]), jnp.array([0, 1]), None)
      >>> round(float(auc.result(s)), 3)
      0.75
    """

    init: Callable[[], Any]
    update: Callable[..., Any]
    result: Callable[[Any], Any]
    name: str = "metric"
    logits: Any = None

    def merge(self, a: Any, b: Any) -> Any:
        """The state of the data of ``a`` and of ``b`` together (their sum).

        Args:
          a, b: two states of this metric.

        Returns:
          Their leaf-wise sum.
        """
        return jax.tree.map(jnp.add, a, b)

    def __call__(
        self,
        pred: ArrayLike,
        labels: ArrayLike,
        *,
        weights: ArrayLike | None = None,
        mask: ArrayLike | None = None,
    ) -> Array:
        """The metric of one set of predictions (``result(update(init(), ...))``)."""
        if mask is not None:
            m = jnp.asarray(mask, _F32)
            weights = m if weights is None else jnp.asarray(weights, _F32) * m
        return self.result(self.update(self.init(), pred, labels, weights))


def _per_example(name: str, weights: Any, lead: tuple[int, ...]) -> Array:
    """Weights broadcast over the leading (per-example) shape ``lead``, flattened."""
    if weights is None:
        return jnp.ones((math.prod(lead),), _F32)
    w = jnp.asarray(weights, _F32)
    if w.shape != lead[: w.ndim]:
        raise ValueError(
            f"{name}: weights of shape {tuple(w.shape)} do not fit predictions whose "
            f"per-example shape is {lead}; pass one weight per example."
        )
    return jnp.broadcast_to(w.reshape(w.shape + (1,) * (len(lead) - w.ndim)), lead).reshape(-1)


def _binary(name: str, pred: Any, labels: Any, weights: Any):
    """Flat ``(scores, positive, weights)`` of binary predictions (labels as pred)."""
    pred, labels = jnp.asarray(pred), jnp.asarray(labels)
    check_same_shape(name, pred, labels)
    lead = pred.shape[:1] if pred.ndim else ()
    w = _per_example(name, weights, lead)
    k = pred.size // max(w.shape[0], 1)
    w = jnp.repeat(w, k) if k > 1 else w
    return pred.reshape(-1).astype(_F32), labels.reshape(-1) > 0.5, w


def _classes(name: str, pred: Any, labels: Any, weights: Any):
    """``(scores (M, C), class ids (M,), weights (M,))`` of categorical predictions."""
    pred = jnp.asarray(pred)
    labels, sparse = _losses._class_labels(name, "predictions", pred, labels)
    ids = labels if sparse else jnp.argmax(labels, axis=-1)
    w = _per_example(name, weights, pred.shape[:-1])
    return pred.reshape(-1, pred.shape[-1]).astype(_F32), ids.reshape(-1).astype(jnp.int32), w


def _multiclass(pred: Any) -> bool:
    pred = jnp.asarray(pred)
    return pred.ndim >= 2 and pred.shape[-1] > 1


def _div(a: Array, b: Array) -> Array:
    """``a / b``, 0 where ``b`` is 0 (scikit-learn's ``zero_division=0``)."""
    return jnp.where(b > 0, a / jnp.where(b > 0, b, 1.0), 0.0)


def _variants(name: str, make: Callable, from_logits: bool | None, link: Callable) -> Metric:
    """The metric for probabilities (with its ``logits`` variant), or as ``from_logits`` says."""

    def build(chosen: Callable | None, logits: Metric | None = None) -> Metric:
        init, update, result = make(chosen)
        return Metric(init, update, result, name, logits)

    if from_logits is None:
        return build(None, build(link))
    return build(link if from_logits else None)


def _link(pred: Array) -> Array:
    """Probabilities from logits: sigmoid for one unit, softmax for several."""
    return jax.nn.softmax(pred, axis=-1) if _multiclass(pred) else jax.nn.sigmoid(pred)
