"""jnn.callbacks (CSVLogger, TensorBoard), fit(class_weight=) and the ``lr`` history key."""

from __future__ import annotations

import csv

import jax
import numpy as np
import optax
import pytest
from sklearn.utils.class_weight import compute_class_weight
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import jnn
from jnn.callbacks import CSVLogger, TensorBoard


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 3)).astype(np.float32)
    y = (x[:, :1] + rng.normal(size=(120, 1)) > 1.0).astype(np.float32)  # imbalanced
    model = jnn.Dense(1)
    _, params = model.init(jax.random.key(0), (-1, 3))
    return model, params, x, y


def _fit(problem, **kw):
    model, params, x, y = problem
    kw = {"loss": "bce_with_logits", "batch_size": 32, "key": jax.random.key(1), "verbose": 0,
          **kw}  # fmt: skip
    return jnn.fit(model, params, (x, y), **kw)


def test_class_weight_is_a_product_with_sample_weight(problem):
    _, _, _, y = problem
    sw = np.random.default_rng(1).uniform(0.5, 1.5, len(y)).astype(np.float32)
    cw = {0: 1.0, 1: 4.0}
    got = _fit(problem, class_weight=cw, sample_weight=sw, metrics=["auc"])
    manual = sw * np.where(y[:, 0] > 0.5, 4.0, 1.0).astype(np.float32)
    want = _fit(problem, sample_weight=manual, metrics=["auc"])  # the same compiled epoch
    assert got.history == want.history
    balanced = _fit(problem, class_weight="balanced", metrics=["auc"])
    ref = compute_class_weight("balanced", classes=np.array([0.0, 1.0]), y=y[:, 0])
    want = _fit(problem, sample_weight=ref[y[:, 0].astype(int)].astype(np.float32),
                metrics=["auc"])  # fmt: skip
    np.testing.assert_allclose(balanced.history["loss"], want.history["loss"], rtol=1e-6)


