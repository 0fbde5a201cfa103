"""Data folds of a sweep as per-example weights: k-fold masks and bootstrap counts."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from jnn._data import (
    check_positive_int,
    is_int,
)

# --------------------------------------------------------------------------- folds


class KFold(NamedTuple):
    """k-fold cross-validation: ``k`` runs, each holding out one fold for validation.

    Pass it as ``folds=`` to :func:`sweep` (``folds=k`` is ``KFold(k)``); the
    folds are those of :func:`kfold_weights` with the same arguments.

    Attributes:
      k: the number of folds (and runs per seed and setting), at least 2.
      seed: seeds the shuffle that assigns examples to folds.
      shuffle: False assigns example ``i`` to fold ``i % k``.

    Example:
      >>> from jnn.experiments import KFold, kfold_weights
      >>> folds = KFold(3, shuffle=False)
      >>> train, val = kfold_weights(6, **folds._asdict())
      >>> val.astype(int).tolist()
      [[1, 0, 0, 1, 0, 0], [0, 1, 0, 0, 1, 0], [0, 0, 1, 0, 0, 1]]
    """

    k: int
    seed: int = 0
    shuffle: bool = True


class Bootstrap(NamedTuple):
    """``n`` bootstrap resamples (as example counts), validated on the out-of-bag examples.

    Pass it as ``folds=`` to :func:`sweep`; the resamples are those of
    :func:`bootstrap_weights` with the same arguments.

    Attributes:
      n: the number of resamples (runs per seed and setting).
      seed: seeds the resampling.

    Example:
      >>> from jnn.experiments import Bootstrap, bootstrap_weights
      >>> counts, oob = bootstrap_weights(8, **Bootstrap(4, seed=1)._asdict())
      >>> counts.shape, oob.shape, counts.sum(axis=1).tolist()
      ((4, 8), (4, 8), [8.0, 8.0, 8.0, 8.0])
    """

    n: int
    seed: int = 0


def kfold_weights(
    num_examples: int, k: int, *, seed: int = 0, shuffle: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation masks of k-fold cross-validation, ``(k, num_examples)`` each.

    Every example is in exactly one validation fold; fold sizes differ by at most one.

    Args:
      num_examples: the number of examples ``N``.
      k: the number of folds, ``2 <= k <= N``.
      seed: seeds the permutation that assigns examples to folds.
      shuffle: False assigns example ``i`` to fold ``i % k``.

    Returns:
      ``(train, val)``, float32 arrays ``(k, N)``: row ``j`` of ``val`` is 1 on
      fold ``j`` and 0 elsewhere, and ``train = 1 - val``.

    Raises:
      ValueError: if ``num_examples`` or ``k`` is not a positive int, or ``k``
        is outside ``[2, N]``.

    Example:
      >>> from jnn.experiments import kfold_weights
      >>> train, val = kfold_weights(5, 2, shuffle=False)
      >>> val.astype(int).tolist(), (train + val).min()
      ([[1, 0, 1, 0, 1], [0, 1, 0, 1, 0]], np.float32(1.0))
    """
    n = check_positive_int("kfold_weights", "num_examples", num_examples)
    k = check_positive_int("kfold_weights", "k", k)
    if not 2 <= k <= n:
        raise ValueError(f"kfold_weights: k must be in [2, {n}] for {n} examples, got {k}.")
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    fold_of = np.empty(n, np.int64)
    fold_of[order] = np.arange(n) % k
    val = (fold_of[None, :] == np.arange(k)[:, None]).astype(np.float32)
    return 1.0 - val, val


def bootstrap_weights(num_examples: int, n: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Resample counts ``(n, num_examples)`` and out-of-bag validation masks.

    Each resample draws ``num_examples`` examples with replacement; an
    example's count is its training weight in that run.

    Args:
      num_examples: the number of examples ``N``.
      n: the number of resamples.
      seed: seeds the draws.

    Returns:
      ``(counts, oob)``, float32 arrays ``(n, N)``: how often each example was
      drawn (each row sums to ``N``), and 1 where it was never drawn (out of
      bag, used for validation).

    Raises:
      ValueError: if ``num_examples`` or ``n`` is not a positive int.

    Example:
      >>> from jnn.experiments import bootstrap_weights
      >>> counts, oob = bootstrap_weights(10, 3)
      >>> counts.sum(axis=1).tolist(), bool(((counts == 0) == (oob == 1)).all())
      ([10.0, 10.0, 10.0], True)
    """
    m = check_positive_int("bootstrap_weights", "num_examples", num_examples)
    n = check_positive_int("bootstrap_weights", "n", n)
    rng = np.random.default_rng(seed)
    counts = np.stack([np.bincount(rng.integers(0, m, m), minlength=m) for _ in range(n)])
    return counts.astype(np.float32), (counts == 0).astype(np.float32)


def _fold_weights(folds: Any, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    if folds is None:
        return None
    if is_int(folds):
        folds = KFold(int(folds))
    if isinstance(folds, KFold):
        return kfold_weights(n, folds.k, seed=folds.seed, shuffle=folds.shuffle)
    if isinstance(folds, Bootstrap):
        return bootstrap_weights(n, folds.n, seed=folds.seed)
    raise TypeError(f"sweep: folds must be an int k, KFold or Bootstrap, got {folds!r}.")
