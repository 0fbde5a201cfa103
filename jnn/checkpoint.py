"""Checkpoints: save and restore the full training state, atomically, without pickle.

A checkpoint file holds one pytree (usually a :class:`jnn.TrainState`: params,
optimizer state, model state, step and PRNG key) plus the epoch number and the
training history. The format is a fixed header followed by a
``flax.serialization`` msgpack payload, which holds only numbers, strings,
lists and dicts: loading a checkpoint never executes code.

Header: the magic bytes ``b"JNNCKPT\\n"``, the format version (uint32), the
payload length (uint64) and the payload's SHA-256. A truncated or corrupted
file is refused with :class:`CheckpointError`, never turned into garbage params.

Writes are atomic: the bytes go to a temporary file in the same directory,
are flushed and fsynced, then renamed over the final name (and the directory
fsynced), so a crash mid-write leaves the previous checkpoints intact. The
framing (header, checksum, atomic write) is the one exported models use too.

Pruning (``keep=N``) counts only checkpoints that verify: a damaged file is
never counted, never deleted (a warning names it), and the newest good
checkpoint is never deleted.

Restoring takes a *template* (e.g. a fresh ``TrainState``): a structure, shape
or dtype mismatch raises an error naming the tree path, e.g.
``params['dense_1']['w']: expected (10, 10) float32, got (10, 5) float32``.
Typed PRNG keys are stored as their raw data (``jax.random.key_data``) and
rebuilt with ``jax.random.wrap_key_data``. Restored leaves are laid out like the
template's: a template on a mesh (replicated or FSDP, any device count) gets
the checkpoint's values in its own sharding.

Several processes (after :func:`jnn.distributed.initialize`): no process holds
the whole state, so :func:`save` writes a directory ``epoch_<NNNNNN>.shards``
(on a filesystem every process sees) with one file of shards per process and a
``COMMIT`` record written last by process 0, once every process's file is
down; a directory without it (a process killed mid-save) is not a checkpoint.
Every process calls :func:`save` with the same arguments.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from jnn import _checkpoint_shards as _shards
from jnn import _container
from jnn._data import as_array, check_int, check_positive_int

__all__ = [
    "FORMAT_VERSION",
    "Checkpoint",
    "CheckpointError",
    "CheckpointMismatchError",
    "all_checkpoints",
    "check_directory",
    "latest",
    "restore",
    "restore_latest",
    "save",
]

FORMAT_VERSION = 1
_NAME = re.compile(r"^epoch_(\d{6,})\.ckpt$")
_SHARDED_NAME = re.compile(r"^epoch_(\d{6,})\.shards$")  # several processes: a directory
_TMP_PREFIX = ".tmp-epoch_"


class CheckpointError(ValueError):
    """Raised for a checkpoint that cannot be used: truncated, corrupted, foreign or mismatched.

    A file that is fine but does not match the template raises the subclass
    :class:`CheckpointMismatchError`; every other ``CheckpointError`` means the
    file itself is unusable.
    """


class CheckpointMismatchError(CheckpointError):
    """Raised when a sound checkpoint does not match the template (the paths that differ are named).

    :func:`restore_latest` raises it instead of falling back to an older file:
    every file of a run would mismatch the same way.
    """


_FRAME = _container.Frame(
    magic=b"JNNCKPT\n",
    version=FORMAT_VERSION,
    readable=(FORMAT_VERSION,),
    error=CheckpointError,
    what="jnn checkpoint",
)


class Checkpoint(NamedTuple):
    """A restored checkpoint.

    Attributes:
      state: the restored pytree (same structure as the template).
      epoch: number of completed epochs when it was saved.
      history: metric name -> list of floats, as :func:`jnn.fit` records it.
      path: the file it came from.

    Example:
      >>> import jax.numpy as jnp, tempfile, jnn
      >>> d = tempfile.mkdtemp()
      >>> _ = jnn.checkpoint.save(d, {"w": jnp.zeros(2)}, epoch=3, history={"loss": [0.5]})
      >>> state, epoch, history, path = jnn.checkpoint.restore_latest(d, {"w": jnp.ones(2)})
      >>> state["w"], epoch, history, path.name
      (Array([0., 0.], dtype=float32), 3, {'loss': [0.5]}, 'epoch_000003.ckpt')
    """

    state: Any
    epoch: int
    history: dict[str, list[float]]
    path: Path


# --------------------------------------------------------------------------- paths


def _path_str(parts: tuple[str, ...]) -> str:
    if not parts:
        return "<root>"
    return parts[0] + "".join(f"[{p!r}]" for p in parts[1:])


def _is_typed_key(leaf: Any) -> bool:
    return isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _unwrap_keys(tree: Any) -> Any:
    return jax.tree.map(lambda a: jax.random.key_data(a) if _is_typed_key(a) else a, tree)


def _typed_key_impls(tree: Any) -> dict[str, str]:
    found = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if _is_typed_key(leaf):
            found[jax.tree_util.keystr(path)] = str(jax.random.key_impl(leaf))
    return found


# --------------------------------------------------------------------------- save


def _history_value(v: Any) -> Any:
    """A float, or an array for an array-valued metric (a confusion matrix)."""
    return float(v) if np.ndim(v) == 0 else np.asarray(v, np.float32)


def _encode(state: Any, epoch: int, history: dict[str, list[float]]) -> bytes:
    state_dict = serialization.to_state_dict(_unwrap_keys(state))
    state_dict = jax.tree.map(np.asarray, state_dict)  # device -> host, one copy
    payload = serialization.msgpack_serialize(
        {
            "format": "jnn.checkpoint",
            "epoch": int(epoch),
            "history": {str(k): [_history_value(v) for v in vs] for k, vs in history.items()},
            "typed_keys": _typed_key_impls(state),
            "state": state_dict,
        }
    )
    return _container.pack(_FRAME, payload)


def check_directory(directory: str | os.PathLike, *, where: str = "checkpoint") -> Path:
    """Make sure ``directory`` can hold checkpoints, before anything is trained.

    Creates it (and its parents) if missing, then refuses a path that is a
    file, a checkpoint name (``epoch_<NNNNNN>.ckpt``) taken by something that
    is not a file, and a directory that cannot be written to. :func:`jnn.fit`
    calls it before its first epoch, so a bad ``checkpoint_dir`` fails at
    once, not after an epoch of training.

    Args:
      directory: where checkpoints will be written.
      where: the caller's name, for messages.

    Returns:
      ``directory`` as a ``pathlib.Path``.

    Raises:
      TypeError: if ``directory`` is not a path.
      CheckpointError: if it cannot hold checkpoints (the message says why).

    Example:
      >>> import os, tempfile, jnn
      >>> d = tempfile.mkdtemp()
      >>> jnn.checkpoint.check_directory(os.path.join(d, "run", "ckpt")).is_dir()
      True
      >>> open(os.path.join(d, "notes.txt"), "w").close()
      >>> jnn.checkpoint.check_directory(os.path.join(d, "notes.txt"))
      Traceback (most recent call last):
      ...
      jnn.checkpoint.CheckpointError: checkpoint: checkpoint_dir ...notes.txt is a file, ...
    """
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"{where}: checkpoint_dir must be a path, got {type(directory).__name__}.")
    path = Path(directory)
    if path.exists() and not path.is_dir():
        raise CheckpointError(
            f"{where}: checkpoint_dir {path} is a file, not a directory; pass a directory "
            "(it is created if missing)."
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CheckpointError(
            f"{where}: cannot create checkpoint_dir {path}: {err.strerror or err}."
        ) from None
    blocked = [p.name for p in path.iterdir() if _NAME.match(p.name) and not p.is_file()]
    if blocked:
        raise CheckpointError(
            f"{where}: {path} holds {', '.join(sorted(blocked))}, which is not a file but has a "
            "checkpoint's name; move it away or choose another checkpoint_dir."
        )
    if not os.access(path, os.W_OK | os.X_OK):
        raise CheckpointError(f"{where}: checkpoint_dir {path} is not writable.")
    return path


def save(
    directory: str | os.PathLike,
    state: Any,
    *,
    epoch: int,
    history: dict[str, list[float]] | None = None,
    keep: int | None = 3,
) -> Path:
    """Write ``state`` atomically to ``directory/epoch_<epoch>.ckpt``.

    Args:
      directory: created if missing.
      state: a pytree of arrays, usually a :class:`jnn.TrainState`. Typed PRNG
        keys are allowed.
      epoch: number of completed epochs (names the file; the newest is the largest).
      history: metric name -> list of floats, saved alongside.
      keep: keep only the newest ``keep`` checkpoints that verify (None keeps
        all). Damaged files are not counted and not deleted (a warning names
        them); the newest good checkpoint is always kept. Leftover temporary
        files of interrupted writes are removed too.

    Returns:
      The path written.

    Raises:
      ValueError: for a negative epoch or a ``keep`` below 1.
      TypeError: for leaves that are not numbers or arrays.
      CheckpointError: if ``directory`` cannot hold checkpoints (see
        :func:`check_directory`).

    Example:
      >>> import jax, jax.numpy as jnp, tempfile, jnn
      >>> d = tempfile.mkdtemp()
      >>> tree = {"w": jnp.ones((2, 3)), "key": jax.random.key(0)}
      >>> jnn.checkpoint.save(d, tree, epoch=1).name
      'epoch_000001.ckpt'
      >>> ckpt = jnn.checkpoint.restore(jnn.checkpoint.latest(d), tree)
      >>> ckpt.epoch, ckpt.state["w"].shape
      (1, (2, 3))
    """
    epoch = check_int("checkpoint.save", "epoch", epoch, minimum=0)
    if keep is not None:
        keep = check_positive_int("checkpoint.save", "keep", keep, hint=" or None")
    for where, leaf in jax.tree_util.tree_leaves_with_path(state):
        name = jax.tree_util.keystr(where) or "<root>"
        if not isinstance(leaf, (jax.Array, np.ndarray, np.generic, int, float, bool)):
            raise TypeError(
                f"checkpoint.save: {name} is a {type(leaf).__name__}; a checkpoint holds only "
                "arrays and numbers."
            )
        if not _is_typed_key(leaf) and not isinstance(leaf, jax.Array):
            as_array("checkpoint.save", name, leaf, complex_ok=True)  # strings, objects: refused
    directory = check_directory(directory, where="checkpoint.save")
    if _shards.needed(state):  # several processes: each writes its shards, then a commit
        meta = {
            "epoch": int(epoch),
            "history": {str(k): [float(v) for v in vs] for k, vs in (history or {}).items()},
            "typed_keys": _typed_key_impls(state),
        }
        prune = (lambda: _prune(directory, keep)) if keep is not None else (lambda: None)
        path = directory / f"epoch_{epoch:06d}{_shards.SUFFIX}"
        return _shards.save(path, _unwrap_keys(state), meta, _FRAME, prune)
    data = _encode(state, epoch, history or {})
    path = directory / f"epoch_{epoch:06d}.ckpt"
    _container.write(path, data, tmp_prefix=_TMP_PREFIX)
    for stale in directory.glob(_TMP_PREFIX + "*"):
        stale.unlink(missing_ok=True)
    if keep is not None:
        _prune(directory, keep)
    return path


def _prune(directory: Path, keep: int) -> None:
    """Delete good checkpoints beyond the newest ``keep`` good ones; leave damaged ones alone."""
    good = 0
    for path in reversed(all_checkpoints(directory)):
        try:
            _verified(path)
        except (CheckpointError, OSError) as err:
            warnings.warn(
                f"checkpoint.save: leaving an unusable file alone (not counted in keep=): {err} "
                "Remove it once you no longer need it.",
                stacklevel=3,
            )
            continue
        good += 1
        if good > keep:
            if path.is_dir():
                _shards.remove(path)
            else:
                path.unlink(missing_ok=True)


# (path, inode, size, mtime) of files known to verify: saves do not re-hash the checkpoints
# they keep (a file rewritten in place changes its mtime or inode, so it is read again).
_GOOD: set[tuple[str, int, int, int]] = set()


def _verified(path: Path) -> None:
    """Raise if ``path`` is not a checkpoint that passes its header and checksum checks."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if key in _GOOD:
        return
    if path.is_dir() and path.name.endswith(_shards.SUFFIX):
        _shards.verify(path, _FRAME)
    else:
        _container.read(_FRAME, path, str(path))
    if len(_GOOD) > 1024:
        _GOOD.clear()
    _GOOD.add(key)


