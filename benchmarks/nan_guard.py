"""Per-epoch cost of fit's NaN/Inf guard (on_nan="raise" vs None).

Run: python benchmarks/nan_guard.py
Prints median seconds per epoch (after a compile warm-up) for each setting.
"""

import statistics
import time

import jax
import numpy as np

import jnn


def main(n=8192, features=64, width=256, batch_size=64, epochs=8):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, features)).astype("float32")
    y = (x.sum(1, keepdims=True) > 0).astype("float32")
    model = jnn.serial(
        jnn.Dense(width, activation="relu"),
        jnn.Dense(width, activation="relu"),
        jnn.Dense(1),
    )
    _, params = model.init(jax.random.key(0), (-1, features))
    rows = []
    for on_nan in (None, "raise", "skip_batch"):
        times = []

        def timer(epoch, logs, state, times=times):
            times.append(time.perf_counter())

        jnn.fit(model, params, (x, y), loss="bce_with_logits", epochs=epochs,
                batch_size=batch_size, key=jax.random.key(1), verbose=0, on_nan=on_nan,
                callbacks=[timer])  # fmt: skip
        per_epoch = statistics.median(np.diff(times))  # epochs after the first (compile)
        rows.append((str(on_nan), per_epoch))
    base = rows[0][1]
    print(f"{'on_nan':<12}{'s/epoch':>10}{'vs None':>10}   ({n // batch_size} steps/epoch)")
    for name, t in rows:
        print(f"{name:<12}{t:>10.4f}{t / base:>9.2f}x")


if __name__ == "__main__":
    main()
