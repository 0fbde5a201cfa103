"""Tests for searches in jnn.experiments: spaces and their designs, successive halving, PBT."""

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.stats import qmc

import jnn
from jnn import experiments as ex
from jnn.experiments import _schedule, _space

X = np.random.default_rng(0).normal(size=(32, 3)).astype(np.float32)
Y = (X @ np.array([[1.0], [-2.0], [0.5]], np.float32)).astype(np.float32)
XV, YV = X[:16] + 0.1, Y[:16]
MODEL = jnn.Dense(1)
SPACE = {"learning_rate": ex.LogUniform(1e-3, 0.3), "b1": ex.Choice([0.5, 0.9])}
KW = dict(
    loss="mse", optimizer=lambda learning_rate, b1: optax.adam(learning_rate, b1=b1),
    epochs=4, batch_size=8, validation_data=(XV, YV),
)  # fmt: skip


def test_spaces_map_the_unit_interval():
    u = np.array([0.0, 0.25, 0.5, 0.999])
    np.testing.assert_allclose(ex.LogUniform(1e-4, 1.0).from_unit(u), 10.0 ** (-4 + 4 * u))
    np.testing.assert_allclose(ex.Uniform(-1.0, 3.0).from_unit(u), -1 + 4 * u)
    assert ex.IntUniform(2, 5).from_unit(u).tolist() == [2, 3, 4, 5]
    assert ex.Choice([1, 7, 9]).from_unit(u).tolist() == [1, 1, 7, 9]
    # the same formula inside a compiled program
    got = jax.jit(lambda u: ex.LogUniform(1e-4, 1.0).from_unit(u, jnp))(jnp.asarray(u))
    np.testing.assert_allclose(got, 10.0 ** (-4 + 4 * u), rtol=1e-5)


@pytest.mark.parametrize("sampler", ["sobol", "random"])
def test_sampled_settings_follow_the_seeded_design(sampler):
    space = {"learning_rate": ex.LogUniform(1e-4, 1e-1), "b1": ex.Uniform(0.8, 0.99), "eps": 1e-8}
    got = _space.sample_settings(space, 8, sampler, seed=5)
    if sampler == "sobol":
        unit = qmc.Sobol(2, scramble=True, seed=5).random(8)
    else:
        unit = np.random.default_rng(5).random((8, 2))
    np.testing.assert_allclose([s["learning_rate"] for s in got], 1e-4 * 1e3 ** unit[:, 0])
    np.testing.assert_allclose([s["b1"] for s in got], 0.8 + 0.19 * unit[:, 1])
    assert all(s["eps"] == 1e-8 for s in got)
    assert got == _space.sample_settings(space, 8, sampler, seed=5)
    assert got != _space.sample_settings(space, 8, sampler, seed=6)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: ex.LogUniform(0.0, 1.0), "lo"),
        (lambda: ex.Uniform(1.0, 1.0), "empty or inverted"),
        (lambda: ex.Uniform(2.0, 1.0), "empty or inverted"),
        (lambda: ex.IntUniform(3, 2), "empty or inverted"),
        (lambda: ex.Choice([]), "non-empty"),
        (lambda: ex.Choice(["a"]), "number"),
        (lambda: ex.SuccessiveHalving(eta=1), "eta"),
        (lambda: ex.SuccessiveHalving(mode="best"), "mode"),
        (lambda: ex.PBT(quantile=0.0), "quantile"),
        (lambda: ex.PBT(quantile=0.6), "quantile"),
        (lambda: ex.PBT(perturb=(0.8,)), "two factors"),
        (lambda: ex.PBT(resample=1.5), "resample"),
        (lambda: ex.sweep(MODEL, (X, Y), hparams=SPACE, **KW), "num_samples"),
        (
            lambda: ex.sweep(
                MODEL, (X, Y), hparams={"learning_rate": [0.1], "b1": [0.9]}, num_samples=4, **KW
            ),
            "grid-only",
        ),
        (
            lambda: ex.sweep(MODEL, (X, Y), hparams=SPACE, num_samples=4, sampler="lhs", **KW),
            "sampler",
        ),
        (
            lambda: ex.sweep(
                MODEL,
                (X, Y),
                hparams=SPACE,
                num_samples=4,
                **KW,
                schedule=ex.SuccessiveHalving(monitor="val_accuracy"),
            ),
            "not recorded",
        ),
        (
            lambda: ex.sweep(
                MODEL,
                (X, Y),
                hparams=SPACE,
                num_samples=4,
                **KW,
                schedule=ex.SuccessiveHalving(min_epochs=5),
            ),
            "min_epochs",
        ),
        (
            lambda: ex.sweep(
                MODEL, (X, Y), hparams=SPACE, num_samples=4, **KW, schedule=ex.PBT(interval=4)
            ),
            "interval",
        ),
        (lambda: ex.sweep(MODEL, (X, Y), loss="mse", epochs=4, schedule=ex.PBT()), "PBT"),
        (
            lambda: ex.sweep(
                MODEL,
                (X, Y),
                hparams=SPACE,
                num_samples=4,
                **KW,
                schedule=ex.PBT(interval=2),
                chunk_size=2,
            ),
            "one program",
        ),
    ],
)
def test_bad_search_input_is_refused_before_compiling(make, match, monkeypatch):
    def no_compile(*args, **kwargs):
        raise AssertionError("compiled before refusing bad input")

    monkeypatch.setattr(_schedule, "compiled_pbt", no_compile)
    monkeypatch.setattr(_schedule, "_map_chunks", no_compile)
    with pytest.raises((ValueError, TypeError), match=match):
        make()


