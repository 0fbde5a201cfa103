"""Tests for jnn.experiments: vmapped sweeps equal lone fits, chunks, folds, divergence, devices."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

import jnn
from jnn import experiments as ex
from jnn.experiments import _chunks
from jnn.experiments import _sweep as _sweep_module  # noqa: F401  (the 4-device script patches it)

X = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
Y = (X @ np.array([[1.0], [-2.0], [0.5]], np.float32) > 0).astype(np.float32)
MODEL = jnn.serial(jnn.Dense(6, activation="relu"), jnn.Dense(1, activation="sigmoid"))
KW = dict(loss="bce", epochs=2, batch_size=16, metrics=["accuracy"], verbose=0)


def adam(learning_rate):
    return optax.adam(learning_rate)


def _sweep(**extra):
    kw = dict(KW, optimizer=adam, hparams={"learning_rate": [1e-2, 1e-1]}, seeds=2, folds=2)
    return ex.sweep(MODEL, (X, Y), **{**kw, **extra})


@pytest.fixture(scope="module")
def res():
    return _sweep()


def _close(a, b, tol=1e-5):
    for p, q in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(p), np.asarray(q), rtol=tol, atol=tol)


def test_shapes_and_run_order(res):
    assert len(res.runs) == 8 and res.history["val_loss"].shape == (8, 2)
    assert jax.tree.leaves(res.params)[0].shape[0] == 8
    assert res.opt_state.hyperparams["learning_rate"].shape == (8,)
    r = res.runs[5]  # setting-major, then seed, then fold
    assert (r.hparams["learning_rate"], r.seed, r.fold) == (1e-1, 0, 1)
    assert not res.diverged.any()


def test_vmapped_run_equals_lone_fit(res):
    i = 6  # learning rate 0.1, seed 1, fold 0
    args = res.fit_args(i)
    assert args["validation_data"][0].shape[0] == 20  # the held-out fold only
    alone = jnn.fit(MODEL, data=(X, Y), **KW, **args)
    _close(alone.params, res.run_params(i))
    _close(alone.opt_state.inner_state, jax.tree.map(lambda a: a[i], res.opt_state.inner_state))
    for k, values in alone.history.items():
        if k == "lr":  # the lone fit's injected rate; a sweep keeps it in its runs' hparams
            np.testing.assert_allclose(values, res.runs[i].hparams["learning_rate"], rtol=1e-6)
            continue
        np.testing.assert_allclose(values, res.history[k][i], rtol=1e-5, atol=1e-6)


def test_bootstrap_seed_pairs_and_plain_optimizer_equal_lone_fit():
    tx = optax.sgd(0.1)
    res = ex.sweep(MODEL, (X, Y), optimizer=tx, seeds=[(3, 4)], folds=ex.Bootstrap(2), **KW)
    assert [r.fold for r in res.runs] == [0, 1] and res.monitor == "val_loss"
    counts, oob = ex.bootstrap_weights(40, 2)
    init_key, fit_key = ex.run_keys((3, 4))
    _, params = MODEL.init(init_key, (-1, 3))
    held_out = oob[1] > 0
    alone = jnn.fit(
        MODEL, params, (X, Y), optimizer=tx, key=fit_key, sample_weight=counts[1],
        validation_data=(X[held_out], Y[held_out]), **KW,
    )  # fmt: skip
    _close(alone.params, res.run_params(1))
    np.testing.assert_allclose(alone.history["val_loss"], res.history["val_loss"][1], rtol=1e-5)


def test_chunked_equals_one_chunk(res):
    three = _sweep(chunk_size=3)  # 3 compiled calls, the last padded with a repeated run
    _close(three.params, res.params)
    _close(three.history, res.history)


def test_default_chunk_size_from_memory(monkeypatch):
    per_run = _chunks._run_bytes(
        jnn.stateful(MODEL), optax.adam(1e-3), jnn.losses.bce, ((3,), X.dtype), ((1,), Y.dtype),
        40, 16, 2,
    )  # fmt: skip
    assert 0 < per_run < 1_000_000  # a small model needs well under 1 MB per run
    assert _chunks._chunk_size(None, 10_000, 1, lambda: per_run) == 10_000  # fits this machine
    monkeypatch.setattr(_chunks, "_available_bytes", lambda: 10 * per_run)
    assert _chunks._chunk_size(None, 10_000, 1, lambda: per_run) == 10
    assert _chunks._chunk_size(None, 10_000, 4, lambda: per_run) == 12  # a multiple of devices
    assert _chunks._chunk_size(5, 10_000, 1, lambda: per_run) == 5


def test_kfold_masks_cover_every_example_once_as_validation():
    for n, k in [(10, 3), (569, 5), (7, 7)]:
        train, val = ex.kfold_weights(n, k, seed=1)
        assert val.shape == train.shape == (k, n)
        np.testing.assert_array_equal(val.sum(axis=0), np.ones(n))
        np.testing.assert_array_equal(train + val, np.ones((k, n)))
        assert val.sum(axis=1).max() - val.sum(axis=1).min() <= 1
    with pytest.raises(ValueError, match="k must be in"):
        ex.kfold_weights(5, 6)


def test_bootstrap_counts_and_out_of_bag():
    counts, oob = ex.bootstrap_weights(50, 4, seed=2)
    np.testing.assert_array_equal(counts.sum(axis=1), [50] * 4)
    np.testing.assert_array_equal(oob, (counts == 0).astype(np.float32))


def test_diverging_learning_rate_is_flagged_and_isolated():
    xr = X[:, :2]
    yr = (xr @ np.array([[3.0], [-1.0]], np.float32)) * 100
    model = jnn.serial(jnn.Dense(4), jnn.Dense(1))
    res = ex.sweep(
        model,
        (xr, yr),
        loss="mse",
        optimizer="sgd",
        hparams={"learning_rate": [1e-3, 1e3]},
        seeds=2,
        epochs=3,
        batch_size=8,
        verbose=0,
    )
    np.testing.assert_array_equal(res.diverged, [False, False, True, True])
    assert np.isfinite(res.history["loss"][:2]).all()
    assert res.best_index in (0, 1)
    summary = res.summary().to_dicts()
    assert summary[1]["diverged"] == 2 and summary[0]["diverged"] == 0
    assert np.isfinite(summary[0]["loss_mean"]) and np.isnan(summary[1]["loss_mean"])
    assert [r["diverged"] for r in res.table] == [False, False, True, True]
    assert "yes" in str(res.table)


def test_table_summary_best_and_plot(res, tmp_path):
    rows = res.table.to_dicts()
    assert len(rows) == 8 and {"seed", "learning_rate", "fold", "best_val_loss"} <= set(rows[0])
    assert rows[3]["val_loss"] == pytest.approx(float(res.history["val_loss"][3, -1]))
    text = str(res.table)
    assert text.splitlines()[0].split()[:4] == ["run", "seed", "learning_rate", "fold"]
    summary = res.summary().to_dicts()
    assert [s["learning_rate"] for s in summary] == [1e-2, 1e-1] and summary[0]["runs"] == 4
    finals = res.history["val_loss"][:4, -1]
    assert summary[0]["val_loss_mean"] == pytest.approx(float(finals.mean()), rel=1e-6)
    assert summary[0]["val_loss_std"] == pytest.approx(float(finals.std()), rel=1e-5)
    best = res.best_index
    assert res.history["val_loss"][best, -1] == res.history["val_loss"][:, -1].min()
    _close(res.best_params, res.run_params(best))
    frame = res.table.to_pandas()  # pandas is in the test extra
    assert frame.shape == (8, len(res.table.columns))
    assert frame["learning_rate"].tolist() == [r["learning_rate"] for r in res.table.to_dicts()]
    path = res.plot(str(tmp_path / "sweep.png"))
    assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table_to_pandas(monkeypatch):
    """pandas is in the test extra: the DataFrame is checked, and its absence is simulated."""
    import pandas as pd

    table = ex.Table([{"run": 0, "learning_rate": 0.1}, {"run": 1, "learning_rate": 0.01}])
    frame = table.to_pandas()
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == ["run", "learning_rate"]
    assert frame.to_dict("records") == table.to_dicts()
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now raises ImportError
    with pytest.raises(ImportError, match="pip install pandas"):
        table.to_pandas()


def test_bad_input_is_refused_eagerly():
    with pytest.raises(TypeError, match="factory"):
        ex.sweep(MODEL, (X, Y), optimizer=optax.adam(1e-3), hparams={"learning_rate": [1.0]}, **KW)
    with pytest.raises(TypeError, match="must be a number"):
        ex.sweep(MODEL, (X, Y), optimizer=adam, hparams={"learning_rate": ["fast"]}, **KW)
    with pytest.raises(ValueError, match="seed"):
        ex.sweep(MODEL, (X, Y), seeds=[-1], **KW)
    with pytest.raises(ValueError, match="drop validation_data"):
        ex.sweep(MODEL, (X, Y), folds=2, validation_data=(X, Y), **KW)
    with pytest.raises(ValueError, match="monitor"):
        ex.sweep(MODEL, (X, Y), monitor="val_los", **KW)
    with pytest.raises(ValueError, match="same number of examples"):
        ex.sweep(MODEL, (X, Y[:5]), **KW)
    # Typos in swept names get the close match, not optax's "missing a required argument".
    with pytest.raises(ValueError, match=r"'learnin_rate'.*Did you mean 'learning_rate'"):
        ex.sweep(MODEL, (X, Y), optimizer="adam", hparams={"learnin_rate": [1e-2]}, **KW)
    with pytest.raises(ValueError, match="needs 'b1', which hparams does not give"):
        ex.sweep(MODEL, (X, Y), optimizer=lambda learning_rate, b1: optax.adam(learning_rate, b1),
                 hparams={"learning_rate": [1e-2]}, **KW)  # fmt: skip
    # Seeds that are not ints: named, never int()-ed ("a") or truncated (1.5 was seed 1).
    for bad in (["a"], [1.5], [(1, "x")], [True]):
        with pytest.raises(
            ValueError, match=r"sweep: seeds: a seed must be an int in \[0, 2\*\*31\)"
        ):
            ex.sweep(MODEL, (X, Y), seeds=bad, **KW)


def test_four_host_devices_give_the_same_results(res, tmp_path):
    script = textwrap.dedent(
        f"""
        import json, sys, jax, numpy as np
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import test_experiments as t
        assert jax.device_count() == 4, jax.devices()
        compiled, seen = t._sweep_module._compiled_sweep, []

        def spy(*args):
            train = compiled(*args)

            def run(*a):
                out = train(*a)
                seen.append(len(jax.tree.leaves(out[0].params)[0].sharding.device_set))
                return out

            return run

        t._sweep_module._compiled_sweep = spy
        out = t._sweep(chunk_size=3)  # rounded up to 4: two chunks, each sharded 4 ways
        assert seen == [4, 4], seen
        np.savez({str(tmp_path / "out.npz")!r}, val_loss=out.history["val_loss"],
                 w=np.asarray(out.params["dense_0"]["w"]))
        print(json.dumps({{"devices": jax.device_count()}}))
        """
    )
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1]), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"devices": 4}
    out = np.load(tmp_path / "out.npz")
    np.testing.assert_allclose(out["val_loss"], res.history["val_loss"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["w"], np.asarray(res.params["dense_0"]["w"]), atol=1e-5)


def test_lr_sweep_example_runs(tmp_path):
    path = Path(__file__).parents[1] / "examples" / "lr_sweep.py"
    spec = importlib.util.spec_from_file_location("lr_sweep", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    res = module.main(epochs=2, out=str(tmp_path / "lr.png"), verbose=False)
    assert len(res.runs) == 64 and len({r.hparams["learning_rate"] for r in res.runs}) == 8
    assert (tmp_path / "lr.png").stat().st_size > 10_000
