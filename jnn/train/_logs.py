"""What a step reports, and how an epoch adds it up (private).

A batch's logs are the loss and each metric as weighted means over the batch's
examples. An epoch keeps their weighted sums and the total weight (:class:`Sums`),
so the epoch's value is the mean over every example, however the batches were cut
(a padded last batch, a short streamed one, a step skipped by the NaN guard: each
counts by its examples' weights).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jnn import losses as _losses
from jnn import metrics as _metrics
from jnn._typing import Array

MetricFns = tuple[tuple[str, Callable], ...]


def metric_names(metrics: Sequence[Any]) -> list[str]:
    """History keys of ``metrics``: a name as given, a function's ``__name__``."""
    names = []
    for m in metrics:
        if isinstance(m, str):
            names.append(m)
        else:
            fn = m.func if isinstance(m, functools.partial) else m
            names.append(getattr(fn, "__name__", type(fn).__name__))
    if len(set(names)) != len(names) or "loss" in names:
        raise ValueError(f"metric names must be unique and not 'loss', got {names}.")
    return names


def resolve_metrics(metrics: Sequence[Any], loss_fn: Callable | None) -> MetricFns:
    """``((name, fn), ...)`` for names or functions; accuracy thresholds follow the loss."""
    if isinstance(metrics, (str,)) or callable(metrics):
        metrics = [metrics]
    if not isinstance(metrics, (list, tuple)) or not all(
        isinstance(m, str) or callable(m) for m in metrics
    ):
        raise TypeError(
            f"metrics must be a list of metric names or functions, e.g. ['accuracy'], got "
            f"{metrics!r}."
        )
    from_logits = loss_fn in _losses.LOGIT_LOSSES
    names = metric_names(metrics)
    return tuple(
        (n, _metrics.get(m, from_logits=from_logits)) for n, m in zip(names, metrics, strict=True)
    )


def batch_logs(
    loss_fn: Callable | None, metric_fns: MetricFns, pred: Any, y: Array, w: Array | None
) -> dict[str, Array]:
    """``{"loss": ..., name: ...}``: the batch's weighted means (no loss without ``loss_fn``)."""
    kw = {} if w is None else {"weights": w}
    logs = {} if loss_fn is None else {"loss": loss_fn(pred, y, **kw)}
    for name, fn in metric_fns:
        logs[name] = fn(pred, y, **kw)
    return logs


class Sums(NamedTuple):
    """Weighted sums of batch logs over an epoch, and the total weight."""

    sums: dict[str, Array]
    weight: Array

    @classmethod
    def zeros_like(cls, logs: dict[str, Any]) -> Sums:
        """Zero sums for logs of these shapes (arrays or ``ShapeDtypeStruct``\\ s)."""
        return cls({k: jnp.zeros(jnp.shape(v), v.dtype) for k, v in logs.items()}, jnp.zeros(()))

    def add(self, logs: dict[str, Array], w: Array) -> Sums:
        """Add a batch: its logs are means over weights ``w``, so they count ``sum(w)`` times."""
        total = jnp.sum(w)
        return Sums(jax.tree.map(lambda s, v: s + v * total, self.sums, logs), self.weight + total)

    def mean(self) -> dict[str, Array]:
        """The epoch's logs: weighted means over every example."""
        return {k: v / jnp.maximum(self.weight, 1e-30) for k, v in self.sums.items()}


__all__ = ["MetricFns", "Sums", "batch_logs", "metric_names", "resolve_metrics"]
