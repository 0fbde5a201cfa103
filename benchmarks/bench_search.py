"""Benchmark: what PBT's exploit/explore step adds to an epoch of 64 runs.

The seed network (10-10-10-1) on scikit-learn's breast cancer data (the 10
"mean" features, standardized; 455 train, 114 validation examples), Adam with
the learning rate drawn from ``LogUniform(1e-4, 0.3)``: 64 settings trained
``--epochs`` epochs by ``jnn.experiments.sweep``

1. plain: every run to the end (one compiled program);
2. PBT with ``interval=1``: the same program plus an exploit/explore step after
   every epoch (rank, gather params and Adam state on the run axis, perturb or
   resample) -- the worst case; a longer interval divides the cost.

Both are full ``sweep`` calls after a warm-up call (compilation excluded), best
of ``--rounds`` rounds in which they take turns. Target: PBT's step adds <= 5% to
an epoch.

Run: ``python benchmarks/bench_search.py [--epochs 20] [--rounds 5]``
"""

import argparse
import time

import jax
import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

import jnn
from jnn import experiments as ex

RUNS = 64


def main(epochs: int = 20, rounds: int = 5, verbose: bool = True) -> dict:
    d = load_breast_cancer()
    x = d.data[:, :10].astype(np.float32)
    x = (x - x.mean(0)) / x.std(0)
    y = d.target.astype(np.float32).reshape(-1, 1)
    x_tr, x_val, y_tr, y_val = train_test_split(x, y, test_size=0.2, random_state=0)
    model = jnn.serial(
        jnn.Dense(10, activation="relu"),
        jnn.Dense(10, activation="relu"),
        jnn.Dense(1, activation="sigmoid"),
    )
    space = {"learning_rate": ex.LogUniform(1e-4, 0.3)}
    pbt = ex.PBT(interval=1)
    kw = dict(
        loss="bce", optimizer="adam", hparams=space, num_samples=RUNS, epochs=epochs,
        batch_size=32, validation_data=(x_val, y_val), key=jax.random.key(0),
    )  # fmt: skip
    methods = {
        "plain": lambda: ex.sweep(model, (x_tr, y_tr), **kw),
        "pbt": lambda: ex.sweep(model, (x_tr, y_tr), schedule=pbt, **kw),
    }
    for fn in methods.values():  # warm-up: compile
        fn()
    best = dict.fromkeys(methods, float("inf"))
    for _ in range(rounds):
        for name, fn in methods.items():
            start = time.perf_counter()
            res = fn()
            jax.block_until_ready(res.params)
            best[name] = min(best[name], time.perf_counter() - start)
    overhead = best["pbt"] / best["plain"] - 1.0
    out = {
        "runs": RUNS, "epochs": epochs,
        "plain_ms_per_epoch": 1e3 * best["plain"] / epochs,
        "pbt_ms_per_epoch": 1e3 * best["pbt"] / epochs,
        "pbt_overhead": overhead,
    }  # fmt: skip
    if verbose:
        print(
            f"{RUNS} runs x {epochs} epochs: plain {out['plain_ms_per_epoch']:.1f} ms/epoch, "
            f"PBT (exploit every epoch) {out['pbt_ms_per_epoch']:.1f} ms/epoch: "
            f"{100 * overhead:+.1f}% per epoch (target <= +5%)"
        )
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    main(args.epochs, args.rounds)
