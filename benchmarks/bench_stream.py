"""Streaming vs the fused array epoch, on the seed network (10-10-10-1).

The same examples are trained on as (a) one fused, compiled epoch over arrays on
the device and (b) a Python iterator of numpy batches, fed ``steps_per_call``
batches per compiled ``lax.scan`` call with the next group prefetched. Each
configuration is warmed up (compiled) by one epoch, then timed over several.

Run:  python benchmarks/bench_stream.py [--examples 65536] [--batch-size 32] [--epochs 5]
Target: with steps_per_call >= 64, at least 0.7x the fused epoch's examples/s.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

import jnn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=65536)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--ks", default="1,8,64,512")
    parser.add_argument("--repeats", type=int, default=3, help="timed fits per configuration")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.examples, 10)).astype(np.float32)
    y = (x[:, :3].sum(1, keepdims=True) > 0).astype(np.float32)
    model = jnn.serial(
        jnn.Dense(10, activation="relu"),
        jnn.Dense(10, activation="relu"),
        jnn.Dense(1, activation="sigmoid"),
    )
    _, params = model.init(jax.random.key(0), (-1, 10))
    bsz = args.batch_size

    def batches():  # a host-side numpy batch iterator, as a loader would give
        for i in range(0, args.examples, bsz):
            yield x[i : i + bsz], y[i : i + bsz]

    common = dict(loss="bce", optimizer="sgd", learning_rate=0.1, key=jax.random.key(1), verbose=0)

    def timed(data, **kw) -> float:
        """Examples/s, the median of ``--repeats`` timed fits after a compiling one."""
        jnn.fit(model, params, data, epochs=1, batch_size=bsz, **common, **kw)  # compile
        rates = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            res = jnn.fit(model, params, data, epochs=args.epochs, batch_size=bsz, **common, **kw)
            jax.block_until_ready(res.params)
            rates.append(args.examples * args.epochs / (time.perf_counter() - start))
        return float(np.median(rates))

    fused = timed((x, y), shuffle=False)
    rows = [("fused array epoch", fused)]
    for k in (int(v) for v in args.ks.split(",")):
        rows.append((f"stream, steps_per_call={k}", timed(batches, steps_per_call=k)))

    print(
        f"seed network 10-10-10-1, {args.examples} examples, batch {bsz}, {args.epochs} epochs, "
        f"median of {args.repeats} fits"
    )
    print(f"{'configuration':<28} {'examples/s':>12} {'vs fused':>9}")
    for name, rate in rows:
        print(f"{name:<28} {rate:>12,.0f} {rate / fused:>8.2f}x")
    best = max(rate for name, rate in rows[1:] if int(name.rsplit("=", 1)[1]) >= 64) / fused
    verdict = "met" if best >= 0.7 else "MISSED"
    print(f"target: steps_per_call >= 64 at >= 0.7x the fused epoch: {best:.2f}x ({verdict})")


if __name__ == "__main__":
    main()
