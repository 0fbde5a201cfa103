"""fit/evaluate/predict reuse their compiled programs across calls with the same model.

Compilations are counted with jax.monitoring's backend-compile events (public API),
so the tests hold however the engine caches its programs.
"""

import jax
import numpy as np
import pytest

import jnn


def _data():
    x = np.random.default_rng(0).normal(size=(40, 3)).astype("float32")
    return x, (x.sum(1, keepdims=True) > 0).astype("float32")


def test_second_fit_call_compiles_nothing(compiles):
    model = jnn.serial(jnn.Dense(4, activation="relu"), jnn.Dense(1, activation="sigmoid"))
    _, params = model.init(jax.random.key(0), (-1, 3))
    kwargs = dict(loss="bce", epochs=2, batch_size=8, metrics=["accuracy"], verbose=0)
    jnn.fit(model, params, _data(), key=jax.random.key(1), **kwargs)
    first = compiles.count
    assert first >= 1
    res = jnn.fit(model, params, _data(), key=jax.random.key(2), **kwargs)
    assert compiles.count == first
    assert len(res.history["loss"]) == 2


def test_predict_and_evaluate_compile_once(compiles):
    model = jnn.serial(jnn.Dense(2), jnn.Dense(1, activation="sigmoid"))
    _, params = model.init(jax.random.key(0), (-1, 3))
    x, y = _data()
    jnn.predict(model, params, x)
    jnn.evaluate(model, params, (x, y), loss="bce")
    first = compiles.count
    jnn.predict(model, params, x)
    jnn.evaluate(model, params, (x, y), loss="bce")
    assert compiles.count == first


def test_logits_accuracy_is_one_object_so_fit_reuses_its_epoch(compiles):
    assert jnn.metrics.get("accuracy", from_logits=True) is jnn.metrics.get(
        "accuracy", from_logits=True
    )
    model = jnn.Dense(3)
    _, params = model.init(jax.random.key(0), (-1, 3))
    x, _ = _data()
    y = np.arange(40, dtype=np.int32) % 3
    kwargs = dict(loss="cross_entropy", batch_size=8, metrics=["accuracy"], verbose=0)
    jnn.fit(model, params, (x, y), key=jax.random.key(1), **kwargs)
    first = compiles.count
    jnn.fit(model, params, (x, y), key=jax.random.key(2), **kwargs)
    assert compiles.count == first


# --------------------------------------------------------------------------- shared per structure


def _mlp(width=4, activation="relu", rate=0.0):
    hidden = jnn.Dense(width, activation=activation)
    return jnn.serial(hidden, jnn.Dropout(rate), jnn.Dense(1, activation="sigmoid"))


FIT = dict(loss="bce", epochs=2, batch_size=8, metrics=["accuracy"], verbose=0)


def test_a_new_model_built_by_the_same_code_compiles_nothing_and_trains_the_same(compiles):
    from jnn.train._cache import clear_programs

    data, x = _data(), _data()[0]
    first = _mlp()
    _, p0 = first.init(jax.random.key(0), (-1, 3))
    jnn.fit(first, p0, data, key=jax.random.key(1), **FIT)
    jnn.predict(first, p0, x)
    jnn.evaluate(first, p0, data, loss="bce")
    before = compiles.count
    second = _mlp()  # new closures, same structure
    assert second is not first
    _, params = second.init(jax.random.key(3), (-1, 3))
    shared = jnn.fit(second, params, data, key=jax.random.key(4), **FIT)
    shared_pred = jnn.predict(second, shared.params, x)
    shared_eval = jnn.evaluate(second, shared.params, data, loss="bce")
    assert compiles.count == before
    # The reference: the same fit with nothing cached, on the second model's own closures.
    clear_programs()
    own = jnn.fit(second, params, data, key=jax.random.key(4), **FIT)
    assert compiles.count > before
    assert own.history == shared.history
    jax.tree.map(np.testing.assert_array_equal, own.params, shared.params)
    np.testing.assert_array_equal(jnn.predict(second, own.params, x), shared_pred)
    assert jnn.evaluate(second, own.params, data, loss="bce") == shared_eval


