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

from jnn._data import as_array, check_finite, check_positive_int


class ExportError(ValueError):
    """Raised for a model file that is not a jnn model, or is damaged, malformed or untrusted.

    The message names the file and what is wrong with it.
    """


ExportError.__module__ = "jnn.export"  # its public home (defined here: jax-free loading)


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


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file, as hex (what ``sha256sum`` prints): pin it to load only that file.

    Args:
      path: a file, e.g. one written by :func:`jnn.export.save` or ``save_onnx``.

    Returns:
      64 lowercase hex digits.

    Example:
      >>> import os, tempfile, jax, jnn, jnn.export
      >>> model = jnn.Dense(1)
      >>> _, params = model.init(jax.random.key(0), (-1, 2))
      >>> path = os.path.join(tempfile.mkdtemp(), "m.jnn")
      >>> _ = jnn.export.save(path, model, params, (-1, 2))
      >>> digest = jnn.export.file_sha256(path)
      >>> jnn.export.load(path, expected_sha256=digest).input_shape
      (None, 2)
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(path: str | os.PathLike, expected: Any, data: bytes | None = None) -> None:
    """Refuse a file whose sha256 is not ``expected`` (64 hex digits): tampered or wrong file.

    Raises:
      ValueError: if ``expected`` is not 64 hex digits.
      ExportError: if the digest differs (checked before anything in the file is parsed).
    """
    where = f"export.load({os.fspath(path)!r})"
    if not isinstance(expected, str) or not re.fullmatch(r"\s*[0-9a-fA-F]{64}\s*", expected):
        raise ValueError(
            f"{where}: expected_sha256 must be 64 hexadecimal digits (as `sha256sum FILE` "
            f"prints), got {expected!r}."
        )
    expected = expected.strip().lower()
    actual = file_sha256(path) if data is None else hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ExportError(
            f"{where}: sha256 mismatch: the file's is {actual}, expected {expected}: it is not "
            "the file you trusted (altered, replaced or re-exported). Refusing to load it."
        )


def check_input(
    x: Any, input_shape: tuple, input_dtype: np.dtype, *, allow_single: bool = False
) -> np.ndarray:
    """``x`` checked and cast to ``input_dtype``, with a batch axis (``Predictor.check_input``)."""
    features = tuple(input_shape[1:])
    expected = "(n, " + ", ".join(str(d) for d in features) + ")"
    try:  # the one coercer (jnn._data), with the model's expected input in the message
        arr = as_array("Predictor", "input", x, host=True)
    except TypeError as err:
        raise TypeError(f"{err} The model takes {input_dtype}, shape {expected}.") from None
    if arr.dtype == np.bool_ or not np.can_cast(arr.dtype, input_dtype, casting="same_kind"):
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
    # NaN/Inf, and values the cast would make Inf, named by example and column (as in predict)
    check_finite("Predictor", "input", arr, cast_to=input_dtype)
    return arr.astype(input_dtype, copy=False)


def predict_in_batches(
    run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch_size: Any
) -> np.ndarray:
    """``run`` over ``x`` (already checked) in slices of ``batch_size`` rows, concatenated."""
    batch_size = check_positive_int("Predictor", "batch_size", batch_size)
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
