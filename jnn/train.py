"""Training: ``TrainState``, ``make_train_step``, and ``fit`` / ``evaluate`` / ``predict``.

``fit`` runs each epoch as ONE compiled call: an on-device shuffle, a
``lax.scan`` over the batches (the last, partial batch padded and masked, so
every example is used every epoch with a single compilation), the training
metrics accumulated on device, and the validation pass. Python touches the
loop once per epoch.
"""

from __future__ import annotations

import functools
import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jnn import losses as _losses
from jnn import metrics as _metrics
from jnn._data import check_key, check_labels, check_positive_int, check_xy
from jnn._typing import Array, ArrayLike, Params, PRNGKey, State
from jnn.layers._base import AnyLayer, StatefulLayer, _check_layer, close_match, stateful

__all__ = [
    "Callback",
    "EarlyStopping",
    "FitResult",
    "TrainState",
    "evaluate",
    "fit",
    "get_optimizer",
    "make_train_step",
    "predict",
]


# --------------------------------------------------------------------------- state


class TrainState(NamedTuple):
    """Everything a training step reads and writes, as one pytree.

    Attributes:
      params: the trainable params.
      opt_state: the optimizer's state.
      step: number of steps taken (an int32 scalar array).
      key: the PRNG key the next step splits for dropout (and ``fit`` for shuffling).
      model_state: non-trainable state of stateful models (``{}`` otherwise).

    Example:
      >>> import jax, optax, jnn
      >>> _, params = jnn.Dense(1).init(jax.random.key(0), (-1, 3))
      >>> state = jnn.TrainState.create(params, optax.sgd(0.1), key=jax.random.key(1))
      >>> int(state.step)
      0
    """

    params: Params
    opt_state: optax.OptState
    step: Array
    key: PRNGKey
    model_state: State = {}  # noqa: RUF012  (never mutated; NamedTuple default)

    @classmethod
    def create(
        cls,
        params: Params,
        optimizer: optax.GradientTransformation | str,
        *,
        key: PRNGKey,
        model_state: State | None = None,
        learning_rate: float | None = None,
    ) -> TrainState:
        """A fresh state: ``optimizer.init(params)``, step 0.

        Args:
          params: the model's params.
          optimizer: an ``optax.GradientTransformation`` or a name (see
            :func:`get_optimizer`).
          key: the PRNG key that steps split for dropout.
          model_state: the state of a stateful model (default ``{}``).
          learning_rate: for an optimizer given by name.

        Returns:
          A :class:`TrainState` at step 0.

        Raises:
          ValueError: for an unknown optimizer name or a bad learning rate.
          TypeError: if ``key`` is not a PRNG key.

        Example:
          >>> import jax, jnn
          >>> _, params = jnn.Dense(1).init(jax.random.key(0), (-1, 2))
          >>> state = jnn.TrainState.create(params, "adam", key=jax.random.key(1))
          >>> int(state.step), state.model_state
          (0, {})
        """
        tx = get_optimizer(optimizer, learning_rate)
        return cls(
            params=params,
            opt_state=tx.init(params),
            step=jnp.zeros((), jnp.int32),
            key=check_key("TrainState.create", key),
            model_state={} if model_state is None else model_state,
        )


# --------------------------------------------------------------------------- optimizers

_OPTIMIZERS: dict[str, tuple[Callable[..., optax.GradientTransformation], float]] = {
    # name: (optax constructor, Keras's default learning rate)
    "sgd": (optax.sgd, 0.01),
    "adam": (optax.adam, 1e-3),
    "adamw": (optax.adamw, 1e-3),
    "rmsprop": (optax.rmsprop, 1e-3),
    "adagrad": (optax.adagrad, 1e-3),
    "adamax": (optax.adamax, 1e-3),
    "nadam": (optax.nadam, 1e-3),
    "lamb": (optax.lamb, 1e-3),
    "lion": (optax.lion, 1e-4),
}


