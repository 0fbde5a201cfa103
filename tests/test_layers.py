"""Layers: shape inference, numerics, jit/grad/vmap composition, errors."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jnn

SEED_NET = [
    lambda: jnn.Dense(10, activation="relu"),
    lambda: jnn.Dense(10, activation="relu"),
    lambda: jnn.Dense(1, activation="sigmoid"),
]


def seed_model():
    return jnn.serial(*(make() for make in SEED_NET))


LAYERS = {
    "dense": (lambda: jnn.Dense(7), (-1, 5)),
    "dense_act": (lambda: jnn.Dense(3, activation="tanh", use_bias=False), (None, 4)),
    "flatten": (lambda: jnn.Flatten(), (-1, 2, 3, 4)),
    "flatten_ndim": (lambda: jnn.Flatten(2), (-1, 6, 2, 3)),
    "dropout": (lambda: jnn.Dropout(0.3), (-1, 4)),
    "relu": (lambda: jnn.Relu(), (-1, 3)),
    "softmax": (lambda: jnn.Softmax(), (-1, 3)),
    "log_softmax": (lambda: jnn.LogSoftmax(), (-1, 3)),
    "gelu": (lambda: jnn.Gelu(), (-1, 3)),
    "leaky_relu": (lambda: jnn.LeakyRelu(0.2), (-1, 3)),
    "elu": (lambda: jnn.Elu(), (-1, 3)),
    "sigmoid": (lambda: jnn.Sigmoid(), (-1, 3)),
    "tanh": (lambda: jnn.Tanh(), (-1, 3)),
    "identity": (lambda: jnn.Identity(), (-1, 3)),
    "serial": (seed_model, (-1, 10)),
    "residual": (lambda: jnn.residual(jnn.Dense(4, activation="relu"), jnn.Dense(4)), (-1, 4)),
    "branches_sum": (
        lambda: jnn.serial(jnn.FanOut(2), jnn.parallel(jnn.Dense(3), jnn.Dense(3)), jnn.FanInSum()),
        (-1, 5),
    ),
    "branches_concat": (
        lambda: jnn.serial(
            jnn.FanOut(2), jnn.parallel(jnn.Dense(3), jnn.Dense(2)), jnn.FanInConcat()
        ),
        (-1, 5),
    ),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
@pytest.mark.parametrize("batch", [(2,), (3, 2)])
def test_init_shape_matches_apply(name, batch):
    make, in_shape = LAYERS[name]
    layer = make()
    out_shape, params = layer.init(jax.random.key(0), in_shape)
    x = jax.random.normal(jax.random.key(1), (*batch, *in_shape[1:]))
    if name == "flatten" and len(batch) > 1:  # Flatten() keeps exactly one leading axis
        batch = (batch[0],)
        x = x.reshape(batch[0], -1, *in_shape[2:])
        out_shape = (-1, int(np.prod(x.shape[1:])))
    y = jax.jit(layer.apply, static_argnames="train")(params, x)
    assert y.shape == (*batch, *out_shape[1:])


def test_dense_matches_formula(key):
    layer = jnn.Dense(4, activation="relu")
    _, params = layer.init(key, (-1, 3))
    x = jax.random.normal(jax.random.key(2), (5, 3))
    expected = np.maximum(np.asarray(x) @ np.asarray(params["w"]) + np.asarray(params["b"]), 0)
    np.testing.assert_allclose(layer.apply(params, x), expected, rtol=1e-6, atol=1e-6)


def test_dense_default_init_is_keras_like(key):
    _, params = jnn.Dense(200).init(key, (-1, 100))
    limit = np.sqrt(6 / (100 + 200))  # glorot uniform
    assert float(jnp.abs(params["w"]).max()) <= limit
    assert float(jnp.abs(params["w"]).max()) > 0.9 * limit
    assert params["w"].shape == (100, 200) and params["w"].dtype == jnp.float32
    np.testing.assert_array_equal(params["b"], np.zeros(200))


def test_params_are_named_dicts(key):
    model = jnn.serial(jnn.Dense(4), jnn.Relu(), jnn.Dropout(0.1), jnn.Dense(1))
    _, params = model.init(key, (-1, 3))
    assert list(params) == ["dense_0", "relu_0", "dropout_0", "dense_1"]
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
    assert paths == ["['dense_0']['b']", "['dense_0']['w']", "['dense_1']['b']", "['dense_1']['w']"]


def test_grad_against_finite_differences(key):
    model = jnn.serial(
        jnn.Dense(5, activation="tanh"), jnn.Dense(3, activation="gelu"), jnn.Dense(1)
    )
    _, params = model.init(key, (-1, 4))
    params = jax.tree.map(lambda p: p.astype(jnp.float32), params)
    x = jax.random.normal(jax.random.key(3), (6, 4))
    y = jax.random.normal(jax.random.key(4), (6, 1))

    def loss(p):
        return jnn.losses.mse(model.apply(p, x), y)

    check_grads(loss, (params,), order=1, modes=["rev"], atol=5e-2, rtol=5e-2, eps=1e-2)


def test_vmap_init_and_apply_over_keys():
    model = seed_model()
    keys = jax.random.split(jax.random.key(0), 64)
    stacked = jax.vmap(lambda k: model.init(k, (-1, 10))[1])(keys)
    assert stacked["dense_0"]["w"].shape == (64, 10, 10)
    x = jnp.ones((8, 10))
    out = jax.jit(jax.vmap(model.apply, in_axes=(0, None)))(stacked, x)
    assert out.shape == (64, 8, 1)
    single = model.apply(jax.tree.map(lambda p: p[5], stacked), x)
    np.testing.assert_allclose(out[5], single, rtol=1e-6)
    assert not np.allclose(out[0], out[1])  # different keys, different nets


def test_vmap_apply_over_examples(key):
    model = jnn.serial(jnn.Dense(4, activation="relu"), jnn.Flatten(1), jnn.Dense(2))
    _, params = model.init(key, (-1, 3))
    x = jax.random.normal(key, (7, 3))
    per_example = jax.vmap(lambda xi: model.apply(params, xi))(x)
    np.testing.assert_allclose(per_example, model.apply(params, x), rtol=1e-6)


def test_dropout_rate_is_drop_probability():
    drop = jnn.Dropout(0.25)
    y = drop.apply({}, jnp.ones((100_000,)), key=jax.random.key(0), train=True)
    dropped = float((y == 0).mean())
    assert abs(dropped - 0.25) < 0.01
    np.testing.assert_allclose(float(y.mean()), 1.0, atol=0.02)  # scaled to keep expectation


def test_dropout_needs_key_only_in_training():
    drop = jnn.Dropout(0.5)
    x = jnp.ones((2, 3))
    np.testing.assert_array_equal(drop.apply({}, x), x)
    with pytest.raises(ValueError, match=r"needs a PRNG key.*key=jax\.random\.key"):
        drop.apply({}, x, train=True)


def test_serial_splits_keys_between_dropouts():
    model = jnn.serial(jnn.Dropout(0.5), jnn.Dropout(0.5))
    _, params = model.init(jax.random.key(0), (-1, 1000))
    y = model.apply(params, jnp.ones((1, 1000)), key=jax.random.key(1), train=True)
    kept = float((y != 0).mean())
    assert 0.2 < kept < 0.3  # two independent masks keep ~25%


def test_raw_uint32_keys_work(key):
    model = seed_model()
    _, p_typed = model.init(jax.random.key(3), (-1, 10))
    _, p_raw = model.init(jax.random.PRNGKey(3), (-1, 10))
    chex_equal = jax.tree.map(lambda a, b: bool((a == b).all()), p_typed, p_raw)
    assert all(jax.tree.leaves(chex_equal))


def test_activation_by_name_and_callable(key):
    for act in ["relu", "gelu", "tanh", "softplus", jax.nn.silu, None]:
        layer = jnn.Dense(2, activation=act)
        _, params = layer.init(key, (-1, 2))
        assert layer.apply(params, jnp.ones((1, 2))).shape == (1, 2)


def test_unknown_activation_suggests_close_match():
    with pytest.raises(ValueError, match="Did you mean 'relu'"):
        jnn.Dense(2, activation="rleu")


def test_sigmoid_gradient_never_underflows():
    g = jax.grad(lambda z: jnn.layers.sigmoid(z))
    assert float(g(0.0)) == pytest.approx(0.25)
    assert float(g(1e4)) > 0 and float(g(-1e4)) > 0
    np.testing.assert_allclose(
        jnn.layers.sigmoid(jnp.array([-3.0, 3.0])), jax.nn.sigmoid(jnp.array([-3.0, 3.0]))
    )


@pytest.mark.parametrize(
    "call, error, pattern",
    [
        (lambda: jnn.Dense(0), ValueError, "positive int"),
        (lambda: jnn.Dense(3).init(jax.random.key(0), (-1, -1)), ValueError, "feature"),
        (lambda: jnn.Dense(3).init(jax.random.key(0), (4, 0)), ValueError, "positive int"),
        (lambda: jnn.Dropout(1.0), ValueError, r"\[0, 1\)"),
        (lambda: jnn.Dropout(-0.1), ValueError, r"\[0, 1\)"),
        (lambda: jnn.serial(), ValueError, "at least one layer"),
        (lambda: jnn.serial(jnn.Relu), TypeError, "forget to call"),
        (
            lambda: jnn.residual(jnn.Dense(3)).init(jax.random.key(0), (-1, 4)),
            ValueError,
            r"\(-1, 4\) to \(-1, 3\)",
        ),
    ],
)
def test_layer_errors(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def test_dense_wrong_feature_dim_names_both_shapes(key):
    layer = jnn.Dense(3)
    _, params = layer.init(key, (-1, 4))
    with pytest.raises(
        ValueError,
        match=r"Dense\(3\): expected input of shape \(\.\.\., 4\), "
        r"got \(2, 5\)",
    ):
        jax.jit(layer.apply)(params, jnp.ones((2, 5)))


def test_dense_rejects_integer_input(key):
    layer = jnn.Dense(3)
    _, params = layer.init(key, (-1, 4))
    with pytest.raises(TypeError, match=r"floating-point input.*astype"):
        layer.apply(params, jnp.ones((2, 4), jnp.int32))


def test_stateless_model_keeps_two_function_contract(key):
    model = seed_model()
    assert isinstance(model, jnn.Layer) and not jnn.is_stateful(model)
    lifted = jnn.stateful(model)
    shape, params, state = lifted.init(key, (-1, 10))
    y, new_state = lifted.apply(params, state, jnp.ones((2, 10)))
    assert shape == (-1, 1) and y.shape == (2, 1) and new_state == state


HUGE_SIZES = """
import json, jax, jnn
k = jax.random.key(0)
cases = {
    "Dense(2**62)": lambda: jnn.Dense(2**62).init(k, (-1, 3)),
    "Dense(4) on 2**62 features": lambda: jnn.Dense(4).init(k, (-1, 2**62)),
    "Dense(2**40)": lambda: jnn.Dense(2**40).init(k, (-1, 3)),
    "Embedding(10**12, 8)": lambda: jnn.Embedding(10**12, 8).init(k, (-1, 5)),
    "Conv(2**31)": lambda: jnn.Conv(2**31, (3, 3)).init(k, (-1, 8, 8, 3)),
    "MultiHeadAttention head_dim": lambda: jnn.MultiHeadAttention(2, head_dim=2**40).init(
        k, (-1, 4, 8)
    ),
    "BatchNorm(2**40 features)": lambda: jnn.BatchNorm().init(k, (-1, 2**40)),
    "LSTM(2**40)": lambda: jnn.LSTM(2**40).init(k, (-1, 5, 3)),
    "serial(Dense(3), Dense(2**40))": lambda: jnn.serial(jnn.Dense(3), jnn.Dense(2**40)).init(
        k, (-1, 3)
    ),
}
out = {}
for name, call in cases.items():
    try:
        call()
        out[name] = "no error"
    except ValueError as err:
        out[name] = str(err)