@pytest.fixture(scope="module")
def plain():
    """Every sampled setting trained to the end: the reference for the schedules."""
    return ex.sweep(MODEL, (X, Y), hparams=SPACE, num_samples=6, seeds=2, key=jax.random.key(3),
                    **KW)  # fmt: skip


def test_successive_halving_continues_the_best_settings_exactly(plain):
    res = ex.sweep(MODEL, (X, Y), hparams=SPACE, num_samples=6, seeds=2, key=jax.random.key(3),
                   schedule=ex.SuccessiveHalving(eta=2, min_epochs=1), **KW)  # fmt: skip
    assert [r.hparams for r in res.runs] == [r.hparams for r in plain.runs]  # same key
    assert len({r.hparams["learning_rate"] for r in res.runs}) == 6
    h = plain.history["val_loss"]
    # Reference: rank settings by the mean over seeds at each rung, keep the best half.
    alive = np.arange(6)
    expected = np.zeros(12, int)
    for rung, _nxt in ((1, 2), (2, 4)):
        runs = (alive[:, None] * 2 + np.arange(2)).ravel()
        expected[runs] = rung
        score = h[runs, rung - 1].reshape(-1, 2).mean(axis=1)
        alive = alive[np.argsort(score, kind="stable")[: max(1, alive.size // 2)]]
    expected[(alive[:, None] * 2 + np.arange(2)).ravel()] = 4
    np.testing.assert_array_equal(res.epochs_run, expected)
    assert res.run_epochs == expected.sum() < plain.run_epochs
    # Resuming a run from its saved state trains it exactly as an uninterrupted run.
    for i, e in enumerate(res.epochs_run):
        np.testing.assert_allclose(res.history["val_loss"][i, :e], h[i, :e], rtol=2e-5, atol=1e-6)
        assert np.isnan(res.history["val_loss"][i, e:]).all()
    final = np.flatnonzero(res.epochs_run == 4)
    np.testing.assert_allclose(res.params["w"][final], plain.params["w"][final], atol=1e-5)
    assert not res.diverged.any() and res.best_index in final
    table = res.table
    assert table.column("epochs") == expected.tolist()
    np.testing.assert_allclose(table.column("val_loss"), h[np.arange(12), expected - 1], rtol=2e-5)


def test_setting_scores_mean_over_runs_and_rank_diverged_last():
    final = np.array([0.5, 0.7, 0.1, 0.2, 0.05, np.nan, 0.3, 0.3])  # 4 settings x 2 runs
    loss = np.ones((8, 3))
    loss[6, 1] = np.inf  # setting 3 diverged mid-segment, then looked fine
    score = _schedule._setting_scores(final, loss, 4, maximize=False)
    np.testing.assert_allclose(score, [0.6, 0.15, np.inf, np.inf])
    assert np.argsort(score, kind="stable")[:2].tolist() == [1, 0]
    up = _schedule._setting_scores(final, loss, 4, maximize=True)  # accuracies: larger wins
    np.testing.assert_allclose(up, [-0.6, -0.15, np.inf, np.inf])
    got = jax.jit(lambda f, lo: _schedule._setting_scores(f, lo, 4, False, jnp))(final, loss)
    np.testing.assert_allclose(got, score)


def test_exploit_copies_top_runs_and_explores_in_range():
    """The in-program step against a numpy reference: gathers on the run axis."""
    num_settings, m = 8, 2
    tx = optax.inject_hyperparams(lambda learning_rate, b1: optax.adam(learning_rate, b1=b1))
    hp = {"learning_rate": jnp.linspace(0.01, 0.08, num_settings).repeat(m),
          "b1": jnp.tile(jnp.array([0.5, 0.9]), num_settings)}  # fmt: skip
    params = {"w": jnp.arange(num_settings * m * 3.0).reshape(-1, 3)}
    opt = jax.vmap(lambda p, lr, b1: tx(learning_rate=lr, b1=b1).init(p))(
        params, hp["learning_rate"], hp["b1"]
    )
    keys = jax.random.split(jax.random.key(0), num_settings * m)
    state = jnn.TrainState(params, opt, jnp.zeros(num_settings * m, jnp.int32), keys, {})
    score = jnp.array([3.0, 1.0, 7.0, 2.0, 5.0, 8.0, 4.0, 6.0])  # best: setting 1, worst: 5
    sched = ex.PBT(quantile=0.25, perturb=(0.8, 1.2), resample=0.0)
    spaces = (("learning_rate", ex.LogUniform(1e-3, 0.1)), ("b1", ex.Choice([0.5, 0.9])))
    step = jax.jit(lambda s, k: _schedule._exploit(s, score, k, sched, spaces, num_settings))
    new, parent = step(state, jax.random.key(1))
    parent = np.asarray(parent)
    top, bottom = [1, 3], [5, 2]  # q = 2 of 8 settings
    for s in range(num_settings):
        donor = parent[s * m] // m
        assert donor in top if s in bottom else donor == s
        np.testing.assert_array_equal(parent[s * m : s * m + m], donor * m + np.arange(m))
    np.testing.assert_array_equal(new.params["w"], np.asarray(params["w"])[parent])
    np.testing.assert_array_equal(
        jax.random.key_data(new.key), jax.random.key_data(keys)
    )  # each run keeps its own shuffling key
    lr_old = np.asarray(hp["learning_rate"])[parent]
    lr_new = np.asarray(new.opt_state.hyperparams["learning_rate"])
    child = parent != np.arange(num_settings * m)
    np.testing.assert_allclose(lr_new[~child], lr_old[~child])
    ratio = lr_new[child] / lr_old[child]
    assert np.all(np.isclose(ratio, 0.8) | np.isclose(ratio, 1.2))
    assert np.allclose(lr_new[child].reshape(-1, m), lr_new[child].reshape(-1, m)[:, :1])
    np.testing.assert_allclose(  # Adam's moments copied with the params
        new.opt_state.inner_state[0].mu["w"], np.asarray(opt.inner_state[0].mu["w"])[parent]
    )
    again, _ = step(state, jax.random.key(1))
    np.testing.assert_array_equal(
        again.opt_state.hyperparams["b1"], new.opt_state.hyperparams["b1"]
    )


def test_pbt_population_in_one_program(plain, tmp_path):
    sched = ex.PBT(interval=2, quantile=0.25)
    res = ex.sweep(MODEL, (X, Y), hparams=SPACE, num_samples=6, seeds=2, key=jax.random.key(3),
                   schedule=sched, **KW)  # fmt: skip
    assert res.parents.shape == (12, 1) and res.run_epochs == plain.run_epochs
    # Before the first exploit step the population is the plain sweep.
    np.testing.assert_allclose(res.history["val_loss"][:, :2], plain.history["val_loss"][:, :2],
                               rtol=2e-5, atol=1e-6)  # fmt: skip
    # The worst setting (mean over its seeds) was replaced by a copy of the best one.
    score = plain.history["val_loss"][:, 1].reshape(6, 2).mean(axis=1)
    worst, best = int(np.argmax(score)), int(np.argmin(score))
    assert res.parents[2 * worst, 0] // 2 == best
    np.testing.assert_array_equal(res.parents[2 * best, 0], 2 * best)
    lr = res.hparam_history["learning_rate"]
    np.testing.assert_allclose(lr[:, 0], [r.hparams["learning_rate"] for r in res.runs])
    assert not np.isclose(lr[2 * worst, 2], lr[2 * worst, 0])  # it explored
    assert lr.min() >= 1e-3 and lr.max() <= 0.3 + 1e-6
    path = res.plot(str(tmp_path / "lr.png"), trajectory="learning_rate")
    assert Path(path).stat().st_size > 10_000
    with pytest.raises(ValueError, match="trajectory"):
        plain.plot(str(tmp_path / "x.png"), trajectory="learning_rate")


def test_search_example_runs(tmp_path):
    """The script end to end, small: 2 epochs (one halving rung, so it reuses random
    search's program; halving itself is tested above)."""
    path = Path(__file__).parents[1] / "examples" / "search.py"
    spec = importlib.util.spec_from_file_location("search_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    table, results = module.main(
        epochs=2, samples=4, population=4, interval=1, out=str(tmp_path / "pbt.png"),
        verbose=False,
    )  # fmt: skip
    assert table.column("search") == ["random search", "successive halving", "PBT"]
    assert table.column("run_epochs") == [8, 8, 8]
    assert all(0 <= a <= 100 for a in table.column("test_accuracy_of_best"))
    assert results["PBT"].parents.shape == (4, 1)
    assert (tmp_path / "pbt.png").stat().st_size > 10_000
