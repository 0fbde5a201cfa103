"""Regression with MSE and plain SGD on scikit-learn's diabetes data (10 features).

Compares the held-out error with a constant (mean) predictor and with
least-squares linear regression, and saves the training curves.

    python examples/regression.py [--epochs 200] [--out artifacts/regression.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import numpy as np
from sklearn.datasets import load_diabetes
from sklearn.model_selection import train_test_split

import jnn


def main(epochs: int = 200, out: str = "artifacts/regression.png", verbose: int = 0) -> dict:
    data = load_diabetes()
    x = data.data.astype(np.float32)
    y = data.target.astype(np.float32).reshape(-1, 1)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0)
    x_mean, x_std = x_train.mean(0), x_train.std(0)
    y_mean, y_std = y_train.mean(), y_train.std()
    x_train, x_test = (x_train - x_mean) / x_std, (x_test - x_mean) / x_std
    t_train, t_test = (y_train - y_mean) / y_std, (y_test - y_mean) / y_std

    model = jnn.serial(jnn.Dense(16, activation="relu"), jnn.Dense(1))
    key, init_key = jax.random.split(jax.random.key(0))
    _, params = model.init(init_key, (-1, 10))
    result = jnn.fit(
        model,
        params,
        (x_train, t_train),
        loss="mse",
        optimizer="sgd",
        learning_rate=0.01,
        epochs=epochs,
        batch_size=32,
        validation_data=(x_test, t_test),
        key=key,
        verbose=verbose,
    )
    pred = jnn.predict(model, result.params, x_test) * y_std + y_mean
    mse = float(np.mean((pred - y_test) ** 2))
    baseline = float(np.mean((y_train.mean() - y_test) ** 2))
    design = np.c_[x_train, np.ones(len(x_train))]
    coef, *_ = np.linalg.lstsq(design, y_train, rcond=None)
    linear = float(np.mean((np.c_[x_test, np.ones(len(x_test))] @ coef - y_test) ** 2))
    print(
        f"held-out MSE: jnn {mse:.0f}, least squares {linear:.0f}, predict-the-mean {baseline:.0f}"
    )
    _plot(result.history, out)
    return {"mse": mse, "linear_mse": linear, "baseline_mse": baseline}


def _plot(history: dict[str, list[float]], out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(history["loss"], label="train MSE (standardized)")
    ax.plot(history["val_loss"], label="held-out MSE (standardized)")
    ax.set_xlabel("epoch")
    ax.set_yscale("log")
    ax.legend()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    print(f"training curves saved to {out}")


if __name__ == "__main__":
    jnn.compile_cache()  # reuse compilations across runs (JNN_COMPILE_CACHE=off: don't)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--out", default="artifacts/regression.png")
    parser.add_argument("--verbose", type=int, default=0)
    args = parser.parse_args()
    main(args.epochs, args.out, args.verbose)
