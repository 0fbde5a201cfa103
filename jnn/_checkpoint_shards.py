"""Checkpoints of state sharded across processes (private; :mod:`jnn.checkpoint` uses it).

Chosen when the run has several processes (or a leaf is not fully addressable
here): no process holds the whole state, so each writes what it holds. A
checkpoint is a directory ``epoch_<NNNNNN>.shards`` on a filesystem every
process sees:

- ``process_<i>_of_<n>.ckpt``: process ``i``'s shards (one copy of each
  block, ``replica_id == 0``), each with its global index, in jnn's
  checkpoint framing (header, SHA-256, atomic write);
- ``COMMIT``: written LAST, by process 0, after every process has written
  and fsynced its file and sent its file's SHA-256 (a host-side exchange with
  a timeout). It records the epoch, history, process count, the tree's
  shapes and dtypes, and every file's digest.

A directory without a ``COMMIT``, or whose files do not match the digests in
it (a process killed mid-save, a rewrite in progress), is not a checkpoint:
:func:`jnn.checkpoint.restore_latest` skips it with a warning.

Restoring reads every process's file (so host memory must hold the state
once), checks the tree against the template, and builds each leaf with the
template leaf's sharding (``jax.make_array_from_callback``): any device or
process count and any layout (data-parallel, FSDP) can restore any checkpoint
whose shapes match, e.g. 4 devices -> 2.
"""

from __future__ import annotations

import hashlib
import math
import shutil
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from jnn import _container

SUFFIX = ".shards"
COMMIT = "COMMIT"


def needed(state: Any) -> bool:
    """Whether ``state`` must be saved shard by shard (several processes)."""
    if jax.process_count() > 1:
        return True
    return any(
        isinstance(leaf, jax.Array) and not leaf.is_fully_addressable
        for leaf in jax.tree.leaves(state)
    )


def _file(pid: int, n: int) -> str:
    return f"process_{pid}_of_{n}.ckpt"


def _leaves(tree: Any) -> list[tuple[str, Any]]:
    return [
        (jax.tree_util.keystr(p) or "<root>", v)
        for p, v in jax.tree_util.tree_leaves_with_path(tree)
    ]


def _blocks(leaf: Any, pid: int) -> dict[str, Any]:
    """This process's unique blocks of ``leaf``: ``{"<j>": {"index": [[lo, hi], ...], "data"}}``."""
    if not isinstance(leaf, jax.Array):
        host = np.asarray(leaf)
        whole = [[0, d] for d in host.shape]
        return {"0": {"index": whole, "data": host}} if pid == 0 else {}
    out: dict[str, Any] = {}
    for shard in leaf.addressable_shards:
        if shard.replica_id != 0:
            continue
        index = [list(s.indices(d)[:2]) for s, d in zip(shard.index, leaf.shape, strict=True)]
        out[str(len(out))] = {"index": index, "data": np.asarray(shard.data)}
    return out


def save(path: Path, state: Any, meta: dict[str, Any], frame: Any, prune: Any) -> Path:
    """Write this process's file into ``path``; process 0 commits once every file is down.

    ``state`` has its typed keys unwrapped; ``meta`` (epoch, history, typed
    keys) goes into the commit. ``prune()`` runs on process 0 after the commit.
    """
    from jnn.distributed import _exchange

    pid, n = jax.process_index(), jax.process_count()
    path.mkdir(exist_ok=True)
    leaves = _leaves(state)
    shards = {name: _blocks(leaf, pid) for name, leaf in leaves}
    payload = serialization.msgpack_serialize(
        {"format": "jnn.checkpoint.shards", "process": pid, "processes": n, "shards": shards}
    )
    data = _container.pack(frame, payload)
    _container.write(path / _file(pid, n), data, tmp_prefix=".tmp-")
    digests = _exchange("checkpoint.save", hashlib.sha256(data).hexdigest())
    if pid == 0:
        commit = {
            **meta,
            "format": "jnn.checkpoint.commit",
            "processes": n,
            "files": {_file(i, n): d for i, d in enumerate(digests)},
            "leaves": {
                name: {"shape": list(np.shape(leaf)), "dtype": str(_dtype(leaf))}
                for name, leaf in leaves
            },
        }
        body = _container.pack(frame, serialization.msgpack_serialize(commit))
        _container.write(path / COMMIT, body, tmp_prefix=".tmp-")
        prune()
    return path


def _dtype(leaf: Any) -> np.dtype:
    return leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype


def verify(path: Path, frame: Any) -> dict[str, Any]:
    """The commit record of a complete checkpoint directory, or ``frame.error``."""
    commit_path = path / COMMIT
    if not commit_path.is_file():
        raise frame.error(
            f"{path}: incomplete: no {COMMIT} record (a process stopped while saving); "
            "the checkpoint before it is used instead."
        )
    _, payload = _container.read(frame, commit_path, str(commit_path))
    commit = _container.decode(frame, payload, str(commit_path))
    if commit.get("format") != "jnn.checkpoint.commit" or not isinstance(commit.get("files"), dict):
        raise frame.error(f"{commit_path}: malformed commit record.")
    return commit


