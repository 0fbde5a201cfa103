"""Precision policies and dynamic loss scaling (private).

A :class:`Policy` says which dtype params are kept in, which one the model computes
in, and which one its outputs come out in. :func:`apply_policy` turns a model into
one that computes under a policy (params and floating inputs cast to the compute
dtype, outputs to the output dtype, model state such as batch statistics left in
its own dtype), so every path that runs a model (``fit``'s epochs, ``evaluate``,
``predict``, sweeps, export) runs the very same program.

Float16 overflows where float32 does not: under a policy that computes in float16
the optimizer is wrapped by :func:`loss_scaled`, whose state carries a dynamic loss
scale. The step multiplies the loss by it before differentiating and divides the
gradients by it; non-finite gradients skip the update and halve the scale, and
:data:`GROWTH_INTERVAL` finite steps in a row double it (the scheme of Keras's
``LossScaleOptimizer`` and of ``jmp.DynamicLossScale``).

Why not ``jmp``: it works with today's JAX, but its ``DynamicLossScale`` keeps a
numpy array in its pytree metadata (treedef comparisons, as in a checkpoint
restore, then become numpy comparisons), it knows no Keras policy names, and the
casting it offers is one ``tree.map``; the mechanism here is a few lines with no
dependency.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jnn._data import close_match
from jnn._typing import Array
from jnn.layers._base import StatefulLayer
from jnn.train._cache import canonical

FLOATS = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class Policy:
    """A precision policy: the dtypes of params, of computation, and of outputs.

    Named policies (Keras's names): ``"float32"`` (the default: everything in
    float32), ``"mixed_bfloat16"`` and ``"mixed_float16"`` (params, optimizer
    state, losses and metrics in float32; inputs and activations in bfloat16 /
    float16). A policy computing in float16 trains with dynamic loss scaling.
    Normalization layers compute their statistics in float32 under any policy.

    Args:
      param_dtype: the dtype params (and so the optimizer state) are kept in.
      compute_dtype: the dtype the model computes in: floating params and inputs
        are cast to it inside the step.
      output_dtype: the dtype of the model's outputs (losses and metrics are
        computed in it: keep it float32).

    Example:
      >>> import jnn
      >>> jnn.Policy("float32", "bfloat16", "float32") == jnn.get_policy("mixed_bfloat16")
      True
    """

    param_dtype: str = "float32"
    compute_dtype: str = "float32"
    output_dtype: str = "float32"

    def __post_init__(self) -> None:
        for field in ("param_dtype", "compute_dtype", "output_dtype"):
            value = getattr(self, field)
            name = _dtype_name(value)
            if name not in FLOATS:
                hint = close_match(value, FLOATS) if isinstance(value, str) else ""
                raise ValueError(
                    f"Policy: {field} must be one of {', '.join(FLOATS)}, got {value!r}.{hint}"
                )
            object.__setattr__(self, field, name)

    @property
    def loss_scaling(self) -> bool:
        """True when the model computes in float16 (training then scales the loss)."""
        return self.compute_dtype == "float16"


def _dtype_name(value: Any) -> str:
    try:
        return np.dtype(jnp.dtype(value)).name
    except TypeError:
        return repr(value)


POLICIES = {
    "float32": Policy("float32", "float32", "float32"),
    "mixed_bfloat16": Policy("float32", "bfloat16", "float32"),
    "mixed_float16": Policy("float32", "float16", "float32"),
}


def get_policy(policy: str | Policy | None, where: str = "get_policy") -> Policy:
    """The :class:`Policy` for a name (``"float32"``, ``"mixed_bfloat16"``,
    ``"mixed_float16"``), a :class:`Policy` (returned as is), or None (float32).

    Args:
      policy: the name, policy or None.
      where: the caller, opening error messages.

    Returns:
      The :class:`Policy`.

    Raises:
      ValueError: for an unknown name (naming the closest).
      TypeError: for anything else.

    Example:
      >>> import jnn
      >>> jnn.get_policy("mixed_bfloat16").compute_dtype
      'bfloat16'
    """
    if policy is None:
        return POLICIES["float32"]
    if isinstance(policy, Policy):
        return policy
    if isinstance(policy, str):
        if policy not in POLICIES:
            raise ValueError(
                f"{where}: unknown policy {policy!r}.{close_match(policy, POLICIES)} Known: "
                f"{', '.join(POLICIES)}; or pass jnn.Policy(param_dtype, compute_dtype, "
                "output_dtype)."
            )
        return POLICIES[policy]
    raise TypeError(
        f"{where}: policy must be a name ({', '.join(POLICIES)}) or a jnn.Policy, got "
        f"{type(policy).__name__}."
    )


def cast_floating(tree: Any, dtype: Any) -> Any:
    """Every floating leaf of ``tree`` cast to ``dtype`` (others unchanged)."""

    def cast(a: Any) -> Any:
        if hasattr(a, "dtype") and jnp.issubdtype(a.dtype, jnp.floating) and a.dtype != dtype:
            return jnp.asarray(a).astype(dtype)
        return a

    return jax.tree.map(cast, tree)


def apply_policy(model: StatefulLayer, policy: Policy) -> StatefulLayer:
    """``model`` computing under ``policy``. Model state keeps its dtype. Models of the
    same structure (:func:`jnn.train._cache.canonical`) and policy give the same object,
    so compiled programs are shared as for unwrapped models."""
    return _apply_policy(canonical(model), policy)


@functools.lru_cache(maxsize=256)
def _apply_policy(model: StatefulLayer, policy: Policy) -> StatefulLayer:
    compute, output = jnp.dtype(policy.compute_dtype), jnp.dtype(policy.output_dtype)

    def apply(params, state, x, *, key=None, train=False):
        y, new_state = model.apply(
            cast_floating(params, compute), state, cast_floating(x, compute), key=key,
            train=train,
        )  # fmt: skip
        new_state = jax.tree.map(lambda new, old: new.astype(old.dtype), new_state, state)
        return cast_floating(y, output), new_state

    def init(key, input_shape):  # its own function: the inner one carries the inner
        return model.init(key, input_shape)  # model's description (its cache key)

    return StatefulLayer(init, apply)


# --------------------------------------------------------------------------- loss scaling

INITIAL_SCALE = 2.0**15
GROWTH_INTERVAL = 2000
MIN_SCALE = 1.0


class LossScaleState(NamedTuple):
    """The state of :func:`loss_scaled`: the inner optimizer's, the current scale, and
    the number of finite steps since the scale last changed."""

    inner: Any
    scale: Array
    good_steps: Array


def loss_scaled(tx: optax.GradientTransformation, period: int = GROWTH_INTERVAL):
    """``tx`` behind a dynamic loss scale: gradients given to ``update`` must already be
    unscaled; non-finite ones give zero updates (the inner state unchanged) and halve
    the scale (not below :data:`MIN_SCALE`); ``period`` finite steps double it."""
    tx = optax.with_extra_args_support(tx)

    def init(params):
        return LossScaleState(tx.init(params), jnp.float32(INITIAL_SCALE), jnp.int32(0))

    def update(updates, state: LossScaleState, params=None, **extra):
        finite = all_finite(updates)

        def apply(state: LossScaleState):
            new, inner = tx.update(updates, state.inner, params, **extra)
            grow = state.good_steps + 1 >= period
            scale = jnp.where(grow, state.scale * 2.0, state.scale)
            return new, LossScaleState(inner, scale, jnp.where(grow, 0, state.good_steps + 1))

        def skip(state: LossScaleState):
            new = jax.tree.map(jnp.zeros_like, jax.eval_shape(apply, state)[0])
            scale = jnp.maximum(state.scale / 2.0, MIN_SCALE)
            return new, LossScaleState(state.inner, scale, jnp.int32(0))

        return jax.lax.cond(finite, apply, skip, state)

    return optax.GradientTransformationExtraArgs(init, update)


def all_finite(tree: Any) -> Array:
    """One bool: every leaf of ``tree`` finite (a few reductions, fused by XLA)."""
    flags = [jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack([jnp.bool_(True), *flags]))


__all__ = [
    "FLOATS",
    "POLICIES",
    "LossScaleState",
    "Policy",
    "all_finite",
    "apply_policy",
    "cast_floating",
    "get_policy",
    "loss_scaled",
]