# --------------------------------------------------------------------------- restore


def all_checkpoints(directory: str | os.PathLike) -> list[Path]:
    """The checkpoint files in ``directory``, oldest first (empty if none or no directory).

    Only files named ``epoch_<NNNNNN>.ckpt`` count; they are ordered by epoch.
    The files are listed, not read or checked.

    Args:
      directory: the directory :func:`save` wrote to.

    Returns:
      The paths, oldest (smallest epoch) first.

    Example:
      >>> import tempfile, jnn
      >>> jnn.checkpoint.all_checkpoints(tempfile.mkdtemp())
      []
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [
        (int(m.group(1)), p.is_dir(), p)
        for p in directory.iterdir()
        if (m := _NAME.match(p.name) or _SHARDED_NAME.match(p.name))
    ]
    return [p for *_, p in sorted(found)]


def latest(directory: str | os.PathLike) -> Path | None:
    """The newest checkpoint file in ``directory``, or None (unchecked: see :func:`restore_latest`).

    Args:
      directory: the directory :func:`save` wrote to.

    Returns:
      The path of the checkpoint with the largest epoch, or None if there is
      none (or no such directory). The file is not read, so it may be corrupt.

    Example:
      >>> import tempfile, jnn
      >>> jnn.checkpoint.latest(tempfile.mkdtemp()) is None
      True
    """
    files = all_checkpoints(directory)
    return files[-1] if files else None


def _read(path: Path) -> dict[str, Any]:
    _, payload = _container.read(_FRAME, path, str(path))
    content = _container.decode(_FRAME, payload, str(path))
    if content.get("format") != "jnn.checkpoint":
        raise CheckpointError(f"{path}: not a jnn checkpoint payload.")
    shape_ok = (
        isinstance(content.get("state"), dict)
        and isinstance(content.get("epoch"), int)
        and isinstance(content.get("history"), dict)
        and isinstance(content.get("typed_keys"), dict)
    )
    if not shape_ok:
        raise CheckpointError(f"{path}: malformed checkpoint payload.")
    return content


def _compare(template: Any, loaded: Any, parts: tuple[str, ...], errors: list[str]) -> None:
    where = _path_str(parts)
    if isinstance(template, dict):
        if not isinstance(loaded, dict):
            errors.append(f"{where}: expected a dict, got {type(loaded).__name__}")
            return
        missing = sorted(set(template) - set(loaded), key=str)
        extra = sorted(set(loaded) - set(template), key=str)
        if missing or extra:
            errors.append(
                f"{where}: structure differs: missing {[str(k) for k in missing]}, "
                f"unexpected {[str(k) for k in extra]}"
            )
        for k in template:
            if k in loaded:
                _compare(template[k], loaded[k], (*parts, str(k)), errors)
        return
    if isinstance(loaded, dict):
        errors.append(f"{where}: expected an array, got a subtree")
        return
    want, got = np.asarray(template), np.asarray(loaded)
    if want.shape != got.shape or want.dtype != got.dtype:
        errors.append(f"{where}: expected {want.shape} {want.dtype}, got {got.shape} {got.dtype}")


def restore(path: str | os.PathLike, template: Any) -> Checkpoint:
    """Read the checkpoint at ``path`` into the structure of ``template``.

    Args:
      path: a checkpoint file.
      template: a pytree with the structure, shapes and dtypes expected, e.g.
        the ``TrainState`` a fresh run would start from. Its values are unused.

    Returns:
      A :class:`Checkpoint` ``(state, epoch, history, path)``; ``state``'s
      leaves are ``jax.Array`` (typed keys where the template has typed keys).

    Raises:
      FileNotFoundError: if ``path`` does not exist.
      CheckpointError: (a ``ValueError``) for a foreign, truncated, corrupted
        or newer-format file.
      CheckpointMismatchError: (a ``CheckpointError``) for a file whose tree
        does not match ``template``; every mismatching path is named.

    Example:
      >>> import jax.numpy as jnp, tempfile, jnn
      >>> d = tempfile.mkdtemp()
      >>> p = jnn.checkpoint.save(d, {"w": jnp.ones((10, 5))}, epoch=0)
      >>> jnn.checkpoint.restore(p, {"w": jnp.ones((10, 10))})
      Traceback (most recent call last):
      ...
      jnn.checkpoint.CheckpointMismatchError: ...: w: expected (10, 10) float32, got (10, 5) float32
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"checkpoint.restore: path must be a path, got {type(path).__name__}.")
    path = Path(path)
    if path.is_dir() and path.name.endswith(_shards.SUFFIX):
        return _restore_shards(path, template)
    content = _read(path)
    raw = _unwrap_keys(template)
    wanted = serialization.to_state_dict(raw)  # field order kept: params come first
    errors: list[str] = []
    _compare(wanted, content["state"], (), errors)
    want_keys, got_keys = _typed_key_impls(template), content.get("typed_keys", {})
    for k, impl in want_keys.items():
        if got_keys.get(k, impl) != impl:
            errors.append(f"{k}: expected a {impl} PRNG key, got a {got_keys[k]} key")
    if errors:
        more = f"; ... ({len(errors) - 5} more)" if len(errors) > 5 else ""
        shown = "; ".join(errors[:5]) + more
        raise CheckpointMismatchError(f"{path}: does not match the template: {shown}")
    state = serialization.from_state_dict(raw, content["state"])
    state = jax.tree.map(_placed, raw, state)  # with the template's layout (mesh, devices)
    state = _rewrap_keys(template, state)
    history = {k: list(v) for k, v in content.get("history", {}).items()}
    return Checkpoint(state, int(content["epoch"]), history, path)


