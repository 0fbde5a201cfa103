"""Timing, the matmul roofline, and the result record shared by every benchmark case.

A *bench* is a zero-argument callable doing one timed unit of work (it must
block until the device is done) plus the number of training steps and
examples that unit contains. :func:`measure_case` times the first call of
each (compile and first step), one more warm-up call, then ``repeats`` rounds
of calls interleaved across the implementations, and reports the median with
min and max.
"""

from __future__ import annotations

import dataclasses
import itertools
import statistics
import time
import traceback
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


@dataclasses.dataclass
class Bench:
    """One implementation of one case, ready to time.

    Attributes:
      call: does one timed unit of work and blocks until it is finished.
      steps: training steps (optimizer updates) per call, summed over runs.
      examples: examples processed per call, summed over runs.
      flops: floating-point operations per call (0 when not meaningful).
      extra: anything else worth recording (e.g. the number of runs).
    """

    call: Callable[[], Any]
    steps: int
    examples: int
    flops: float = 0.0
    extra: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Result:
    """What one implementation of one case measured (or why it was skipped)."""

    case: str
    impl: str
    skipped: str | None = None
    steps_per_s: float | None = None
    steps_per_s_min: float | None = None
    steps_per_s_max: float | None = None
    examples_per_s: float | None = None
    first_call_s: float | None = None
    compile_s: float | None = None
    seconds_per_call: list[float] = dataclasses.field(default_factory=list)
    flops_per_s: float | None = None
    extra: dict = dataclasses.field(default_factory=dict)


def block(tree: Any) -> Any:
    """Wait for every jax array in ``tree`` (other leaves pass through)."""
    return jax.block_until_ready(tree)


def measure(
    case: str,
    impl: str,
    make: Callable[[], Bench],
    *,
    repeats: int,
    warmup: int = 1,
    budget_s: float = 60.0,
) -> Result:
    """Time one implementation: :func:`measure_case` with a single entry."""
    return measure_case(case, {impl: make}, repeats=repeats, warmup=warmup, budget_s=budget_s)[0]


def measure_case(
    case: str,
    makes: dict[str, Callable[[], Bench]],
    *,
    repeats: int,
    warmup: int = 1,
    budget_s: float = 60.0,
) -> list[Result]:
    """Build and time every implementation of one case, the timed calls interleaved.

    For each implementation: build it, time its first call (compile + one
    call's work), and make ``warmup`` more calls, none of them counted. Then
    ``repeats`` timed rounds, each calling every implementation once, so a
    change of machine load hits all of them alike and their ratios stay fair.
    An implementation whose calls would take more than ``budget_s`` in all
    gets fewer timed calls (at least 2). A builder raising ``ImportError``
    (peer not installed) or :class:`Skip` gives a skipped result with the
    reason; any other error is recorded as skipped with its text, so one
    broken peer never stops the suite.
    """
    results: dict[str, Result] = {}
    live: dict[str, tuple[Bench, float, int]] = {}
    for impl, make in makes.items():
        try:
            bench = make()
        except Skip as e:
            results[impl] = Result(case, impl, skipped=str(e))
            continue
        except ImportError as e:
            results[impl] = Result(case, impl, skipped=f"skipped: not installed ({e.name or e})")
            continue
        except Exception as e:  # a broken peer must not stop the suite
            traceback.print_exc()
            results[impl] = Result(case, impl, skipped=f"error while building: {_err(e)}")
            continue
        try:
            start = time.perf_counter()
            bench.call()
            first = time.perf_counter() - start
            warm = first
            for _ in range(warmup):
                start = time.perf_counter()
                bench.call()
                warm = time.perf_counter() - start
        except Exception as e:
            traceback.print_exc()
            results[impl] = Result(case, impl, skipped=f"error while running: {_err(e)}")
            continue
        reps = max(min(2, repeats), min(repeats, int(budget_s / max(warm, 1e-9))))
        live[impl] = (bench, first, reps)
    times: dict[str, list[float]] = {impl: [] for impl in live}
    for round_ in range(max((reps for _, _, reps in live.values()), default=0)):
        for impl, (bench, _, reps) in list(live.items()):
            if round_ >= reps:
                continue
            try:
                start = time.perf_counter()
                bench.call()
                times[impl].append(time.perf_counter() - start)
            except Exception as e:
                traceback.print_exc()
                results[impl] = Result(case, impl, skipped=f"error while running: {_err(e)}")
                del live[impl]
    for impl, (bench, first, _) in live.items():
        ts = times[impl]
        med = statistics.median(ts)
        results[impl] = Result(
            case,
            impl,
            steps_per_s=bench.steps / med,
            steps_per_s_min=bench.steps / max(ts),
            steps_per_s_max=bench.steps / min(ts),
            examples_per_s=bench.examples / med,
            first_call_s=first,
            compile_s=max(first - med, 0.0),  # the first call = compile + one call's work
            seconds_per_call=ts,
            flops_per_s=bench.flops / med if bench.flops else None,
            extra={"steps_per_call": bench.steps, **bench.extra},
        )
    return [results[impl] for impl in makes]


def _err(e: Exception) -> str:
    return f"{type(e).__name__}: {e}"


class Skip(Exception):  # noqa: N818  (a skip, not an error)
    """Raised by a bench builder that cannot run here (the message says why)."""


def matmul_flops_per_s(n: int = 1024, repeats: int = 10, dtype=jnp.float32) -> dict:
    """This process's measured ``a @ b`` throughput at ``n``^3 in ``dtype`` (the roofline).

    Returns a dict with the median and min/max FLOP/s over ``repeats`` timed
    batches of calls (each batch long enough to dwarf dispatch).
    """
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (n, n), dtype)
    b = jax.random.normal(kb, (n, n), dtype)
    mm = jax.jit(lambda a, b: a @ b)
    block(mm(a, b))
    # Calls per batch: aim at ~0.2 s per batch.
    start = time.perf_counter()
    block(mm(a, b))
    one = max(time.perf_counter() - start, 1e-6)
    per_batch = max(1, min(1000, int(0.2 / one)))
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = None
        for _ in range(per_batch):
            out = mm(a, b)
        block(out)
        rates.append(2 * n**3 * per_batch / (time.perf_counter() - start))
    return {
        "n": n,
        "dtype": jnp.dtype(dtype).name,
        "flops_per_s": statistics.median(rates),
        "flops_per_s_min": min(rates),
        "flops_per_s_max": max(rates),
    }


def mlp_train_flops(sizes: tuple[int, ...], batch: int) -> float:
    """Matmul FLOPs of one training step of a dense MLP.

    Forward ``x @ w`` and the weight gradient for every layer, the input
    gradient for every layer but the first: 2 FLOPs per multiply-add. Bias,
    activations, loss and optimizer are small beside them and not counted.
    """
    macs = [a * b for a, b in itertools.pairwise(sizes)]
    return 2 * batch * (3 * sum(macs) - macs[0])
