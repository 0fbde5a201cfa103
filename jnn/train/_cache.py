"""Compiled programs: cached per model *structure* in a process, and on disk across processes.

In a process: every compiled program of the engine (``fit``'s epochs, ``evaluate``,
``predict``, stream calls, sweeps) is built by a function decorated with
:func:`program_cache`, an LRU of :data:`PROGRAMS` entries per program kind. Before the
lookup each model argument is replaced by a *canonical* model: the first model seen
with the same :func:`jnn.layers._base.structure_key` (layer kinds, configurations and
children). Two models built by the same code therefore share one ``jax.jit`` object,
and ``jax.jit``'s own cache (keyed by shapes, dtypes and shardings) then serves the
second model without tracing or compiling. This is sound because a layer's
description covers everything its ``init`` and ``apply`` close over (see
:func:`jnn.layers.describe`); a layer without a description is keyed by identity, as
before. Losses, metrics and optimizers are keyed by identity; names resolve to one
object each (``get_optimizer("adam", 1e-3)`` is always the same transformation).

Across processes: :func:`jnn.compile_cache` (:mod:`jnn._compile_cache`) turns on JAX's
persistent compilation cache.
"""

from __future__ import annotations

import functools
import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

from jnn._compile_cache import fast_options
from jnn.layers._base import Layer, StatefulLayer, structure_key
from jnn.layers._init import clear as clear_inits

# Programs kept per kind (epoch, split epoch, evaluate, predict, ...); each entry holds
# one jax.jit object, whose own cache holds its compilations (one per shapes/dtypes).
PROGRAMS = 64
# Canonical models remembered (one per distinct structure).
MODELS = 256

_lock = threading.Lock()
_models: OrderedDict[Any, Any] = OrderedDict()
_by_id: OrderedDict[int, tuple[Any, Any]] = OrderedDict()
_clearers: list[Callable[[], None]] = [clear_inits]  # compiled model inits too

F = TypeVar("F", bound=Callable[..., Any])


def canonical(model: Any) -> Any:
    """The first model seen with ``model``'s structure key (``model`` itself if new).

    Undescribed layers are keyed by identity, so they map to themselves.
    """
    seen = _by_id.get(id(model))  # a model seen before: skip its structure key
    if seen is not None and seen[0] is model:
        return seen[1]
    key = (type(model), structure_key(model))
    with _lock:
        rep = _models.get(key)
        if rep is None:
            _models[key] = rep = model
            if len(_models) > MODELS:
                _models.popitem(last=False)
        else:
            _models.move_to_end(key)
        _by_id[id(model)] = (model, rep)  # holds the model, so its id stays its own
        if len(_by_id) > MODELS:
            _by_id.popitem(last=False)
    return rep


def _canonical_arg(arg: Any) -> Any:
    if isinstance(arg, (Layer, StatefulLayer)):
        return canonical(arg)
    fields = getattr(arg, "_fields", None)  # a spec NamedTuple holding a model (EpochSpec)
    if isinstance(arg, tuple) and fields is not None and "model" in fields:
        return arg._replace(model=canonical(arg.model))  # type: ignore[attr-defined]
    return arg


def program_cache(fn: F) -> F:
    """``functools.lru_cache(PROGRAMS)`` of a program builder, models made canonical first.

    The builder's arguments must be hashable; a layer argument, or the ``model`` field
    of a NamedTuple argument, is replaced by :func:`canonical`.
    """
    cached = functools.lru_cache(maxsize=PROGRAMS)(fn)
    _clearers.append(cached.cache_clear)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        args = tuple(_canonical_arg(a) for a in args)
        kwargs = {k: _canonical_arg(v) for k, v in kwargs.items()}
        return cached(*args, **kwargs)

    wrapper.cache_info = cached.cache_info  # type: ignore[attr-defined]
    wrapper.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def clear_programs() -> None:
    """Forget every cached program and canonical model (the next fit compiles afresh)."""
    with _lock:
        _models.clear()
        _by_id.clear()
    for clear in _clearers:
        clear()


# --------------------------------------------------------------------------- compile less

# Epochs this small (flops of one pass over the data, fwd + bwd) compile fast on a CPU
# (jnn._compile_cache.FAST_COMPILE: ~3x less compile time, ~1.5-3x slower code): even
# 100 epochs of 1e7 flops lose less than the ~0.5 s the seed epoch's compile saves.
SMALL_EPOCH_FLOPS = 1e7


