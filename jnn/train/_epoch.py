"""Epochs: the one scan body, batching by index, and the compiled epoch programs (private).

Every training path runs :func:`train_scan`: ``fit`` on arrays (here), ``fit`` on a
stream (:mod:`jnn.train._stream`) and ``jnn.experiments.sweep`` (which vmaps
:func:`epoch_fn`). They differ only in how a step's batch is fetched:

- arrays: the epoch's order is a ``(batches, batch_size)`` table of slots from a keyed
  permutation (:mod:`jnn.train._shuffle`, a few integer ops per example, no sort);
  each step gathers its rows from the one device copy of the data. Slots past the
  last example are padding: they read a real row (so BatchNorm statistics see real
  data) with weight 0, and every example is used exactly once per epoch.
- streams: the stacked ``(k, B, ...)`` group arrays, with a validity flag per step
  for a short last group (``masked``: an invalid step is skipped by ``lax.cond``).

A long array epoch is split into several compiled calls of the same body
(:class:`ArrayEpoch`), so progress shows and Ctrl-C lands within about a second.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jnn._typing import Array
from jnn.layers._base import StatefulLayer
from jnn.train._logs import MetricFns, Sums, batch_logs
from jnn.train._shuffle import permutation
from jnn.train._state import TrainState
from jnn.train._step import GuardState, NanGuard, pure_step

Fetch = Callable[[Any], tuple[Array, Array, Array, Any]]

# --------------------------------------------------------------------------- batching


def num_batches(n: int, batch_size: int) -> int:
    """Steps per epoch: every one of ``n`` examples is used, the last batch padded."""
    return math.ceil(n / batch_size)


def epoch_order(key: Any, n: int, batch_size: int, shuffle: bool) -> Array:
    """The epoch's ``(batches, batch_size)`` slots; a slot ``>= n`` is padding.

    Shuffled: a keyed permutation of all ``batches * batch_size`` slots, so the few
    padding slots land in random batches. Not shuffled: examples in order, the
    padding at the end of the last batch.
    """
    nb = num_batches(n, batch_size)
    slots = permutation(key, nb * batch_size) if shuffle else jnp.arange(nb * batch_size)
    return slots.reshape(nb, batch_size)


def gather_fetch(x: Array, y: Array, w: Array, n: int, plan: Any = None) -> Fetch:
    """``fetch(slots) -> (xb, yb, wb, True)``: one batch gathered from the arrays.

    A padding slot ``s >= n`` reads row ``s - n`` (a real example; ``s - n <
    batch_size <= n``) with weight 0. With a ``plan`` (a mesh) the batch is split
    along the data axis.
    """

    def fetch(slots: Array):
        real = slots < n
        rows = jnp.where(real, slots, slots - n)
        def take(a: Array) -> Array:  # rows are in [0, n) by construction: no bounds checks
            return a.at[rows].get(mode="promise_in_bounds")

        xb, yb = take(x), take(y)
        wb = jnp.where(real, take(w), jnp.zeros((), w.dtype))
        if plan is not None:
            xb, yb, wb = plan.constrain_batch(xb, yb, wb)
        return xb, yb, wb, True

    return fetch


# --------------------------------------------------------------------------- the scan bodies


def train_scan(step: Callable, guard: NanGuard, fetch: Fetch, masked: bool, plan: Any = None):
    """``scan(state, sums, guard_state, items) -> (state, sums, guard_state)``.

    THE training loop body: fetch a batch, take a (guarded) step, add its logs
    weighted by the batch's example weights. With ``masked``, a step whose
    validity flag is False is skipped entirely (no update, no step count).
    """

    def body(carry, item):
        state, sums, g = carry
        xb, yb, wb, ok = fetch(item)

        def run(state: TrainState, sums: Sums, g: GuardState):
            state, logs, wb_used, g = guard.step(step, state, xb, yb, wb, g)
            if plan is not None:
                state = plan.constrain_state(state)
            return state, sums.add(logs, wb_used), g

        if masked:
            carry = jax.lax.cond(ok, run, lambda *carry: carry, state, sums, g)
        else:
            carry = run(state, sums, g)
        return carry, None

    def scan(state: TrainState, sums: Sums, g: GuardState, items: Any):
        return jax.lax.scan(body, (state, sums, g), items)[0]

    return scan


def eval_scan(model: StatefulLayer, loss_fn, metric_fns: MetricFns, fetch: Fetch, masked: bool):
    """``scan(params, model_state, sums, items) -> sums``: evaluation-mode batch logs."""

    def scan(params, model_state, sums: Sums, items: Any) -> Sums:
        def body(sums: Sums, item):
            xb, yb, wb, ok = fetch(item)
            pred, _ = model.apply(params, model_state, xb, train=False)
            logs = batch_logs(loss_fn, metric_fns, pred, yb, wb)
            if masked:  # a skipped step: weight 0 (where, not a product: values may be NaN)
                logs = {k: jnp.where(ok, v, jnp.zeros_like(v)) for k, v in logs.items()}
                wb = jnp.where(ok, wb, jnp.zeros_like(wb))
            return sums.add(logs, wb), None

        return jax.lax.scan(body, sums, items)[0]

    return scan


def zero_sums(fn: Callable, *args: Any) -> Sums:
    """Zero :class:`Sums` shaped like the logs ``fn(*args)`` returns (traced, not run)."""
    return Sums.zeros_like(jax.eval_shape(fn, *args))


# --------------------------------------------------------------------------- programs


def eval_fn(model, loss_fn, metric_fns: MetricFns, batch_size: int, plan: Any = None):
    """``run(params, model_state, x, y, w) -> logs``: a scan over the arrays in order."""

    def run(params, model_state, x, y, w):
        n = x.shape[0]
        order = epoch_order(None, n, batch_size, shuffle=False)
        fetch = gather_fetch(x, y, w, n, plan)
        scan = eval_scan(model, loss_fn, metric_fns, fetch, masked=False)

        def logs_of(params, model_state, slots):
            xb, yb, wb, _ = fetch(slots)
            pred, _ = model.apply(params, model_state, xb, train=False)
            return batch_logs(loss_fn, metric_fns, pred, yb, wb)

        sums = zero_sums(logs_of, params, model_state, order[0])
        return scan(params, model_state, sums, order).mean()

    return run


def begin_epoch(state: TrainState, n: int, batch_size: int, shuffle: bool):
    """Split the epoch's shuffle key off ``state.key``: ``(state, order)``."""
    key, perm_key = jax.random.split(state.key)
    return state._replace(key=key), epoch_order(perm_key, n, batch_size, shuffle)


