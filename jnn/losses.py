r"""Losses: pure functions ``loss(pred, target, *, weights=None, mask=None, reduction="mean")``.

Every loss

- refuses silent broadcasting: ``pred`` and ``target`` must have one shape
  (integer class labels: ``pred.shape[:-1]``), else a ``ValueError`` naming
  both shapes and the fix;
- takes optional per-example ``weights`` and/or ``mask`` whose shape is the
  leading (per-example) shape of the loss values, e.g. ``(N,)``;
- returns a scalar weighted mean ``sum(w * l) / sum(w)`` by default
  (``reduction="sum"`` and ``"none"`` are available);
- takes its per-element math from optax where optax has it.

Losses are looked up by name with :func:`get` (``"mse"``, ``"bce"``, ...).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jnn._data import close_match
from jnn._reduce import Reduction, as_array, check_same_shape, check_values, weighted_reduce
from jnn._typing import Array, ArrayLike
from jnn.layers._activations import EPS

__all__ = [
    "bce",
    "bce_with_logits",
    "categorical_crossentropy",
    "cross_entropy",
    "get",
    "mae",
    "mse",
]


def mse(
    pred: ArrayLike,
    target: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    mask: ArrayLike | None = None,
    reduction: Reduction = "mean",
) -> Array:
    r"""Mean squared error, :math:`\frac{1}{N}\sum_i (\hat y_i - y_i)^2`.

    The tutorial's :math:`L = \frac{1}{2N}\sum_i (y_i - \hat y_i)^2` is
    ``0.5 * mse(pred, target)``; the factor only rescales the gradient.

    Args:
      pred: predictions, any shape.
      target: targets, the same shape as ``pred``.
      weights: optional per-example weights, shaped like ``pred``'s leading axes.
      mask: optional per-example 0/1 (or bool) mask, likewise.
      reduction: ``"mean"`` (weighted mean), ``"sum"`` or ``"none"``.

    Returns:
      A scalar (or the unreduced values for ``reduction="none"``).

    Raises:
      ValueError: if the shapes differ.

    Example:
      >>> import jax.numpy as jnp, jnn
      >>> jnn.losses.mse(jnp.array([1.0, 2.0]), jnp.array([0.0, 0.0]))
      Array(2.5, dtype=float32)
    """
    pred, target = _pair("mse", pred, target)
    values = optax.squared_error(pred, target)
    return weighted_reduce("mse", values, weights=weights, mask=mask, reduction=reduction)


def mae(
    pred: ArrayLike,
    target: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    mask: ArrayLike | None = None,
    reduction: Reduction = "mean",
) -> Array:
    r"""Mean absolute error, :math:`\frac{1}{N}\sum_i |\hat y_i - y_i|`.

    Args:
      pred: predictions, any shape.
      target: targets, the same shape as ``pred``.
      weights: optional per-example weights, shaped like the loss values' leading axes.
      mask: optional per-example 0/1 (or bool) mask, likewise.
      reduction: ``"mean"`` (weighted mean), ``"sum"`` or ``"none"``.

    Returns:
      A scalar (or the unreduced values for ``reduction="none"``).

    Raises:
      ValueError: if the shapes differ.

    Example:
      >>> import jax.numpy as jnp, jnn
      >>> jnn.losses.mae(jnp.array([1.0, -2.0]), jnp.array([0.0, 0.0]))
      Array(1.5, dtype=float32)
    """
    pred, target = _pair("mae", pred, target)
    values = jnp.abs(pred - target)
    return weighted_reduce("mae", values, weights=weights, mask=mask, reduction=reduction)


def bce(
    probs: ArrayLike,
    labels: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    mask: ArrayLike | None = None,
    reduction: Reduction = "mean",
) -> Array:
    r"""Binary cross-entropy from probabilities (e.g. a sigmoid output).

    .. math:: \ell = -\,[\,y \log p + (1 - y) \log(1 - p)\,]

    with ``p`` clipped to ``[EPS, 1 - EPS]`` (``EPS = 1e-7``), so the loss is
    finite even at ``p`` = 0 or 1. The clip is straight-through: its gradient
    is 1, so ``dl/dp = (p - y) / (p (1 - p))`` is evaluated at the clipped
    ``p``. With jnn's ``"sigmoid"`` activation, whose derivative has the
    matching floor ``EPS (1 - EPS)``, the gradient with respect to the logits
    stays ``~ p - y`` even at logits of +-1e4, so a sigmoid model trains as
    stably as with :func:`bce_with_logits`. (With ``jax.nn.sigmoid`` itself the
    gradient underflows to 0 at saturation; prefer the logits form there.)

    Args:
      probs: predicted probabilities in [0, 1].
      labels: targets in [0, 1] (0/1 or soft), the same shape as ``probs``.
      weights: optional per-example weights, shaped like the loss values' leading axes.
      mask: optional per-example 0/1 (or bool) mask, likewise.
      reduction: ``"mean"`` (weighted mean), ``"sum"`` or ``"none"``.

    Returns:
      A scalar (or the unreduced values for ``reduction="none"``).

    Raises:
      ValueError: if the shapes differ.

    Example:
      >>> import jax.numpy as jnp, jnn
      >>> jnn.losses.bce(jnp.array([0.5, 0.5]), jnp.array([0.0, 1.0]))
      Array(0.6931472, dtype=float32)
    """
    probs, labels = _pair("bce", probs, labels)
    clipped = probs + jax.lax.stop_gradient(jnp.clip(probs, EPS, 1.0 - EPS) - probs)
    values = -(labels * jnp.log(clipped) + (1.0 - labels) * jnp.log1p(-clipped))
    return weighted_reduce("bce", values, weights=weights, mask=mask, reduction=reduction)


def bce_with_logits(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    mask: ArrayLike | None = None,
    reduction: Reduction = "mean",
) -> Array:
    r"""Binary cross-entropy from logits, stable for any logit magnitude.

    .. math:: \ell = -\,[\,y \log\sigma(z) + (1 - y) \log\sigma(-z)\,]

    using ``log(1 - sigmoid(z)) = log_sigmoid(-z)`` (optax's
    ``sigmoid_binary_cross_entropy``): no ``exp`` overflows, no ``log(0)``.

    Args:
      logits: unnormalized scores ``z``, any shape.
      labels: targets in [0, 1] (0/1 or soft), the same shape as ``logits``.
      weights: optional per-example weights, shaped like the loss values' leading axes.
      mask: optional per-example 0/1 (or bool) mask, likewise.
      reduction: ``"mean"`` (weighted mean), ``"sum"`` or ``"none"``.

    Returns:
      A scalar (or the unreduced values for ``reduction="none"``).

    Raises:
      ValueError: if the shapes differ.

    Example:
      >>> import jax.numpy as jnp, jnn
      >>> jnn.losses.bce_with_logits(jnp.array([1e4, -1e4]), jnp.array([0.0, 1.0]))
      Array(10000., dtype=float32)
    """
    logits, labels = _pair("bce_with_logits", logits, labels)
    values = optax.sigmoid_binary_cross_entropy(logits, labels)
    return weighted_reduce(
        "bce_with_logits", values, weights=weights, mask=mask, reduction=reduction
    )


def cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    mask: ArrayLike | None = None,
    reduction: Reduction = "mean",
) -> Array:
    r"""Softmax cross-entropy from logits, for integer or one-hot labels.

    .. math:: \ell = -\sum_c y_c \log \mathrm{softmax}(z)_c
              = \mathrm{logsumexp}(z) - z_{y}

    computed in log space (optax's ``softmax_cross_entropy`` and
    ``softmax_cross_entropy_with_integer_labels``).

    Args:
      logits: ``(..., C)`` unnormalized scores.
      labels: integer class ids of shape ``(...)`` (``logits.shape[:-1]``), or
        one-hot / soft labels of shape ``(..., C)``.
      weights: optional per-example weights of shape ``(...)``.
      mask: optional per-example 0/1 (or bool) mask of shape ``(...)``.
      reduction: ``"mean"`` (weighted mean), ``"sum"`` or ``"none"``.

    Returns:
      A scalar (or the unreduced values, shaped ``(...)``, for ``reduction="none"``).

    Raises:
      ValueError: for labels of any other shape, or integer labels outside
        ``[0, C)`` (checked when the labels are concrete, i.e. outside ``jit``).

    Example:
      >>> import jax.numpy as jnp, jnn
      >>> logits = jnp.array([[0.0, 0.0], [0.0, 0.0]])
      >>> jnn.losses.cross_entropy(logits, jnp.array([0, 1]))
      Array(0.6931472, dtype=float32)
    """
    logits = check_values("cross_entropy", "logits", as_array("cross_entropy", "logits", logits))
    labels, sparse = _class_labels("cross_entropy", "logits", logits, labels)
    if sparse:
        values = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    else:
        values = optax.softmax_cross_entropy(logits, labels.astype(logits.dtype))
    return weighted_reduce("cross_entropy", values, weights=weights, mask=mask, reduction=reduction)


def categorical_crossentropy(
    probs: ArrayLike,
    labels: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    mask: ArrayLike | None = None,
    reduction: Reduction = "mean",
) -> Array:
    r"""Cross-entropy from probabilities (e.g. a softmax output).

    .. math:: \ell = -\sum_c y_c \log p_c

    with ``p`` clipped to ``[EPS, 1]`` so the loss stays finite. Prefer
    :func:`cross_entropy` on logits: it is exact at any magnitude.

    Args:
      probs: ``(..., C)`` probabilities.
      labels: integer class ids ``(...)`` or one-hot ``(..., C)``.
      weights: optional per-example weights of shape ``(...)``.
      mask: optional per-example 0/1 (or bool) mask of shape ``(...)``.
      reduction: ``"mean"`` (weighted mean), ``"sum"`` or ``"none"``.

    Returns:
      A scalar (or the unreduced values, shaped ``(...)``, for ``reduction="none"``).

    Raises:
      ValueError: for labels of any other shape, or integer labels outside
        ``[0, C)`` (checked outside ``jit``).

    Example:
      >>> import jax.numpy as jnp, jnn
      >>> jnn.losses.categorical_crossentropy(jnp.array([[0.5, 0.5]]), jnp.array([1]))
      Array(0.6931472, dtype=float32)
    """
    probs = as_array("categorical_crossentropy", "probs", probs)
    probs = check_values("categorical_crossentropy", "probs", probs)
    labels, sparse = _class_labels("categorical_crossentropy", "probs", probs, labels)
    logp = jnp.log(jnp.clip(probs, EPS, 1.0))
    if sparse:
        values = -jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]
    else:
        values = -jnp.sum(labels.astype(probs.dtype) * logp, axis=-1)
    return weighted_reduce(
        "categorical_crossentropy", values, weights=weights, mask=mask, reduction=reduction
    )


_LOSSES: dict[str, Callable[..., Array]] = {
    "mse": mse,
    "mean_squared_error": mse,
    "mae": mae,
    "mean_absolute_error": mae,
    "bce": bce,
    "binary_crossentropy": bce,
    "bce_with_logits": bce_with_logits,
    "cross_entropy": cross_entropy,
    "softmax_cross_entropy": cross_entropy,
    "categorical_crossentropy": categorical_crossentropy,
    "sparse_categorical_crossentropy": categorical_crossentropy,
}

#: Losses that take logits rather than probabilities (accuracy thresholds at 0).
LOGIT_LOSSES = frozenset({bce_with_logits, cross_entropy})


def get(loss: str | Callable[..., Array]) -> Callable[..., Array]:
    """Resolve a loss by name (Keras's names work too), or pass a callable through.

    Args:
      loss: ``"mse"``, ``"mae"``, ``"bce"``, ``"bce_with_logits"``,
        ``"cross_entropy"``, ``"categorical_crossentropy"`` or a Keras alias
        (``"binary_crossentropy"``, ``"mean_squared_error"``, ...), or any
        callable ``loss(pred, target, *, weights=None, mask=None)``.

    Returns:
      The loss function.

    Raises:
      ValueError: for an unknown name, suggesting the closest.
      TypeError: for anything that is neither a name nor a callable.

    Example:
      >>> import jnn
      >>> jnn.losses.get("binary_crossentropy") is jnn.losses.bce
      True
    """
    if callable(loss):
        return loss
    if isinstance(loss, str):
        if loss in _LOSSES:
            return _LOSSES[loss]
        raise ValueError(
            f"Unknown loss {loss!r}.{close_match(loss, _LOSSES)} Known: "
            f"{', '.join(sorted(_LOSSES))}; or pass a function loss(pred, target, *, mask)."
        )
    raise TypeError(f"loss must be a name or a callable, got {type(loss).__name__}.")


def _pair(name: str, pred: ArrayLike, target: ArrayLike) -> tuple[Array, Array]:
    pred = check_values(name, "predictions", as_array(name, "predictions", pred))
    target = check_values(name, "labels", as_array(name, "labels", target), floating=False)
    check_same_shape(name, pred, target)
    return pred, target.astype(pred.dtype)


def _class_labels(name: str, what: str, scores: Array, labels: ArrayLike) -> tuple[Array, bool]:
    """Classify ``labels`` as sparse (integer ids) or dense (one-hot), strictly."""
    labels = as_array(name, "labels", labels)
    if scores.ndim < 1 or scores.size == 0:
        raise ValueError(
            f"{name}: expected non-empty {what} of shape (..., num_classes), got "
            f"{tuple(scores.shape)}."
        )
    num_classes = scores.shape[-1]
    if labels.shape == scores.shape:
        return labels, False
    if labels.shape == scores.shape[:-1]:
        if not jnp.issubdtype(labels.dtype, jnp.integer):
            raise TypeError(
                f"{name}: class-id labels of shape {tuple(labels.shape)} must be integers, "
                f"got {labels.dtype}. Use labels.astype(jnp.int32)."
            )
        if not isinstance(labels, jax.core.Tracer):
            host = np.asarray(labels)
            if host.size and (host.min() < 0 or host.max() >= num_classes):
                raise ValueError(
                    f"{name}: integer labels must be in [0, {num_classes}) for "
                    f"{num_classes} classes, got values in [{host.min()}, {host.max()}]."
                )
        return labels, True
    raise ValueError(
        f"{name}: labels of shape {tuple(labels.shape)} do not fit {what} of shape "
        f"{tuple(scores.shape)}: expected integer class ids of shape "
        f"{tuple(scores.shape[:-1])} or one-hot labels of shape {tuple(scores.shape)}."
        + (
            " Squeeze the trailing axis with labels.reshape(-1)."
            if labels.shape == (*scores.shape[:-1], 1)
            else ""
        )
    )