def get_optimizer(
    optimizer: optax.GradientTransformation | str, learning_rate: float | None = None
) -> optax.GradientTransformation:
    """An optax optimizer from a name and learning rate, or the one given.

    Names: ``"sgd"``, ``"adam"``, ``"adamw"``, ``"rmsprop"``, ``"adagrad"``,
    ``"adamax"``, ``"nadam"``, ``"lamb"``, ``"lion"``, with Keras's default
    learning rates when ``learning_rate`` is None. The same (name, rate) gives
    the same object, so compiled steps are reused across calls.

    Args:
      optimizer: a name or an ``optax.GradientTransformation`` (returned as is).
      learning_rate: a positive number or an optax schedule, for a name only.

    Returns:
      The ``optax.GradientTransformation``.

    Raises:
      ValueError: for an unknown name (with the closest), or a
        ``learning_rate`` given together with an optax object.

    Example:
      >>> import jnn
      >>> tx = jnn.get_optimizer("adam", 1e-2)
      >>> tx is jnn.get_optimizer("adam", 1e-2)
      True
    """
    if isinstance(optimizer, str):
        if optimizer not in _OPTIMIZERS:
            raise ValueError(
                f"Unknown optimizer {optimizer!r}.{close_match(optimizer, _OPTIMIZERS)} Known: "
                f"{', '.join(_OPTIMIZERS)}; or pass any optax.GradientTransformation."
            )
        bad_rate = isinstance(learning_rate, bool) or not (
            learning_rate is None
            or callable(learning_rate)  # an optax schedule
            or (isinstance(learning_rate, (int, float)) and learning_rate > 0)
        )
        if bad_rate:
            raise ValueError(f"learning_rate must be a positive number, got {learning_rate!r}.")
        return _named_optimizer(optimizer, learning_rate)
    if isinstance(optimizer, optax.GradientTransformation):
        if learning_rate is not None:
            raise ValueError(
                "learning_rate is only used with an optimizer name; an optax optimizer "
                "already holds its own (e.g. optax.adam(learning_rate=1e-3))."
            )
        return optimizer
    raise TypeError(
        f"optimizer must be a name ({', '.join(_OPTIMIZERS)}) or an "
        f"optax.GradientTransformation, got {type(optimizer).__name__}."
    )


@functools.lru_cache(maxsize=64)
def _named_optimizer(name: str, learning_rate: Any) -> optax.GradientTransformation:
    ctor, default = _OPTIMIZERS[name]
    return ctor(learning_rate=default if learning_rate is None else learning_rate)


# --------------------------------------------------------------------------- steps

Batch = tuple[ArrayLike, ...]


def _as_model(apply: Any, where: str) -> StatefulLayer:
    """A model, given as a layer or as a bare stateless ``apply`` function."""
    if isinstance(apply, tuple) and hasattr(apply, "init"):
        _check_layer(apply, f"{where}: ")
        return stateful(cast(AnyLayer, apply))
    if callable(apply):
        return _lift_apply(apply)
    raise TypeError(
        f"{where}: expected a jnn layer or an apply function, got {type(apply).__name__}."
    )


@functools.lru_cache(maxsize=64)
def _lift_apply(apply: Callable) -> StatefulLayer:
    def init(key, input_shape):
        raise TypeError("a bare apply function has no init")

    def lifted(params, state, x, *, key=None, train=False):
        return apply(params, x, key=key, train=train), state

    return StatefulLayer(init, lifted)


def _metric_names(metrics: Sequence[Any]) -> list[str]:
    names = []
    for m in metrics:
        if isinstance(m, str):
            names.append(m)
        else:
            fn = m.func if isinstance(m, functools.partial) else m
            names.append(getattr(fn, "__name__", type(fn).__name__))
    if len(set(names)) != len(names) or "loss" in names:
        raise ValueError(f"metric names must be unique and not 'loss', got {names}.")
    return names


def _resolve_metrics(
    metrics: Sequence[Any], loss_fn: Callable | None
) -> tuple[tuple[str, Callable], ...]:
    if isinstance(metrics, (str,)) or callable(metrics):
        metrics = [metrics]
    from_logits = loss_fn in _losses.LOGIT_LOSSES
    names = _metric_names(metrics)
    return tuple(
        (n, _metrics.get(m, from_logits=from_logits)) for n, m in zip(names, metrics, strict=True)
    )


def _pure_step(
    model: StatefulLayer,
    loss_fn: Callable,
    tx: optax.GradientTransformation,
    metric_fns: tuple[tuple[str, Callable], ...],
) -> Callable:
    """``step(state, x, y, w) -> (state, metrics)``; ``w`` is None or per-example weights."""

    def step(state: TrainState, x: Array, y: Array, w: Array | None):
        key, dropout_key = jax.random.split(state.key)

        def objective(params):
            pred, model_state = model.apply(
                params, state.model_state, x, key=dropout_key, train=True
            )
            value = loss_fn(pred, y) if w is None else loss_fn(pred, y, weights=w)
            return value, (pred, model_state)

        (loss, (pred, model_state)), grads = jax.value_and_grad(objective, has_aux=True)(
            state.params
        )
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        logs = {"loss": loss}
        for name, fn in metric_fns:
            logs[name] = fn(pred, y) if w is None else fn(pred, y, weights=w)
        new_state = TrainState(params, opt_state, state.step + 1, key, model_state)
        return new_state, logs

    return step


