"""sweep: every run of a search trained in lockstep, one compiled program per chunk."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jnn import losses as _losses
from jnn._data import (
    check_key,
    check_labels,
    check_positive_int,
    check_xy,
    close_match,
)
from jnn._typing import ArrayLike
from jnn.experiments._chunks import _run_bytes, _run_chunks
from jnn.experiments._folds import Bootstrap, KFold, _fold_weights
from jnn.experiments._program import program
from jnn.experiments._results import SweepResult, maximizes
from jnn.experiments._runs import (
    Run,
    Seed,
    _check_seed,
    _hparam_settings,
    _optimizer,
    _seed_list,
)
from jnn.experiments._schedule import PBT, Context, SuccessiveHalving, run_halving, run_pbt
from jnn.experiments._space import as_spaces, has_space, sample_settings
from jnn.layers._base import AnyLayer, _check_layer, stateful
from jnn.train._internal import check_trace, program_cache, resolve_metrics

# --------------------------------------------------------------------------- sweep


def sweep(
    model: AnyLayer,
    data: tuple[ArrayLike, ArrayLike],
    *,
    loss: str | Callable,
    optimizer: str | optax.GradientTransformation | Callable[..., Any] = "adam",
    hparams: Mapping[str, Sequence[float]] | Sequence[Mapping[str, float]] | None = None,
    seeds: int | Sequence[Seed] = 1,
    folds: int | KFold | Bootstrap | None = None,
    epochs: int = 1,
    batch_size: int = 32,
    metrics: Sequence[str | Callable] = (),
    validation_data: tuple[ArrayLike, ArrayLike] | None = None,
    sample_weight: ArrayLike | None = None,
    shuffle: bool = True,
    monitor: str | None = None,
    chunk_size: int | None = None,
    verbose: int = 0,
    num_samples: int | None = None,
    sampler: str = "sobol",
    schedule: SuccessiveHalving | PBT | None = None,
    key: Any = None,
) -> SweepResult:
    """Train every (hyperparameter setting, seed, fold) run at once, vmapped and compiled once.

    Args:
      model: a :class:`jnn.Layer` or :class:`jnn.StatefulLayer`; each run
        initializes it from its seed.
      data: ``(x, y)`` arrays, shared by every run.
      loss: a loss function or name, as for :func:`jnn.fit`.
      optimizer: without ``hparams``, a name or optax transformation as for
        :func:`jnn.fit`. With ``hparams``, a name (its optax constructor takes
        the hyperparameters) or a factory ``f(**hparams) -> GradientTransformation``.
      hparams: a grid ``{"learning_rate": [...], "weight_decay": [...]}``
        (every combination), or a list of settings (dicts). Numeric values only.
        With ``num_samples``, a search space: names map to :class:`LogUniform`,
        :class:`Uniform`, :class:`IntUniform`, :class:`Choice` (a list is a
        Choice) or a fixed number.
      seeds: a number of seeds (``0..seeds-1``) or a list of seeds, each an int
        or an ``(init_seed, shuffle_seed)`` pair.
      folds: ``k`` or :class:`KFold` (k-fold cross-validation, validated on the
        held-out fold) or :class:`Bootstrap` (validated out of bag); None trains
        on all the data.
      epochs, batch_size, metrics, shuffle, sample_weight: as for :func:`jnn.fit`.
      validation_data: ``(x_val, y_val)`` for every run (not with ``folds``).
      monitor: the metric that ranks runs (default ``"val_loss"`` when there is
        validation, else ``"loss"``; accuracies rank by max).
      chunk_size: runs per compiled call; default from the memory one run needs
        and the memory available. Rounded up to a multiple of the device count.
      verbose: 1 prints one line per chunk.
      num_samples: how many settings to draw from the ``hparams`` space.
      sampler: ``"sobol"`` (scrambled Sobol points, scipy: spread evenly) or
        ``"random"`` (independent draws); both seeded from ``key``.
      schedule: :class:`SuccessiveHalving` (stop the worse settings at rungs)
        or :class:`PBT` (population-based training); None trains every run to
        the end.
      key: a PRNG key (default ``jax.random.key(0)``) that seeds the sampled
        settings and PBT's choices; the runs' own seeds come from ``seeds``.

    Returns:
      A :class:`SweepResult`. Runs are ordered setting-major, then seed, then fold.

    Raises:
      TypeError / ValueError: for bad data, sizes, seeds, hparams or names,
        before compiling.

    Example:
      >>> import numpy as np, optax, jnn
      >>> x = np.random.default_rng(0).normal(size=(64, 3)).astype("float32")
      >>> y = (x.sum(1, keepdims=True) > 0).astype("float32")
      >>> model = jnn.serial(jnn.Dense(8, activation="relu"), jnn.Dense(1, activation="sigmoid"))
      >>> res = jnn.experiments.sweep(
      ...     model, (x, y), loss="bce", optimizer=lambda learning_rate: optax.adam(learning_rate),
      ...     hparams={"learning_rate": [1e-3, 1e-2]}, seeds=3, folds=2, epochs=2, batch_size=16)
      >>> len(res.runs), res.history["val_loss"].shape, len(res.table)
      (12, (12, 2), 12)
      >>> len(res.summary())
      2
      >>> res
      SweepResult(runs=12, epochs=2, monitor='val_loss', diverged=0, history=['loss', 'val_loss'])
    """
    where = "sweep"
    _check_layer(model, f"{where}: model: ")
    smodel = stateful(model)
    x, y, w = check_xy(where, data, weights=sample_weight)
    n = x.shape[0]
    epochs = check_positive_int(where, "epochs", epochs)
    batch_size = min(check_positive_int(where, "batch_size", batch_size), n)
    key = jax.random.key(0) if key is None else check_key(where, key)
    if num_samples is None and has_space(hparams):
        raise ValueError(
            f"{where}: hparams holds a search space; pass num_samples=n to draw n settings "
            "from it (a grid takes lists only)."
        )
    if num_samples is None:
        settings = _hparam_settings(hparams)
    else:
        seed = int(np.asarray(jax.random.key_data(jax.random.fold_in(key, 0))).view(np.uint32)[-1])
        settings = sample_settings(hparams, num_samples, sampler, seed)
    factory, tx = _optimizer(optimizer, settings)
    if schedule is not None and not isinstance(schedule, (SuccessiveHalving, PBT)):
        raise TypeError(
            f"{where}: schedule must be SuccessiveHalving(...) or PBT(...), got {schedule!r}."
        )
    seed_list = _seed_list(seeds)
    fold_weights = _fold_weights(folds, n)
    if fold_weights is not None and validation_data is not None:
        raise ValueError(
            f"{where}: folds define each run's validation data; drop validation_data, or folds."
        )
    loss_fn = _losses.get(loss)
    metric_fns = resolve_metrics(metrics, loss_fn)
    in_shape = (-1, *x.shape[1:])
    out_shape = _traced_out_shape(
        smodel, loss_fn, metric_fns, (x.shape, x.dtype), (y.shape[1:], y.dtype)
    )
    check_labels(
        where, loss if isinstance(loss, str) else getattr(loss_fn, "__name__", None), y, out_shape
    )
    validate = fold_weights is not None or validation_data is not None
    keys = ["loss", *(name for name, _ in metric_fns)]
    keys += [f"val_{k}" for k in keys] if validate else []
    monitor = monitor or getattr(schedule, "monitor", None) or ("val_loss" if validate else "loss")
    sched_monitor = getattr(schedule, "monitor", None) or monitor
    for name in {monitor, sched_monitor}:
        if name not in keys:
            raise ValueError(
                f"{where}: monitor {name!r} is not recorded.{close_match(name, keys)} "
                f"Recorded: {keys}; add the metric to metrics=, or pass validation data."
            )
    if isinstance(schedule, SuccessiveHalving):
        schedule.rungs(epochs)  # min_epochs <= epochs
    if isinstance(schedule, PBT):
        _check_pbt(schedule, factory, len(settings), epochs)

    # The run table: setting-major, then seed, then fold.
    num_folds = 1 if fold_weights is None else fold_weights[0].shape[0]
    runs = tuple(
        Run(i, seed, dict(setting), None if fold_weights is None else fold)
        for i, (setting, seed, fold) in enumerate(
            itertools.product(settings, seed_list, range(num_folds))
        )
    )
    per_run = {
        "init_seed": np.array([_check_seed(r.seed)[0] for r in runs], np.int32),
        "shuffle_seed": np.array([_check_seed(r.seed)[1] for r in runs], np.int32),
        "fold": np.array([r.fold or 0 for r in runs], np.int32),
        "hparams": {
            k: np.array(
                [r.hparams[k] for r in runs], np.float32 if isinstance(v, float) else np.int32
            )
            for k, v in settings[0].items()
        },
    }
    if fold_weights is None:
        train_w, val_w = w[None], np.zeros((1, 0), np.float32)
    else:
        train_w, val_w = fold_weights[0] * w[None], fold_weights[1]
    val = None
    if validation_data is not None:
        val = tuple(jnp.asarray(a) for a in check_xy(f"{where}: validation_data", validation_data))
    shared = (jnp.asarray(x), jnp.asarray(y), jnp.asarray(train_w), jnp.asarray(val_w), val)

    compiled = functools.partial(
        _compiled_sweep, smodel, loss_fn, tx, factory, metric_fns, batch_size, shuffle, validate,
        fold_weights is not None,
    )  # fmt: skip
    run_bytes = lambda: _run_bytes(  # noqa: E731
        smodel, tx, loss_fn, (x.shape[1:], x.dtype), (y.shape[1:], y.dtype), n,
        batch_size, epochs * len(keys),
    )  # fmt: skip
    extra = dict(
        monitor=monitor, fold_weights=fold_weights, hparam_factory=factory,
        model=model, data=(x, y, w), input_shape=in_shape,
    )  # fmt: skip
    if schedule is None:
        train = compiled(epochs, in_shape)
        return _run_chunks(
            train, runs, per_run, shared, keys, chunk_size, verbose, run_bytes, SweepResult, extra
        )
    prog = program(
        smodel, loss_fn, tx, factory, metric_fns, batch_size, shuffle, validate,
        fold_weights is not None, in_shape,
    )  # fmt: skip
    spaces = as_spaces(hparams) if isinstance(hparams, Mapping) else {}
    ctx = Context(
        prog, lambda e: compiled(e, in_shape), runs, per_run, shared, keys, sched_monitor,
        maximizes(sched_monitor, schedule.mode), len(settings), epochs, chunk_size, run_bytes,
        verbose, SweepResult, extra, jax.random.fold_in(key, 1), tuple(spaces.items()),
    )  # fmt: skip
    if isinstance(schedule, SuccessiveHalving):
        return run_halving(schedule, ctx)
    return run_pbt(schedule, ctx)


@program_cache
def _traced_out_shape(smodel, loss_fn, metric_fns, x_spec, y_spec) -> tuple:
    """``fit``'s eager shape check (trace, never compile), cached per model and shapes."""
    x = jax.ShapeDtypeStruct(*x_spec)
    y = jax.ShapeDtypeStruct((x_spec[0][0], *y_spec[0]), y_spec[1])
    in_shape = (-1, *x_spec[0][1:])
    _, params, model_state = jax.eval_shape(lambda k: smodel.init(k, in_shape), jax.random.key(0))
    return check_trace("sweep", smodel, params, model_state, loss_fn, metric_fns, x, y, None)


