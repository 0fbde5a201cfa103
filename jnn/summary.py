"""A model summary: layers, output shapes and parameter counts, as a table.

:func:`summary` walks a model without running it: shapes come from each
layer's ``init`` under :func:`jax.eval_shape` (no arrays are allocated), and
the children of ``serial`` / ``parallel`` / ``residual`` are named like the
keys of the model's params dict (``dense_0``, ``relu_0``, ...). The same rows
are stored in exported models' metadata and printed by ``jnn info``.

Wrappers show their children too: ``Bidirectional``'s ``forward`` and
``backward`` layers (each fed the wrapper's input), and the layer inside
``remat`` or ``repeat``, listed under its kind. Those two keep their child's
params as their own (no extra key), so the child's row repeats the
wrapper's count; under ``repeat(layer, n)`` the child's param shapes carry
the leading ``n`` axis of the stacked params and its counts include all
``n`` copies.

``jnn.summary`` is this module, and calling it calls :func:`summary`:
``jnn.summary(model, (-1, 30))`` and ``jnn.summary.Summary`` both work.
"""

from __future__ import annotations

import math
import sys
import types
from typing import Any, NamedTuple

import jax

from jnn._typing import PRNGKey, Shape
from jnn.layers._base import AnyLayer, _check_layer, layer_kind, spec_of


class SummaryRow(NamedTuple):
    """One layer of a :class:`Summary`.

    Attributes:
      name: the layer's key in its parent's params dict (the root is its kind).
      depth: nesting depth (0 for the model itself).
      output_shape: inferred output shape (``-1`` for the batch dimension); a
        tuple of shapes for layers with several outputs.
      params: number of trainable parameters, children included.
      state: number of non-trainable state entries (BatchNorm statistics).
      param_shapes: ``{"w": (10, 10), "b": (10,)}`` for the layer's own leaves.

    Example:
      >>> import jnn
      >>> s = jnn.summary(jnn.serial(jnn.Dense(4), jnn.BatchNorm()), (-1, 3))
      >>> s.rows[1]
      SummaryRow(name='dense_0', depth=1, output_shape=(-1, 4), params=16, state=0,
                 param_shapes={'b': (4,), 'w': (3, 4)})
      >>> s.rows[2].name, s.rows[2].params, s.rows[2].state
      ('batch_norm_0', 8, 8)
    """

    name: str
    depth: int
    output_shape: Any
    params: int
    state: int
    param_shapes: dict[str, tuple[int, ...]]