def make_train_step(
    apply: AnyLayer | Callable,
    loss: str | Callable,
    optimizer: optax.GradientTransformation | str,
    *,
    learning_rate: float | None = None,
    metrics: Sequence[str | Callable] = (),
    donate: bool = True,
) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, Array]]]:
    """One pure, jit-compiled training step ``step(state, batch) -> (state, metrics)``.

    Args:
      apply: the model (a :class:`jnn.Layer` / :class:`jnn.StatefulLayer`) or a
        stateless ``apply(params, x, *, key=None, train=False)`` function.
      loss: a loss function or its name (see :func:`jnn.losses.get`).
      optimizer: an ``optax.GradientTransformation`` or a name (``"sgd"``,
        ``"adam"``, ...) used with ``learning_rate``.
      learning_rate: for an optimizer given by name.
      metrics: names or functions computed on the step's predictions.
      donate: donate the input state's buffers to the output (the input state
        must not be used again). Saves a copy of params and optimizer state.

    Returns:
      ``step(state, batch)``, where ``batch`` is ``(x, y)`` or
      ``(x, y, weights)``, returning the new :class:`TrainState` and a dict of
      scalar metrics (``"loss"`` first). The step splits ``state.key`` for
      dropout. It is compiled once per input shape and never retraces across
      steps or epochs.

    Example:
      >>> import jax, jax.numpy as jnp, jnn
      >>> model = jnn.serial(jnn.Dense(4, activation="relu"), jnn.Dense(1))
      >>> _, params = model.init(jax.random.key(0), (-1, 3))
      >>> step = jnn.make_train_step(model, "mse", "sgd", learning_rate=0.1)
      >>> state = jnn.TrainState.create(params, "sgd", learning_rate=0.1, key=jax.random.key(1))
      >>> x, y = jnp.ones((8, 3)), jnp.zeros((8, 1))
      >>> for _ in range(3):
      ...     state, logs = step(state, (x, y))
      >>> int(state.step), sorted(logs)
      (3, ['loss'])
    """
    model = _as_model(apply, "make_train_step")
    loss_fn = _losses.get(loss)
    tx = get_optimizer(optimizer, learning_rate)
    pure = _pure_step(model, loss_fn, tx, _resolve_metrics(metrics, loss_fn))

    def step(state: TrainState, batch: Batch):
        if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
            raise TypeError("step: batch must be (x, y) or (x, y, weights).")
        return pure(state, batch[0], batch[1], batch[2] if len(batch) == 3 else None)

    return jax.jit(step, donate_argnums=(0,) if donate else ())


# --------------------------------------------------------------------------- epochs


def _batched(n: int, batch_size: int) -> tuple[int, int]:
    """(number of batches, padding) so that every one of ``n`` examples is used."""
    num_batches = math.ceil(n / batch_size)
    return num_batches, num_batches * batch_size - n


def _gather_batches(arrays: Sequence[Array], idx: Array, num_batches: int) -> list[Array]:
    return [jnp.take(a, idx, axis=0).reshape(num_batches, -1, *a.shape[1:]) for a in arrays]


def _weighted_logs(logs: dict[str, Array], w: Array) -> tuple[dict[str, Array], Array]:
    total = jnp.sum(w)
    return {k: v * total for k, v in logs.items()}, total


def _finish_logs(sums: dict[str, Array], count: Array) -> dict[str, Array]:
    return {k: v / jnp.maximum(count, 1e-30) for k, v in sums.items()}


