"""What every loaded model shares, without jax (private: numpy and the standard library only).

Both runtimes (:class:`jnn.export.Predictor` on XLA for ``.jnn`` files,
:class:`jnn.export.OnnxPredictor` on ONNX Runtime for ``.onnx`` files) check
inputs and split large batches with the functions here, so both give the same
errors; :func:`jnn.serve.load_model` picks the runtime from the file name and
imports jax only for ``.jnn`` files.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np


class LoadedModel(Protocol):
    """The interface :mod:`jnn.serve` and :mod:`jnn.cli` use (both predictor classes have it)."""

    metadata: dict
    input_shape: tuple
    input_dtype: np.dtype
    output_shape: tuple
    labels: list[str] | None

    def __call__(self, x: Any, *, batch_size: int = 1024) -> np.ndarray: ...

    def check_input(self, x: Any, *, allow_single: bool = False) -> np.ndarray: ...

    def run(self, x: np.ndarray) -> np.ndarray: ...

    def warmup(self, max_rows: int = 1) -> None: ...

    def summary(self) -> str: ...


def check_sha256(path: str | os.PathLike, expected: str, data: bytes | None = None) -> None:
    """Refuse a file whose sha256 is not ``expected`` (64 hex digits): tampered or wrong file."""
    where = f"load({os.fspath(path)!r})"
    if not isinstance(expected, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", expected):
        raise ValueError(
            f"{where}: expected_sha256 must be 64 hexadecimal digits (as `sha256sum FILE` "
            f"prints), got {expected!r}."
        )
    if data is None:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        actual = digest.hexdigest()
    else:
        actual = hashlib.sha256(data).hexdigest()
    if actual != expected.lower():
        raise ValueError(
            f"{where}: sha256 mismatch: the file's is {actual}, expected {expected.lower()}. "
            "The file was changed or is not the one you meant; do not serve it."
        )


def check_input(
    x: Any, input_shape: tuple, input_dtype: np.dtype, *, allow_single: bool = False
) -> np.ndarray:
    """``x`` checked and cast to ``input_dtype``, with a batch axis (``Predictor.check_input``)."""
    features = tuple(input_shape[1:])
    expected = "(n, " + ", ".join(str(d) for d in features) + ")"
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError, RecursionError) as err:
        raise ValueError(
            f"input could not be read as an array of shape {expected}: {err}"
        ) from None
    if arr.dtype.kind not in "iuf" or not np.can_cast(arr.dtype, input_dtype, casting="same_kind"):
        raise TypeError(
            f"input has dtype {arr.dtype} but the model takes {input_dtype} "
            f"(shape {expected}); send numbers of that kind."
        )
    if allow_single and arr.shape == features:
        arr = arr.reshape(1, *features)
    if arr.ndim != len(input_shape) or arr.shape[1:] != features or arr.shape[0] < 1:
        raise ValueError(
            f"input has shape {arr.shape} but the model expects {expected}"
            + (f" or one example of shape {features}" if allow_single else "")
            + " (n examples, n >= 1)."
        )
    arr = arr.astype(input_dtype, copy=False)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(
            f"input holds NaN or Inf values; the model needs finite numbers, shape {expected}."
        )
    return arr


def predict_in_batches(
    run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch_size: Any
) -> np.ndarray:
    """``run`` over ``x`` (already checked) in slices of ``batch_size`` rows, concatenated."""
    if (
        not isinstance(batch_size, (int, np.integer))
        or isinstance(batch_size, bool)
        or batch_size < 1
    ):
        raise ValueError(f"Predictor: batch_size must be a positive int, got {batch_size!r}.")
    if x.shape[0] <= batch_size:
        return run(x)
    return np.concatenate([run(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)])


def format_summary(summary_dict: dict[str, Any]) -> str:
    """The table of a model summary dict (the body of :func:`jnn.summary.format_table`)."""
    header = ("Layer", "Output shape", "Params", "Param shapes")
    lines = [header]
    for r in summary_dict["rows"]:
        shapes = ", ".join(f"{k} {tuple(v)}" for k, v in r["param_shapes"].items())
        lines.append(
            (
                "  " * r["depth"] + r["name"],
                str(_as_tuple(r["output_shape"])),
                str(r["params"]),
                shapes,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(3)]
    out = [
        f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}  {d}".rstrip()
        for a, b, c, d in lines
    ]
    out.append(f"Total params: {summary_dict['total_params']}")
    if summary_dict.get("total_state"):
        out.append(f"Non-trainable state: {summary_dict['total_state']}")
    return "\n".join(out)


def _as_tuple(shape: Any) -> Any:
    if isinstance(shape, (list, tuple)):
        return tuple(_as_tuple(s) for s in shape)
    return shape
