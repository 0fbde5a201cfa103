"""What a sweep returns: :class:`SweepResult`, its tables and plot."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np
import optax

from jnn._table import Table
from jnn._typing import Params
from jnn.experiments._runs import Run, run_keys
from jnn.layers._base import AnyLayer, is_stateful, stateful

# --------------------------------------------------------------------------- result


def maximizes(monitor: str, mode: str | None = None) -> bool:
    """Whether a larger ``monitor`` is better: ``mode`` if given, else for accuracies."""
    return mode == "max" if mode is not None else "acc" in monitor


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
      epochs_run: int ``(runs,)``, the epochs each run trained (a
        :class:`SuccessiveHalving` stops some early: their history is NaN after),
        or None when every run trained every epoch of a plain sweep.
      schedule: the :class:`SuccessiveHalving` or :class:`PBT` used, or None.
      hparam_history: with :class:`PBT`, name -> ``(runs, epochs)``: the value
        each run trained with at each epoch (``runs[i].hparams`` holds the
        initial one); else None.
      parents: with :class:`PBT`, int ``(runs, exploit steps)``: the run each
        run copied at each step (itself when kept); else None.

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
    epochs_run: np.ndarray | None = None
    schedule: Any = None
    hparam_history: dict[str, np.ndarray] | None = None
    parents: np.ndarray | None = None

    def __repr__(self) -> str:
        epochs = next(iter(self.history.values())).shape[1]
        return (
            f"SweepResult(runs={len(self.runs)}, epochs={epochs}, monitor={self.monitor!r}, "
            f"diverged={int(self.diverged.sum())}, history={list(self.history)}"
            + (f", run_epochs={self.run_epochs}" if self.schedule is not None else "")
            + ")"
        )

    @property
    def run_epochs(self) -> int:
        """The compute spent: epochs trained, summed over runs."""
        if self.epochs_run is None:
            return len(self.runs) * next(iter(self.history.values())).shape[1]
        return int(self.epochs_run.sum())

    def _last(self, name: str) -> np.ndarray:
        """Each run's ``name`` at the last epoch it trained."""
        h = self.history[name]
        if self.epochs_run is None:
            return h[:, -1]
        return h[np.arange(h.shape[0]), np.maximum(self.epochs_run, 1) - 1]

    @property
    def maximize(self) -> bool:
        """Whether a larger ``monitor`` is better (accuracies)."""
        return maximizes(self.monitor)

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
        last = {k: self._last(k) for k in self.history}
        rows = []
        for r in self.runs:
            row: dict[str, Any] = {"run": r.index, "seed": r.seed, **r.hparams, "fold": r.fold}
            row["diverged"] = bool(self.diverged[r.index])
            if self.epochs_run is not None:
                row["epochs"] = int(self.epochs_run[r.index])
            for k in self.history:
                row[k] = float(last[k][r.index])
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
        columns = {k: self._last(k) for k in self.history}
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
        ``validation_data``. Pass the sweep's other arguments unchanged. A run
        that :class:`SuccessiveHalving` stopped is reproduced with
        ``epochs=epochs_run[i]``; a :class:`PBT` run took other runs' weights, so
        these arguments give only its start.

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
        trajectory: str | None = None,
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
          trajectory: with a :class:`PBT` sweep, a hyperparameter to draw along
            the epochs instead: one line per run coloured by its final
            ``metric``, the best run's lineage marked.

        Returns:
          ``path``.

        Raises:
          ImportError: without matplotlib.
          ValueError: for a ``metric`` that was not recorded or an ``x`` that
            was not swept.
        """
        from jnn._sweep_plot import plot_sweep, plot_trajectory

        if trajectory is not None:
            return plot_trajectory(self, path, name=trajectory, metric=metric or self.monitor)
        return plot_sweep(self, path, x=x, metric=metric or self.monitor, log_x=log_x)