def _eval_fn(model: StatefulLayer, loss_fn: Callable | None, metric_fns, batch_size: int):
    """``run(params, model_state, x, y, w) -> logs``: a scan over padded batches."""

    def logs_of(pred, y, w):
        logs = {} if loss_fn is None else {"loss": loss_fn(pred, y, weights=w)}
        for name, fn in metric_fns:
            logs[name] = fn(pred, y, weights=w)
        return logs

    def run(params, model_state, x, y, w):
        num_batches, pad = _batched(x.shape[0], batch_size)
        idx = jnp.concatenate([jnp.arange(x.shape[0]), jnp.zeros((pad,), jnp.int32)])
        w = jnp.concatenate([w, jnp.zeros((pad,), w.dtype)])
        xs, ys = _gather_batches([x, y], idx, num_batches)
        ws = w.reshape(num_batches, batch_size)

        def body(carry, batch):
            xb, yb, wb = batch
            pred, _ = model.apply(params, model_state, xb, train=False)
            sums, count = _weighted_logs(logs_of(pred, yb, wb), wb)
            return jax.tree.map(jnp.add, carry, (sums, count)), None

        zero = jax.eval_shape(
            lambda: _weighted_logs(
                logs_of(model.apply(params, model_state, xs[0], train=False)[0], ys[0], ws[0]),
                ws[0],
            )
        )
        zero = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), zero)
        (sums, count), _ = jax.lax.scan(body, zero, (xs, ys, ws))
        return _finish_logs(sums, count)

    return run


@functools.lru_cache(maxsize=32)
def _compiled_epoch(
    model: StatefulLayer,
    loss_fn: Callable,
    tx: optax.GradientTransformation,
    metric_fns: tuple[tuple[str, Callable], ...],
    batch_size: int,
    shuffle: bool,
    validate: bool,
) -> Callable:
    """One jitted call per epoch: shuffle, scan the train steps, then validate."""
    step = _pure_step(model, loss_fn, tx, metric_fns)
    evaluate_fn = _eval_fn(model, loss_fn, metric_fns, batch_size)

    def epoch(state: TrainState, x, y, w, val):
        n = x.shape[0]
        num_batches, pad = _batched(n, batch_size)
        key, perm_key = jax.random.split(state.key)
        state = state._replace(key=key)
        order = jax.random.permutation(perm_key, n) if shuffle else jnp.arange(n)
        # Pad the last batch with weight-0 copies of example 0: one shape, one compile.
        idx = jnp.concatenate([order, jnp.zeros((pad,), order.dtype)])
        xs, ys, ws = _gather_batches([x, y, w], idx, num_batches)
        ws = ws * (jnp.arange(num_batches * batch_size) < n).reshape(ws.shape)

        def body(carry, batch):
            state, sums, count = carry
            state, logs = step(state, *batch)
            logs, total = _weighted_logs(logs, batch[2])
            return (state, jax.tree.map(jnp.add, sums, logs), count + total), None

        logs_shape = jax.eval_shape(step, state, xs[0], ys[0], ws[0])[1]
        zeros = {k: jnp.zeros((), s.dtype) for k, s in logs_shape.items()}
        (state, sums, count), _ = jax.lax.scan(body, (state, zeros, jnp.zeros(())), (xs, ys, ws))
        logs = _finish_logs(sums, count)
        if validate:
            val_logs = evaluate_fn(state.params, state.model_state, *val)
            logs.update({f"val_{k}": v for k, v in val_logs.items()})
        return state, logs

    return jax.jit(epoch, donate_argnums=(0,))


# --------------------------------------------------------------------------- fit


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


