"""LayerNorm, RMSNorm and BatchNorm (state: train-only updates, never touched by optimizers)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

import jnn


def _randn(seed, shape, scale=1.0, shift=0.0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * scale + shift).astype(np.float32)


def test_layer_norm_matches_reference_and_grads():
    ln = jnn.LayerNorm()
    out_shape, params = ln.init(jax.random.key(0), (-1, 3, 5))
    assert out_shape == (-1, 3, 5) and set(params) == {"scale", "bias"}
    params = {"scale": jnp.arange(1.0, 6.0), "bias": jnp.full((5,), 0.5)}
    x = _randn(0, (2, 3, 5), 3.0, 1.0)
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    ref = (x - mean) / np.sqrt(var + 1e-5) * np.arange(1.0, 6.0) + 0.5
    np.testing.assert_allclose(jax.jit(ln.apply)(params, x), ref, rtol=1e-4, atol=1e-5)
    check_grads(ln.apply, (params, jnp.asarray(x)), order=1, modes=["rev"], atol=2e-2, rtol=2e-2)
    vm = jax.vmap(lambda xi: ln.apply(params, xi))(x)
    np.testing.assert_allclose(vm, ref, rtol=1e-4, atol=1e-5)


def test_rms_norm_matches_reference_and_grads():
    rms = jnn.RMSNorm()
    _, params = rms.init(jax.random.key(0), (-1, 4))
    assert set(params) == {"scale"}
    x = _randn(1, (6, 4), 2.0)
    ref = x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(jax.jit(rms.apply)(params, x), ref, rtol=1e-5, atol=1e-6)
    check_grads(rms.apply, (params, jnp.asarray(x)), order=1, modes=["rev"], atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("layer", [jnn.LayerNorm(), jnn.RMSNorm(), jnn.BatchNorm()])
def test_norm_errors_name_layer_and_shapes(layer):
    out = layer.init(jax.random.key(0), (-1, 4))
    name = {3: "BatchNorm"}.get(len(out)) or ("RMSNorm" if "bias" not in out[1] else "LayerNorm")
    args = (out[1], out[2]) if len(out) == 3 else (out[1],)
    with pytest.raises(
        ValueError, match=rf"{name}: expected input of shape \(\.\.\., 4\), got \(2, 3\)"
    ):
        layer.apply(*args, jnp.ones((2, 3)))
    with pytest.raises(TypeError, match=name):
        layer.apply(*args, jnp.ones((2, 4), jnp.int32))


def test_batch_norm_train_updates_state_and_eval_uses_it():
    bn = jnn.BatchNorm(momentum=0.8)
    assert jnn.is_stateful(bn)
    shape, params, state = bn.init(jax.random.key(0), (-1, 3))
    assert shape == (-1, 3) and set(params) == {"scale", "bias"} and set(state) == {"mean", "var"}
    x = _randn(2, (16, 3), 2.0, 5.0)
    y, new = jax.jit(bn.apply, static_argnames="train")(params, state, x, train=True)
    # training mode normalizes with the batch's statistics
    np.testing.assert_allclose(y, (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(new["mean"], 0.2 * x.mean(0), rtol=1e-5)
    np.testing.assert_allclose(new["var"], 0.8 + 0.2 * x.var(0), rtol=1e-5)
    # evaluation mode: running statistics, state returned unchanged
    x2 = _randn(3, (4, 3))
    y2, same = bn.apply(params, new, x2)
    ref = (x2 - np.asarray(new["mean"])) / np.sqrt(np.asarray(new["var"]) + 1e-5)
    np.testing.assert_allclose(y2, ref, rtol=1e-5, atol=1e-5)
    assert same is new


def test_batch_norm_grads_and_vmap_with_axis_name():
    bn = jnn.BatchNorm()
    _, params, state = bn.init(jax.random.key(0), (-1, 2))
    x = jnp.asarray(_randn(4, (8, 2), 2.0))

    def f(p, x):
        return bn.apply(p, state, x, train=True)[0]

    check_grads(f, (params, x), order=1, modes=["rev"], atol=3e-2, rtol=3e-2)
    y, s = bn.apply(params, state, x, train=True)
    bn_v = jnn.BatchNorm(axis_name="batch")
    yv, sv = jax.vmap(
        lambda xi: bn_v.apply(params, state, xi, train=True), axis_name="batch", out_axes=(0, None)
    )(x)
    np.testing.assert_allclose(yv, y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sv["mean"], s["mean"], rtol=1e-6)


def _bn_model():
    return jnn.serial(jnn.Dense(4), jnn.BatchNorm(momentum=0.5), jnn.Relu(), jnn.Dense(1))


def test_batch_norm_state_never_reaches_the_optimizer():
    model = _bn_model()
    _, params, state = model.init(jax.random.key(0), (-1, 3))
    leaves = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
    assert not any("mean" in k or "var" in k for k in leaves)
    tx = optax.sgd(1e3)  # a huge step: any state leaking into the updates would show
    ts = jnn.TrainState.create(params, tx, key=jax.random.key(1), model_state=state)
    step = jnn.make_train_step(model, "mse", tx, donate=False)
    x, y = _randn(5, (8, 3)), _randn(6, (8, 1))
    new, _ = step(ts, (x, y))
    h = np.asarray(jnn.Dense(4).apply(params["dense_0"], x))
    # the state moved exactly by the momentum rule on the batch statistics, not by SGD
    np.testing.assert_allclose(
        new.model_state["batch_norm_0"]["mean"], 0.5 * h.mean(0), rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(
        new.model_state["batch_norm_0"]["var"], 0.5 + 0.5 * h.var(0), rtol=1e-4
    )
    assert jax.tree.structure(new.opt_state) == jax.tree.structure(tx.init(params))


def test_fit_threads_batch_norm_state_and_evaluate_uses_it():
    model = _bn_model()
    _, params, state = model.init(jax.random.key(0), (-1, 3))
    x = _randn(7, (32, 3), 3.0, 2.0)
    y = x.sum(1, keepdims=True)
    with pytest.raises(ValueError, match="model_state"):
        jnn.fit(model, params, (x, y), loss="mse", key=jax.random.key(0), verbose=0)
    res = jnn.fit(
        model,
        params,
        (x, y),
        model_state=state,
        loss="mse",
        epochs=3,
        batch_size=32,
        shuffle=False,
        key=jax.random.key(0),
        verbose=0,
        optimizer="sgd",
        learning_rate=1e-3,
    )
    moved = res.model_state["batch_norm_0"]
    assert not np.allclose(moved["mean"], state["batch_norm_0"]["mean"])
    # evaluation uses the running statistics: compare with a manual eval-mode forward pass
    pred = jnn.predict(model, res.params, x, model_state=res.model_state)
    manual, _ = model.apply(res.params, res.model_state, x, train=False)
    np.testing.assert_allclose(pred, manual, rtol=1e-5, atol=1e-5)
    stale = jnn.predict(model, res.params, x, model_state=state)
    assert not np.allclose(pred, stale)
    scores = jnn.evaluate(model, res.params, (x, y), loss="mse", model_state=res.model_state)
    np.testing.assert_allclose(scores["loss"], np.mean((manual - y) ** 2), rtol=1e-4)


def test_fit_pads_last_batch_with_real_examples_for_batch_statistics():
    # 10 examples, batches of 8, no shuffle: batch 2 is examples 8, 9 plus 0..5 (weight 0),
    # so BatchNorm sees distinct real rows, never copies of one example.
    model = jnn.serial(jnn.BatchNorm(momentum=0.5), jnn.Dense(1))
    _, params, state = model.init(jax.random.key(0), (-1, 2))
    x = _randn(8, (10, 2), 2.0, 1.0)
    y = np.zeros((10, 1), np.float32)
    res = jnn.fit(
        model,
        params,
        (x, y),
        model_state=state,
        loss="mse",
        epochs=1,
        batch_size=8,
        shuffle=False,
        key=jax.random.key(0),
        verbose=0,
    )
    m1 = 0.5 * x[:8].mean(0)
    m2 = 0.5 * m1 + 0.5 * x[[8, 9, 0, 1, 2, 3, 4, 5]].mean(0)
    np.testing.assert_allclose(res.model_state["batch_norm_0"]["mean"], m2, rtol=1e-5)
