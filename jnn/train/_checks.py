"""Checks of a model, its params and the data against each other, before compiling (private).

Bad params (from another model, or inputs of the wrong feature size) would otherwise
fail deep inside XLA; here one batch is traced (never compiled) and a mismatch is
named by path.
"""

from __future__ import annotations

import traceback
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jnn._data import check_number
from jnn._reduce import ShapeMismatchError
from jnn._typing import State
from jnn.layers._base import AnyLayer, StatefulLayer


def check_model_state(where: str, model: AnyLayer, model_state: State | None) -> State:
    if isinstance(model, StatefulLayer):
        if model_state is None:
            raise ValueError(
                f"{where}: the model is stateful (e.g. BatchNorm); pass model_state=, the third "
                "value returned by model.init(key, input_shape)."
            )
        return model_state
    return {} if model_state is None else model_state


def traced(where, model, params, model_state, row_shape, fn, *args):
    """``jax.eval_shape(fn, params, model_state, *args)``. An error raised outside jnn's own
    code (e.g. a reshape deep in XLA) most likely means params from another model: that is
    checked against ``model.init`` and reported by path; jnn's own errors pass through."""
    try:
        return jax.eval_shape(fn, params, model_state, *args)
    except Exception as err:
        frames = traceback.extract_tb(err.__traceback__)
        if not frames or "/jnn/" not in frames[-1].filename.replace("\\", "/"):
            check_params(where, model, params, model_state, row_shape)
        raise


def check_params(where, model, params, model_state, row_shape) -> None:
    """Params (and model state) must have the tree and shapes ``model.init`` gives for rows
    of ``row_shape``: a mismatch is named by path here, not met as a reshape error in XLA."""
    if params is None:
        raise TypeError(f"{where}: params is None; pass the params from model.init(key, shape).")
    try:
        _, want, want_state = jax.eval_shape(
            lambda k: model.init(k, (-1, *row_shape)), jax.random.key(0)
        )
    except Exception:  # init cannot infer from shapes alone: the trace check still runs
        return
    for what, want_tree, got_tree in (("params", want, params), ("model_state", want_state,
                                                                  model_state)):  # fmt: skip
        errors = tree_mismatches(what, want_tree, got_tree)
        if errors:
            more = f"; ... ({len(errors) - 4} more)" if len(errors) > 4 else ""
            raise ValueError(
                f"{where}: {what} do not match this model on inputs of shape "
                f"{(-1, *row_shape)}: {'; '.join(errors[:4])}{more}. Check that the inputs "
                f"have the feature size the model was initialized with, and that the {what} "
                "come from this model's init."
            )


def tree_mismatches(what: str, want: Any, got: Any) -> list[str]:
    """Paths where ``got`` lacks, adds or reshapes a leaf of ``want``."""
    leaves = jax.tree_util.tree_leaves_with_path
    want_l = {jax.tree_util.keystr(p): a for p, a in leaves(want)}
    got_l = {jax.tree_util.keystr(p): a for p, a in leaves(got)}
    errors = [f"{what}{k} is missing" for k in want_l if k not in got_l]
    errors += [f"{what}{k} is unexpected" for k in got_l if k not in want_l]
    for k, a in want_l.items():
        if k in got_l and tuple(a.shape) != tuple(np.shape(got_l[k])):
            errors.append(f"{what}{k}: expected shape {tuple(a.shape)}, got {np.shape(got_l[k])}")
    return errors


_TRACE_CACHE: dict[Any, tuple[int, ...]] = {}


def check_trace(where, model, params, model_state, loss_fn, metric_fns, x, y, w):
    """Trace (not compile) the model and loss on one batch: shape errors surface here.

    The traced output shape is remembered per (model, loss, metrics, param and
    data shapes): re-tracing costs tens of ms per ``fit`` call, more than a
    whole epoch of a small model.
    """
    leaves, treedef = jax.tree.flatten((params, model_state))
    cache_key = (
        model,
        loss_fn,
        metric_fns,
        treedef,
        tuple((np.shape(a), jnp.result_type(a)) for a in leaves),
        (x.shape[1:], x.dtype, y.shape[1:], y.dtype),
    )
    try:
        out_shape = _TRACE_CACHE.get(cache_key)
    except TypeError:  # something unhashable: no caching
        cache_key, out_shape = None, None
    if out_shape is None:
        out_shape = _trace_shape(where, model, params, model_state, loss_fn, metric_fns, x, y)
        if cache_key is not None:
            if len(_TRACE_CACHE) >= 256:
                _TRACE_CACHE.clear()
            _TRACE_CACHE[cache_key] = out_shape
    return out_shape


