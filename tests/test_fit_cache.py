"""fit/evaluate/predict reuse their compiled programs across calls with the same model.

Compilations are counted with jax.monitoring's backend-compile events (public API),
so the tests hold however the engine caches its programs.
"""

import jax
import numpy as np

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