class EpochSpec(NamedTuple):
    """What defines a compiled training epoch (hashable: the compilation cache key)."""

    model: StatefulLayer
    loss_fn: Callable
    tx: optax.GradientTransformation
    metric_fns: MetricFns
    batch_size: int
    shuffle: bool
    validate: bool
    on_nan: str | None = None
    plan: Any = None


def _train_parts(spec: EpochSpec):
    step = pure_step(spec.model, spec.loss_fn, spec.tx, spec.metric_fns)
    guard = NanGuard(spec.on_nan)

    def zeros(state, fetch, slots):
        xb, yb, wb, _ = fetch(slots)
        return zero_sums(lambda s: step(s, xb, yb, wb)[1], state)

    validation = None
    if spec.validate:
        validation = eval_fn(spec.model, spec.loss_fn, spec.metric_fns, spec.batch_size, spec.plan)

    def finish(state: TrainState, sums: Sums, val) -> dict[str, Array]:
        logs = sums.mean()
        if validation is not None:
            val_logs = validation(state.params, state.model_state, *val)
            logs.update({f"val_{k}": v for k, v in val_logs.items()})
        return logs

    return step, guard, zeros, finish


def epoch_fn(spec: EpochSpec) -> Callable:
    """The pure (un-jitted) ``epoch(state, x, y, w, val) -> (state, logs, guard_state)``.

    Shuffle, scan the train steps, then validate (``val = (x, y, w)``, logs
    ``val_<name>``). ``fit`` jits it (:func:`compiled_epoch`); ``jnn.experiments``
    vmaps it over runs. With a ``plan`` (a mesh) each batch is split along the data
    axis and the state kept in its layout; XLA inserts the gradient all-reduce.
    """
    step, guard, zeros, finish = _train_parts(spec)

    def epoch(state: TrainState, x, y, w, val):
        n = x.shape[0]
        state, order = begin_epoch(state, n, spec.batch_size, spec.shuffle)
        fetch = gather_fetch(x, y, w, n, spec.plan)
        scan = train_scan(step, guard, fetch, masked=False, plan=spec.plan)
        state, sums, g = scan(state, zeros(state, fetch, order[0]), guard.init(), order)
        return state, finish(state, sums, val), g

    return epoch


