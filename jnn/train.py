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
import os
import signal
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple, Protocol, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from jnn import checkpoint as _checkpoint
from jnn import distributed as _distributed
from jnn import losses as _losses
from jnn import metrics as _metrics
from jnn._data import (
    check_int,
    check_key,
    check_labels,
    check_number,
    check_positive_int,
    check_xy,
    close_match,
)
from jnn._reduce import ShapeMismatchError
from jnn._typing import Array, ArrayLike, Params, PRNGKey, State
from jnn.layers._base import AnyLayer, StatefulLayer, _check_layer, stateful

__all__ = [
    "Callback",
    "EarlyStopping",
    "FitResult",
    "NonFiniteError",
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
      key: the PRNG key; step ``i``'s dropout key is ``fold_in(key, i)`` (``fit``
        splits a fresh key per epoch, and one for the shuffle).
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
          key: the PRNG key that steps fold their step number into for dropout.
          model_state: the state of a stateful model (default ``{}``).
          learning_rate: for an optimizer given by name.

        Returns:
          A :class:`TrainState` at step 0. It holds copies of ``params``,
          ``model_state`` and ``key``: a donating step consumes the state, not
          the arrays you passed.

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
        key = check_key("TrainState.create", key)
        # Copies: a donating step (make_train_step) deletes the state's buffers, never the
        # caller's params, model state or key.
        params, model_state, key = _copy_tree((params, {} if model_state is None else model_state,
                                               key))  # fmt: skip
        return cls(
            params=params,
            opt_state=tx.init(params),
            step=jnp.zeros((), jnp.int32),
            key=key,
            model_state=model_state,
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
        if learning_rate is not None and not callable(learning_rate):  # not an optax schedule
            learning_rate = check_number("get_optimizer", "learning_rate", learning_rate,
                                         low=0.0, low_open=True)  # fmt: skip
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


@functools.lru_cache(maxsize=64)
def _jit_init(tx: optax.GradientTransformation) -> Callable:
    """``jax.jit(tx.init)``, cached: one compiled call instead of a dispatch per leaf."""
    return jax.jit(tx.init)


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
    if not isinstance(metrics, (list, tuple)) or not all(
        isinstance(m, str) or callable(m) for m in metrics
    ):
        raise TypeError(
            f"metrics must be a list of metric names or functions, e.g. ['accuracy'], got "
            f"{metrics!r}."
        )
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
    guard: bool = False,
) -> Callable:
    """``step(state, x, y, w) -> (state, metrics)``; ``w`` is None or per-example weights.

    With ``guard=True`` it is ``step(state, x, y, w, allow) -> (state, metrics,
    finite)``: ``finite`` says whether the loss and every gradient are finite,
    and the update is applied only when the step is finite and ``allow`` is
    True; otherwise the state is kept as it was. The choice
    is a ``lax.cond`` around the optimizer update, not a ``jnp.where`` over the
    state: a where reads and writes params and optimizer state once more per
    step, which costs a third of a step on a compute-bound MLP.
    """

    def step(state: TrainState, x: Array, y: Array, w: Array | None, allow: Any = None):
        # A per-step key folded from (key, step), not a split carried through the scan:
        # a model without dropout never uses it, and XLA then drops the RNG entirely.
        dropout_key = jax.random.fold_in(state.key, state.step)

        def objective(params):
            pred, model_state = model.apply(
                params, state.model_state, x, key=dropout_key, train=True
            )
            value = loss_fn(pred, y) if w is None else loss_fn(pred, y, weights=w)
            return value, (pred, model_state)

        (loss, (pred, model_state)), grads = jax.value_and_grad(objective, has_aux=True)(
            state.params
        )
        logs = {"loss": loss}
        for name, fn in metric_fns:
            logs[name] = fn(pred, y) if w is None else fn(pred, y, weights=w)

        def update(state: TrainState) -> TrainState:
            updates, opt_state = tx.update(grads, state.opt_state, state.params)
            params = optax.apply_updates(state.params, updates)
            return TrainState(params, opt_state, state.step + 1, state.key, model_state)

        if not guard:
            return update(state), logs
        finite = _all_finite(loss, grads)
        ok = finite if allow is None else jnp.logical_and(finite, allow)
        new_state = jax.lax.cond(ok, update, lambda state: state, state)
        return new_state, logs, finite

    return step


def _all_finite(loss: Array, grads: Params) -> Array:
    """One bool: loss and all gradients finite (a few reductions, fused by XLA)."""
    flags = [jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]
    return jnp.logical_and(jnp.isfinite(loss), jnp.all(jnp.stack([jnp.bool_(True), *flags])))


