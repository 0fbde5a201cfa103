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

import contextlib
import functools
import math
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from jnn._typing import Array
from jnn.layers._base import StatefulLayer
from jnn.train._cache import compiler_options, program_cache, small_program
from jnn.train._logs import MetricFns, StepTrace, Sums, batch_logs, counted_only_if
from jnn.train._optim import eval_params_fn
from jnn.train._shuffle import shuffle as shuffle_slots
from jnn.train._shuffle import split_epoch_key
from jnn.train._state import TrainState
from jnn.train._step import GuardState, NanGuard, pure_step

# A gather per step costs a few microseconds of dispatch on a CPU, more than a small
# model's whole step; so the rows of up to GATHER_STEPS steps (at most GATHER_BYTES) are
# gathered at once, and the steps then slice them. That chunk is the only extra memory.
GATHER_STEPS, GATHER_BYTES = 128, 16 << 20

# --------------------------------------------------------------------------- batching


def num_batches(n: int, batch_size: int) -> int:
    """Steps per epoch: every one of ``n`` examples is used, the last batch padded."""
    return math.ceil(n / batch_size)


def epoch_order(words: Any, n: int, batch_size: int, shuffle: bool) -> Array:
    """The epoch's ``(batches, batch_size)`` slots; a slot ``>= n`` is padding.

    Shuffled: a permutation of all ``batches * batch_size`` slots keyed by ``words``
    (:func:`jnn.train._shuffle.split_epoch_key`'s), so the few
    padding slots land in random batches. Not shuffled: examples in order, the
    padding at the end of the last batch.
    """
    nb = num_batches(n, batch_size)
    slots = shuffle_slots(words, nb * batch_size) if shuffle else jnp.arange(nb * batch_size)
    return slots.reshape(nb, batch_size)