@functools.lru_cache(maxsize=32)
def compiled_epoch(spec: EpochSpec) -> Callable:
    """:func:`epoch_fn`, jitted with the state donated (cached, so a second ``fit`` with
    the same model and settings reuses the compilation)."""
    return jax.jit(epoch_fn(spec), donate_argnums=(0,))


@functools.lru_cache(maxsize=32)
def compiled_eval(model, loss_fn, metric_fns, batch_size, plan=None) -> Callable:
    """:func:`eval_fn`, jitted (cached)."""
    return jax.jit(eval_fn(model, loss_fn, metric_fns, batch_size, plan))


class _SplitEpoch(NamedTuple):
    """An array epoch as several calls: ``begin``, ``steps`` (k at a time), ``end``."""

    begin: Callable  # (state, x, y, w) -> (state, order, sums, guard_state)
    steps: Callable  # (state, sums, g, x, y, w, slots) -> (state, sums, g)
    end: Callable  # (state, sums, val) -> logs


@functools.lru_cache(maxsize=32)
def compiled_split_epoch(spec: EpochSpec) -> _SplitEpoch:
    """The epoch of :func:`epoch_fn` cut into calls: the same steps, bit for bit."""
    step, guard, zeros, finish = _train_parts(spec)

    def begin(state: TrainState, x, y, w):
        state, order = begin_epoch(state, x.shape[0], spec.batch_size, spec.shuffle)
        sums = zeros(state, gather_fetch(x, y, w, x.shape[0], spec.plan), order[0])
        return state, order, sums, guard.init()

    def steps(state, sums, g, x, y, w, slots):
        fetch = gather_fetch(x, y, w, x.shape[0], spec.plan)
        return train_scan(step, guard, fetch, masked=False, plan=spec.plan)(state, sums, g, slots)

    return _SplitEpoch(
        jax.jit(begin, donate_argnums=(0,)),
        jax.jit(steps, donate_argnums=(0, 1, 2)),
        jax.jit(finish),
    )


_FLOPS: dict[Any, float] = {}


def step_flops(spec: EpochSpec, state: TrainState, x, y, w) -> float:
    """Flops of one training step, from XLA's cost analysis of the lowered (not compiled)
    step (0 when the backend gives none). Remembered per spec and shapes (bounded)."""
    batch = [jax.ShapeDtypeStruct((spec.batch_size, *a.shape[1:]), a.dtype) for a in (x, y, w)]
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)), state)
    leaves, treedef = jax.tree.flatten(abstract)
    cache_key = (spec, treedef, tuple(leaves), tuple(batch))
    if cache_key not in _FLOPS:
        step = pure_step(spec.model, spec.loss_fn, spec.tx, spec.metric_fns)
        try:
            lowered = jax.jit(lambda s, xb, yb, wb: step(s, xb, yb, wb)[0]).lower(abstract, *batch)
            flops = float((lowered.cost_analysis() or {}).get("flops", 0.0))
        except Exception:  # an estimate only: never a reason to fail
            flops = 0.0
        if len(_FLOPS) >= 64:
            _FLOPS.clear()
        _FLOPS[cache_key] = flops
    return _FLOPS[cache_key]