def _guarded(step: Callable, on_nan: str, state, xb, yb, wb, guard):
    """One guarded step: ``(state, logs, weights, guard)``.

    ``guard = (index, first_bad, skipped)``: the step's index in the epoch, the
    index of the first non-finite step (-1: none) and the number of skipped steps.
    With ``"skip_batch"`` every finite step updates; otherwise nothing updates
    from the first non-finite step on (the state stays the one before it). A
    rejected step's logs count with weight 0 (``where``, not a product: NaN * 0
    is NaN).
    """
    index, first_bad, skipped = guard
    allow = None if on_nan == "skip_batch" else first_bad < 0
    state, logs, finite = step(state, xb, yb, wb, allow)
    ok = finite if allow is None else jnp.logical_and(finite, allow)
    logs = {k: jnp.where(ok, v, jnp.zeros_like(v)) for k, v in logs.items()}
    first_bad = jnp.where(jnp.logical_and(first_bad < 0, ~finite), index, first_bad)
    skipped = skipped + (~finite).astype(jnp.int32)
    return state, logs, jnp.where(ok, wb, jnp.zeros_like(wb)), (index + 1, first_bad, skipped)


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
        must not be used again: doing so is a ``ValueError`` saying so). Saves
        a copy of params and optimizer state. :meth:`TrainState.create` copies
        what it is given, so the arrays you built the state from stay usable.

    Returns:
      ``step(state, batch)``, where ``batch`` is ``(x, y)`` or
      ``(x, y, weights)``, returning the new :class:`TrainState` and a dict of
      scalar metrics (``"loss"`` first). Dropout uses
      ``jax.random.fold_in(state.key, state.step)``. It is compiled once per
      input shape and never retraces across steps or epochs.

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

    compiled = jax.jit(step, donate_argnums=(0,) if donate else ())
    if not donate:
        return compiled

    @functools.wraps(step)
    def donating_step(state: TrainState, batch: Batch):
        try:
            return compiled(state, batch)
        except Exception as err:  # a donated (deleted) input fails inside jax: say so
            leaves = jax.tree_util.tree_leaves_with_path(state)
            gone = [jax.tree_util.keystr(p) for p, a in leaves if _is_deleted(a)]
            if not gone:
                raise
            raise ValueError(
                f"step: the state passed in was already donated to an earlier step (its buffer "
                f"{gone[0]} is deleted): donation reuses the input state's memory for the "
                "output. Pass the state the previous step returned (state, logs = step(state, "
                "batch)), or build the step with donate=False to keep inputs alive."
            ) from err

    return donating_step


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


def _eval_fn(
    model: StatefulLayer,
    loss_fn: Callable | None,
    metric_fns,
    batch_size: int,
    plan: _distributed._Plan | None = None,
):
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
        if plan is not None:  # split each batch over the mesh's data axis
            xs, ys, ws = plan.constrain_batches(xs, ys, ws)

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


def _epoch_fn(
    model: StatefulLayer,
    loss_fn: Callable,
    tx: optax.GradientTransformation,
    metric_fns: tuple[tuple[str, Callable], ...],
    batch_size: int,
    shuffle: bool,
    validate: bool,
    on_nan: str | None = None,
    plan: _distributed._Plan | None = None,
) -> Callable:
    """The pure (un-jitted) ``epoch(state, x, y, w, val) -> (state, logs)``.

    Shuffle, scan the train steps, then validate. ``fit`` jits it
    (:func:`_compiled_epoch`); ``jnn.experiments`` vmaps it over runs. With
    ``on_nan`` set, the logs also hold ``"_nan_first"`` (index of the first
    non-finite step, -1 if none) and ``"_nan_skipped"`` (non-finite steps).
    With a ``plan`` (a mesh), each batch is split along the data axis and the
    state kept in its layout; XLA inserts the gradient all-reduce.
    """
    step = _pure_step(model, loss_fn, tx, metric_fns, guard=on_nan is not None)
    evaluate_fn = _eval_fn(model, loss_fn, metric_fns, batch_size, plan)

    def epoch(state: TrainState, x, y, w, val):
        n = x.shape[0]
        num_batches, pad = _batched(n, batch_size)
        key, perm_key = jax.random.split(state.key)
        state = state._replace(key=key)
        order = jax.random.permutation(perm_key, n) if shuffle else jnp.arange(n)
        # Pad the last batch with weight-0 repeats of the epoch's first `pad` (distinct, real)
        # examples: one shape, one compile, and batch statistics (BatchNorm in training mode)
        # see real data rather than `pad` copies of a single example. pad < batch_size <= n.
        idx = jnp.concatenate([order, order[:pad]])
        xs, ys, ws = _gather_batches([x, y, w], idx, num_batches)
        ws = ws * (jnp.arange(num_batches * batch_size) < n).reshape(ws.shape)
        if plan is not None:
            xs, ys, ws = plan.constrain_batches(xs, ys, ws)

        def body(carry, batch):
            state, sums, count, guard = carry
            wb = batch[2]
            if on_nan is None:
                state, logs = step(state, *batch)
            else:
                state, logs, wb, guard = _guarded(step, on_nan, state, *batch, guard)
            if plan is not None:
                state = plan.constrain_state(state)
            logs, total = _weighted_logs(logs, wb)
            return (state, jax.tree.map(jnp.add, sums, logs), count + total, guard), None

        logs_shape = jax.eval_shape(step, state, xs[0], ys[0], ws[0])[1]
        zeros = {k: jnp.zeros((), s.dtype) for k, s in logs_shape.items()}
        guard = (jnp.int32(0), jnp.int32(-1), jnp.int32(0))
        (state, sums, count, guard), _ = jax.lax.scan(
            body, (state, zeros, jnp.zeros(()), guard), (xs, ys, ws)
        )
        logs = _finish_logs(sums, count)
        if on_nan is not None:
            logs["_nan_first"], logs["_nan_skipped"] = guard[1], guard[2]
        if validate:
            val_logs = evaluate_fn(state.params, state.model_state, *val)
            logs.update({f"val_{k}": v for k, v in val_logs.items()})
        return state, logs

    return epoch


