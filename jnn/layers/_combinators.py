"""Combinators: serial, parallel, residual, FanOut, FanInSum, FanInConcat (private).

Each combinator is written once against the stateful signature; when no child
is stateful the result is converted back to a plain :class:`Layer`, so a
stateless model keeps the two-function contract exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax.numpy as jnp

from jnn._data import check_int, check_positive_int
from jnn._typing import Params, PRNGKey, Shape, State
from jnn.layers._base import (
    AnyLayer,
    Layer,
    StatefulLayer,
    _check_layer,
    check_shapes,
    child_names,
    describe,
    is_stateful,
    normalize_shape,
    split_key,
    stateful,
)


def _finish(
    kind: str,
    init: Callable,
    apply: Callable,
    children: Sequence[AnyLayer],
) -> AnyLayer:
    """Describe the layer (``kind``, its named children) and drop the state plumbing if no
    child has state."""
    names = child_names(children)
    named = list(zip(names, children, strict=True))
    if any(is_stateful(c) for c in children):
        return describe(StatefulLayer(init, apply), kind, children=named)
    empty_state: State = {name: {} for name in names}

    def stateless_init(key: PRNGKey, input_shape: Shape) -> tuple[Shape, Params]:
        out_shape, params, _ = init(key, input_shape)
        return out_shape, params

    def stateless_apply(params: Params, x: Any, *, key=None, train=False):
        return apply(params, empty_state, x, key=key, train=train)[0]

    return describe(Layer(stateless_init, stateless_apply), kind, children=named)


def _children(kind: str, layers: Sequence[Any]) -> tuple[list[str], list[StatefulLayer]]:
    if not layers:
        raise ValueError(f"{kind}: expected at least one layer, got none.")
    for i, layer in enumerate(layers):
        _check_layer(layer, f"{kind}: argument {i}: ")
    return child_names(layers), [stateful(layer) for layer in layers]


def _child(kind: str, params: Any, name: str) -> Any:
    """``params[name]``, or a clear error for params that belong to another model."""
    if not isinstance(params, dict) or name not in params:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(
            f"{kind}.apply: params has no entry {name!r} (got {got}); pass the params "
            "returned by this model's init."
        )
    return params[name]


def serial(*layers: AnyLayer) -> AnyLayer:
    """Compose layers in sequence; the model is itself a layer.

    Params (and state, for stateful models) are dicts keyed by child name,
    ``"<kind>_<i>"`` counted per kind, e.g. ``{"dense_0": ..., "dense_1": ...}``.
    ``apply`` splits ``key`` into one subkey per child.

    Args:
      *layers: the layers, applied first to last.

    Returns:
      A :class:`Layer`, or a :class:`StatefulLayer` if any child is stateful.

    Raises:
      ValueError: if no layer is given.
      TypeError: if an argument is not a layer (e.g. ``jnn.Relu`` uncalled).

    Example:
      >>> import jax, jax.numpy as jnp, jnn
      >>> model = jnn.serial(jnn.Dense(10, activation="relu"),
      ...                    jnn.Dense(1, activation="sigmoid"))
      >>> out_shape, params = model.init(jax.random.key(0), (-1, 4))
      >>> out_shape, sorted(params)
      ((-1, 1), ['dense_0', 'dense_1'])
      >>> model.apply(params, jnp.ones((3, 4))).shape
      (3, 1)
    """
    names, children = _children("serial", layers)

    def init(key: PRNGKey, input_shape: Shape) -> tuple[Shape, Params, State]:
        params, state = {}, {}
        shape = input_shape
        for name, layer, k in zip(
            names, children, split_key(key, len(children), "serial.init"), strict=True
        ):
            shape, params[name], state[name] = layer.init(k, shape)
        return shape, params, state

    def apply(params: Params, state: State, x: Any, *, key=None, train=False):
        new_state = {}
        for name, layer, k in zip(
            names, children, split_key(key, len(children), "serial.apply"), strict=True
        ):
            x, new_state[name] = layer.apply(
                _child("serial", params, name), state[name], x, key=k, train=train
            )
        return x, new_state

    return _finish("serial", init, apply, layers)


def parallel(*layers: AnyLayer) -> AnyLayer:
    """Apply the i-th layer to the i-th element of a tuple input.

    Combine with :func:`FanOut` and :func:`FanInSum` / :func:`FanInConcat` to
    build branches.

    Args:
      *layers: one layer per branch.

    Returns:
      A layer whose ``init`` takes a tuple of input shapes and whose ``apply``
      takes a tuple of inputs, returning a tuple; params are keyed like
      :func:`serial`'s. Stateful if any child is.

    Raises:
      ValueError: if no layer is given, or (from ``init``/``apply``) if the
        input is not a tuple with one element per branch.

    Example:
      >>> import jax, jax.numpy as jnp, jnn
      >>> block = jnn.serial(jnn.FanOut(2), jnn.parallel(jnn.Dense(3), jnn.Dense(3)),
      ...                    jnn.FanInSum())
      >>> block.init(jax.random.key(0), (-1, 5))[0]
      (-1, 3)
    """
    names, children = _children("parallel", layers)

    def init(key: PRNGKey, input_shape: Sequence[Shape]) -> tuple[tuple[Shape, ...], Params, State]:
        shapes = _tuple_of(len(children), input_shape, "parallel.init: input_shape")
        params, state, out = {}, {}, []
        for name, layer, k, s in zip(
            names, children, split_key(key, len(children), "parallel.init"), shapes, strict=True
        ):
            shape, params[name], state[name] = layer.init(k, s)
            out.append(shape)
        return tuple(out), params, state

    def apply(params: Params, state: State, xs: Any, *, key=None, train=False):
        xs = _tuple_of(len(children), xs, "parallel.apply: input")
        ys, new_state = [], {}
        for name, layer, k, x in zip(
            names, children, split_key(key, len(children), "parallel.apply"), xs, strict=True
        ):
            y, new_state[name] = layer.apply(
                _child("parallel", params, name), state[name], x, key=k, train=train
            )
            ys.append(y)
        return tuple(ys), new_state

    return _finish("parallel", init, apply, layers)


def residual(*layers: AnyLayer) -> AnyLayer:
    """``x + f(x)`` where ``f = serial(*layers)``; ``f`` must keep the shape.

    Args:
      *layers: the branch ``f``, composed with :func:`serial`.

    Returns:
      A layer with ``f``'s params (keyed like :func:`serial`'s); stateful if
      any child is.

    Raises:
      ValueError: from ``init``, if ``f`` changes the shape (no broadcasting).

    Example:
      >>> import jax, jax.numpy as jnp, jnn
      >>> block = jnn.residual(jnn.Dense(8, activation="relu"), jnn.Dense(8))
      >>> shape, params = block.init(jax.random.key(0), (-1, 8))
      >>> block.apply(params, jnp.ones((2, 8))).shape
      (2, 8)
    """
    body = stateful(serial(*layers))

    def init(key: PRNGKey, input_shape: Shape) -> tuple[Shape, Params, State]:
        in_shape = normalize_shape("residual", input_shape)
        out_shape, params, state = body.init(key, input_shape)
        if tuple(out_shape) != in_shape:
            raise ValueError(
                f"residual: the branch maps shape {in_shape} to {tuple(out_shape)}; x + f(x) "
                "needs them equal. Add a projection (e.g. a Dense) to match the widths."
            )
        return in_shape, params, state

    def apply(params: Params, state: State, x: Any, *, key=None, train=False):
        y, new_state = body.apply(params, state, x, key=key, train=train)
        return x + y, new_state

    return _finish("residual", init, apply, layers)


def FanOut(num: int) -> Layer:
    """Copy the input into a tuple of ``num`` identical branches.

    Args:
      num: the number of branches.

    Returns:
      A parameter-free :class:`Layer` mapping ``x`` to ``(x,) * num``.

    Raises:
      ValueError: if ``num`` is not a positive int.

    Example:
      >>> import jax, jnn
      >>> jnn.FanOut(2).init(jax.random.key(0), (-1, 3))[0]
      ((-1, 3), (-1, 3))
    """
    num = check_positive_int("FanOut", "num", num, maximum=2**16)

    def init(key: PRNGKey, input_shape: Shape) -> tuple[Any, Params]:
        del key
        return (check_shapes("FanOut", input_shape),) * num, {}

    def apply(params: Params, x: Any, *, key=None, train=False):
        del params, key, train
        return (x,) * num

    return describe(Layer(init, apply), "fan_out", {"num": num})


def FanInSum() -> Layer:
    """Sum a tuple of same-shaped inputs (shapes must match exactly).

    Returns:
      A parameter-free :class:`Layer` mapping ``(x1, x2, ...)`` to ``x1 + x2 + ...``.

    Raises:
      ValueError: from ``init`` or ``apply``, if the shapes differ (no broadcasting).

    Example:
      >>> import jax.numpy as jnp, jnn
      >>> jnn.FanInSum().apply({}, (jnp.ones(2), jnp.ones(2)))
      Array([2., 2.], dtype=float32)
    """

    def init(key: PRNGKey, input_shape: Sequence[Shape]) -> tuple[Shape, Params]:
        del key
        shapes = _branch_shapes("FanInSum", input_shape)
        if any(s != shapes[0] for s in shapes):
            raise ValueError(f"FanInSum: all branches must have one shape, got {shapes}.")
        return shapes[0], {}

    def apply(params: Params, xs: Any, *, key=None, train=False):
        del params, key, train
        _branches("FanInSum", xs)
        shapes = [jnp.shape(x) for x in xs]
        if any(s != shapes[0] for s in shapes):
            raise ValueError(f"FanInSum: all branches must have one shape, got {shapes}.")
        return sum(xs[1:], xs[0])

    return describe(Layer(init, apply), "fan_in_sum")


def FanInConcat(axis: int = -1) -> Layer:
    """Concatenate a tuple of inputs along ``axis`` (default: features).

    Args:
      axis: the axis to concatenate along.

    Returns:
      A parameter-free :class:`Layer`.

    Raises:
      ValueError: from ``init``, if the shapes differ off the concatenation axis.

    Example:
      >>> import jax, jnn
      >>> jnn.FanInConcat().init(jax.random.key(0), ((-1, 3), (-1, 5)))[0]
      (-1, 8)
    """

    axis = check_int("FanInConcat", "axis", axis)
    name = f"FanInConcat(axis={axis})"

    def init(key: PRNGKey, input_shape: Sequence[Shape]) -> tuple[Shape, Params]:
        del key
        shapes = [list(s) for s in _branch_shapes(name, input_shape)]
        rank = len(shapes[0])
        if not -rank <= axis < rank or any(len(s) != rank for s in shapes):
            raise ValueError(
                f"{name}: expected branch shapes of one rank with an axis {axis}, got {shapes}."
            )
        ax = axis % rank
        out = list(shapes[0])
        out[ax] = -1 if any(s[ax] == -1 for s in shapes) else sum(s[ax] for s in shapes)
        for s in shapes:
            if s[:ax] + s[ax + 1 :] != out[:ax] + out[ax + 1 :]:
                raise ValueError(f"{name}: shapes {shapes} differ off the concat axis.")
        return tuple(out), {}

    def apply(params: Params, xs: Any, *, key=None, train=False):
        del params, key, train
        _branches(name, xs)
        return jnp.concatenate(xs, axis=axis)

    return describe(Layer(init, apply), "fan_in_concat", {"axis": axis})


def _branches(name: str, xs: Any) -> None:
    """A fan-in's input must be a tuple (or list) of at least one branch."""
    if isinstance(xs, (tuple, list)) and xs:
        return
    got = f"a {type(xs).__name__}"
    if isinstance(xs, (tuple, list)):
        got = f"an empty {type(xs).__name__}"
    elif hasattr(xs, "shape"):
        got += f" of shape {tuple(xs.shape)}"
    raise ValueError(
        f"{name}: expected a tuple of branches (e.g. from FanOut or parallel), got {got}."
    )


def _branch_shapes(name: str, input_shape: Any) -> list[tuple[int, ...]]:
    """The normalized shapes of a fan-in's branches (a non-empty tuple of shapes)."""
    if (
        not isinstance(input_shape, (tuple, list))
        or not input_shape
        or not all(isinstance(s, (tuple, list)) for s in input_shape)
    ):
        raise ValueError(
            f"{name}.init: input_shape must be a tuple of branch shapes such as "
            f"((-1, 3), (-1, 5)), got {input_shape!r}."
        )
    return [normalize_shape(name, s) for s in input_shape]


def _tuple_of(n: int, value: Any, what: str) -> tuple:
    if not isinstance(value, (tuple, list)) or len(value) != n:
        got = (
            f"{type(value).__name__} of length {len(value)}"
            if isinstance(value, (tuple, list))
            else type(value).__name__
        )
        raise ValueError(f"{what}: expected a tuple of {n} elements (one per branch), got {got}.")
    return tuple(value)


__all__ = ["FanInConcat", "FanInSum", "FanOut", "parallel", "residual", "serial"]
