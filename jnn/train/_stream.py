"""Training and evaluating from a stream of batches (private).

``fit`` / ``evaluate`` / ``predict`` hand data that is not a pair of arrays
here: an iterable or iterator of ``(x, y)`` / ``(x, y, weights)`` batches, or
a callable returning a fresh iterator per epoch. The machinery:

- :class:`Source` turns that into one iterator of numpy batches per epoch
  (bounded by ``steps``), peeking the first batch for shape checks;
- :func:`groups` packs ``k`` batches into stacked ``(k, B, ...)`` host arrays,
  padding a ragged batch with weight-0 rows and a ragged group with skipped
  steps, so every example is trained on and one shape is compiled;
- :class:`Prefetch` builds and ``device_put``\\ s the next groups in a thread
  while the device runs the current one (double-buffered, bounded memory);
- :class:`StreamEpoch` runs an epoch as ``ceil(batches / k)`` calls of
  :func:`jnn.train._epoch.train_scan`, the array path's scan body, so the math is
  the same; a short last group masks its missing steps.

With a mesh (``Source.on_mesh``) each process streams its own rows of every
global batch; groups are placed with :func:`sharded_put` and, across processes,
checked group by group to hold as many batches everywhere (:func:`_agreed`).
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import numpy as np

from jnn._data import check_positive_int, check_xy
from jnn.train._cache import program_cache
from jnn.train._epoch import EpochOut, eval_scan, train_scan, zero_sums
from jnn.train._logs import StepTrace, Sums, batch_logs
from jnn.train._shuffle import split_epoch_key
from jnn.train._state import TrainState
from jnn.train._step import NanGuard, pure_step

# --------------------------------------------------------------------------- sources


def _looks_like_batch(item: Any) -> bool:
    return (
        isinstance(item, (tuple, list))
        and len(item) in (2, 3)
        and all(hasattr(a, "shape") or hasattr(a, "__array__") for a in item)
    )


def is_stream(data: Any) -> bool:
    """True for a batch stream, False for ``(x, y)`` arrays (today's input)."""
    if isinstance(data, (tuple, list)):
        return len(data) > 0 and _looks_like_batch(data[0]) and _looks_like_batch(data[-1])
    return (
        not isinstance(data, (str, bytes, dict))
        and not hasattr(data, "__array__")
        and (callable(data) or hasattr(data, "__iter__"))
    )


def is_x_stream(x: Any) -> bool:
    """For ``predict``: an iterator / iterable / callable of input batches, not an array."""
    if isinstance(x, (tuple, list, str, bytes, dict)) or hasattr(x, "__array__"):
        return False
    return callable(x) or hasattr(x, "__iter__")


class Spec(NamedTuple):
    """Per-example shapes and dtypes of a stream's batches, from its first batch."""

    batch_size: int
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[np.dtype, ...]


class Source:
    """One iterator of checked numpy batches per epoch from what the user gave.

    A callable is called once per epoch; an iterable (a list, a DataLoader, a
    grain dataset) is iterated afresh each epoch; an iterator is consumed
    across epochs (so it needs ``steps`` per epoch, or is good for one epoch).
    """

    def __init__(self, where: str, data: Any, *, steps: int | None, arity: int):
        self.where, self.data, self.steps, self.arity = where, data, steps, arity
        if callable(data) and not hasattr(data, "__iter__"):
            it = iter(data())
        elif hasattr(data, "__iter__"):
            it = iter(data)
        else:
            raise TypeError(f"{where}: data must be arrays, an iterable of batches or a callable.")
        self.one_shot = it is data
        try:
            first = next(it)
        except StopIteration:
            raise ValueError(f"{where}: the data stream produced no batch.") from None
        self.first = self.check_first(first)
        self._next_iter: Iterator | None = itertools.chain([first], it)
        arrays = self.first[:arity]
        self.spec = Spec(
            arrays[0].shape[0], tuple(a.shape[1:] for a in arrays), tuple(a.dtype for a in arrays)
        )
        self.epochs_started = 0
        self.plan: Any = None  # a mesh plan (jnn.distributed._Plan) when fed to a mesh
        self.put = default_put()

    def on_mesh(self, plan: Any) -> None:
        """Feed a mesh: each process streams its own rows of every global batch (process
        order), placed with ``jax.make_array_from_process_local_data``; shapes and
        divisibility are checked across processes here, before anything is compiled."""
        kinds = [f"{s} {np.dtype(d).kind}" for s, d in zip(*self.spec[1:], strict=True)]
        signature = f"{self.spec.batch_size} rows, " + ", ".join(kinds)
        plan.check_stream(self.where, self.spec.batch_size, signature)
        self.plan, self.put = plan, sharded_put(plan.batch_sharding)

    def feed(self, where: str, k: int) -> Prefetch:
        """The next epoch as groups of ``k`` stacked batches, put on the device ahead."""
        from jnn.distributed import _scope

        scope = _scope() if self.plan is not None else None  # here: in program order
        items = groups(where, self.epoch(), self.spec, k, self.arity)
        return Prefetch(_agreed(where, items, scope, k), self.put)

    def fetch(self, out: Any) -> Any:
        """Outputs of a batch -> this process's rows as numpy."""
        return jax.tree.map(np.asarray, out) if self.plan is None else self.plan.to_local(out)

    def check_first(self, item: Any) -> tuple[np.ndarray, ...]:
        where = f"{self.where}: batch 0 of the stream"
        if self.arity == 1:
            if isinstance(item, (tuple, list)):
                item = item[0]
            xs = check_xy(where, (item, np.zeros((np.shape(item)[0],))))
            return (xs[0],)
        if not _looks_like_batch(item):
            raise TypeError(
                f"{self.where}: each batch of a data stream must be a tuple (x, y) or "
                f"(x, y, weights) of arrays, got {type(item).__name__}. For loaders that yield "
                "dicts, map them to tuples (e.g. lambda d: (d['image'], d['label']))."
            )
        items = [np.asarray(a) for a in item]
        return check_xy(where, items[:2], weights=items[2] if len(items) == 3 else None)

    @property
    def length(self) -> int | None:
        """Batches per epoch, when known (``steps`` or ``len(data)``)."""
        if self.steps is not None:
            return self.steps
        try:
            return len(self.data)
        except TypeError:
            return None

    def epoch(self) -> Iterator[Any]:
        """The raw items of the next epoch."""
        self.epochs_started += 1
        if self._next_iter is not None:
            it = self._next_iter
            if not self.one_shot:
                self._next_iter = None
        elif callable(self.data) and not hasattr(self.data, "__iter__"):
            it = iter(self.data())
        else:
            it = iter(self.data)
        return it if self.steps is None else itertools.islice(it, self.steps)


def stream_source(
    where, data, steps, *, sample_weight=None, arity=2, plan=None, steps_name="steps"
):  # fmt: skip
    """A :class:`Source` when ``data`` is a batch stream, else None."""
    if data is None or not (is_stream(data) if arity == 2 else is_x_stream(data)):
        if steps is not None:
            raise ValueError(f"{where}: {steps_name} is only for a stream of batches.")
        return None
    if sample_weight is not None:
        raise ValueError(
            f"{where}: sample_weight is for array data; a stream carries per-example weights "
            "in its batches, as (x, y, weights)."
        )
    if steps is not None:
        steps = check_positive_int(where, steps_name, steps)
    source = Source(where, data, steps=steps, arity=arity)
    if plan is not None:
        source.on_mesh(plan)
    return source


def _agreed(where: str, items: Iterator[Group], scope: str | None, k: int) -> Iterator[Group]:
    """``items``, checked group by group (multi-process meshes) that every process has
    a group of as many batches: a stream that ends early in one process is an error in
    every process (host-side, with a timeout), never a collective left waiting. The
    exchanges run in the prefetch thread, ahead of the device, keyed by ``scope``
    (named in the main thread) and group index, so a feed closed early (a NaN stop)
    leaves the other exchanges of the program in step."""
    if scope is None or jax.process_count() == 1:
        yield from items
        return
    from jnn.distributed import _exchange

    for i, group in enumerate(itertools.chain(items, [None])):
        mine = 0 if group is None else group.batches
        counts = [int(c) for c in _exchange(where, str(mine), key=f"{scope}/{i}")]
        if len(set(counts)) > 1:
            raise ValueError(
                f"{where}: the processes' streams disagree on their length: at this group of "
                f"up to {k} batches they have {counts} batches left (process order). Every "
                "process must yield the same number of batches per epoch: trim or pad the "
                "shards, or pass steps_per_epoch / steps."
            )
        if group is None:
            return
        yield group


# --------------------------------------------------------------------------- groups


class Group(NamedTuple):
    """``k`` stacked batches: arrays ``(k, B, ...)``, weights ``(k, B)``, ``valid`` ``(k,)``."""

    arrays: tuple[np.ndarray, ...]
    batches: int  # real (non-skipped) batches in the group
    examples: int  # real examples in the group


def _to_numpy(a: Any) -> np.ndarray:
    return a if isinstance(a, np.ndarray) else np.asarray(a)


def groups(where: str, items: Iterator[Any], spec: Spec, k: int, arity: int) -> Iterator[Group]:
    """Stack ``k`` batches at a time, padded to ``spec.batch_size`` rows.

    For training (``arity == 2``) each group is ``(xs, ys, ws, valid)``; for
    prediction (``arity == 1``) it is ``(xs,)``. A short batch is padded
    with copies of its first row at weight 0; a short group with skipped
    steps (``valid == False``). A batch with more rows than the first, or with
    other per-example shapes or dtype kinds, is an error naming its index.
    """
    bsz = spec.batch_size
    index = 0
    items = iter(items)
    full = [((bsz, *s), np.dtype(d)) for s, d in zip(spec.shapes, spec.dtypes, strict=True)]

    def fast(item: Any) -> bool:
        """A full batch of numpy arrays with exactly the first batch's shapes and dtypes
        (what most loaders yield): stacked in one copy, no per-batch checks needed."""
        if arity == 1:
            x_shape, x_dtype = full[0]
            return type(item) is np.ndarray and item.shape == x_shape and item.dtype == x_dtype
        return (
            type(item) is tuple
            and len(item) == 2
            and type(item[0]) is np.ndarray
            and type(item[1]) is np.ndarray
            and item[0].shape == full[0][0]
            and item[1].shape == full[1][0]
            and item[0].dtype == full[0][1]
            and item[1].dtype == full[1][1]
        )

    while True:
        chunk = list(itertools.islice(items, k))
        if not chunk:
            return
        bufs = [np.empty((k, bsz, *s), d) for s, d in zip(spec.shapes, spec.dtypes, strict=True)]
        ws = np.zeros((k, bsz), np.float32)
        if all(map(fast, chunk)):  # full numpy batches of the first one's shapes and dtypes
            parts = chunk if arity == 2 else [(item,) for item in chunk]
            for i, buf in enumerate(bufs):
                np.stack([item[i] for item in parts], out=buf[: len(chunk)])
            ws[: len(chunk)] = 1.0
            examples = len(chunk) * bsz
            index += len(chunk)
        else:
            examples = 0
            for j, item in enumerate(chunk):
                parts = _batch_parts(where, index, item, spec, arity)
                n = parts[0].shape[0]
                for buf, part in zip(bufs, parts[: len(bufs)], strict=True):
                    buf[j, :n] = part
                    if n < bsz:
                        buf[j, n:] = part[:1]
                ws[j, :n] = parts[2] if len(parts) == 3 else 1.0
                examples += n
                index += 1
        for j in range(len(chunk), k):  # skipped steps: any finite values
            for buf in bufs:
                buf[j] = buf[0]
        for buf, name in zip(bufs, ("x", "y"), strict=False):
            if buf.dtype.kind == "f" and not np.isfinite(buf).all():
                raise ValueError(
                    f"{where}: {name} holds NaN/Inf in the stream's batches {index - len(chunk)}"
                    f"..{index - 1}. Clean or impute them first."
                )
        valid = np.arange(k) < len(chunk)
        if arity == 1:
            yield Group((bufs[0],), len(chunk), examples)
        else:
            yield Group((*bufs, ws, valid), len(chunk), examples)


def _batch_parts(where, index, item, spec: Spec, arity: int) -> list[np.ndarray]:
    if arity == 1:
        parts = [_to_numpy(item[0] if isinstance(item, (tuple, list)) else item)]
    else:
        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
            raise TypeError(
                f"{where}: batch {index} of the stream must be (x, y) or (x, y, weights), got "
                f"{type(item).__name__}."
            )
        parts = [_to_numpy(a) for a in item]
    n = parts[0].shape[0] if parts[0].ndim else 0
    if not 0 < n <= spec.batch_size:
        raise ValueError(
            f"{where}: batch {index} of the stream has {n} examples; a stream's batches need "
            f"1 to {spec.batch_size} (the first batch's size, which sets the compiled shape). "
            "Yield the largest batch first, or make the loader's batches equal."
        )
    for i, (part, shape, dtype) in enumerate(zip(parts, spec.shapes, spec.dtypes, strict=False)):
        if part.shape != (n, *shape) or (part.dtype.kind == "f") != (dtype.kind == "f"):
            raise ValueError(
                f"{where}: batch {index} of the stream: {'xyw'[i]} has shape {part.shape} and "
                f"dtype {part.dtype}, but the first batch's has per-example shape {shape} and "
                f"dtype {dtype}, with the same row count for x and y."
            )
    if len(parts) == 3:
        w = parts[2]
        if w.shape != (n,):
            raise ValueError(
                f"{where}: batch {index}: weights must have shape ({n},), got {w.shape}."
            )
        if (w < 0).any():
            raise ValueError(f"{where}: batch {index}: weights must be non-negative.")
    return parts


# --------------------------------------------------------------------------- prefetch


_DONE = object()


class Prefetch:
    """Iterate ``source`` in a thread, ``put``-ting ``depth`` groups ahead on the device.

    ``put`` is ``jax.device_put`` by default, or one placing the arrays with a
    sharding (the data-parallel option). Errors in the thread re-raise here.
    Host memory holds at most ``depth + 1`` groups at once.
    """

    def __init__(self, source: Iterator[Group], put: Callable, depth: int = 2):
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(source, put), daemon=True)
        self._thread.start()

    def _run(self, source, put):
        try:
            for group in source:
                item = (group._replace(arrays=put(group.arrays)), None)
                while not self._offer(item):
                    if self._stop.is_set():
                        return
                if self._stop.is_set():
                    return
            self._offer_final((_DONE, None))
        except BaseException as err:  # re-raised in the consumer
            self._offer_final((_DONE, err))

    def _offer(self, item) -> bool:
        try:
            self._queue.put(item, timeout=0.1)
            return True
        except queue.Full:
            return False

    def _offer_final(self, item) -> None:
        while not self._offer(item) and not self._stop.is_set():
            pass

    def __iter__(self):
        try:
            while True:
                group, err = self._queue.get()
                if err is not None:
                    raise err
                if group is _DONE:
                    return
                yield group
        finally:
            self.close()

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get_nowait()
            except queue.Empty:
                self._thread.join(0.05)