@functools.lru_cache(maxsize=32)
def _compiled_epoch(*args: Any) -> Callable:
    """One jitted call per epoch: :func:`_epoch_fn` of the same arguments, compiled, state
    donated (cached, so a second ``fit`` with the same model and settings reuses it)."""
    return jax.jit(_epoch_fn(*args), donate_argnums=(0,))


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
    data: tuple[ArrayLike, ArrayLike] | Iterable | Callable[[], Iterable],
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
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
    checkpoint_keep: int | None = 3,
    resume: bool = False,
    on_nan: str | None = "raise",
    steps_per_call: int = 1,
    steps_per_epoch: int | None = None,
    validation_steps: int | None = None,
    mesh: Mesh | str | None = None,
    param_sharding: str | None = None,
) -> FitResult:
    """Train ``model`` on ``data = (x, y)``; each epoch is one compiled call.

    Ctrl-C (SIGINT, in the main thread) stops ``fit`` after the epoch running
    (a second Ctrl-C aborts at once): it returns, and saves, the state of the
    last completed epoch, with a warning.

    Args:
      model: a :class:`jnn.Layer` or :class:`jnn.StatefulLayer`.
      params: the model's params (from ``model.init``); not modified.
      data: ``(x, y)`` arrays with the same number of examples; or a stream of
        batches that need not fit on the device: an iterable or iterator of
        ``(x, y)`` / ``(x, y, weights)`` batches (numpy arrays, or anything
        ``np.asarray`` takes, e.g. CPU torch tensors), or a callable returning a
        fresh iterator per epoch. A re-iterable (a list, a ``grain`` loader or
        dataset, a torch ``DataLoader``) is iterated afresh each epoch; an
        iterator is consumed across epochs. Stream batches are used in the
        order given (``shuffle`` is the loader's business), padded to the first
        batch's size (which replaces ``batch_size``; a later, smaller batch is
        masked, never dropped) and fed ``steps_per_call`` at a time while the
        next group is put on the device. See the README's "Streaming data".
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
      checkpoint_dir: save the full training state (params, optimizer and model
        state, step, PRNG key, history) there with :mod:`jnn.checkpoint`, atomically.
      checkpoint_every: save every this many epochs (and always after the last
        epoch, on early stopping, on Ctrl-C and on ``on_nan="stop"``).
      checkpoint_keep: how many checkpoints to keep (None: all).
      resume: continue from the newest good checkpoint in ``checkpoint_dir``
        (start fresh if there is none). The checkpoint's state replaces
        ``params``/``opt_state``/``model_state``/``key``, and its epochs count
        towards ``epochs``: an interrupted run resumed with the same arguments
        ends bit-identical (same device) to an uninterrupted one. Early
        stopping's patience counter restarts on resume.
      on_nan: what to do when a step's loss or gradients are not finite (checked
        inside the compiled epoch): ``"raise"`` a :class:`NonFiniteError` naming
        the epoch and step, carrying ``.result`` with the state from just before
        that step; ``"stop"`` returns that state with a warning; ``"skip_batch"``
        skips the bad steps' updates (a warning counts them) and goes on; None
        turns the check off. That mid-epoch state is returned, not saved: the
        checkpoints on disk stay those of completed epochs.
      steps_per_call: for a stream, batches stacked and run as one compiled
        ``lax.scan`` call (e.g. 64); a short last group runs its real steps
        only (one more compilation). Ignored for arrays (one call per epoch).
      steps_per_epoch: for a stream, batches per epoch (needed for an
        infinite one; an iterator then continues where the last epoch ended).
      validation_steps: batches of a ``validation_data`` stream per epoch.
      mesh: a ``jax.sharding.Mesh`` (e.g. :func:`jnn.distributed.make_mesh`) or
        ``"auto"`` (every device): batches are split along its ``"data"`` axis
        (or its only axis), so ``batch_size`` is the global batch and must be a
        multiple of that axis's size. In a multi-process run ``data`` is this
        process's own shard (see :mod:`jnn.distributed`).
      param_sharding: with a mesh, ``"replicated"`` (default) or ``"fsdp"``:
        params and optimizer state split along the data axis (each leaf along
        its largest divisible dimension), for models too big to replicate.

    Returns:
      A :class:`FitResult` with ``.params``, ``.opt_state``, ``.model_state``,
      ``.state`` and ``.history``. The same key and data give bit-identical
      params on the same device (and the same params, to float tolerance, on
      any mesh). With a mesh the arrays are global; see
      :func:`jnn.distributed.gather`.

    Raises:
      TypeError / ValueError: for bad data (non-numeric, empty, mismatched
        lengths, NaN/Inf, wrong feature size, labels out of range), bad sizes
        or unknown names, all before compiling.
      NonFiniteError: with ``on_nan="raise"``, when training diverges.
      jnn.checkpoint.CheckpointError: when resuming from a checkpoint that does
        not match this model/optimizer.

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
      >>> batches = lambda: ((x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16))
      >>> res = jnn.fit(model, params, batches, loss="bce", epochs=2, key=jax.random.key(1),
      ...               steps_per_call=4, verbose=0)  # a stream: 4 batches per compiled call
      >>> int(res.state.step)
      8
    """
    where = "fit"
    _check_layer(model, f"{where}: model: ")
    smodel = stateful(model)
    model_state = _check_model_state(where, model, model_state)
    plan = _distributed._plan(where, mesh, param_sharding)
    source = _stream_source(
        where, data, steps_per_epoch, sample_weight=sample_weight, plan=plan,
        steps_name="steps_per_epoch",
    )  # fmt: skip
    x, y, w = check_xy(where, data, weights=sample_weight) if source is None else source.first
    epochs = check_positive_int(where, "epochs", epochs)
    n = x.shape[0] if plan is None else plan.global_rows(where, x.shape[0])
    batch_size = min(check_positive_int(where, "batch_size", batch_size), n)
    if source is not None:  # a stream's batches set the compiled batch size
        batch_size = source.spec.batch_size
    if plan is not None:
        batch_size = plan.batch_size(where, batch_size, n)
    key = check_key(where, key)
    loss_fn = _losses.get(loss)
    tx = get_optimizer(optimizer, learning_rate)
    metric_fns = _resolve_metrics(metrics, loss_fn)
    checkpoint_every = check_positive_int(where, "checkpoint_every", checkpoint_every)
    on_nan = _check_on_nan(where, on_nan)
    verbose = _check_fit_options(where, early_stopping, callbacks, verbose, shuffle)
    if checkpoint_dir is not None:  # a file, or a directory under a checkpoint's name: now
        _checkpoint.check_directory(checkpoint_dir, where=where)  # not after an epoch
    if resume and checkpoint_dir is None:
        raise ValueError(f"{where}: resume=True needs checkpoint_dir= to resume from.")
    val: tuple[Any, ...] | None = None
    val_source = _stream_source(
        f"{where}: validation_data", validation_data, validation_steps, plan=plan,
        steps_name="validation_steps",
    )  # fmt: skip
    if validation_data is not None and val_source is None:
        val = check_xy(f"{where}: validation_data", validation_data)

    out_shape = _check_trace(where, smodel, params, model_state, loss_fn, metric_fns, x, y, w)
    loss_name = loss if isinstance(loss, str) else getattr(loss_fn, "__name__", None)
    check_labels(where, loss_name, y, out_shape)
    if val is not None:
        _check_trace(f"{where}: validation_data", smodel, params, model_state, loss_fn,
                     metric_fns, *val)  # fmt: skip
        check_labels(f"{where}: validation_data", loss_name, val[1], out_shape)
        val = (
            tuple(jnp.asarray(a) for a in val) if plan is None else tuple(plan.put_data(where, val))
        )
    history_keys = ["loss", *(n for n, _ in metric_fns)]
    if validation_data is not None:
        history_keys += [f"val_{k}" for k in history_keys]
    if early_stopping is not None and early_stopping.monitor not in history_keys:
        raise ValueError(
            f"{where}: early_stopping monitors {early_stopping.monitor!r}, which is not "
            f"recorded.{close_match(early_stopping.monitor, history_keys)} Recorded: "
            f"{history_keys}" + ("" if val is not None else "; val_* needs validation_data.")
        )

    # Fresh buffers: the compiled epoch donates its state, never the caller's arrays.
    params = _copy_tree(params)
    fresh = opt_state is None
    opt_state = _jit_init(tx)(params) if fresh else _copy_tree(opt_state)
    state = TrainState(
        params=params,
        opt_state=opt_state,
        step=jnp.zeros((), jnp.int32),
        key=_copy_tree(key),
        model_state=_copy_tree(model_state),
    )
    epoch_fn = _compiled_epoch(
        smodel, loss_fn, tx, metric_fns, batch_size, shuffle, val is not None and source is None,
        on_nan, plan,
    )  # fmt: skip
    if plan is None:
        xd, yd, wd = (jnp.asarray(a) for a in (x, y, w))  # (a stream's first batch: unused)
    else:
        state = plan.put_state(state)
        xd, yd, wd = plan.put_data(where, (x, y, w))
    if source is not None or val_source is not None:
        epoch_fn = _stream_epoch_fn(
            where, epoch_fn, source, val_source, val, smodel, loss_fn, tx, metric_fns,
            batch_size, steps_per_call, verbose, on_nan,
        )  # fmt: skip
    history: dict[str, list[float]] = {k: [] for k in history_keys}
    done = 0  # completed epochs
    if resume:
        state, done, history = _resume(where, checkpoint_dir, state, history_keys)

    def save(state: TrainState, epochs_done: int) -> None:
        if checkpoint_dir is not None:
            _checkpoint.save(
                checkpoint_dir, state, epoch=epochs_done, history=history, keep=checkpoint_keep
            )

    stopper = _Stopper(early_stopping) if early_stopping is not None else None
    progress = _Progress(epochs, verbose)
    sigint = _SigintFlag()
    try:
        with sigint:
            for epoch in range(done, epochs):
                start = time.perf_counter()
                new_state, logs = epoch_fn(state, xd, yd, wd, val)
                # `state` was donated; new_state is the last good one (checkpoints on disk
                # stay at epoch boundaries, so a resume is still exact).
                if _non_finite(where, on_nan, logs, epoch, new_state, FitResult, history):
                    state = new_state
                    break
                state = new_state
                logs = {k: float(logs[k]) for k in history_keys}  # "loss" first, then metrics
                for k, v in logs.items():
                    history[k].append(v)
                done = epoch + 1
                progress.update(
                    epoch, logs, time.perf_counter() - start, getattr(epoch_fn, "note", "")
                )
                stop = stopper is not None and stopper.update(
                    epoch, logs[stopper.config.monitor], state
                )
                for cb in callbacks:
                    stop = bool(cb(epoch, logs, state)) or stop
                if stop or sigint.flag or done % checkpoint_every == 0 or done == epochs:
                    save(state, done)
                if sigint.flag:
                    warnings.warn(
                        f"{where}: interrupted (Ctrl-C); returning the state after epoch {done}.",
                        stacklevel=2,
                    )
                if stop or sigint.flag:
                    break
    except KeyboardInterrupt:
        # Raised by a callback or a second Ctrl-C: keep the last completed epoch if intact.
        if any(_is_deleted(a) for a in jax.tree.leaves(state)) or done == 0:
            raise
        save(state, done)
        warnings.warn(
            f"{where}: KeyboardInterrupt; returning the state after epoch {done}.", stacklevel=2
        )
    finally:
        progress.close()
    if stopper is not None and stopper.config.restore_best and stopper.best_state is not None:
        state = stopper.best_state
    return FitResult(state, history)


