"""Benchmark: 64 runs of the seed network, four ways.

1. ``jnn.experiments.sweep``: the 64 runs vmapped in one compiled program
   (64 seeds; and 8 learning rates x 8 seeds through ``inject_hyperparams``);
2. 64 sequential ``jnn.fit`` calls (compiled epoch reused across calls);
3. a handwritten ``jax.vmap`` + ``lax.scan`` loop doing the same work
   (on-device shuffle with ``jax.random.permutation``, padded and masked
   batches, Adam, loss tracking);
4. the same loop without a shuffle: every run in one fixed order, batches
   sliced, nothing gathered. The machine's limit for this work.

Data: scikit-learn's breast cancer (569 examples, the 10 "mean" features,
standardized); seed network 10-10-10-1; batch 32 (18 steps per epoch).
``--rows N`` tiles the data to N rows (e.g. 32768, where the shuffle's cost shows).
Times exclude compilation (each method is warmed up once), best of 5 rounds
in which the methods take turns; steps/s counts
training steps of all runs together. Targets: sweep >= 0.85x the limit (4),
>= 0.9x the handwritten loop (3), and >= 20x sequential fits.

Run: ``python benchmarks/bench_sweep.py [--epochs 20] [--rounds 5] [--rows N]``
"""

import argparse
import gc
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_breast_cancer

import jnn

RUNS, BATCH = 64, 32