def default_put() -> Callable:
    """How :class:`Prefetch` places a group: ``jax.device_put`` on an accelerator (the
    host-to-device copy overlaps the running step); on the CPU the numpy group itself,
    which the compiled call reads directly (a ``device_put`` there is one more copy
    and ~0.1 ms of dispatch per group, measured in ``benchmarks/bench_stream.py``)."""
    if jax.default_backend() == "cpu":
        return lambda arrays: arrays
    return jax.device_put


def sharded_put(batch_sharding: Any) -> Callable:
    """A ``put`` for :class:`Prefetch` placing stacked groups with a per-batch sharding.

    ``batch_sharding`` is a ``NamedSharding`` for one batch ``(B, ...)``, e.g.
    rows split along a mesh's data axis; the stacked ``(k, B, ...)`` arrays get
    the same spec with the group axis unsplit. In a multi-process run each
    process streams its own rows, assembled with
    ``jax.make_array_from_process_local_data``.
    """
    from jax.sharding import NamedSharding, PartitionSpec

    spec = (None, *batch_sharding.spec)

    def put(arrays):
        out = []
        for a in arrays:
            sharding = NamedSharding(batch_sharding.mesh, PartitionSpec(*spec[: a.ndim]))
            if jax.process_count() == 1:
                out.append(jax.device_put(a, sharding))
            else:
                out.append(jax.make_array_from_process_local_data(sharding, a))
        return tuple(out)

    return put