class NonFiniteError(FloatingPointError):
    """Training produced a non-finite loss or gradient (``fit(..., on_nan="raise")``).

    Attributes:
      epoch: the epoch (from 0) of the first non-finite step.
      step: its index within the epoch (from 0).
      global_step: its index counted over the whole run.
      result: a :class:`FitResult` whose state is the one just before that step
        and whose history holds the completed epochs.
    """

    def __init__(self, message: str, *, epoch: int, step: int, global_step: int, result: Any):
        super().__init__(message)
        self.epoch, self.step, self.global_step, self.result = epoch, step, global_step, result


_ON_NAN = ("raise", "stop", "skip_batch")


def _check_on_nan(where: str, on_nan: Any) -> str | None:
    if on_nan is not None and on_nan not in _ON_NAN:
        hint = close_match(on_nan, _ON_NAN) if isinstance(on_nan, str) else ""
        raise ValueError(
            f"{where}: on_nan must be one of {', '.join(map(repr, _ON_NAN))} or None, got "
            f"{on_nan!r}.{hint}"
        )
    return on_nan


def _non_finite(where, on_nan, logs, epoch, state, result_type, history) -> bool:
    """Act on the epoch's NaN guard: raise, or return True to stop; warn on skips."""
    if on_nan is None:
        return False
    first, skipped = int(logs["_nan_first"]), int(logs["_nan_skipped"])
    if on_nan == "skip_batch":
        if skipped:
            warnings.warn(
                f"{where}: epoch {epoch}: skipped {skipped} step(s) with a non-finite loss or "
                f"gradients (first at step {first} of the epoch).",
                stacklevel=3,
            )
        return False
    if first < 0:
        return False
    message = (
        f"{where}: non-finite loss or gradients at epoch {epoch}, step {first} of the epoch "
        f"(global step {int(state.step)}; both from 0). The returned state is the one just "
        "before that step. Lower the learning rate, clip gradients (optax.clip_by_global_norm), "
        "check the data, or pass on_nan='skip_batch'."
    )
    if on_nan == "raise":
        raise NonFiniteError(
            message,
            epoch=epoch,
            step=first,
            global_step=int(state.step),
            result=result_type(state, history),
        )
    warnings.warn(message, stacklevel=3)
    return True


