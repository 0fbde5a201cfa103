"""jnn's training paths against an independent handwritten JAX + optax loop.

Elsewhere the suite compares jnn paths with each other (stream vs arrays, mesh vs one
device, sweep vs fit, resumed vs uninterrupted); those share one core, so a bug there
cancels out. Here one side of each pair is compared with tests/_reference.py, which
shares nothing with jnn.train: rows in order (``shuffle=False``), a ragged last batch
(40 rows in batches of 16), a handwritten BCE, the optax transformation itself.
"""

import _reference as reference
import jax
import numpy as np
import optax
import pytest

import jnn
from jnn import experiments as ex

N, F, B, EPOCHS, LR = 40, 5, 16, 3, 1e-2
_rng = np.random.default_rng(0)
X = _rng.normal(size=(N, F)).astype(np.float32)
Y = (X[:, :2].sum(1, keepdims=True) > 0).astype(np.float32)
MODEL = jnn.serial(jnn.Dense(8, activation="tanh"), jnn.Dense(1, activation="sigmoid"))
KW = dict(loss="bce", epochs=EPOCHS, batch_size=B, shuffle=False, verbose=0)


def _params(key=None):
    return MODEL.init(jax.random.key(0) if key is None else key, (-1, F))[1]


def _reference(params, epochs=EPOCHS):
    return reference.fit(
        MODEL.apply, params, X, Y, loss=reference.bce, tx=optax.adam(LR), epochs=epochs,
        batch_size=B,
    )  # fmt: skip


@pytest.fixture(scope="module")
def want():
    return _reference(_params())


def _check(params, history, want, tol=1e-5):
    want_params, _, want_losses = want
    reference.assert_trees_close(params, want_params, tol)
    np.testing.assert_allclose(history["loss"], want_losses, rtol=tol)


def test_arrays_and_a_stream_match_the_handwritten_loop(want):
    kw = dict(KW, optimizer=optax.adam(LR), key=jax.random.key(1))
    res = jnn.fit(MODEL, _params(), (X, Y), **kw)
    _check(res.params, res.history, want)

    def batches():
        for i in range(0, N, B):
            yield X[i : i + B], Y[i : i + B]

    streamed = jnn.fit(MODEL, _params(), batches, **kw)
    _check(streamed.params, streamed.history, want)


def test_a_mesh_matches_the_handwritten_loop(want):
    res = jnn.fit(MODEL, _params(), (X, Y), optimizer=optax.adam(LR), key=jax.random.key(1),
                  mesh="auto", **KW)  # fmt: skip
    _check(res.params, res.history, want)


def test_a_resumed_run_matches_the_handwritten_loop(tmp_path, want):
    kw = dict(KW, optimizer=optax.adam(LR), key=jax.random.key(1), checkpoint_dir=tmp_path)
    jnn.fit(MODEL, _params(), (X, Y), **{**kw, "epochs": 2})  # "crashes" after epoch 2
    res = jnn.fit(MODEL, _params(), (X, Y), resume=True, **kw)
    _check(res.params, res.history, want)


def test_a_sweep_run_matches_the_handwritten_loop():
    res = ex.sweep(MODEL, (X, Y), optimizer=optax.adam(LR), seeds=[(5, 6)], **KW)
    init_key, _ = ex.run_keys((5, 6))
    want_params, _, want_losses = _reference(_params(init_key))
    reference.assert_trees_close(res.run_params(0), want_params)
    np.testing.assert_allclose(res.history["loss"][0], want_losses, rtol=1e-5)
