"""Per-epoch cost of fit's NaN/Inf guard (on_nan="raise" vs None).

Run: python benchmarks/nan_guard.py
Prints the median seconds per epoch of each setting (after a compiling fit), with the
settings taking turns in rounds.
"""

import statistics
import time

import jax
import numpy as np

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
    settings = (None, "raise", "skip_batch")

    def fit(on_nan):
        res = jnn.fit(model, params, (x, y), loss="bce_with_logits", epochs=epochs,
                      batch_size=batch_size, key=jax.random.key(1), verbose=0,
                      on_nan=on_nan)  # fmt: skip
        jax.block_until_ready(res.params)

    for on_nan in settings:
        fit(on_nan)  # compile
    # Rounds take turns over the settings, so a change of machine load hits all of them alike.
    times = {on_nan: [] for on_nan in settings}
    for _ in range(rounds):
        for on_nan in settings:
            start = time.perf_counter()
            fit(on_nan)
            times[on_nan].append((time.perf_counter() - start) / epochs)
    base = statistics.median(times[None])
    print(f"{'on_nan':<12}{'s/epoch':>10}{'vs None':>10}   ({n // batch_size} steps/epoch, "
          f"median of {rounds} interleaved rounds)")  # fmt: skip
    for on_nan in settings:
        t = statistics.median(times[on_nan])
        print(f"{on_nan!s:<12}{t:>10.4f}{t / base:>9.2f}x")


if __name__ == "__main__":
    main()