def _resume(where, directory, template, history_keys):
    """(state, completed epochs, history) from the newest good checkpoint, or a fresh start."""
    ckpt = _checkpoint.restore_latest(directory, template)
    if ckpt is None:
        return template, 0, {k: [] for k in history_keys}
    if sorted(ckpt.history) != sorted(history_keys):
        raise ValueError(
            f"{where}: the checkpoint {ckpt.path} records {sorted(ckpt.history)}, this run "
            f"records {sorted(history_keys)}; resume with the same metrics and validation_data."
        )
    return ckpt.state, ckpt.epoch, {k: ckpt.history[k] for k in history_keys}


def _is_deleted(leaf: Any) -> bool:
    """A concrete array whose buffer was donated (a tracer has none)."""
    return (
        isinstance(leaf, jax.Array) and not isinstance(leaf, jax.core.Tracer) and leaf.is_deleted()
    )


class _SigintFlag:
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


def _stream_source(
    where, data, steps, *, sample_weight=None, arity=2, plan=None, steps_name="steps"
):  # fmt: skip
    """A :class:`jnn._stream.Source` when ``data`` is a batch stream, else None."""
    from jnn import _stream

    if data is None or not (_stream.is_stream(data) if arity == 2 else _stream.is_x_stream(data)):
        if steps is not None:
            raise ValueError(f"{where}: {steps_name} is only for a stream of batches.")
        return None
    if plan is not None:
        raise ValueError(
            f"{where}: a stream of batches cannot be combined with mesh= yet; pass arrays "
            "(each process its own shard) or drop mesh=."
        )
    if sample_weight is not None:
        raise ValueError(
            f"{where}: sample_weight is for array data; a stream carries per-example weights "
            "in its batches, as (x, y, weights)."
        )
    if steps is not None:
        steps = check_positive_int(where, steps_name, steps)
    return _stream.Source(where, data, steps=steps, arity=arity)


