"""``init`` compiled once per layer structure and input shape (private).

Run eagerly, a model's ``init`` dispatches every random draw, split and scaling as
its own small XLA program, each compiled on first use: for the seed's 10-10-10-1
network that is ~20 compilations, about 1 s in a fresh process on a 2-core CPU,
more than compiling its whole training epoch. :func:`describe` therefore wraps each
described ``init`` so that a call with a concrete key runs one ``jax.jit`` program
for the whole tree (children called inside it are traced, not compiled again),
cached by the layer's structure (kind, config, the code of its ``init``, its
children) and the input shape: a second model built by the same code initializes
without compiling. The values are those of the eager call up to float rounding: the
same ops on the same keys, but fused by XLA, so a normal or orthogonal draw may differ
in its last bits (within 1e-5 relative).

Called under a transformation (``jit``, ``vmap``, ``eval_shape``: the key is a
tracer), with something that is not a single key (the eager call raises the usual
error), or for an ``init`` that cannot be traced (it reads concrete values, or
returns Python numbers), the original function runs as it is.
"""

from __future__ import annotations

import collections
import functools
import threading
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from jnn._compile_cache import fast_options

INITS = 256  # cached (structure, input shape) entries, least recently used dropped
SMALL_INIT = 1 << 22  # parameters and state elements compiled fast (see _compile_cache)

_programs: collections.OrderedDict[Any, _InitProgram] = collections.OrderedDict()
_lock = threading.Lock()

# Raised by an init that needs concrete values: it runs eagerly instead.
_UNTRACEABLE = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerArrayConversionError,
    jax.errors.TracerBoolConversionError,
    jax.errors.TracerIntegerConversionError,
)


def compiling(init: Callable, key_of: Callable[[Callable, Any], Any]) -> Callable:
    """``init`` run as one cached compiled program when called eagerly.

    ``key_of(wrapper, input_shape)`` gives the cache key of the returned wrapper at that
    input shape (computed when it is called, once its description is attached); a
    ``TypeError`` (something unhashable) runs ``init`` as it is.
    """

    @functools.wraps(init)
    def compiled_init(*args: Any, **kwargs: Any) -> Any:
        if len(args) != 2 or kwargs or not _concrete_key(args[0]):
            return init(*args, **kwargs)
        key, input_shape = args
        try:
            cache_key = key_of(compiled_init, input_shape)
            hash(cache_key)
        except TypeError:  # e.g. an unhashable shape: let init explain it
            return init(key, input_shape)
        with _lock:
            seen = _programs.get(cache_key)
            if seen is not None:
                _programs.move_to_end(cache_key)
        fresh = seen is None  # a new one is cached once its trace succeeded
        program = _InitProgram(init, input_shape) if seen is None else seen
        try:
            out = program(key)
        except Exception:  # bad input: the eager init raises it, without JAX's traceback note
            return init(key, input_shape)
        if fresh:
            with _lock:
                _programs[cache_key] = program
                while len(_programs) > INITS:
                    _programs.popitem(last=False)
        return init(key, input_shape) if out is None else out  # None: not traceable

    return compiled_init


class _InitProgram:
    """One init at one input shape: the compiled params/state per key signature."""

    def __init__(self, init: Callable, input_shape: Any) -> None:
        self.init, self.input_shape = init, input_shape
        self.out_shape: Any = None
        self.template: Any = None  # the traced output: its dicts' key order
        self.eager = False
        self.compiled: dict[Any, Any] = {}

    def _arrays(self, key: Any) -> Any:
        out_shape, *arrays = self.init(key, self.input_shape)
        if not all(isinstance(a, jax.core.Tracer) for a in jax.tree.leaves(arrays)):
            raise _ConstantError  # a Python number or numpy array: keep the eager types
        self.out_shape, self.template = out_shape, arrays
        return arrays

    def __call__(self, key: Any) -> tuple | None:
        if self.eager:
            return None
        signature = (key.dtype, key.shape, getattr(key, "sharding", None))
        compiled = self.compiled.get(signature)
        if compiled is None:
            try:
                lowered = jax.jit(self._arrays).trace(key).lower()
            except (*_UNTRACEABLE, _ConstantError):
                self.eager = True
                return None
            compiled = lowered.compile(_options(lowered))
            self.compiled[signature] = compiled
        return (self.out_shape, *_in_order(self.template, compiled(key)))


def _in_order(template: Any, value: Any) -> Any:
    """``value`` with the dict key order of ``template`` (a compiled call returns dicts
    with sorted keys; params keep the order of the layers, as an eager init gives)."""
    if isinstance(template, dict):
        return {k: _in_order(t, value[k]) for k, t in template.items()}
    if isinstance(template, (list, tuple)) and not hasattr(template, "_fields"):
        return type(template)(_in_order(t, v) for t, v in zip(template, value, strict=True))
    return value


class _ConstantError(Exception):
    """An init output that is not computed from the key."""


def _options(lowered: Any) -> dict[str, Any] | None:
    """Fast compile options for a small init on a CPU (it runs once)."""
    size = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(lowered.out_info))
    return fast_options() if size <= SMALL_INIT else None


def _concrete_key(key: Any) -> bool:
    """A single key, typed or raw ``uint32[2]``, that is not being traced."""
    if isinstance(key, jax.core.Tracer) or not isinstance(key, jax.Array):
        return False
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key.shape == ()
    return key.dtype == np.uint32 and key.shape == (2,)


def clear() -> None:
    """Forget every compiled init."""
    with _lock:
        _programs.clear()


__all__ = ["INITS", "clear", "compiling"]
