"""What a step reports, and how an epoch adds it up (private).

A batch's logs are the loss and each per-example metric as weighted means over
the batch's examples, and for each stateful metric (:class:`jnn.metrics.Metric`)
the batch's sufficient statistics, wrapped in a :class:`MetricState`. An epoch
keeps the means' weighted sums and the total weight, and the states' sums
(:class:`Sums`), so the epoch's value is exact over every example however the
batches were cut (a padded last batch, a short streamed one, a step skipped by
the NaN guard: each counts by its examples' weights), over chunks of a split
epoch, stream groups and mesh devices (a sharded batch's sums are global).
This is the one accumulation mechanism of every training and evaluation path.
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


@jax.tree_util.register_pytree_node_class
class MetricState:
    """A stateful metric's statistics in the logs: a pytree whose aux data is the metric.

    Adding two adds the statistics; :meth:`value` is the metric's result. The
    metric travels as static aux data, so the scan carry, ``eval_shape``, ``vmap``
    and ``jnp.where`` over the logs (``jax.tree.map``) all see plain arrays.
    """

    __slots__ = ("metric", "state")

    def __init__(self, state: Any, metric: _metrics.Metric):
        self.state, self.metric = state, metric

    def tree_flatten(self):
        return (self.state,), self.metric

    @classmethod
    def tree_unflatten(cls, metric, children):
        return cls(children[0], metric)

    def value(self) -> Array:
        return self.metric.result(self.state)


def metric_names(metrics: Sequence[Any]) -> list[str]:
    """History keys of ``metrics``: a name as given, a function's ``__name__``."""
    names = []
    for m in metrics:
        if isinstance(m, str):
            names.append(m)
        elif isinstance(m, _metrics.Metric):
            names.append(m.name)
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
    for m in metrics:
        if getattr(m, "decomposable", True) is False:
            raise ValueError(
                f"metric {getattr(m, '__name__', m)!r} is marked decomposable=False: fit and "
                "evaluate average plain metric functions over examples (batch values "
                "weighted by their examples), which is wrong for it. Write it as a "
                "jnn.metrics.Metric(init, update, result) over summable statistics."
            )
    from_logits = loss_fn in _losses.LOGIT_LOSSES
    names = metric_names(metrics)
    return tuple(
        (n, _metrics.get(m, from_logits=from_logits)) for n, m in zip(names, metrics, strict=True)
    )


def batch_logs(
    loss_fn: Callable | None, metric_fns: MetricFns, pred: Any, y: Array, w: Array | None
) -> dict[str, Array]:
    """``{"loss": ..., name: ...}``: the batch's weighted means (no loss without ``loss_fn``),
    and each stateful metric's batch statistics (a :class:`MetricState`)."""
    kw = {} if w is None else {"weights": w}
    logs = {} if loss_fn is None else {"loss": loss_fn(pred, y, **kw)}
    for name, fn in metric_fns:
        if isinstance(fn, _metrics.Metric):
            logs[name] = MetricState(fn.update(fn.init(), pred, y, w), fn)
        else:
            logs[name] = fn(pred, y, **kw)
    return logs


def finish_logs(logs: dict[str, Any]) -> dict[str, Array]:
    """One batch's logs as values (a stateful metric's result on that batch alone)."""
    return {k: v.value() if isinstance(v, MetricState) else v for k, v in logs.items()}


def lr_reader(learning_rate: Any, opt_state: Any) -> Callable[[Any], float] | None:
    """``read(state) -> float``, the learning rate of the last step, or None when it is a
    constant (then ``fit`` does not record it).

    A schedule given as ``learning_rate`` (with an optimizer name) is evaluated at
    the last step's count; an optimizer from ``optax.inject_hyperparams`` keeps its
    ``learning_rate`` in its state, read there (any optax schedule works so).
    """
    import numpy as np
    import optax

    if callable(learning_rate):
        return lambda state: float(learning_rate(np.maximum(np.asarray(state.step) - 1, 0)))
    import jax

    def get(opt_state: Any) -> Any:
        return optax.tree_utils.tree_get(
            opt_state, "learning_rate", filtering=lambda _, v: isinstance(v, jax.Array)
        )

    try:
        found = get(opt_state)
    except (KeyError, ValueError):  # several: ambiguous, so not recorded
        found = None
    if found is None or np.ndim(found) != 0:
        return None
    return lambda state: float(np.asarray(get(state.opt_state)))


def host_logs(logs: dict[str, Any], keys: Sequence[str] | None = None) -> dict[str, Any]:
    """Fetched logs as history values: a float, or a numpy array (a confusion matrix)."""
    import numpy as np

    keys = list(logs) if keys is None else keys
    out = {}
    for k in keys:
        v = np.asarray(logs[k])
        out[k] = float(v) if v.ndim == 0 else v
    return out


class Sums(NamedTuple):
    """Weighted sums of batch logs over an epoch, and the total weight; stateful
    metrics' states summed (a :class:`MetricState` per stateful metric)."""

    sums: dict[str, Any]
    weight: Array

    @classmethod
    def zeros_like(cls, logs: dict[str, Any]) -> Sums:
        """Zero sums for logs of these shapes (arrays or ``ShapeDtypeStruct``\\ s)."""
        zeros = jax.tree.map(lambda v: jnp.zeros(jnp.shape(v), v.dtype), logs)
        return cls(zeros, jnp.zeros(()))

    def add(self, logs: dict[str, Any], w: Array) -> Sums:
        """Add a batch: its means are over weights ``w``, so they count ``sum(w)`` times;
        its metric states add as they are."""
        total = jnp.sum(w)

        def one(s: Any, v: Any) -> Any:
            if isinstance(v, MetricState):
                return jax.tree.map(jnp.add, s, v)
            return s + v * total

        sums = {k: one(self.sums[k], v) for k, v in logs.items()}
        return Sums(sums, self.weight + total)

    def mean(self) -> dict[str, Array]:
        """The epoch's logs: weighted means over every example, stateful metrics' results."""
        return {
            k: v.value() if isinstance(v, MetricState) else v / jnp.maximum(self.weight, 1e-30)
            for k, v in self.sums.items()
        }


__all__ = [
    "MetricFns",
    "MetricState",
    "Sums",
    "finish_logs",
    "host_logs",
    "batch_logs",
    "metric_names",
    "resolve_metrics",
]
