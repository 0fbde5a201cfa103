"""fit under faults: checkpoints and exact resume, SIGKILL, Ctrl-C, and the NaN guard."""

import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jnn
from jnn import checkpoint as ckpt

ROOT = Path(__file__).resolve().parents[1]


@functools.cache  # one model object: fit's compiled epoch is reused across tests
def _problem():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3)).astype("float32")
    y = (x.sum(1, keepdims=True) > 0).astype("float32")
    model = jnn.serial(
        jnn.Dense(8, activation="relu"), jnn.Dropout(0.2), jnn.Dense(1, activation="sigmoid")
    )
    _, params = model.init(jax.random.key(0), (-1, 3))
    return model, params, (x, y)


KW = {"loss": "bce", "optimizer": "adam", "batch_size": 16, "metrics": ["accuracy"], "verbose": 0}


def _fit(epochs, **kw):
    model, params, data = _problem()
    return jnn.fit(model, params, data, epochs=epochs, key=jax.random.key(1), **KW, **kw)


def _identical(a, b):
    jax.tree.map(lambda u, v: np.testing.assert_array_equal(np.asarray(u), np.asarray(v)), a, b)


def _assert_same_run(got, want):
    _identical(got.params, want.params)
    _identical(got.opt_state, want.opt_state)
    _identical(jax.random.key_data(got.state.key), jax.random.key_data(want.state.key))
    assert int(got.state.step) == int(want.state.step)
    assert got.history == want.history


def test_interrupted_and_resumed_is_bit_identical(tmp_path):
    full = _fit(6)
    _fit(2, checkpoint_dir=tmp_path)  # "crashes" after epoch 2
    assert [p.name for p in ckpt.all_checkpoints(tmp_path)] == [
        "epoch_000001.ckpt",
        "epoch_000002.ckpt",
    ]
    resumed = _fit(6, checkpoint_dir=tmp_path, resume=True)
    _assert_same_run(resumed, full)
    # Resuming a finished run trains no more.
    again = _fit(6, checkpoint_dir=tmp_path, resume=True)
    _assert_same_run(again, full)


def test_checkpoint_every_and_keep(tmp_path):
    _fit(7, checkpoint_dir=tmp_path, checkpoint_every=3, checkpoint_keep=2)
    assert [p.name for p in ckpt.all_checkpoints(tmp_path)] == [
        "epoch_000006.ckpt",
        "epoch_000007.ckpt",  # the last epoch is always saved
    ]


