"""ONNX export (private; :func:`jnn.export.save_onnx` checks its arguments and calls it).

The forward pass (evaluation mode, weights as constants) is traced once to a
jaxpr with a symbolic batch axis; that jaxpr is checked (one output with the
batch axis, every primitive convertible) and handed to ``jax2onnx`` through a
small interpreter that inlines nested calls and rewrites the few primitives
whose ONNX form ONNX Runtime cannot run, or that the converter lacks (3-D
convolutions, max pooling over more than two spatial axes at a time, boolean
selects, reverse scans); the result is then run on ONNX Runtime
and compared with jax before the file is written, so a conversion bug is an
error, never a wrong file.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jcore

from jnn._onnx_runtime import METADATA_KEY, _import_runtime
from jnn._typing import Params, State
from jnn._version import __version__
from jnn.layers._base import AnyLayer, _check_layer, stateful

DEFAULT_OPSET = 17  # ONNX Runtime 1.13 (2022) and newer run it; ask for a newer one with opset=
MIN_OPSET = 17
INPUT_NAME, OUTPUT_NAME = "inputs", "predictions"
# Nested calls the interpreter inlines (their inner jaxpr is in these params).
_INLINE = {
    "pjit": "jaxpr",
    "jit": "jaxpr",
    "closed_call": "call_jaxpr",
    "core_call": "call_jaxpr",
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr",
    "custom_vjp_call_jaxpr": "fun_jaxpr",
    "checkpoint": "jaxpr",
    "remat": "jaxpr",
}


def export_onnx(
    path: str | os.PathLike,
    model: AnyLayer,
    params: Params,
    features: tuple[int, ...],
    dtype: np.dtype,
    *,
    model_state: State | None,
    opset: int | None,
    labels_for: Callable[[tuple[int, ...]], list[str] | None],
    description: str,
) -> dict[str, Any]:
    """The work of :func:`jnn.export.save_onnx`, with the input spec already checked.

    ``labels_for(output_shape)`` checks the labels once the output shape is known.
    """
    from jnn.summary import summary
    from jnn.train._internal import check_model_state

    where = "export.save_onnx"
    jax2onnx, onnx = _import_converter()
    _check_layer(model, f"{where}: model: ")
    model_state = check_model_state(where, model, model_state)
    opset = _opset(where, opset, onnx)
    smodel = stateful(model)
    params, model_state = _check_spec_fits(where, smodel, params, model_state, features)

    def forward(x: jax.Array) -> jax.Array:
        return smodel.apply(params, model_state, x, train=False)[0]

    (batch,) = jax.export.symbolic_shape("batch")
    spec = jax.ShapeDtypeStruct((batch, *features), dtype)
    closed = jax.make_jaxpr(forward)(spec)
    out_shape, out_dtype = _check_output(where, closed, batch)
    _check_convertible(where, closed.jaxpr)
    labels = labels_for(out_shape)
    proto = _convert(where, jax2onnx, closed, spec, opset)
    metadata = {
        "format": "jnn.onnx",
        "jnn_version": __version__,
        "jax_version": jax.__version__,
        "converter": f"jax2onnx {_version(jax2onnx)}",
        "opset": opset,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "input": {"shape": [None, *features], "dtype": np.dtype(dtype).name},
        "output": {"shape": [None, *out_shape], "dtype": out_dtype},
        "labels": labels,
        "description": str(description),
        "summary": summary(model, (-1, *features)).to_dict(),
    }
    proto.producer_name, proto.producer_version = "jnn", __version__
    proto.doc_string = str(description)
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    data = proto.SerializeToString()
    _verify(where, data, jax.jit(forward), features, dtype)
    tmp = f"{os.fspath(path)}.tmp"
    with open(tmp, "wb") as f:  # write, sync, rename: a crash never leaves half a model
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return metadata


def _import_converter() -> tuple[Any, Any]:
    try:
        import jax2onnx
        import onnx
    except ImportError as err:
        raise ImportError(
            f"ONNX export needs jax2onnx, onnx and onnxruntime ({err}); install them with "
            "pip install 'jnn[onnx]'."
        ) from None
    _import_runtime()
    return jax2onnx, onnx


def _version(module: Any) -> str:
    from importlib.metadata import version

    return version(module.__name__)


def _opset(where: str, opset: Any, onnx: Any) -> int:
    if opset is None:
        return DEFAULT_OPSET
    newest = onnx.defs.onnx_opset_version()
    if (
        not isinstance(opset, (int, np.integer))
        or isinstance(opset, bool)
        or not MIN_OPSET <= opset <= newest
    ):
        raise ValueError(
            f"{where}: opset must be an int from {MIN_OPSET} to {newest} (the newest this onnx "
            f"{onnx.__version__} knows), got {opset!r}. ONNX Runtime runs the opsets released "
            "before it: use the default or lower for an older runtime."
        )
    return int(opset)


def _check_spec_fits(
    where: str, smodel: Any, params: Params, state: State, features: tuple[int, ...]
) -> tuple[Params, State]:
    """Params and state as numpy, after checking that ``init`` on the spec makes the same shapes."""
    shape = (-1, *features)
    try:
        _, want_params, want_state = jax.eval_shape(
            lambda k: smodel.init(k, shape), jax.random.key(0)
        )
    except (ValueError, TypeError) as err:
        raise ValueError(f"{where}: the model does not take input_spec {shape}: {err}") from None
    for what, want, got in (("params", want_params, params), ("model_state", want_state, state)):
        want_leaves = jax.tree_util.tree_leaves_with_path(want)
        got_leaves = jax.tree_util.tree_leaves_with_path(got)
        want_paths = [jax.tree_util.keystr(p) for p, _ in want_leaves]
        got_paths = [jax.tree_util.keystr(p) for p, _ in got_leaves]
        if want_paths != got_paths:
            raise ValueError(
                f"{where}: {what} do not match the model: it has {want_paths}, got {got_paths}."
            )
        for (p, w), (_, g) in zip(want_leaves, got_leaves, strict=True):
            if tuple(w.shape) != tuple(np.shape(g)):
                raise ValueError(
                    f"{where}: input_spec {shape} does not fit the {what}: "
                    f"{jax.tree_util.keystr(p)} has shape {tuple(np.shape(g))} but for this "
                    f"input the model makes {tuple(w.shape)}. Pass the input shape the model "
                    "was trained on."
                )
    return jax.tree.map(np.asarray, (params, state))


def _check_output(where: str, closed: Any, batch: Any) -> tuple[tuple[int, ...], str]:
    avals = closed.out_avals
    if len(avals) != 1:
        raise ValueError(f"{where}: the model returns {len(avals)} arrays; ONNX export needs one.")
    shape = avals[0].shape
    if not shape or str(shape[0]) != str(batch) or not all(isinstance(d, int) for d in shape[1:]):
        raise ValueError(
            f"{where}: the model's output has shape {shape}; export needs a leading batch "
            "axis (one output row per input row) and fixed other dimensions."
        )
    return tuple(shape[1:]), np.dtype(avals[0].dtype).name


def _eqns(jaxpr: Any) -> Any:
    """Every equation of ``jaxpr``, nested ones included."""
    for eqn in jaxpr.eqns:
        yield eqn
        for sub in jcore.jaxprs_in_params(eqn.params):
            yield from _eqns(sub)


def _layer_of(eqn: Any) -> str:
    """Which layer an equation comes from: the innermost CamelCase function (a constructor)."""
    frames = eqn.source_info.traceback.frames if eqn.source_info.traceback is not None else []
    fallback = None
    for frame in frames:
        path = frame.file_name.replace(os.sep, "/")
        if "/jax/" in path or "/jaxlib/" in path or path.endswith("jnn/_onnx.py"):
            continue
        head = frame.function_name.split(".<locals>")[0].split(".")[-1]
        if head[:1].isupper():
            return f"layer {head} ({os.path.basename(path)}:{frame.line_num})"
        fallback = fallback or f"{frame.function_name} ({os.path.basename(path)}:{frame.line_num})"
    return fallback or "the model"


def _check_convertible(where: str, jaxpr: Any) -> None:
    """Refuse primitives jax2onnx has no lowering for, naming the layer that uses them."""
    try:
        from jax2onnx.plugins.plugin_system import PLUGIN_REGISTRY, import_all_plugins
    except ImportError:  # another jax2onnx layout: conversion errors still name the layer
        return
    import_all_plugins()
    for eqn in _eqns(jaxpr):
        name = eqn.primitive.name
        if name in PLUGIN_REGISTRY or name in _INLINE or _rewrite(eqn) is not None:
            continue
        raise ValueError(
            f"{where}: {_layer_of(eqn)} uses the operation {name!r}, which has no ONNX "
            "mapping in the converter; this model cannot be exported to ONNX. Export it with "
            "jnn.export.save instead (StableHLO, runs wherever jax runs)."
        )


def _convert(where: str, jax2onnx: Any, closed: Any, spec: Any, opset: int) -> Any:
    import logging

    def graph(x: jax.Array) -> jax.Array:
        return _eval(closed.jaxpr, closed.consts, x)[0]

    quiet = logging.getLogger("onnx_ir")  # it warns about values without types; not ours
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        return jax2onnx.to_onnx(
            graph,
            [spec],
            model_name="jnn_model",
            opset=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
        )
    except Exception as err:  # the converter's errors have no common base class
        used = {e.primitive.name: e for e in _eqns(closed.jaxpr)}
        words = set(str(err).replace("_", " ").split())
        culprit = next((e for n, e in used.items() if n in str(err)), None) or next(
            (e for n, e in used.items() if len(n.split("_")[0]) > 3 and n.split("_")[0] in words),
            None,
        )
        who = _layer_of(culprit) if culprit is not None else "the model"
        raise ValueError(
            f"{where}: converting {who} to ONNX failed: {type(err).__name__}: {err}. "
            "Export it with jnn.export.save instead, or report this with the model."
        ) from None
    finally:
        quiet.setLevel(level)


def _verify(where: str, data: bytes, forward: Any, features: tuple, dtype: np.dtype) -> None:
    """Run the graph on ONNX Runtime and compare with jax; refuse to write a wrong file."""
    ort = _import_runtime()
    rows = 3
    rng = np.random.default_rng(0)
    if dtype.kind == "f":
        x = rng.normal(size=(rows, *features)).astype(dtype)
    else:
        x = np.zeros((rows, *features), dtype)  # ids: 0 is valid for every vocabulary
    want = np.asarray(forward(x))
    try:
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        got = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    except Exception as err:  # onnxruntime's errors have no common base class
        raise ValueError(
            f"{where}: ONNX Runtime {ort.__version__} cannot run the converted graph: {err}. "
            "No file was written; a lower opset= may help, or export with jnn.export.save."
        ) from None
    scale = max(1.0, float(np.nanmax(np.abs(want), initial=0.0)))
    if got.shape != want.shape or not np.allclose(
        got, want, rtol=1e-4, atol=1e-5 * scale, equal_nan=True
    ):
        diff = np.nanmax(np.abs(got - want)) if got.shape == want.shape else "shape"
        raise ValueError(
            f"{where}: the converted graph computes different outputs from the model "
            f"(shape {got.shape} vs {want.shape}, max |difference| {diff}); no file was "
            "written. Export with jnn.export.save, or report this with the model."
        )


# ----- the interpreter: evaluate a jaxpr, inlining calls and rewriting what ONNX cannot run


def _eval(jaxpr: Any, consts: Sequence[Any], *args: Any) -> list[Any]:
    env: dict[Any, Any] = {}

    def read(v: Any) -> Any:
        return v.val if isinstance(v, jcore.Literal) else env[v]

    for var, value in zip(jaxpr.constvars, consts, strict=True):
        env[var] = value
    for var, value in zip(jaxpr.invars, args, strict=True):
        env[var] = value
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        rewrite = _rewrite(eqn)
        if name in _INLINE and _INLINE[name] in eqn.params:
            inner = eqn.params[_INLINE[name]]
            inner_consts = getattr(inner, "consts", ())
            outs = _eval(getattr(inner, "jaxpr", inner), inner_consts, *invals)
        elif rewrite is not None:
            outs = rewrite(*invals)
            outs = outs if eqn.primitive.multiple_results else [outs]
        else:
            bound = eqn.primitive.get_bind_params(eqn.params)  # (subfuns, params) before jax 0.7
            subfuns, params = bound if isinstance(bound, tuple) else ((), bound)
            with eqn.ctx.manager:
                outs = eqn.primitive.bind(*subfuns, *invals, **params)
            outs = outs if eqn.primitive.multiple_results else [outs]
        for var, value in zip(eqn.outvars, outs, strict=True):
            env[var] = value
    return [read(v) for v in jaxpr.outvars]


def _rewrite(eqn: Any) -> Any:
    """A replacement function for equations ONNX Runtime cannot run as converted, else None."""
    p = eqn.params
    if eqn.primitive.name == "conv_general_dilated" and len(p["window_strides"]) == 3:
        return lambda lhs, rhs: _conv3d(lhs, rhs, p)
    if (
        eqn.primitive.name == "reduce_window_max"
        and _active_axes(p)
        and eqn.invars[0].aval.ndim > 3
    ):
        return lambda x: _max_pool(x, p)
    if eqn.primitive.name == "scan" and p["reverse"]:
        # The converter has no reverse scan (Bidirectional's backward pass): flip instead.
        return lambda *args: _forward_scan(eqn.primitive, p, args)
    if eqn.primitive.name == "select_n" and eqn.outvars[0].aval.dtype == np.bool_:
        # ONNX Runtime has no Where kernel for booleans (jnp.tril of a causal mask makes one).
        return lambda which, *cases: lax.select_n(which, *(c.astype(np.uint8) for c in cases)) > 0
    return None


def _forward_scan(scan: Any, p: dict, args: Sequence[Any]) -> list[Any]:
    """``scan(..., reverse=True)`` as a forward scan over flipped inputs, outputs flipped back."""
    n = p["num_consts"] + p["num_carry"]
    xs = [jnp.flip(x, 0) for x in args[n:]]
    outs = scan.bind(*args[:n], *xs, **{**p, "reverse": False})
    return [*outs[: p["num_carry"]], *(jnp.flip(y, 0) for y in outs[p["num_carry"] :])]


def _conv3d(lhs: jax.Array, rhs: jax.Array, p: dict) -> jax.Array:
    """A 3-D convolution as a sum of 2-D ones over the kernel's depth (ONNX converts 2-D)."""
    lhs_spec, rhs_spec, out_spec = p["dimension_numbers"]
    x = jnp.transpose(lhs, (lhs_spec[0], *lhs_spec[2:], lhs_spec[1]))  # N D H W C
    w = jnp.transpose(rhs, (*rhs_spec[2:], rhs_spec[1], rhs_spec[0]))  # KD KH KW I O
    (s0, *strides), ((lo, hi), *pads) = p["window_strides"], p["padding"]
    (ld0, *lhs_dil), (rd0, *rhs_dil) = p["lhs_dilation"], p["rhs_dilation"]
    x = _dilate_pad(x, 1, ld0, lo, hi)
    depth = (x.shape[1] - (w.shape[0] - 1) * rd0 - 1) // s0 + 1
    total = None
    for kd in range(w.shape[0]):
        start = kd * rd0
        xs = lax.slice_in_dim(x, start, start + (depth - 1) * s0 + 1, stride=s0, axis=1)
        y = lax.conv_general_dilated(
            xs.reshape(-1, *xs.shape[2:]),
            w[kd],
            window_strides=strides,
            padding=pads,
            lhs_dilation=lhs_dil,
            rhs_dilation=rhs_dil,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=p["feature_group_count"],
            precision=p["precision"],
            preferred_element_type=p["preferred_element_type"],
        )
        y = y.reshape(-1, depth, *y.shape[1:])
        total = y if total is None else total + y
    assert total is not None  # a kernel has depth >= 1
    order = (out_spec[0], *out_spec[2:], out_spec[1])  # where each N D H W C axis goes
    return jnp.transpose(total, tuple(int(i) for i in np.argsort(order)))


