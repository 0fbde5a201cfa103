"""``fit``'s loop controls: results, early stopping, callbacks, progress, Ctrl-C (private)."""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jnn._data import check_int, check_number
from jnn._typing import Params, State
from jnn.train._optim import ema_params
from jnn.train._state import TrainState


class EarlyStopping(NamedTuple):
    """Stop ``fit`` when ``monitor`` has not improved for ``patience`` epochs.

    Attributes:
      monitor: a history key, e.g. ``"val_loss"`` or ``"val_accuracy"``.
      patience: epochs without improvement before stopping.
      min_delta: the least change that counts as an improvement.
      mode: ``"min"``, ``"max"``, or ``"auto"`` (max for accuracies, else min).
      restore_best: return the state of the best epoch rather than the last.

    Example:
      >>> import jnn
      >>> stop = jnn.EarlyStopping(monitor="val_accuracy", patience=3)
      >>> stop.mode, stop.restore_best
      ('auto', True)

      Pass it as ``jnn.fit(..., validation_data=(x_val, y_val), early_stopping=stop)``.
    """

    monitor: str = "val_loss"
    patience: int = 5
    min_delta: float = 0.0
    mode: str = "auto"
    restore_best: bool = True


class Callback(Protocol):
    """``callback(epoch, logs, state) -> bool | None``: called after every epoch.

    ``epoch`` counts from 0, ``logs`` maps metric names to this epoch's floats
    and ``state`` is the current :class:`TrainState`. Return ``True`` to stop.

    Example:
      >>> import jax, jax.numpy as jnp, jnn
      >>> def stop_below(epoch, logs, state):
      ...     return logs["loss"] < 1e-3
      >>> model = jnn.Dense(1)
      >>> _, params = model.init(jax.random.key(0), (-1, 2))
      >>> x, y = jnp.ones((8, 2)), jnp.zeros((8, 1))
      >>> res = jnn.fit(model, params, (x, y), loss="mse", optimizer="sgd", learning_rate=0.1,
      ...               epochs=500, key=jax.random.key(1), callbacks=[stop_below], verbose=0)
      >>> len(res.history["loss"]) < 500
      True
    """

    def __call__(self, epoch: int, logs: dict[str, float], state: TrainState) -> bool | None: ...


