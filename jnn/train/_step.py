"""One training step, its NaN guard, and ``make_train_step`` (private).

:func:`pure_step` is the step every training path runs (``make_train_step``, array
epochs, streamed epochs, sweeps). :class:`NanGuard` is the check for non-finite
losses and gradients: an int32 carry updated inside the compiled scan
(:meth:`NanGuard.step`) and acted on by the host between calls
(:meth:`NanGuard.check`); it travels beside the logs, never inside them.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import optax

from jnn import losses as _losses
from jnn._data import close_match
from jnn._typing import Array, ArrayLike
from jnn.layers._base import AnyLayer, StatefulLayer, _check_layer, stateful
from jnn.train._logs import (
    MetricFns,
    batch_logs,
    counted_only_if,
    finish_logs,
    resolve_metrics,
)
from jnn.train._optim import build_tx
from jnn.train._precision import (
    MIN_SCALE,
    LossScaleState,
    Policy,
    all_finite,
    apply_policy,
    get_policy,
)
from jnn.train._state import TrainState, get_optimizer

Batch = tuple[ArrayLike, ...]


def as_model(apply: Any, where: str) -> StatefulLayer:
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


def pure_step(
    model: StatefulLayer,
    loss_fn: Callable,
    tx: optax.GradientTransformation,
    metric_fns: MetricFns,
) -> Callable:
    """``step(state, x, y, w, allow=None) -> (state, logs, finite)``.

    ``w`` is None or per-example weights. With ``allow=None`` the update is
    unconditional and ``finite`` is None. Otherwise ``finite`` says whether the
    loss and every gradient are finite, and the update is applied only when
    the step is finite and ``allow`` (a traced bool) is True; else the state is
    kept as it was. The choice is a
    ``lax.cond`` around the optimizer update, not a ``jnp.where`` over the
    state: a where reads and writes params and optimizer state once more per
    step, which costs a third of a step on a compute-bound MLP.
    """

    tx = optax.with_extra_args_support(tx)  # value=loss reaches e.g. reduce_on_plateau

    def step(state: TrainState, x: Array, y: Array, w: Array | None, allow: Any = None):
        # A per-step key folded from (key, step), not a split carried through the scan:
        # a model without dropout never uses it, and XLA then drops the RNG entirely.
        dropout_key = jax.random.fold_in(state.key, state.step)
        # A float16 policy's dynamic loss scale (outermost optimizer wrapper), if any.
        scaled = isinstance(state.opt_state, LossScaleState)
        scale = state.opt_state.scale if scaled else None

        def objective(params):
            pred, model_state = model.apply(
                params, state.model_state, x, key=dropout_key, train=True
            )
            value = loss_fn(pred, y) if w is None else loss_fn(pred, y, weights=w)
            scaled_value = value * scale.astype(value.dtype) if scaled else value
            return scaled_value, (value, pred, model_state)

        (_, (loss, pred, model_state)), grads = jax.value_and_grad(objective, has_aux=True)(
            state.params
        )
        if scaled:  # unscale in float32; the wrapper skips non-finite ones
            grads = jax.tree.map(lambda g: (g / scale).astype(g.dtype), grads)
        logs = {"loss": loss, **batch_logs(None, metric_fns, pred, y, w)}

        def update(state: TrainState) -> TrainState:
            updates, opt_state = tx.update(grads, state.opt_state, state.params, value=loss)
            params = optax.apply_updates(state.params, updates)
            return TrainState(params, opt_state, state.step + 1, state.key, model_state)

        if allow is None:
            return update(state), logs, None
        if scaled:  # overflowing float16 gradients are the loss scale's business, not
            # divergence, until the scale cannot go lower
            finite = jnp.logical_and(
                jnp.isfinite(loss),
                jnp.logical_or(all_finite(grads), state.opt_state.scale > MIN_SCALE),
            )
        else:
            finite = jnp.logical_and(jnp.isfinite(loss), all_finite(grads))
        ok = jnp.logical_and(finite, allow)
        return jax.lax.cond(ok, update, lambda state: state, state), logs, finite

    return step


ON_NAN = ("raise", "stop", "skip_batch")


class GuardState(NamedTuple):
    """The NaN guard's carry: steps seen, first non-finite step (-1: none), steps skipped."""

    steps: Array
    first_bad: Array
    skipped: Array


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