def read(path: Path, frame: Any) -> tuple[dict[str, Any], dict[str, list]]:
    """``(commit, {leaf name: [(index, data), ...]})`` from every process's file."""
    commit = verify(path, frame)
    n = int(commit["processes"])
    blocks: dict[str, list] = {}
    for name, digest in sorted(commit["files"].items()):
        file = path / name
        if not file.is_file():
            raise frame.error(
                f"{path}: written by {n} processes, but {name} is not here. Checkpoints of "
                "several processes need a directory that every process sees (a shared "
                "filesystem); copy every process_*_of_*.ckpt file into it."
            )
        raw = file.read_bytes()
        if hashlib.sha256(raw).hexdigest() != digest:
            raise frame.error(
                f"{file}: does not match the digest in its {COMMIT} record: it was rewritten "
                "or damaged after the commit."
            )
        _, payload = _container.unpack(frame, raw, str(file))
        content = _container.decode(frame, payload, str(file))
        for leaf, parts in content.get("shards", {}).items():
            for part in parts.values():
                blocks.setdefault(leaf, []).append((part["index"], np.asarray(part["data"])))
    return commit, blocks


def _assemble(where: str, shape, dtype, blocks: list, idx: tuple, error: Any) -> np.ndarray:
    """The block ``idx`` (a tuple of slices) of a leaf, copied from the stored shards."""
    bounds = [s.indices(d)[:2] for s, d in zip(idx, shape, strict=False)]
    bounds += [(0, d) for d in shape[len(bounds) :]]
    out = np.empty([hi - lo for lo, hi in bounds], dtype)
    covered = 0
    for index, data in blocks:
        lo = [max(a, int(i[0])) for (a, _), i in zip(bounds, index, strict=True)]
        hi = [min(b, int(i[1])) for (_, b), i in zip(bounds, index, strict=True)]
        if any(low >= high for low, high in zip(lo, hi, strict=True)):
            continue
        dst = tuple(
            slice(lo_ - a, hi_ - a) for lo_, hi_, (a, _) in zip(lo, hi, bounds, strict=True)
        )
        src = tuple(
            slice(lo_ - int(i[0]), hi_ - int(i[0]))
            for lo_, hi_, i in zip(lo, hi, index, strict=True)
        )
        out[dst] = data[src]
        covered += math.prod(h - low for low, h in zip(lo, hi, strict=True))
    if covered != out.size:
        raise error(f"{where}: the stored shards do not cover the block {bounds}.")
    return out


def place(template_leaf: Any, shape, dtype, get) -> Any:
    """A leaf laid out like ``template_leaf``; ``get(idx)`` returns the block at ``idx``.

    A template leaf on one device (or not an array) gives an ordinary uncommitted
    array; one on several devices or processes gets the same sharding.
    """
    sharding = template_leaf.sharding if isinstance(template_leaf, jax.Array) else None
    if sharding is None or (jax.process_count() == 1 and len(sharding.device_set) == 1):
        return jnp.asarray(get(tuple(slice(0, d) for d in shape)))
    if jax.process_count() == 1:
        return jax.device_put(get(tuple(slice(0, d) for d in shape)), sharding)
    return jax.make_array_from_callback(tuple(shape), sharding, get)


def build(path: Path, template: Any, blocks: dict[str, list], error: Any) -> Any:
    """``template``'s tree (typed keys unwrapped) filled from ``blocks``, laid out like it."""
    names = [name for name, _ in _leaves(template)]
    values = []
    for name, leaf in zip(names, jax.tree.leaves(template), strict=True):
        shape, dtype = tuple(np.shape(leaf)), _dtype(leaf)
        parts = blocks[name]
        where = f"{path}: {name}"
        values.append(
            place(
                leaf,
                shape,
                dtype,
                lambda idx, p=parts, s=shape, d=dtype, w=where: _assemble(w, s, d, p, idx, error),
            )
        )
    return jax.tree.unflatten(jax.tree.structure(template), values)


def compare(template: Any, commit: dict[str, Any]) -> list[str]:
    """Differences between ``template`` (keys unwrapped) and the commit's leaf table."""
    stored = commit.get("leaves", {})
    want = {name: (list(np.shape(leaf)), str(_dtype(leaf))) for name, leaf in _leaves(template)}
    errors = [f"{name}: missing from the checkpoint" for name in want if name not in stored]
    errors += [
        f"{name}: in the checkpoint, not in the template" for name in stored if name not in want
    ]
    for name, (shape, dtype) in want.items():
        got = stored.get(name)
        if got is not None and (list(got["shape"]), got["dtype"]) != (shape, dtype):
            errors.append(
                f"{name}: expected {tuple(shape)} {dtype}, got {tuple(got['shape'])} {got['dtype']}"
            )
    return errors


def remove(path: Path) -> None:
    """Delete a checkpoint directory, its commit record first (it never looks complete)."""
    (path / COMMIT).unlink(missing_ok=True)
    shutil.rmtree(path, ignore_errors=True)
