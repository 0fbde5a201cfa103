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

Across processes: :func:`compile_cache` turns on JAX's persistent compilation cache.
"""

from __future__ import annotations

import functools
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from jnn.layers._base import Layer, StatefulLayer, structure_key

# Programs kept per kind (epoch, split epoch, evaluate, predict, ...); each entry holds
# one jax.jit object, whose own cache holds its compilations (one per shapes/dtypes).
PROGRAMS = 64
# Canonical models remembered (one per distinct structure).
MODELS = 256

_lock = threading.Lock()
_models: OrderedDict[Any, Any] = OrderedDict()
_clearers: list[Callable[[], None]] = []

F = TypeVar("F", bound=Callable[..., Any])


def canonical(model: Any) -> Any:
    """The first model seen with ``model``'s structure key (``model`` itself if new).

    Undescribed layers are keyed by identity, so they map to themselves.
    """
    key = (type(model), structure_key(model))
    with _lock:
        rep = _models.get(key)
        if rep is None:
            _models[key] = rep = model
            if len(_models) > MODELS:
                _models.popitem(last=False)
        else:
            _models.move_to_end(key)
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
    for clear in _clearers:
        clear()


# --------------------------------------------------------------------------- across processes

ENV_VAR = "JNN_COMPILE_CACHE"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/jnn/xla`` (``~/.cache/jnn/xla``); ``%LOCALAPPDATA%\\jnn\\xla`` on
    Windows; ``~/Library/Caches/jnn/xla`` on macOS."""
    if os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif os.uname().sysname == "Darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "jnn" / "xla"


def compile_cache(path: str | os.PathLike[str] | None = None) -> Path | None:
    """Turn on JAX's persistent compilation cache, so a new process reuses compilations.

    The first ``fit`` of a script compiles its programs (most of the time to result
    on small data); with the cache on, a later run of the same script (same
    programs, same jax/jaxlib, same device) loads them from disk instead. Nothing is
    changed on ``import jnn``: call this (the CLI and the examples do), or set the
    environment variable ``JNN_COMPILE_CACHE`` to a folder and call it without a path.

    The cache is JAX's own: each entry is keyed by a hash of the program (its
    StableHLO), the compile options, the jax and jaxlib versions and the device kind,
    so a changed program, an upgrade or another device simply misses. Every program
    is cached, however small (``jax_persistent_cache_min_compile_time_secs=0``,
    ``jax_persistent_cache_min_entry_size_bytes=0``). To clear it, delete the folder
    (e.g. ``rm -rf ~/.cache/jnn/xla``); it is recreated when needed.

    A folder that cannot be created or written gives a warning and leaves the cache
    off (compiling as usual); an unreadable or corrupted entry is a miss: JAX warns
    and compiles the program again.

    Args:
      path: the cache folder. None: ``$JNN_COMPILE_CACHE`` if set, else the user's
        cache folder (``~/.cache/jnn/xla`` on Linux, ``~/Library/Caches/jnn/xla`` on
        macOS, ``%LOCALAPPDATA%\\jnn\\xla`` on Windows).

    Returns:
      The folder in use, or None when it could not be used (after a warning).

    Example:
      >>> import tempfile, jnn
      >>> folder = jnn.compile_cache(tempfile.mkdtemp())
      >>> folder.is_dir()
      True
    """
    import jax

    if path is None:
        path = os.environ.get(ENV_VAR) or default_cache_dir()
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"compile_cache: path must be a folder (str or os.PathLike) or None, got "
            f"{type(path).__name__}."
        )
    folder = Path(path).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".jnn-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        warnings.warn(
            f"compile_cache: cannot use {str(folder)!r} as a compilation cache ({err}); "
            "compiling without a persistent cache. Pass a writable folder, or set "
            f"{ENV_VAR}.",
            stacklevel=2,
        )
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    _reset_jax_cache()
    return folder


def _reset_jax_cache() -> None:
    """JAX sets its cache up once, on the first compile: a folder given later (or changed)
    needs that setup redone. Best effort: older/newer JAX without the hook still works
    for a folder set before the first compile."""
    try:
        from jax._src import compilation_cache as cc

        cc.reset_cache()
    except Exception:  # pragma: no cover - a JAX without the private hook
        pass


__all__ = ["MODELS", "PROGRAMS", "canonical", "clear_programs", "compile_cache", "program_cache"]
