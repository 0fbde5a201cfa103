"""Weak scaling of data-parallel ``jnn.fit(mesh=...)``: the MLP case on 1, 2, 4 devices.

The per-device work is fixed (``--batch-per-device`` rows per device per step,
``--steps`` steps per epoch), so ``d`` devices train ``d`` times the examples
per epoch with a ``d`` times larger global batch. Perfect weak scaling keeps
the epoch time flat: efficiency(d) = examples/s(d) / (d * examples/s(1)).

On a CPU the devices are forced host devices
(``--xla_force_host_platform_device_count``): they share the machine's cores,
so the efficiency includes the cores being divided d ways: it is not a real
multi-device speedup. The last column isolates the partitioning cost: the time
of the d-device epoch over the same epoch (same global batch) on one device
(1.0: splitting is free). On a GPU machine the real devices are used.

The timed calls of the device counts run in interleaved rounds (one fit of each
per round), so a change of machine load hits them alike; the median of the
rounds is reported.

Run:  python benchmarks/bench_scaling.py [--devices 1,2,4] [--rounds 3] [--device]
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default="1,2,4", help="device counts, comma-separated")
    parser.add_argument("--batch-per-device", type=int, default=64)
    parser.add_argument("--steps", type=int, default=16, help="steps per epoch (per timed fit)")
    parser.add_argument("--rounds", type=int, default=3, help="timed fits per device count")
    parser.add_argument("--sizes", default="784,1024,1024,10", help="the MLP's layer widths")
    parser.add_argument("--device", action="store_true", help="use the default backend's devices")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.devices.split(",")]
    if not args.device and "jax" not in sys.modules:  # forced host devices, before jax loads
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={max(counts)}"
        os.environ.setdefault("JAX_PLATFORMS", "cpu")

    import jax
    import numpy as np

    import jnn

    devices = jax.devices()
    counts = [c for c in counts if c <= len(devices)]
    sizes = [int(s) for s in args.sizes.split(",")]
    model = jnn.serial(
        *[jnn.Dense(n, activation="relu") for n in sizes[1:-1]], jnn.Dense(sizes[-1])
    )
    _, params = model.init(jax.random.key(0), (-1, sizes[0]))
    rng = np.random.default_rng(0)
    rows = max(counts) * args.batch_per_device * args.steps
    x = rng.normal(size=(rows, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], size=rows).astype(np.int32)

    def fit(d: int, on: int | None = None) -> float:
        """A fit of d devices' work on ``on`` devices (default d)."""
        n = d * args.batch_per_device * args.steps
        mesh = jnn.distributed.make_mesh(devices[: on or d])
        start = time.perf_counter()
        res = jnn.fit(
            model, params, (x[:n], y[:n]), loss="cross_entropy", mesh=mesh, verbose=0,
            batch_size=d * args.batch_per_device, key=jax.random.key(1), shuffle=False,
        )  # fmt: skip
        jax.block_until_ready(res.params)
        return time.perf_counter() - start

    for d in counts:  # compile and warm up
        for _ in range(2):
            fit(d), fit(d, 1)
    times: dict[int, list[float]] = {d: [] for d in counts}
    alone: dict[int, list[float]] = {d: [] for d in counts}  # the same work on one device
    for _ in range(args.rounds):
        for d in counts:
            times[d].append(fit(d))
            alone[d].append(fit(d, 1) if d > 1 else times[d][-1])
    base = None
    table = {}
    print(f"backend {jax.default_backend()}, {len(devices)} devices; MLP {args.sizes}, "
          f"{args.batch_per_device} rows/device/step, {args.steps} steps/epoch")  # fmt: skip
    print(
        "| devices | global batch | examples/epoch | epoch (ms, median) | examples/s | "
        "efficiency | same epoch on 1 device (ms) | d devices / 1 device |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for d in counts:
        seconds = float(np.median(times[d]))
        rate = d * args.batch_per_device * args.steps / seconds
        base = rate if base is None else base
        eff = rate / (d * base) if counts[0] == 1 else float("nan")
        one = float(np.median(alone[d]))
        table[d] = {"seconds": times[d], "examples_per_s": rate, "efficiency": eff, "alone": one}
        print(
            f"| {d} | {d * args.batch_per_device} | {d * args.batch_per_device * args.steps} | "
            f"{1000 * seconds:.0f} | {rate:,.0f} | {eff:.2f} | {1000 * one:.0f} | "
            f"{seconds / one:.2f} |"
        )
    return table


if __name__ == "__main__":
    main()
