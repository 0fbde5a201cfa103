"""Deployable models: the compiled forward pass in one file, loadable without its code.

:func:`save` lowers ``model.apply`` (evaluation mode) with :mod:`jax.export`
to StableHLO, with a symbolic batch dimension and for several platforms at
once, and writes one file, framed like a checkpoint::

    b"JNNMODEL" | format version (uint32 LE) | body length (uint64 LE)
                | sha256 of the body | body

The body is msgpack (:func:`flax.serialization.msgpack_serialize`: arrays as
raw bytes, no pickle) of ``{"metadata": json, "exported": bytes, "weights":
[arrays]}``; the weights (params, then model state) are stored beside the
program and passed to it as arguments. :func:`load` checks the magic, the
version, the length and the checksum, then returns a :class:`Predictor` that
runs on any batch size and needs neither the model's Python code nor jnn's
layers. Files of format 1 (no length field) still load.

**A model file is a program.** Loading one runs no Python, but predicting
runs its XLA program, and ``jax.export`` documents that a serialized program
must be trusted input: a crafted file can loop forever, or hold weights
altered to give wrong answers (its checksum only guards against accidental
damage, since anyone can recompute it). Load only files you trust. What
:func:`load` does about it:

- it refuses programs that call XLA *custom calls* (native functions; a host
  callback among them runs arbitrary code) other than the ones jnn's own
  layers produce (:data:`ALLOWED_CUSTOM_CALLS`);
- ``load(path, expected_sha256=...)`` refuses a file whose sha256 (as
  ``sha256sum`` prints it, or :func:`file_sha256`) is not the one you
  recorded when you exported or received it.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from jnn import _container
from jnn._data import _kind, is_int
from jnn._model_file import (
    ALLOWED_CUSTOM_CALLS,
    ExportError,
    custom_call_targets,
    decode_body,
    with_flatbuffers,
)
from jnn._onnx_runtime import ONNX_SUFFIX, OnnxPredictor, load_onnx
from jnn._predictor import check_input, check_sha256, file_sha256, predict_in_batches
from jnn._typing import Params, State
from jnn._version import __version__
from jnn.layers._base import AnyLayer, _check_layer, stateful

MAGIC = b"JNNMODEL"
#: 2 adds the body length to the header (the container checkpoints use); 1 still loads.
FORMAT_VERSION = 2
DEFAULT_PLATFORMS = ("cpu", "cuda", "tpu")

_FRAME = _container.Frame(
    magic=MAGIC,
    version=FORMAT_VERSION,
    readable=(1, FORMAT_VERSION),
    error=ExportError,
    what="jnn model",
    no_length=(1,),
)


def save(
    path: str | os.PathLike,
    model: AnyLayer,
    params: Params,
    input_spec: Any,
    *,
    model_state: State | None = None,
    dtype: Any = jnp.float32,
    labels: Sequence[str] | None = None,
    platforms: Sequence[str] = DEFAULT_PLATFORMS,
    description: str = "",
    policy: Any = None,
) -> dict[str, Any]:
    """Export ``model``'s forward pass (evaluation mode) and weights to one file.

    Args:
      path: file to write (conventionally ``*.jnn``); overwritten if present.
      model: the model (a :class:`jnn.Layer` or :class:`jnn.StatefulLayer`).
      params: its trained params.
      input_spec: the input shape, e.g. ``(-1, 30)``; the first axis is the
        batch axis and is exported as symbolic, whatever its value. A
        ``jax.ShapeDtypeStruct`` or an example array also works (its dtype
        then overrides ``dtype``).
      model_state: the state of a stateful model (required for those).
      dtype: input dtype (default float32).
      labels: optional names of the outputs (e.g. class names): one per output
        unit, or two for a single-unit binary classifier.
      platforms: platforms to lower for; the file runs on any of them.
      description: free text stored in the metadata.
      policy: the precision policy the model was trained with (a name such as
        ``"mixed_bfloat16"`` or a :class:`jnn.Policy`): the exported program
        computes under it, as in training (inputs and params cast to its
        compute dtype, outputs in its output dtype). Recorded in the metadata.

    Returns:
      The metadata written (also available as ``load(path).metadata``).

    Raises:
      TypeError, ValueError: for a bad model, spec, labels or platform, or a
        model whose output is not one array with a leading batch axis.

    Example:
      >>> import os, tempfile, jax, numpy as np, jnn, jnn.export
      >>> model = jnn.serial(jnn.Dense(4, activation="relu"), jnn.Dense(1))
      >>> _, params = model.init(jax.random.key(0), (-1, 3))
      >>> path = os.path.join(tempfile.mkdtemp(), "model.jnn")
      >>> meta = jnn.export.save(path, model, params, (-1, 3))
      >>> meta["input"]
      {'shape': [None, 3], 'dtype': 'float32'}
      >>> predictor = jnn.export.load(path)
      >>> predictor(np.ones((5, 3), np.float32)).shape
      (5, 1)
    """
    from jnn.summary import summary
    from jnn.train._internal import apply_policy, check_model_state, get_policy

    where = "export.save"
    _check_layer(model, f"{where}: model: ")
    precision = get_policy(policy, where)
    model_state = check_model_state(where, model, model_state)
    feature_shape, dtype = _input_spec(where, input_spec, dtype)
    platforms = _platforms(where, platforms)
    weights, treedef = jax.tree.flatten((params, model_state))
    weights = [np.asarray(w) for w in weights]
    smodel = apply_policy(stateful(model), precision)

    def forward(weights: list, x: jax.Array) -> jax.Array:
        p, s = jax.tree.unflatten(treedef, weights)
        return smodel.apply(p, s, x, train=False)[0]

    (batch,) = jax.export.symbolic_shape("batch")
    arg_specs = (
        [jax.ShapeDtypeStruct(w.shape, w.dtype) for w in weights],
        jax.ShapeDtypeStruct((batch, *feature_shape), dtype),
    )
    try:
        exported = jax.export.export(jax.jit(forward), platforms=platforms)(*arg_specs)
    except ValueError as err:
        if "platform" not in str(err).lower():
            raise
        raise ValueError(
            f"{where}: lowering for platforms {platforms} failed ({err}). "
            "Pass platforms=('cpu',) or the platforms this model supports."
        ) from err
    out_shape, out_dtype = _check_output(where, exported)
    labels = _labels(where, labels, out_shape)
    metadata = {
        "format_version": FORMAT_VERSION,
        "jnn_version": __version__,
        "jax_version": jax.__version__,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "platforms": list(exported.platforms),
        "input": {"shape": [None, *feature_shape], "dtype": np.dtype(dtype).name},
        "output": {"shape": [None, *out_shape], "dtype": out_dtype},
        "labels": labels,
        "description": str(description),
        "policy": dataclasses.asdict(precision),
        "summary": summary(model, (-1, *feature_shape)).to_dict(),
    }
    body = serialization.msgpack_serialize(
        {
            "metadata": json.dumps(metadata),
            "exported": with_flatbuffers(lambda: bytes(exported.serialize())),
            "weights": weights,
        }
    )
    # write, fsync, then rename: a crash never leaves half a model
    _container.write(Path(path), _container.pack(_FRAME, body))
    return metadata


def load(
    path: str | os.PathLike, *, expected_sha256: str | None = None
) -> Predictor | OnnxPredictor:
    """Load a model file: a :class:`Predictor`, or an :class:`OnnxPredictor` for ``.onnx``.

    Nothing in the file is executed as Python: the program is StableHLO, the
    weights are raw array bytes and the metadata is JSON. But the program
    runs when you predict: a model file is code, load only files you trust
    (see the module documentation). Programs calling custom calls other
    than :data:`ALLOWED_CUSTOM_CALLS` are refused.

    Args:
      path: a file written by :func:`save`; a name ending in ``.onnx`` is read
        as ONNX (:func:`save_onnx`) and runs on ONNX Runtime.
      expected_sha256: the sha256 (hex) the whole file must have, e.g. from
        :func:`file_sha256` at export time; the file is refused if it differs
        (altered weights or program, even with a recomputed inner checksum).

    Returns:
      A :class:`Predictor` on the default JAX device, or an
      :class:`OnnxPredictor` for an ``.onnx`` file.

    Raises:
      OSError: if the file cannot be read (e.g. ``FileNotFoundError``).
      ExportError: (a ``ValueError``) naming the file, if it is not a jnn
        model, was written by an unknown format version, fails its checksum
        (corrupted or truncated), has a malformed body, calls custom calls
        jnn's layers never produce, does not have ``expected_sha256``, or was
        not exported for this machine's platform.
      ValueError: if ``expected_sha256`` is not 64 hex digits.

    Example:
      >>> import os, tempfile, jax, jnn, jnn.export
      >>> model = jnn.Dense(2)
      >>> _, params = model.init(jax.random.key(0), (-1, 3))
      >>> d = tempfile.mkdtemp()
      >>> _ = jnn.export.save(os.path.join(d, "m.jnn"), model, params, (-1, 3),
      ...                     labels=["cat", "dog"])
      >>> predictor = jnn.export.load(os.path.join(d, "m.jnn"))
      >>> predictor.input_shape, predictor.output_shape, predictor.labels
      ((None, 3), (None, 2), ['cat', 'dog'])
      >>> with open(os.path.join(d, "notes.txt"), "wb") as f:
      ...     _ = f.write(b"not a model")
      >>> jnn.export.load(os.path.join(d, "notes.txt"))
      Traceback (most recent call last):
      ...
      jnn.export.ExportError: export.load('...notes.txt'): not a jnn model file (bad header: ...).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"export.load: path must be a path, got {type(path).__name__}.")
    if os.fspath(path).lower().endswith(ONNX_SUFFIX):
        return load_onnx(path, expected_sha256=expected_sha256)
    where = f"export.load({os.fspath(path)!r})"
    data = _container.read_bytes(_FRAME, Path(path), where)
    if expected_sha256 is not None:  # before anything in the file is parsed
        check_sha256(path, expected_sha256, data)
    _, body = _container.unpack(_FRAME, data, where)
    metadata, exported, weights = decode_body(_FRAME, body, where)
    return Predictor(metadata, exported, weights, where=where)