def fit(
    model: AnyLayer,
    params: Params,
    data: tuple[ArrayLike, ArrayLike],
    *,
    loss: str | Callable,
    optimizer: optax.GradientTransformation | str = "adam",
    learning_rate: float | None = None,
    epochs: int = 1,
    batch_size: int = 32,
    key: PRNGKey,
    metrics: Sequence[str | Callable] = (),
    validation_data: tuple[ArrayLike, ArrayLike] | None = None,
    sample_weight: ArrayLike | None = None,
    shuffle: bool = True,
    early_stopping: EarlyStopping | None = None,
    callbacks: Sequence[Callback] = (),
    model_state: State | None = None,
    opt_state: optax.OptState | None = None,
    verbose: int = 1,
) -> FitResult:
    """Train ``model`` on ``data = (x, y)``; each epoch is one compiled call.

    Args:
      model: a :class:`jnn.Layer` or :class:`jnn.StatefulLayer`.
      params: the model's params (from ``model.init``); not modified.
      data: ``(x, y)`` arrays with the same number of examples.
      loss: a loss function ``loss(pred, y, *, weights)`` or its name
        (``"mse"``, ``"bce"``, ``"bce_with_logits"``, ``"cross_entropy"``, ...).
      optimizer: an ``optax.GradientTransformation`` or a name (``"sgd"``,
        ``"adam"``, ``"adamw"``, ``"rmsprop"``, ...).
      learning_rate: for an optimizer given by name (default: Keras's).
      epochs: passes over the data.
      batch_size: examples per step (at most the number of examples). The last
        batch of an epoch may be partial: it is padded and masked, never dropped.
      key: PRNG key for shuffling and dropout (``jax.random.key(seed)``).
      metrics: names (``"accuracy"``) or functions ``m(pred, y, *, weights)``.
        Accuracy thresholds at 0.5, or at 0 for a logits loss.
      validation_data: ``(x_val, y_val)`` evaluated at the end of every epoch,
        inside the same compiled call, reported as ``"val_<name>"``.
      sample_weight: optional per-example weights of shape ``(N,)``.
      shuffle: reshuffle the examples every epoch (on device, from ``key``).
      early_stopping: an :class:`EarlyStopping` configuration.
      callbacks: functions ``cb(epoch, logs, state)``; one returning True stops.
      model_state: required for stateful models (the third output of ``init``).
      opt_state: an optimizer state to continue from (default: fresh).
      verbose: 0 silent, 1 a progress bar over epochs, 2 one line per epoch.

    Returns:
      A :class:`FitResult` with ``.params``, ``.opt_state``, ``.model_state``,
      ``.state`` and ``.history``. The same key and data give bit-identical
      params on the same device.

    Raises:
      TypeError / ValueError: for bad data (non-numeric, empty, mismatched
        lengths, NaN/Inf, wrong feature size, labels out of range), bad sizes
        or unknown names, all before compiling.

    Example:
      >>> import jax, numpy as np, jnn
      >>> x = np.random.default_rng(0).normal(size=(64, 3)).astype("float32")
      >>> y = (x.sum(1, keepdims=True) > 0).astype("float32")
      >>> model = jnn.serial(jnn.Dense(8, activation="relu"), jnn.Dense(1, activation="sigmoid"))
      >>> _, params = model.init(jax.random.key(0), (-1, 3))
      >>> res = jnn.fit(model, params, (x, y), loss="bce", epochs=3, batch_size=16,
      ...               key=jax.random.key(1), metrics=["accuracy"], verbose=0)
      >>> sorted(res.history), len(res.history["loss"])
      (['accuracy', 'loss'], 3)
    """
    where = "fit"
    _check_layer(model, f"{where}: model: ")
    smodel = stateful(model)
    model_state = _check_model_state(where, model, model_state)
    x, y, w = check_xy(where, data, weights=sample_weight)
    epochs = check_positive_int(where, "epochs", epochs)
    batch_size = min(check_positive_int(where, "batch_size", batch_size), x.shape[0])
    key = check_key(where, key)
    loss_fn = _losses.get(loss)
    tx = get_optimizer(optimizer, learning_rate)
    metric_fns = _resolve_metrics(metrics, loss_fn)
    val = None
    if validation_data is not None:
        val = tuple(jnp.asarray(a) for a in check_xy(f"{where}: validation_data", validation_data))

    out_shape = _check_trace(where, smodel, params, model_state, loss_fn, metric_fns, x, y, w)
    check_labels(
        where, loss if isinstance(loss, str) else getattr(loss_fn, "__name__", None), y, out_shape
    )
    history_keys = ["loss", *(n for n, _ in metric_fns)]
    if val is not None:
        history_keys += [f"val_{k}" for k in history_keys]
    if early_stopping is not None and early_stopping.monitor not in history_keys:
        raise ValueError(
            f"{where}: early_stopping monitors {early_stopping.monitor!r}, which is not "
            f"recorded.{close_match(early_stopping.monitor, history_keys)} Recorded: "
            f"{history_keys}" + ("" if val is not None else "; val_* needs validation_data.")
        )

    # Fresh buffers: the compiled epoch donates its state, never the caller's arrays.
    params = _copy_tree(params)
    state = TrainState(
        params=params,
        opt_state=tx.init(params) if opt_state is None else _copy_tree(opt_state),
        step=jnp.zeros((), jnp.int32),
        key=_copy_tree(key),
        model_state=_copy_tree(model_state),
    )
    epoch_fn = _compiled_epoch(
        smodel, loss_fn, tx, metric_fns, batch_size, shuffle, val is not None
    )
    xd, yd, wd = (jnp.asarray(a) for a in (x, y, w))
    history: dict[str, list[float]] = {k: [] for k in history_keys}
    stopper = _Stopper(early_stopping) if early_stopping is not None else None
    progress = _Progress(epochs, verbose)
    for epoch in range(epochs):
        start = time.perf_counter()
        state, logs = epoch_fn(state, xd, yd, wd, val)
        logs = {k: float(logs[k]) for k in history_keys}  # "loss" first, then metrics
        for k, v in logs.items():
            history[k].append(v)
        progress.update(epoch, logs, time.perf_counter() - start)
        stop = stopper is not None and stopper.update(epoch, logs[stopper.config.monitor], state)
        for cb in callbacks:
            stop = bool(cb(epoch, logs, state)) or stop
        if stop:
            break
    progress.close()
    if stopper is not None and stopper.config.restore_best and stopper.best_state is not None:
        state = stopper.best_state
    return FitResult(state, history)


