"""Layers describe themselves (kind, config, children): summary rows, names, structure keys."""

import inspect
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jnn
from jnn.layers._base import structure_key

# One instance of every public constructor (each needs its own arguments).
BUILT = {
    "Activation": jnn.Activation("tanh"),
    "AvgPool": jnn.AvgPool((2, 2)),
    "BatchNorm": jnn.BatchNorm(),
    "Bidirectional": jnn.Bidirectional(jnn.LSTM(3)),
    "Conv": jnn.Conv(4, (3, 3)),
    "ConvTranspose": jnn.ConvTranspose(4, (3, 3)),
    "Dense": jnn.Dense(3),
    "Dropout": jnn.Dropout(0.5),
    "Elu": jnn.Elu(),
    "Embedding": jnn.Embedding(10, 4),
    "FanInConcat": jnn.FanInConcat(),
    "FanInSum": jnn.FanInSum(),
    "FanOut": jnn.FanOut(2),
    "Flatten": jnn.Flatten(),
    "GRU": jnn.GRU(3),
    "GRUCell": jnn.GRUCell(3),
    "Gelu": jnn.Gelu(),
    "GlobalAvgPool": jnn.GlobalAvgPool(),
    "GlobalMaxPool": jnn.GlobalMaxPool(),
    "Identity": jnn.Identity(),
    "LSTM": jnn.LSTM(3),
    "LSTMCell": jnn.LSTMCell(3),
    "LayerNorm": jnn.LayerNorm(),
    "LeakyRelu": jnn.LeakyRelu(),
    "LogSoftmax": jnn.LogSoftmax(),
    "MaxPool": jnn.MaxPool((2, 2)),
    "MultiHeadAttention": jnn.MultiHeadAttention(2),
    "PositionalEmbedding": jnn.PositionalEmbedding(8),
    "RMSNorm": jnn.RMSNorm(),
    "Relu": jnn.Relu(),
    "Reshape": jnn.Reshape((2, -1)),
    "Selu": jnn.Selu(),
    "Sigmoid": jnn.Sigmoid(),
    "Silu": jnn.Silu(),
    "SimpleRNN": jnn.SimpleRNN(3),
    "Softmax": jnn.Softmax(),
    "Softplus": jnn.Softplus(),
    "Tanh": jnn.Tanh(),
    "parallel": jnn.parallel(jnn.Dense(2), jnn.Relu()),
    "remat": jnn.remat(jnn.Dense(3)),
    "repeat": jnn.repeat(jnn.Dense(3), 2),
    "residual": jnn.residual(jnn.Dense(3)),
    "serial": jnn.serial(jnn.Dense(2), jnn.Relu()),
}


def test_every_public_constructor_is_covered():
    constructors = {
        name
        for name in jnn.layers.__all__
        if inspect.isfunction(getattr(jnn.layers, name))
        and (name[0].isupper() or name in ("serial", "parallel", "residual", "remat", "repeat"))
    }
    assert constructors == set(BUILT)


@pytest.mark.parametrize("name", sorted(BUILT))
def test_every_constructor_describes_its_layer(name):
    spec = jnn.layers.spec_of(BUILT[name])
    assert spec is not None
    # The kind keys the layer in its parent's params: the names jnn always used.
    irregular = {"RMSNorm": "rmsnorm", "SimpleRNN": "simple_rnn"}
    irregular |= {"LSTMCell": "lstm_cell", "GRUCell": "gru_cell"}
    want = irregular.get(name) or re.sub(r"(?<=[a-z])(?=[A-Z])", "_", name).lower()
    assert spec.kind == want
    # The lifted (stateful) form is the same layer: same description.
    assert jnn.layers.spec_of(jnn.stateful(BUILT[name])) == spec


def test_config_records_the_arguments():
    spec = jnn.layers.spec_of(jnn.Conv(8, [3, 3], strides=2, activation="relu"))
    config = dict(spec.config)
    assert config["features"] == 8
    assert config["kernel_size"] == (3, 3)  # lists frozen to tuples
    assert config["strides"] == 2
    assert config["activation"] == "relu"


def test_children_are_named_like_the_params():
    model = jnn.serial(jnn.Dense(4), jnn.Relu(), jnn.Dense(1), jnn.residual(jnn.Dense(1)))
    _, params = model.init(jax.random.key(0), (-1, 3))
    names = [name for name, _ in jnn.layers.spec_of(model).children]
    assert names == list(params) == ["dense_0", "relu_0", "dense_1", "residual_0"]
    inner = dict(jnn.layers.spec_of(model).children)["residual_0"]
    assert [n for n, _ in jnn.layers.spec_of(inner).children] == list(params["residual_0"])


def test_summary_reads_descriptions_not_closures():
    model = jnn.serial(
        jnn.Dense(4),
        jnn.serial(jnn.FanOut(2), jnn.parallel(jnn.Dense(2), jnn.Dense(3)), jnn.FanInConcat()),
        jnn.BatchNorm(),
    )
    rows = jnn.summary(model, (-1, 3)).rows
    assert [(r.depth, r.name) for r in rows] == [
        (0, "serial"),
        (1, "dense_0"),
        (1, "serial_0"),
        (2, "fan_out_0"),
        (2, "parallel_0"),
        (3, "dense_0"),
        (3, "dense_1"),
        (2, "fan_in_concat_0"),
        (1, "batch_norm_0"),
    ]
    assert rows[5].output_shape == (-1, 2) and rows[6].output_shape == (-1, 3)


