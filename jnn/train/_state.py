"""The training state and the optimizer registry (private).

:class:`TrainState` is the pytree a step reads and writes; :func:`get_optimizer`
turns a name into an optax transformation (Keras's default learning rates).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jnn._compile_cache import fast_options
from jnn._data import check_key, check_number, close_match
from jnn._typing import Array, Params, PRNGKey, State
from jnn.train._optim import build_tx
from jnn.train._precision import Policy, cast_floating, get_policy


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
        policy: str | Policy | None = None,
    ) -> TrainState:
        """A fresh state: ``optimizer.init(params)``, step 0.

        Args:
          params: the model's params.
          optimizer: an ``optax.GradientTransformation`` or a name (see
            :func:`get_optimizer`).
          key: the PRNG key that steps fold their step number into for dropout.
          model_state: the state of a stateful model (default ``{}``).
          learning_rate: for an optimizer given by name.
          policy: the precision policy of the step that will use the state: a
            float16 one adds a dynamic loss scale to the optimizer state, and
            params are cast to the policy's ``param_dtype``.

        Returns:
          A :class:`TrainState` at step 0. It holds copies of ``params``,
          ``model_state`` and ``key``: a donating step (see
          :func:`jnn.make_train_step`) consumes the state, never the arrays you
          passed.

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
        precision = get_policy(policy, "TrainState.create")
        tx = build_tx(get_optimizer(optimizer, learning_rate), precision)
        key = check_key("TrainState.create", key)
        params = cast_floating(params, precision.param_dtype)
        return fresh_state(tx)(params, None, key, {} if model_state is None else model_state)


OPTIMIZERS: dict[str, tuple[Callable[..., optax.GradientTransformation], float]] = {
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
      optimizer: a name, an ``optax.GradientTransformation`` or
        ``GradientTransformationExtraArgs`` (returned as is; the step passes
        ``value=loss`` to ``update``, so ``optax.contrib.reduce_on_plateau``
        works), or an ``optax.MultiSteps``.
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
        if optimizer not in OPTIMIZERS:
            raise ValueError(
                f"Unknown optimizer {optimizer!r}.{close_match(optimizer, OPTIMIZERS)} Known: "
                f"{', '.join(OPTIMIZERS)}; or pass any optax.GradientTransformation."
            )
        if learning_rate is not None and not callable(learning_rate):  # not an optax schedule
            learning_rate = check_number(
                "get_optimizer", "learning_rate", learning_rate, low=0.0, low_open=True
            )
        return _named_optimizer(optimizer, learning_rate)
    if isinstance(optimizer, optax.MultiSteps):  # a class, not a transformation
        optimizer = _multi_steps(optimizer)
    if isinstance(optimizer, optax.GradientTransformation):
        if learning_rate is not None:
            raise ValueError(
                "learning_rate is only used with an optimizer name; an optax optimizer "
                "already holds its own (e.g. optax.adam(learning_rate=1e-3))."
            )
        return optimizer
    raise TypeError(
        f"optimizer must be a name ({', '.join(OPTIMIZERS)}), an "
        f"optax.GradientTransformation or an optax.MultiSteps, got {type(optimizer).__name__}."
    )


@functools.lru_cache(maxsize=64)
def _multi_steps(optimizer: optax.MultiSteps) -> optax.GradientTransformation:
    return optimizer.gradient_transformation()  # cached: one object, compiled programs reused


@functools.lru_cache(maxsize=64)
def _named_optimizer(name: str, learning_rate: Any) -> optax.GradientTransformation:
    ctor, default = OPTIMIZERS[name]
    return ctor(learning_rate=default if learning_rate is None else learning_rate)


@functools.lru_cache(maxsize=64)
def fresh_state(tx: optax.GradientTransformation) -> Callable:
    """``start(params, opt_state, key, model_state) -> TrainState`` at step 0, jitted.

    Every leaf is a new buffer (the compiled epochs donate their state, never the
    caller's arrays), and ``opt_state=None`` is ``tx.init(params)``: one compiled
    call instead of a dispatch per leaf.
    """

    def start(params, opt_state, key, model_state) -> TrainState:
        params, key, model_state = jax.tree.map(jnp.copy, (params, key, model_state))
        opt_state = tx.init(params) if opt_state is None else jax.tree.map(jnp.copy, opt_state)
        return TrainState(params, opt_state, jnp.zeros((), jnp.int32), key, model_state)

    return jax.jit(start, compiler_options=fast_options())  # copies and zeros: compile fast


__all__ = ["OPTIMIZERS", "TrainState", "fresh_state", "get_optimizer"]