@pytest.mark.parametrize("labels", ["one-hot", "ids"])
def test_class_weight_reads_each_examples_class(labels):
    """class_weight weighs each example by its own class, whether the labels are class ids
    or one-hot rows (the one-hot class is the argmax of each row)."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(60, 3)).astype(np.float32)
    ids = rng.integers(0, 3, size=60)
    y = np.eye(3, dtype=np.float32)[ids] if labels == "one-hot" else ids.astype(np.int32)
    loss = "categorical_crossentropy" if labels == "one-hot" else "cross_entropy"
    model = jnn.Dense(3)
    _, params = model.init(jax.random.key(0), (-1, 3))
    kw = dict(loss=loss, batch_size=16, epochs=2, key=jax.random.key(1), verbose=0)
    cw = {0: 1.0, 1: 3.0, 2: 0.5}
    got = jnn.fit(model, params, (x, y), class_weight=cw, **kw)
    manual = np.array([cw[int(i)] for i in ids], np.float32)
    want = jnn.fit(model, params, (x, y), sample_weight=manual, **kw)
    assert got.history == want.history


def test_class_weight_bad_input_raises_before_compiling(problem):
    with pytest.raises(ValueError, match=r"no weight for label\(s\) \[1\]"):
        _fit(problem, class_weight={0: 1.0, 2: 3.0})
    with pytest.raises(ValueError, match="'balanced'"):
        _fit(problem, class_weight="balance")
    with pytest.raises(ValueError, match="class_weight\\[1\\]"):
        _fit(problem, class_weight={0: 1.0, 1: -2.0})
    model, params, x, y = problem
    with pytest.raises(ValueError, match="class labels"):
        jnn.fit(model, params, (x, y + 0.5), loss="mse", class_weight={0: 1}, key=jax.random.key(0),
                verbose=0)  # fmt: skip


def test_csv_logger_rows_and_append_on_resume(problem, tmp_path):
    path, ckpt = tmp_path / "log.csv", tmp_path / "ckpt"
    kw = {"metrics": ["auc", jnn.metrics.ConfusionMatrix(2)], "checkpoint_dir": ckpt}
    first = _fit(problem, epochs=2, callbacks=[CSVLogger(path)], **kw)
    rest = _fit(problem, epochs=3, resume=True, callbacks=[CSVLogger(path)], **kw)
    rows = list(csv.DictReader(path.open()))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    np.testing.assert_allclose([float(r["auc"]) for r in rows], rest.history["auc"], rtol=1e-6)
    assert rest.history["auc"][:2] == first.history["auc"]
    assert np.array(eval(rows[2]["confusion_matrix"])).shape == (2, 2)
    _fit(problem, epochs=1, callbacks=[CSVLogger(path)], **{"metrics": ["auc"]})
    assert len(list(csv.DictReader(path.open()))) == 1  # a fresh run starts the file again


def test_tensorboard_events_read_back_with_tensorboard(problem, tmp_path):
    schedule = optax.exponential_decay(0.05, 4, 0.5)
    tb = TensorBoard(tmp_path / "tb")
    res = _fit(problem, epochs=3, optimizer="adam", learning_rate=schedule, metrics=["auc"],
               callbacks=[tb])  # fmt: skip
    tb.close()
    # lr: the rate of each epoch's last step (4 steps per epoch)
    np.testing.assert_allclose(res.history["lr"], [schedule(s) for s in (3, 7, 11)], rtol=1e-6)
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert tags == {"loss", "auc", "lr"}
    for tag in tags:
        got = events.Scalars(tag)
        assert [e.step for e in got] == [0, 1, 2]
        np.testing.assert_allclose([e.value for e in got], res.history[tag], rtol=1e-6)


def test_tensorboard_sweep_writes_one_directory_per_run(problem, tmp_path):
    _, _, x, y = problem
    res = jnn.experiments.sweep(
        jnn.Dense(1), (x, y), loss="bce_with_logits", optimizer="sgd", epochs=2, seeds=2,
        hparams={"learning_rate": [0.01, 0.1]}, metrics=["auc"],
    )  # fmt: skip
    dirs = TensorBoard(tmp_path / "sweep").write_sweep(res)
    assert len(dirs) == 4 and len(set(dirs)) == 4
    events = EventAccumulator(str(dirs[3]))
    events.Reload()
    np.testing.assert_allclose(
        [e.value for e in events.Scalars("auc")], res.history["auc"][3], rtol=1e-6
    )


def test_log_dir_that_is_a_file_raises(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        TensorBoard(f)
    with pytest.raises(ValueError, match="is a directory"):
        CSVLogger(tmp_path)
    assert jnn.callbacks.EarlyStopping is jnn.EarlyStopping


def test_log_every_collects_step_losses_inside_the_scan(problem, tmp_path):
    model, params, x, y = problem
    schedule = optax.exponential_decay(0.1, 2, 0.5)
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=schedule)
    seen = []
    kw = {"loss": "bce_with_logits", "optimizer": tx, "key": jax.random.key(1), "verbose": 0,
          "shuffle": False, "log_every": 2}  # fmt: skip
    tb = TensorBoard(tmp_path / "tb")
    record = lambda epoch, logs, state: seen.append(logs["steps"])  # noqa: E731
    res = jnn.fit(model, params, (x, y), batch_size=20, epochs=2, callbacks=[record, tb], **kw)
    tb.close()
    assert "steps" not in res.history
    # The reference: the same steps by hand with make_train_step.
    step = jnn.make_train_step(model, "bce_with_logits", tx)
    state = jnn.TrainState.create(params, tx, key=jax.random.key(1))
    losses = []
    for _ in range(2):
        for i in range(0, 120, 20):
            state, logs = step(state, (x[i : i + 20], y[i : i + 20]))
            losses.append(float(logs["loss"]))
    got = np.concatenate([s["loss"] for s in seen])
    np.testing.assert_allclose(got, np.reshape(losses, (-1, 2)).mean(1), rtol=1e-5)
    assert np.concatenate([s["step"] for s in seen]).tolist() == [1, 3, 5, 7, 9, 11]
    np.testing.assert_allclose(seen[0]["lr"], [schedule(s) for s in (1, 3, 5)], rtol=1e-6)
    # A stream of the same batches gives the same series; TensorBoard holds it.
    batches = [(x[i : i + 20], y[i : i + 20]) for i in range(0, 120, 20)]
    jnn.fit(model, params, batches, epochs=1, steps_per_call=4, callbacks=[record], **kw)
    np.testing.assert_allclose(seen[-1]["loss"], seen[0]["loss"], rtol=1e-6)
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("step/loss")] == [1, 3, 5, 7, 9, 11]
    np.testing.assert_allclose([e.value for e in events.Scalars("step/loss")], got, rtol=1e-6)
    with pytest.raises(ValueError, match="log_every"):
        jnn.fit(model, params, iter(batches), epochs=1, **kw)