def data(rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    d = load_breast_cancer()
    x = d.data[:, :10].astype(np.float32)
    x = (x - x.mean(0)) / x.std(0)
    y = d.target.astype(np.float32).reshape(-1, 1)
    if rows is not None:  # tiled: the same examples, repeated
        idx = np.arange(rows) % x.shape[0]
        x, y = x[idx], y[idx]
    return x, y


def seed_network() -> jnn.Layer:
    return jnn.serial(
        jnn.Dense(10, activation="relu"),
        jnn.Dense(10, activation="relu"),
        jnn.Dense(1, activation="sigmoid"),
    )


def handwritten(model, tx, x, y, epochs, shuffle=True):
    """vmap over seeds of: init, then lax.scan over epochs of a lax.scan over batches
    (``shuffle=False``: the examples in order, sliced: the limit)."""
    n = x.shape[0]
    num_batches = math.ceil(n / BATCH)
    pad = num_batches * BATCH - n

    def loss_fn(params, xb, yb, wb):
        return jnn.losses.bce(model.apply(params, xb), yb, weights=wb)

    def run(seed):
        init_key, key = jax.random.split(jax.random.key(seed))
        _, params = model.init(init_key, (-1, x.shape[1]))

        def epoch(carry, _):
            params, opt_state, key = carry
            key, perm_key = jax.random.split(key)
            w = (jnp.arange(n + pad) < n).astype(jnp.float32).reshape(num_batches, BATCH)
            if shuffle:
                order = jax.random.permutation(perm_key, n)
                idx = jnp.concatenate([order, jnp.zeros(pad, jnp.int32)])
                xs = x[idx].reshape(num_batches, BATCH, -1)
                ys = y[idx].reshape(num_batches, BATCH, -1)
            else:
                xs = jnp.concatenate([x, x[:pad]]).reshape(num_batches, BATCH, -1)
                ys = jnp.concatenate([y, y[:pad]]).reshape(num_batches, BATCH, -1)

            def step(carry, batch):
                params, opt_state, total = carry
                loss, grads = jax.value_and_grad(loss_fn)(params, *batch)
                updates, opt_state = tx.update(grads, opt_state, params)
                return (optax.apply_updates(params, updates), opt_state, total + loss), None

            (params, opt_state, total), _ = jax.lax.scan(
                step, (params, opt_state, 0.0), (xs, ys, w)
            )
            return (params, opt_state, key), total / num_batches

        (params, _, _), losses = jax.lax.scan(
            epoch, (params, tx.init(params), key), None, length=epochs
        )
        return params, losses

    return jax.jit(jax.vmap(run))


def timed(methods: dict, rounds: int) -> dict[str, float]:
    """Best-of-``rounds`` seconds per method, after one warm-up (compiling) call each.

    Methods take turns within each round, so a noisy, shared machine slows them alike.
    """
    for fn in methods.values():
        jax.block_until_ready(jax.tree.leaves(fn()))
    best = dict.fromkeys(methods, math.inf)
    for _ in range(rounds):
        for name, fn in methods.items():
            gc.collect()  # every method starts from the same garbage-collector state
            start = time.perf_counter()
            jax.block_until_ready(jax.tree.leaves(fn()))
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rows", type=int, default=None, help="tile the data to N rows")
    args = parser.parse_args()
    x, y = data(args.rows)
    model, tx = seed_network(), optax.adam(1e-2)
    steps = RUNS * args.epochs * math.ceil(x.shape[0] / BATCH)
    common = dict(loss="bce", epochs=args.epochs, batch_size=BATCH, verbose=0)
    factory = optax.adam  # learning_rate is its first keyword
    lrs = np.logspace(-3, -1, 8).tolist()

    xs = jnp.asarray(x), jnp.asarray(y)
    loop = handwritten(model, tx, *xs, args.epochs)
    limit = handwritten(model, tx, *xs, args.epochs, shuffle=False)
    inits = [jnn.experiments.run_keys(s) for s in range(RUNS)]
    params = [model.init(k, (-1, 10))[1] for k, _ in inits]

    def sequential():
        return [
            jnn.fit(model, p, (x, y), optimizer=tx, key=k, **common).params
            for p, (_, k) in zip(params, inits, strict=True)
        ]

    def sweep_lr():
        hp = {"learning_rate": lrs}
        return jnn.experiments.sweep(
            model, (x, y), optimizer=factory, hparams=hp, seeds=8, **common
        ).params

    results = timed(
        {
            "sweep (64 seeds)": lambda: (
                jnn.experiments.sweep(model, (x, y), optimizer=tx, seeds=RUNS, **common).params
            ),
            "sweep (8 lr x 8 seeds)": sweep_lr,
            "handwritten vmap + lax.scan": lambda: loop(jnp.arange(RUNS)),
            "handwritten, no shuffle (limit)": lambda: limit(jnp.arange(RUNS)),
            f"{RUNS} sequential jnn.fit": sequential,
        },
        rounds=args.rounds,
    )
    seq, hand = results[f"{RUNS} sequential jnn.fit"], results["handwritten vmap + lax.scan"]
    lim = results["handwritten, no shuffle (limit)"]
    print(f"{RUNS} runs x {args.epochs} epochs x {math.ceil(x.shape[0] / BATCH)} steps = {steps}")
    header = ("method", "seconds", "steps/s", "vs sequential", "vs handwritten", "vs limit")
    print(f"{header[0]:<32} {header[1]:>9} {header[2]:>12} {header[3]:>14} {header[4]:>15}"
          f" {header[5]:>9}")  # fmt: skip
    for name, sec in results.items():
        print(
            f"{name:<32} {sec:>9.3f} {steps / sec:>12,.0f} {seq / sec:>13.1f}x "
            f"{hand / sec:>14.2f}x {lim / sec:>8.2f}x"
        )
    sweep = results["sweep (64 seeds)"]
    print(
        f"targets: sweep >= 0.85x the limit: {lim / sweep:.2f}x "
        f"({'met' if lim / sweep >= 0.85 else 'NOT met'}); sweep >= 0.9x handwritten: "
        f"{hand / sweep:.2f}x ({'met' if hand / sweep >= 0.9 else 'NOT met'}); "
        f"sweep >= 20x sequential: {seq / sweep:.1f}x "
        f"({'met' if seq / sweep >= 20 else 'NOT met'})"
    )
    print(f"devices: {jax.devices()}")


if __name__ == "__main__":
    main()
