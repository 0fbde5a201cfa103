"""The seed network (10-10-10-1, batch 32, Adam, BCE, 32,768 rows): jnn.fit vs handwritten JAX.

Trains the same network four ways in one process and prints steps/s and ratios:

- ``jnn.fit`` with shuffling and the accuracy metric on, ``verbose=0``;
- a handwritten ``jax.jit`` step called once per batch from Python;
- a handwritten ``lax.scan`` epoch with an on-device shuffle
  (``jax.random.permutation``, one call per epoch);
- the same ``lax.scan`` epoch without any shuffle: the machine's limit.

Targets: ``jnn.fit`` >= 0.85x the limit (the scan without a shuffle) and >= 20x the
per-step loop.

Run: ``python benchmarks/bench_fit.py [--quick] [--repeats N]``. The full suite,
with peers, is ``python -m benchmarks``.
"""

from __future__ import annotations

import argparse
import os
import sys

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _handwritten, _jnn
from benchmarks._cases import cases
from benchmarks._harness import measure_case


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rows and repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls (default 5, 3)")
    args = parser.parse_args(argv)
    case = cases(args.quick)["seed"]
    repeats = args.repeats or (3 if args.quick else 5)
    makes = {
        "jnn.fit": lambda: _jnn.fit(case),
        "jax.jit per step": lambda: _handwritten.jit_step(case),
        "jax lax.scan epoch": lambda: _handwritten.scan_epoch(case),
        "lax.scan, no shuffle (limit)": lambda: _handwritten.scan_epoch(case, shuffle=False),
    }
    results = {r.impl: r for r in measure_case("seed", makes, repeats=repeats)}
    for r in results.values():
        if r.skipped:
            print(f"{r.impl}: {r.skipped}")
            return 1
    print(
        f"seed network {case.sizes}, batch {case.batch}, {case.rows} rows, "
        f"{case.epochs} epoch(s) per call, median of {repeats} (min-max)"
    )
    for name, r in results.items():
        print(
            f"  {name:20s} {r.steps_per_s:10.0f} steps/s "
            f"({r.steps_per_s_min:.0f}-{r.steps_per_s_max:.0f}), compile {r.compile_s:.2f} s"
        )
    fit = results["jnn.fit"].steps_per_s
    scan = results["jax lax.scan epoch"].steps_per_s
    limit = results["lax.scan, no shuffle (limit)"].steps_per_s
    step = results["jax.jit per step"].steps_per_s
    ok_limit, ok_step = fit >= 0.85 * limit, fit >= 20 * step
    print(
        f"jnn.fit / limit (no shuffle) = {fit / limit:.2f}x (target >= 0.85: "
        f"{'met' if ok_limit else 'MISSED'})"
    )
    print(f"jnn.fit / lax.scan epoch with jax.random.permutation = {fit / scan:.2f}x")
    print(
        f"jnn.fit / jit per step = {fit / step:.1f}x (target >= 20: "
        f"{'met' if ok_step else 'MISSED'})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
