"""Property-based tests (hypothesis) over random shapes for the losses and Dense.

Each example runs ONE jitted function (a new shape compiles once), and few
small sizes are drawn, so the file stays fast on a shared CPU.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jnn
from jnn import losses

SETTINGS = settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
shapes = st.lists(st.integers(1, 3), min_size=1, max_size=2).map(tuple)
seeds = st.integers(0, 2**31 - 1)


@functools.partial(jax.jit, static_argnums=(1,))
def _loss_facts(key, shape, scale):
    k1, k2, k3 = jax.random.split(key, 3)
    pred, target = scale * jax.random.normal(k1, shape), scale * jax.random.normal(k2, shape)
    labels = (jax.random.uniform(k3, shape) > 0.5).astype(jnp.float32)
    w = jnp.ones(shape[:1])
    facts = {}
    for name in ("mse", "mae"):
        fn = losses.get(name)
        facts[name] = fn(pred, target)
        facts[name + "_self"] = fn(pred, pred)
        facts[name + "_w1"] = fn(pred, target, weights=w)
        facts[name + "_sum"] = fn(pred, target, reduction="sum")
    facts["bcel"], facts["bcel_grad"] = jax.value_and_grad(losses.bce_with_logits)(pred, labels)
    probs_loss = lambda z: losses.bce(jnn.Sigmoid().apply({}, z), labels)  # noqa: E731
    facts["bce"], facts["bce_grad"] = jax.value_and_grad(probs_loss)(pred)
    return facts


@SETTINGS
@given(shape=shapes, seed=seeds, scale=st.sampled_from([1e-3, 1.0, 1e4]))
def test_losses_finite_nonnegative_zero_at_target_and_consistent(shape, seed, scale):
    f = jax.tree.map(np.asarray, _loss_facts(jax.random.key(seed), shape, scale))
    assert all(np.all(np.isfinite(v)) for v in f.values())
    for name in ("mse", "mae"):
        assert f[name].shape == () and f[name] >= 0 and f[name + "_self"] == 0
        np.testing.assert_allclose(f[name + "_w1"], f[name], rtol=1e-5)
        np.testing.assert_allclose(f[name + "_sum"] / np.prod(shape), f[name], rtol=1e-4)
    assert f["bcel"] >= 0 and f["bce"] >= 0
    if scale <= 1.0:  # away from the clip, probabilities and logits give the same loss
        np.testing.assert_allclose(f["bce"], f["bcel"], rtol=1e-4, atol=1e-6)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _ce_facts(key, lead, classes):
    k1, k2 = jax.random.split(key)
    logits = 3.0 * jax.random.normal(k1, (*lead, classes))
    ids = jax.random.randint(k2, lead, 0, classes)
    return (
        losses.cross_entropy(logits, ids),
        losses.cross_entropy(logits, jax.nn.one_hot(ids, classes)),
        losses.categorical_crossentropy(jax.nn.softmax(logits), ids),
    )


@SETTINGS
@given(lead=shapes, classes=st.integers(2, 4), seed=seeds)
def test_cross_entropy_sparse_equals_one_hot_equals_probs(lead, classes, seed):
    sparse, dense, from_probs = _ce_facts(jax.random.key(seed), lead, classes)
    assert np.isfinite(sparse) and sparse >= 0
    np.testing.assert_allclose(sparse, dense, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(from_probs, sparse, rtol=1e-3, atol=1e-5)


@SETTINGS
@given(shape=shapes, extra=st.integers(1, 2))
def test_losses_refuse_any_broadcast(shape, extra):
    pred = jax.ShapeDtypeStruct(shape, jnp.float32)
    for other in ((*shape, extra), (*shape[:-1], shape[-1] + extra)):
        with pytest.raises(ValueError, match="shape mismatch"):
            jax.eval_shape(losses.mse, pred, jax.ShapeDtypeStruct(other, jnp.float32))


@SETTINGS
@given(lead=shapes, features=st.integers(1, 4), units=st.integers(1, 4), seed=seeds)
def test_dense_shapes_matmul_vmap_and_grad(lead, features, units, seed):
    layer = jnn.Dense(units)
    out_shape, params = layer.init(jax.random.key(seed), (-1, features))
    assert out_shape == (-1, units)
    assert params["w"].shape == (features, units) and params["b"].shape == (units,)

    @jax.jit
    def facts(params, x):
        y = layer.apply(params, x)
        rows = jax.vmap(lambda r: layer.apply(params, r))(x.reshape(-1, features))
        gb = jax.grad(lambda p: jnp.sum(layer.apply(p, x)))(params)["b"]
        return y, rows, gb

    x = jax.random.normal(jax.random.key(seed + 1), (*lead, features))
    y, rows, gb = facts(params, x)
    assert y.shape == (*lead, units)
    want = np.asarray(x) @ np.asarray(params["w"]) + np.asarray(params["b"]).reshape(1, units)
    np.testing.assert_allclose(np.asarray(y).reshape(-1, units), want.reshape(-1, units),
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    np.testing.assert_allclose(rows, np.asarray(y).reshape(-1, units), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gb, np.full(units, np.prod(lead)), rtol=1e-6)


@SETTINGS
@given(features=st.integers(1, 4), wrong=st.integers(1, 4), units=st.integers(1, 3))
def test_dense_refuses_wrong_feature_size(features, wrong, units):
    if wrong == features:
        wrong += 1
    layer = jnn.Dense(units)
    _, params = layer.init(jax.random.key(0), (-1, features))
    with pytest.raises(ValueError, match=rf"expected input of shape \(\.\.\., {features}\)"):
        jax.eval_shape(layer.apply, params, jax.ShapeDtypeStruct((2, wrong), jnp.float32))