class Predictor:
    """A loaded model: ``predictor(x)`` returns one output row per input row.

    Attributes:
      metadata: the JSON metadata written by :func:`save`.
      input_shape, output_shape: shapes with ``None`` for the batch axis.
      input_dtype, output_dtype: numpy dtypes.
      labels: output names, or ``None``.
      exported: the underlying :class:`jax.export.Exported`.

    Build one with :func:`load`; the constructor (which refuses a program not
    exported for this machine's platform) is for :func:`load`.

    Example:
      >>> import os, tempfile, jax, numpy as np, jnn, jnn.export
      >>> model = jnn.Dense(1)
      >>> params = {"w": np.ones((3, 1), np.float32), "b": np.zeros(1, np.float32)}
      >>> path = os.path.join(tempfile.mkdtemp(), "m.jnn")
      >>> _ = jnn.export.save(path, model, params, (-1, 3))
      >>> predictor = jnn.export.load(path)
      >>> predictor(np.ones((5, 3)), batch_size=2).ravel()  # float64 in: cast, in 3 calls
      array([3., 3., 3., 3., 3.], dtype=float32)
      >>> x = predictor.check_input([1.0, 2.0, 3.0], allow_single=True)
      >>> x.shape, predictor.run(x)
      ((1, 3), array([[6.]], dtype=float32))
      >>> f = predictor.jax_function()               # composes with jax.jit
      >>> jax.jit(f)(np.ones((2, 3), np.float32)).shape
      (2, 1)
      >>> print(predictor.summary())
      Layer  Output shape  Params  Param shapes
      dense  (-1, 1)            4  b (1,), w (3, 1)
      Total params: 4
    """

    def __init__(self, metadata: dict, exported: Any, weights: list, *, where: str = "Predictor"):
        platform = jax.default_backend()
        platform = "cuda" if platform == "gpu" else platform
        if platform not in exported.platforms:
            raise ExportError(
                f"{where}: the model was exported for {list(exported.platforms)} but this "
                f"machine runs {platform!r}. Re-export with platforms=(..., {platform!r})."
            )
        self.metadata = metadata
        self.exported = exported
        self.input_shape = tuple(metadata["input"]["shape"])
        self.input_dtype = np.dtype(metadata["input"]["dtype"])
        self.output_shape = tuple(metadata["output"]["shape"])
        self.output_dtype = np.dtype(metadata["output"]["dtype"])
        self.labels = metadata.get("labels")
        self._weights = [jax.device_put(w) for w in weights]
        self._call = jax.jit(exported.call)

    def __call__(self, x: Any, *, batch_size: int = 1024) -> np.ndarray:
        """Predict on ``x`` of shape ``(N, *input_shape[1:])``, ``batch_size`` rows per call.

        Raises:
          TypeError: if ``x`` is not numeric or its dtype cannot be cast to the
            model's input dtype without changing kind (e.g. float to int).
          ValueError: if its shape does not match or it holds NaN/Inf.
        """
        return predict_in_batches(self.run, self.check_input(x), batch_size)

    def check_input(self, x: Any, *, allow_single: bool = False) -> np.ndarray:
        """``x`` validated and cast to the input dtype, with a batch axis.

        With ``allow_single``, one example (without the batch axis) is also
        accepted and returned with a batch axis of 1.

        Args:
          x: an array-like of shape ``(n, *input_shape[1:])``, ``n >= 1``.
          allow_single: also accept one example of shape ``input_shape[1:]``.

        Returns:
          A numpy array of the model's input dtype with a batch axis.

        Raises:
          TypeError: if ``x`` is not numeric or cannot be cast to the input
            dtype without changing kind (e.g. float to int).
          ValueError: if ``x`` is not an array, its shape does not match, or it
            holds NaN/Inf.
        """
        return check_input(x, self.input_shape, self.input_dtype, allow_single=allow_single)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Predict on an already checked ``x``, padding rows to a power of two.

        Padding bounds compilation to one program per power of two, so any
        batch size reuses a compiled one after :meth:`warmup`.

        Args:
          x: a batch as :meth:`check_input` returns it; nothing is checked here.

        Returns:
          The predictions for the ``x.shape[0]`` rows, as numpy.
        """
        n = x.shape[0]
        rows = 1 << (n - 1).bit_length()
        if rows > n:
            x = np.concatenate([x, np.zeros((rows - n, *x.shape[1:]), x.dtype)])
        return np.asarray(self._call(self._weights, x))[:n]

    def jax_function(self) -> Any:
        """The program as a jax function ``f(x) -> y`` (no checks, no padding).

        It composes with ``jax.jit``; it is not differentiable (exported
        without VJPs) and not vmappable (use the batch axis instead).

        Returns:
          A callable mapping a batch ``(n, *input_shape[1:])`` of the input
          dtype to a ``jax.Array`` of predictions; the weights are bound.
        """
        return functools.partial(self.exported.call, self._weights)

    def warmup(self, max_rows: int = 1) -> None:
        """Compile the programs for every power of two up to ``max_rows`` rows.

        Args:
          max_rows: the largest batch to prepare for; batches of 1, 2, 4, ...
            rows are run up to the first power of two ``>= max_rows``.
        """
        rows = 1
        while True:
            self.run(np.zeros((rows, *self.input_shape[1:]), self.input_dtype))
            if rows >= max_rows:
                return
            rows *= 2

    def summary(self) -> str:
        """The model summary stored at export, as a table.

        Returns:
          The text of :func:`jnn.summary.format_table` for
          ``metadata["summary"]``.
        """
        from jnn.summary import format_table

        return format_table(self.metadata["summary"])


def _input_spec(where: str, spec: Any, dtype: Any) -> tuple[tuple[int, ...], np.dtype]:
    if hasattr(spec, "shape") and hasattr(spec, "dtype"):
        shape, dtype = tuple(spec.shape), spec.dtype
    else:
        try:
            shape = tuple(spec)
        except TypeError:
            raise TypeError(
                f"{where}: input_spec must be a shape such as (-1, 30), got {spec!r}."
            ) from None
    if len(shape) < 1:
        raise ValueError(f"{where}: input_spec needs a batch axis, e.g. (-1, 30); got {shape}.")
    features = shape[1:]
    for d in features:
        if not is_int(d) or d < 1:
            raise ValueError(
                f"{where}: input_spec {shape}: only the first (batch) axis may be unknown; "
                "every other dimension must be a positive int."
            )
    dtype = np.dtype(dtype)
    if _kind(dtype) not in ("i", "f"):  # bfloat16 is a float (numpy says kind "V")
        raise TypeError(f"{where}: the input dtype must be numeric, got {dtype}.")
    return tuple(int(d) for d in features), dtype


def _platforms(where: str, platforms: Sequence[str]) -> tuple[str, ...]:
    if isinstance(platforms, str):
        platforms = (platforms,)
    known = {"cpu", "cuda", "rocm", "tpu"}
    ok = isinstance(platforms, (list, tuple)) and all(isinstance(p, str) for p in platforms)
    out = tuple(p.lower() for p in platforms) if ok else ()
    if not out or not set(out) <= known:
        raise ValueError(f"{where}: platforms must be among {sorted(known)}, got {platforms!r}.")
    return out


def _check_output(where: str, exported: Any) -> tuple[tuple[int, ...], str]:
    if exported.out_tree.num_leaves != 1 or exported.out_tree.children():
        raise ValueError(
            f"{where}: the model returns {exported.out_tree}; export needs one output array."
        )
    aval = exported.out_avals[0]
    if (
        aval.ndim == 0
        or str(aval.shape[0]) != "batch"
        or not all(isinstance(d, int) for d in aval.shape[1:])
    ):
        raise ValueError(
            f"{where}: the model's output has shape {aval.shape}; export needs a leading "
            "batch axis (one output row per input row) and fixed other dimensions."
        )
    return tuple(aval.shape[1:]), np.dtype(aval.dtype).name


def _labels(where: str, labels: Any, out_shape: tuple[int, ...]) -> list[str] | None:
    if labels is None:
        return None
    if not isinstance(labels, (list, tuple)) or not all(isinstance(s, str) for s in labels):
        raise TypeError(f"{where}: labels must be a list of strings, got {labels!r}.")
    labels = list(labels)
    units = out_shape[-1] if out_shape else 1
    if len(labels) != units and not (units == 1 and len(labels) == 2):
        raise ValueError(
            f"{where}: {len(labels)} labels for an output of shape (n, *{out_shape}); give one "
            "label per output unit (or two for a single-unit binary classifier)."
        )
    return labels


def save_onnx(
    path: str | os.PathLike,
    model: AnyLayer,
    params: Params,
    input_spec: Any,
    *,
    model_state: State | None = None,
    opset: int | None = None,
    dtype: Any = jnp.float32,
    labels: Sequence[str] | None = None,
    description: str = "",
) -> dict[str, Any]:
    """Export ``model``'s forward pass (evaluation mode) and weights as one ONNX file.

    ONNX is a graph format that ONNX Runtime (servers, mobile, browsers),
    TensorRT and OpenVINO read; ``jnn serve model.onnx`` and ``jnn predict``
    run it without jax (``pip install 'jnn[serve-onnx]'``). The graph has one
    input ``"inputs"`` with a symbolic batch axis and one output
    ``"predictions"``; jnn's metadata (input and output specs, labels,
    summary, versions) is the JSON metadata property ``"jnn.metadata"``.
    Before writing, the graph is run on ONNX Runtime and compared with the
    model: a conversion that differs is an error, never a wrong file.

    Args:
      path: file to write (conventionally ``*.onnx``); overwritten if present.
      model: the model (a :class:`jnn.Layer` or :class:`jnn.StatefulLayer`).
      params: its trained params.
      input_spec: the input shape, e.g. ``(-1, 30)``; the first axis is the
        batch axis (symbolic in the file). A ``jax.ShapeDtypeStruct`` or an
        example array also works (its dtype then overrides ``dtype``).
      model_state: the state of a stateful model (required for those);
        BatchNorm runs on its running statistics.
      opset: the ONNX opset to target (default 17, the oldest jnn tests;
        newer ones up to what the installed onnx knows). An older
        runtime needs an older opset.
      dtype: input dtype (default float32; integer ids for ``Embedding``).
      labels: optional names of the outputs, as in :func:`jnn.export.save`.
      description: free text stored in the metadata and the graph's doc string.

    Returns:
      The metadata written (also ``jnn.export.load(path).metadata``).

    Raises:
      ImportError: if jax2onnx, onnx or onnxruntime is missing
        (``pip install 'jnn[onnx]'``).
      TypeError, ValueError: for a bad model, input spec (one that does not fit
        the params), labels or opset; a model whose output is not one array
        with a leading batch axis; a layer with no ONNX form (the error names
        it and the operation); or a converted graph whose outputs differ.

    Example:
      >>> import os, tempfile, jax, numpy as np, jnn, jnn.export
      >>> model = jnn.serial(jnn.Dense(4, activation="relu"), jnn.Dense(1))
      >>> _, params = model.init(jax.random.key(0), (-1, 3))
      >>> path = os.path.join(tempfile.mkdtemp(), "model.onnx")
      >>> meta = jnn.export.save_onnx(path, model, params, (-1, 3))
      >>> meta["input"], meta["opset"]
      ({'shape': [None, 3], 'dtype': 'float32'}, 17)
      >>> predictor = jnn.export.load(path)                # ONNX Runtime, no XLA
      >>> x = np.ones((5, 3), np.float32)
      >>> bool(np.allclose(predictor(x), jnn.predict(model, params, x), rtol=1e-5))
      True
    """
    from jnn._onnx import export_onnx  # jax2onnx is imported only when exporting to ONNX

    where = "export.save_onnx"
    features, dtype = _input_spec(where, input_spec, dtype)
    return export_onnx(
        path,
        model,
        params,
        features,
        dtype,
        model_state=model_state,
        opset=opset,
        labels_for=functools.partial(_labels, where, labels),
        description=description,
    )


__all__ = [
    "ALLOWED_CUSTOM_CALLS",
    "FORMAT_VERSION",
    "MAGIC",
    "ExportError",
    "OnnxPredictor",
    "Predictor",
    "custom_call_targets",
    "file_sha256",
    "load",
    "save",
    "save_onnx",
]