class Summary(NamedTuple):
    """Rows of a model summary; ``str(summary)`` is a table.

    Attributes:
      rows: one :class:`SummaryRow` per layer, depth first.
      input_shape: the input shape the model was walked with.

    Example:
      >>> import jnn
      >>> s = jnn.summary(jnn.serial(jnn.Dense(4), jnn.BatchNorm()), (-1, 3))
      >>> s.total_params, s.total_state, len(s.rows)
      (24, 8, 3)
      >>> print(s)
      Layer           Output shape  Params  Param shapes
      serial          (-1, 4)           24
        dense_0       (-1, 4)           16  b (4,), w (3, 4)
        batch_norm_0  (-1, 4)            8  bias (4,), scale (4,)
      Total params: 24
      Non-trainable state: 8
      >>> s.to_dict()["rows"][1]["param_shapes"]
      {'b': [4], 'w': [3, 4]}
    """

    rows: tuple[SummaryRow, ...]
    input_shape: Any

    @property
    def total_params(self) -> int:
        """Trainable parameters of the whole model."""
        return self.rows[0].params

    @property
    def total_state(self) -> int:
        """Non-trainable state entries of the whole model."""
        return self.rows[0].state

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (lists instead of tuples), as stored in exports.

        Returns:
          ``{"input_shape", "total_params", "total_state", "rows"}``, with one
          dict per row holding the fields of :class:`SummaryRow`; shapes are
          lists. :func:`format_table` prints it.
        """
        return {
            "input_shape": _jsonable(self.input_shape),
            "total_params": self.total_params,
            "total_state": self.total_state,
            "rows": [
                {
                    "name": r.name,
                    "depth": r.depth,
                    "output_shape": _jsonable(r.output_shape),
                    "params": r.params,
                    "state": r.state,
                    "param_shapes": {k: list(v) for k, v in r.param_shapes.items()},
                }
                for r in self.rows
            ],
        }

    def __str__(self) -> str:
        return format_table(self.to_dict())


def summary(model: AnyLayer, input_shape: Shape, *, key: PRNGKey | None = None) -> Summary:
    """Layers, output shapes and parameter counts of ``model``, without running it.

    Args:
      model: a :class:`jnn.Layer` or :class:`jnn.StatefulLayer`.
      input_shape: as given to ``model.init``, e.g. ``(-1, 30)``.
      key: PRNG key for ``init`` (only shapes are used; defaults to key 0).

    Returns:
      A :class:`Summary`; ``print(summary)`` shows it as a table.

    Raises:
      TypeError: if ``model`` is not a layer.
      ValueError: from the model's ``init`` if ``input_shape`` does not fit it.

    Example:
      >>> import jnn
      >>> model = jnn.serial(jnn.Dense(10, activation="relu"), jnn.Dense(1))
      >>> s = jnn.summary(model, (-1, 30))
      >>> s.total_params
      321
      >>> print(s)
      Layer      Output shape  Params  Param shapes
      serial     (-1, 1)          321
        dense_0  (-1, 10)         310  b (10,), w (30, 10)
        dense_1  (-1, 1)           11  b (1,), w (10, 1)
      Total params: 321
    """
    _check_layer(model, "summary: model: ")
    key = jax.random.key(0) if key is None else key
    rows: list[SummaryRow] = []
    _walk(model, layer_kind(model), layer_kind(model), key, input_shape, 0, rows)
    return Summary(tuple(rows), _as_tuple(input_shape))


def format_table(summary_dict: dict[str, Any]) -> str:
    """The table of a :meth:`Summary.to_dict` (also works on exported metadata).

    ``str(summary)`` is ``format_table(summary.to_dict())``; ``jnn info`` prints
    an exported model's ``metadata["summary"]`` with it.

    Args:
      summary_dict: a dict of the form :meth:`Summary.to_dict` returns (lists
        or tuples for shapes).

    Returns:
      The table as text: one line per layer, indented by depth, then the
      total params (and the non-trainable state, if any).

    Example:
      >>> import jnn
      >>> from jnn.summary import format_table
      >>> d = jnn.summary(jnn.Dense(2), (-1, 3)).to_dict()
      >>> print(format_table(d))
      Layer  Output shape  Params  Param shapes
      dense  (-1, 2)            8  b (2,), w (3, 2)
      Total params: 8
    """
    from jnn._predictor import format_summary  # shared with jax-free ONNX serving

    return format_summary(summary_dict)


#: Wrappers whose children all take the wrapper's own input (serial's children are chained).
_SAME_INPUT = frozenset({"bidirectional", "remat", "repeat"})
#: Wrappers whose params are their child's, unnested: their own row lists no leaves.
_TRANSPARENT = frozenset({"remat", "repeat"})


def _walk(layer, name, kind, key, input_shape, depth, rows, stack=()) -> Any:
    """Append the rows of ``layer`` and its children; ``stack``: leading axes of repeats above."""
    box: dict[str, Any] = {}

    def init(k):
        out = layer.init(k, input_shape)
        box["shape"] = out[0]
        return out[1:]

    abstract = jax.eval_shape(init, key)
    params, state = abstract[0], (abstract[1] if len(abstract) > 1 else {})
    own = {k: (*stack, *v.shape) for k, v in params.items() if not isinstance(v, dict)}
    own = own if isinstance(params, dict) and kind not in _TRANSPARENT else {}
    copies = math.prod(stack)
    rows.append(
        SummaryRow(name, depth, box["shape"], copies * _count(params), copies * _count(state), own)
    )
    children = _children(layer)
    if children:
        keys = jax.random.split(key, len(children))
        if kind == "parallel":
            shapes = list(input_shape)
        spec = spec_of(layer)
        repeats = dict(spec.config)["n"] if kind == "repeat" and spec is not None else None
        inner = stack if repeats is None else (*stack, repeats)
        for i, (child_name, child) in enumerate(children):
            s = shapes[i] if kind == "parallel" else input_shape
            out = _walk(child, child_name, layer_kind(child), keys[i], s, depth + 1, rows, inner)
            if kind != "parallel" and kind not in _SAME_INPUT:
                input_shape = out
    return box["shape"]


def _children(layer: Any) -> list[tuple[str, Any]] | None:
    """``[(name, child), ...]`` of a described combinator; None for a leaf."""
    spec = spec_of(layer)
    return list(spec.children) if spec is not None and spec.children else None


def _count(tree: Any) -> int:
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def _as_tuple(shape: Any) -> Any:
    if isinstance(shape, (list, tuple)):
        return tuple(_as_tuple(s) for s in shape)
    return shape


def _jsonable(shape: Any) -> Any:
    if isinstance(shape, (list, tuple)):
        return [_jsonable(s) for s in shape]
    return shape


__all__ = ["Summary", "SummaryRow", "format_table", "summary"]


class _CallableModule(types.ModuleType):
    """This module, callable: ``jnn.summary(model, shape)`` is :func:`summary`."""

    def __call__(self, model: AnyLayer, input_shape: Shape, *, key: PRNGKey | None = None):
        return summary(model, input_shape, key=key)


sys.modules[__name__].__class__ = _CallableModule