def test_corrupt_newest_checkpoint_with_keep_1_loses_nothing(tmp_path):
    """A damaged file numbered after the run's: every save used to delete the file it wrote."""
    junk = tmp_path / "epoch_000099.ckpt"
    junk.write_bytes(b"JNNCKPT\n" + b"\x00" * 60)  # a damaged checkpoint, newest by number
    with pytest.warns(UserWarning, match="leaving an unusable file alone"):
        _fit(3, checkpoint_dir=tmp_path, checkpoint_keep=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_000003.ckpt", junk.name]
    with pytest.warns(UserWarning) as warned:
        resumed = _fit(4, checkpoint_dir=tmp_path, checkpoint_keep=1, resume=True)
    assert "skipping unusable checkpoint" in str(warned[0].message)
    assert resumed.history == _fit(4).history  # resumed from epoch 3, not retrained from 0


@pytest.mark.parametrize("blocker", ["file", "directory"])
def test_bad_checkpoint_dir_fails_before_training(tmp_path, blocker):
    """checkpoint_dir is a file, or a directory sits where epoch 1's file goes: no epoch runs."""
    if blocker == "file":
        target = tmp_path / "ckpt"
        target.write_text("not a directory")
        match = "is a file, not a directory"
    else:
        target = tmp_path
        (tmp_path / "epoch_000001.ckpt").mkdir()
        match = "holds epoch_000001.ckpt, which is not a file"
    epochs_run = []

    def record(epoch, logs, state):
        epochs_run.append(epoch)

    with pytest.raises(ckpt.CheckpointError, match=match):
        _fit(2, checkpoint_dir=target, callbacks=[record])
    assert epochs_run == []  # refused before the first epoch, not after it


def test_resume_without_checkpoint_starts_fresh(tmp_path):
    _assert_same_run(_fit(2, checkpoint_dir=tmp_path / "new", resume=True), _fit(2))


def test_resume_with_other_metrics_is_refused(tmp_path):
    _fit(1, checkpoint_dir=tmp_path)
    model, params, data = _problem()
    with pytest.raises(ValueError, match="same metrics"):
        jnn.fit(
            model,
            params,
            data,
            loss="bce",
            epochs=2,
            key=jax.random.key(1),
            verbose=0,
            checkpoint_dir=tmp_path,
            resume=True,
        )


def test_resume_with_other_model_names_the_path(tmp_path):
    _fit(1, checkpoint_dir=tmp_path)
    model = jnn.serial(jnn.Dense(4), jnn.Dropout(0.2), jnn.Dense(1, activation="sigmoid"))
    _, params = model.init(jax.random.key(0), (-1, 3))
    with pytest.raises(
        ckpt.CheckpointError, match=r"params\['dense_0'\]\['w'\]: expected \(3, 4\)"
    ):
        jnn.fit(
            model,
            params,
            _problem()[2],
            epochs=2,
            key=jax.random.key(1),
            **KW,
            checkpoint_dir=tmp_path,
            resume=True,
        )


_CHILD = """
import sys, time
sys.path.insert(0, {tests!r})
import test_train_faults as t
t._fit(40, checkpoint_dir={d!r}, callbacks=[lambda e, logs, s: time.sleep(0.05)])
"""


def test_sigkill_mid_training_then_resume(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    code = _CHILD.format(tests=str(ROOT / "tests"), d=str(tmp_path))
    child = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while len(ckpt.all_checkpoints(tmp_path)) < 3 and time.monotonic() < deadline:
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            time.sleep(0.01)
        time.sleep(0.02)  # somewhere mid-epoch, mid-sleep or mid-write
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=60) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
    done = ckpt.restore_latest(tmp_path, _fit(1).state)
    assert 3 <= done.epoch < 40  # killed part-way
    _assert_same_run(_fit(40, checkpoint_dir=tmp_path, resume=True), _fit(40))


def test_ctrl_c_returns_and_saves_last_completed_epoch(tmp_path):
    def press_ctrl_c(epoch, logs, state):
        if epoch == 1:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.warns(UserWarning, match="interrupted"):
        res = _fit(10, checkpoint_dir=tmp_path, checkpoint_every=5, callbacks=[press_ctrl_c])
    assert len(res.history["loss"]) == 2
    _assert_same_run(res, _fit(2))
    assert ckpt.latest(tmp_path).name == "epoch_000002.ckpt"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored


def test_keyboard_interrupt_from_a_callback_keeps_the_state(tmp_path):
    def interrupt(epoch, logs, state):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.warns(UserWarning, match="KeyboardInterrupt"):
        res = _fit(10, checkpoint_dir=tmp_path, checkpoint_every=10, callbacks=[interrupt])
    _assert_same_run(res, _fit(3))
    assert ckpt.latest(tmp_path).name == "epoch_000003.ckpt"


# --------------------------------------------------------------------------- NaN guard


def _nan_loss(pred, target, *, weights=None):
    """mse, but NaN on any batch holding the poisoned label 10."""
    poisoned = jnp.any(target > 5)
    return jnp.where(poisoned, jnp.nan, jnn.losses.mse(pred, target, weights=weights))


def _nan_fit(on_nan, x, y, epochs=3):
    model = jnn.Dense(1)
    _, params = model.init(jax.random.key(0), (-1, 3))
    return jnn.fit(
        model,
        params,
        (x, y),
        loss=_nan_loss,
        optimizer="sgd",
        epochs=epochs,
        batch_size=8,
        key=jax.random.key(1),
        shuffle=False,
        verbose=0,
        on_nan=on_nan,
    )


def _nan_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype("float32")
    y = x.sum(1, keepdims=True)
    y_bad = y.copy()
    y_bad[37] = 10.0  # batch 4 of epoch 0 (no shuffling)
    return x, y, y_bad


def test_on_nan_raise_names_epoch_and_step_and_keeps_last_good_state():
    x, y, y_bad = _nan_data()
    with pytest.raises(jnn.train.NonFiniteError, match="epoch 0, step 4 of the epoch") as err:
        _nan_fit("raise", x, y_bad)
    e = err.value
    assert (e.epoch, e.step, e.global_step) == (0, 4, 4)
    # The state is exactly the one after the 4 good steps: same as training on those 32 rows.
    _identical(e.result.params, _nan_fit("raise", x[:32], y[:32], epochs=1).params)
    assert e.result.history == {"loss": []}


def test_on_nan_stop_returns_last_good_state():
    x, y, y_bad = _nan_data()
    with pytest.warns(UserWarning, match="non-finite loss or gradients at epoch 0, step 4"):
        res = _nan_fit("stop", x, y_bad)
    assert int(res.state.step) == 4
    _identical(res.params, _nan_fit("raise", x[:32], y[:32], epochs=1).params)


def test_on_nan_skip_batch_skips_only_bad_steps():
    x, _, y_bad = _nan_data()
    with pytest.warns(UserWarning, match="skipped 1 step"):
        res = _nan_fit("skip_batch", x, y_bad)
    assert int(res.state.step) == 3 * 8 - 3
    # The same as training without the bad batch (SGD keeps no state across steps), and
    # the epoch's loss is over the examples of the steps that ran.
    keep = np.r_[0:32, 40:64]
    want = _nan_fit("raise", x[keep], y_bad[keep])
    for u, v in zip(jax.tree.leaves(res.params), jax.tree.leaves(want.params), strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(res.history["loss"], want.history["loss"], rtol=1e-6)


def test_guard_does_not_change_a_healthy_run():
    x, y, _ = _nan_data()
    _identical(_nan_fit("raise", x, y).params, _nan_fit(None, x, y).params)


def test_nan_gradients_alone_are_caught():
    """A finite loss with a NaN gradient (sqrt at 0) is caught too."""
    x, y, _ = _nan_data()
    model = jnn.Dense(1)
    _, params = model.init(jax.random.key(0), (-1, 3))

    def loss(pred, target, *, weights=None):
        return jnn.losses.mse(pred, target, weights=weights) + 0.0 * jnp.sum(jnp.sqrt(pred * 0.0))

    with pytest.raises(jnn.train.NonFiniteError, match="step 0"):
        jnn.fit(model, params, (x, y), loss=loss, key=jax.random.key(1), verbose=0)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"on_nan": "skip_batches"}, ValueError, "Did you mean 'skip_batch'"),
        ({"on_nan": 1}, ValueError, "on_nan must be one of"),
        ({"resume": True}, ValueError, "resume=True needs checkpoint_dir"),
        ({"checkpoint_dir": 3}, TypeError, "checkpoint_dir must be a path"),
        ({"checkpoint_every": 0}, ValueError, "checkpoint_every must be a positive int"),
    ],
)
def test_fault_arguments_are_checked(kwargs, error, message):
    with pytest.raises(error, match=message):
        _fit(1, **kwargs)