print(json.dumps(out))
"""


def test_huge_sizes_are_refused_at_init_not_by_an_abort():
    """Sizes that overflow XLA's element count (SIGABRT) or exceed memory fail at init, named.

    Run in a subprocess: should the check regress, XLA aborts that process, not pytest.
    """
    import json
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", HUGE_SIZES], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"the interpreter died ({done.returncode}): {done.stderr[-2000:]}"
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert (
        "Dense(4611686018427387904).init: parameter 'w' of shape (3, 4611686018427387904)"
        in (got["Dense(2**62)"])
    )
    assert "more than XLA can index" in got["Dense(2**62)"]
    assert re.search(
        r"Dense\(4\).init: input_shape of shape \(-1, 4611686018427387904\) holds .* elements "
        r"per example .*more than the .* of memory",
        got["Dense(4) on 2**62 features"],
    )
    assert re.search(
        r"Dense\(1099511627776\).init: parameter 'w' of shape \(3, 1099511627776\) float32 "
        r"needs 13194139533312 bytes \(12 TiB\), more than the [\d.]+ [GT]iB of memory",
        got["Dense(2**40)"],
    )
    assert (
        "parameter 'embedding' of shape (1000000000000, 8) float32 needs 32000000000000"
        in (got["Embedding(10**12, 8)"])
    )
    layer = {
        "Conv(2**31)": "Conv(2147483648, (3, 3)).init: parameter 'w'",
        "MultiHeadAttention head_dim": "MultiHeadAttention(2).init: parameter 'query.w'",
        "BatchNorm(2**40 features)": "BatchNorm.init: input_shape",
        "LSTM(2**40)": "LSTM(1099511627776).init: parameter 'w_ih'",
        "serial(Dense(3), Dense(2**40))": "Dense(1099511627776).init: parameter 'w'",
    }
    for name, prefix in layer.items():
        assert got[name].startswith(prefix), (name, got[name])
    assert all("Use smaller sizes" in message for message in got.values()), got


def test_sizes_accept_numpy_ints_and_refuse_bools(key):
    shape, params = jnn.Dense(np.int64(3)).init(key, (np.int32(-1), np.int64(4)))
    assert shape == (-1, 3) and params["w"].shape == (4, 3)
    assert (
        jnn.layers.spec_of(jnn.Dense(np.int64(3))).config == jnn.layers.spec_of(jnn.Dense(3)).config
    )  # numpy scalars are stored as Python numbers: one compiled program for both
    drop = jnn.Dropout(np.float32(0.5))
    y = drop.apply({}, jnp.ones((2, 8)), key=key, train=True)
    assert set(np.unique(np.asarray(y))) <= {0.0, 2.0}
    assert jnn.Conv(np.int64(2), (np.int64(3),), strides=np.int32(1)).init(key, (-1, 5, 1))[0] == (
        -1,
        5,
        2,
    )
    for call, what in [
        (lambda: jnn.FanOut(True), "FanOut: num"),
        (lambda: jnn.Flatten(True), "Flatten: ndim"),
        (lambda: jnn.Dense(True), "Dense: features"),
        (lambda: jnn.Embedding(10, np.bool_(True)), "Embedding: features"),
        (lambda: jnn.Conv(4, (3, True)), "Conv: kernel_size"),
        (lambda: jnn.Dense(3).init(key, (-1, True)), r"Dense\(3\).init: every dimension"),
        (lambda: jnn.Dropout(True), "Dropout: rate"),
        (lambda: jnn.BatchNorm(momentum=True), "BatchNorm: momentum"),
        (lambda: jnn.MultiHeadAttention(np.int64(2), head_dim=False), "head_dim"),
    ]:
        with pytest.raises(ValueError, match=what):
            call()


def test_init_names_a_missing_axis():
    """feature_dim: an input_shape of too low a rank, or an unknown feature axis."""
    with pytest.raises(ValueError, match=r"PositionalEmbedding\(8\)\.init: expected an input_shape "
                       r"of rank >= 2, got \(-1,\)"):  # fmt: skip
        jnn.PositionalEmbedding(8).init(jax.random.key(0), (-1,))
    with pytest.raises(ValueError, match=r"Dense\(2\)\.init: the feature \(last\) dimension must "
                       r"be known, got \(3, -1\)"):  # fmt: skip
        jnn.Dense(2).init(jax.random.key(0), (3, None))
