"""ONNX models on ONNX Runtime, without jax (private; public as :class:`jnn.export.OnnxPredictor`).

This module imports numpy, the standard library and (when a model is loaded)
``onnxruntime`` only, so a serving image for ``.onnx`` files needs neither
jax nor jaxlib: ``pip install 'jnn[serve-onnx]'``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from jnn._predictor import (
    ExportError,
    check_input,
    check_sha256,
    format_summary,
    predict_in_batches,
)

ONNX_SUFFIX = ".onnx"  # files with this suffix are ONNX (jnn.export.load, jnn.serve.load_model)
METADATA_KEY = "jnn.metadata"  # the metadata_props entry holding jnn's metadata (JSON)
_DTYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(uint8)": "uint8",
}


def _import_runtime() -> Any:
    try:
        import onnxruntime
    except ImportError as err:
        raise ImportError(
            f"running an ONNX model needs onnxruntime ({err}); install it with "
            "pip install 'jnn[serve-onnx]' (or 'jnn[onnx]' to export too)."
        ) from None
    return onnxruntime


def load_onnx(path: str | os.PathLike, *, expected_sha256: str | None = None) -> OnnxPredictor:
    """Load an ONNX file (from :func:`jnn.export.save_onnx`, or a one-input model) on ONNX Runtime.

    Args:
      path: an ``.onnx`` file.
      expected_sha256: if given, the file's sha256 (hex) must equal it.

    Returns:
      An :class:`OnnxPredictor`.

    Raises:
      ImportError: if onnxruntime is not installed.
      OSError: if the file cannot be read.
      ExportError: (a ``ValueError``) if it is not ONNX (or truncated, damaged, or needs a newer
        onnxruntime), its sha256 differs from ``expected_sha256``, or it does
        not have one input and one output with a leading batch axis.
    """
    ort = _import_runtime()
    where = f"export.load({os.fspath(path)!r})"
    with open(path, "rb") as f:
        data = f.read()
    if expected_sha256 is not None:
        check_sha256(path, expected_sha256, data)
    options = ort.SessionOptions()
    # Idle worker threads sleep instead of spinning: a server's event loop needs the cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(data, options, providers=ort.get_available_providers())
    except Exception as err:  # onnxruntime's errors have no common base class
        raise ExportError(
            f"{where}: not a usable ONNX model: {err}. The file may be truncated or damaged, "
            f"not ONNX, or need a newer onnxruntime than {ort.__version__} (an opset it "
            "lacks: re-export with jnn.export.save_onnx(..., opset=N) for a lower N)."
        ) from None
    return OnnxPredictor(session, where=where)


class OnnxPredictor:
    """An ONNX model on ONNX Runtime: ``predictor(x)`` returns one output row per input row.

    The same interface and input checks as :class:`jnn.export.Predictor`
    (without ``jax_function``), and no jax: load one with
    :func:`jnn.export.load` (a path ending in ``.onnx``), or without importing
    jax with ``jnn.serve.load_model``.

    Attributes:
      metadata: jnn's metadata (see :func:`jnn.export.save_onnx`); for an ONNX
        file from elsewhere, the shapes and dtypes read from the graph.
      input_shape, output_shape: shapes with ``None`` for the batch axis.
      input_dtype, output_dtype: numpy dtypes.
      labels: output names, or ``None``.
      session: the ``onnxruntime.InferenceSession``.

    Example:
      >>> import os, tempfile, jax, numpy as np, jnn, jnn.export
      >>> model = jnn.Dense(1)
      >>> params = {"w": np.ones((3, 1), np.float32), "b": np.zeros(1, np.float32)}
      >>> path = os.path.join(tempfile.mkdtemp(), "m.onnx")
      >>> _ = jnn.export.save_onnx(path, model, params, (-1, 3))
      >>> predictor = jnn.export.load(path)
      >>> predictor(np.ones((5, 3)), batch_size=2).ravel()  # float64 in: cast, in 3 calls
      array([3., 3., 3., 3., 3.], dtype=float32)
      >>> predictor.input_shape, predictor.output_shape
      ((None, 3), (None, 1))
    """

    def __init__(self, session: Any, *, where: str = "OnnxPredictor"):
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ExportError(
                f"{where}: the model has {len(inputs)} inputs and {len(outputs)} outputs; "
                "jnn runs models with one input and one output."
            )
        graph_in = _io_spec(where, "input", inputs[0])
        graph_out = _io_spec(where, "output", outputs[0])
        props = session.get_modelmeta().custom_metadata_map
        if METADATA_KEY in props:
            try:
                metadata = json.loads(props[METADATA_KEY])
                stored = (metadata["input"], metadata["output"])
            except (ValueError, KeyError, TypeError) as err:
                raise ExportError(
                    f"{where}: the model's {METADATA_KEY!r} metadata is damaged ({err})."
                ) from None
            if stored != (graph_in, graph_out):
                raise ExportError(
                    f"{where}: the model's metadata says {stored[0]} -> {stored[1]} but its "
                    f"graph takes {graph_in} -> {graph_out}; the file was altered."
                )
        else:
            metadata = {"input": graph_in, "output": graph_out, "labels": None}
        self.metadata = metadata
        self.session = session
        self.input_shape = tuple(graph_in["shape"])
        self.input_dtype = np.dtype(graph_in["dtype"])
        self.output_shape = tuple(graph_out["shape"])
        self.output_dtype = np.dtype(graph_out["dtype"])
        self.labels = metadata.get("labels")
        self._names = ([outputs[0].name], inputs[0].name)

    def __call__(self, x: Any, *, batch_size: int = 1024) -> np.ndarray:
        """Predict on ``x`` of shape ``(N, *input_shape[1:])``, ``batch_size`` rows per call.

        Raises:
          TypeError, ValueError: as :meth:`jnn.export.Predictor.__call__`.
        """
        return predict_in_batches(self.run, self.check_input(x), batch_size)

    def check_input(self, x: Any, *, allow_single: bool = False) -> np.ndarray:
        """``x`` validated and cast to the input dtype, with a batch axis.

        Args:
          x: an array-like of shape ``(n, *input_shape[1:])``, ``n >= 1``.
          allow_single: also accept one example of shape ``input_shape[1:]``.

        Returns:
          A numpy array of the model's input dtype with a batch axis.

        Raises:
          TypeError, ValueError: as :meth:`jnn.export.Predictor.check_input`.
        """
        return check_input(x, self.input_shape, self.input_dtype, allow_single=allow_single)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Predict on an already checked ``x`` (any number of rows; nothing is checked).

        Args:
          x: a batch as :meth:`check_input` returns it.

        Returns:
          The predictions, as numpy.
        """
        outputs, name = self._names
        return self.session.run(outputs, {name: x})[0]

    def warmup(self, max_rows: int = 1) -> None:
        """Run batches of 1 and ``max_rows`` rows once (ONNX Runtime allocates on first use).

        Args:
          max_rows: the largest batch to prepare for.
        """
        for rows in sorted({1, max(1, int(max_rows))}):
            self.run(np.zeros((rows, *self.input_shape[1:]), self.input_dtype))

    def summary(self) -> str:
        """The model summary stored at export, as a table (see :func:`jnn.summary.format_table`).

        Returns:
          The table, or a line saying the file has none (ONNX from elsewhere).
        """
        if "summary" not in self.metadata:
            return f"(no jnn summary: an ONNX model taking {self.metadata['input']})"
        return format_summary(self.metadata["summary"])


def _io_spec(where: str, what: str, arg: Any) -> dict[str, Any]:
    """``{"shape": [None, ...], "dtype": name}`` of a graph input/output with a batch axis."""
    dtype = _DTYPES.get(arg.type)
    shape = list(arg.shape)
    if (
        dtype is None
        or not shape
        or isinstance(shape[0], int)  # a fixed batch size: only that many rows would run
        or any(not isinstance(d, int) or d < 1 for d in shape[1:])
    ):
        raise ExportError(
            f"{where}: the model's {what} {arg.name!r} is {arg.type} of shape {shape}; jnn runs "
            "numeric tensors with a symbolic leading batch axis and fixed other dimensions "
            "(export with a dynamic batch dimension)."
        )
    return {"shape": [None, *shape[1:]], "dtype": dtype}