class FitResult(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
      state: the final :class:`TrainState` (or the best one with early stopping).
      history: metric name -> one float per epoch (``"loss"``, ``"val_loss"``,
        ``"accuracy"``, ...).

    Example:
      >>> import jax, jax.numpy as jnp, jnn
      >>> model = jnn.Dense(1)
      >>> _, params = model.init(jax.random.key(0), (-1, 2))
      >>> res = jnn.fit(model, params, (jnp.ones((4, 2)), jnp.zeros((4, 1))), loss="mse",
      ...               epochs=2, key=jax.random.key(1), verbose=0)
      >>> sorted(res.params), list(res.history), res.model_state
      (['b', 'w'], ['loss'], {})
    """

    state: TrainState
    history: dict[str, list[float]]

    @property
    def params(self) -> Params:
        """The trained params."""
        return self.state.params

    @property
    def opt_state(self) -> optax.OptState:
        """The optimizer state, to continue training."""
        return self.state.opt_state

    @property
    def model_state(self) -> State:
        """Non-trainable model state (BatchNorm statistics); ``{}`` when stateless."""
        return self.state.model_state

    @property
    def ema_params(self) -> Params | None:
        """The exponential moving average of the params (``fit(ema=...)``), else None."""
        return ema_params(self.state.opt_state)


def check_options(
    where: str, early_stopping: Any, callbacks: Any, verbose: Any, shuffle: Any
) -> int:
    """``fit``'s early_stopping, callbacks, verbose and shuffle, checked before any tracing.

    Returns:
      ``verbose`` as an int (a bool counts as 0 or 1).
    """
    if not isinstance(shuffle, (bool, np.bool_)):
        raise TypeError(f"{where}: shuffle must be True or False, got {shuffle!r}.")
    if early_stopping is not None:
        if not isinstance(early_stopping, EarlyStopping):
            raise TypeError(
                f"{where}: early_stopping must be a jnn.EarlyStopping, e.g. "
                f"EarlyStopping(monitor='val_loss', patience=5), got {early_stopping!r}."
            )
        check_int(f"{where}: early_stopping", "patience", early_stopping.patience, minimum=0)
        check_number(f"{where}: early_stopping", "min_delta", early_stopping.min_delta, low=0.0)
    if not isinstance(callbacks, (list, tuple)) or not all(callable(c) for c in callbacks):
        raise TypeError(
            f"{where}: callbacks must be a list of functions cb(epoch, logs, state), got "
            f"{callbacks!r}."
        )
    if isinstance(verbose, (bool, np.bool_)):
        return int(verbose)
    return check_int(where, "verbose", verbose, minimum=0, maximum=2)


class Stopper:
    def __init__(self, config: EarlyStopping):
        mode = config.mode
        if mode == "auto":
            mode = "max" if "acc" in config.monitor else "min"
        if mode not in ("min", "max"):
            raise ValueError(f"EarlyStopping: mode must be 'min', 'max' or 'auto', got {mode!r}.")
        self.config, self.sign = config, (1.0 if mode == "min" else -1.0)
        self.best, self.best_state, self.wait = math.inf, None, 0

    def update(self, epoch: int, value: float, state: TrainState) -> bool:
        if self.sign * value < self.best - self.config.min_delta:
            self.best, self.wait = self.sign * value, 0
            if self.config.restore_best:  # the next epoch donates `state`: keep a copy
                self.best_state = jax.tree.map(jnp.copy, state)
            return False
        self.wait += 1
        return self.wait >= self.config.patience


class Progress:
    """An epoch-level progress bar (verbose=1) or one line per epoch (verbose=2).

    On a terminal with verbose=1, :meth:`tick` also shows the running epoch: batches
    done, examples/s (when known) and an ETA, redrawn at most every 0.2 s.
    """

    def __init__(self, epochs: int, verbose: int):
        self.epochs, self.verbose = epochs, verbose
        self.tty = verbose == 1 and sys.stdout.isatty()
        self.epoch, self.start, self.last, self.note = 0, 0.0, 0.0, ""

    def start_epoch(self, epoch: int) -> None:
        self.epoch, self.start, self.last, self.note = epoch, time.perf_counter(), 0.0, ""

    def tick(self, batches: int, total: int | None, examples: int | None = None) -> None:
        """The running epoch reached ``batches`` of ``total`` (None: unknown length)."""
        now = time.perf_counter()
        seconds = max(now - self.start, 1e-9)
        self.note = f"{batches}" + (f"/{total}" if total else "") + " batches"
        if examples is not None:
            self.note += f" - {examples / seconds:,.0f} examples/s"
        if not self.tty or now - self.last < 0.2:
            return
        self.last = now
        eta = f" - ETA {seconds * (total - batches) / batches:.0f}s" if total and batches else ""
        sys.stdout.write(f"\r\x1b[2KEpoch {self.epoch + 1}/{self.epochs} {self.note}{eta}")
        sys.stdout.flush()

    def update(self, epoch: int, logs: dict[str, float], seconds: float) -> None:
        if not self.verbose:
            return
        done = epoch + 1
        width = len(str(self.epochs))
        text = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
        line = f"Epoch {done:>{width}}/{self.epochs}"
        if self.verbose == 1:
            filled = round(20 * done / self.epochs)
            line += f" [{'=' * filled}{'.' * (20 - filled)}]"
        line += f" {seconds * 1e3:.0f}ms - {text}" + (f" - {self.note}" if self.note else "")
        if self.tty:
            sys.stdout.write("\r\x1b[2K" + line)
        else:
            sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def close(self) -> None:
        if self.tty:
            sys.stdout.write("\n")
            sys.stdout.flush()


class SigintFlag:
    """While active (main thread only): the first Ctrl-C sets ``flag``, a second one raises."""

    def __init__(self):
        self.flag, self.previous = False, None

    def _handle(self, signum, frame):
        if self.flag:
            raise KeyboardInterrupt
        self.flag = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False


__all__ = [
    "Callback",
    "EarlyStopping",
    "FitResult",
    "Progress",
    "SigintFlag",
    "Stopper",
    "check_options",
]