# --------------------------------------------------------------------------- compiled calls


@program_cache
def compiled_steps(
    model, loss_fn, tx, metric_fns, masked: bool, on_nan=None, plan=None
) -> Callable:
    """``call(state, sums, guard, xs, ys, ws, valid) -> (state, sums, guard)``.

    :func:`jnn.train._epoch.train_scan` over the group's k batches. The ``masked``
    variant (for a short last group) skips steps whose ``valid`` is False. The NaN
    guard's carry is threaded through the groups of an epoch. With a ``plan`` (a mesh)
    the state keeps its layout (replicated or FSDP) from call to call.
    """
    step = pure_step(model, loss_fn, tx, metric_fns)
    scan = train_scan(step, NanGuard(on_nan), masked, plan)

    def call(state: TrainState, sums: Sums, g, xs, ys, ws, valid):
        return scan(state, sums, g, (xs, ys, ws, valid))

    return jax.jit(call, donate_argnums=(0, 1, 2))


@program_cache
def compiled_eval_steps(model, loss_fn, metric_fns) -> Callable:
    """``call(params, model_state, sums, xs, ys, ws, valid) -> sums``: k evaluation batches."""
    scan = eval_scan(model, loss_fn, metric_fns, masked=True)

    def call(params, model_state, sums: Sums, xs, ys, ws, valid):
        return scan(params, model_state, sums, (xs, ys, ws, valid))

    return jax.jit(call, donate_argnums=(2,))


