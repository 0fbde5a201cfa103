"""Reading and checking the body of a model file (documented internal module).

:func:`jnn.export.load` frames and checksums a file with :mod:`jnn._container`;
this module turns the checked body into metadata, program and weights, and
refuses anything it cannot vouch for with :class:`ExportError`: a malformed
map, metadata that is not what :func:`jnn.export.save` writes or disagrees
with the program, weights that do not fit the program's arguments, a program
that cannot be deserialized, and programs that call native code jnn's layers
never produce (:data:`ALLOWED_CUSTOM_CALLS`). A model file is a program: see
:mod:`jnn.export`.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jax
import numpy as np

from jnn import _container
from jnn._data import is_int
from jnn._predictor import ExportError

ALLOWED_CUSTOM_CALLS = frozenset({"shape_assertion"})
"""The XLA custom-call targets jnn's layers produce, exported for cpu, cuda and tpu.

Found by exporting every layer kind (``tests/test_export.py`` keeps it
exact); :func:`jnn.export.load` refuses a program that calls any other target.
"""


def decode_body(
    frame: _container.Frame, body: bytes, where: str
) -> tuple[dict, Any, list[np.ndarray]]:
    """The checked contents of a model body: metadata, program, weights (else ExportError)."""
    contents = _container.decode(frame, body, where)
    missing = [k for k in ("metadata", "exported", "weights") if k not in contents]
    if missing:
        raise ExportError(f"{where}: malformed model body: no {', '.join(missing)} entry.")
    try:
        metadata = json.loads(contents["metadata"])
    except (TypeError, ValueError) as err:
        raise ExportError(f"{where}: malformed metadata (not JSON: {err}).") from None
    _check_metadata(metadata, where)
    weights = contents["weights"]
    if isinstance(weights, dict):  # flax writes a list of arrays as {"0": ..., "1": ...}
        weights = [weights[k] for k in sorted(weights, key=lambda k: (len(str(k)), str(k)))]
    if not isinstance(weights, list) or not all(isinstance(w, np.ndarray) for w in weights):
        raise ExportError(f"{where}: malformed model body: the weights are not a list of arrays.")
    program = contents["exported"]
    if not isinstance(program, bytes):
        raise ExportError(f"{where}: malformed model body: the program is not bytes.")
    try:
        exported = with_flatbuffers(lambda: jax.export.deserialize(bytearray(program)))
        text = exported.mlir_module()
    except ImportError:
        raise
    except Exception as err:  # garbage that passed the checksum: flatbuffers/MLIR errors
        raise ExportError(
            f"{where}: the program could not be deserialized ({type(err).__name__}: {err})."
        ) from None
    _check_custom_calls(text, where)
    avals = exported.in_avals
    if len(avals) != len(weights) + 1 or any(
        tuple(a.shape) != w.shape or np.dtype(a.dtype) != w.dtype
        for a, w in zip(avals[:-1], weights, strict=False)
    ):
        raise ExportError(
            f"{where}: malformed model body: the stored weights do not match the program's "
            "arguments (count, shapes or dtypes)."
        )
    for what, aval in (("input", avals[-1]), ("output", exported.out_avals[0])):
        spec = metadata[what]
        if tuple(aval.shape[1:]) != tuple(spec["shape"][1:]) or np.dtype(aval.dtype) != np.dtype(
            spec["dtype"]
        ):
            raise ExportError(
                f"{where}: malformed metadata: the {what} is described as (n, "
                f"{', '.join(map(str, spec['shape'][1:]))}) {spec['dtype']} but the program's is "
                f"{aval.shape} {aval.dtype}."
            )
    return metadata, exported, list(weights)


def _check_metadata(meta: Any, where: str) -> None:
    def shape_ok(spec: Any) -> bool:
        return (
            isinstance(spec, dict)
            and isinstance(spec.get("shape"), list)
            and bool(spec["shape"])
            and spec["shape"][0] is None
            and all(is_int(d) and d >= 1 for d in spec["shape"][1:])
            and isinstance(spec.get("dtype"), str)
        )

    problem = None
    if not isinstance(meta, dict):
        problem = f"a {type(meta).__name__}, not an object"
    elif not (shape_ok(meta.get("input")) and shape_ok(meta.get("output"))):
        problem = "no valid input/output shapes and dtypes"
    elif not isinstance(meta.get("summary"), dict) or not isinstance(meta.get("platforms"), list):
        problem = "no summary or platforms"
    elif meta.get("labels") is not None and not (
        isinstance(meta["labels"], list) and all(isinstance(v, str) for v in meta["labels"])
    ):
        problem = "labels that are not a list of strings"
    else:
        try:
            for spec in (meta["input"], meta["output"]):
                np.dtype(spec["dtype"])
        except TypeError:
            problem = "an unknown dtype"
    if problem is not None:
        raise ExportError(f"{where}: malformed metadata: {problem}.")


_STRING = re.compile(r'("(?:[^"\\]|\\.)*")')  # an MLIR string literal, escapes included


def custom_call_targets(mlir_text: str) -> set[str]:
    """The custom-call targets a StableHLO module (as text) calls.

    String literals (locations, attributes) are skipped, so a name in a
    debug location is not mistaken for a call; a ``custom_call`` in a form
    not recognized is an error rather than a call that escapes the check.

    Args:
      mlir_text: ``Exported.mlir_module()``.

    Returns:
      The set of targets, e.g. ``{"shape_assertion"}``.

    Raises:
      ExportError: if ``custom_call`` appears in a form not recognized.

    Example:
      >>> import jax, jax.numpy as jnp, jnn.export
      >>> exp = jax.export.export(jax.jit(jnp.sin))(jax.ShapeDtypeStruct((3,), jnp.float32))
      >>> sorted(jnn.export.custom_call_targets(exp.mlir_module()))
      []
    """
    parts = _STRING.split(mlir_text)  # odd indices: string literals
    targets: list[str] = []
    calls = 0
    for i, part in enumerate(parts):
        if i % 2:  # a literal: the op name of a generic-form custom call counts as a call
            op_name = re.fullmatch(r'"\w+\.custom_call"', part)
            calls += bool(op_name and parts[i + 1].startswith("("))
            continue
        calls += part.count("custom_call")
        targets += re.findall(r"custom_call\s*@([A-Za-z_][\w$.-]*)", part)
        if i + 1 < len(parts) and re.search(r"(custom_call\s*@|call_target_name\s*=\s*)$", part):
            targets.append(json.loads(parts[i + 1]))  # a quoted symbol, or the generic form
    if calls != len(targets):
        raise ExportError(
            f"the program holds {calls} custom call(s) but {len(targets)} could be named; "
            "refusing a form jnn does not recognize."
        )
    return set(targets)


def _check_custom_calls(text: str, where: str) -> None:
    try:
        targets = custom_call_targets(text)
    except ExportError as err:
        raise ExportError(f"{where}: {err}") from None
    foreign = sorted(targets - ALLOWED_CUSTOM_CALLS)
    if foreign:
        raise ExportError(
            f"{where}: the program calls custom call target(s) {foreign}, which jnn's layers "
            "never produce (they run native code). A model file is a program: refusing to "
            "load it. Re-export the model with jnn, or load only files you trust."
        )


def with_flatbuffers(fn: Any) -> Any:
    """``fn()``, with an ImportError (no flatbuffers) that says how to install it."""
    try:
        return fn()
    except ImportError as err:  # jax.export's serializer needs flatbuffers
        raise ImportError(f"{err}. Install it with: pip install 'jnn[export]'.") from err
