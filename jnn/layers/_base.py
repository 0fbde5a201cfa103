"""The layer contract: a NamedTuple of two pure functions (private module).

A :class:`Layer` is ``(init, apply)``::

    init(key, input_shape) -> (output_shape, params)
    apply(params, x, *, key=None, train=False) -> y

A :class:`StatefulLayer` carries non-trainable state (BatchNorm's running
statistics) next to its params, apart from them, so an optimizer never sees it::

    init(key, input_shape) -> (output_shape, params, state)
    apply(params, state, x, *, key=None, train=False) -> (y, new_state)

Combinators return a :class:`StatefulLayer` as soon as one child is stateful
and a plain :class:`Layer` otherwise, so a stateless model keeps the
two-function contract exactly.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, TypeVar

import jax
import jax.numpy as jnp
import numpy as np

from jnn._data import as_array, check_key, check_size, is_int
from jnn._typing import Array, Params, PRNGKey, Shape, State
from jnn.layers._init import compiling


class Layer(NamedTuple):
    """A stateless layer or model: a pair of pure functions.

    Attributes:
      init: ``init(key, input_shape) -> (output_shape, params)``. ``input_shape``
        may hold ``-1`` or ``None`` for the batch dimension; shapes are inferred
        without running the network.
      apply: ``apply(params, x, *, key=None, train=False) -> y``. Works on any
        leading batch dimensions. ``key`` is needed only by stochastic layers
        in training mode.

    Example:
      >>> import jax, jax.numpy as jnp, jnn
      >>> layer = jnn.Dense(3)
      >>> out_shape, params = layer.init(jax.random.key(0), (-1, 2))
      >>> out_shape
      (-1, 3)
      >>> layer.apply(params, jnp.ones((5, 2))).shape
      (5, 3)
    """

    init: Callable[..., tuple[Shape, Params]]
    apply: Callable[..., Any]


class StatefulLayer(NamedTuple):
    """A layer with non-trainable state (e.g. BatchNorm running statistics).

    Attributes:
      init: ``init(key, input_shape) -> (output_shape, params, state)``.
      apply: ``apply(params, state, x, *, key=None, train=False) -> (y, state)``.
        The returned state is the updated one in training mode and the input
        state, unchanged, in evaluation mode.

    Example:
      A running count of the examples seen, kept apart from the (empty) params:

      >>> import jax, jax.numpy as jnp, jnn
      >>> def Counter():
      ...     def init(key, input_shape):
      ...         return tuple(input_shape), {}, {"seen": jnp.zeros((), jnp.int32)}
      ...     def apply(params, state, x, *, key=None, train=False):
      ...         seen = state["seen"] + x.shape[0] if train else state["seen"]
      ...         return x, {"seen": seen}
      ...     return jnn.StatefulLayer(init, apply)
      >>> model = jnn.serial(jnn.Dense(2), Counter())
      >>> jnn.is_stateful(model)
      True
      >>> shape, params, state = model.init(jax.random.key(0), (-1, 3))
      >>> y, state = model.apply(params, state, jnp.ones((4, 3)), train=True)
      >>> state["counter_0"]["seen"]
      Array(4, dtype=int32)
    """

    init: Callable[..., tuple[Shape, Params, State]]
    apply: Callable[..., tuple[Any, State]]


AnyLayer = Layer | StatefulLayer
AnyLayerT = TypeVar("AnyLayerT", Layer, StatefulLayer)


def is_stateful(layer: AnyLayer) -> bool:
    """Whether ``layer`` carries state apart from its params.

    Args:
      layer: a :class:`Layer` or :class:`StatefulLayer`.

    Returns:
      True for a :class:`StatefulLayer` (whose ``init`` also returns state).

    Example:
      >>> import jnn
      >>> jnn.is_stateful(jnn.Dense(2))
      False
    """
    return isinstance(layer, StatefulLayer)


def stateful(layer: AnyLayer) -> StatefulLayer:
    """Lift any layer to the :class:`StatefulLayer` signature (empty state).

    A stateful layer is returned unchanged. This is how combinators and
    :func:`jnn.fit` treat every model uniformly.

    Args:
      layer: a :class:`Layer` or :class:`StatefulLayer`.

    Returns:
      A :class:`StatefulLayer`; for a plain layer its state is ``{}``. Lifting
      one layer twice gives the same object (so compiled steps are reused).

    Raises:
      TypeError: if ``layer`` is not a jnn layer.

    Example:
      >>> import jax, jax.numpy as jnp, jnn
      >>> layer = jnn.stateful(jnn.Dense(2))
      >>> shape, params, state = layer.init(jax.random.key(0), (-1, 3))
      >>> y, state = layer.apply(params, state, jnp.ones((1, 3)))
      >>> state
      {}
    """
    if isinstance(layer, StatefulLayer):
        return layer
    _check_layer(layer)
    return _lift(layer)


@functools.lru_cache(maxsize=256)
def _lift(layer: Layer) -> StatefulLayer:
    """Cached, so lifting one model twice gives one object (and one compilation in fit)."""

    def init(key: PRNGKey, input_shape: Shape) -> tuple[Shape, Params, State]:
        out_shape, params = layer.init(key, input_shape)
        return out_shape, params, {}

    def apply(params, state, x, *, key=None, train=False):
        return layer.apply(params, x, key=key, train=train), state

    init.__jnn_lifts__ = layer.init  # type: ignore[attr-defined]  # for _code
    apply.__jnn_lifts__ = layer.apply  # type: ignore[attr-defined]
    lifted = StatefulLayer(init, apply)
    spec = spec_of(layer)
    if spec is not None:  # the lifted layer is the same layer: same description
        setattr(lifted.init, _SPEC_ATTR, spec)
        if _describes_apply(layer, spec):
            setattr(lifted.apply, _SPEC_ATTR, spec)
    return lifted


def _check_layer(layer: Any, where: str = "") -> None:
    if not isinstance(layer, (Layer, StatefulLayer)):
        got = type(layer).__name__
        hint = (
            " (did you forget to call it, e.g. jnn.Relu() instead of jnn.Relu?)"
            if callable(layer)
            else ""
        )
        raise TypeError(f"{where}expected a jnn.Layer or jnn.StatefulLayer, got {got}{hint}.")


class LayerSpec(NamedTuple):
    """How a layer was built: its kind, its configuration and its named children.

    Every jnn constructor describes the layer it returns (see :func:`describe`);
    :func:`jnn.summary`, exported metadata and the compilation caches read it
    instead of reflecting on Python closures.

    Attributes:
      kind: a snake_case name (``"dense"``, ``"serial"``); children of a
        combinator are keyed ``"<kind>_<i>"`` in its params.
      config: the constructor's arguments, as sorted ``(name, value)`` pairs.
      children: ``(name, layer)`` pairs of a combinator, in order; ``()`` for a leaf.

    Example:
      >>> import jnn
      >>> spec = jnn.layers.spec_of(jnn.Dense(3, activation="relu"))
      >>> spec.kind, dict(spec.config)["features"], dict(spec.config)["activation"]
      ('dense', 3, 'relu')
      >>> [name for name, _ in jnn.layers.spec_of(jnn.serial(jnn.Dense(2), jnn.Relu())).children]
      ['dense_0', 'relu_0']
    """

    kind: str
    config: tuple[tuple[str, Any], ...] = ()
    children: tuple[tuple[str, Any], ...] = ()


_SPEC_ATTR = "__jnn_spec__"  # where describe() keeps a layer's LayerSpec: on its init function
_KIND = re.compile(r"[a-z][a-z0-9_]*\Z")


def describe(
    layer: AnyLayerT,
    kind: str,
    config: dict[str, Any] | None = None,
    children: Iterable[tuple[str, AnyLayer]] = (),
) -> AnyLayerT:
    """Attach a :class:`LayerSpec` to ``layer`` and return it.

    Custom layers should describe themselves too: the description names the
    layer in :func:`jnn.summary` and in its parent's params (``"<kind>_<i>"``),
    and two models built from the same descriptions share compiled programs.
    A layer without one is named after its constructor's ``__qualname__`` and
    cached by identity.

    Args:
      layer: a :class:`Layer` or :class:`StatefulLayer`.
      kind: a snake_case name such as ``"dense"``.
      config: every constructor argument that changes what the layer computes
        or how it initializes (values should be hashable: numbers, strings,
        tuples, dtypes, functions).
      children: ``(name, layer)`` pairs, for combinators.

    Returns:
      A copy of ``layer``, described. Its ``init`` is a wrapper that, called with a
      concrete key, runs the original as one compiled program, cached by the
      layer's structure (kind, config, the code of ``init`` and its children) and
      the input shape, so two models built by the same code initialize without
      compiling twice; under ``jit``/``vmap``, or for an ``init`` that needs
      concrete values, it calls the original. Same values as the original, up to
      float rounding (XLA fuses the ops: normal and orthogonal draws may differ in
      their last bits).

    Raises:
      TypeError: if ``layer`` is not a jnn layer.
      ValueError: if ``kind`` is not snake_case.

    Example:
      >>> import jax, jnn
      >>> def Scale(factor):
      ...     def init(key, input_shape):
      ...         return tuple(input_shape), {}
      ...     def apply(params, x, *, key=None, train=False):
      ...         return factor * x
      ...     return jnn.layers.describe(jnn.Layer(init, apply), "scale", {"factor": factor})
      >>> model = jnn.serial(jnn.Dense(2), Scale(3.0))
      >>> sorted(model.init(jax.random.key(0), (-1, 4))[1])
      ['dense_0', 'scale_0']
    """
    _check_layer(layer, "describe: ")
    if not isinstance(kind, str) or not _KIND.match(kind):
        raise ValueError(f"describe: kind must be a snake_case name such as 'dense', got {kind!r}.")
    items = sorted((name, _frozen(value)) for name, value in (config or {}).items())
    spec = LayerSpec(kind, tuple(items), tuple(children))
    # On both functions: a layer that reuses this init with another apply (a wrapper,
    # Layer(base.init, my_apply)) keeps the name but not the structure key. The init
    # becomes a new function that runs compiled once per structure (layers/_init.py).
    init = compiling(layer.init, _init_program_key)
    setattr(init, _SPEC_ATTR, spec)
    layer = layer._replace(init=init)
    try:
        setattr(layer.apply, _SPEC_ATTR, spec)
    except (AttributeError, TypeError):  # a bound method or a builtin: wrap it
        apply = functools.wraps(layer.apply)(functools.partial(layer.apply))
        setattr(apply, _SPEC_ATTR, spec)
        layer = layer._replace(apply=apply)
    return layer


def _code(fn: Any) -> Any:
    """What identifies the code of ``fn``: closures made by one ``def`` share it (a lifted
    layer's functions are identified by the functions they lift)."""
    while hasattr(fn, "__jnn_lifts__"):
        fn = fn.__jnn_lifts__
    fn = inspect.unwrap(fn)
    while isinstance(fn, functools.partial):
        fn = inspect.unwrap(fn.func)
    fn = getattr(fn, "__func__", fn)
    return getattr(fn, "__code__", fn)


def _init_program_key(init: Callable, input_shape: Any) -> Any:
    """The key of a described ``init``'s compiled program at ``input_shape`` (each shape
    item with its type: ``2``, ``2.0`` and ``True`` differ)."""
    return _init_key(init), _typed(_frozen(input_shape))


def _init_key(init: Callable) -> Any:
    """The key of a described ``init``'s compiled program (its structure, not apply's)."""
    spec = getattr(init, _SPEC_ATTR, None)
    if spec is None:
        return ("id", init)
    children = tuple((name, _init_key(child.init)) for name, child in spec.children)
    return (spec.kind, _typed(spec.config), _code(init), children)


def _describes_apply(layer: AnyLayer, spec: LayerSpec) -> bool:
    """Whether ``layer.apply`` is the function ``spec`` was attached with."""
    return getattr(layer.apply, _SPEC_ATTR, None) is spec


def _frozen(value: Any) -> Any:
    """Lists as tuples, numpy scalars as Python numbers: config values that hash."""
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def spec_of(layer: AnyLayer) -> LayerSpec | None:
    """The :class:`LayerSpec` of a described layer, or None.

    Args:
      layer: a :class:`Layer` or :class:`StatefulLayer`.

    Returns:
      What :func:`describe` attached (every jnn constructor does), else None.

    Example:
      >>> import jnn
      >>> jnn.layers.spec_of(jnn.Relu()).kind
      'relu'
    """
    return getattr(layer.init, _SPEC_ATTR, None)


def structure_key(layer: AnyLayer) -> Any:
    """A hashable key equal for layers built the same way (kind, config, children).

    Two models built by the same code share it, so compiled programs can be
    reused across model objects. A layer (or child) without a description, or
    with an unhashable config value, is keyed by its identity.
    """
    spec = spec_of(layer)
    if spec is None or not _describes_apply(layer, spec):  # undescribed, or a new apply
        return ("id", layer)
    key = (
        spec.kind,
        _typed(spec.config),
        tuple((name, structure_key(child)) for name, child in spec.children),
        is_stateful(layer),
        _code(layer.init),
        _code(layer.apply),
    )
    try:
        hash(key)
    except TypeError:  # e.g. an array in the config
        return ("id", layer)
    return key


def _typed(value: Any) -> Any:
    """``value`` with the type of every item: ``1``, ``1.0`` and ``True`` are equal in
    Python but may trace differently (weak types), so they must not share programs."""
    if isinstance(value, tuple):
        return tuple(_typed(v) for v in value)
    return (type(value), value)


def layer_kind(layer: AnyLayer) -> str:
    """A snake_case name for ``layer``: its described kind, else its constructor's name.

    Used to name children in combinators' params dicts (``Dense`` -> ``"dense"``).
    """
    spec = spec_of(layer)
    if spec is not None:
        return spec.kind
    qualname = getattr(layer.init, "__qualname__", "")
    head = qualname.split(".<locals>")[0].split(".")[0]
    if not head or not head.isidentifier() or head == "<lambda>":
        return "layer"
    return snake_case(head)


def snake_case(name: str) -> str:
    """``"LeakyRelu"`` -> ``"leaky_relu"``: a constructor's name as a layer kind."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def child_names(layers: Iterable[AnyLayer]) -> list[str]:
    """Keras-style unique names: ``dense_0, relu_0, dense_1, ...``."""
    counts: dict[str, int] = {}
    names = []
    for layer in layers:
        kind = layer_kind(layer)
        names.append(f"{kind}_{counts.get(kind, 0)}")
        counts[kind] = counts.get(kind, 0) + 1
    return names


def split_key(key: PRNGKey | None, n: int, where: str = "layer") -> list[PRNGKey | None]:
    """``n`` independent subkeys, or ``n`` Nones when ``key`` is None (bad keys: clear errors)."""
    if key is None:
        return [None] * n
    return list(jax.random.split(check_key(where, key), n))


def normalize_shape(name: str, input_shape: Any) -> tuple[int, ...]:
    """Validate an ``input_shape`` given to ``init``; ``None`` dims become ``-1``.

    Dimensions may be Python or numpy ints (not bools); the known ones must not
    describe more per-example elements than XLA can index or memory can hold
    (:func:`jnn._data.check_size`).
    """
    try:
        dims = tuple(input_shape)
    except TypeError:
        raise TypeError(
            f"{name}.init: input_shape must be a tuple of ints such as (-1, 10), "
            f"got {input_shape!r}."
        ) from None
    out = []
    for d in dims:
        if d is None:
            out.append(-1)
        elif is_int(d) and (d > 0 or d == -1):
            out.append(int(d))
        else:
            raise ValueError(
                f"{name}.init: every dimension of input_shape must be a positive int, "
                f"or -1/None for an unknown batch size; got {input_shape!r}."
            )
    shape = tuple(out)
    check_size(f"{name}.init", "input_shape", shape)
    return shape


def init_param(
    name: str,
    what: str,
    initializer: Callable[..., Array],
    key: PRNGKey | None,
    shape: Any,
    dtype: Any,
) -> Array:
    """``initializer(key, shape, dtype)``, after checking the parameter fits in memory.

    Every layer creates its parameters through this, so a size that would
    overflow XLA's element count (which aborts the interpreter) or exceed the
    device's memory is refused at ``init`` with the layer, the parameter, its
    shape and its bytes (:func:`jnn._data.check_size`). Layer authors: call it
    for every parameter and state array.

    Args:
      name: the layer, e.g. ``"Dense(4)"``.
      what: the parameter's key, e.g. ``"w"``.
      initializer: a ``jax.nn.initializers`` function ``(key, shape, dtype)``.
      key: its PRNG key (None for initializers that ignore it, e.g. zeros).
      shape: the parameter's shape.
      dtype: its dtype.

    Returns:
      The new parameter. A 16-bit float one is drawn in float32 and rounded, so every
      initializer works for it (the orthogonal one's QR has no 16-bit kernel).

    Raises:
      ValueError: if the parameter is too large.
    """
    shape = tuple(int(d) for d in shape)
    check_size(f"{name}.init", f"parameter {what!r}", shape, dtype)
    if key is not None:
        key = check_key(f"{name}.init", key)
    if jnp.dtype(dtype).itemsize < 4 and jnp.issubdtype(dtype, jnp.floating):
        # 16-bit floats: drawn in float32 and rounded (e.g. the orthogonal initializer's
        # QR decomposition has no bfloat16 or float16 kernel).
        value = jnp.asarray(initializer(key, shape, jnp.float32)).astype(dtype)
    else:
        value = jnp.asarray(initializer(key, shape, dtype))
    if value.shape != shape:  # a custom initializer: never broadcast its result silently
        raise ValueError(
            f"{name}.init: the initializer of parameter {what!r} returned shape "
            f"{tuple(value.shape)}, expected {shape}; an initializer is called as "
            "init(key, shape, dtype) and must return that shape."
        )
    return value


def feature_dim(name: str, input_shape: Shape, *, min_rank: int = 1) -> int:
    """The known size of the last axis of ``input_shape``, or a clear error."""
    shape = normalize_shape(name, input_shape)
    if len(shape) < min_rank:
        raise ValueError(
            f"{name}.init: expected an input_shape of rank >= {min_rank}, got {shape}."
        )
    if shape[-1] == -1:
        raise ValueError(
            f"{name}.init: the feature (last) dimension must be known, got {shape}; "
            "only leading batch dimensions may be -1 or None."
        )
    return shape[-1]


def check_numeric(name: str, x: Any, what: str = "input") -> Array:
    """``x`` as a numeric ``jax.Array`` (bool, int, float), or a TypeError naming the layer."""
    return jnp.asarray(as_array(name, what, x, complex_ok=True))


def check_shapes(name: str, input_shape: Any) -> Any:
    """A shape, or a (nested) tuple of shapes for several inputs, as tuples; else a TypeError."""
    if (
        isinstance(input_shape, (tuple, list))
        and input_shape
        and all(isinstance(s, (tuple, list)) for s in input_shape)
    ):
        return tuple(check_shapes(name, s) for s in input_shape)
    return normalize_shape(name, input_shape)  # () included: the shape of a scalar


def check_inexact(name: str, x: Any) -> Array:
    """``x`` as an array with a floating dtype, or a TypeError naming the layer."""
    x = check_numeric(name, x)
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        raise TypeError(
            f"{name}: expected floating-point input, got dtype {x.dtype} with shape "
            f"{tuple(x.shape)}. Cast it first, e.g. x.astype(jnp.float32)."
        )
    return x