class Gather(NamedTuple):
    """Batches gathered by slot from arrays ``x, y, w`` of ``n`` examples.

    ``gather(slots)`` maps ``(k, batch)`` slots to stacked ``(xs, ys, ws)``. A
    padding slot ``s >= n`` reads row ``s - n`` (a real example: ``s - n <
    batch_size <= n``) with weight 0. With a ``plan`` (a mesh) each batch is split
    along the data axis.
    """

    x: Array
    y: Array
    w: Array
    plan: Any = None

    def __call__(self, slots: Array) -> tuple[Array, Array, Array]:
        n = self.x.shape[0]
        real = slots < n
        rows = lax.select(real, slots, slots - n)

        def take(a: Array) -> Array:  # rows are in [0, n) by construction: no bounds checks
            return a.at[rows].get(mode="promise_in_bounds")

        w = take(self.w)
        batches = take(self.x), take(self.y), lax.select(real, w, jnp.zeros_like(w))
        if self.plan is not None:
            batches = tuple(self.plan.constrain_batches(*batches))
        return batches

    def chunk(self, batch_size: int) -> int:
        """Steps whose rows are gathered at once (see :data:`GATHER_STEPS`)."""
        row = sum(a.dtype.itemsize * math.prod(a.shape[1:]) for a in (self.x, self.y, self.w))
        return max(1, min(GATHER_STEPS, GATHER_BYTES // max(1, row * batch_size)))

    def scan(self, run: Callable, carry: Any, slots: Array, batch_size: int) -> Any:
        """``carry = run(carry, batches)`` over ``slots``, a chunk of steps at a time."""
        steps, k = slots.shape[0], self.chunk(batch_size)
        main = steps // k * k
        if main:
            chunks = slots[:main].reshape(main // k, k, batch_size)
            carry = jax.lax.scan(lambda c, s: (run(c, self(s)), None), carry, chunks)[0]
        if steps > main:
            carry = run(carry, self(slots[main:]))
        return carry


# --------------------------------------------------------------------------- the scan bodies


def train_scan(step: Callable, guard: NanGuard, masked: bool, plan: Any = None):
    """``scan(state, sums, guard_state, batches) -> (state, sums, guard_state)``.

    THE training loop body, over stacked batches ``(xs, ys, ws)`` (arrays, gathered
    by :class:`Gather`) or ``(xs, ys, ws, valid)`` (a stream's group, ``masked``):
    take a (guarded) step, add its logs weighted by the batch's example weights.
    With ``masked``, a step whose validity flag is False is skipped entirely (no
    update, no step count).
    """

    def body(carry, batch):
        state, sums, g = carry
        xb, yb, wb, *valid = batch

        def run(state: TrainState, sums: Sums, g: GuardState):
            state, logs, wb_used, g = guard.step(step, state, xb, yb, wb, g)
            if plan is not None:
                state = plan.constrain_state(state)
            return state, sums.add(logs, wb_used, state.opt_state), g

        if masked:
            carry = jax.lax.cond(valid[0], run, lambda *carry: carry, state, sums, g)
        else:
            carry = run(state, sums, g)
        return carry, None

    def scan(state: TrainState, sums: Sums, g: GuardState, batches: Any):
        return jax.lax.scan(body, (state, sums, g), batches)[0]

    return scan


def eval_scan(model: StatefulLayer, loss_fn, metric_fns: MetricFns, masked: bool):
    """``scan(params, model_state, sums, batches) -> sums``: evaluation-mode batch logs,
    over ``(xs, ys, ws)`` or, ``masked``, ``(xs, ys, ws, valid)``."""

    def scan(params, model_state, sums: Sums, batches: Any) -> Sums:
        def body(sums: Sums, batch):
            xb, yb, wb, *valid = batch
            pred, _ = model.apply(params, model_state, xb, train=False)
            logs = batch_logs(loss_fn, metric_fns, pred, yb, wb)
            if masked:  # a skipped step: weight 0
                logs, wb = counted_only_if(valid[0], logs, wb)
            return sums.add(logs, wb), None

        return jax.lax.scan(body, sums, batches)[0]

    return scan


def zero_sums(fn: Callable, *args: Any) -> Sums:
    """Zero :class:`Sums` shaped like the logs ``fn(*args)`` returns (traced, not run)."""
    return Sums.zeros_like(jax.eval_shape(fn, *args))


# --------------------------------------------------------------------------- programs


def eval_fn(model, loss_fn, metric_fns: MetricFns, batch_size: int, plan: Any = None):
    """``run(params, model_state, x, y, w) -> logs``: a scan over the arrays in order."""
    scan = eval_scan(model, loss_fn, metric_fns, masked=False)

    def run(params, model_state, x, y, w):
        order = epoch_order(None, x.shape[0], batch_size, shuffle=False)
        gather = Gather(x, y, w, plan)

        def logs_of(params, model_state, slots):
            xs, ys, ws = gather(slots[None])
            pred, _ = model.apply(params, model_state, xs[0], train=False)
            return batch_logs(loss_fn, metric_fns, pred, ys[0], ws[0])

        sums = zero_sums(logs_of, params, model_state, order[0])
        sums = gather.scan(functools.partial(scan, params, model_state), sums, order, batch_size)
        return sums.mean()

    return run


def begin_epoch(state: TrainState, n: int, batch_size: int, shuffle: bool):
    """``(state, order)``: ``state.key`` split once into its next value and the epoch's
    shuffle (:func:`jnn.train._shuffle.split_epoch_key`)."""
    key, words = split_epoch_key(state.key)
    return state._replace(key=key), epoch_order(words, n, batch_size, shuffle)


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
    log_every: int | None = None  # fit(log_every=): per-step loss in the carry (StepTrace)
    ema_eval: bool = False  # validate with the params' EMA (``fit(ema_eval=True)``)


class _Parts(NamedTuple):
    """An array epoch's pieces: start, run steps, finish (one program or several)."""

    begin: Callable  # (state, x, y, w) -> (state, order, sums, guard_state)
    steps: Callable  # (state, sums, g, x, y, w, slots) -> (state, sums, g)
    finish: Callable  # (state, sums, val) -> logs


def _parts(spec: EpochSpec) -> _Parts:
    # Jitted inside the epoch so its trace is cached: begin() traces it once for the
    # shapes of the logs, the scan then reuses that trace (XLA inlines the call).
    step = jax.jit(pure_step(spec.model, spec.loss_fn, spec.tx, spec.metric_fns))
    guard = NanGuard(spec.on_nan)
    scan = train_scan(step, guard, masked=False, plan=spec.plan)
    validation, params_of = None, eval_params_fn(spec.ema_eval)
    if spec.validate:
        validation = eval_fn(spec.model, spec.loss_fn, spec.metric_fns, spec.batch_size, spec.plan)

    def begin(state: TrainState, x, y, w):
        state, order = begin_epoch(state, x.shape[0], spec.batch_size, spec.shuffle)
        # The logs' shapes, from a batch's shapes (traced, not gathered: no equations added).
        batch = [jax.ShapeDtypeStruct((spec.batch_size, *a.shape[1:]), a.dtype) for a in (x, y, w)]

        def logs(state: TrainState, xb, yb, wb):
            return guard.step(step, state, xb, yb, wb, guard.init())[1]

        sums = zero_sums(logs, state, *batch)
        if spec.log_every is not None:
            sums = sums._replace(trace=StepTrace.zeros(order.shape[0], spec.log_every))
        return state, order, sums, guard.init()

    def steps(state: TrainState, sums: Sums, g: GuardState, x, y, w, slots):
        run = lambda carry, batches: scan(*carry, batches)  # noqa: E731
        return Gather(x, y, w, spec.plan).scan(run, (state, sums, g), slots, spec.batch_size)

    def finish(state: TrainState, sums: Sums, val) -> dict[str, Array]:
        logs = sums.mean()
        if validation is not None:
            val_logs = validation(params_of(state), state.model_state, *val)
            logs.update({f"val_{k}": v for k, v in val_logs.items()})
        return logs

    return _Parts(begin, steps, finish)


def epoch_fn(spec: EpochSpec) -> Callable:
    """The pure (un-jitted) ``epoch(state, x, y, w, val) -> (state, logs, guard_state)``.

    Shuffle, scan the train steps, then validate (``val = (x, y, w)``, logs
    ``val_<name>``). ``fit`` jits it (:func:`compiled_epoch`); ``jnn.experiments``
    vmaps it over runs. With a ``plan`` (a mesh) each batch is split along the data
    axis and the state kept in its layout; XLA inserts the gradient all-reduce.
    """
    parts = _parts(spec)

    def epoch(state: TrainState, x, y, w, val):
        state, order, sums, g = parts.begin(state, x, y, w)
        state, sums, g = parts.steps(state, sums, g, x, y, w, order)
        return state, parts.finish(state, sums, val), g

    return epoch


@program_cache
def compiled_epoch(spec: EpochSpec, fast: bool = False) -> Callable:
    """:func:`epoch_fn`, jitted with the state donated (cached, so a second ``fit`` with
    the same model structure and settings reuses the compilation); ``fast``: compiled
    with less optimization (a small epoch, see :func:`jnn.train._cache.small_program`)."""
    return jax.jit(epoch_fn(spec), donate_argnums=(0,), compiler_options=compiler_options(fast))


@program_cache
def compiled_eval(model, loss_fn, metric_fns, batch_size, plan=None, fast=False) -> Callable:
    """:func:`eval_fn`, jitted (cached); ``fast`` as in :func:`compiled_epoch`."""
    run = eval_fn(model, loss_fn, metric_fns, batch_size, plan)
    return jax.jit(run, compiler_options=compiler_options(fast))


@program_cache
def compiled_split_epoch(spec: EpochSpec, fast: bool = False) -> _Parts:
    """The epoch of :func:`epoch_fn` as several calls (``steps`` on a slice of the
    order at a time): the same steps, bit for bit (compiled as :func:`compiled_epoch`)."""
    parts, options = _parts(spec), compiler_options(fast)
    return _Parts(
        jax.jit(parts.begin, donate_argnums=(0,), compiler_options=options),
        jax.jit(parts.steps, donate_argnums=(0, 1, 2), compiler_options=options),
        jax.jit(parts.finish, compiler_options=options),
    )


_FLOPS: dict[Any, float] = {}


def step_flops(spec: EpochSpec, state: TrainState, x, y, w) -> float:
    """Flops of one training step, from XLA's cost analysis of the lowered (not compiled)
    step (0 when the backend gives none). Remembered per spec and data shapes (bounded)."""
    cache_key = (spec, *((a.shape[1:], a.dtype) for a in (x, y, w)))
    if cache_key not in _FLOPS:
        step = pure_step(spec.model, spec.loss_fn, spec.tx, spec.metric_fns)
        batch = [jax.ShapeDtypeStruct((spec.batch_size, *a.shape[1:]), a.dtype) for a in (x, y, w)]
        try:
            lowered = jax.jit(lambda s, xb, yb, wb: step(s, xb, yb, wb)[0]).lower(state, *batch)
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
    from the step's flops), then calls of about :data:`CALL_S` each. Calls end on
    the boundaries of the gathered chunks (:meth:`Gather.chunk`), so a cut epoch
    runs the very same loops as a whole one: the same result, bit for bit.
    """

    def __init__(self, spec: EpochSpec, state: TrainState, data, val, steps_per_call):
        self.spec, self.data, self.val = spec, data, val
        self.nb = num_batches(data[0].shape[0], spec.batch_size)
        self.chunk = Gather(*data).chunk(spec.batch_size)
        self.fixed = steps_per_call
        self._warming: threading.Thread | None = None
        self.fast = small_program(spec.model, state.params, state.model_state, data[0], spec.plan)
        self.k = self.nb if steps_per_call is None else self._aligned(steps_per_call)
        if steps_per_call is None and self.nb > 64:  # a first guess, before any timing
            rate = _FLOPS_PER_S.get(jax.devices()[0].platform, 1e11)
            flops = step_flops(spec, state, *data)
            self.k = self._calls_for(self.nb * (flops / rate + 5e-6))

    def warm(self, state: Any) -> None:
        """Trace and lower the first call's program now, from the state's shapes
        (``jax.eval_shape`` of it), and compile it in a background thread: ``fit`` builds
        the state meanwhile, and XLA's compile (or its load from the persistent cache)
        releases the GIL, so the state's own small program costs no wall time. Tracing
        stays on this thread: two threads tracing at once only take turns with the GIL.
        The first call waits for the thread; an error here is raised by that call."""
        if self.k < self.nb or self.spec.plan is not None:
            return
        fn: Any = compiled_epoch(self.spec, self.fast)  # a jax.jit object
        try:
            lowered = fn.lower(state, *self.data, self.val)
        except Exception:  # the first call traces again and raises it
            return

        def work() -> None:  # fills jit's caches: the first call neither traces nor compiles
            with contextlib.suppress(Exception):  # the first call compiles again and raises
                lowered.compile()

        self._warming = threading.Thread(target=work, name="jnn-compile-epoch", daemon=True)
        self._warming.start()

    def _aligned(self, k: int) -> int:
        """``k`` rounded up to whole gathered chunks (at most the epoch)."""
        return min(-(-k // self.chunk) * self.chunk, self.nb)

    def _calls_for(self, epoch_seconds: float) -> int:
        """Steps per call for an epoch of this duration (a power of two, or all of it)."""
        if epoch_seconds <= LONG_EPOCH_S:
            return self.nb
        per_step = max(epoch_seconds / self.nb, 1e-9)
        return self._aligned(2 ** max(0, round(math.log2(max(1.0, CALL_S / per_step)))))

    def _replan(self, seconds: float) -> None:
        """Adapt ``k`` to the measured epoch; each new ``k`` is one more compilation, so
        only a large change counts (and a split epoch goes back to one call only when it
        took under half of :data:`LONG_EPOCH_S`)."""
        k = self._calls_for(seconds if self.k >= self.nb else 2 * seconds)
        if k >= self.nb or self.k >= self.nb or max(k, self.k) >= 4 * min(k, self.k):
            self.k = k

    def __call__(self, state: TrainState, *, interrupted: Callable[[], bool], tick) -> EpochOut:
        if self._warming is not None:
            self._warming.join()
            self._warming = None
        start = time.perf_counter()
        if self.k >= self.nb:
            state, logs, g = compiled_epoch(self.spec, self.fast)(state, *self.data, self.val)
            out = EpochOut(state, logs, g, True)
        else:
            out = self._split(state, interrupted, tick)
        if self.fixed is None and out.complete:
            self._replan(time.perf_counter() - start)
        return out

    def _split(self, state, interrupted, tick) -> EpochOut:
        x, y, w = self.data
        parts = compiled_split_epoch(self.spec, self.fast)
        guard = NanGuard(self.spec.on_nan)
        state, order, sums, g = parts.begin(state, x, y, w)
        for start in range(0, self.nb, self.k):
            state, sums, g = parts.steps(state, sums, g, x, y, w, order[start : start + self.k])
            done = min(start + self.k, self.nb)
            tick(done, self.nb)
            if done < self.nb and (interrupted() or guard.tripped(g)):
                return EpochOut(state, None, g, False)
        return EpochOut(state, parts.finish(state, sums, self.val), g, True)


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
    "Gather",
    "num_batches",
    "train_scan",
    "zero_sums",
]
