"""Learning-rate sweep: 8 learning rates x 8 seeds of the seed network, as one compiled program.

The seed network (10-10-10-1, ReLU, sigmoid output) on scikit-learn's
breast-cancer data (its 10 "mean" features, standardized), trained with Adam
for every (learning rate, seed) pair at once by ``jnn.experiments.sweep``.
Prints the per-run table and the mean/std per learning rate, then saves the
sweep plot (validation loss vs learning rate, seed spread shaded) to
``artifacts/lr_sweep.png``.

Run: ``python examples/lr_sweep.py``
"""

import os
import time

import numpy as np
import optax
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

import jnn


def main(epochs: int = 30, out: str = "artifacts/lr_sweep.png", verbose: bool = True):
    """Run the sweep, print its table and summary, save the plot; return the result."""
    data = load_breast_cancer()
    x = data.data[:, :10].astype(np.float32)  # the 10 "mean ..." features
    y = data.target.astype(np.float32).reshape(-1, 1)
    x_tr, x_val, y_tr, y_val = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    mean, std = x_tr.mean(0), x_tr.std(0)
    x_tr, x_val = (x_tr - mean) / std, (x_val - mean) / std

    model = jnn.serial(
        jnn.Dense(10, activation="relu"),
        jnn.Dense(10, activation="relu"),
        jnn.Dense(1, activation="sigmoid"),
    )
    start = time.perf_counter()
    res = jnn.experiments.sweep(
        model,
        (x_tr, y_tr),
        loss="bce",
        optimizer=lambda learning_rate: optax.adam(learning_rate),
        hparams={"learning_rate": np.logspace(-4, 0.5, 8).round(6).tolist()},
        seeds=8,
        epochs=epochs,
        batch_size=32,
        metrics=["accuracy"],
        validation_data=(x_val, y_val),
    )
    seconds = time.perf_counter() - start
    if verbose:
        print(res.table)
        print()
        print("Mean and std over the 8 seeds of each learning rate:")
        print(res.summary())
        best = res.runs[res.best_index]
        print(
            f"\n{len(res.runs)} runs in {seconds:.1f}s (compile included); best run {best.index}: "
            f"learning_rate={best.hparams['learning_rate']:g}, seed={best.seed}, "
            f"val_loss={res.history['val_loss'][best.index, -1]:.4f}, "
            f"val_accuracy={res.history['val_accuracy'][best.index, -1]:.3f}"
        )
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    path = res.plot(out, x="learning_rate", metric="val_loss")
    if verbose:
        print("plot:", path)
    return res


if __name__ == "__main__":
    jnn.compile_cache()  # reuse compilations across runs (JNN_COMPILE_CACHE=off: don't)
    main()