def test_only_epochs_or_verbose_changing_compiles_nothing(compiles, capsys):
    model = _mlp(width=5)
    _, params = model.init(jax.random.key(0), (-1, 3))
    jnn.fit(model, params, _data(), key=jax.random.key(1), **FIT)
    before = compiles.count
    more = {**FIT, "epochs": 3, "verbose": 2}
    res = jnn.fit(model, params, _data(), key=jax.random.key(1), **more)
    assert compiles.count == before and len(res.history["loss"]) == 3


@pytest.mark.parametrize(
    "a, b",
    [
        (lambda: _mlp(activation="relu"), lambda: _mlp(activation="tanh")),
        (lambda: _mlp(rate=0.0), lambda: _mlp(rate=0.5)),
        (lambda: jnn.serial(jnn.Dense(4), jnn.LeakyRelu(0.1)),
         lambda: jnn.serial(jnn.Dense(4), jnn.LeakyRelu(0.3))),
    ],
    ids=["activation", "dropout-rate", "leaky-slope"],
)  # fmt: skip
def test_models_differing_in_one_config_value_do_not_share(a, b):
    """``b`` after ``a`` trains and predicts as ``b`` alone (nothing cached) does."""
    from jnn.train._cache import clear_programs

    x = np.random.default_rng(0).normal(size=(12, 3)).astype("float32")
    kwargs = dict(loss="mse", epochs=1, batch_size=4, key=jax.random.key(1), verbose=0)
    model_a, model_b = a(), b()
    _, params = model_b.init(jax.random.key(0), (-1, 3))
    y = np.zeros(model_b.apply(params, x).shape, "float32") + 0.5
    jnn.fit(model_a, params, (x, y), **kwargs)
    after_a = jnn.fit(model_b, params, (x, y), **kwargs)
    pred = jnn.predict(model_b, after_a.params, x)
    clear_programs()
    alone = jnn.fit(model_b, params, (x, y), **kwargs)
    assert after_a.history == alone.history
    jax.tree.map(np.testing.assert_array_equal, after_a.params, alone.params)
    np.testing.assert_allclose(pred, model_b.apply(after_a.params, x), rtol=1e-6, atol=1e-6)


def test_undescribed_layers_are_cached_by_identity(compiles):
    def make(scale):
        def apply(params, x, *, key=None, train=False):
            return scale * x

        return jnn.Layer(lambda key, shape: (tuple(shape), {}), apply)

    x = np.ones((4, 2), "float32")
    np.testing.assert_allclose(jnn.predict(make(2.0), {}, x), 2 * x)
    np.testing.assert_allclose(jnn.predict(make(3.0), {}, x), 3 * x)


def test_small_epochs_compile_fast_and_train_the_same(monkeypatch):
    import jnn.train._cache as cache

    model = _mlp(width=6)
    _, params = model.init(jax.random.key(0), (-1, 3))
    x, y = _data()
    smodel = jnn.stateful(model)
    assert cache.small_program(smodel, params, {}, x)
    assert not cache.small_program(smodel, params, {}, np.zeros((10**7, 3), "float32"))
    kwargs = dict(loss="bce", epochs=3, batch_size=8, key=jax.random.key(1), verbose=0)
    fast = jnn.fit(model, params, (x, y), **kwargs)
    monkeypatch.setattr(cache, "SMALL_EPOCH_FLOPS", 0)  # the reference: fully optimized
    full = jnn.fit(model, params, (x, y), **kwargs)
    np.testing.assert_allclose(fast.history["loss"], full.history["loss"], rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 fast.params, full.params)  # fmt: skip


# --------------------------------------------------------------------------- background compile


def _fit_new_architecture(width, compiles):
    """(the programs compiled, result) of the first fit of a width no other test uses."""
    model = jnn.serial(jnn.Dense(width, activation="tanh"), jnn.Dense(1, activation="sigmoid"))
    _, params = model.init(jax.random.key(0), (-1, 3))
    before = len(compiles.names)
    res = jnn.fit(model, params, _data(), loss="bce", epochs=3, batch_size=8,
                  key=jax.random.key(1), verbose=0)  # fmt: skip
    return compiles.names[before:], res


