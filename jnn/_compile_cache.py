"""JAX's persistent compilation cache, made easy and safe: :func:`compile_cache` (private).

Kept apart from the engine (and importing jax only when called) so the jax-free parts
of jnn, such as the command line serving an ONNX model, can use it cheaply.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

ENV_VAR = "JNN_COMPILE_CACHE"
OFF = ("off", "0", "false", "no", "none")  # JNN_COMPILE_CACHE values that turn it off


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/jnn/xla`` (``~/.cache/jnn/xla``); ``%LOCALAPPDATA%\\jnn\\xla`` on
    Windows; ``~/Library/Caches/jnn/xla`` on macOS."""
    if os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "jnn" / "xla"


def compile_cache(path: str | os.PathLike[str] | None = None) -> Path | None:
    """Turn on JAX's persistent compilation cache, so a new process reuses compilations.

    The first ``fit`` of a script compiles its programs (most of the time to result
    on small data); with the cache on, a later run of the same script (same
    programs, same jax/jaxlib, same device) loads them from disk instead. Nothing is
    changed on ``import jnn``: call this (the CLI and the examples do). The
    environment variable ``JNN_COMPILE_CACHE`` names the folder used when no path is
    given, or turns such calls off with ``JNN_COMPILE_CACHE=off``.

    The cache is JAX's own: each entry is keyed by a SHA-256 of the program (its
    StableHLO, as this jax version lowers it), the jaxlib version, the backend
    (platform and version), the XLA flags, the compile options and the devices, so a
    changed program, an upgrade or another device simply misses. Every program
    is cached, however small (``jax_persistent_cache_min_compile_time_secs=0``,
    ``jax_persistent_cache_min_entry_size_bytes=0``). To clear it, delete the folder
    (e.g. ``rm -rf ~/.cache/jnn/xla``); it is recreated when needed.

    A folder that cannot be created or written gives a warning and leaves the cache
    off (compiling as usual); an unreadable or corrupted entry is a miss: JAX warns
    and compiles the program again.

    Args:
      path: the cache folder. None: ``$JNN_COMPILE_CACHE`` if set (``off``: do
        nothing), else the user's cache folder (``~/.cache/jnn/xla`` on Linux,
        ``~/Library/Caches/jnn/xla`` on macOS, ``%LOCALAPPDATA%\\jnn\\xla`` on Windows).

    Returns:
      The folder in use, or None when it is turned off or could not be used (after a
      warning).

    Raises:
      TypeError: if ``path`` is not a str, an ``os.PathLike`` or None.

    Example:
      At the top of a script, ``jnn.compile_cache()``; that changes JAX's settings
      for the process, so here only the safe path runs: a folder that cannot be
      created (under a file) warns and leaves them unchanged.

      >>> import os, tempfile, warnings, jax, jnn
      >>> before = jax.config.jax_compilation_cache_dir
      >>> a_file = tempfile.NamedTemporaryFile(delete=False).name
      >>> with warnings.catch_warnings(record=True) as caught:
      ...     warnings.simplefilter("always")
      ...     print(jnn.compile_cache(os.path.join(a_file, "xla")), len(caught))
      None 1
      >>> jax.config.jax_compilation_cache_dir == before
      True
    """
    import jax

    if path is None:
        env = os.environ.get(ENV_VAR, "").strip()
        if env.lower() in OFF:
            return None
        path = env or default_cache_dir()
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


# XLA:CPU spends most of a small program's compile time generating code the program
# never earns back: the seed workload's epoch (10-10-10-1 net, 426 rows; benchmarks/
# bench_compile_breakdown.py) compiles in ~0.87 s by default, ~0.57 s at
# ``xla_backend_optimization_level=0`` and ~0.18 s with XLA's classic elemental emitters
# instead of its MLIR fusion emitters as well. The code it makes runs slower (that epoch
# 0.8 -> 1.3 ms, a 100,000-row one 35 -> 100 ms), so only small programs use it: epochs
# of at most jnn.train._cache.SMALL_EPOCH_FLOPS and inits (which run once). One LLVM
# module, not XLA's split into several for parallel codegen: for programs this small the
# split costs more than it saves (the seed epoch compiled in ~0.18 -> ~0.14 s on 2 cores,
# one object file instead of 41; small CNN, LSTM and MLP epochs 10-15% faster too).
FAST_COMPILE = {
    "xla_backend_optimization_level": 0,
    "xla_cpu_use_fusion_emitters": False,
    "xla_cpu_parallel_codegen_split_count": 1,
}


def fast_options() -> dict | None:
    """``compiler_options`` that compile a small program fast on a CPU; None elsewhere."""
    import jax

    return dict(FAST_COMPILE) if jax.default_backend() == "cpu" else None


__all__ = ["ENV_VAR", "FAST_COMPILE", "compile_cache", "default_cache_dir", "fast_options"]
