"""``evaluate`` and ``predict``: batched, compiled, in evaluation mode (private)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jnn import distributed as _distributed
from jnn import losses as _losses
from jnn._data import as_host_array, check_labels, check_positive_int, check_xy
from jnn._typing import ArrayLike, Params, State
from jnn.layers._base import AnyLayer, StatefulLayer, _check_layer, stateful
from jnn.train._cache import compiler_options, program_cache, small_program
from jnn.train._checks import check_model_state, check_trace, traced
from jnn.train._epoch import compiled_eval
from jnn.train._logs import host_logs, resolve_metrics
from jnn.train._precision import Policy, apply_policy, get_policy
from jnn.train._stream import evaluate_stream, predict_stream, stream_source


@program_cache
def _compiled_forward(model: StatefulLayer, fast: bool = False) -> Callable:
    return jax.jit(
        lambda params, state, x: model.apply(params, state, x, train=False)[0],
        compiler_options=compiler_options(fast),
    )


def evaluate(
    model: AnyLayer,
    params: Params,
    data: tuple[ArrayLike, ArrayLike] | Iterable | Callable[[], Iterable],
    *,
    loss: str | Callable | None = None,
    metrics: Sequence[str | Callable] = (),
    batch_size: int = 256,
    sample_weight: ArrayLike | None = None,
    model_state: State | None = None,
    steps_per_call: int = 1,
    steps: int | None = None,
    mesh: Mesh | str | None = None,
    param_sharding: str | None = None,
    policy: str | Policy | None = None,
) -> dict[str, float]:
    """Loss and metrics of ``model`` on ``data = (x, y)``, in evaluation mode.

    One compiled ``lax.scan`` over batches; the last partial batch is padded
    and masked so every example counts exactly once. ``data`` may also be a
    stream of ``(x, y)`` / ``(x, y, weights)`` batches as in :func:`fit`, run
    ``steps_per_call`` batches per compiled call, for at most ``steps``
    batches (needed for an infinite stream). ``mesh`` and ``param_sharding``
    split batches and params as in :func:`fit` (arrays only).

    Args:
      model: a :class:`jnn.Layer` or :class:`jnn.StatefulLayer`.
      params: its params.
      data: ``(x, y)`` arrays with the same number of examples, or a stream of
        ``(x, y)`` / ``(x, y, weights)`` batches as in :func:`fit`.
      loss: a loss function or its name; optional if ``metrics`` are given.
      metrics: names (``"accuracy"``, ``"auc"``, ``"f1"``...), stateful
        :class:`jnn.metrics.Metric` objects (exact over the whole data, on
        arrays, streams and meshes alike) or functions ``m(pred, y, *,
        weights)`` (averaged over examples), as in :func:`jnn.fit`.
      batch_size: examples per compiled step (arrays only).
      sample_weight: optional per-example weights of shape ``(N,)``.
      model_state: required for stateful models.
      steps_per_call: for a stream, batches per compiled call.
      steps: for a stream, the most batches to take (needed when infinite).
      mesh: a mesh or ``"auto"``: split batches over its data axis, as in :func:`fit`.
      param_sharding: ``"replicated"`` or ``"fsdp"``, as in :func:`fit`.
      policy: the precision policy to compute under (as in :func:`fit`; use the
        one the model was trained with). Outputs come in its output dtype.

    Returns:
      A dict such as ``{"loss": 0.31, "accuracy": 0.9}`` (floats; an array for an
      array-valued metric such as :func:`jnn.metrics.ConfusionMatrix`).

    Raises:
      TypeError / ValueError: for bad data, bad sizes, unknown names, or
        neither a loss nor metrics, all before compiling.

    Example:
      >>> import jax, jax.numpy as jnp, jnn
      >>> model = jnn.Dense(1)
      >>> _, params = model.init(jax.random.key(0), (-1, 2))
      >>> params = {"w": jnp.zeros((2, 1)), "b": jnp.ones(1)}
      >>> jnn.evaluate(model, params, (jnp.ones((5, 2)), jnp.zeros((5, 1))), loss="mse")
      {'loss': 1.0}
    """
    where = "evaluate"
    _check_layer(model, f"{where}: model: ")
    if loss is None and not metrics:
        raise ValueError(f"{where}: give a loss and/or metrics to compute.")
    smodel = apply_policy(stateful(model), get_policy(policy, where))
    model_state = check_model_state(where, model, model_state)
    plan = _distributed._plan(where, mesh, param_sharding)
    source = stream_source(where, data, steps, sample_weight=sample_weight, plan=plan)
    x, y, w = check_xy(where, data, weights=sample_weight) if source is None else source.first
    n = x.shape[0] if plan is None or source is not None else plan.global_rows(where, x.shape[0])
    batch_size = min(check_positive_int(where, "batch_size", batch_size), n)
    loss_fn = None if loss is None else _losses.get(loss)
    metric_fns = resolve_metrics(metrics, loss_fn)
    out_shape = check_trace(
        where,
        smodel,
        params,
        model_state,
        loss_fn or (lambda p, t, weights: jnp.zeros(())),
        metric_fns,
        x,
        y,
        w,
    )
    if loss is not None:
        loss_name = loss if isinstance(loss, str) else getattr(loss_fn, "__name__", None)
        check_labels(where, loss_name, y, out_shape)
    if source is not None:
        k = check_positive_int(where, "steps_per_call", steps_per_call)
        if plan is not None:
            params, model_state = plan.put_state((params, model_state))
        logs = evaluate_stream(
            where, source, model=smodel, loss_fn=loss_fn, metric_fns=metric_fns, params=params,
            model_state=model_state, k=k,
        )  # fmt: skip
        return host_logs(logs)
    if plan is None:
        arrays = (params, model_state, *map(jnp.asarray, (x, y, w)))
    else:
        batch_size = plan.batch_size(where, batch_size, n)
        arrays = (*plan.put_state((params, model_state)), *plan.put_data(where, (x, y, w)))
    fast = small_program(smodel, params, model_state, x, plan, passes=1)
    logs = compiled_eval(smodel, loss_fn, metric_fns, batch_size, plan, fast)(*arrays)
    return host_logs(logs)


def predict(
    model: AnyLayer,
    params: Params,
    x: ArrayLike | Iterable | Callable[[], Iterable],
    *,
    batch_size: int = 1024,
    model_state: State | None = None,
    steps: int | None = None,
    mesh: Mesh | str | None = None,
    param_sharding: str | None = None,
    policy: str | Policy | None = None,
) -> np.ndarray:
    """Outputs of ``model`` for every row of ``x``, in evaluation mode.

    ``x`` stays where it is (host memory for numpy input); batches go to the
    device one at a time, so device memory holds one batch of activations
    however large ``x`` is. The last batch is padded to ``batch_size``: one
    compilation for any number of rows.

    Args:
      model: the model.
      params: its params.
      x: inputs, ``(N, ...)``; or a stream of input batches (an iterator,
        a non-list iterable such as a ``DataLoader``, or a callable returning
        one), each an array or a tuple whose first element is the inputs.
        Batches are padded to the first one's size (one compilation) and put on
        the device one ahead. A list is taken as array data: wrap a list of
        batches with ``iter(...)``.
      batch_size: rows per device call (arrays only).
      model_state: required for stateful models.
      steps: for a stream, the most batches to take (needed when infinite).
      mesh: split each batch over a mesh's data axis, as in :func:`fit`
        (``batch_size`` is then the global rows per call). In a multi-process
        run ``x`` is this process's rows, and so is the result.
      param_sharding: ``"replicated"`` or ``"fsdp"``, as in :func:`fit`.
      policy: the precision policy to compute under (as in :func:`fit`; use the
        one the model was trained with). Outputs come in its output dtype.

    Returns:
      A numpy array with one output row per input row (a pytree of them for
      models with several outputs).

    Example:
      >>> import jax, jax.numpy as jnp, jnn
      >>> model = jnn.Dense(2)
      >>> _, params = model.init(jax.random.key(0), (-1, 3))
      >>> jnn.predict(model, params, jnp.ones((5, 3)), batch_size=2).shape
      (5, 2)
    """
    where = "predict"
    _check_layer(model, f"{where}: model: ")
    plan = _distributed._plan(where, mesh, param_sharding)
    smodel = apply_policy(stateful(model), get_policy(policy, where))
    model_state = check_model_state(where, model, model_state)
    source = stream_source(where, x, steps, arity=1, plan=plan)
    if source is not None:
        jax.eval_shape(
            _compiled_forward(smodel), params, model_state,
            jax.ShapeDtypeStruct(source.first[0].shape, source.first[0].dtype),
        )  # fmt: skip
        if plan is not None:
            params, model_state = plan.put_state((params, model_state))
        return predict_stream(
            where, source, forward=_compiled_forward(smodel), params=params,
            model_state=model_state,
        )  # fmt: skip
    x = as_host_array(where, "x", x)
    n = x.shape[0]
    batch_size = check_positive_int(where, "batch_size", batch_size)
    if params is None:
        raise TypeError(f"{where}: params is None; pass the params from model.init(key, shape).")
    put: Callable[[Any], Any] = jax.device_put
    fetch: Callable[[Any], Any] = functools.partial(jax.tree.map, np.asarray)
    if plan is None:
        batch_size = min(batch_size, n)
    else:  # batch_size is global: each process feeds its share of every call
        total = plan.global_rows(where, n)
        batch_size = plan.batch_size(where, min(batch_size, total), total)
        batch_size //= jax.process_count()
        params, model_state = plan.put_state((params, model_state))
        put, fetch = (lambda xb: plan.put_data(where, [xb])[0]), plan.to_local
    fast = small_program(smodel, params, model_state, x, plan, passes=1)
    forward = _compiled_forward(smodel, fast)
    xb = jax.ShapeDtypeStruct((batch_size, *x.shape[1:]), x.dtype)
    traced(where, smodel, params, model_state, x.shape[1:], forward, xb)

    def batch(i: int) -> Any:
        xb = x[i : i + batch_size]
        if xb.shape[0] < batch_size:
            xb = np.concatenate([xb, np.zeros((batch_size - xb.shape[0], *x.shape[1:]), x.dtype)])
        return forward(params, model_state, put(xb))

    outputs, pending = [], batch(0)
    for i in range(batch_size, n + batch_size, batch_size):
        nxt = batch(i) if i < n else None  # dispatch the next batch before waiting
        outputs.append(fetch(pending))
        pending = nxt
    rows = [
        jax.tree.map(lambda o, k=k: o[: min(batch_size, n - k)], out)
        for k, out in zip(range(0, n, batch_size), outputs, strict=True)
    ]
    result = jax.tree.map(lambda *parts: np.concatenate(parts), *rows)
    for leaf in jax.tree.leaves(result):
        if leaf.ndim == 0 or leaf.shape[0] != n:
            raise ValueError(f"{where}: the model's output has no per-example leading axis.")
    return result


__all__ = ["evaluate", "predict"]
