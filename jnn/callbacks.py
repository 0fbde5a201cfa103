"""Callbacks for :func:`jnn.fit`: logging to CSV and TensorBoard, early stopping.

A callback is any ``cb(epoch, logs, state) -> bool | None`` called after every
epoch (:class:`Callback`); returning True stops training. This module adds
:class:`CSVLogger` (one row per epoch) and :class:`TensorBoard` (event files,
written with ``tensorboardX``: no TensorFlow; ``pip install jnn[logs]``), and
re-exports :class:`EarlyStopping` and :class:`Callback` (also ``jnn.EarlyStopping``).

Example:
  >>> import jax, numpy as np, jnn, tempfile, os
  >>> x = np.random.default_rng(0).normal(size=(32, 2)).astype("float32")
  >>> y = x[:, :1]
  >>> model = jnn.Dense(1)
  >>> _, params = model.init(jax.random.key(0), (-1, 2))
  >>> d = tempfile.mkdtemp()
  >>> _ = jnn.fit(model, params, (x, y), loss="mse", epochs=2, key=jax.random.key(1),
  ...             callbacks=[jnn.callbacks.CSVLogger(os.path.join(d, "log.csv"))], verbose=0)
  >>> open(os.path.join(d, "log.csv")).read().splitlines()[0]
  'epoch,loss'
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from jnn.train._control import Callback, EarlyStopping

__all__ = ["CSVLogger", "Callback", "EarlyStopping", "TensorBoard"]


def _value(v: Any) -> Any:
    """A CSV cell: a number, or an array (a confusion matrix) as a JSON list."""
    a = np.asarray(v)
    return float(a) if a.ndim == 0 else json.dumps(a.tolist())


class CSVLogger:
    """Write one CSV row per epoch: ``epoch`` then every logged value.

    The file is started afresh (with a header) by an epoch-0 call, and appended to
    when ``fit`` starts at a later epoch (``resume=True``) and the file exists, so a
    resumed run continues the same file. Array-valued metrics (a confusion matrix)
    are written as JSON lists.

    Args:
      path: the CSV file (its directory must exist).
      separator: the field separator.

    Raises:
      ValueError: if ``path`` is a directory.

    Example:
      >>> import tempfile, os, jnn
      >>> log = jnn.callbacks.CSVLogger(os.path.join(tempfile.mkdtemp(), "log.csv"))
      >>> log(0, {"loss": 0.5, "auc": 0.75})
      >>> log(1, {"loss": 0.25, "auc": 0.875})
      >>> print(log.path.read_text().strip())
      epoch,loss,auc
      0,0.5,0.75
      1,0.25,0.875
    """

    def __init__(self, path: str | os.PathLike, separator: str = ","):
        self.path = Path(path)
        if self.path.is_dir():
            raise ValueError(f"CSVLogger: path {str(self.path)!r} is a directory; give a file.")
        self.separator = separator
        self._keys: list[str] | None = None

    def __call__(self, epoch: int, logs: dict[str, Any], state: Any = None) -> None:
        fresh = self._keys is None and (epoch == 0 or not self.path.exists())
        if self._keys is None:
            self._keys = [k for k in logs if k != "steps"]  # log_every's series: not a row
        with self.path.open("w" if fresh else "a", newline="") as f:
            out = csv.writer(f, delimiter=self.separator)
            if fresh:
                out.writerow(["epoch", *self._keys])
            out.writerow([epoch, *(_value(logs[k]) for k in self._keys)])
        return None


class TensorBoard:
    """Write the epoch's scalars to TensorBoard event files under ``log_dir``.

    Every scalar in the logs (loss, metrics, ``val_*``, ``lr``) is written with
    the epoch (from 0) as its step; with ``fit(log_every=k)`` the per-step loss
    and learning rate go to ``step/loss`` and ``step/lr`` at their global steps;
    an array-valued metric (a confusion matrix) is written as text. Events are
    flushed every epoch. Uses ``tensorboardX`` (no TensorFlow); view with
    ``tensorboard --logdir <log_dir>``. For a sweep, see :meth:`write_sweep`
    (one run directory per run).

    Args:
      log_dir: the directory (created if missing; it must not be a file).

    Raises:
      ValueError: if ``log_dir`` is an existing file.
      ImportError: without ``tensorboardX`` (``pip install jnn[logs]``).

    Example:
      >>> import tempfile, jnn
      >>> tb = jnn.callbacks.TensorBoard(tempfile.mkdtemp())
      >>> tb(0, {"loss": 0.5, "auc": 0.75})   # what fit(callbacks=[tb]) does per epoch
      >>> tb.close()
      >>> any(p.name.startswith("events.out.tfevents") for p in tb.log_dir.iterdir())
      True
    """

    def __init__(self, log_dir: str | os.PathLike):
        self.log_dir = _check_log_dir(log_dir)
        self._writer: Any = None

    def _open(self) -> Any:
        if self._writer is None:
            self._writer = _summary_writer(self.log_dir)
        return self._writer

    def __call__(self, epoch: int, logs: dict[str, Any], state: Any = None) -> None:
        writer = self._open()
        _write_epoch(writer, epoch, logs)
        writer.flush()
        return None

    def close(self) -> None:
        """Flush and close the event file (a later epoch opens a new one)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def write_sweep(self, result: Any) -> list[Path]:
        """Write a :class:`jnn.experiments.SweepResult`'s history, one directory per run.

        Run ``i`` goes to ``log_dir/run_<i>[_<hparam>=<value>...][_fold<k>]``, so
        TensorBoard shows the runs side by side.

        Args:
          result: the sweep's result.

        Returns:
          The run directories, in run order.
        """
        dirs = []
        epochs = next(iter(result.history.values())).shape[1]
        for run in result.runs:
            name = f"run_{run.index:03d}" + "".join(
                f"_{k}={v:.3g}" for k, v in sorted(run.hparams.items())
            )
            if run.fold is not None:
                name += f"_fold{run.fold}"
            path = self.log_dir / name
            writer = _summary_writer(path)
            for epoch in range(epochs):
                _write_epoch(
                    writer, epoch, {k: v[run.index, epoch] for k, v in result.history.items()}
                )
            writer.close()
            dirs.append(path)
        return dirs


def _check_log_dir(log_dir: str | os.PathLike) -> Path:
    path = Path(log_dir)
    if path.exists() and not path.is_dir():
        raise ValueError(
            f"TensorBoard: log_dir {str(path)!r} is a file; give a directory (it is "
            "created if missing)."
        )
    return path


def _summary_writer(path: Path) -> Any:
    try:
        from tensorboardX import SummaryWriter
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "TensorBoard logging needs tensorboardX: pip install 'jnn[logs]' "
            "(or pip install tensorboardX)."
        ) from err
    path.mkdir(parents=True, exist_ok=True)
    return SummaryWriter(logdir=str(path))


def _write_epoch(writer: Any, epoch: int, logs: dict[str, Any]) -> None:
    steps = logs.get("steps")
    if isinstance(steps, dict):  # fit(log_every=k): the epoch's per-step series
        for i, step in enumerate(np.asarray(steps["step"]).tolist()):
            writer.add_scalar("step/loss", float(steps["loss"][i]), step)
            if np.isfinite(steps["lr"][i]):
                writer.add_scalar("step/lr", float(steps["lr"][i]), step)
    for key, value in logs.items():
        if key == "steps":
            continue
        a = np.asarray(value)
        if a.ndim == 0:
            writer.add_scalar(key, float(a), epoch)
        else:
            writer.add_text(key, json.dumps(a.tolist()), epoch)
