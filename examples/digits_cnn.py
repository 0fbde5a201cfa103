"""A small CNN (Conv, BatchNorm, pooling, Dropout, Dense) on scikit-learn's 8x8 digits.

Trains with ``jnn.fit`` on 80% of the 1,797 images, reports held-out accuracy
on the other 20%, and saves the training curves as a PNG::

    python examples/digits_cnn.py                       # artifacts/digits_cnn.png
    python examples/digits_cnn.py --epochs 10 --out /tmp/curve.png
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


def make_model() -> jnn.StatefulLayer:
    """Conv -> BatchNorm -> ReLU blocks with max-pooling, then Dropout and a Dense head.

    Deliberately small: XLA's CPU convolutions are slow for wide layers, and this
    model already reaches ~0.98 held-out accuracy.
    """

    def block(features: int) -> list:
        return [jnn.Conv(features, (3, 3)), jnn.BatchNorm(momentum=0.9), jnn.Relu()]

    return jnn.serial(
        *block(8),
        jnn.MaxPool((2, 2)),  # (N, 8, 8, 8) -> (N, 4, 4, 8)
        *block(16),
        jnn.Flatten(),  # (N, 256)
        jnn.Dropout(0.3),
        jnn.Dense(10),  # logits
    )


def load(seed: int = 0) -> tuple[np.ndarray, ...]:
    """Digits as (N, 8, 8, 1) floats in [0, 1], split 80/20, stratified."""
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target.astype(np.int32)
    return tuple(train_test_split(x, y, test_size=0.2, stratify=y, random_state=seed))


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="artifacts/digits_cnn.png", help="PNG path ('' = none)")
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args(argv)

    x_train, x_test, y_train, y_test = load(args.seed)
    model = make_model()
    init_key, fit_key = jax.random.split(jax.random.key(args.seed))
    _, params, model_state = model.init(init_key, (-1, 8, 8, 1))

    start = time.perf_counter()
    result = jnn.fit(
        model,
        params,
        (x_train, y_train),
        model_state=model_state,
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
    # The last epoch's validation pass ran on the final params and BatchNorm state.
    scores = {
        "accuracy": result.history["val_accuracy"][-1],
        "loss": result.history["val_loss"][-1],
    }
    print(
        f"held-out accuracy {scores['accuracy']:.4f}, loss {scores['loss']:.4f} "
        f"({len(x_test)} images; trained {args.epochs} epochs in {seconds:.1f}s)"
    )
    if args.out:
        plot(result.history, Path(args.out))
        print(f"training curves saved to {args.out}")
    return {**scores, "seconds": seconds}


def plot(history: dict[str, list[float]], path: Path) -> None:
    """Loss and accuracy per epoch, training vs held-out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    epochs = np.arange(1, len(history["loss"]) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
        ax.plot(epochs, history[key], label="train")
        ax.plot(epochs, history[f"val_{key}"], label="held-out")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("jnn: CNN on scikit-learn digits")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    jnn.compile_cache()  # reuse compilations across runs (JNN_COMPILE_CACHE=off: don't)
    main()