def test_custom_layer_describes_itself():
    def Scale(factor):
        def init(key, input_shape):
            return tuple(input_shape), {}

        def apply(params, x, *, key=None, train=False):
            return factor * x

        return jnn.layers.describe(jnn.Layer(init, apply), "scale", {"factor": factor})

    model = jnn.serial(jnn.Dense(2), Scale(2.0), Scale(3.0))
    _, params = model.init(jax.random.key(0), (-1, 2))
    assert list(params) == ["dense_0", "scale_0", "scale_1"]
    assert [r.name for r in jnn.summary(model, (-1, 2)).rows] == [
        "serial", "dense_0", "scale_0", "scale_1"
    ]  # fmt: skip
    y = model.apply(params, jnp.ones((1, 2)))
    assert jnp.allclose(y, 6.0 * jnn.Dense(2).apply(params["dense_0"], jnp.ones((1, 2))))


def MyBlock():
    def init(key, input_shape):
        return tuple(input_shape), {}

    def apply(params, x, *, key=None, train=False):
        return x

    return jnn.Layer(init, apply)


def test_undescribed_custom_layer_is_named_after_its_constructor():
    _, params = jnn.serial(MyBlock(), MyBlock()).init(jax.random.key(0), (-1, 2))
    assert list(params) == ["my_block_0", "my_block_1"]
    assert jnn.layers.spec_of(MyBlock()) is None


def test_describe_refuses_bad_input():
    with pytest.raises(ValueError, match="snake_case"):
        jnn.layers.describe(jnn.Dense(2), "Dense")
    with pytest.raises(TypeError, match=r"expected a jnn\.Layer"):
        jnn.layers.describe(lambda x: x, "fn")


def test_structure_key_equal_for_models_built_the_same_way():
    def build(width):
        return jnn.serial(jnn.Dense(width, activation="relu"), jnn.Dropout(0.1), jnn.Dense(1))

    a, b = build(10), build(10)
    assert a is not b and a != b  # different objects, different closures
    assert structure_key(a) == structure_key(b)
    assert hash(structure_key(a)) == hash(structure_key(b))
    assert structure_key(a) != structure_key(build(11))
    relu_vs_tanh = jnn.serial(jnn.Dense(10, activation="tanh"), jnn.Dropout(0.1), jnn.Dense(1))
    assert structure_key(a) != structure_key(relu_vs_tanh)
    assert structure_key(jnn.Dropout(0.1)) != structure_key(jnn.Dropout(0.2))


def test_structure_key_falls_back_to_identity():
    def apply(params, x, *, key=None, train=False):
        return x

    plain = jnn.Layer(lambda key, shape: (tuple(shape), {}), apply)
    other = jnn.Layer(lambda key, shape: (tuple(shape), {}), apply)
    assert structure_key(jnn.serial(plain)) == structure_key(jnn.serial(plain))
    assert structure_key(jnn.serial(plain)) != structure_key(jnn.serial(other))


def test_a_wrapper_reusing_init_with_another_apply_shares_nothing(key):
    """Layer(base.init, my_apply) keeps the name but not the structure key, so fit never
    runs the base layer's compiled program in place of the wrapper's apply."""
    base = jnn.Dense(2)

    def doubled(params, x, *, key=None, train=False):
        return 2.0 * base.apply(params, x, key=key, train=train)

    wrapper = jnn.Layer(base.init, doubled)
    assert jnn.layers.spec_of(wrapper).kind == "dense"
    assert structure_key(wrapper) != structure_key(jnn.Dense(2))
    _, params = base.init(key, (-1, 3))
    x = np.ones((4, 3), np.float32)
    jnn.predict(jnn.Dense(2), params, x)  # compiles the plain Dense program first
    np.testing.assert_allclose(jnn.predict(wrapper, params, x), 2.0 * base.apply(params, x))


@pytest.mark.parametrize("name", sorted(BUILT))
def test_every_constructor_argument_is_described(name):
    """Models with equal descriptions share compiled programs (jnn.train._cache), so a
    description must hold every argument that init/apply close over: each constructor
    parameter is in the config, or is a child layer (combinators)."""
    spec = jnn.layers.spec_of(BUILT[name])
    config = dict(spec.config)
    for param in inspect.signature(getattr(jnn.layers, name)).parameters:
        if param in ("layer", "layers"):  # the children
            assert spec.children, f"{name}: its {param} are not described as children"
        else:
            assert param in config, f"{name}: argument {param!r} is missing from its description"


def test_structure_key_tells_equal_values_of_other_types_apart():
    def scale(factor):  # factor * an int32 input: int32 for 2, float32 for 2.0
        layer = jnn.Layer(lambda key, shape: (tuple(shape), {}), lambda p, x, **kw: factor * x)
        return jnn.layers.describe(layer, "scale", {"factor": factor})

    assert 2 == 2.0 and structure_key(scale(2)) != structure_key(scale(2.0))
    assert structure_key(scale(True)) != structure_key(scale(1))
    assert structure_key(scale(2.0)) == structure_key(scale(2.0))


def test_layers_described_alike_with_different_code_share_no_program():
    """Two constructors that describe their layers alike (same kind, no config) but
    compute differently: the structure key holds the code of init and apply."""

    def described(apply):
        layer = jnn.Layer(lambda key, shape: (tuple(shape), {}), apply)
        return jnn.layers.describe(layer, "custom")

    def double(params, x, *, key=None, train=False):
        return 2.0 * x

    def negate(params, x, *, key=None, train=False):
        return -x

    assert structure_key(described(double)) == structure_key(described(double))
    assert structure_key(described(double)) != structure_key(described(negate))
    x = np.ones((3, 2), np.float32)
    np.testing.assert_allclose(jnn.predict(described(double), {}, x), 2.0 * x)
    np.testing.assert_allclose(jnn.predict(described(negate), {}, x), -x)