def _stream_epoch_fn(
    where, epoch_fn, source, val_source, val, model, loss_fn, tx, metric_fns, batch_size, k,
    verbose, on_nan,
):  # fmt: skip
    """``fit``'s epoch function when the training and/or validation data is a stream."""
    from jnn import _stream

    k = check_positive_int(where, "steps_per_call", k)
    put = _stream.default_put()
    if val_source is not None:

        def validate(params, model_state):
            return _stream.evaluate_stream(
                where, val_source, model=model, loss_fn=loss_fn, metric_fns=metric_fns,
                params=params, model_state=model_state, k=k, put=put,
            )  # fmt: skip
    elif val is not None:
        run = _compiled_eval(model, loss_fn, metric_fns, batch_size)

        def validate(params, model_state):
            return run(params, model_state, *val)
    else:
        validate = None
    if source is not None:
        epoch_fn = _stream.StreamEpoch(
            where=where, source=source, model=model, loss_fn=loss_fn, tx=tx,
            metric_fns=metric_fns, k=k, put=put, verbose=verbose, on_nan=on_nan,
        )  # fmt: skip
    return _stream.Validated(epoch_fn, validate)


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


def _traced(where, model, params, model_state, row_shape, fn, *args):
    """``jax.eval_shape(fn, params, model_state, *args)``. An error raised outside jnn's own
    code (e.g. a reshape deep in XLA) most likely means params from another model: that is
    checked against ``model.init`` and reported by path; jnn's own errors pass through."""
    try:
        return jax.eval_shape(fn, params, model_state, *args)
    except Exception as err:
        frames = traceback.extract_tb(err.__traceback__)
        if not frames or "/jnn/" not in frames[-1].filename.replace("\\", "/"):
            _check_params(where, model, params, model_state, row_shape)
        raise


def _check_params(where, model, params, model_state, row_shape) -> None:
    """Params (and model state) must have the tree and shapes ``model.init`` gives for rows
    of ``row_shape``: a mismatch is named by path here, not met as a reshape error in XLA."""
    if params is None:
        raise TypeError(f"{where}: params is None; pass the params from model.init(key, shape).")
    try:
        _, want, want_state = jax.eval_shape(
            lambda k: model.init(k, (-1, *row_shape)), jax.random.key(0)
        )
    except Exception:  # init cannot infer from shapes alone: the trace check still runs
        return
    for what, want_tree, got_tree in (("params", want, params), ("model_state", want_state,
                                                                  model_state)):  # fmt: skip
        errors = _tree_mismatches(what, want_tree, got_tree)
        if errors:
            more = f"; ... ({len(errors) - 4} more)" if len(errors) > 4 else ""
            raise ValueError(
                f"{where}: {what} do not match this model on inputs of shape "
                f"{(-1, *row_shape)}: {'; '.join(errors[:4])}{more}. Check that the inputs "
                f"have the feature size the model was initialized with, and that the {what} "
                "come from this model's init."
            )


def _tree_mismatches(what: str, want: Any, got: Any) -> list[str]:
    """Paths where ``got`` lacks, adds or reshapes a leaf of ``want``."""
    leaves = jax.tree_util.tree_leaves_with_path
    want_l = {jax.tree_util.keystr(p): a for p, a in leaves(want)}
    got_l = {jax.tree_util.keystr(p): a for p, a in leaves(got)}
    errors = [f"{what}{k} is missing" for k in want_l if k not in got_l]
    errors += [f"{what}{k} is unexpected" for k in got_l if k not in want_l]
    for k, a in want_l.items():
        if k in got_l and tuple(a.shape) != tuple(np.shape(got_l[k])):
            errors.append(f"{what}{k}: expected shape {tuple(a.shape)}, got {np.shape(got_l[k])}")
    return errors


_TRACE_CACHE: dict[Any, tuple[int, ...]] = {}


def _check_trace(where, model, params, model_state, loss_fn, metric_fns, x, y, w):
    """Trace (not compile) the model and loss on one batch: shape errors surface here.

    The traced output shape is remembered per (model, loss, metrics, param and
    data shapes): re-tracing costs tens of ms per ``fit`` call, more than a
    whole epoch of a small model.
    """
    leaves, treedef = jax.tree.flatten((params, model_state))
    cache_key = (
        model,
        loss_fn,
        metric_fns,
        treedef,
        tuple((np.shape(a), jnp.result_type(a)) for a in leaves),
        (x.shape[1:], x.dtype, y.shape[1:], y.dtype),
    )
    try:
        out_shape = _TRACE_CACHE.get(cache_key)
    except TypeError:  # something unhashable: no caching
        cache_key, out_shape = None, None
    if out_shape is None:
        out_shape = _trace_shape(where, model, params, model_state, loss_fn, metric_fns, x, y)
        if cache_key is not None:
            if len(_TRACE_CACHE) >= 256:
                _TRACE_CACHE.clear()
            _TRACE_CACHE[cache_key] = out_shape
    return out_shape