def test_the_epoch_compiled_in_the_background_is_the_one_fit_runs(compiles, monkeypatch):
    """fit compiles its first epoch in a thread while it builds the state; the first call
    must reuse that program: the epoch compiles once, as in a fit that compiles in the
    call, and trains the same."""
    from jnn.train._cache import clear_programs
    from jnn.train._epoch import ArrayEpoch

    background, res = _fit_new_architecture(23, compiles)
    assert background.count("jit(epoch)") == 1, background
    assert len(background) == len(set(background)), background  # nothing compiled twice
    monkeypatch.setattr(ArrayEpoch, "warm", lambda self, state: None)
    in_call, _ = _fit_new_architecture(29, compiles)
    assert in_call.count("jit(epoch)") == 1, in_call
    clear_programs()
    jax.clear_caches()
    _, same = _fit_new_architecture(23, compiles)  # compiled afresh, in the call this time
    np.testing.assert_array_equal(res.history["loss"], same.history["loss"])
    jax.tree.map(np.testing.assert_array_equal, res.params, same.params)


def test_an_error_in_the_background_compile_reaches_the_caller():
    """A model that fails only in training mode passes fit's one-row probe (evaluation
    mode) and fails in the epoch's trace, which runs in the background thread first: the
    caller still gets the model's own error."""

    def init(key, input_shape):
        return input_shape, {}

    def apply(params, x, *, key=None, train=False):
        if train:
            raise ValueError("this layer fails when training")
        return x

    model = jnn.serial(jnn.layers.Layer(init, apply), jnn.Dense(1, activation="sigmoid"))
    _, params = model.init(jax.random.key(0), (-1, 3))
    with pytest.raises(ValueError, match="this layer fails when training"):
        jnn.fit(model, params, _data(), loss="bce", epochs=1, key=jax.random.key(1), verbose=0)


def _flops(model, shape):
    from jnn.train._cache import jaxpr_flops

    smodel = jnn.stateful(model)
    _, params, state = smodel.init(jax.random.key(0), (-1, *shape[1:]))
    x = jax.ShapeDtypeStruct(shape, np.float32)
    fn = lambda p, s, x: smodel.apply(p, s, x, train=False)[0]  # noqa: E731
    ours = jaxpr_flops(jax.make_jaxpr(fn)(params, state, x).jaxpr)
    return ours, jax.jit(fn).lower(params, state, x).cost_analysis()["flops"]


@pytest.mark.parametrize(
    "model, shape",
    [
        (jnn.serial(jnn.Dense(10, activation="relu"), jnn.Dense(1, activation="sigmoid")),
         (1, 10)),
        (jnn.serial(jnn.Conv(8, (3, 3)), jnn.Flatten(), jnn.Dense(4)), (1, 16, 16, 3)),
        (jnn.serial(jnn.Conv(6, (3, 3), strides=2), jnn.Flatten(), jnn.Dense(4)), (1, 9, 9, 2)),
    ],
    ids=["mlp", "conv", "strided conv"],
)  # fmt: skip
def test_the_flops_that_choose_fast_compiles_match_xlas_cost_analysis(model, shape):
    """The small-program estimate counts the jaxpr (no lowering): close to XLA's own cost
    analysis of the lowered program (above it by at most a third where a padded
    convolution's windows reach past the edges: XLA leaves the padding out)."""
    ours, xla = _flops(model, shape)
    assert 0.9 * xla <= ours <= 1.35 * xla


def test_the_flops_of_a_scan_count_every_step():
    """XLA's cost analysis counts a loop body once; the estimate counts a scan's body
    ``length`` times, so a recurrent layer over 20 steps costs twice 10 steps, and at
    least the gates' multiply-adds (4 gates of (inputs + hidden) x hidden per step)."""
    model = jnn.serial(jnn.LSTM(16), jnn.Dense(1))
    ten, _ = _flops(model, (1, 10, 4))
    twenty, _ = _flops(model, (1, 20, 4))
    assert twenty == pytest.approx(2 * ten, rel=0.1)
    assert twenty >= 20 * 2 * 4 * (4 + 16) * 16