def _copy_tree(tree: Any) -> Any:
    return jax.tree.map(lambda a: jnp.asarray(a).copy(), tree)


def _check_model_state(where: str, model: AnyLayer, model_state: State | None) -> State:
    if isinstance(model, StatefulLayer):
        if model_state is None:
            raise ValueError(
                f"{where}: the model is stateful (e.g. BatchNorm); pass model_state=, the third "
                "value returned by model.init(key, input_shape)."
            )
        return model_state
    return {} if model_state is None else model_state


def _check_trace(where, model, params, model_state, loss_fn, metric_fns, x, y, w):
    """Trace (not compile) the model and loss on one batch: shape errors surface here."""
    xb, yb = (
        jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype),
        jax.ShapeDtypeStruct((1, *y.shape[1:]), y.dtype),
    )

    def probe(params, model_state, xb, yb):
        pred, _ = model.apply(params, model_state, xb, train=False)
        wb = jnp.ones((1,), jnp.float32)
        loss_fn(pred, yb, weights=wb)
        for _, fn in metric_fns:
            fn(pred, yb, weights=wb)
        return pred

    try:
        out = jax.eval_shape(probe, params, model_state, xb, yb)
    except TypeError as err:
        if "weights" in str(err) and "unexpected keyword" in str(err):
            raise TypeError(
                f"{where}: the loss and metric functions must accept a keyword argument "
                "`weights` (per-example weights; fit masks the padded last batch with it): "
                f"{err}"
            ) from None
        raise
    return tuple(jax.tree.leaves(out)[0].shape)


class _Stopper:
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


class _Progress:
    """An epoch-level progress bar (verbose=1) or one line per epoch (verbose=2)."""

    def __init__(self, epochs: int, verbose: int):
        self.epochs, self.verbose = epochs, verbose
        self.tty = verbose == 1 and sys.stdout.isatty()

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
        line += f" {seconds * 1e3:.0f}ms - {text}"
        if self.tty:
            sys.stdout.write("\r\x1b[2K" + line)
        else:
            sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def close(self) -> None:
        if self.tty:
            sys.stdout.write("\n")
            sys.stdout.flush()


# --------------------------------------------------------------------------- evaluate / predict


@functools.lru_cache(maxsize=32)
def _compiled_eval(model, loss_fn, metric_fns, batch_size):
    return jax.jit(_eval_fn(model, loss_fn, metric_fns, batch_size))