def _nan_stream_fit(on_nan, x, y, epochs=3, steps_per_call=3):
    """As _nan_fit, from a stream of the same 8-row batches, 3 batches per compiled call."""
    model = jnn.Dense(1)
    _, params = model.init(jax.random.key(0), (-1, 3))
    batches = [(x[i : i + 8], y[i : i + 8]) for i in range(0, len(x), 8)]
    return jnn.fit(
        model,
        params,
        batches,
        loss=_nan_loss,
        optimizer="sgd",
        epochs=epochs,
        key=jax.random.key(1),
        verbose=0,
        on_nan=on_nan,
        steps_per_call=steps_per_call,
    )


def test_on_nan_guards_streamed_epochs_too():
    """The guard runs inside each compiled group of a stream, across group boundaries."""
    x, y, y_bad = _nan_data()  # the bad row is in batch 4: the second group of three
    with pytest.raises(jnn.train.NonFiniteError, match="epoch 0, step 4 of the epoch") as err:
        _nan_stream_fit("raise", x, y_bad)
    assert (err.value.epoch, err.value.step) == (0, 4)
    _identical(err.value.result.params, _nan_fit("raise", x[:32], y[:32], epochs=1).params)
    with pytest.warns(UserWarning, match="skipped 1 step"):
        skipped = _nan_stream_fit("skip_batch", x, y_bad)
    assert int(skipped.state.step) == 3 * 8 - 3
    # A healthy stream is unchanged by the guard, and equals the array run without shuffling.
    guarded = _nan_stream_fit("raise", x, y)
    _identical(guarded.params, _nan_stream_fit(None, x, y).params)
    np.testing.assert_allclose(
        np.asarray(guarded.params["w"]), np.asarray(_nan_fit(None, x, y).params["w"]), rtol=1e-6
    )