def compiler_options(fast: bool) -> dict[str, Any] | None:
    """The ``jax.jit(compiler_options=)`` of a program compiled fast, or None."""
    return fast_options() if fast else None


def small_program(
    model: Any, params: Any, model_state: Any, x: Any, plan: Any = None, *, passes: int = 3
) -> bool:
    """Whether ``passes`` passes of ``model`` over ``x`` (3 for a training epoch: forward
    and backward; 1 for evaluate/predict) make a program small enough to compile fast
    (CPU only, no mesh): at most :data:`SMALL_EPOCH_FLOPS`.

    The forward pass of one example is counted on its jaxpr (:func:`jaxpr_flops`; a
    trace, no lowering), remembered per model structure and row shape. A quick bound
    first: every parameter is used at least once per example, so ``2 * passes * params *
    rows`` above the limit needs no trace.
    """
    import jax

    if plan is not None or fast_options() is None:  # a CPU without a mesh only
        return False
    rows = x.shape[0]
    size = sum(int(getattr(a, "size", 1)) for a in jax.tree.leaves(params))
    if 2 * passes * size * rows > SMALL_EPOCH_FLOPS:
        return False
    row = jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype)
    flops = _forward_flops(canonical(model), _spec_tree(params), _spec_tree(model_state), row)
    return 0 < passes * flops * rows <= SMALL_EPOCH_FLOPS


def _spec_tree(tree: Any) -> Any:
    """A hashable stand-in for a pytree of arrays: its structure and leaf shapes/dtypes."""
    import jax

    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple((tuple(a.shape), str(a.dtype)) for a in leaves)


@functools.lru_cache(maxsize=PROGRAMS)
def _forward_flops(model: Any, params: Any, model_state: Any, row: Any) -> float:
    import jax

    def rebuild(spec: Any) -> Any:
        treedef, leaves = spec
        return jax.tree.unflatten(treedef, [jax.ShapeDtypeStruct(s, d) for s, d in leaves])

    try:
        fn = lambda p, s, x: model.apply(p, s, x, train=False)[0]  # noqa: E731
        return jaxpr_flops(jax.make_jaxpr(fn)(rebuild(params), rebuild(model_state), row).jaxpr)
    except Exception:  # an estimate only: unknown means "not small"
        return 0.0


def jaxpr_flops(jaxpr: Any) -> float:
    """Flops of a jaxpr, estimated as XLA's cost analysis counts them: 2 per multiply-add of
    a ``dot_general`` or convolution, one per output element of any other operation;
    nested jaxprs (jit, custom derivatives, remat) once, a ``scan`` body ``length``
    times, a ``cond`` by its costliest branch, a ``while`` loop as infinite (its trip
    count is unknown). Used to choose the compile options, never for results."""
    total = 0.0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        subs = [sub for value in eqn.params.values() for sub in _sub_jaxprs(value)]
        if name == "while":
            return math.inf
        if name == "dot_general":
            (contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += 2.0 * _size(eqn.outvars) * math.prod(lhs[d] for d in contract)
        elif name == "conv_general_dilated":  # each output: kernel window x input features
            rhs = eqn.invars[1].aval.shape
            out_features = rhs[eqn.params["dimension_numbers"].rhs_spec[0]]
            total += 2.0 * _size(eqn.outvars) * math.prod(rhs) / out_features
        elif name == "cond":
            total += max(jaxpr_flops(sub) for sub in subs)
        elif subs:
            total += eqn.params.get("length", 1) * sum(jaxpr_flops(sub) for sub in subs)
        else:
            total += _size(eqn.outvars)
    return total


def _sub_jaxprs(value: Any) -> list[Any]:
    """The jaxprs an equation parameter holds (a closed jaxpr, a jaxpr, or a tuple of them)."""
    if isinstance(value, (tuple, list)):
        return [sub for v in value for sub in _sub_jaxprs(v)]
    inner = getattr(value, "jaxpr", None)  # a ClosedJaxpr
    if inner is not None and hasattr(inner, "eqns"):
        return [inner]
    return [value] if hasattr(value, "eqns") else []


def _size(outvars: Any) -> int:
    return sum(math.prod(getattr(v.aval, "shape", ())) for v in outvars)


_clearers.append(_forward_flops.cache_clear)


__all__ = ["MODELS", "PROGRAMS", "SMALL_EPOCH_FLOPS", "canonical", "clear_programs",
           "compiler_options", "jaxpr_flops", "program_cache", "small_program"]  # fmt: skip