def _batch_specs(spec: Spec) -> tuple[jax.ShapeDtypeStruct, ...]:
    """Abstract ``(xb, yb, wb)`` of one batch of the stream."""
    xb, yb = (
        jax.ShapeDtypeStruct((spec.batch_size, *s), d)
        for s, d in zip(spec.shapes, spec.dtypes, strict=True)
    )
    return xb, yb, jax.ShapeDtypeStruct((spec.batch_size,), np.float32)


# --------------------------------------------------------------------------- epochs


class StreamEpoch:
    """``fit``'s epoch for a stream: ``epoch(state, interrupted=, tick=) -> EpochOut``."""

    def __init__(
        self, *, where, source, model, loss_fn, tx, metric_fns, k, on_nan=None, log_every=None
    ):
        self.where, self.source, self.k = where, source, k
        self.log_every = log_every
        self.guard = NanGuard(on_nan)
        plan = source.plan
        self.full = compiled_steps(model, loss_fn, tx, metric_fns, False, on_nan, plan)
        self.masked = compiled_steps(model, loss_fn, tx, metric_fns, True, on_nan, plan)
        self.step = pure_step(model, loss_fn, tx, metric_fns)
        self.log_shapes: Any = None

    def __call__(self, state: TrainState, *, interrupted, tick) -> EpochOut:
        epoch = self.source.epochs_started
        key, _ = split_epoch_key(state.key)  # as the array epoch does (no shuffle here)
        state = state._replace(key=key)
        if self.log_shapes is None:  # the metrics' shapes, once
            logs = lambda *args: self.step(*args)[1]  # noqa: E731
            self.log_shapes = jax.eval_shape(logs, state, *_batch_specs(self.source.spec))
        sums, g = Sums.zeros_like(self.log_shapes), self.guard.init()  # fresh: calls donate them
        if self.log_every is not None:  # fit checked that the length is known
            sums = sums._replace(trace=StepTrace.zeros(self.source.length, self.log_every))
        batches = examples = 0
        feed = self.source.feed(self.where, self.k)
        for group in feed:
            fn = self.full if group.batches == self.k else self.masked
            state, sums, g = fn(state, sums, g, *group.arrays)
            batches, examples = batches + group.batches, examples + group.examples
            tick(batches, self.source.length, examples)
            if interrupted() or self.guard.tripped(g):
                feed.close()
                return EpochOut(state, None, g, False)
        if batches == 0:
            raise ValueError(
                f"{self.where}: the data stream produced no batch in epoch {epoch + 1}. An "
                "iterator is used up after one pass: pass a callable returning a fresh "
                "iterator (e.g. lambda: make_batches()), a re-iterable, or steps_per_epoch."
            )
        return EpochOut(state, sums.mean(), g, True)


