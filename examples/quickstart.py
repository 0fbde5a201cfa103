"""The tutorial's tf.keras network, the jnn way, on real data.

Trains the seed network (10-10-10-1, relu, relu, sigmoid) with Adam and binary
cross-entropy on scikit-learn's breast-cancer data (its 10 "mean" features),
reports held-out accuracy and saves the training curves as a PNG.

    python examples/quickstart.py [--epochs 60] [--out artifacts/quickstart.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

import jnn


# --8<-- [start:load_data]
def load_data(seed: int = 0):
    """Standardized 10 "mean" features, 0/1 labels of shape (N, 1), a stratified split."""
    data = load_breast_cancer()
    x = data.data[:, :10].astype(np.float32)  # mean radius ... mean fractal dimension
    y = data.target.astype(np.float32).reshape(-1, 1)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=seed, stratify=y
    )
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    return (x_train - mean) / std, (x_test - mean) / std, y_train, y_test


# --8<-- [end:load_data]


def main(epochs: int = 60, out: str = "artifacts/quickstart.png", verbose: int = 2) -> float:
    x_train, x_test, y_train, y_test = load_data()

    # 1. Define the network.
    model = jnn.serial(
        jnn.Dense(10, activation="relu"),
        jnn.Dense(10, activation="relu"),
        jnn.Dense(1, activation="sigmoid"),
    )
    key, init_key = jax.random.split(jax.random.key(0))
    _, params = model.init(init_key, (-1, 10))

    # 2-3. "Compile" (Adam + binary cross-entropy + accuracy) and fit.
    result = jnn.fit(
        model,
        params,
        (x_train, y_train),
        loss="bce",
        optimizer="adam",
        learning_rate=3e-3,
        epochs=epochs,
        batch_size=32,
        metrics=["accuracy"],
        validation_data=(x_test, y_test),
        key=key,
        verbose=verbose,
    )

    # 4. Predict.
    probs = jnn.predict(model, result.params, x_test)
    accuracy = float(((probs > 0.5) == y_test).mean())
    print(f"held-out accuracy: {accuracy:.4f} on {len(x_test)} examples")
    save_curves(result.history, out)
    return accuracy


def save_curves(history: dict[str, list[float]], out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = range(1, len(history["loss"]) + 1)
    for name, ax in (("loss", ax_loss), ("accuracy", ax_acc)):
        ax.plot(epochs, history[name], label=f"train {name}")
        ax.plot(epochs, history[f"val_{name}"], label=f"held-out {name}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.legend()
    fig.suptitle("jnn quickstart: breast cancer, 10-10-10-1, Adam + BCE")
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    print(f"training curves saved to {out}")


if __name__ == "__main__":
    jnn.compile_cache()  # reuse compilations across runs (JNN_COMPILE_CACHE=off: don't)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--out", default="artifacts/quickstart.png")
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args()
    main(args.epochs, args.out, args.verbose)
