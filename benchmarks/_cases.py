"""The benchmark cases: their sizes (full and ``--quick``) and their synthetic data."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class MLPCase:
    """A dense network trained with Adam.

    Attributes:
      name: the case's id in tables and JSON.
      sizes: layer widths, input first (hidden layers use relu).
      batch: examples per step.
      rows: training examples (a multiple of ``batch``: no partial batch, so
        every implementation does the same steps).
      task: ``"binary"`` (sigmoid output, BCE, labels (N, 1) float) or
        ``"multiclass"`` (logits, softmax cross-entropy, integer labels (N,)).
      epochs: epochs per timed call.
      runs: networks trained at once (the vmapped sweep case); 1 otherwise.
      learning_rate: Adam's.
    """

    name: str
    sizes: tuple[int, ...]
    batch: int
    rows: int
    task: str
    epochs: int = 1
    runs: int = 1
    learning_rate: float = 1e-3

    @property
    def steps_per_epoch(self) -> int:
        return self.rows // self.batch

    @property
    def loop_steps(self) -> int:
        """Steps per timed call of a per-step Python loop: its rate does not depend on
        the epoch length, so slow loops time at most 512 steps (a partial epoch)."""
        return min(self.steps_per_epoch * self.epochs, 512)


def cases(quick: bool, tiny: bool = False) -> dict[str, MLPCase]:
    """The MLP-shaped cases at full size, ``--quick`` size, or ``--tiny`` (smoke test) size."""
    if tiny:
        seed_rows, mlp_rows, sweep_rows, epochs, sweep_runs = 1024, 512, 256, 1, 8
    elif quick:
        seed_rows, mlp_rows, sweep_rows, epochs, sweep_runs = 8192, 2048, 4096, 1, 64
    else:
        seed_rows, mlp_rows, sweep_rows, epochs, sweep_runs = 32768, 8192, 32768, 2, 64
    return {
        "seed": MLPCase("seed", (10, 10, 10, 1), 32, seed_rows, "binary", epochs=epochs),
        "mlp": MLPCase("mlp", (784, 1024, 1024, 10), 256, mlp_rows, "multiclass", epochs=1),
        "sweep": MLPCase(
            "sweep", (10, 10, 10, 1), 32, sweep_rows, "binary", epochs=1, runs=sweep_runs
        ),
    }


def mlp_data(case: MLPCase, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic float32 features and labels a network can learn (a random linear rule)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(case.rows, case.sizes[0])).astype(np.float32)
    w = rng.normal(size=(case.sizes[0], max(case.sizes[-1], 1))).astype(np.float32)
    scores = x @ w
    if case.task == "binary":
        y = (scores[:, :1] > 0).astype(np.float32)
    else:
        y = np.argmax(scores, axis=1).astype(np.int32)
    return x, y


def digits_data() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits as (N, 8, 8, 1) float32 in [0, 1] and int32 labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]
    return x, d.target.astype(np.int32)
