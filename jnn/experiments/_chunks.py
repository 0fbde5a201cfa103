"""Runs in chunks sized from memory, the run axis sharded across devices."""

from __future__ import annotations

import functools
import math
import os
import time
from typing import Any

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jnn import distributed as _distributed
from jnn._data import (
    check_positive_int,
)
from jnn.train._internal import program_cache

# --------------------------------------------------------------------------- chunks


def _available_bytes() -> int:
    """Memory a sweep may use: a quarter of what the first device has free."""
    stats = jax.local_devices()[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return (stats["bytes_limit"] - stats.get("bytes_in_use", 0)) // 4
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024 // 4
    except (OSError, KeyError, ValueError):
        return (os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) // 8


def _nbytes(tree: Any) -> int:
    return sum(math.prod(a.shape) * np.dtype(a.dtype).itemsize for a in jax.tree.leaves(tree))


def _jaxpr_bytes(jaxpr: Any) -> int:
    """Bytes of every value a jaxpr makes (nested ones too): an upper bound on its live set."""
    total = 0
    for eqn in jaxpr.eqns:
        total += sum(_nbytes(v.aval) for v in eqn.outvars if hasattr(v.aval, "shape"))
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            total += _jaxpr_bytes(sub)
    return total


@program_cache
def _run_bytes(smodel, tx, loss_fn, x_spec, y_spec, num_examples, batch_size, history) -> int:
    """Memory one run needs: its states, a shuffled copy of the data, one step's values.

    ``x_spec``/``y_spec`` are ``(shape, dtype)`` of one example; ``history`` the
    number of floats each run records. Cached: tracing costs more than a small sweep.
    """
    xb = jax.ShapeDtypeStruct((batch_size, *x_spec[0]), x_spec[1])
    yb = jax.ShapeDtypeStruct((batch_size, *y_spec[0]), y_spec[1])
    _, params, model_state = jax.eval_shape(
        lambda k: smodel.init(k, (-1, *x_spec[0])), jax.random.key(0)
    )

    def grads(params, xb, yb):
        def objective(p):
            return loss_fn(smodel.apply(p, model_state, xb, train=True)[0], yb)

        return jax.grad(objective)(params)

    step = jax.make_jaxpr(grads)(params, xb, yb).jaxpr
    state = _nbytes(params) + _nbytes(jax.eval_shape(tx.init, params)) + _nbytes(model_state)
    example = _nbytes(xb) // batch_size + _nbytes(yb) // batch_size + 4
    data = example * (num_examples + batch_size)
    return 4 * state + 2 * data + _jaxpr_bytes(step) + 4 * history + 4096


def _chunk_size(chunk_size: int | None, num_runs: int, num_devices: int, run_bytes) -> int:
    """Runs per compiled call: as many as a quarter of free memory holds, a multiple of devices."""
    if chunk_size is None:
        chunk_size = max(1, min(num_runs, _available_bytes() // max(run_bytes(), 1)))
    else:
        chunk_size = check_positive_int("sweep", "chunk_size", chunk_size)
    return -(-chunk_size // num_devices) * num_devices


def _sharding() -> NamedSharding | None:
    """The run axis split across the devices (of every process), or None on one device."""
    devices = jax.devices()
    if len(devices) == 1:
        return None
    return NamedSharding(Mesh(np.array(devices), ("runs",)), PartitionSpec("runs"))


def _map_chunks(train, per_run, shared, num_runs, chunk_size, verbose, label="sweep"):
    """``train(*per_run[chunk], shared)`` chunk by chunk: host ``(state, logs)`` of every run.

    ``per_run`` is a tuple of pytrees with a leading run axis; the last chunk
    repeats its final run to keep one shape (one compilation).
    """
    sharding = _sharding()
    if sharding is not None and jax.process_count() > 1:  # the data: one global, replicated copy
        everywhere = NamedSharding(sharding.mesh, PartitionSpec())
        shared = jax.tree.map(functools.partial(_distributed._put, sharding=everywhere), shared)
    num_chunks = -(-num_runs // chunk_size)
    outputs = []
    for c in range(num_chunks):
        start = time.perf_counter()
        idx = np.minimum(np.arange(c * chunk_size, (c + 1) * chunk_size), num_runs - 1)
        args = jax.tree.map(lambda a, idx=idx: a[idx], per_run)
        if sharding is not None:
            args = jax.tree.map(functools.partial(_distributed._put, sharding=sharding), args)
        state, logs = train(*args, shared)
        state = state._replace(key=jax.random.key_data(state.key))
        valid = min(chunk_size, num_runs - c * chunk_size)
        results = _distributed.gather((state, logs))  # every run, in every process
        outputs.append(jax.tree.map(lambda a, v=valid: a[:v], results))
        if verbose:
            print(
                f"{label}: chunk {c + 1}/{num_chunks}: runs {c * chunk_size}-"
                f"{c * chunk_size + valid - 1} in {time.perf_counter() - start:.2f}s",
                flush=True,
            )
    return jax.tree.map(lambda *parts: np.concatenate(parts), *outputs)


def _run_chunks(train, runs, per_run, shared, keys, chunk_size, verbose, run_bytes, cls, extra):
    num_runs = len(runs)
    chunk_size = _chunk_size(chunk_size, num_runs, len(jax.devices()), run_bytes)
    # Processes size chunks from their own memory: they must agree (one shape, same calls).
    chunk_size = min(map(int, _distributed._exchange("sweep", str(chunk_size))))
    args = (per_run["init_seed"], per_run["shuffle_seed"], per_run["fold"], per_run["hparams"])
    state, logs = _map_chunks(train, args, shared, num_runs, chunk_size, verbose)
    return _assemble(cls, state, {k: logs[k] for k in keys}, runs, extra)


def _assemble(cls, state, history, runs, extra, epochs_run=None, since=0):
    """The result: host states as jax arrays, and which runs diverged.

    With ``epochs_run`` (runs stopped early), a run's history past its last
    epoch is NaN padding, not divergence. Epochs before ``since`` are not
    checked (PBT: a run that diverged and was then replaced by a copy is fine).
    """
    num_runs = len(runs)
    loss = history["loss"][:, since:]
    if epochs_run is not None:
        loss = np.where(np.arange(loss.shape[1]) < epochs_run[:, None], loss, 0.0)
    finite = np.isfinite(loss).all(axis=1)
    for leaf in jax.tree.leaves(state.params):
        finite &= np.isfinite(leaf.reshape(num_runs, -1)).all(axis=1)
    as_jax = lambda tree: jax.tree.map(jnp.asarray, tree)  # noqa: E731
    return cls(
        params=as_jax(state.params),
        opt_state=as_jax(state.opt_state),
        model_state=as_jax(state.model_state),
        history=history,
        runs=runs,
        diverged=~finite,
        **extra,
    )
