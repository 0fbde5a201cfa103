"""Many training runs as one compiled program: seeds x hyperparameters x data folds.

:func:`sweep` trains every run in lockstep with ``jax.vmap`` over the very
epoch function :func:`jnn.fit` compiles (shuffle, padded and masked batches,
``lax.scan``), with all epochs in one ``lax.scan``. Each run is defined by

- a seed: ``init_key, fit_key = run_keys(seed)``; the params are
  ``model.init(init_key, ...)`` and ``fit_key`` is the ``key`` of :func:`jnn.fit`
  (shuffling and dropout);
- an optimizer hyperparameter setting, injected with
  ``optax.inject_hyperparams`` so every run shares one compiled program;
- a data fold, expressed as per-example weights (k-fold: 0/1 masks; bootstrap:
  resample counts), so every run sees arrays of the same shapes.

Run ``i`` therefore equals ``jnn.fit(model, data=data, **result.fit_args(i), ...)``
done alone, to float tolerance. Runs go in chunks (``chunk_size``, by default
sized from the memory one run needs) compiled once, and the run axis is sharded
across devices when there are several: every device of every process in a
multi-process job (:func:`jnn.distributed.initialize`; every process calls
``sweep`` with the same arguments), and every process gets every run's results.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jnn import distributed as _distributed
from jnn import losses as _losses
from jnn._data import (
    check_labels,
    check_positive_int,
    check_xy,
    close_match,
    is_int,
    is_number,
)
from jnn._table import Table
from jnn._typing import Array, ArrayLike, Params
from jnn.layers._base import AnyLayer, _check_layer, is_stateful, stateful
from jnn.train import TrainState, get_optimizer
from jnn.train._internal import OPTIMIZERS, EpochSpec, check_trace, epoch_fn, resolve_metrics

__all__ = [
    "Bootstrap",
    "KFold",
    "Run",
    "SweepResult",
    "Table",
    "bootstrap_weights",
    "kfold_weights",
    "run_keys",
    "sweep",
]

Seed = int | tuple[int, int]


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


# --------------------------------------------------------------------------- runs


def _seed_keys(init_seed: Array, shuffle_seed: Array) -> tuple[Array, Array]:
    init_key = jax.random.split(jax.random.key(init_seed))[0]
    fit_key = jax.random.split(jax.random.key(shuffle_seed))[1]
    return init_key, fit_key


def run_keys(seed: Seed) -> tuple[Array, Array]:
    """``(init_key, fit_key)`` of a run: how :func:`sweep` turns a seed into keys.

    ``seed`` is an int, or a pair ``(init_seed, shuffle_seed)`` to vary the
    initialization and the shuffling separately (``s`` is ``(s, s)``).

    Args:
      seed: an int in ``[0, 2**31)``, or a pair of them.

    Returns:
      ``(init_key, fit_key)``: typed PRNG keys for ``model.init`` and for the
      ``key`` of :func:`jnn.fit`.

    Raises:
      ValueError: for a seed that is not such an int or pair.

    Example:
      >>> import jax, jnn
      >>> init_key, fit_key = jnn.experiments.run_keys(3)
      >>> _, params = jnn.Dense(2).init(init_key, (-1, 4))  # the params of run seed 3
    """
    init_seed, shuffle_seed = _check_seed(seed)
    return _seed_keys(jnp.int32(init_seed), jnp.int32(shuffle_seed))


def _check_seed(seed: Any, where: str = "run_keys") -> tuple[int, int]:
    pair = tuple(seed) if isinstance(seed, (tuple, list)) else (seed, seed)
    if len(pair) != 2 or not all(is_int(s) and 0 <= s < 2**31 for s in pair):
        raise ValueError(
            f"{where}: a seed must be an int in [0, 2**31) or a pair (init_seed, shuffle_seed) "
            f"of them, got {seed!r}."
        )
    return int(pair[0]), int(pair[1])


class Run(NamedTuple):
    """One run of a sweep: its index, seed, hyperparameters and fold (None: all data).

    ``SweepResult.runs`` holds one per run, in run-axis order.

    Attributes:
      index: the run's position on the run axis of :class:`SweepResult`.
      seed: an int or ``(init_seed, shuffle_seed)``; see :func:`run_keys`.
      hparams: the optimizer hyperparameters of the run (``{}`` without a grid).
      fold: the index of its fold or resample, or None when there are no folds.

    Example:
      >>> from jnn.experiments import Run, run_keys
      >>> run = Run(index=0, seed=(1, 2), hparams={"learning_rate": 0.01}, fold=None)
      >>> init_key, fit_key = run_keys(run.seed)   # what the sweep trained it with
      >>> run.hparams["learning_rate"]
      0.01
    """

    index: int  # type: ignore[assignment]  # (shadows tuple.index, as a field should)
    seed: Seed
    hparams: dict[str, float]
    fold: int | None


def _hparam_settings(hparams: Any) -> list[dict[str, float]]:
    if not hparams:
        return [{}]
    if isinstance(hparams, Mapping):
        names = list(hparams)
        grids = []
        for name in names:
            values = hparams[name]
            values = list(values) if isinstance(values, (list, tuple, np.ndarray)) else [values]
            if not values:
                raise ValueError(f"sweep: hparams[{name!r}] is empty.")
            grids.append(values)
        settings = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*grids)]
    elif isinstance(hparams, Sequence) and all(isinstance(h, Mapping) for h in hparams):
        settings = [dict(h) for h in hparams]
        if any(set(s) != set(settings[0]) for s in settings):
            raise ValueError("sweep: every hparams setting must name the same hyperparameters.")
    else:
        raise TypeError(
            "sweep: hparams must be a dict of value lists (a grid), e.g. "
            "{'learning_rate': [1e-3, 1e-2]}, or a list of dicts (explicit settings)."
        )
    for s in settings:
        for name, v in s.items():
            if not is_number(v):
                raise TypeError(
                    f"sweep: hyperparameter {name!r} must be a number to be swept, got {v!r}. "
                    "Fix non-numeric options inside the optimizer factory instead."
                )
    floats = {n for s in settings for n, v in s.items() if isinstance(v, (float, np.floating))}
    return [{n: float(v) if n in floats else int(v) for n, v in s.items()} for s in settings]


def _optimizer(optimizer: Any, settings: list[dict[str, float]]) -> tuple[Callable | None, Any]:
    """``(factory, tx)``: the hyperparameter factory (None without a grid) and the transform."""
    if settings == [{}]:
        return None, get_optimizer(optimizer)
    if isinstance(optimizer, str):
        if optimizer not in OPTIMIZERS:
            get_optimizer(optimizer)  # raises the named-optimizer error
        factory = OPTIMIZERS[optimizer][0]
    elif isinstance(optimizer, optax.GradientTransformation) or not callable(optimizer):
        raise TypeError(
            "sweep: with hparams, optimizer must be a name ('adam') or a factory taking the "
            "hyperparameters as keywords, e.g. lambda learning_rate: optax.adam(learning_rate)."
        )
    else:
        factory = optimizer
    _check_hparam_names(factory, settings[0])
    return factory, _injected(factory, tuple(settings[0].items()))


def _check_hparam_names(factory: Callable, setting: dict[str, float]) -> None:
    """The swept names must be keywords of ``factory``, and cover its required ones."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin without a signature: let optax report
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    named = getattr(factory, "__name__", "<")
    named = "the optimizer factory" if named.startswith("<") else named
    takes = [n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    for name in setting:
        if name not in takes:
            raise ValueError(
                f"sweep: hparams names {name!r}, which {named} does not take."
                f"{close_match(name, takes)} It takes: {', '.join(takes)}."
            )
    required = [
        n for n, p in params.items()
        if p.default is inspect.Parameter.empty
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]  # fmt: skip
    missing = [n for n in required if n not in setting]
    if missing:
        raise ValueError(
            f"sweep: {named} needs {', '.join(map(repr, missing))}, which hparams does not give: "
            "sweep it in hparams, or fix it inside the factory, e.g. "
            f"lambda {', '.join(setting)}: ..."
        )


@functools.lru_cache(maxsize=16)
def _injected(factory: Callable, setting: tuple) -> optax.GradientTransformation:
    """One transformation per factory: its update reads the hparams from each run's state."""
    return optax.inject_hyperparams(factory)(**dict(setting))


# --------------------------------------------------------------------------- result


class SweepResult(NamedTuple):
    """What :func:`sweep` returns.

    Attributes:
      params: every run's final params, stacked with a leading run axis.
      opt_state: every run's optimizer state, stacked likewise.
      model_state: stacked non-trainable model state (``{}`` when stateless).
      history: metric name -> array ``(runs, epochs)``.
      runs: one :class:`Run` per run, in run-axis order.
      diverged: bool ``(runs,)``: a non-finite loss or param appeared.
      monitor: the metric ``best_*``, the summary and ``best_index`` rank by.
      fold_weights: ``(train, val)`` weights per fold, ``(folds, N)``, or None.
      hparam_factory: the optimizer factory hyperparameters are injected into.
      model: the model swept.
      data: ``(x, y, sample_weight)`` as checked (host arrays), for :meth:`fit_args`.
      input_shape: the shape the runs' params were initialized for.

    Example:
      >>> import numpy as np, jnn
      >>> x = np.random.default_rng(0).normal(size=(16, 2)).astype("float32")
      >>> y = 2.0 * x[:, :1]
      >>> res = jnn.experiments.sweep(jnn.Dense(1), (x, y), loss="mse", optimizer="sgd",
      ...                             hparams={"learning_rate": [0.01, 0.1]}, seeds=2, epochs=3)
      >>> res.params["w"].shape            # 2 settings x 2 seeds, stacked
      (4, 2, 1)
      >>> res.runs[res.best_index].hparams
      {'learning_rate': 0.1}
      >>> res.run_params(res.best_index)["w"].shape
      (2, 1)
      >>> res.summary().column("learning_rate")
      [0.01, 0.1]
      >>> sorted(res.fit_args(0))          # jnn.fit(..., **res.fit_args(0)) redoes run 0
      ['key', 'optimizer', 'params']
    """

    params: Params
    opt_state: Any
    model_state: Any
    history: dict[str, np.ndarray]
    runs: tuple[Run, ...]
    diverged: np.ndarray
    monitor: str
    fold_weights: tuple[np.ndarray, np.ndarray] | None
    hparam_factory: Callable | None
    model: AnyLayer
    data: tuple[np.ndarray, np.ndarray, np.ndarray]
    input_shape: tuple

    def __repr__(self) -> str:
        epochs = next(iter(self.history.values())).shape[1]
        return (
            f"SweepResult(runs={len(self.runs)}, epochs={epochs}, monitor={self.monitor!r}, "
            f"diverged={int(self.diverged.sum())}, history={list(self.history)})"
        )

    @property
    def maximize(self) -> bool:
        """Whether a larger ``monitor`` is better (accuracies)."""
        return "acc" in self.monitor

    def _best_over_epochs(self) -> tuple[np.ndarray, np.ndarray]:
        h = self.history[self.monitor]
        masked = np.where(np.isfinite(h), h, -np.inf if self.maximize else np.inf)
        epoch = np.argmax(masked, axis=1) if self.maximize else np.argmin(masked, axis=1)
        best = h[np.arange(h.shape[0]), epoch]
        return np.where(np.isfinite(best), best, np.nan), epoch

    @property
    def table(self) -> Table:
        """One row per run: seed, hyperparameters, fold, diverged, final and best metrics."""
        best, best_epoch = self._best_over_epochs()
        rows = []
        for r in self.runs:
            row: dict[str, Any] = {"run": r.index, "seed": r.seed, **r.hparams, "fold": r.fold}
            row["diverged"] = bool(self.diverged[r.index])
            for k, v in self.history.items():
                row[k] = float(v[r.index, -1])
            row[f"best_{self.monitor}"] = float(best[r.index])
            row["best_epoch"] = int(best_epoch[r.index]) + 1
            rows.append(row)
        return Table(rows)

    @property
    def best_index(self) -> int:
        """The run with the best final ``monitor`` among runs that did not diverge."""
        final = self.history[self.monitor][:, -1].astype(np.float64)
        ok = ~self.diverged & np.isfinite(final)
        if not ok.any():
            raise ValueError("sweep: every run diverged; there is no best run.")
        score = np.where(ok, -final if self.maximize else final, np.inf)
        return int(np.argmin(score))

    @property
    def best_params(self) -> Params:
        """The params of :attr:`best_index`."""
        return self.run_params(self.best_index)

    def run_params(self, i: int) -> Params:
        """Run ``i``'s final params (the run axis indexed away).

        Args:
          i: the run's index (``Run.index``).

        Returns:
          The params pytree of that run alone.
        """
        return jax.tree.map(lambda a: a[i], self.params)

    def summary(self) -> Table:
        """Mean and std (ddof=0) over seeds and folds of each hyperparameter setting.

        Diverged runs are counted in ``diverged`` and left out of the statistics.

        Returns:
          A :class:`Table` with one row per setting: the hyperparameters,
          ``runs``, ``diverged``, and ``<metric>_mean`` / ``<metric>_std`` of
          every final metric and of ``best_<monitor>`` (NaN if every run of the
          setting diverged).
        """
        groups: dict[tuple, list[int]] = {}
        for r in self.runs:
            groups.setdefault(tuple(r.hparams.items()), []).append(r.index)
        best, _ = self._best_over_epochs()
        columns = {k: v[:, -1] for k, v in self.history.items()}
        columns[f"best_{self.monitor}"] = best
        rows = []
        for setting, idx in groups.items():
            idx_arr = np.asarray(idx)
            ok = idx_arr[~self.diverged[idx_arr]]
            row: dict[str, Any] = {
                **dict(setting),
                "runs": len(idx),
                "diverged": len(idx) - ok.size,
            }
            for k, v in columns.items():
                vals = v[ok]
                row[f"{k}_mean"] = float(np.mean(vals)) if vals.size else math.nan
                row[f"{k}_std"] = float(np.std(vals)) if vals.size else math.nan
            rows.append(row)
        return Table(rows)

    def fit_args(self, i: int) -> dict[str, Any]:
        """The per-run arguments of :func:`jnn.fit` that reproduce run ``i`` alone.

        ``jnn.fit(model, data=data, loss=..., epochs=..., batch_size=...,
        **result.fit_args(i))`` trains the same run: ``params`` (and
        ``model_state``) initialized from the seed's ``init_key``, the seed's
        ``key``, the run's ``optimizer``, and the fold's ``sample_weight`` and
        ``validation_data``. Pass the sweep's other arguments unchanged.

        Args:
          i: the run's index (``Run.index``).

        Returns:
          A dict of keyword arguments for :func:`jnn.fit`: ``params`` and
          ``key`` always; ``model_state``, ``optimizer``, ``sample_weight`` and
          ``validation_data`` when the run has them.
        """
        r = self.runs[i]
        init_key, fit_key = run_keys(r.seed)
        _, params, model_state = stateful(self.model).init(init_key, self.input_shape)
        args: dict[str, Any] = {"params": params, "key": fit_key}
        if is_stateful(self.model):
            args["model_state"] = model_state
        if self.hparam_factory is not None:
            args["optimizer"] = optax.inject_hyperparams(self.hparam_factory)(**r.hparams)
        x, y, w = self.data
        if r.fold is not None and self.fold_weights is not None:
            train, val = self.fold_weights
            args["sample_weight"] = train[r.fold] * w
            held_out = val[r.fold] > 0
            args["validation_data"] = (x[held_out], y[held_out])
        elif not np.all(w == 1):
            args["sample_weight"] = w
        return args

    def plot(
        self,
        path: str,
        *,
        x: str | None = None,
        metric: str | None = None,
        log_x: bool | None = None,
    ) -> str:
        """Save a PNG of the sweep: final ``metric`` vs hyperparameter ``x``, seed spread shaded.

        One line per setting of the other hyperparameters: the mean over seeds
        and folds, a band of one std, and each run as a dot (diverged runs
        left out). Without hyperparameters, ``metric`` against the epoch.

        Args:
          path: where to write the PNG.
          x: the hyperparameter on the horizontal axis; default the first one
            that varies.
          metric: a recorded metric; default ``monitor``.
          log_x: a logarithmic x axis; default when the values are positive
            and span a factor of 20 or more.

        Returns:
          ``path``.

        Raises:
          ImportError: without matplotlib.
          ValueError: for a ``metric`` that was not recorded or an ``x`` that
            was not swept.
        """
        from jnn._sweep_plot import plot_sweep

        return plot_sweep(self, path, x=x, metric=metric or self.monitor, log_x=log_x)


# --------------------------------------------------------------------------- sweep


def sweep(
    model: AnyLayer,
    data: tuple[ArrayLike, ArrayLike],
    *,
    loss: str | Callable,
    optimizer: str | optax.GradientTransformation | Callable[..., Any] = "adam",
    hparams: Mapping[str, Sequence[float]] | Sequence[Mapping[str, float]] | None = None,
    seeds: int | Sequence[Seed] = 1,
    folds: int | KFold | Bootstrap | None = None,
    epochs: int = 1,
    batch_size: int = 32,
    metrics: Sequence[str | Callable] = (),
    validation_data: tuple[ArrayLike, ArrayLike] | None = None,
    sample_weight: ArrayLike | None = None,
    shuffle: bool = True,
    monitor: str | None = None,
    chunk_size: int | None = None,
    verbose: int = 0,
) -> SweepResult:
    """Train every (hyperparameter setting, seed, fold) run at once, vmapped and compiled once.

    Args:
      model: a :class:`jnn.Layer` or :class:`jnn.StatefulLayer`; each run
        initializes it from its seed.
      data: ``(x, y)`` arrays, shared by every run.
      loss: a loss function or name, as for :func:`jnn.fit`.
      optimizer: without ``hparams``, a name or optax transformation as for
        :func:`jnn.fit`. With ``hparams``, a name (its optax constructor takes
        the hyperparameters) or a factory ``f(**hparams) -> GradientTransformation``.
      hparams: a grid ``{"learning_rate": [...], "weight_decay": [...]}``
        (every combination), or a list of settings (dicts). Numeric values only.
      seeds: a number of seeds (``0..seeds-1``) or a list of seeds, each an int
        or an ``(init_seed, shuffle_seed)`` pair.
      folds: ``k`` or :class:`KFold` (k-fold cross-validation, validated on the
        held-out fold) or :class:`Bootstrap` (validated out of bag); None trains
        on all the data.
      epochs, batch_size, metrics, shuffle, sample_weight: as for :func:`jnn.fit`.
      validation_data: ``(x_val, y_val)`` for every run (not with ``folds``).
      monitor: the metric that ranks runs (default ``"val_loss"`` when there is
        validation, else ``"loss"``; accuracies rank by max).
      chunk_size: runs per compiled call; default from the memory one run needs
        and the memory available. Rounded up to a multiple of the device count.
      verbose: 1 prints one line per chunk.

    Returns:
      A :class:`SweepResult`. Runs are ordered setting-major, then seed, then fold.

    Raises:
      TypeError / ValueError: for bad data, sizes, seeds, hparams or names,
        before compiling.

    Example:
      >>> import numpy as np, optax, jnn
      >>> x = np.random.default_rng(0).normal(size=(64, 3)).astype("float32")
      >>> y = (x.sum(1, keepdims=True) > 0).astype("float32")
      >>> model = jnn.serial(jnn.Dense(8, activation="relu"), jnn.Dense(1, activation="sigmoid"))
      >>> res = jnn.experiments.sweep(
      ...     model, (x, y), loss="bce", optimizer=lambda learning_rate: optax.adam(learning_rate),
      ...     hparams={"learning_rate": [1e-3, 1e-2]}, seeds=3, folds=2, epochs=2, batch_size=16)
      >>> len(res.runs), res.history["val_loss"].shape, len(res.table)
      (12, (12, 2), 12)
      >>> len(res.summary())
      2
      >>> res
      SweepResult(runs=12, epochs=2, monitor='val_loss', diverged=0, history=['loss', 'val_loss'])
    """
    where = "sweep"
    _check_layer(model, f"{where}: model: ")
    smodel = stateful(model)
    x, y, w = check_xy(where, data, weights=sample_weight)
    n = x.shape[0]
    epochs = check_positive_int(where, "epochs", epochs)
    batch_size = min(check_positive_int(where, "batch_size", batch_size), n)
    settings = _hparam_settings(hparams)
    factory, tx = _optimizer(optimizer, settings)
    seed_list = _seed_list(seeds)
    fold_weights = _fold_weights(folds, n)
    if fold_weights is not None and validation_data is not None:
        raise ValueError(
            f"{where}: folds define each run's validation data; drop validation_data, or folds."
        )
    loss_fn = _losses.get(loss)
    metric_fns = resolve_metrics(metrics, loss_fn)
    in_shape = (-1, *x.shape[1:])
    out_shape = _traced_out_shape(
        smodel, loss_fn, metric_fns, (x.shape, x.dtype), (y.shape[1:], y.dtype)
    )
    check_labels(
        where, loss if isinstance(loss, str) else getattr(loss_fn, "__name__", None), y, out_shape
    )
    validate = fold_weights is not None or validation_data is not None
    keys = ["loss", *(name for name, _ in metric_fns)]
    keys += [f"val_{k}" for k in keys] if validate else []
    monitor = monitor or ("val_loss" if validate else "loss")
    if monitor not in keys:
        raise ValueError(
            f"{where}: monitor {monitor!r} is not recorded.{close_match(monitor, keys)} "
            f"Recorded: {keys}."
        )

    # The run table: setting-major, then seed, then fold.
    num_folds = 1 if fold_weights is None else fold_weights[0].shape[0]
    runs = tuple(
        Run(i, seed, dict(setting), None if fold_weights is None else fold)
        for i, (setting, seed, fold) in enumerate(
            itertools.product(settings, seed_list, range(num_folds))
        )
    )
    per_run = {
        "init_seed": np.array([_check_seed(r.seed)[0] for r in runs], np.int32),
        "shuffle_seed": np.array([_check_seed(r.seed)[1] for r in runs], np.int32),
        "fold": np.array([r.fold or 0 for r in runs], np.int32),
        "hparams": {
            k: np.array(
                [r.hparams[k] for r in runs], np.float32 if isinstance(v, float) else np.int32
            )
            for k, v in settings[0].items()
        },
    }
    if fold_weights is None:
        train_w, val_w = w[None], np.zeros((1, 0), np.float32)
    else:
        train_w, val_w = fold_weights[0] * w[None], fold_weights[1]
    val = None
    if validation_data is not None:
        val = tuple(jnp.asarray(a) for a in check_xy(f"{where}: validation_data", validation_data))
    shared = (jnp.asarray(x), jnp.asarray(y), jnp.asarray(train_w), jnp.asarray(val_w), val)

    train = _compiled_sweep(
        smodel, loss_fn, tx, factory, metric_fns, batch_size, shuffle, validate,
        fold_weights is not None, epochs, in_shape,
    )  # fmt: skip
    return _run_chunks(
        train, runs, per_run, shared, keys, chunk_size, verbose,
        lambda: _run_bytes(
            smodel, tx, loss_fn, (x.shape[1:], x.dtype), (y.shape[1:], y.dtype), n,
            batch_size, epochs * len(keys),
        ),
        SweepResult, dict(
            monitor=monitor, fold_weights=fold_weights, hparam_factory=factory,
            model=model, data=(x, y, w), input_shape=in_shape,
        ),
    )  # fmt: skip


@functools.lru_cache(maxsize=32)
def _traced_out_shape(smodel, loss_fn, metric_fns, x_spec, y_spec) -> tuple:
    """``fit``'s eager shape check (trace, never compile), cached per model and shapes."""
    x = jax.ShapeDtypeStruct(*x_spec)
    y = jax.ShapeDtypeStruct((x_spec[0][0], *y_spec[0]), y_spec[1])
    in_shape = (-1, *x_spec[0][1:])
    _, params, model_state = jax.eval_shape(lambda k: smodel.init(k, in_shape), jax.random.key(0))
    return check_trace("sweep", smodel, params, model_state, loss_fn, metric_fns, x, y, None)


@functools.lru_cache(maxsize=16)
def _compiled_sweep(
    smodel,
    loss_fn,
    tx,
    factory,
    metric_fns,
    batch_size,
    shuffle,
    validate,
    folded,
    epochs,
    in_shape,
) -> Callable:
    """``train(init_seed, shuffle_seed, fold, hparams, shared)``: a chunk of runs, jitted.

    Each run initializes from its seed and scans ``fit``'s own epoch function
    over the epochs; ``jax.vmap`` runs them in lockstep.
    """
    epoch = epoch_fn(EpochSpec(smodel, loss_fn, tx, metric_fns, batch_size, shuffle, validate))

    def one_run(init_seed, shuffle_seed, fold, hp, shared):
        xd, yd, train_w, val_w, val = shared
        init_key, fit_key = _seed_keys(init_seed, shuffle_seed)
        _, params, model_state = smodel.init(init_key, in_shape)
        # Exactly what fit does with optax.inject_hyperparams(factory)(**hparams).
        run_tx = tx if factory is None else optax.inject_hyperparams(factory)(**hp)
        state = TrainState(
            params, run_tx.init(params), jnp.zeros((), jnp.int32), fit_key, model_state
        )
        run_val = (xd, yd, val_w[fold]) if folded else val

        def body(state, _):
            state, logs, _ = epoch(state, xd, yd, train_w[fold], run_val)
            return state, logs

        return jax.lax.scan(body, state, None, length=epochs)

    return jax.jit(jax.vmap(one_run, in_axes=(0, 0, 0, 0, None)))


_MAX_SEEDS = 2**20  # a million runs per hyperparameter setting; a larger int is a mistake


def _seed_list(seeds: Any) -> list[Seed]:
    if is_int(seeds):
        return list(range(check_positive_int("sweep", "seeds", seeds, maximum=_MAX_SEEDS)))
    if isinstance(seeds, (list, tuple, np.ndarray)) and len(seeds) > 0:
        out: list[Seed] = []
        for s in seeds:
            init_seed, shuffle_seed = _check_seed(s, "sweep: seeds")
            out.append((init_seed, shuffle_seed) if isinstance(s, (tuple, list)) else init_seed)
        if len(set(out)) != len(out):
            raise ValueError(f"sweep: seeds must be distinct, got {seeds!r}.")
        return out
    raise TypeError(f"sweep: seeds must be a positive int or a non-empty list, got {seeds!r}.")


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


# --------------------------------------------------------------------------- chunks


def _available_bytes() -> int:
    """Memory a sweep may use: a quarter of what the first device has free."""
    stats = jax.local_devices()[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return (stats["bytes_limit"] - stats.get("bytes_in_use", 0)) // 4
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024 // 4
    except (OSError, KeyError, ValueError):
        return (os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) // 8


def _nbytes(tree: Any) -> int:
    return sum(math.prod(a.shape) * np.dtype(a.dtype).itemsize for a in jax.tree.leaves(tree))


def _jaxpr_bytes(jaxpr: Any) -> int:
    """Bytes of every value a jaxpr makes (nested ones too): an upper bound on its live set."""
    total = 0
    for eqn in jaxpr.eqns:
        total += sum(_nbytes(v.aval) for v in eqn.outvars if hasattr(v.aval, "shape"))
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            total += _jaxpr_bytes(sub)
    return total


@functools.lru_cache(maxsize=32)
def _run_bytes(smodel, tx, loss_fn, x_spec, y_spec, num_examples, batch_size, history) -> int:
    """Memory one run needs: its states, a shuffled copy of the data, one step's values.

    ``x_spec``/``y_spec`` are ``(shape, dtype)`` of one example; ``history`` the
    number of floats each run records. Cached: tracing costs more than a small sweep.
    """
    xb = jax.ShapeDtypeStruct((batch_size, *x_spec[0]), x_spec[1])
    yb = jax.ShapeDtypeStruct((batch_size, *y_spec[0]), y_spec[1])
    _, params, model_state = jax.eval_shape(
        lambda k: smodel.init(k, (-1, *x_spec[0])), jax.random.key(0)
    )

    def grads(params, xb, yb):
        def objective(p):
            return loss_fn(smodel.apply(p, model_state, xb, train=True)[0], yb)

        return jax.grad(objective)(params)

    step = jax.make_jaxpr(grads)(params, xb, yb).jaxpr
    state = _nbytes(params) + _nbytes(jax.eval_shape(tx.init, params)) + _nbytes(model_state)
    example = _nbytes(xb) // batch_size + _nbytes(yb) // batch_size + 4
    data = example * (num_examples + batch_size)
    return 4 * state + 2 * data + _jaxpr_bytes(step) + 4 * history + 4096


def _chunk_size(chunk_size: int | None, num_runs: int, num_devices: int, run_bytes) -> int:
    """Runs per compiled call: as many as a quarter of free memory holds, a multiple of devices."""
    if chunk_size is None:
        chunk_size = max(1, min(num_runs, _available_bytes() // max(run_bytes(), 1)))
    else:
        chunk_size = check_positive_int("sweep", "chunk_size", chunk_size)
    return -(-chunk_size // num_devices) * num_devices


def _run_chunks(train, runs, per_run, shared, keys, chunk_size, verbose, run_bytes, cls, extra):
    num_runs = len(runs)
    devices = jax.devices()
    chunk_size = _chunk_size(chunk_size, num_runs, len(devices), run_bytes)
    # Processes size chunks from their own memory: they must agree (one shape, same calls).
    chunk_size = min(map(int, _distributed._exchange("sweep", str(chunk_size))))
    sharding = None
    if len(devices) > 1:  # the run axis over every device of every process
        sharding = NamedSharding(Mesh(np.array(devices), ("runs",)), PartitionSpec("runs"))
        if jax.process_count() > 1:  # the data: one global, replicated copy
            everywhere = NamedSharding(sharding.mesh, PartitionSpec())
            shared = jax.tree.map(functools.partial(_distributed._put, sharding=everywhere), shared)
    num_chunks = -(-num_runs // chunk_size)
    outputs = []
    for c in range(num_chunks):
        start = time.perf_counter()
        # The last chunk repeats its final run to keep one shape: one compilation.
        idx = np.minimum(np.arange(c * chunk_size, (c + 1) * chunk_size), num_runs - 1)
        args = jax.tree.map(lambda a, idx=idx: a[idx], per_run)
        if sharding is not None:
            args = jax.tree.map(functools.partial(_distributed._put, sharding=sharding), args)
        state, logs = train(
            args["init_seed"], args["shuffle_seed"], args["fold"], args["hparams"], shared
        )
        state = state._replace(key=jax.random.key_data(state.key))
        valid = min(chunk_size, num_runs - c * chunk_size)
        results = _distributed.gather((state, logs))  # every run, in every process
        outputs.append(jax.tree.map(lambda a, v=valid: a[:v], results))
        if verbose:
            print(
                f"sweep: chunk {c + 1}/{num_chunks}: runs {c * chunk_size}-"
                f"{c * chunk_size + valid - 1} in {time.perf_counter() - start:.2f}s",
                flush=True,
            )
    state, logs = jax.tree.map(lambda *parts: np.concatenate(parts), *outputs)
    history = {k: logs[k] for k in keys}
    finite = np.isfinite(history["loss"]).all(axis=1)
    for leaf in jax.tree.leaves(state.params):
        finite &= np.isfinite(leaf.reshape(num_runs, -1)).all(axis=1)
    as_jax = lambda tree: jax.tree.map(jnp.asarray, tree)  # noqa: E731
    return cls(
        params=as_jax(state.params),
        opt_state=as_jax(state.opt_state),
        model_state=as_jax(state.model_state),
        history=history,
        runs=runs,
        diverged=~finite,
        **extra,
    )
