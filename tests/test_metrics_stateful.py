"""Stateful metrics (jnn.metrics.Metric) vs scikit-learn: batched, weighted, fit/evaluate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics as skm

import jnn
from jnn import metrics as M  # noqa: N812

N, B = 503, 64  # many batches, a partial last one


def _batched(metric, pred, y, w):
    """The metric over batches of B, states carried by update (the partial last batch
    padded with weight-0 rows, as fit pads it)."""
    pad = -len(pred) % B
    padded = [np.concatenate([a, a[:pad]]) for a in (pred, y)]
    w = np.concatenate([w, np.zeros(pad, w.dtype)])
    update = metric.update
    state = metric.init()
    for i in range(0, len(w), B):
        state = update(state, padded[0][i : i + B], padded[1][i : i + B], w[i : i + B])
    return np.asarray(metric.result(state))


@pytest.fixture(scope="module")
def binary():
    rng = np.random.default_rng(0)
    y = (rng.random(N) < 0.35).astype(np.float32)
    p = np.clip(0.3 * y + 0.7 * rng.random(N), 0, 1).astype(np.float32)
    w = rng.uniform(0.1, 2.0, N).astype(np.float32)
    w[::17] = 0.0  # masked rows
    return p[:, None], y[:, None], w


@pytest.fixture(scope="module")
def multiclass():
    rng = np.random.default_rng(1)
    c = 4
    ids = rng.integers(0, c, N)
    scores = rng.normal(size=(N, c)).astype(np.float32)
    scores[np.arange(N), ids] += 0.8
    w = rng.uniform(0.1, 2.0, N).astype(np.float32)
    return scores, ids.astype(np.int32), w


@pytest.mark.parametrize(
    "metric, ref",
    [
        (M.Precision(), skm.precision_score),
        (M.Recall(), skm.recall_score),
        (M.F1(), skm.f1_score),
    ],
)
def test_binary_counts_equal_sklearn(binary, metric, ref):
    p, y, w = binary
    want = ref(y[:, 0], p[:, 0] > 0.5, sample_weight=w)
    np.testing.assert_allclose(_batched(metric, p, y, w), want, rtol=2e-6)


def test_confusion_matrix_binary_and_multiclass(binary, multiclass):
    p, y, w = binary
    want = skm.confusion_matrix(y[:, 0], p[:, 0] > 0.5, sample_weight=w)
    np.testing.assert_allclose(_batched(M.ConfusionMatrix(2), p, y, w), want, rtol=2e-6)
    s, ids, w = multiclass
    want = skm.confusion_matrix(ids, s.argmax(1), sample_weight=w)
    np.testing.assert_allclose(_batched(M.ConfusionMatrix(4), s, ids, w), want, rtol=2e-6)


@pytest.mark.parametrize("average", ["macro", "micro", "weighted"])
@pytest.mark.parametrize("kind", ["precision", "recall", "f1"])
def test_multiclass_averages_equal_sklearn(multiclass, kind, average):
    s, ids, w = multiclass
    metric = {"precision": M.Precision, "recall": M.Recall, "f1": M.F1}[kind]
    ref = {"precision": skm.precision_score, "recall": skm.recall_score, "f1": skm.f1_score}
    want = ref[kind](ids, s.argmax(1), average=average, sample_weight=w)
    onehot = np.eye(4, dtype=np.float32)[ids]  # one-hot labels work as ids do
    got = _batched(metric(average=average, num_classes=4), s, onehot, w)
    np.testing.assert_allclose(got, want, rtol=2e-6)
    assert metric(average=average, num_classes=4).name == f"{kind}_{average}"


@pytest.mark.parametrize(
    "curve, ref", [("ROC", skm.roc_auc_score), ("PR", skm.average_precision_score)]
)
def test_auc_near_sklearn_and_exact_on_bucketed_scores(binary, curve, ref):
    p, y, w = binary
    want = ref(y[:, 0], p[:, 0], sample_weight=w)
    error = abs(_batched(M.AUC(curve), p, y, w) - want)
    assert error < 1e-3  # at the default thresholds
    # Exactly scikit-learn's on scores rounded up to the next threshold (ties per bucket),
    # so the error shrinks with num_thresholds.
    t = 50
    grid = np.linspace(0, 1, t)
    bucketed = grid[np.searchsorted(grid[1:-1], p[:, 0], side="left") + 1]
    coarse = _batched(M.AUC(curve, t), p, y, w)
    np.testing.assert_allclose(coarse, ref(y[:, 0], bucketed, sample_weight=w), atol=2e-6)
    assert abs(coarse - want) > error


def test_auc_multiclass_micro_and_logits(multiclass):
    s, ids, w = multiclass
    onehot = np.eye(4)[ids]
    probs = np.asarray(jax.nn.softmax(s, axis=-1))
    want = skm.roc_auc_score(onehot, probs, average="micro", sample_weight=w)
    got = _batched(M.AUC(multi_class="micro").logits, s, ids, w)  # the logits variant
    assert abs(got - want) < 1e-3
    with pytest.raises(ValueError, match="multi_class='micro'"):
        M.AUC()(s, ids)


def test_topk_and_regression_equal_sklearn(multiclass):
    s, ids, w = multiclass
    for k in (1, 2, 3):
        want = skm.top_k_accuracy_score(ids, s, k=k, sample_weight=w, labels=range(4))
        np.testing.assert_allclose(_batched(M.TopKAccuracy(k), s, ids, w), want, rtol=2e-6)
    rng = np.random.default_rng(2)
    y = rng.normal(size=(N, 1)).astype(np.float32)
    p = (y + 0.5 * rng.normal(size=(N, 1))).astype(np.float32)
    cases = [
        (M.MAE(), skm.mean_absolute_error),
        (M.RMSE(), lambda a, b, **kw: np.sqrt(skm.mean_squared_error(a, b, **kw))),
        (M.R2(), skm.r2_score),
    ]
    for metric, ref in cases:
        np.testing.assert_allclose(
            _batched(metric, p, y, w), ref(y, p, sample_weight=w), rtol=2e-5, err_msg=metric.name
        )


def test_metric_composes_with_jit_and_vmap(binary):
    p, y, w = binary
    auc = M.AUC()
    one = jax.jit(lambda p, y, w: auc.result(auc.update(auc.init(), p, y, w)))(p, y, w)
    stacked = jax.vmap(lambda p, y, w: auc.update(auc.init(), p, y, w))(
        p[:500].reshape(5, 100, 1), y[:500].reshape(5, 100, 1), w[:500].reshape(5, 100)
    )
    merged = jax.tree.map(lambda a: a.sum(0), stacked)  # states add
    part = auc.result(auc.update(auc.init(), p[:500], y[:500], w[:500]))
    np.testing.assert_allclose(auc.result(merged), part, rtol=1e-6)
    assert abs(float(one) - skm.roc_auc_score(y[:, 0], p[:, 0], sample_weight=w)) < 1e-3
    assert jnn.metrics.get("auc") is auc and jnn.metrics.get("auc", from_logits=True) is auc.logits


def test_bad_options_and_inputs_raise_before_compiling():
    x = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    y3 = np.arange(40) % 3
    model = jnn.Dense(3)
    _, params = model.init(jax.random.key(0), (-1, 3))
    fit = lambda metrics: jnn.fit(  # noqa: E731
        model,
        params,
        (x, y3),
        loss="cross_entropy",
        metrics=metrics,
        key=jax.random.key(0),
        verbose=0,
    )
    with pytest.raises(ValueError, match="multi_class"):
        fit(["auc"])
    with pytest.raises(ValueError, match="k=5 but the predictions"):
        fit([M.TopKAccuracy(5)])
    with pytest.raises(ValueError, match="average='macro', num_classes=3"):
        fit(["f1"])
    with pytest.raises(ValueError, match="needs num_classes"):
        M.F1(average="macro")
    with pytest.raises(ValueError, match="curve"):
        M.AUC("roc")
    with pytest.raises(ValueError, match="num_thresholds"):
        M.AUC(num_thresholds=1)

    def not_a_mean(pred, y, *, weights=None):
        return jnp.median(pred)

    not_a_mean.decomposable = False
    with pytest.raises(ValueError, match="decomposable=False"):
        fit([not_a_mean])


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(301, 5)).astype(np.float32)
    y = (x[:, :1] + 0.7 * rng.normal(size=(301, 1)) > 0.4).astype(np.float32)
    w = rng.uniform(0.2, 1.5, 301).astype(np.float32)
    model = jnn.serial(jnn.Dense(8, activation="relu"), jnn.Dense(1))
    _, params = model.init(jax.random.key(0), (-1, 5))
    return model, params, x, y, w


METRICS = ["accuracy", "auc", "pr_auc", "precision", "recall", "f1", M.ConfusionMatrix(2)]


def _sklearn(model, params, x, y, w):
    p = np.asarray(jnn.predict(model, params, x))[:, 0]
    prob, t = 1 / (1 + np.exp(-p)), y[:, 0]
    return {
        "auc": skm.roc_auc_score(t, prob, sample_weight=w),
        "pr_auc": skm.average_precision_score(t, prob, sample_weight=w),
        "precision": skm.precision_score(t, p > 0, sample_weight=w),
        "recall": skm.recall_score(t, p > 0, sample_weight=w),
        "f1": skm.f1_score(t, p > 0, sample_weight=w),
        "accuracy": skm.accuracy_score(t, p > 0, sample_weight=w),
        "confusion_matrix": skm.confusion_matrix(t, p > 0, sample_weight=w),
    }


def _check(got, want):
    for k, v in want.items():
        tol = 2e-3 if "auc" in k else 1e-5
        np.testing.assert_allclose(got[k], v, rtol=tol, atol=tol, err_msg=k)


def test_fit_validation_and_evaluate_equal_sklearn_on_the_whole_data(trained):
    model, params, x, y, w = trained
    res = jnn.fit(
        model, params, (x, y), loss="bce_with_logits", metrics=METRICS, epochs=2, batch_size=32,
        key=jax.random.key(1), verbose=0, validation_data=(x, y),
    )  # fmt: skip
    want = _sklearn(model, res.params, x, y, np.ones(len(x), np.float32))
    _check({k[4:]: v[-1] for k, v in res.history.items() if k.startswith("val_")}, want)
    assert res.history["confusion_matrix"][-1].shape == (2, 2)
    ev = jnn.evaluate(model, res.params, (x, y), loss="bce_with_logits", metrics=METRICS,
                      batch_size=40, sample_weight=w)  # fmt: skip
    _check(ev, _sklearn(model, res.params, x, y, w))
    # A stream of the same data (uneven batches) gives the same numbers.
    batches = [(x[i : i + 40], y[i : i + 40], w[i : i + 40]) for i in range(0, len(x), 40)]
    ev_stream = jnn.evaluate(model, res.params, batches, loss="bce_with_logits",
                             metrics=METRICS, steps_per_call=3)  # fmt: skip
    for k in ev:
        np.testing.assert_allclose(ev_stream[k], ev[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_fit_stream_equals_arrays_and_split_epoch(trained):
    model, params, x, y, w = trained
    kw = dict(loss="bce_with_logits", metrics=["auc", "f1"], epochs=1, key=jax.random.key(2),
              verbose=0, shuffle=False, optimizer="sgd")  # fmt: skip
    arrays = jnn.fit(model, params, (x, y), batch_size=30, sample_weight=w, **kw).history
    split = jnn.fit(model, params, (x, y), batch_size=30, sample_weight=w, steps_per_call=1,
                    **kw).history  # fmt: skip
    batches = [(x[i : i + 30], y[i : i + 30], w[i : i + 30]) for i in range(0, len(x), 30)]
    stream = jnn.fit(model, params, batches, steps_per_call=4, **kw).history
    for k in ("loss", "auc", "f1"):
        np.testing.assert_allclose(split[k], arrays[k], rtol=1e-6, err_msg=k)
        np.testing.assert_allclose(stream[k], arrays[k], rtol=1e-5, err_msg=k)


def test_two_device_mesh_equals_one_device(tmp_path, trained):
    model, params, x, y, w = trained
    ev = jnn.evaluate(model, params, (x, y), loss="bce_with_logits", metrics=METRICS[1:],
                      batch_size=40, sample_weight=w)  # fmt: skip
    script = textwrap.dedent(
        """
        import json, jax, numpy as np, jnn
        from jnn import metrics as M
        rng = np.random.default_rng(3)
        x = rng.normal(size=(301, 5)).astype(np.float32)
        y = (x[:, :1] + 0.7 * rng.normal(size=(301, 1)) > 0.4).astype(np.float32)
        w = rng.uniform(0.2, 1.5, 301).astype(np.float32)
        model = jnn.serial(jnn.Dense(8, activation="relu"), jnn.Dense(1))
        _, params = model.init(jax.random.key(0), (-1, 5))
        ev = jnn.evaluate(model, params, (x, y), loss="bce_with_logits", batch_size=40,
                          metrics=["auc", "pr_auc", "precision", "recall", "f1",
                                   M.ConfusionMatrix(2)], sample_weight=w, mesh="auto")
        print(json.dumps({"devices": jax.device_count(),
                          **{k: np.asarray(v).tolist() for k, v in ev.items()}}))
        """
    )
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1]), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out.pop("devices") == 2
    for k, v in ev.items():
        np.testing.assert_allclose(out[k], v, rtol=1e-5, atol=1e-5, err_msg=k)


def test_names_and_make_train_step(trained):
    assert M.get("top_3_accuracy") is M.TopKAccuracy(3)
    assert M.get("pr_auc").name == "pr_auc" and M.get("r2") is M.R2()
    with pytest.raises(ValueError, match="Known"):
        M.get("top_k_acc")
    model, params, x, y, _ = trained
    step = jnn.make_train_step(model, "bce_with_logits", "sgd", metrics=["auc", "f1"],
                               donate=False)  # fmt: skip
    state = jnn.TrainState.create(params, "sgd", key=jax.random.key(0))
    _, logs = step(state, (x, y))
    p = np.asarray(model.apply(params, x))[:, 0]
    assert abs(float(logs["auc"]) - skm.roc_auc_score(y[:, 0], p)) < 1e-3
    np.testing.assert_allclose(float(logs["f1"]), skm.f1_score(y[:, 0], p > 0), rtol=1e-6)


def test_sweep_stacks_metric_states_per_run():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(64, 3)).astype(np.float32)
    y = (x[:, :1] + rng.normal(size=(64, 1)) > 0).astype(np.float32)
    res = jnn.experiments.sweep(
        jnn.Dense(1), (x, y), loss="bce_with_logits", optimizer="sgd", epochs=1, seeds=2,
        metrics=["auc", M.ConfusionMatrix(2)], batch_size=16,
    )  # fmt: skip
    assert res.history["confusion_matrix"].shape == (2, 1, 2, 2)
    assert "auc" in res.table[0] and "confusion_matrix" not in res.table[0]
    for i in range(2):  # each run's AUC is its own epoch's, as jnn.fit computes it alone
        args = {"optimizer": "sgd", **res.fit_args(i)}
        alone = jnn.fit(res.model, data=(x, y), loss="bce_with_logits", epochs=1,
                        batch_size=16, metrics=["auc"], verbose=0, **args)  # fmt: skip
        np.testing.assert_allclose(res.history["auc"][i], alone.history["auc"], rtol=1e-5)


def test_survivors_of_a_mutation_run_are_pinned():
    """from_logits applies the sigmoid before the threshold; bad averages and class counts
    are refused with their own message; a multi-class score without an average says how."""
    import jax.numpy as jnp

    m = jnn.metrics.Precision(from_logits=True)  # logits 0.2, -0.2, 0.3 -> predicted 1, 0, 1
    state = m.update(m.init(), jnp.array([[0.2], [-0.2], [0.3]]), jnp.array([[1.0], [1.0], [0.0]]),
                     None)  # fmt: skip
    assert float(m.result(state)) == 0.5
    with pytest.raises(ValueError, match=r"^F1: average must be one of .*, got 3\.$"):
        jnn.metrics.F1(average=3)
    with pytest.raises(ValueError, match=r"^F1: num_classes must be an int in \[2, 16384\], got 1"):
        jnn.metrics.F1(average="macro", num_classes=1)
    f1 = jnn.metrics.F1()
    how = r"say how to average, e\.g\. jnn\.metrics\.F1\(average='macro', num_classes=3\)"
    with pytest.raises(
        ValueError, match=r"^F1: predictions of shape \(4, 3\) have 3 classes; " + how
    ):
        f1.update(f1.init(), jnp.ones((4, 3)), jnp.zeros((4,), jnp.int32), None)
    # one example's class scores (C,): the arg max, not a threshold per score
    assert float(jnn.metrics.accuracy(jnp.array([0.1, 0.7, 0.2]), jnp.array(1))) == 1.0
    assert float(jnn.metrics.accuracy(jnp.array([0.6, 0.7, 0.2]), jnp.array(0))) == 0.0


def test_one_weight_per_sequence_covers_its_steps():
    """(batch, T, C) scores with weights (batch,): each sequence's weight on all its steps."""
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    scores = rng.normal(size=(2, 3, 4)).astype(np.float32)
    ids = rng.integers(0, 4, size=(2, 3)).astype(np.int32)
    hit = (scores.argmax(-1) == ids).astype(np.float64)
    w = np.array([1.0, 3.0], np.float32)
    want = (hit * w[:, None]).sum() / (3 * w.sum())
    for metric in (jnn.metrics.TopKAccuracy(1),):  # through the stateful metrics' weights
        state = metric.update(metric.init(), jnp.asarray(scores), jnp.asarray(ids), jnp.asarray(w))
        np.testing.assert_allclose(float(metric.result(state)), want, rtol=1e-6)
    got = jnn.metrics.accuracy(jnp.asarray(scores), jnp.asarray(ids), weights=jnp.asarray(w))
    np.testing.assert_allclose(float(got), want, rtol=1e-6)