def _trace_shape(where, model, params, model_state, loss_fn, metric_fns, x, y):
    """The output shape of the model on one traced batch (errors named by path)."""
    if params is None:
        raise TypeError(f"{where}: params is None; pass the params from model.init(key, shape).")
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
        out = _traced(where, model, params, model_state, x.shape[1:], probe, xb, yb)
    except ShapeMismatchError as err:  # traced on one row: name the real shapes
        raise ValueError(_label_shape_message(where, err, x.shape[0], y.shape)) from None
    except TypeError as err:
        if "weights" in str(err) and "unexpected keyword" in str(err):
            raise TypeError(
                f"{where}: the loss and metric functions must accept a keyword argument "
                "`weights` (per-example weights; fit masks the padded last batch with it): "
                f"{err}"
            ) from None
        raise
    return tuple(jax.tree.leaves(out)[0].shape)


def _label_shape_message(where: str, err: ShapeMismatchError, n: int, y_shape: tuple) -> str:
    """The loss's shape mismatch, with the data's shapes instead of the one-row probe's."""
    pred = (n, *err.pred_shape[1:])
    if pred == (*y_shape, 1):
        fix = f"Reshape the labels: y = y.reshape({n}, 1) (or y[:, None])."
    elif y_shape == (*pred, 1):
        fix = "Drop the labels' last axis: y = y.squeeze(-1)."
    elif int(np.prod(y_shape)) == int(np.prod(pred)):
        fix = f"Reshape the labels: y = y.reshape{pred}."
    else:
        fix = f"Give labels of shape {pred}, or a model whose output matches y."
    return (
        f"{where}: {err.name}: the model's predictions have shape {pred} but the labels y "
        f"have shape {tuple(y_shape)}; jnn never broadcasts them against each other (an "
        f"(N, 1) output and (N,) labels would silently give an (N, N) loss). {fix}"
    )


def _check_fit_options(
    where: str, early_stopping: Any, callbacks: Any, verbose: Any, shuffle: Any
) -> int:
    """``fit``'s early_stopping, callbacks, verbose and shuffle, checked before any tracing."""
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

    def update(self, epoch: int, logs: dict[str, float], seconds: float, note: str = "") -> None:
        if not self.verbose:
            return
        done = epoch + 1
        width = len(str(self.epochs))
        text = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
        line = f"Epoch {done:>{width}}/{self.epochs}"
        if self.verbose == 1:
            filled = round(20 * done / self.epochs)
            line += f" [{'=' * filled}{'.' * (20 - filled)}]"
        line += f" {seconds * 1e3:.0f}ms - {text}" + (f" - {note}" if note else "")
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
def _compiled_eval(model, loss_fn, metric_fns, batch_size, plan=None):
    return jax.jit(_eval_fn(model, loss_fn, metric_fns, batch_size, plan))