class Validated:
    """An epoch runner followed by ``validate(params, model_state) -> logs`` (``val_*``)."""

    def __init__(self, epoch: Callable[..., EpochOut], validate: Callable, params_of=None):
        self.epoch, self.validate = epoch, validate
        self.params_of = params_of or (lambda state: state.params)  # the EMA, with ema_eval

    def __call__(self, state, **kw) -> EpochOut:
        out = self.epoch(state, **kw)
        if not out.complete or out.logs is None:
            return out
        val_logs = self.validate(self.params_of(out.state), out.state.model_state)
        return out._replace(logs={**out.logs, **{f"val_{k}": v for k, v in val_logs.items()}})


def evaluate_stream(
    where, source: Source, *, model, loss_fn, metric_fns, params, model_state, k
) -> dict[str, jax.Array]:
    """Weighted loss and metrics over one pass of ``source`` (``k`` batches per call)."""
    run = compiled_eval_steps(model, loss_fn, metric_fns)

    def first_logs(params, model_state, xb, yb, wb):
        pred, _ = model.apply(params, model_state, xb, train=False)
        return batch_logs(loss_fn, metric_fns, pred, yb, wb)

    sums = zero_sums(first_logs, params, model_state, *_batch_specs(source.spec))
    batches = 0
    for group in source.feed(where, k):
        sums = run(params, model_state, sums, *group.arrays)
        batches += group.batches
    if batches == 0:
        raise ValueError(f"{where}: the data stream produced no batch (an iterator used up?).")
    return sums.mean()


def predict_stream(where, source: Source, *, forward, params, model_state) -> Any:
    """Outputs for every row of every batch of ``source``, concatenated on the host."""
    outputs = []
    pending = None
    for group in source.feed(where, 1):
        (xs,) = group.arrays
        out = (forward(params, model_state, xs[0]), group.examples)
        if pending is not None:  # fetch the previous batch after dispatching this one
            outputs.append(jax.tree.map(lambda o, n=pending[1]: o[:n], source.fetch(pending[0])))
        pending = out
    if pending is None:
        raise ValueError(f"{where}: the input stream produced no batch (an iterator used up?).")
    outputs.append(jax.tree.map(lambda o, n=pending[1]: o[:n], source.fetch(pending[0])))
    return jax.tree.map(lambda *parts: np.concatenate(parts), *outputs)
