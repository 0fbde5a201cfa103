"""Per-epoch cost of fit(log_every=k) (the per-step loss/lr trace in the scan carry)
and of stateful metrics (AUC, F1) against a plain fit.

Run: python benchmarks/log_every.py
Prints the median seconds per epoch of each setting (after a compiling fit), with the
settings taking turns in rounds.
"""

import statistics
import time

import jax
import numpy as np
import optax

import jnn


def main(n=8192, features=64, width=256, batch_size=64, epochs=2, rounds=9):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, features)).astype("float32")
    y = (x.sum(1, keepdims=True) > 0).astype("float32")
    model = jnn.serial(
        jnn.Dense(width, activation="relu"),
        jnn.Dense(width, activation="relu"),
        jnn.Dense(1),
    )
    _, params = model.init(jax.random.key(0), (-1, features))
    tx = optax.inject_hyperparams(optax.adam)(learning_rate=optax.cosine_decay_schedule(1e-3, 999))
    settings = {
        "plain": {},
        "log_every=1": {"log_every": 1},
        "log_every=10": {"log_every": 10},
        "auc+f1": {"metrics": ["auc", "f1"]},
        "accuracy": {"metrics": ["accuracy"]},
    }

    def fit(kw):
        res = jnn.fit(model, params, (x, y), loss="bce_with_logits", optimizer=tx, epochs=epochs,
                      batch_size=batch_size, key=jax.random.key(1), verbose=0, **kw)  # fmt: skip
        jax.block_until_ready(res.params)

    for kw in settings.values():
        fit(kw)  # compile
    # Rounds take turns over the settings, so a change of machine load hits all of them alike.
    times = {name: [] for name in settings}
    for _ in range(rounds):
        for name, kw in settings.items():
            start = time.perf_counter()
            fit(kw)
            times[name].append((time.perf_counter() - start) / epochs)
    base = statistics.median(times["plain"])
    print(f"{'setting':<14}{'s/epoch':>10}{'vs plain':>10}   ({n // batch_size} steps/epoch, "
          f"median of {rounds} interleaved rounds)")  # fmt: skip
    for name in settings:
        t = statistics.median(times[name])
        print(f"{name:<14}{t:>10.4f}{t / base:>9.2f}x")


if __name__ == "__main__":
    main()
