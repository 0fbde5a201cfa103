"""MultiHeadAttention (self, cross, masks), Embedding and PositionalEmbedding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jnn


def _randn(seed, shape):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def attention_reference(params, q_in, kv_in, heads, mask=None):
    """Handwritten softmax(QK^T / sqrt(d)) V per head, in float64 numpy."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)

    def proj(name, x):
        return x @ p[name]["w"] + p[name]["b"]

    q, k, v = proj("query", q_in), proj("key", kv_in), proj("value", kv_in)
    d = q.shape[-1] // heads
    outs = []
    for h in range(heads):
        sl = slice(h * d, (h + 1) * d)
        logits = q[..., sl] @ np.swapaxes(k[..., sl], -1, -2) / np.sqrt(d)
        if mask is not None:
            logits = np.where(mask, logits, -np.inf)
        w = np.exp(logits - logits.max(-1, keepdims=True))
        outs.append((w / w.sum(-1, keepdims=True)) @ v[..., sl])
    return np.concatenate(outs, -1) @ p["out"]["w"] + p["out"]["b"]


def _init(layer, shape, seed=0):
    out_shape, params = layer.init(jax.random.key(seed), shape)
    # non-zero biases, so the reference checks them too
    params = jax.tree.map(lambda a: a + 0.1 * _randn(seed + 1, a.shape), params)
    return out_shape, params


def test_self_attention_matches_reference():
    mha = jnn.MultiHeadAttention(4)
    out_shape, params = _init(mha, (-1, 6, 16))
    assert out_shape == (-1, 6, 16)
    assert params["query"]["w"].shape == (16, 16) and params["out"]["w"].shape == (16, 16)
    x = _randn(2, (3, 6, 16))
    y = jax.jit(mha.apply)(params, x)
    np.testing.assert_allclose(y, attention_reference(params, x, x, 4), rtol=1e-4, atol=1e-4)


def test_causal_and_padding_masks_match_reference():
    x = _randn(3, (2, 5, 8))
    causal = jnn.MultiHeadAttention(2, causal=True)
    _, params = _init(causal, (-1, 5, 8))
    tri = np.tril(np.ones((5, 5), bool))
    np.testing.assert_allclose(
        causal.apply(params, x), attention_reference(params, x, x, 2, tri), rtol=1e-4, atol=1e-4
    )
    # causal: outputs at position i do not depend on later positions
    x2 = x.copy()
    x2[:, 3:] += 10.0
    np.testing.assert_allclose(
        causal.apply(params, x2)[:, :3], causal.apply(params, x)[:, :3], rtol=1e-5, atol=1e-5
    )
    valid = np.array([[True] * 5, [True, True, True, False, False]])
    mask = np.asarray(jnn.layers.attention_mask(np.ones((2, 5), bool), valid))
    plain = jnn.MultiHeadAttention(2)
    y = plain.apply(params, (x, x, mask))
    np.testing.assert_allclose(y, attention_reference(params, x, x, 2, mask), rtol=1e-4, atol=1e-4)
    y_both = causal.apply(params, (x, x, mask))
    ref = attention_reference(params, x, x, 2, mask & tri)
    np.testing.assert_allclose(y_both, ref, rtol=1e-4, atol=1e-4)


def test_cross_attention_shapes_numerics_and_vmap():
    mha = jnn.MultiHeadAttention(2, head_dim=3, out_features=7)
    out_shape, params = _init(mha, ((None, 4, 5), (None, 6, 9)))
    assert out_shape == (-1, 4, 7) and params["key"]["w"].shape == (9, 6)
    q, kv = _randn(4, (3, 4, 5)), _randn(5, (3, 6, 9))
    y = mha.apply(params, (q, kv))
    assert y.shape == (3, 4, 7)
    np.testing.assert_allclose(y, attention_reference(params, q, kv, 2), rtol=1e-4, atol=1e-4)
    yv = jax.jit(jax.vmap(lambda a, b: mha.apply(params, (a, b))))(q, kv)
    np.testing.assert_allclose(yv, y, rtol=1e-5, atol=1e-5)
    y4 = mha.apply(params, (q.reshape(1, 3, 4, 5), kv.reshape(1, 3, 6, 9)))
    np.testing.assert_allclose(y4[0], y, rtol=1e-5, atol=1e-5)


def test_attention_gradients():
    mha = jnn.MultiHeadAttention(2, causal=True)
    _, params = _init(mha, (-1, 3, 4))
    x = jnp.asarray(_randn(6, (2, 3, 4)))
    check_grads(mha.apply, (params, x), order=1, modes=["rev"], atol=2e-2, rtol=2e-2)


