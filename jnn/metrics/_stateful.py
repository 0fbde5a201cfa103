"""Stateful metrics: ``Metric(init, update, result)``, mergeable sufficient statistics.

A metric that is not a mean of per-example values (AUC, precision, F1, R2, ...) is
computed from *sufficient statistics*: weighted counts and sums. ``init()`` gives
zero statistics, ``update(state, pred, labels, weights)`` adds a batch's, and
``result(state)`` turns them into the value. States **add**: the state of two
batches is the leaf-wise sum of theirs (:meth:`Metric.merge`), which is what lets
``fit``/``evaluate`` carry them through the compiled scan, add them over the
chunks of an epoch and the groups of a stream, over the devices of a mesh (the
batch's sums are global sums), and stack them under ``vmap`` in sweeps.

Every counting metric counts ``weights`` (padding rows weigh 0), so sample weights
and masks are exact. Thresholded curves (:func:`AUC`) bucket the scores at
``num_thresholds`` evenly spaced thresholds, as Keras does.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jnn._data import check_int, check_number, close_match
from jnn._reduce import check_same_shape
from jnn._typing import Array
from jnn.metrics._base import (
    _F32,
    Metric,
    _binary,
    _classes,
    _div,
    _link,
    _multiclass,
    _per_example,
    _variants,
)

# --------------------------------------------------------------------------- curves


@functools.lru_cache(maxsize=64)
def AUC(
    curve: str = "ROC",
    num_thresholds: int = 1000,
    *,
    multi_class: str | None = None,
    from_logits: bool | None = None,
) -> Metric:
    """Area under the ROC curve (``"auc"``) or the precision-recall curve (``"pr_auc"``).

    The scores are bucketed at ``num_thresholds`` evenly spaced thresholds in
    [0, 1] (the first just below 0, the last just above 1, as Keras does); the
    state is the weighted count of positives and negatives per bucket. ROC AUC is
    the trapezoidal area (scikit-learn's ``roc_auc_score`` up to the bucketing);
    PR AUC is the average precision, ``sum (R_t - R_t+1) P_t`` (scikit-learn's
    ``average_precision_score`` up to the bucketing). Both equal scikit-learn's
    exactly on scores rounded up to the next threshold (a bucket is a tie). The
    bucketing error falls roughly as ``1 / num_thresholds`` (see the tests): on
    1000 scores spread over [0, 1], ROC about 7e-4 / 1e-4 / 6e-6 and PR about
    1e-2 / 2e-3 / 5e-4 at 50 / 200 / 1000 thresholds. Buckets cost memory only
    (a search per score, not a comparison per threshold), hence the default of
    1000 (Keras: 200).

    Args:
      curve: ``"ROC"`` or ``"PR"``.
      num_thresholds: thresholds (at least 2).
      multi_class: for ``(N, C)`` predictions: ``"micro"`` (one-vs-rest over all
        (example, class) pairs, scikit-learn's ``average="micro"`` on one-hot
        labels). Without it multi-class predictions are an error.
      from_logits: None follows the loss in ``fit`` (sigmoid/softmax for a logits
        loss); True or False fixes it.

    Returns:
      The :class:`Metric` (history key ``"auc"`` or ``"pr_auc"``).

    Raises:
      ValueError: for a bad ``curve``, ``num_thresholds`` or ``multi_class``; at
        trace time, for multi-class predictions without ``multi_class``.

    Example:
      >>> import jax.numpy as jnp, jnn
      >>> float(jnn.metrics.AUC()(jnp.array([0.1, 0.4, 0.35, 0.8]), jnp.array([0, 0, 1, 1])))
      0.75
    """
    where = "AUC"
    if curve not in ("ROC", "PR"):
        raise ValueError(f"{where}: curve must be 'ROC' or 'PR', got {curve!r}.")
    t = check_int(where, "num_thresholds", num_thresholds, minimum=2, maximum=1 << 20)
    if multi_class not in (None, "micro"):
        raise ValueError(f"{where}: multi_class must be None or 'micro', got {multi_class!r}.")
    eps = 1e-7
    thresholds = jnp.concatenate(
        [jnp.array([-eps]), jnp.linspace(0.0, 1.0, t)[1:-1], jnp.array([1.0 + eps])]
    ).astype(_F32)

    def make(link):
        def init():
            return {"pos": jnp.zeros(t + 1, _F32), "neg": jnp.zeros(t + 1, _F32)}

        def update(state, pred, labels, weights):
            pred = jnp.asarray(pred)
            if _multiclass(pred):
                if multi_class is None:
                    raise ValueError(
                        f"{where}: predictions of shape {tuple(pred.shape)} have "
                        f"{pred.shape[-1]} classes; AUC is defined for one score per example. "
                        "Say how to average: jnn.metrics.AUC(multi_class='micro') "
                        "(one-vs-rest over every class), or use a single sigmoid output."
                    )
                scores, ids, w = _classes(where, link(pred) if link else pred, labels, weights)
                c = scores.shape[-1]
                p = scores.reshape(-1)
                pos = jax.nn.one_hot(ids, c, dtype=jnp.bool_).reshape(-1)
                w = jnp.repeat(w, c)
            else:
                p, pos, w = _binary(where, link(pred) if link else pred, labels, weights)
            bucket = jnp.searchsorted(thresholds, jnp.clip(p, 0.0, 1.0), side="left")
            zero = jnp.zeros(t + 1, _F32)
            return {
                "pos": state["pos"] + zero.at[bucket].add(jnp.where(pos, w, 0.0)),
                "neg": state["neg"] + zero.at[bucket].add(jnp.where(pos, 0.0, w)),
            }

        def result(state):
            # tp[i]: positives scored above thresholds[i] (buckets i+1 and up).
            tp = jnp.cumsum(state["pos"][::-1])[::-1][1:]
            fp = jnp.cumsum(state["neg"][::-1])[::-1][1:]
            if curve == "ROC":
                tpr, fpr = _div(tp, tp[0]), _div(fp, fp[0])
                return jnp.sum((fpr[:-1] - fpr[1:]) * (tpr[:-1] + tpr[1:]) / 2)
            recall, precision = _div(tp, tp[0]), _div(tp, tp + fp)
            return jnp.sum((recall[:-1] - recall[1:]) * precision[:-1])

        return init, update, result

    return _variants("auc" if curve == "ROC" else "pr_auc", make, from_logits, _link)


# --------------------------------------------------------------------------- counts


_AVERAGES = ("binary", "macro", "micro", "weighted")


def _confusion_metric(
    where: str, name: str, num_classes: int | None, threshold: float, from_logits, score
) -> Metric:
    """A metric of the weighted confusion matrix (rows: true class, columns: predicted)."""
    c = 2 if num_classes is None else num_classes

    def make(link):
        def init():
            return jnp.zeros((c, c), _F32)

        def update(state, pred, labels, weights):
            pred = jnp.asarray(pred)
            if _multiclass(pred):
                if num_classes is None:
                    raise ValueError(
                        f"{where}: predictions of shape {tuple(pred.shape)} have "
                        f"{pred.shape[-1]} classes; say how to average, e.g. "
                        f"jnn.metrics.{where}(average='macro', num_classes={pred.shape[-1]})."
                    )
                if pred.shape[-1] != num_classes:
                    raise ValueError(
                        f"{where}: num_classes={num_classes} but the predictions have "
                        f"{pred.shape[-1]} classes (shape {tuple(pred.shape)})."
                    )
                scores, true, w = _classes(where, pred, labels, weights)
                guess = jnp.argmax(scores, axis=-1).astype(jnp.int32)
            else:
                if num_classes not in (None, 2):
                    raise ValueError(
                        f"{where}: num_classes={num_classes}, but the predictions "
                        f"{tuple(pred.shape)} are binary (one score per example)."
                    )
                p, pos, w = _binary(where, link(pred) if link else pred, labels, weights)
                true, guess = pos.astype(jnp.int32), (p > threshold).astype(jnp.int32)
            flat = jnp.zeros(c * c, _F32).at[true * c + guess].add(w)
            return state + flat.reshape(c, c)

        return init, update, score

    return _variants(name, make, from_logits, jax.nn.sigmoid)


def _scores(kind: str, average: str) -> Callable[[Array], Array]:
    """``result(cm)`` of precision, recall or F1 with scikit-learn's averaging."""

    def result(cm: Array) -> Array:
        tp = jnp.diag(cm)
        predicted, support = cm.sum(0), cm.sum(1)
        fp, fn = predicted - tp, support - tp
        if average == "micro":
            tp, fp, fn = tp.sum(), fp.sum(), fn.sum()
        num, den = {
            "precision": (tp, tp + fp),
            "recall": (tp, tp + fn),
            "f1": (2 * tp, 2 * tp + fp + fn),
        }[kind]
        value = _div(num, den)
        if average in ("binary", "micro"):
            return value[1] if average == "binary" else value
        if average == "weighted":
            return _div(jnp.sum(value * support), jnp.sum(support))
        present = (support + predicted) > 0  # scikit-learn averages over labels seen
        return _div(jnp.sum(jnp.where(present, value, 0.0)), jnp.sum(present))

    return result


def _counting(kind: str, threshold, average, num_classes, from_logits) -> Metric:
    where = {"precision": "Precision", "recall": "Recall", "f1": "F1"}[kind]
    threshold = check_number(where, "threshold", threshold)
    if average not in _AVERAGES:
        raise ValueError(
            f"{where}: average must be one of {_AVERAGES}, got {average!r}."
            + (close_match(average, _AVERAGES) if isinstance(average, str) else "")
        )
    if num_classes is not None:
        num_classes = check_int(where, "num_classes", num_classes, minimum=2, maximum=1 << 14)
    if average != "binary" and num_classes is None:
        raise ValueError(
            f"{where}: average={average!r} needs num_classes= (the state is a "
            "num_classes x num_classes confusion matrix)."
        )
    if average == "binary" and num_classes not in (None, 2):
        raise ValueError(
            f"{where}: average='binary' is for two classes; for {num_classes} classes pass "
            "average='macro', 'micro' or 'weighted'."
        )
    name = kind if average == "binary" else f"{kind}_{average}"
    return _confusion_metric(
        where, name, num_classes if average != "binary" else None, threshold, from_logits,
        _scores(kind, average),
    )  # fmt: skip


@functools.lru_cache(maxsize=64)
def Precision(
    threshold: float = 0.5,
    *,
    average: str = "binary",
    num_classes: int | None = None,
    from_logits: bool | None = None,
) -> Metric:
    """Precision, ``tp / (tp + fp)`` from weighted counts (0 when nothing is predicted).

    Args:
      threshold: binary predictions above it are positive (on probabilities).
      average: ``"binary"`` (one score per example), or for ``(N, C)`` predictions
        (argmax) ``"macro"``, ``"micro"`` or ``"weighted"`` as scikit-learn's
        ``precision_score``.
      num_classes: the number of classes, needed for a multi-class ``average``.
      from_logits: None follows the loss in ``fit``; True or False fixes it.

    Returns:
      The :class:`Metric` (history key ``"precision"``, or ``"precision_macro"``...).

    Raises:
      ValueError: for bad options; at trace time, for multi-class predictions
        with ``average="binary"``.

    Example:
      >>> import jax.numpy as jnp, jnn
      >>> float(jnn.metrics.Precision()(jnp.array([0.9, 0.8, 0.2]), jnp.array([1, 0, 1])))
      0.5
    """
    return _counting("precision", threshold, average, num_classes, from_logits)


@functools.lru_cache(maxsize=64)
def Recall(
    threshold: float = 0.5,
    *,
    average: str = "binary",
    num_classes: int | None = None,
    from_logits: bool | None = None,
) -> Metric:
    """Recall, ``tp / (tp + fn)`` from weighted counts; options as :func:`Precision`.

    Args:
      threshold: binary predictions above it are positive (on probabilities).
      average: ``"binary"``, or ``"macro"``, ``"micro"``, ``"weighted"`` for
        ``(N, C)`` predictions.
      num_classes: the number of classes, needed for a multi-class ``average``.
      from_logits: None follows the loss in ``fit``; True or False fixes it.

    Returns:
      The :class:`Metric` (history key ``"recall"``, or ``"recall_macro"``...).

    Example:
      >>> import jax.numpy as jnp, jnn
      >>> float(jnn.metrics.Recall()(jnp.array([0.9, 0.8, 0.2]), jnp.array([1, 0, 1])))
      0.5
    """
    return _counting("recall", threshold, average, num_classes, from_logits)


@functools.lru_cache(maxsize=64)
def F1(
    threshold: float = 0.5,
    *,
    average: str = "binary",
    num_classes: int | None = None,
    from_logits: bool | None = None,
) -> Metric:
    """F1, ``2 tp / (2 tp + fp + fn)`` from weighted counts; options as :func:`Precision`.

    Args:
      threshold: binary predictions above it are positive (on probabilities).
      average: ``"binary"``, or ``"macro"``, ``"micro"``, ``"weighted"`` for
        ``(N, C)`` predictions.
      num_classes: the number of classes, needed for a multi-class ``average``.
      from_logits: None follows the loss in ``fit``; True or False fixes it.

    ``average="macro"`` averages over the classes seen in labels or predictions,
    ``"weighted"`` by class support, ``"micro"`` pools the counts (scikit-learn's
    ``f1_score``).

    Returns:
      The :class:`Metric` (history key ``"f1"``, or ``"f1_macro"``...).

    Example:
      >>> import jax.numpy as jnp, jnn
      >>> float(jnn.metrics.F1()(jnp.array([0.9, 0.8, 0.2]), jnp.array([1, 0, 1])))
      0.5
    """
    return _counting("f1", threshold, average, num_classes, from_logits)


@functools.lru_cache(maxsize=64)
def ConfusionMatrix(num_classes: int, *, threshold: float = 0.5) -> Metric:
    """The weighted confusion matrix: ``[i, j]`` counts true class ``i`` predicted ``j``.

    Binary predictions (one score, ``num_classes=2``) are thresholded; ``(N, C)``
    predictions use their argmax. In ``fit``'s history it is an array per epoch.

    Args:
      num_classes: the number of classes (2 for binary predictions).
      threshold: for binary predictions.

    Returns:
      The :class:`Metric` (history key ``"confusion_matrix"``).

    Example:
      >>> import jax.numpy as jnp, jnn
      >>> cm = jnn.metrics.ConfusionMatrix(2)
      >>> cm(jnp.array([0.9, 0.8, 0.2]), jnp.array([1, 0, 1])).tolist()
      [[0.0, 1.0], [1.0, 1.0]]
    """
    where = "ConfusionMatrix"
    c = check_int(where, "num_classes", num_classes, minimum=2, maximum=1 << 14)
    threshold = check_number(where, "threshold", threshold)
    return _confusion_metric(
        where, "confusion_matrix", None if c == 2 else c, threshold, None, lambda cm: cm
    )


# --------------------------------------------------------------------------- means


def _mean_metric(name: str, value: Callable[[Array, Array], Array], finish=lambda m: m) -> Metric:
    """A weighted mean of per-element values, kept as (sum, weight)."""

    def init():
        return jnp.zeros(2, _F32)

    def update(state, pred, labels, weights):
        pred, labels = jnp.asarray(pred), jnp.asarray(labels)
        p, t, w = _pairs(name, pred, labels, weights)
        v = value(p, t)
        return state + jnp.stack([jnp.sum(jnp.where(w > 0, w * v, 0.0)), jnp.sum(w)])

    return Metric(init, update, lambda s: finish(_div(s[0], s[1])), name)


def _pairs(name: str, pred: Array, labels: Array, weights: Any):
    """Flat predictions, targets and per-element weights of a regression."""
    check_same_shape(name, pred, labels)
    lead = pred.shape[:1] if pred.ndim else ()
    w = _per_example(name, weights, lead)
    k = pred.size // max(w.shape[0], 1)
    w = jnp.repeat(w, k) if k > 1 else w
    return pred.reshape(-1).astype(_F32), labels.reshape(-1).astype(_F32), w


@functools.lru_cache(maxsize=8)
def MAE() -> Metric:
    """Mean absolute error, weighted (history key ``"mae"``).

    Returns:
      The :class:`Metric` (the state: the weighted sum of errors and of weights).

    Example:
      >>> import jax.numpy as jnp, jnn
      >>> float(jnn.metrics.MAE()(jnp.array([1.0, 2.0]), jnp.array([0.0, 0.0])))
      1.5
    """
    return _mean_metric("mae", lambda p, t: jnp.abs(p - t))


@functools.lru_cache(maxsize=8)
def RMSE() -> Metric:
    """Root mean squared error over the whole data (not a mean of batch RMSEs): ``"rmse"``.

    Returns:
      The :class:`Metric` (the state: the weighted sum of squared errors and of weights).

    Example:
      >>> import jax.numpy as jnp, jnn
      >>> round(float(jnn.metrics.RMSE()(jnp.array([3.0, 0.0]), jnp.array([0.0, 4.0]))), 4)
      3.5355
    """
    return _mean_metric("rmse", lambda p, t: (p - t) ** 2, jnp.sqrt)


@functools.lru_cache(maxsize=8)
def R2() -> Metric:
    """Coefficient of determination, ``1 - SS_res / SS_tot``, weighted (``"r2"``).

    Every output value counts as one observation of one variable (scikit-learn's
    ``r2_score`` for a single output). The state is the weighted sums of ``1, y,
    y**2`` and the squared residuals.

    Returns:
      The :class:`Metric`.

    Example:
      >>> import jax.numpy as jnp, jnn
      >>> round(float(jnn.metrics.R2()(jnp.array([1.0, 2.0, 3.0]), jnp.array([1.0, 2.0, 4.0]))), 4)
      0.7857
    """

    def init():
        return jnp.zeros(4, _F32)

    def update(state, pred, labels, weights):
        p, t, w = _pairs("R2", jnp.asarray(pred), jnp.asarray(labels), weights)
        t, r = jnp.where(w > 0, t, 0.0), jnp.where(w > 0, (p - t) ** 2, 0.0)
        return state + jnp.stack([jnp.sum(w), jnp.sum(w * t), jnp.sum(w * t * t), jnp.sum(w * r)])

    def result(s):
        ss_tot = s[2] - _div(s[1] * s[1], s[0])
        return 1.0 - _div(s[3], ss_tot)

    return Metric(init, update, result, "r2")


@functools.lru_cache(maxsize=64)
def TopKAccuracy(k: int = 5) -> Metric:
    """Fraction of examples whose class is among the ``k`` highest scores (``top_<k>_accuracy``).

    Args:
      k: how many top scores count (at most the number of classes).

    Returns:
      The :class:`Metric`.

    Raises:
      ValueError: for ``k < 1``; at trace time, for ``k`` above the number of classes.

    Example:
      >>> import jax.numpy as jnp, jnn
      >>> s = jnp.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7]])
      >>> float(jnn.metrics.TopKAccuracy(2)(s, jnp.array([1, 1])))
      1.0
    """
    k = check_int("TopKAccuracy", "k", k, minimum=1, maximum=1 << 20)
    name = f"top_{k}_accuracy"

    def init():
        return jnp.zeros(2, _F32)

    def update(state, pred, labels, weights):
        pred = jnp.asarray(pred)
        if not _multiclass(pred) or k > pred.shape[-1]:
            c = pred.shape[-1] if pred.ndim else 1
            raise ValueError(
                f"TopKAccuracy: k={k} but the predictions {tuple(pred.shape)} have {c} "
                f"class(es); k must be at most the number of classes (and classes > 1)."
            )
        scores, ids, w = _classes("TopKAccuracy", pred, labels, weights)
        true = jnp.take_along_axis(scores, ids[:, None], axis=-1)
        hit = (jnp.sum(scores > true, axis=-1) < k).astype(_F32)
        return state + jnp.stack([jnp.sum(w * hit), jnp.sum(w)])

    return Metric(init, update, lambda s: _div(s[0], s[1]), name)


def by_name(name: str) -> Metric | None:
    """The built-in stateful metric called ``name`` (``"auc"``, ``"top_3_accuracy"``...)."""
    if name.startswith("top_") and name.endswith("_accuracy"):
        k = name[4 : -len("_accuracy")]
        if k.isdigit():
            return TopKAccuracy(int(k))
    make = _NAMES.get(name)
    return None if make is None else make()


_NAMES: dict[str, Callable[[], Metric]] = {
    "auc": AUC,
    "pr_auc": lambda: AUC("PR"),
    "precision": Precision,
    "recall": Recall,
    "f1": F1,
    "rmse": RMSE,
    "r2": R2,
}

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
    "by_name",
]