def _placed(template_leaf: Any, value: Any) -> Any:
    host = np.asarray(value)
    return _shards.place(template_leaf, host.shape, host.dtype, lambda idx: host[idx])


def _rewrap_keys(template: Any, state: Any) -> Any:
    return jax.tree.map(
        lambda t, v: (
            jax.random.wrap_key_data(v, impl=jax.random.key_impl(t)) if _is_typed_key(t) else v
        ),
        template,
        state,
    )


def _restore_shards(path: Path, template: Any) -> Checkpoint:
    """:func:`restore` for a checkpoint written by several processes (a directory)."""
    commit = _shards.verify(path, _FRAME)
    raw = _unwrap_keys(template)
    errors = _shards.compare(raw, commit)
    want_keys, got_keys = _typed_key_impls(template), commit.get("typed_keys", {})
    for k, impl in want_keys.items():
        if got_keys.get(k, impl) != impl:
            errors.append(f"{k}: expected a {impl} PRNG key, got a {got_keys[k]} key")
    if errors:
        more = f"; ... ({len(errors) - 5} more)" if len(errors) > 5 else ""
        raise CheckpointMismatchError(
            f"{path}: does not match the template (written by {commit.get('processes')} "
            f"process(es)): {'; '.join(errors[:5])}{more}"
        )
    _, blocks = _shards.read(path, _FRAME)
    state = _rewrap_keys(template, _shards.build(path, raw, blocks, CheckpointError))
    history = {k: list(v) for k, v in commit.get("history", {}).items()}
    return Checkpoint(state, int(commit["epoch"]), history, path)


def restore_latest(directory: str | os.PathLike, template: Any) -> Checkpoint | None:
    """Restore the newest *good* checkpoint in ``directory``, or None if there is none.

    A newest file that is truncated, corrupted or unreadable (e.g. by a crash
    while the disk was failing) is skipped with a warning and the next older
    one is tried. A template mismatch (:class:`CheckpointMismatchError`) is not
    skipped: it raises, since every file in the directory would mismatch the
    same way.

    Args:
      directory: the directory :func:`save` wrote to (need not exist).
      template: as in :func:`restore`.

    Returns:
      The :class:`Checkpoint` of the newest readable file, or None if the
      directory holds no usable checkpoint.

    Raises:
      CheckpointMismatchError: if a checkpoint does not match ``template``.

    Example:
      >>> import tempfile, jnn
      >>> jnn.checkpoint.restore_latest(tempfile.mkdtemp(), {}) is None
      True
    """
    for path in reversed(all_checkpoints(directory)):
        try:
            return restore(path, template)
        except CheckpointMismatchError:
            raise
        except (CheckpointError, OSError) as err:  # this file is unusable: try the next one
            warnings.warn(f"skipping unusable checkpoint: {err}", stacklevel=2)
    return None