def test_attention_errors():
    mha = jnn.MultiHeadAttention(2)
    _, params = mha.init(jax.random.key(0), (-1, 5, 8))
    with pytest.raises(
        ValueError, match=r"MultiHeadAttention\(2\).*\(\*batch, length, 8\).*\(2, 5, 6\)"
    ):
        mha.apply(params, jnp.ones((2, 5, 6)))
    with pytest.raises(ValueError, match=r"MultiHeadAttention\(2\).*rank >= 2.*\(8,\)"):
        mha.apply(params, jnp.ones((8,)))
    with pytest.raises(ValueError, match=r"mask of shape.*\(2, 5, 5\), got \(2, 5\)"):
        mha.apply(params, (jnp.ones((2, 5, 8)), jnp.ones((2, 5, 8)), jnp.ones((2, 5), bool)))
    with pytest.raises(TypeError, match="mask must be boolean"):
        mha.apply(params, (jnp.ones((2, 5, 8)), jnp.ones((2, 5, 8)), jnp.ones((2, 5, 5))))
    with pytest.raises(ValueError, match="not divisible by num_heads=3"):
        jnn.MultiHeadAttention(3).init(jax.random.key(0), (-1, 5, 8))
    with pytest.raises(ValueError, match="same batch axes"):
        mha.apply(params, (jnp.ones((2, 5, 8)), jnp.ones((3, 5, 8))))


def test_embedding_lookup_errors_and_grads():
    emb = jnn.Embedding(6, 3)
    out_shape, params = emb.init(jax.random.key(0), (-1, 4))
    assert out_shape == (-1, 4, 3)
    ids = np.array([[0, 5, 2, 2]])
    np.testing.assert_array_equal(emb.apply(params, ids), np.asarray(params["embedding"])[ids])
    np.testing.assert_array_equal(
        jax.jit(jax.vmap(lambda i: emb.apply(params, i)))(ids[0]),
        np.asarray(params["embedding"])[ids[0]],
    )
    with pytest.raises(
        ValueError, match=r"Embedding\(6, 3\): ids must be in \[0, 6\), got values in \[0, 6\]"
    ):
        emb.apply(params, np.array([0, 6]))
    with pytest.raises(
        TypeError, match=r"Embedding\(6, 3\): expected integer ids, got dtype float32"
    ):
        emb.apply(params, np.ones((2,), np.float32))
    assert np.isnan(jax.jit(emb.apply)(params, jnp.array([7]))).all()  # never a silent clip
    g = jax.grad(lambda p: emb.apply(p, jnp.array([1, 1, 3])).sum())(params)["embedding"]
    np.testing.assert_array_equal(g[:, 0], [0, 2, 0, 1, 0, 0])


def test_positional_embedding():
    pos = jnn.PositionalEmbedding(6)
    out_shape, params = pos.init(jax.random.key(0), (-1, 4, 3))
    assert out_shape == (-1, 4, 3) and params["embedding"].shape == (6, 3)
    x = _randn(0, (2, 4, 3))
    np.testing.assert_allclose(
        pos.apply(params, x), x + np.asarray(params["embedding"])[:4], rtol=1e-6
    )
    with pytest.raises(ValueError, match=r"PositionalEmbedding\(6\).*T <= 6, got \(2, 7, 3\)"):
        pos.apply(params, jnp.ones((2, 7, 3)))
    with pytest.raises(
        ValueError, match=r"PositionalEmbedding\(6\).*\(\.\.\., T, 3\).*\(2, 4, 5\)"
    ):
        pos.apply(params, jnp.ones((2, 4, 5)))


def test_transformer_block_in_a_few_lines():
    block = jnn.serial(
        jnn.residual(jnn.LayerNorm(), jnn.MultiHeadAttention(2, causal=True)),
        jnn.residual(jnn.LayerNorm(), jnn.Dense(16, activation="gelu"), jnn.Dense(8)),
    )
    model = jnn.serial(jnn.Embedding(10, 8), jnn.PositionalEmbedding(5), block, jnn.Dense(10))
    out_shape, params = model.init(jax.random.key(0), (-1, 5))
    assert out_shape == (-1, 5, 10)
    assert model.apply(params, jnp.zeros((2, 5), jnp.int32)).shape == (2, 5, 10)


def test_attention_refuses_rows_without_a_sequence_axis():
    """After a Dense on (batch, features) rows, attention would mix the examples of a batch."""
    model = jnn.serial(jnn.Dense(8), jnn.MultiHeadAttention(2))
    with pytest.raises(ValueError, match=r"MultiHeadAttention\(2\).init: .*axis.*\(-1, 8\)"):
        model.init(jax.random.key(0), (-1, 4))
    with pytest.raises(ValueError, match="sequence axis"):
        jnn.MultiHeadAttention(2).init(jax.random.key(0), ((-1, 4, 8), (-1, 8)))
    # (batch, T, D) works, and so does one unbatched (T, D) sequence under vmap.
    mha = jnn.MultiHeadAttention(2)
    _, params = mha.init(jax.random.key(0), (-1, 3, 8))
    x = jnp.asarray(_randn(1, (4, 3, 8)))
    np.testing.assert_allclose(
        jax.vmap(lambda e: mha.apply(params, e))(x), mha.apply(params, x), rtol=1e-5, atol=1e-5
    )


def test_attention_mask_is_boolean_for_any_flag_dtype():
    want = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 0]], bool)
    for flags in ([True, True, False], [1, 1, 0], [1.0, 1.0, 0.0]):
        mask = jnn.layers.attention_mask(jnp.asarray(flags))
        assert mask.dtype == jnp.bool_, flags
        np.testing.assert_array_equal(mask, want)
    cross = jnn.layers.attention_mask(jnp.array([1, 0]), jnp.array([0.0, 1.0, 1.0]))
    assert cross.dtype == jnp.bool_
    np.testing.assert_array_equal(cross, [[False, True, True], [False, False, False]])
