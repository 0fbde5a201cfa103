"""Benchmark: what PBT's exploit/explore step adds to an epoch of 64 runs.

The seed network (10-10-10-1) on scikit-learn's breast cancer data (the 10
"mean" features, standardized; 455 train, 114 validation examples), Adam with
the learning rate drawn from ``LogUniform(1e-4, 0.3)``: 64 settings trained
``--epochs`` epochs by ``jnn.experiments.sweep``

1. plain: every run to the end (one compiled program);
2. PBT with ``interval=1``: an exploit/explore step after every epoch (rank,
   gather params and Adam state on the run axis, perturb or resample): the
   worst case; a longer interval divides the cost;
3. PBT with ``interval=epochs - 1``: the same program shape with one exploit step.

The cost of one step in the program is ``(t2 - t3) / (epochs - 2)``, reported
as a fraction of an epoch of (3); it includes the per-interval loop structure
(an outer scan over intervals, an inner scan per interval, logs stacked). The
exploit/explore step alone (jitted, on the 64 runs' state, dispatch included)
is timed too; (2) over (1) is shown too (it also compares two program
shapes: scan over vmapped blocks vs vmap over one scan). All are full ``sweep``
calls after a warm-up call (compilation excluded), best of ``--rounds`` rounds
in which they take turns. Target: PBT's step adds <= 5% to an epoch.

Run: ``python benchmarks/bench_search.py [--epochs 20] [--rounds 5]``
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

import jnn
from jnn import experiments as ex

RUNS = 64


def exploit_alone(model, features: int, repeats: int = 200, rounds: int = 5) -> float:
    """Seconds per call of the jitted exploit/explore step on a 64-run Adam state."""
    from jnn.experiments._schedule import _exploit  # the very step the PBT program runs

    smodel = jnn.stateful(model)
    tx = optax.inject_hyperparams(lambda learning_rate: optax.adam(learning_rate))

    def init(key, lr):
        _, params, model_state = smodel.init(key, (-1, features))
        opt_state = tx(learning_rate=lr).init(params)
        return jnn.TrainState(params, opt_state, jnp.zeros((), jnp.int32), key, model_state)

    keys = jax.random.split(jax.random.key(0), RUNS)
    state = jax.vmap(init)(keys, jnp.geomspace(1e-4, 0.3, RUNS))
    score = jnp.asarray(np.random.default_rng(0).normal(size=RUNS))
    sched, spaces = ex.PBT(interval=1), (("learning_rate", ex.LogUniform(1e-4, 0.3)),)
    step = jax.jit(lambda s, k: _exploit(s, score, k, sched, spaces, RUNS))
    jax.block_until_ready(step(state, jax.random.key(0)))
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for i in range(repeats):
            out = step(state, jax.random.key(i))
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - start) / repeats)
    return best


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
    every, once = ex.PBT(interval=1), ex.PBT(interval=epochs - 1)
    kw = dict(
        loss="bce", optimizer="adam", hparams=space, num_samples=RUNS, epochs=epochs,
        batch_size=32, validation_data=(x_val, y_val), key=jax.random.key(0),
    )  # fmt: skip
    methods = {
        "plain": lambda: ex.sweep(model, (x_tr, y_tr), **kw),
        "pbt": lambda: ex.sweep(model, (x_tr, y_tr), schedule=every, **kw),
        "pbt_once": lambda: ex.sweep(model, (x_tr, y_tr), schedule=once, **kw),
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
    alone = exploit_alone(model, x_tr.shape[1])
    epoch = best["pbt_once"] / epochs
    step = (best["pbt"] - best["pbt_once"]) / (epochs - 2)
    out = {
        "runs": RUNS, "epochs": epochs,
        "plain_ms_per_epoch": 1e3 * best["plain"] / epochs,
        "pbt_ms_per_epoch": 1e3 * best["pbt"] / epochs,
        "pbt_once_ms_per_epoch": 1e3 * epoch,
        "exploit_step_ms": 1e3 * step,
        "step_over_epoch": step / epoch,
        "exploit_alone_ms": 1e3 * alone,
        "alone_over_epoch": alone / epoch,
    }  # fmt: skip
    if verbose:
        print(
            f"{RUNS} runs x {epochs} epochs, ms per epoch: plain {out['plain_ms_per_epoch']:.2f}, "
            f"PBT exploiting every epoch {out['pbt_ms_per_epoch']:.2f}, once "
            f"{out['pbt_once_ms_per_epoch']:.2f}.\nOne exploit/explore step: "
            f"{out['exploit_step_ms']:.3f} ms = {100 * step / epoch:+.1f}% of an epoch "
            f"(target <= +5%); the step alone {1e3 * alone:.3f} ms = {100 * alone / epoch:+.1f}%; "
            f"every-epoch PBT vs plain: {100 * (best['pbt'] / best['plain'] - 1):+.1f}%"
        )
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    main(args.epochs, args.rounds)