def evaluate(
    model: AnyLayer,
    params: Params,
    data: tuple[ArrayLike, ArrayLike] | Iterable | Callable[[], Iterable],
    *,
    loss: str | Callable | None = None,
    metrics: Sequence[str | Callable] = (),
    batch_size: int = 256,
    sample_weight: ArrayLike | None = None,
    model_state: State | None = None,
    steps_per_call: int = 1,
    steps: int | None = None,
    mesh: Mesh | str | None = None,
    param_sharding: str | None = None,
) -> dict[str, float]:
    """Loss and metrics of ``model`` on ``data = (x, y)``, in evaluation mode.

    One compiled ``lax.scan`` over batches; the last partial batch is padded
    and masked so every example counts exactly once. ``data`` may also be a
    stream of ``(x, y)`` / ``(x, y, weights)`` batches as in :func:`fit`, run
    ``steps_per_call`` batches per compiled call, for at most ``steps``
    batches (needed for an infinite stream). ``mesh`` and ``param_sharding``
    split batches and params as in :func:`fit` (arrays only).

    Args:
      model: a :class:`jnn.Layer` or :class:`jnn.StatefulLayer`.
      params: its params.
      data: ``(x, y)`` arrays with the same number of examples, or a stream of
        ``(x, y)`` / ``(x, y, weights)`` batches as in :func:`fit`.
      loss: a loss function or its name; optional if ``metrics`` are given.
      metrics: names (``"accuracy"``) or functions ``m(pred, y, *, weights)``.
      batch_size: examples per compiled step (arrays only).
      sample_weight: optional per-example weights of shape ``(N,)``.
      model_state: required for stateful models.
      steps_per_call: for a stream, batches per compiled call.
      steps: for a stream, the most batches to take (needed when infinite).
      mesh: a mesh or ``"auto"``: split batches over its data axis, as in :func:`fit`.
      param_sharding: ``"replicated"`` or ``"fsdp"``, as in :func:`fit`.

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
    plan = _distributed._plan(where, mesh, param_sharding)
    source = _stream_source(where, data, steps, sample_weight=sample_weight, plan=plan)
    x, y, w = check_xy(where, data, weights=sample_weight) if source is None else source.first
    n = x.shape[0] if plan is None else plan.global_rows(where, x.shape[0])
    batch_size = min(check_positive_int(where, "batch_size", batch_size), n)
    loss_fn = None if loss is None else _losses.get(loss)
    metric_fns = _resolve_metrics(metrics, loss_fn)
    out_shape = _check_trace(
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
    if loss is not None:
        loss_name = loss if isinstance(loss, str) else getattr(loss_fn, "__name__", None)
        check_labels(where, loss_name, y, out_shape)
    if source is not None:
        from jnn._stream import default_put, evaluate_stream

        k = check_positive_int(where, "steps_per_call", steps_per_call)
        logs = evaluate_stream(
            where, source, model=smodel, loss_fn=loss_fn, metric_fns=metric_fns, params=params,
            model_state=model_state, k=k, put=default_put(),
        )  # fmt: skip
        return {k: float(v) for k, v in logs.items()}
    if plan is None:
        arrays = (params, model_state, *map(jnp.asarray, (x, y, w)))
    else:
        batch_size = plan.batch_size(where, batch_size, n)
        arrays = (*plan.put_state((params, model_state)), *plan.put_data(where, (x, y, w)))
    logs = _compiled_eval(smodel, loss_fn, metric_fns, batch_size, plan)(*arrays)
    return {k: float(v) for k, v in logs.items()}


@functools.lru_cache(maxsize=32)
def _compiled_forward(model: StatefulLayer) -> Callable:
    return jax.jit(lambda params, state, x: model.apply(params, state, x, train=False)[0])


def predict(
    model: AnyLayer,
    params: Params,
    x: ArrayLike | Iterable | Callable[[], Iterable],
    *,
    batch_size: int = 1024,
    model_state: State | None = None,
    steps: int | None = None,
    mesh: Mesh | str | None = None,
    param_sharding: str | None = None,
) -> np.ndarray:
    """Outputs of ``model`` for every row of ``x``, in evaluation mode.

    ``x`` stays where it is (host memory for numpy input); batches go to the
    device one at a time, so device memory holds one batch of activations
    however large ``x`` is. The last batch is padded to ``batch_size``: one
    compilation for any number of rows.

    Args:
      model: the model.
      params: its params.
      x: inputs, ``(N, ...)``; or a stream of input batches (an iterator,
        a non-list iterable such as a ``DataLoader``, or a callable returning
        one), each an array or a tuple whose first element is the inputs.
        Batches are padded to the first one's size (one compilation) and put on
        the device one ahead. A list is taken as array data: wrap a list of
        batches with ``iter(...)``.
      batch_size: rows per device call (arrays only).
      model_state: required for stateful models.
      steps: for a stream, the most batches to take (needed when infinite).
      mesh: split each batch over a mesh's data axis, as in :func:`fit`
        (``batch_size`` is then the global rows per call). In a multi-process
        run ``x`` is this process's rows, and so is the result.
      param_sharding: ``"replicated"`` or ``"fsdp"``, as in :func:`fit`.

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
    plan = _distributed._plan(where, mesh, param_sharding)
    smodel = stateful(model)
    model_state = _check_model_state(where, model, model_state)
    source = _stream_source(where, x, steps, arity=1, plan=plan)
    if source is not None:
        from jnn._stream import default_put, predict_stream

        jax.eval_shape(
            _compiled_forward(smodel), params, model_state,
            jax.ShapeDtypeStruct(source.first[0].shape, source.first[0].dtype),
        )  # fmt: skip
        return predict_stream(
            where, source, forward=_compiled_forward(smodel), params=params,
            model_state=model_state, put=default_put(),
        )  # fmt: skip
    x = as_host_array(where, "x", x)
    n = x.shape[0]
    batch_size = check_positive_int(where, "batch_size", batch_size)
    if params is None:
        raise TypeError(f"{where}: params is None; pass the params from model.init(key, shape).")
    put: Callable[[Any], Any] = jax.device_put
    fetch: Callable[[Any], Any] = functools.partial(jax.tree.map, np.asarray)
    if plan is None:
        batch_size = min(batch_size, n)
    else:  # batch_size is global: each process feeds its share of every call
        total = plan.global_rows(where, n)
        batch_size = plan.batch_size(where, min(batch_size, total), total)
        batch_size //= jax.process_count()
        params, model_state = plan.put_state((params, model_state))
        put, fetch = (lambda xb: plan.put_data(where, [xb])[0]), plan.to_local
    forward = _compiled_forward(smodel)
    xb = jax.ShapeDtypeStruct((batch_size, *x.shape[1:]), x.dtype)
    _traced(where, smodel, params, model_state, x.shape[1:], forward, xb)

    def batch(i: int) -> Any:
        xb = x[i : i + batch_size]
        if xb.shape[0] < batch_size:
            xb = np.concatenate([xb, np.zeros((batch_size - xb.shape[0], *x.shape[1:]), x.dtype)])
        return forward(params, model_state, put(xb))

    outputs, pending = [], batch(0)
    for i in range(batch_size, n + batch_size, batch_size):
        nxt = batch(i) if i < n else None  # dispatch the next batch before waiting
        outputs.append(fetch(pending))
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