def evaluate(
    model: AnyLayer,
    params: Params,
    data: tuple[ArrayLike, ArrayLike],
    *,
    loss: str | Callable | None = None,
    metrics: Sequence[str | Callable] = (),
    batch_size: int = 256,
    sample_weight: ArrayLike | None = None,
    model_state: State | None = None,
) -> dict[str, float]:
    """Loss and metrics of ``model`` on ``data = (x, y)``, in evaluation mode.

    One compiled ``lax.scan`` over batches; the last partial batch is padded
    and masked so every example counts exactly once.

    Args:
      model: a :class:`jnn.Layer` or :class:`jnn.StatefulLayer`.
      params: its params.
      data: ``(x, y)`` arrays with the same number of examples.
      loss: a loss function or its name; optional if ``metrics`` are given.
      metrics: names (``"accuracy"``) or functions ``m(pred, y, *, weights)``.
      batch_size: examples per compiled step.
      sample_weight: optional per-example weights of shape ``(N,)``.
      model_state: required for stateful models.

    Returns:
      A dict such as ``{"loss": 0.31, "accuracy": 0.9}``.

    Raises:
      TypeError / ValueError: for bad data, bad sizes, unknown names, or
        neither a loss nor metrics, all before compiling.

    Example:
      >>> import jax, jax.numpy as jnp, jnn
      >>> model = jnn.Dense(1)
      >>> _, params = model.init(jax.random.key(0), (-1, 2))
      >>> params = {"w": jnp.zeros((2, 1)), "b": jnp.ones(1)}
      >>> jnn.evaluate(model, params, (jnp.ones((5, 2)), jnp.zeros((5, 1))), loss="mse")
      {'loss': 1.0}
    """
    where = "evaluate"
    _check_layer(model, f"{where}: model: ")
    if loss is None and not metrics:
        raise ValueError(f"{where}: give a loss and/or metrics to compute.")
    smodel = stateful(model)
    model_state = _check_model_state(where, model, model_state)
    x, y, w = check_xy(where, data, weights=sample_weight)
    batch_size = min(check_positive_int(where, "batch_size", batch_size), x.shape[0])
    loss_fn = None if loss is None else _losses.get(loss)
    metric_fns = _resolve_metrics(metrics, loss_fn)
    _check_trace(
        where,
        smodel,
        params,
        model_state,
        loss_fn or (lambda p, t, weights: jnp.zeros(())),
        metric_fns,
        x,
        y,
        w,
    )
    run = _compiled_eval(smodel, loss_fn, metric_fns, batch_size)
    logs = run(params, model_state, jnp.asarray(x), jnp.asarray(y), jnp.asarray(w))
    return {k: float(v) for k, v in logs.items()}


@functools.lru_cache(maxsize=32)
def _compiled_forward(model: StatefulLayer) -> Callable:
    return jax.jit(lambda params, state, x: model.apply(params, state, x, train=False)[0])


def predict(
    model: AnyLayer,
    params: Params,
    x: ArrayLike,
    *,
    batch_size: int = 1024,
    model_state: State | None = None,
) -> np.ndarray:
    """Outputs of ``model`` for every row of ``x``, in evaluation mode.

    ``x`` stays where it is (host memory for numpy input); batches go to the
    device one at a time, so device memory holds one batch of activations
    however large ``x`` is. The last batch is padded to ``batch_size``: one
    compilation for any number of rows.

    Args:
      model: the model.
      params: its params.
      x: inputs, ``(N, ...)``.
      batch_size: rows per device call.
      model_state: required for stateful models.

    Returns:
      A numpy array with one output row per input row (a pytree of them for
      models with several outputs).

    Example:
      >>> import jax, jax.numpy as jnp, jnn
      >>> model = jnn.Dense(2)
      >>> _, params = model.init(jax.random.key(0), (-1, 3))
      >>> jnn.predict(model, params, jnp.ones((5, 3)), batch_size=2).shape
      (5, 2)
    """
    from jnn._data import as_host_array

    where = "predict"
    _check_layer(model, f"{where}: model: ")
    smodel = stateful(model)
    model_state = _check_model_state(where, model, model_state)
    x = as_host_array(where, "x", x)
    n = x.shape[0]
    batch_size = min(check_positive_int(where, "batch_size", batch_size), n)
    forward = _compiled_forward(smodel)
    jax.eval_shape(
        forward, params, model_state, jax.ShapeDtypeStruct((batch_size, *x.shape[1:]), x.dtype)
    )

    def batch(i: int) -> Any:
        xb = x[i : i + batch_size]
        if xb.shape[0] < batch_size:
            xb = np.concatenate([xb, np.zeros((batch_size - xb.shape[0], *x.shape[1:]), x.dtype)])
        return forward(params, model_state, jax.device_put(xb))

    outputs, pending = [], batch(0)
    for i in range(batch_size, n + batch_size, batch_size):
        nxt = batch(i) if i < n else None  # dispatch the next batch before waiting
        outputs.append(jax.tree.map(np.asarray, pending))
        pending = nxt
    rows = [
        jax.tree.map(lambda o, k=k: o[: min(batch_size, n - k)], out)
        for k, out in zip(range(0, n, batch_size), outputs, strict=True)
    ]
    result = jax.tree.map(lambda *parts: np.concatenate(parts), *rows)
    for leaf in jax.tree.leaves(result):
        if leaf.ndim == 0 or leaf.shape[0] != n:
            raise ValueError(f"{where}: the model's output has no per-example leading axis.")
    return result
