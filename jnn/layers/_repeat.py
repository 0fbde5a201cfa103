"""remat and repeat: deep models that fit in memory and compile fast (private module).

- :func:`remat` runs a layer under :func:`jax.checkpoint`: the backward pass
  recomputes its activations instead of keeping them.
- :func:`repeat` stacks ``n`` copies of a layer (params with a leading ``n``
  axis) and applies them with one ``lax.scan``, so the program holds one copy
  of the layer, however deep the stack (Haiku's ``layer_stack``, Equinox's
  scan-over-layers).

Both are transparent about params: ``remat(layer)`` has exactly ``layer``'s
params, and ``repeat(layer, n)`` has ``layer``'s params with a leading ``n``
axis on every leaf (copy ``i`` is ``jax.tree.map(lambda p: p[i], params)``).
In a combinator they are keyed by their own kind (``remat_0``, ``repeat_0``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from jax import lax

from jnn._data import check_key, check_positive_int, close_match
from jnn._typing import Params, PRNGKey, Shape, State
from jnn.layers._base import (
    AnyLayer,
    Layer,
    StatefulLayer,
    _check_layer,
    check_numeric,
    describe,
    is_stateful,
    layer_kind,
)

#: Policies of ``jax.checkpoint_policies`` that :func:`remat` takes by name (the others
#: are factories: pass what they return, e.g. ``save_only_these_names("x")``).
POLICIES = tuple(
    name
    for name in (
        "everything_saveable",
        "nothing_saveable",
        "dots_saveable",
        "checkpoint_dots",
        "dots_with_no_batch_dims_saveable",
        "checkpoint_dots_with_no_batch_dims",
    )
    if hasattr(jax.checkpoint_policies, name)
)


def _policy(policy: Any) -> Callable | None:
    if policy is None or (callable(policy) and not isinstance(policy, str)):
        return policy
    if not isinstance(policy, str):
        raise TypeError(
            f"remat: policy must be None, a name from jax.checkpoint_policies or a policy "
            f"function, got {type(policy).__name__}."
        )
    if policy not in POLICIES:
        factory = hasattr(jax.checkpoint_policies, policy) and not policy.startswith("_")
        hint = (
            f" jax.checkpoint_policies.{policy} is a policy factory: pass what it returns, "
            f"e.g. policy=jax.checkpoint_policies.{policy}(...)."
            if factory
            else close_match(policy, POLICIES)
        )
        raise ValueError(f"remat: unknown policy {policy!r}; expected one of {POLICIES}.{hint}")
    return getattr(jax.checkpoint_policies, policy)


def remat(layer: AnyLayer, *, policy: str | Callable | None = None) -> AnyLayer:
    """Recompute ``layer``'s activations in the backward pass (:func:`jax.checkpoint`).

    Trades compute for memory: the forward pass keeps only the layer's inputs
    (and what ``policy`` saves), and the backward pass runs the layer again.
    Values and gradients are those of ``layer`` itself (bit-identical in the
    tests, on the CPU, with the default policy, ``"nothing_saveable"`` and
    ``"dots_saveable"``; equal up to float rounding with
    ``"everything_saveable"``, whose saved forward XLA fuses differently).

    Wrap the repeated block of a deep model, ``repeat(remat(block), n)``, to
    keep one block's activations at a time: a 48-block residual MLP then
    needs half the temporary memory to train (``benchmarks/bench_deep.py``).
    On the CPU that is where it helps: XLA:CPU drops the barriers that keep
    a recomputation apart and merges it back into the forward pass, so a
    ``serial`` of ``remat`` blocks uses as much memory as the plain model;
    inside the loop of :func:`repeat` the recomputation stays.

    Args:
      layer: any layer or model (stateful ones too).
      policy: which intermediates to save rather than recompute: None (save
        nothing but the inputs), a name from :data:`jax.checkpoint_policies`
        such as ``"dots_saveable"`` or ``"dots_with_no_batch_dims_saveable"``,
        or a policy function (e.g.
        ``jax.checkpoint_policies.save_only_these_names("x")``).

    Returns:
      A layer of the same kind (stateful if ``layer`` is) with exactly
      ``layer``'s params; keyed ``remat_<i>`` in a combinator.

    Raises:
      TypeError: if ``layer`` is not a layer.
      ValueError: for an unknown policy name (with the closest match).

    Example:
      >>> import jax, jax.numpy as jnp, jnn
      >>> block = jnn.residual(jnn.Dense(64, activation="relu"), jnn.Dense(64))
      >>> light = jnn.remat(block, policy="dots_saveable")
      >>> _, params = block.init(jax.random.key(0), (-1, 64))
      >>> x = jnp.ones((8, 64))
      >>> loss = lambda layer: lambda p: (layer.apply(p, x) ** 2).sum()
      >>> g, g_remat = jax.grad(loss(block))(params), jax.grad(loss(light))(params)
      >>> jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), g, g_remat))
      True
    """
    _check_layer(layer, "remat: layer: ")
    resolved = _policy(policy)
    config = {"policy": policy}
    children = [(layer_kind(layer), layer)]
    if isinstance(layer, StatefulLayer):
        inner_s = layer

        def s_apply(params: Params, state: State, x: Any, *, key=None, train=False):
            def run(p: Params, s: State, x: Any, k: PRNGKey | None) -> Any:
                return inner_s.apply(p, s, x, key=k, train=train)

            return jax.checkpoint(run, policy=resolved)(params, state, x, key)

        return describe(StatefulLayer(_own(layer.init), s_apply), "remat", config, children)

    inner = layer

    def apply(params: Params, x: Any, *, key=None, train=False):
        def run(p: Params, x: Any, k: PRNGKey | None) -> Any:
            return inner.apply(p, x, key=k, train=train)

        return jax.checkpoint(run, policy=resolved)(params, x, key)

    return describe(Layer(_own(layer.init), apply), "remat", config, children)


def _own(init: Callable) -> Callable:
    """A new function calling ``init`` (a description must not land on the child's init)."""

    def own_init(key: PRNGKey, input_shape: Shape) -> Any:
        return init(key, input_shape)

    return own_init


def _shape_tree(shape: Any) -> Any:
    """A shape (or nested tuple of shapes) with ``None`` dims as ``-1``, for comparison."""
    if isinstance(shape, (tuple, list)):
        return tuple(_shape_tree(s) for s in shape)
    return -1 if shape is None else shape


def repeat(layer: AnyLayer, n: int) -> AnyLayer:
    """``n`` copies of ``layer`` applied in sequence, as one ``lax.scan`` over stacked params.

    Equal to ``serial`` of ``n`` copies of ``layer`` with the same params (and
    initialized alike: copy ``i`` gets the ``i``-th of ``jax.random.split(key,
    n)``, as ``serial`` gives its ``i``-th child), but the program holds the
    layer once, so compile time does not grow with ``n``. The layer must keep
    its input's shape (each copy feeds the next); a residual block is the
    usual choice. Composes with :func:`remat` (``repeat(remat(block), n)``
    keeps one block's activations at a time) and with stateful layers (their
    state is stacked like the params). In training mode each copy gets the
    ``i``-th of ``jax.random.split(key, n)``, again like ``serial``.

    In :func:`jnn.summary`, the repeated layer is one row under ``repeat``
    whose param shapes and counts include the leading ``n`` axis.

    Args:
      layer: the layer to repeat; its output shape must equal its input shape.
      n: the number of copies, a positive int.

    Returns:
      A layer (stateful if ``layer`` is) whose params are ``layer``'s with a
      leading axis of size ``n`` on every leaf; copy ``i`` is
      ``jax.tree.map(lambda p: p[i], params)``. Keyed ``repeat_<i>`` in a combinator.

    Raises:
      TypeError: if ``layer`` is not a layer.
      ValueError: if ``n`` is not a positive int (``0`` and bools included);
        from ``init``, if the layer changes the shape (both shapes named).

    Example:
      >>> import jax, jax.numpy as jnp, jnn
      >>> block = jnn.residual(jnn.Dense(32, activation="relu"), jnn.Dense(32))
      >>> deep = jnn.serial(jnn.Dense(32), jnn.repeat(jnn.remat(block), 12), jnn.Dense(1))
      >>> shape, params = deep.init(jax.random.key(0), (-1, 8))
      >>> params["repeat_0"]["dense_1"]["w"].shape         # 12 stacked (32, 32) kernels
      (12, 32, 32)
      >>> deep.apply(params, jnp.ones((4, 8))).shape
      (4, 1)
    """
    _check_layer(layer, "repeat: layer: ")
    n = check_positive_int("repeat", "n", n)
    stateful_child = is_stateful(layer)

    def init(key: PRNGKey, input_shape: Shape) -> Any:
        want = _shape_tree(input_shape)

        def one(k: PRNGKey) -> Any:
            out_shape, *rest = layer.init(k, input_shape)
            if _shape_tree(out_shape) != want:
                raise ValueError(
                    f"repeat: the layer maps shape {want} to {_shape_tree(out_shape)}; each "
                    "copy feeds the next, so they must be equal. Repeat a shape-keeping block "
                    "(e.g. jnn.residual(...)) and put projections outside the repeat."
                )
            return tuple(rest)

        keys = jax.random.split(check_key("repeat.init", key), n)
        stacked = jax.vmap(one)(keys)
        return (want, *stacked)

    def scan(params: Params, state: State | None, x: Any, key: PRNGKey | None, train: bool):
        keys = None if key is None else jax.random.split(check_key("repeat.apply", key), n)
        x = jax.tree.map(lambda a: check_numeric(f"repeat({n})", a), x)  # arrays, one message

        def body(carry: Any, slices: tuple) -> tuple[Any, Any]:
            p, s, k = slices
            if stateful_child:
                return layer.apply(p, s, carry, key=k, train=train)
            return layer.apply(p, carry, key=k, train=train), None

        _check_carry(body, x, (params, state, keys))
        return lax.scan(body, x, (params, state, keys))

    children = [(layer_kind(layer), layer)]
    if stateful_child:

        def s_apply(params: Params, state: State, x: Any, *, key=None, train=False):
            return scan(params, state, x, key, train)

        return describe(StatefulLayer(init, s_apply), "repeat", {"n": n}, children)

    def apply(params: Params, x: Any, *, key=None, train=False):
        return scan(params, None, x, key, train)[0]

    return describe(Layer(init, apply), "repeat", {"n": n}, children)


def _check_carry(body: Callable, x: Any, xs: Any) -> None:
    """A clear error when one copy's output differs from its input (scan needs them equal)."""
    first = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), xs)
    out = jax.eval_shape(lambda c, s: body(c, s)[0], x, first)
    given = jax.tree.map(lambda a: (tuple(a.shape), str(a.dtype)), jax.eval_shape(lambda: x))
    got = jax.tree.map(lambda a: (tuple(a.shape), str(a.dtype)), out)
    if given != got:
        raise ValueError(
            f"repeat: the layer maps input (shape, dtype) {given} to {got}; each copy feeds "
            "the next, so they must be equal (cast the input to the params' dtype)."
        )


__all__ = ["remat", "repeat"]
