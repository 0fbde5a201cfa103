"""``fit``: the training loop around the compiled epochs (private)."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from jnn import checkpoint as _checkpoint
from jnn import distributed as _distributed
from jnn import losses as _losses
from jnn._data import check_key, check_labels, check_positive_int, check_xy, close_match
from jnn._typing import ArrayLike, Params, PRNGKey, State
from jnn.layers._base import AnyLayer, _check_layer, stateful
from jnn.train._checks import check_model_state, check_trace, class_weights
from jnn.train._control import (
    Callback,
    EarlyStopping,
    FitResult,
    Progress,
    SigintFlag,
    Stopper,
    check_options,
)
from jnn.train._epoch import ArrayEpoch, EpochSpec, compiled_eval, num_batches
from jnn.train._logs import host_logs, lr_reader, resolve_metrics, step_logs
from jnn.train._optim import build_tx, check_extras, eval_params_fn, trainable_labels
from jnn.train._precision import Policy, apply_policy, cast_floating, get_policy
from jnn.train._state import TrainState, fresh_state, get_optimizer
from jnn.train._step import NanGuard, is_deleted
from jnn.train._stream import StreamEpoch, Validated, evaluate_stream, stream_source


def fit(
    model: AnyLayer,
    params: Params,
    data: tuple[ArrayLike, ArrayLike] | Iterable | Callable[[], Iterable],
    *,
    loss: str | Callable,
    optimizer: optax.GradientTransformation | str = "adam",
    learning_rate: float | None = None,
    epochs: int = 1,
    batch_size: int = 32,
    key: PRNGKey,
    metrics: Sequence[str | Callable] = (),
    validation_data: tuple[ArrayLike, ArrayLike] | None = None,
    sample_weight: ArrayLike | None = None,
    class_weight: dict[int, float] | str | None = None,
    shuffle: bool = True,
    early_stopping: EarlyStopping | None = None,
    callbacks: Sequence[Callback] = (),
    model_state: State | None = None,
    opt_state: optax.OptState | None = None,
    verbose: int = 1,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
    checkpoint_keep: int | None = 3,
    resume: bool = False,
    on_nan: str | None = "raise",
    steps_per_call: int | None = None,
    steps_per_epoch: int | None = None,
    validation_steps: int | None = None,
    mesh: Mesh | str | None = None,
    param_sharding: str | None = None,
    log_every: int | None = None,
    policy: str | Policy | None = None,
    accumulate_steps: int = 1,
    ema: float | None = None,
    ema_eval: bool = False,
    trainable: Callable[[str], bool] | Any = None,
) -> FitResult:
    """Train ``model`` on ``data = (x, y)``; each epoch is one compiled call.

    Ctrl-C (SIGINT, in the main thread) stops ``fit`` after the compiled call
    running (a second Ctrl-C aborts at once), with a warning. After a whole
    epoch it returns, and saves, that epoch's state; in the middle of a long
    epoch (cut into calls, see ``steps_per_call``) it returns the state reached,
    and leaves the checkpoints at the last completed epoch.

    Args:
      model: a :class:`jnn.Layer` or :class:`jnn.StatefulLayer`.
      params: the model's params (from ``model.init``); not modified.
      data: ``(x, y)`` arrays with the same number of examples; or a stream of
        batches that need not fit on the device: an iterable or iterator of
        ``(x, y)`` / ``(x, y, weights)`` batches (numpy arrays, or anything
        ``np.asarray`` takes, e.g. CPU torch tensors), or a callable returning a
        fresh iterator per epoch. A re-iterable (a list, a ``grain`` loader or
        dataset, a torch ``DataLoader``) is iterated afresh each epoch; an
        iterator is consumed across epochs. Stream batches are used in the
        order given (``shuffle`` is the loader's business), padded to the first
        batch's size (which replaces ``batch_size``; a later, smaller batch is
        masked, never dropped) and fed ``steps_per_call`` at a time while the
        next group is put on the device. See the README's "Streaming data".
      loss: a loss function ``loss(pred, y, *, weights)`` or its name
        (``"mse"``, ``"bce"``, ``"bce_with_logits"``, ``"cross_entropy"``, ...).
      optimizer: an ``optax.GradientTransformation`` or a name (``"sgd"``,
        ``"adam"``, ``"adamw"``, ``"rmsprop"``, ...).
      learning_rate: for an optimizer given by name (default: Keras's).
      epochs: passes over the data.
      batch_size: examples per step (at most the number of examples). The last
        batch of an epoch may be partial: it is padded and masked, never dropped.
      key: PRNG key for shuffling and dropout (``jax.random.key(seed)``).
      metrics: names (``"accuracy"``, ``"auc"``, ``"f1"``...), stateful
        :class:`jnn.metrics.Metric` objects (exact over the whole epoch), or
        functions ``m(pred, y, *, weights)``, which are averaged over examples
        (see :mod:`jnn.metrics`). Thresholds and AUC follow the loss: accuracy
        thresholds at 0.5, or at 0 for a logits loss. With a learning-rate
        schedule (``learning_rate=`` a schedule, or an optimizer from
        ``optax.inject_hyperparams``) the history also records ``"lr"``, the
        rate of each epoch's last step.
      validation_data: ``(x_val, y_val)`` evaluated at the end of every epoch,
        inside the same compiled call, reported as ``"val_<name>"``.
      sample_weight: optional per-example weights of shape ``(N,)``.
      class_weight: ``{label: weight}`` or ``"balanced"`` (``n / (classes *
        count)``, as scikit-learn): each example's weight is multiplied by its
        class's (with ``sample_weight``, the product). Labels are class ids,
        0/1 values or one-hot rows; a label of ``y`` missing from the dict is an
        error naming it. Arrays only (for a stream, put the weights in the
        batches).
      shuffle: reshuffle the examples every epoch (on device, from ``key``).
      early_stopping: an :class:`EarlyStopping` configuration.
      callbacks: functions ``cb(epoch, logs, state)``; one returning True stops.
        :mod:`jnn.callbacks` has :class:`~jnn.callbacks.CSVLogger` and
        :class:`~jnn.callbacks.TensorBoard`.
      model_state: required for stateful models (the third output of ``init``).
      opt_state: an optimizer state to continue from (default: fresh).
      verbose: 0 silent, 1 a progress bar over epochs, 2 one line per epoch.
      checkpoint_dir: save the full training state (params, optimizer and model
        state, step, PRNG key, history) there with :mod:`jnn.checkpoint`, atomically
        (in a multi-process run: per-process shards and a commit record, on a
        directory every process sees).
      checkpoint_every: save every this many epochs (and always after the last
        epoch, on early stopping, on Ctrl-C and on ``on_nan="stop"``).
      checkpoint_keep: how many checkpoints to keep (None: all).
      resume: continue from the newest good checkpoint in ``checkpoint_dir``
        (start fresh if there is none). The checkpoint's state replaces
        ``params``/``opt_state``/``model_state``/``key``, and its epochs count
        towards ``epochs``: an interrupted run resumed with the same arguments
        ends bit-identical (same device) to an uninterrupted one. Early
        stopping's patience counter restarts on resume.
      on_nan: what to do when a step's loss or gradients are not finite (checked
        inside the compiled epoch): ``"raise"`` a :class:`NonFiniteError` naming
        the epoch and step, carrying ``.result`` with the state from just before
        that step; ``"stop"`` returns that state with a warning; ``"skip_batch"``
        skips the bad steps' updates (a warning counts them) and goes on; None
        turns the check off. That mid-epoch state is returned, not saved: the
        checkpoints on disk stay those of completed epochs.
      steps_per_call: steps per compiled call. For arrays, None (default) runs an
        epoch as one call unless it takes over ~2 s (estimated from the step's
        flops, then measured), when it is cut into calls of ~0.5 s so progress
        shows and Ctrl-C lands within a second; the result is the same, bit for
        bit (calls hold whole chunks of gathered batches: up to 128 steps for
        small rows, so a smaller value is rounded up). For a stream, batches
        stacked and run as one compiled ``lax.scan`` call (default 1; e.g. 64); a
        short last group runs its real steps only (one more compilation).
      steps_per_epoch: for a stream, batches per epoch (needed for an
        infinite one; an iterator then continues where the last epoch ended).
      validation_steps: batches of a ``validation_data`` stream per epoch.
      mesh: a ``jax.sharding.Mesh`` (e.g. :func:`jnn.distributed.make_mesh`) or
        ``"auto"`` (every device): batches are split along its ``"data"`` axis
        (or its only axis), so ``batch_size`` is the global batch and must be a
        multiple of that axis's size. In a multi-process run ``data`` is this
        process's own shard (see :mod:`jnn.distributed`); a stream yields this
        process's rows of every global batch (every process the same number of
        batches, of the same size).
      param_sharding: with a mesh, ``"replicated"`` (default) or ``"fsdp"``:
        params and optimizer state split along the data axis (each leaf along
        its largest divisible dimension), for models too big to replicate.
      policy: the precision policy: ``"float32"`` (default), ``"mixed_bfloat16"``,
        ``"mixed_float16"`` or a :class:`jnn.Policy`. Params and optimizer state
        stay in ``param_dtype`` (float32); inputs, params and activations are cast
        to the compute dtype inside the step; losses and metrics are computed in
        float32; normalization statistics in float32. ``"mixed_float16"`` trains
        with a dynamic loss scale (kept in the optimizer state): a step whose
        float16 gradients overflow is skipped and the scale halved, which the NaN
        guard does not count as divergence. Evaluate, predict and export the
        result with the same policy.
      accumulate_steps: average the gradients of this many batches before one
        optimizer update (``optax.MultiSteps``): like a batch ``accumulate_steps``
        times larger, in the memory of one batch. ``state.step`` counts batches.
      ema: keep an exponential moving average of the params with this decay in
        (0, 1) (e.g. 0.999), updated on device after each update and held in the
        optimizer state (so checkpoints and resume carry it); see
        ``result.ema_params``.
      ema_eval: evaluate ``validation_data`` with the EMA params (needs ``ema``).
      trainable: which params train: a predicate ``f(path) -> bool`` on each
        param leaf's path (its keys joined by ``/``, e.g. ``"0/w"``), or a pytree
        of bools shaped like ``params`` (or a prefix of it: ``{"0": False}``
        freezes layer 0). Frozen params come back bit-identical and get no
        optimizer state. Default: all.

      log_every: record the training loss every this many steps (the weighted
        mean of each window of ``log_every`` steps) and the learning rate of the
        window's last step, collected inside the compiled epoch (an array in the
        scan's carry, no host callback per step) and handed to callbacks once per
        epoch as ``logs["steps"]`` (``{"step", "loss", "lr"}`` arrays, ``step``
        the global index of each window's last step): :class:`jnn.callbacks.
        TensorBoard` writes them. Not in the history. For a stream, its length
        must be known (``len(data)`` or ``steps_per_epoch``).

    Returns:
      A :class:`FitResult` with ``.params``, ``.opt_state``, ``.model_state``,
      ``.state``, ``.history`` and ``.ema_params`` (None without ``ema``). The
      same key and data give bit-identical params on the same device (and the
      same params, to float tolerance, on any mesh). With a mesh the arrays are global; see
      :func:`jnn.distributed.gather`.

    Raises:
      TypeError / ValueError: for bad data (non-numeric, empty, mismatched
        lengths, NaN/Inf, wrong feature size, labels out of range), bad sizes
        or unknown names, all before compiling.
      NonFiniteError: with ``on_nan="raise"``, when training diverges.
      jnn.checkpoint.CheckpointError: when resuming from a checkpoint that does
        not match this model/optimizer.

    Example:
      >>> import jax, numpy as np, jnn
      >>> x = np.random.default_rng(0).normal(size=(64, 3)).astype("float32")
      >>> y = (x.sum(1, keepdims=True) > 0).astype("float32")
      >>> model = jnn.serial(jnn.Dense(8, activation="relu"), jnn.Dense(1, activation="sigmoid"))
      >>> _, params = model.init(jax.random.key(0), (-1, 3))
      >>> res = jnn.fit(model, params, (x, y), loss="bce", epochs=3, batch_size=16,
      ...               key=jax.random.key(1), metrics=["accuracy"], verbose=0)
      >>> sorted(res.history), len(res.history["loss"])
      (['accuracy', 'loss'], 3)
      >>> batches = lambda: ((x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16))
      >>> res = jnn.fit(model, params, batches, loss="bce", epochs=2, key=jax.random.key(1),
      ...               steps_per_call=4, verbose=0)  # a stream: 4 batches per compiled call
      >>> int(res.state.step)
      8
    """
    where = "fit"
    _check_layer(model, f"{where}: model: ")
    precision = get_policy(policy, where)
    smodel = apply_policy(stateful(model), precision)
    model_state = check_model_state(where, model, model_state)
    accumulate_steps, ema = check_extras(where, accumulate_steps, ema, ema_eval)
    labels = trainable_labels(where, trainable, params)
    plan = _distributed._plan(where, mesh, param_sharding)
    source = stream_source(
        where, data, steps_per_epoch, sample_weight=sample_weight, plan=plan,
        steps_name="steps_per_epoch",
    )  # fmt: skip
    x, y, w = check_xy(where, data, weights=sample_weight) if source is None else source.first
    if class_weight is not None:
        if source is not None:
            raise ValueError(
                f"{where}: class_weight is for array data; for a stream, multiply each "
                "batch's weights by its classes' weights in the loader ((x, y, weights) batches)."
            )
        w = w * class_weights(where, class_weight, y)
    epochs = check_positive_int(where, "epochs", epochs)
    n = x.shape[0] if plan is None or source is not None else plan.global_rows(where, x.shape[0])
    batch_size = min(check_positive_int(where, "batch_size", batch_size), n)
    if source is not None:  # a stream's batches set the compiled batch size
        batch_size = source.spec.batch_size
    elif plan is not None:
        batch_size = plan.batch_size(where, batch_size, n)
    if steps_per_call is not None:
        steps_per_call = check_positive_int(where, "steps_per_call", steps_per_call)
    key = check_key(where, key)
    loss_fn = _losses.get(loss)
    tx = build_tx(get_optimizer(optimizer, learning_rate), precision, accumulate_steps, ema, labels)
    metric_fns = resolve_metrics(metrics, loss_fn)
    checkpoint_every = check_positive_int(where, "checkpoint_every", checkpoint_every)
    guard = NanGuard.check_mode(where, on_nan)
    verbose = check_options(where, early_stopping, callbacks, verbose, shuffle)
    if checkpoint_dir is not None:  # a file, or a directory under a checkpoint's name: now
        _checkpoint.check_directory(checkpoint_dir, where=where)  # not after an epoch
    if resume and checkpoint_dir is None:
        raise ValueError(f"{where}: resume=True needs checkpoint_dir= to resume from.")
    val: tuple[Any, ...] | None = None
    val_source = stream_source(
        f"{where}: validation_data", validation_data, validation_steps, plan=plan,
        steps_name="validation_steps",
    )  # fmt: skip
    if validation_data is not None and val_source is None:
        val = check_xy(f"{where}: validation_data", validation_data)

    out_shape = check_trace(where, smodel, params, model_state, loss_fn, metric_fns, x, y, w)
    loss_name = loss if isinstance(loss, str) else getattr(loss_fn, "__name__", None)
    check_labels(where, loss_name, y, out_shape)
    if val is not None:
        check_trace(f"{where}: validation_data", smodel, params, model_state, loss_fn,
                    metric_fns, *val)  # fmt: skip
        check_labels(f"{where}: validation_data", loss_name, val[1], out_shape)
        val = (
            tuple(jnp.asarray(a) for a in val) if plan is None else tuple(plan.put_data(where, val))
        )
    history_keys = ["loss", *(n for n, _ in metric_fns)]
    if validation_data is not None:
        history_keys += [f"val_{k}" for k in history_keys]
    logged_keys = list(history_keys)  # what the compiled epoch returns
    if early_stopping is not None and early_stopping.monitor not in history_keys:
        raise ValueError(
            f"{where}: early_stopping monitors {early_stopping.monitor!r}, which is not "
            f"recorded.{close_match(early_stopping.monitor, history_keys)} Recorded: "
            f"{history_keys}" + ("" if val is not None else "; val_* needs validation_data.")
        )

    # Fresh buffers: the compiled epoch donates its state, never the caller's arrays.
    params = cast_floating(params, precision.param_dtype)
    new_state = fresh_state(tx)
    state_shape = jax.eval_shape(new_state, params, opt_state, key, model_state)
    steps_per_epoch_ = num_batches(n, batch_size) if source is None else source.length
    if log_every is not None:
        log_every = check_positive_int(where, "log_every", log_every)
        if steps_per_epoch_ is None:
            raise ValueError(
                f"{where}: log_every needs the stream's length: pass steps_per_epoch= (or a "
                "data stream with len())."
            )
    runner = _epoch_runner(
        where, smodel, loss_fn, tx, metric_fns, batch_size, shuffle, on_nan, plan,
        state_shape, (x, y, w), source, val, val_source, steps_per_call, log_every,
        bool(ema_eval),
    )  # fmt: skip
    state = new_state(params, opt_state, key, model_state)
    if plan is not None:
        state = plan.put_state(state)
    read_lr = lr_reader(learning_rate, state.opt_state)
    if read_lr is not None:  # a schedule: the last step's rate, per epoch
        history_keys.append("lr")
    history: dict[str, list[float]] = {k: [] for k in history_keys}
    done = 0  # completed epochs
    if resume:
        state, done, history = _resume(where, checkpoint_dir, state, history_keys)

    def save(state: TrainState, epochs_done: int) -> None:
        if checkpoint_dir is not None:
            _checkpoint.save(
                checkpoint_dir, state, epoch=epochs_done, history=history, keep=checkpoint_keep
            )

    stopper = Stopper(early_stopping) if early_stopping is not None else None
    progress = Progress(epochs, verbose)
    sigint = SigintFlag()
    try:
        with sigint:
            for epoch in range(done, epochs):
                progress.start_epoch(epoch)
                start = time.perf_counter()
                out = runner(state, interrupted=lambda: sigint.flag, tick=progress.tick)
                # `state` was donated; out.state is the last good one (checkpoints on disk
                # stay at epoch boundaries, so a resume is still exact).
                state = out.state
                logs, out_guard = jax.device_get((out.logs, out.guard))  # one transfer
                if guard.check(where, out_guard, epoch=epoch, state=state, history=history,
                               result_type=FitResult):  # fmt: skip
                    break
                if not out.complete:  # Ctrl-C in the middle of a long epoch
                    warnings.warn(
                        f"{where}: interrupted (Ctrl-C) during epoch {epoch + 1}; returning the "
                        f"state reached. Checkpoints stay at epoch {done}.",
                        stacklevel=2,
                    )
                    break
                steps = None
                if log_every is not None:
                    steps = step_logs(logs, epoch, steps_per_epoch_, log_every, learning_rate)
                logs = host_logs(logs, logged_keys)  # "loss", then metrics
                if read_lr is not None:
                    logs["lr"] = read_lr(state)
                for k, v in logs.items():
                    history[k].append(v)
                done = epoch + 1
                progress.update(epoch, logs, time.perf_counter() - start)
                stop = stopper is not None and stopper.update(
                    epoch, logs[stopper.config.monitor], state
                )
                cb_logs = logs if steps is None else {**logs, "steps": steps}
                for cb in callbacks:
                    stop = bool(cb(epoch, cb_logs, state)) or stop
                if stop or sigint.flag or done % checkpoint_every == 0 or done == epochs:
                    save(state, done)
                if sigint.flag:
                    warnings.warn(
                        f"{where}: interrupted (Ctrl-C); returning the state after epoch {done}.",
                        stacklevel=2,
                    )
                if stop or sigint.flag:
                    break
    except KeyboardInterrupt:
        # Raised by a callback or a second Ctrl-C: keep the last completed epoch if intact.
        if any(is_deleted(a) for a in jax.tree.leaves(state)) or done == 0:
            raise
        save(state, done)
        warnings.warn(
            f"{where}: KeyboardInterrupt; returning the state after epoch {done}.", stacklevel=2
        )
    finally:
        progress.close()
    if stopper is not None and stopper.config.restore_best and stopper.best_state is not None:
        state = stopper.best_state
    return FitResult(state, history)


def _epoch_runner(
    where, model, loss_fn, tx, metric_fns, batch_size, shuffle, on_nan, plan, state, data,
    source, val, val_source, steps_per_call, log_every=None, ema_eval=False,
):  # fmt: skip
    """``fit``'s epoch: ``runner(state, interrupted=, tick=) -> EpochOut``, for arrays or a
    stream, validated inside the compiled epoch (arrays) or after it (streams). ``state``
    may be the state's shapes: an array epoch starts compiling its program from them
    (:meth:`ArrayEpoch.warm`), in the background while ``fit`` builds the state."""
    fused_val = source is None and val_source is None and val is not None
    spec = EpochSpec(
        model,
        loss_fn,
        tx,
        metric_fns,
        batch_size,
        shuffle,
        fused_val,
        on_nan,
        plan,
        log_every,
        ema_eval,
    )
    params_of = eval_params_fn(ema_eval)
    if source is None:
        xd, yd, wd = jax.device_put(data) if plan is None else plan.put_data(where, data)
        runner: Any = ArrayEpoch(spec, state, (xd, yd, wd), val, steps_per_call)
        runner.warm(state)
    else:
        runner = StreamEpoch(
            where=where, source=source, model=model, loss_fn=loss_fn, tx=tx,
            metric_fns=metric_fns, k=steps_per_call or 1, on_nan=on_nan, log_every=log_every,
        )  # fmt: skip
    if val_source is not None:
        k = steps_per_call or 1

        def validate(params, model_state):
            return evaluate_stream(
                where, val_source, model=model, loss_fn=loss_fn, metric_fns=metric_fns,
                params=params, model_state=model_state, k=k,
            )  # fmt: skip

        return Validated(runner, validate, params_of)
    if val is not None and not fused_val:
        run = compiled_eval(model, loss_fn, metric_fns, batch_size)
        return Validated(
            runner, lambda params, model_state: run(params, model_state, *val), params_of
        )
    return runner


def _resume(where, directory, template, history_keys):
    """(state, completed epochs, history) from the newest good checkpoint, or a fresh start."""
    ckpt = _checkpoint.restore_latest(directory, template)
    if ckpt is None:
        return template, 0, {k: [] for k in history_keys}
    if sorted(ckpt.history) != sorted(history_keys):
        raise ValueError(
            f"{where}: the checkpoint {ckpt.path} records {sorted(ckpt.history)}, this run "
            f"records {sorted(history_keys)}; resume with the same metrics and validation_data."
        )
    return ckpt.state, ckpt.epoch, {k: ckpt.history[k] for k in history_keys}


__all__ = ["fit"]