def _trace_shape(where, model, params, model_state, loss_fn, metric_fns, x, y):
    """The output shape of the model on one traced batch (errors named by path)."""
    if params is None:
        raise TypeError(f"{where}: params is None; pass the params from model.init(key, shape).")
    xb, yb = (
        jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype),
        jax.ShapeDtypeStruct((1, *y.shape[1:]), y.dtype),
    )

    def probe(params, model_state, xb, yb):
        pred, _ = model.apply(params, model_state, xb, train=False)
        wb = jnp.ones((1,), jnp.float32)
        loss_fn(pred, yb, weights=wb)
        for _, fn in metric_fns:
            fn(pred, yb, weights=wb)
        return pred

    try:
        out = traced(where, model, params, model_state, x.shape[1:], probe, xb, yb)
    except ShapeMismatchError as err:  # traced on one row: name the real shapes
        raise ValueError(_label_shape_message(where, err, x.shape[0], y.shape)) from None
    except TypeError as err:
        if "weights" in str(err) and "unexpected keyword" in str(err):
            raise TypeError(
                f"{where}: the loss and metric functions must accept a keyword argument "
                "`weights` (per-example weights; fit masks the padded last batch with it): "
                f"{err}"
            ) from None
        raise
    return tuple(jax.tree.leaves(out)[0].shape)


def _label_shape_message(where: str, err: ShapeMismatchError, n: int, y_shape: tuple) -> str:
    """The loss's shape mismatch, with the data's shapes instead of the one-row probe's."""
    pred = (n, *err.pred_shape[1:])
    if pred == (*y_shape, 1):
        fix = f"Reshape the labels: y = y.reshape({n}, 1) (or y[:, None])."
    elif y_shape == (*pred, 1):
        fix = "Drop the labels' last axis: y = y.squeeze(-1)."
    elif int(np.prod(y_shape)) == int(np.prod(pred)):
        fix = f"Reshape the labels: y = y.reshape{pred}."
    else:
        fix = f"Give labels of shape {pred}, or a model whose output matches y."
    return (
        f"{where}: {err.name}: the model's predictions have shape {pred} but the labels y "
        f"have shape {tuple(y_shape)}; jnn never broadcasts them against each other (an "
        f"(N, 1) output and (N,) labels would silently give an (N, N) loss). {fix}"
    )


def class_weights(where: str, class_weight: Any, y: np.ndarray) -> np.ndarray:
    """Per-example weights ``class_weight[label]`` for host labels ``y`` (before compiling).

    Labels are class ids ``(N,)``, binary ``(N, 1)`` 0/1 values, or one-hot ``(N, C)``.
    ``"balanced"`` is scikit-learn's ``n / (classes * count)``; a dict must name every
    label present (the missing ones are named in the error).
    """
    if y.ndim == 2 and y.shape[1] > 1:
        ids = np.argmax(y, axis=1)
    elif y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1):
        flat = y.reshape(-1)
        ids = np.rint(flat).astype(np.int64)
        if not np.array_equal(ids, flat):
            raise ValueError(
                f"{where}: class_weight needs class labels (integers, 0/1 or one-hot), got "
                f"non-integer label values such as {flat[ids != flat][0]!r}."
            )
    else:
        raise ValueError(
            f"{where}: class_weight needs one class label per example ((N,), (N, 1) or "
            f"one-hot (N, C)), got labels of shape {y.shape}; use sample_weight instead."
        )
    present, counts = np.unique(ids, return_counts=True)
    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise ValueError(
                f"{where}: class_weight must be a dict {{label: weight}} or 'balanced', got "
                f"{class_weight!r}."
            )
        balanced = len(ids) / (len(present) * counts)
        table = dict(zip(present.tolist(), balanced.tolist(), strict=True))
    elif isinstance(class_weight, dict):
        table = {}
        for label, weight in class_weight.items():
            if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
                raise TypeError(f"{where}: class_weight keys must be int labels, got {label!r}.")
            table[int(label)] = check_number(where, f"class_weight[{label}]", weight, low=0.0)
        missing = [int(c) for c in present if int(c) not in table]
        if missing:
            raise ValueError(
                f"{where}: class_weight has no weight for label(s) {missing} found in y "
                f"(it has {sorted(table)}); give every label a weight, or use 'balanced'."
            )
    else:
        raise TypeError(
            f"{where}: class_weight must be a dict {{label: weight}} or 'balanced', got "
            f"{type(class_weight).__name__}."
        )
    lookup = np.vectorize(table.__getitem__, otypes=[np.float32])
    return np.asarray(lookup(ids), np.float32)


__all__ = ["check_model_state", "check_params", "check_trace", "class_weights", "traced"]
