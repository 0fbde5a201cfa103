"""``model.init`` runs as one compiled program per structure and input shape
(jnn/layers/_init.py): the values of the eager init, in the same order, compiled once."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jnn

# (layer, input shape): every kind of parameter and state jnn creates.
CASES = {
    "dense": (lambda: jnn.Dense(5, activation="relu"), (-1, 3)),
    "conv": (lambda: jnn.Conv(4, (3, 3), strides=2), (-1, 8, 8, 3)),
    "conv_transpose": (lambda: jnn.ConvTranspose(4, (3, 3)), (-1, 6, 6, 2)),
    "batch_norm": (lambda: jnn.BatchNorm(), (-1, 5)),
    "layer_norm": (lambda: jnn.LayerNorm(), (-1, 5)),
    "embedding": (lambda: jnn.Embedding(50, 4), (-1, 7)),
    "lstm": (lambda: jnn.LSTM(6), (-1, 5, 3)),
    "gru": (lambda: jnn.Bidirectional(jnn.GRU(4)), (-1, 5, 3)),
    "attention": (lambda: jnn.MultiHeadAttention(2), (-1, 5, 4)),
    "positional": (lambda: jnn.PositionalEmbedding(8), (-1, 8, 4)),
    "repeat": (lambda: jnn.repeat(jnn.Dense(3), 3), (-1, 3)),
    "model": (
        lambda: jnn.serial(
            jnn.Dense(8, activation="relu"),
            jnn.BatchNorm(),
            jnn.Dropout(0.1),
            jnn.residual(jnn.Dense(8)),
            jnn.remat(jnn.Dense(2)),
        ),
        (-1, 4),
    ),
}


def _keys_in_order(tree):
    """The nested dict keys in insertion order (jax.tree flattening sorts them)."""
    if isinstance(tree, dict):
        return [(k, _keys_in_order(v)) for k, v in tree.items()]
    if isinstance(tree, (list, tuple)):
        return [_keys_in_order(v) for v in tree]
    return None


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("raw_key", [False, True], ids=["typed_key", "raw_key"])
def test_compiled_init_gives_the_eager_values_in_the_eager_order(name, raw_key):
    """Same shapes, dtypes, dict order and values (to float rounding) as the init the
    layer was built with, run op by op."""
    build, shape = CASES[name]
    layer = build()
    key = jax.random.PRNGKey(3) if raw_key else jax.random.key(3)
    eager = inspect.unwrap(layer.init)  # the function the layer was built with
    assert eager is not layer.init
    want = eager(key, shape)
    got = layer.init(key, shape)
    assert got[0] == want[0]  # the output shape
    assert len(got) == len(want)  # (shape, params) or (shape, params, state)
    for g, w in zip(got[1:], want[1:], strict=True):
        assert _keys_in_order(g) == _keys_in_order(w)
        assert jax.tree.structure(g) == jax.tree.structure(w)
        for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(w), strict=True):
            assert a.dtype == b.dtype and a.shape == b.shape
            # The same ops on the same keys; XLA fuses them, so normal and orthogonal
            # draws may differ from the op-by-op eager run in the last bits.
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


def test_a_second_model_built_by_the_same_code_initializes_without_compiling(compiles):
    def build():
        return jnn.serial(jnn.Dense(7, activation="tanh"), jnn.Dense(3), jnn.Dense(1))

    key = jax.random.key(0)
    build().init(key, (-1, 9))
    first = compiles.count
    assert first >= 1
    _, params = build().init(jax.random.key(1), (-1, 9))  # a new object, a new key
    assert compiles.count == first
    _, again = build().init(jax.random.key(1), (-1, 9))
    jax.tree.map(np.testing.assert_array_equal, params, again)
    build().init(key, (-1, 10))  # another input shape: another program
    assert compiles.count > first


def test_layers_differing_only_in_code_share_no_program():
    """Two custom layers described alike (same kind, no config) but with different init
    code: each initializes with its own code, whichever compiled first."""

    def described(init):
        return jnn.layers.describe(jnn.Layer(init, lambda p, x, **kw: x * p["w"]), "custom")

    def ones(key, shape):
        return tuple(shape), {"w": jnp.ones((shape[-1],), jnp.float32)}

    def zeros(key, shape):
        return tuple(shape), {"w": jnp.zeros((shape[-1],), jnp.float32)}

    key = jax.random.key(0)
    np.testing.assert_array_equal(described(ones).init(key, (-1, 3))[1]["w"], np.ones(3))
    np.testing.assert_array_equal(described(zeros).init(key, (-1, 3))[1]["w"], np.zeros(3))


def test_an_init_that_needs_concrete_values_runs_eagerly():
    def init(key, shape):
        scale = float(jax.random.uniform(key))  # concrete: cannot be traced
        return tuple(shape), {"w": np.full((shape[-1],), scale, np.float32)}

    layer = jnn.layers.describe(jnn.Layer(init, lambda p, x, **kw: x * p["w"]), "concrete")
    key = jax.random.key(2)
    _, params = layer.init(key, (-1, 3))
    assert isinstance(params["w"], np.ndarray)  # the eager call's own result
    np.testing.assert_array_equal(params["w"], init(key, (-1, 3))[1]["w"])
    _, again = layer.init(jax.random.key(3), (-1, 3))  # and every later call
    assert not np.array_equal(again["w"], params["w"])


def test_init_composes_with_vmap_jit_and_eval_shape():
    model = jnn.serial(jnn.Dense(4), jnn.Dense(2))
    keys = jax.random.split(jax.random.key(0), 3)
    batched = jax.vmap(lambda k: model.init(k, (-1, 5))[1])(keys)
    assert batched["dense_0"]["w"].shape == (3, 5, 4)
    for i in range(3):
        one = model.init(keys[i], (-1, 5))[1]
        jax.tree.map(
            lambda b, o, i=i: np.testing.assert_allclose(b[i], o, rtol=1e-6, atol=1e-7),
            batched,
            one,
        )
    jitted = jax.jit(lambda k: model.init(k, (-1, 5))[1])(keys[0])
    jax.tree.map(np.testing.assert_array_equal, jitted, model.init(keys[0], (-1, 5))[1])
    shapes = jax.eval_shape(lambda k: model.init(k, (-1, 5))[1], keys[0])
    assert shapes["dense_1"]["w"].shape == (4, 2)


def test_bad_input_gets_the_eager_errors():
    model = jnn.serial(jnn.Dense(4), jnn.Dense(2))
    with pytest.raises(TypeError, match=r"key must be a PRNG key such as .*, got int"):
        model.init(0, (-1, 5))
    with pytest.raises(ValueError, match="expected a single PRNG key"):
        model.init(jax.random.split(jax.random.key(0), 2), (-1, 5))
    with pytest.raises(ValueError, match="feature"):
        model.init(jax.random.key(0), (-1, -1))
    # A failed trace caches nothing: the right shape then works.
    assert model.init(jax.random.key(0), (-1, 5))[0] == (-1, 2)
