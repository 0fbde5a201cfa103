"""One framed-file container for every file jnn writes (documented internal module).

Checkpoints (:mod:`jnn.checkpoint`) and exported models (:mod:`jnn.export`) are
both one *frame*::

    magic (8 bytes) | format version (uint32 LE) | payload length (uint64 LE)
                    | sha256 of the payload (32 bytes) | payload

with a msgpack payload of plain data only (dicts, lists, strings, bytes,
numbers, numpy arrays: :func:`flax.serialization.msgpack_restore`, never
pickle). A :class:`Frame` names one kind of file: its magic, the version it
writes, the versions it reads, and the error class its problems raise (a
``ValueError`` subclass such as ``CheckpointError``), so every caller gets
typed errors with one wording. Writes are atomic: :func:`write` puts the
bytes in a temporary file of the same directory, fsyncs it, renames it over
the target and fsyncs the directory.

Versions listed in ``Frame.no_length`` use the older header without the
length field (exported models of format 1); they still load.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import struct
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

HEADER = struct.Struct("<8sIQ32s")  # magic, version, payload length, sha256 of the payload
_SHORT_HEADER = struct.Struct("<8sI32s")  # the same without the length (exported models v1)


class Frame(NamedTuple):
    """One kind of framed file.

    Attributes:
      magic: 8 bytes that open every such file.
      version: the format version written.
      readable: every version read (``version`` included).
      error: the ``ValueError`` subclass raised for an unusable file.
      what: how messages name the kind, e.g. ``"jnn checkpoint"``.
      no_length: readable versions whose header has no length field.
    """

    magic: bytes
    version: int
    readable: tuple[int, ...]
    error: type[ValueError]
    what: str
    no_length: tuple[int, ...] = ()


def pack(frame: Frame, payload: bytes) -> bytes:
    """The file bytes for ``payload``: the header, then the payload."""
    digest = hashlib.sha256(payload).digest()
    return HEADER.pack(frame.magic, frame.version, len(payload), digest) + payload


def unpack(frame: Frame, data: bytes, where: str) -> tuple[int, bytes]:
    """``(version, payload)`` of a file's bytes, checked, or ``frame.error`` naming ``where``."""
    magic = frame.magic
    if len(data) < _SHORT_HEADER.size or data[: len(magic)] != magic:
        problem = "too short" if len(data) < _SHORT_HEADER.size else "wrong magic bytes"
        raise frame.error(f"{where}: not a {frame.what} file (bad header: {problem}).")
    (version,) = struct.unpack_from("<I", data, len(magic))
    if version not in frame.readable:
        raise frame.error(
            f"{where}: {frame.what} format version {version}; this jnn reads version(s) "
            f"{', '.join(map(str, frame.readable))}. Upgrade jnn, or re-create the file."
        )
    if version in frame.no_length:
        _, _, digest = _SHORT_HEADER.unpack_from(data)
        payload = data[_SHORT_HEADER.size :]
    else:
        if len(data) < HEADER.size:
            raise frame.error(f"{where}: not a {frame.what} file (bad header: too short).")
        _, _, length, digest = HEADER.unpack_from(data)
        payload = data[HEADER.size :]
        if len(payload) != length:
            raise frame.error(
                f"{where}: truncated or padded: the header announces {length} payload bytes, "
                f"the file holds {len(payload)}."
            )
    if hashlib.sha256(payload).digest() != digest:
        raise frame.error(
            f"{where}: checksum mismatch: the file is corrupted or truncated "
            f"(the sha256 of its payload is not the one in its header)."
        )
    return version, payload


def read_bytes(frame: Frame, path: Path, where: str) -> bytes:
    """The bytes of ``path``: ``frame.error`` for a directory, ``FileNotFoundError`` naming it."""
    if path.is_dir():
        raise frame.error(f"{where}: {path} is a directory, not a {frame.what} file.")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{where}: no such file: {path}") from None


def read(frame: Frame, path: Path, where: str) -> tuple[int, bytes]:
    """``(version, payload)`` of the file at ``path``, checked (see :func:`unpack`)."""
    return unpack(frame, read_bytes(frame, path, where), where)


def decode(frame: Frame, payload: bytes, where: str) -> dict[str, Any]:
    """A checked payload as a dict of plain data, or ``frame.error``.

    The payload passed its checksum, so a failure here is a forged file or a
    writer bug; either way it is refused, naming what was found.
    """
    from flax import serialization

    try:
        content = serialization.msgpack_restore(payload)
    except Exception as err:  # msgpack's own errors: FormatError, ExtraData, ValueError, ...
        raise frame.error(f"{where}: unreadable payload ({type(err).__name__}: {err}).") from None
    if not isinstance(content, dict):
        raise frame.error(
            f"{where}: malformed payload: expected a map, got a {type(content).__name__}."
        )
    bad = foreign_value(content)
    if bad is not None:
        raise frame.error(
            f"{where}: malformed payload: it holds a {type(bad).__name__}; a {frame.what} holds "
            "only numbers, strings, bytes, lists, maps and arrays."
        )
    return content


def foreign_value(tree: Any) -> Any:
    """The first value that is not plain data (map, list, str, bytes, number, array), or None."""
    stack = [tree]
    while stack:
        item = stack.pop()
        if type(item) is dict:  # exact types: msgpack's ExtType is a tuple subclass
            stack.extend(item.keys())
            stack.extend(item.values())
        elif type(item) in (list, tuple):
            stack.extend(item)
        elif item is not None and not isinstance(
            item, (str, bytes, int, float, np.ndarray, np.generic)
        ):
            return item
    return None


def write(path: Path, data: bytes, *, tmp_prefix: str | None = None) -> None:
    """Write ``data`` to ``path`` atomically: a fsynced temporary file renamed over it.

    The temporary file lives in ``path``'s directory (named ``tmp_prefix`` +
    random, default ``".<name>.tmp-"``); a crash leaves either the old file or
    the new one, never half of one. It is created with the usual permissions
    (``0o666`` less the umask), like any file the user writes.
    """
    prefix = f".{path.name}.tmp-" if tmp_prefix is None else tmp_prefix
    tmp = path.parent / f"{prefix}{secrets.token_hex(6)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # platforms without directory fds
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