class NanGuard(NamedTuple):
    """What ``fit(on_nan=...)`` does about a non-finite step, inside and outside the program.

    ``mode`` None turns the guard off: :meth:`step` is then the plain step.
    """

    mode: str | None = None

    @staticmethod
    def check_mode(where: str, on_nan: Any) -> NanGuard:
        """The guard for ``on_nan``, or a ValueError naming the choices."""
        if on_nan is not None and on_nan not in ON_NAN:
            hint = close_match(on_nan, ON_NAN) if isinstance(on_nan, str) else ""
            raise ValueError(
                f"{where}: on_nan must be one of {', '.join(map(repr, ON_NAN))} or None, got "
                f"{on_nan!r}.{hint}"
            )
        return NanGuard(on_nan)

    @staticmethod
    def init() -> GuardState:
        return GuardState(jnp.int32(0), jnp.int32(-1), jnp.int32(0))

    def step(self, step: Callable, state, xb, yb, wb, g: GuardState):
        """One guarded step: ``(state, logs, weights, g)``.

        With ``"skip_batch"`` every finite step updates; otherwise nothing updates
        from the first non-finite step on (the state stays the one before it). A
        rejected step's logs count with weight 0 (a select, not a product: NaN * 0
        is NaN). With the guard off it is the plain step.
        """
        if self.mode is None:
            state, logs, _ = step(state, xb, yb, wb)
            return state, logs, wb, g
        allow = jnp.bool_(True) if self.mode == "skip_batch" else g.first_bad < 0
        state, logs, finite = step(state, xb, yb, wb, allow)
        logs, wb = counted_only_if(jnp.logical_and(finite, allow), logs, wb)
        first_bad = jax.lax.select(jnp.logical_and(g.first_bad < 0, ~finite), g.steps, g.first_bad)
        skipped = g.skipped + (~finite).astype(jnp.int32)
        g = GuardState(g.steps + 1, first_bad, skipped)
        return state, logs, wb, g

    def check(self, where: str, g: GuardState, *, epoch: int, state, history, result_type) -> bool:
        """Act on an epoch's guard on the host: raise, or return True to stop; warn on skips."""
        if self.mode is None:
            return False
        first, skipped = int(g.first_bad), int(g.skipped)
        if self.mode == "skip_batch":
            if skipped:
                warnings.warn(
                    f"{where}: epoch {epoch}: skipped {skipped} step(s) with a non-finite loss "
                    f"or gradients (first at step {first} of the epoch).",
                    stacklevel=4,
                )
            return False
        if first < 0:
            return False
        message = (
            f"{where}: non-finite loss or gradients at epoch {epoch}, step {first} of the epoch "
            f"(global step {int(state.step)}; both from 0). The returned state is the one just "
            "before that step. Lower the learning rate, clip gradients "
            "(optax.clip_by_global_norm), check the data, or pass on_nan='skip_batch'."
        )
        if self.mode == "raise":
            raise NonFiniteError(
                message,
                epoch=epoch,
                step=first,
                global_step=int(state.step),
                result=result_type(state, history),
            )
        warnings.warn(message, stacklevel=4)
        return True

    def tripped(self, g: GuardState) -> bool:
        """True once a non-finite step has frozen the state (an epoch can stop early)."""
        return self.mode in ("raise", "stop") and int(g.first_bad) >= 0


def make_train_step(
    apply: AnyLayer | Callable,
    loss: str | Callable,
    optimizer: optax.GradientTransformation | str,
    *,
    learning_rate: float | None = None,
    metrics: Sequence[str | Callable] = (),
    donate: bool = True,
    policy: str | Policy | None = None,
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
      policy: a precision policy (``"float32"``, ``"mixed_bfloat16"``,
        ``"mixed_float16"`` or a :class:`jnn.Policy`): the model computes in its
        compute dtype, the loss in float32. A float16 policy needs the state made
        by ``TrainState.create(..., policy=...)`` (it holds the loss scale).

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
    precision = get_policy(policy, "make_train_step")
    model = apply_policy(as_model(apply, "make_train_step"), precision)
    loss_fn = _losses.get(loss)
    tx = build_tx(get_optimizer(optimizer, learning_rate), precision)
    pure = pure_step(model, loss_fn, tx, resolve_metrics(metrics, loss_fn))

    def step(state: TrainState, batch: Batch):
        if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
            raise TypeError("step: batch must be (x, y) or (x, y, weights).")
        if precision.loss_scaling and not isinstance(state.opt_state, LossScaleState):
            raise ValueError(
                "step: a float16 policy trains with a dynamic loss scale kept in the "
                "optimizer state; make the state with TrainState.create(params, optimizer, "
                "key=..., policy=...) using the same policy."
            )
        state, logs, _ = pure(state, batch[0], batch[1], batch[2] if len(batch) == 3 else None)
        return state, finish_logs(logs)

    compiled = jax.jit(step, donate_argnums=(0,) if donate else ())
    if not donate:
        return compiled

    @functools.wraps(step)
    def donating_step(state: TrainState, batch: Batch):
        try:
            return compiled(state, batch)
        except Exception as err:  # a donated (deleted) input fails inside jax: say so
            leaves = jax.tree_util.tree_leaves_with_path(state)
            gone = [jax.tree_util.keystr(p) for p, a in leaves if is_deleted(a)]
            if not gone:
                raise
            raise ValueError(
                f"step: the state passed in was already donated to an earlier step (its buffer "
                f"{gone[0]} is deleted): donation reuses the input state's memory for the "
                "output. Pass the state the previous step returned (state, logs = step(state, "
                "batch)), or build the step with donate=False to keep inputs alive."
            ) from err

    return donating_step


def is_deleted(leaf: Any) -> bool:
    """A concrete array whose buffer was donated (a tracer has none)."""
    return (
        isinstance(leaf, jax.Array) and not isinstance(leaf, jax.core.Tracer) and leaf.is_deleted()
    )


__all__ = [
    "ON_NAN",
    "Batch",
    "GuardState",
    "NanGuard",
    "NonFiniteError",
    "as_model",
    "is_deleted",
    "make_train_step",
    "pure_step",
]
