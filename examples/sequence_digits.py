"""An LSTM reads scikit-learn's 8x8 digits row by row: 8 time steps of 8 features.

Each image becomes a sequence; the LSTM's last output feeds a Dense layer with
10 logits. Trains with ``jnn.fit`` on 80% of the 1,797 images, reports
held-out accuracy on the other 20% (target >= 0.95), and saves the training
curves and a few digits with their predictions as a PNG::

    python examples/sequence_digits.py                    # artifacts/sequence_digits.png
    python examples/sequence_digits.py --epochs 10 --out /tmp/seq.png
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import jnn


def make_model(hidden: int = 64) -> jnn.Layer:
    """LSTM over the rows, then a linear classifier on its last output."""
    return jnn.serial(jnn.LSTM(hidden), jnn.Dense(10))


def load(seed: int = 0) -> tuple[np.ndarray, ...]:
    """Digits as (N, 8 rows = time steps, 8 pixels = features) in [0, 1], split 80/20."""
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)  # (1797, 8, 8)
    y = digits.target.astype(np.int32)
    return tuple(train_test_split(x, y, test_size=0.2, stratify=y, random_state=seed))


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=5e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="artifacts/sequence_digits.png", help="PNG ('' = none)")
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args(argv)

    x_train, x_test, y_train, y_test = load(args.seed)
    model = make_model(args.hidden)
    init_key, fit_key = jax.random.split(jax.random.key(args.seed))
    _, params = model.init(init_key, (-1, 8, 8))
    if args.verbose:
        print(jnn.summary(model, (-1, 8, 8)))

    start = time.perf_counter()
    result = jnn.fit(
        model,
        params,
        (x_train, y_train),
        loss="cross_entropy",
        optimizer="adam",
        learning_rate=args.learning_rate,
        epochs=args.epochs,
        batch_size=args.batch_size,
        metrics=["accuracy"],
        validation_data=(x_test, y_test),
        key=fit_key,
        verbose=args.verbose,
    )
    seconds = time.perf_counter() - start
    logits = jnn.predict(model, result.params, x_test)
    accuracy = float(np.mean(np.argmax(logits, axis=-1) == y_test))
    print(
        f"held-out accuracy {accuracy:.4f} ({len(x_test)} images read row by row; "
        f"trained {args.epochs} epochs in {seconds:.1f}s)"
    )
    if args.out:
        plot(result.history, x_test, y_test, np.argmax(logits, axis=-1), Path(args.out))
        print(f"figure saved to {args.out}")
    return {"accuracy": accuracy, "seconds": seconds}


def plot(history: dict, x: np.ndarray, y: np.ndarray, pred: np.ndarray, path: Path) -> None:
    """Training curves, and held-out digits titled with prediction/truth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig = plt.figure(figsize=(10, 3.6))
    grid = fig.add_gridspec(2, 6, width_ratios=[3, 3, 1, 1, 1, 1])
    epochs = np.arange(1, len(history["loss"]) + 1)
    for col, key in enumerate(("loss", "accuracy")):
        ax = fig.add_subplot(grid[:, col])
        ax.plot(epochs, history[key], label="train")
        ax.plot(epochs, history[f"val_{key}"], label="held-out")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    wrong = np.flatnonzero(pred != y)
    shown = np.r_[wrong[:4], np.flatnonzero(pred == y)[: 8 - min(len(wrong), 4)]]
    for i, idx in enumerate(shown[:8]):
        ax = fig.add_subplot(grid[i // 4, 2 + i % 4])
        ax.imshow(x[idx], cmap="gray_r")
        ax.set_title(f"{pred[idx]} ({y[idx]})", color="C3" if pred[idx] != y[idx] else "k")
        ax.axis("off")
    fig.suptitle("jnn: LSTM over the rows of 8x8 digits (prediction (truth))")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    jnn.compile_cache()  # reuse compilations across runs (JNN_COMPILE_CACHE=off: don't)
    main()