def _dilate_pad(x: jax.Array, axis: int, dilation: int, lo: int, hi: int) -> jax.Array:
    """Insert ``dilation - 1`` zeros between entries along ``axis``, then pad (or crop) it."""
    if dilation > 1:
        n = x.shape[axis]
        x = jnp.expand_dims(x, axis + 1)
        zeros = jnp.zeros_like(x)
        x = jnp.concatenate([x] + [zeros] * (dilation - 1), axis=axis + 1)
        x = x.reshape(*x.shape[:axis], n * dilation, *x.shape[axis + 2 :])
        x = lax.slice_in_dim(x, 0, (n - 1) * dilation + 1, axis=axis)
    if lo < 0 or hi < 0:
        x = lax.slice_in_dim(x, max(-lo, 0), x.shape[axis] - max(-hi, 0), axis=axis)
    widths = [(0, 0)] * x.ndim
    widths[axis] = (max(lo, 0), max(hi, 0))
    return jnp.pad(x, widths) if max(lo, 0) or max(hi, 0) else x


def _active_axes(p: dict) -> list[int]:
    """Axes a reduce_window actually pools over (window, stride, padding or dilation set)."""
    return [
        i
        for i, (w, s, pad, d) in enumerate(
            zip(
                p["window_dimensions"],
                p["window_strides"],
                p["padding"],
                p["window_dilation"],
                strict=True,
            )
        )
        if (w, s, tuple(pad), d) != (1, 1, (0, 0), 1)
    ]


