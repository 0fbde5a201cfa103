"""fit/evaluate/predict reuse their compiled functions across calls with the same model."""

import jax
import numpy as np

import jnn
from jnn import train


def _data():
    x = np.random.default_rng(0).normal(size=(40, 3)).astype("float32")
    return x, (x.sum(1, keepdims=True) > 0).astype("float32")


def test_second_fit_call_hits_the_compiled_epoch_cache():
    model = jnn.serial(jnn.Dense(4, activation="relu"), jnn.Dense(1, activation="sigmoid"))
    _, params = model.init(jax.random.key(0), (-1, 3))
    kwargs = dict(loss="bce", epochs=1, batch_size=8, metrics=["accuracy"], verbose=0)
    jnn.fit(model, params, _data(), key=jax.random.key(1), **kwargs)
    before = train._compiled_epoch.cache_info()
    traces = train._TRACE_CACHE.copy()
    jnn.fit(model, params, _data(), key=jax.random.key(2), **kwargs)
    after = train._compiled_epoch.cache_info()
    assert after.hits == before.hits + 1
    assert after.misses == before.misses
    assert traces == train._TRACE_CACHE  # the shape probe was not traced again


def test_predict_and_evaluate_reuse_the_lifted_model():
    model = jnn.serial(jnn.Dense(2), jnn.Dense(1, activation="sigmoid"))
    _, params = model.init(jax.random.key(0), (-1, 3))
    x, y = _data()
    jnn.predict(model, params, x)
    jnn.evaluate(model, params, (x, y), loss="bce")
    fwd, ev = train._compiled_forward.cache_info(), train._compiled_eval.cache_info()
    jnn.predict(model, params, x)
    jnn.evaluate(model, params, (x, y), loss="bce")
    assert train._compiled_forward.cache_info().misses == fwd.misses
    assert train._compiled_eval.cache_info().misses == ev.misses


def test_logits_accuracy_is_one_object_so_fit_reuses_its_epoch():
    assert jnn.metrics.get("accuracy", from_logits=True) is jnn.metrics.get(
        "accuracy", from_logits=True
    )
    model = jnn.Dense(3)
    _, params = model.init(jax.random.key(0), (-1, 3))
    x, _ = _data()
    y = np.arange(40, dtype=np.int32) % 3
    kwargs = dict(loss="cross_entropy", batch_size=8, metrics=["accuracy"], verbose=0)
    jnn.fit(model, params, (x, y), key=jax.random.key(1), **kwargs)
    misses = train._compiled_epoch.cache_info().misses
    jnn.fit(model, params, (x, y), key=jax.random.key(2), **kwargs)
    assert train._compiled_epoch.cache_info().misses == misses
