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
import numpy as np
import optax

from jnn import losses as _losses
from jnn import metrics as _metrics
from jnn._typing import Array

MetricFns = tuple[tuple[str, Callable], ...]


@jax.tree_util.register_pytree_node_class
class MetricState:
    """A stateful metric's statistics in the logs: a pytree whose aux data is the metric.

    Adding two adds the statistics; :meth:`value` is the metric's result. The
    metric travels as static aux data, so the scan carry, ``eval_shape``, ``vmap``
    and a select over the logs (``jax.tree.map``) all see plain arrays.
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


def counted_only_if(ok: Array, logs: dict[str, Any], weights: Array) -> tuple[Any, Array]:
    """A step's ``(logs, weights)``, zeroed unless ``ok`` (a traced bool scalar): a step the
    NaN guard rejected, or a stream group's padding step, then adds nothing to the
    :class:`Sums`. A select, not a product (the values may be NaN), and ``lax.select``,
    not ``jnp.where`` (a jit of its own, traced and lowered into every epoch)."""

    def zeroed(v: Array) -> Array:
        return jax.lax.select(ok, v, jnp.zeros_like(v))

    return jax.tree.map(zeroed, logs), zeroed(weights)


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
    if callable(learning_rate):
        return lambda state: float(learning_rate(np.maximum(np.asarray(state.step) - 1, 0)))
    found = learning_rate_in(opt_state)
    if found is None:
        return None
    return lambda state: float(np.asarray(learning_rate_in(state.opt_state)))


def step_logs(
    logs: dict[str, Any], epoch: int, steps_per_epoch: int, every: int, learning_rate: Any
) -> dict[str, np.ndarray]:
    """``{"step", "loss", "lr"}`` of an epoch's step trace, on the host: ``step`` is the
    global index of each window's last step; ``lr`` is read from the optimizer state,
    else the ``learning_rate`` schedule at that step, else the constant rate (or NaN)."""
    loss = np.asarray(logs[STEP_LOSS])
    last = np.minimum((np.arange(loss.shape[0]) + 1) * every, steps_per_epoch) - 1
    step = epoch * steps_per_epoch + last
    lr = np.asarray(logs[STEP_LR], np.float64)
    if np.isnan(lr).all() and learning_rate is not None:
        if callable(learning_rate):
            lr = np.asarray([float(learning_rate(s)) for s in step])
        else:
            lr = np.full(loss.shape, float(learning_rate))
    return {"step": step, "loss": loss, "lr": lr}


def host_logs(logs: dict[str, Any], keys: Sequence[str] | None = None) -> dict[str, Any]:
    """Fetched logs as history values: a float, or a numpy array (a confusion matrix)."""
    keys = list(logs) if keys is None else keys
    out = {}
    for k in keys:
        v = np.asarray(logs[k])
        out[k] = float(v) if v.ndim == 0 else v
    return out


class StepTrace(NamedTuple):
    """Per-step training loss over an epoch, in windows of ``every`` steps (``log_every``).

    Window ``i`` holds the weighted loss sum and weight of steps ``[i * every, (i + 1) *
    every)``, and the learning rate of its last step when the optimizer state holds one
    (``lr``, NaN otherwise). It rides in the scan carry: no host callback per step.
    """

    loss: Array  # (windows,) weighted loss sums
    weight: Array  # (windows,)
    lr: Array  # (windows,)
    seen: Array  # steps added so far (int32)
    every: Array  # steps per window (int32)

    @classmethod
    def zeros(cls, steps: int, every: int) -> StepTrace:
        windows = -(-steps // every)
        zeros = lambda: jnp.zeros((windows,), jnp.float32)  # noqa: E731  (distinct buffers:
        nan = jnp.full((windows,), jnp.nan, jnp.float32)  # the carry is donated)
        return cls(zeros(), zeros(), nan, jnp.int32(0), jnp.int32(every))

    def add(self, loss: Array, total: Array, lr: Array | None) -> StepTrace:
        i = self.seen // self.every
        return StepTrace(
            self.loss.at[i].add(loss * total),
            self.weight.at[i].add(total),
            self.lr if lr is None else self.lr.at[i].set(jnp.asarray(lr, jnp.float32)),
            self.seen + 1,
            self.every,
        )


class Sums(NamedTuple):
    """Weighted sums of batch logs over an epoch, and the total weight; stateful
    metrics' states summed (a :class:`MetricState` per stateful metric); and, with
    ``fit(log_every=k)``, the per-step loss in windows of k steps (:class:`StepTrace`)."""

    sums: dict[str, Any]
    weight: Array
    trace: StepTrace | None = None

    @classmethod
    def zeros_like(cls, logs: dict[str, Any]) -> Sums:
        """Zero sums for logs of these shapes (arrays or ``ShapeDtypeStruct``\\ s)."""
        zeros = jax.tree.map(lambda v: jnp.zeros(jnp.shape(v), v.dtype), logs)
        return cls(zeros, jnp.zeros(()))

    def add(self, logs: dict[str, Any], w: Array, opt_state: Any = None) -> Sums:
        """Add a batch: its means are over weights ``w``, so they count ``sum(w)`` times;
        its metric states add as they are. A training step passes its ``opt_state``
        (the learning rate of the step trace is read there)."""
        total = jnp.sum(w)

        def one(s: Any, v: Any) -> Any:
            if isinstance(v, MetricState):
                return jax.tree.map(jnp.add, s, v)
            return s + v * total

        sums = {k: one(self.sums[k], v) for k, v in logs.items()}
        trace = self.trace
        if trace is not None:
            trace = trace.add(logs["loss"], total, learning_rate_in(opt_state))
        return Sums(sums, self.weight + total, trace)

    def mean(self) -> dict[str, Array]:
        """The epoch's logs: weighted means over every example, stateful metrics'
        results, and with a step trace ``step_loss``/``step_lr`` (one per window)."""
        logs = {
            k: v.value() if isinstance(v, MetricState) else v / jnp.maximum(self.weight, 1e-30)
            for k, v in self.sums.items()
        }
        if self.trace is not None:
            logs[STEP_LOSS] = self.trace.loss / jnp.maximum(self.trace.weight, 1e-30)
            logs[STEP_LR] = self.trace.lr
        return logs


STEP_LOSS, STEP_LR = "step_loss", "step_lr"


def learning_rate_in(opt_state: Any) -> Array | None:
    """The scalar ``learning_rate`` an ``optax.inject_hyperparams`` state holds, or None."""
    if opt_state is None:
        return None
    try:
        found = optax.tree_utils.tree_get(
            opt_state, "learning_rate", filtering=lambda _, v: isinstance(v, jax.Array)
        )
    except (KeyError, ValueError):  # several: ambiguous
        return None
    return None if found is None or jnp.ndim(found) != 0 else found


__all__ = [
    "MetricFns",
    "MetricState",
    "Sums",
    "finish_logs",
    "step_logs",
    "learning_rate_in",
    "StepTrace",
    "STEP_LOSS",
    "STEP_LR",
    "host_logs",
    "batch_logs",
    "counted_only_if",
    "metric_names",
    "resolve_metrics",
]