class EpochOut(NamedTuple):
    """One epoch's outcome in ``fit``: ``complete`` is False when it stopped early
    (Ctrl-C, or a NaN guard that froze the state), leaving ``logs`` None."""

    state: TrainState
    logs: dict[str, Any] | None
    guard: GuardState
    complete: bool


# Calls are sized to take about this long, and an epoch is split once it would take
# longer than LONG_EPOCH_S: progress then moves, and Ctrl-C lands, within ~a second.
CALL_S, LONG_EPOCH_S = 0.5, 2.0
# A first guess at a device's throughput, before any epoch was timed (deliberately high:
# an underestimated epoch runs as one call once, then the measured time decides).
_FLOPS_PER_S = {"cpu": 1e11, "gpu": 1e13, "tpu": 1e14}


class ArrayEpoch:
    """``fit``'s epoch over in-memory arrays: one compiled call, or ``k`` steps per call.

    ``steps_per_call=None`` decides: one call per epoch unless the epoch takes
    longer than :data:`LONG_EPOCH_S` (measured, or for the first epoch estimated
    from the step's flops), then calls of about :data:`CALL_S` each.
    """

    def __init__(self, spec: EpochSpec, state: TrainState, data, val, steps_per_call):
        self.spec, self.data, self.val = spec, data, val
        self.nb = num_batches(data[0].shape[0], spec.batch_size)
        self.fixed = steps_per_call
        self.k = self.nb if steps_per_call is None else min(steps_per_call, self.nb)
        if steps_per_call is None and self.nb > 64:  # a first guess, before any timing
            rate = _FLOPS_PER_S.get(jax.devices()[0].platform, 1e11)
            flops = step_flops(spec, state, *data)
            self.k = self._calls_for(self.nb * (flops / rate + 5e-6))

    def _calls_for(self, epoch_seconds: float) -> int:
        """Steps per call for an epoch of this duration (a power of two, or all of it)."""
        if epoch_seconds <= LONG_EPOCH_S:
            return self.nb
        per_step = max(epoch_seconds / self.nb, 1e-9)
        return min(2 ** max(0, round(math.log2(max(1.0, CALL_S / per_step)))), self.nb)

    def _replan(self, seconds: float) -> None:
        """Adapt ``k`` to the measured epoch; each new ``k`` is one more compilation, so
        only a large change counts (and a split epoch goes back to one call only when it
        took under half of :data:`LONG_EPOCH_S`)."""
        k = self._calls_for(seconds if self.k >= self.nb else 2 * seconds)
        if k >= self.nb or self.k >= self.nb or max(k, self.k) >= 4 * min(k, self.k):
            self.k = k

    def __call__(self, state: TrainState, *, interrupted: Callable[[], bool], tick) -> EpochOut:
        start = time.perf_counter()
        if self.k >= self.nb:
            state, logs, g = compiled_epoch(self.spec)(state, *self.data, self.val)
            out = EpochOut(state, logs, g, True)
        else:
            out = self._split(state, interrupted, tick)
        if self.fixed is None and out.complete:
            self._replan(time.perf_counter() - start)
        return out

    def _split(self, state, interrupted, tick) -> EpochOut:
        x, y, w = self.data
        parts = compiled_split_epoch(self.spec)
        guard = NanGuard(self.spec.on_nan)
        state, order, sums, g = parts.begin(state, x, y, w)
        for start in range(0, self.nb, self.k):
            state, sums, g = parts.steps(state, sums, g, x, y, w, order[start : start + self.k])
            done = min(start + self.k, self.nb)
            tick(done, self.nb)
            if done < self.nb and (interrupted() or guard.tripped(g)):
                return EpochOut(state, None, g, False)
        return EpochOut(state, parts.end(state, sums, self.val), g, True)


__all__ = [
    "ArrayEpoch",
    "EpochOut",
    "EpochSpec",
    "begin_epoch",
    "compiled_epoch",
    "compiled_eval",
    "epoch_fn",
    "epoch_order",
    "eval_fn",
    "eval_scan",
    "gather_fetch",
    "num_batches",
    "train_scan",
    "zero_sums",
]
