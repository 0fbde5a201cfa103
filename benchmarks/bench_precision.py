"""bfloat16 against float32: training-step time and compiled peak memory, MLP and CNN.

For each case the same model trains under ``policy="float32"`` and
``policy="mixed_bfloat16"`` (float32 master weights, bfloat16 compute) through
``jnn.make_train_step``. Step time: the median over interleaved rounds (float32,
bfloat16, float32, ...: a loaded machine slows both alike) of ``--steps`` steps,
after a warm-up. Memory: XLA's own ``memory_analysis()`` of the compiled step
(temporaries, i.e. activations and workspaces; and the total with arguments and
outputs), which is what the policy changes, independent of the allocator.

Expect bfloat16 to be slower on CPUs without native bfloat16 arithmetic (XLA
converts around each op) and faster on GPUs/TPUs with bfloat16 units; the
temporaries shrink either way.

Run: ``python benchmarks/bench_precision.py [--quick] [--device] [--json out.json]``
(without ``--device`` JAX is pinned to the CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

POLICIES = ("float32", "mixed_bfloat16")


def cases(quick: bool) -> dict:
    import jnn

    mlp = jnn.serial(
        jnn.Dense(1024, activation="relu"), jnn.Dense(1024, activation="relu"), jnn.Dense(10)
    )
    cnn = jnn.serial(
        jnn.Conv(32, (3, 3), padding="SAME", activation="relu"),
        jnn.MaxPool((2, 2)),
        jnn.Conv(64, (3, 3), padding="SAME", activation="relu"),
        jnn.MaxPool((2, 2)),
        jnn.Flatten(),
        jnn.Dense(128, activation="relu"),
        jnn.Dense(10),
    )
    batch = 64 if quick else 256
    return {
        "mlp": (mlp, (batch, 784)),
        "cnn": (cnn, (batch, 28, 28, 1)),
    }


def measure(model, shape, policy: str, key) -> dict:
    import jax
    import numpy as np

    import jnn

    _, params = model.init(key, (-1, *shape[1:]))
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype(np.float32)
    y = rng.integers(0, 10, size=shape[0]).astype(np.int32)
    step = jnn.make_train_step(model, "cross_entropy", "adam", policy=policy, donate=False)
    state = jnn.TrainState.create(params, "adam", key=jax.random.key(1), policy=policy)
    batch = (jax.device_put(x), jax.device_put(y))
    compiled = step.lower(state, batch).compile()
    mem = compiled.memory_analysis()
    memory = {}
    if mem is not None:
        memory = {
            "temp_bytes": int(mem.temp_size_in_bytes),
            "total_bytes": int(
                mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
                - mem.alias_size_in_bytes
            ),
        }  # fmt: skip
    return {"run": compiled, "state": state, "batch": batch, **memory}


def time_steps(entry: dict, steps: int) -> float:
    import jax

    run, state, batch = entry["run"], entry["state"], entry["batch"]
    start = time.perf_counter()
    for _ in range(steps):
        state, logs = run(state, batch)
    jax.block_until_ready((state, logs))
    return (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small batches, few rounds")
    parser.add_argument("--device", action="store_true", help="use the default device")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--json", default="", help="write the results there")
    args = parser.parse_args(argv)
    if not args.device:
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    steps = args.steps or (5 if args.quick else 20)
    rounds = args.rounds or (3 if args.quick else 5)
    results: dict = {"device": str(jax.devices()[0].device_kind), "steps": steps,
                     "rounds": rounds, "cases": {}}  # fmt: skip
    for name, (model, shape) in cases(args.quick).items():
        entries = {p: measure(model, shape, p, jax.random.key(0)) for p in POLICIES}
        times: dict[str, list[float]] = {p: [] for p in POLICIES}
        for p in POLICIES:
            time_steps(entries[p], 2)  # warm-up
        for _ in range(rounds):  # interleaved: a load spike hits both policies alike
            for p in POLICIES:
                times[p].append(time_steps(entries[p], steps))
        row = {}
        for p in POLICIES:
            row[p] = {
                "step_ms": 1e3 * statistics.median(times[p]),
                "step_ms_range": [1e3 * min(times[p]), 1e3 * max(times[p])],
                **{k: entries[p][k] for k in ("temp_bytes", "total_bytes") if k in entries[p]},
            }
        f32, bf16 = row["float32"], row["mixed_bfloat16"]
        row["time_ratio_bf16_over_f32"] = bf16["step_ms"] / f32["step_ms"]
        if f32.get("total_bytes"):
            row["memory_ratio_bf16_over_f32"] = bf16["total_bytes"] / f32["total_bytes"]
        results["cases"][name] = {"batch_shape": list(shape), **row}
    print(f"device: {results['device']}  ({steps} steps x {rounds} interleaved rounds)")
    print(f"{'case':5s} {'policy':15s} {'step ms':>9s} {'temp MB':>9s} {'total MB':>9s}")
    for name, row in results["cases"].items():
        for p in POLICIES:
            r = row[p]
            print(
                f"{name:5s} {p:15s} {r['step_ms']:9.2f} {r.get('temp_bytes', 0) / 1e6:9.2f} "
                f"{r.get('total_bytes', 0) / 1e6:9.2f}"
            )
        print(
            f"{name:5s} bf16/f32: time x{row['time_ratio_bf16_over_f32']:.2f}, "
            f"compiled memory x{row.get('memory_ratio_bf16_over_f32', float('nan')):.2f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    if __package__ in (None, ""):
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