@program_cache
def _compiled_sweep(
    smodel,
    loss_fn,
    tx,
    factory,
    metric_fns,
    batch_size,
    shuffle,
    validate,
    folded,
    epochs,
    in_shape,
) -> Callable:
    """``train(init_seed, shuffle_seed, fold, hparams, shared)``: a chunk of runs, jitted.

    Each run initializes from its seed and scans ``fit``'s own epoch function
    over the epochs; ``jax.vmap`` runs them in lockstep.
    """
    prog = program(
        smodel, loss_fn, tx, factory, metric_fns, batch_size, shuffle, validate, folded, in_shape
    )

    def one_run(init_seed, shuffle_seed, fold, hp, shared):
        return prog.train(prog.init(init_seed, shuffle_seed, hp), fold, shared, epochs)

    return jax.jit(jax.vmap(one_run, in_axes=(0, 0, 0, 0, None)))


def _check_pbt(schedule: PBT, factory: Any, num_settings: int, epochs: int) -> None:
    """PBT's needs, before compiling: injected hyperparameters, a population, an exploit step."""
    if factory is None:
        raise ValueError(
            "sweep: PBT explores optimizer hyperparameters; give hparams (a space and "
            "num_samples, or a grid) and an optimizer factory or name."
        )
    if num_settings < 2:
        raise ValueError(
            f"sweep: PBT needs a population of 2 or more settings, got {num_settings}."
        )
    if schedule.interval >= epochs:
        raise ValueError(
            f"sweep: PBT interval={schedule.interval} must be below epochs={epochs}, or no "
            "exploit step ever happens."
        )
