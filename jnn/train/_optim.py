"""Optimizer extras: gradient accumulation, an EMA of the params, frozen params (private).

Each extra is a wrapper around the optax transformation, so its state lives in the
optimizer state (checkpoints and resume carry it with no special case) and the one
training step (:func:`jnn.train._step.pure_step`) runs them all. :func:`build_tx`
stacks them, outermost first: the loss scale of a float16 policy (a skipped step
must not reach the accumulator), ``optax.MultiSteps`` (accumulation), the EMA (it
sees the params after each real update), the frozen-param partition, then the
user's optimizer. Wrappers are cached by their arguments, so a second ``fit`` with
the same settings reuses its compiled epochs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jnn._data import check_int, check_number
from jnn._typing import Params
from jnn.train._precision import LossScaleState, Policy, loss_scaled


class EmaState(NamedTuple):
    """The state of :func:`with_ema`: the inner optimizer's, and the params' EMA."""

    inner: Any
    ema: Params


def with_ema(tx: optax.GradientTransformation, decay: float) -> optax.GradientTransformation:
    """``tx``, also keeping ``ema = decay * ema + (1 - decay) * new_params`` (started at
    the initial params) in its state; ``update`` needs ``params``."""
    tx = optax.with_extra_args_support(tx)

    def init(params):
        return EmaState(tx.init(params), jax.tree.map(jnp.asarray, params))

    def update(updates, state: EmaState, params=None, **extra):
        if params is None:
            raise ValueError("an EMA of the params needs params passed to update.")
        updates, inner = tx.update(updates, state.inner, params, **extra)
        new = optax.apply_updates(params, updates)
        ema = jax.tree.map(
            lambda e, p: (decay * e + (1.0 - decay) * p).astype(e.dtype), state.ema, new
        )
        return updates, EmaState(inner, ema)

    return optax.GradientTransformationExtraArgs(init, update)


def find_state(opt_state: Any, kind: type) -> Any:
    """The first ``kind`` state (an :class:`EmaState`, a :class:`LossScaleState`) inside
    ``opt_state``, looking through the wrappers :func:`build_tx` stacks; None if absent."""
    while opt_state is not None:
        if isinstance(opt_state, kind):
            return opt_state
        if isinstance(opt_state, optax.MultiStepsState):
            opt_state = opt_state.inner_opt_state
        elif isinstance(opt_state, (EmaState, LossScaleState)):
            opt_state = opt_state.inner
        else:
            return None
    return None


def ema_params(opt_state: Any) -> Params | None:
    """The EMA of the params held in ``opt_state`` (None without ``fit(ema=...)``)."""
    found = find_state(opt_state, EmaState)
    return None if found is None else found.ema


def check_extras(where: str, accumulate_steps: Any, ema: Any, ema_eval: Any):
    """``(accumulate_steps, ema)`` checked: an int >= 1, and None or a decay in (0, 1)."""
    accumulate_steps = check_int(where, "accumulate_steps", accumulate_steps, minimum=1)
    if ema is not None:
        ema = check_number(where, "ema", ema, low=0.0, high=1.0, low_open=True, high_open=True)
    if ema_eval and ema is None:
        raise ValueError(f"{where}: ema_eval=True evaluates with the EMA params; pass ema=0.999.")
    return accumulate_steps, ema


def _path(path: tuple) -> str:
    return jax.tree_util.keystr(path, simple=True, separator="/")


def trainable_labels(where: str, trainable: Any, params: Params) -> Any:
    """The ``"train"``/``"frozen"`` label of every param leaf, as a hashable
    ``(treedef, labels)`` pair, or None when everything trains.

    ``trainable`` is None (all), a predicate ``f(path) -> bool`` on a leaf's path
    (``"0/w"``: keys joined by ``/``), or a pytree of bools shaped like ``params`` or
    a prefix of it (``{"encoder": False, "head": True}``).
    """
    if trainable is None:
        return None
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    if callable(trainable):
        flags = [bool(trainable(_path(p))) for p, _ in leaves]
    else:
        flags = [bool(f) for f in _broadcast_mask(where, trainable, params)]
    if not any(flags):
        raise ValueError(
            f"{where}: trainable= leaves no param trainable (all {len(flags)} frozen); "
            "mark at least one leaf True (paths look like "
            f"{', '.join(repr(_path(p)) for p, _ in leaves[:3])})."
        )
    if all(flags):
        return None
    return treedef, tuple("train" if f else "frozen" for f in flags)


def _broadcast_mask(where: str, mask: Any, params: Params) -> list[Any]:
    """The bools of ``mask`` (a pytree prefix of ``params``), one per param leaf."""
    try:
        full = jax.tree.map(lambda m, sub: jax.tree.map(lambda _: m, sub), mask, params)
    except (ValueError, TypeError):
        raise ValueError(
            f"{where}: trainable= does not match the params' structure: "
            f"{_first_mismatch(mask, params)}. Pass a pytree of bools with the params' "
            "keys (or a prefix of them), or a predicate on param paths."
        ) from None
    flags = jax.tree.leaves(full)
    for f in flags:
        if not isinstance(f, (bool, np.bool_)) and getattr(f, "dtype", None) != np.bool_:
            raise TypeError(f"{where}: trainable= must hold bools, got {type(f).__name__}.")
    return flags


def _first_mismatch(mask: Any, params: Any, path: str = "") -> str:
    """Where ``mask`` first departs from ``params`` (a prefix match is fine)."""
    if not isinstance(mask, (dict, list, tuple)):
        return "(no difference found)"
    if isinstance(mask, dict) != isinstance(params, dict) or not isinstance(
        params, (dict, list, tuple)
    ):
        return f"at {path or 'the root'}, the params hold {type(params).__name__}"
    keys = sorted(mask, key=str) if isinstance(mask, dict) else list(range(len(mask)))
    pkeys = sorted(params, key=str) if isinstance(params, dict) else list(range(len(params)))
    if keys != pkeys:
        extra = [k for k in keys if k not in pkeys]
        missing = [k for k in pkeys if k not in keys]
        what = f"has {extra[0]!r}, which the params lack" if extra else f"lacks {missing[0]!r}"
        return f"at {path or 'the root'}, trainable= {what}"
    for k in keys:
        found = _first_mismatch(mask[k], params[k], f"{path}/{k}" if path else str(k))
        if found != "(no difference found)":
            return found
    return "(no difference found)"


@functools.lru_cache(maxsize=64)
def build_tx(
    tx: optax.GradientTransformation,
    policy: Policy,
    accumulate_steps: int = 1,
    ema: float | None = None,
    labels: Any = None,
) -> optax.GradientTransformation:
    """The optimizer ``fit`` runs: ``tx`` with the extras asked for (see the module)."""
    if labels is not None:
        treedef, flat = labels
        tree = jax.tree.unflatten(treedef, flat)
        tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, tree)
    if ema is not None:
        tx = with_ema(tx, ema)
    if accumulate_steps > 1:
        tx = optax.MultiSteps(tx, accumulate_steps).gradient_transformation()
    if policy.loss_scaling:
        tx = loss_scaled(tx)
    return tx


def eval_params_fn(ema_eval: bool) -> Callable[[Any], Params]:
    """``params_of(state)``: the params validation uses (the EMA with ``ema_eval``)."""
    if not ema_eval:
        return _params
    return _ema_of


def _params(state: Any) -> Params:
    return state.params


def _ema_of(state: Any) -> Params:
    found = ema_params(state.opt_state)
    return state.params if found is None else found


__all__ = [
    "EmaState",
    "build_tx",
    "check_extras",
    "ema_params",
    "eval_params_fn",
    "find_state",
    "trainable_labels",
    "with_ema",
]