def _pooling_only(p: dict, axes: list[int]) -> dict:
    """reduce_window params that pool over ``axes`` only (window 1, stride 1 elsewhere)."""
    neutral = {"window_dimensions": 1, "window_strides": 1, "window_dilation": 1, "padding": (0, 0)}
    out = dict(p)
    for key, value in neutral.items():
        out[key] = tuple(v if i in axes else value for i, v in enumerate(p[key]))
    return out


def _max_pool(x: jax.Array, p: dict) -> jax.Array:
    """Max pooling with at most two pooled axes per ONNX MaxPool (ONNX Runtime runs 1-3-D).

    The other axes are folded into one leading axis; three pooled axes are
    pooled as the last two, then the first (a max over a box is a max of maxes).
    """
    active = _active_axes(p)
    if len(active) > 2:
        return _max_pool(_max_pool(x, _pooling_only(p, active[1:])), _pooling_only(p, active[:1]))
    passive = [i for i in range(x.ndim) if i not in active]
    xt = jnp.transpose(x, (*passive, *active))
    folded = xt.reshape(-1, *xt.shape[len(passive) :])
    pick = lambda key: (1 if key != "padding" else (0, 0), *(p[key][i] for i in active))  # noqa: E731
    y = lax.reduce_window(
        folded,
        -jnp.inf,
        lax.max,
        pick("window_dimensions"),
        pick("window_strides"),
        pick("padding"),
        window_dilation=pick("window_dilation"),
    )
    y = y.reshape(*xt.shape[: len(passive)], *y.shape[1:])
    return jnp.transpose(y, tuple(int(i) for i in np.argsort((*passive, *active))))
