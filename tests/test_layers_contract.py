"""What every layer constructor promises beyond its math: its description holds the values
it was given, its params take the dtype asked for, and its errors name the layer and the
argument. (Written for mutants of jnn/layers that survived: see tools/mutation.md.)"""

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jnn
from jnn.layers._base import structure_key

K = jax.random.key(0)

# name -> (constructor, args, kwargs): non-default values where the constructor allows.
BUILT_WITH = {
    "Dense": (jnn.Dense, (3,), dict(activation="relu", use_bias=False)),
    "Conv": (jnn.Conv, (4, (3, 3)), dict(strides=2, padding="SAME")),
    "ConvTranspose": (jnn.ConvTranspose, (4, (3, 3)), dict(strides=2)),
    "Embedding": (jnn.Embedding, (10, 4), {}),
    "PositionalEmbedding": (jnn.PositionalEmbedding, (8,), {}),
    "BatchNorm": (jnn.BatchNorm, (), dict(momentum=0.9, use_bias=False)),
    "LayerNorm": (jnn.LayerNorm, (), dict(epsilon=1e-3)),
    "RMSNorm": (jnn.RMSNorm, (), dict(epsilon=1e-3)),
    "Dropout": (jnn.Dropout, (0.3,), {}),
    "MultiHeadAttention": (jnn.MultiHeadAttention, (2,), dict(head_dim=3)),
    "LSTMCell": (jnn.LSTMCell, (5,), {}),
    "GRUCell": (jnn.GRUCell, (5,), {}),
    "SimpleRNN": (jnn.SimpleRNN, (5,), dict(return_sequences=True)),
    "LSTM": (jnn.LSTM, (5,), dict(return_state=True)),
    "GRU": (jnn.GRU, (5,), dict(reverse=True)),
    "Bidirectional": (jnn.Bidirectional, (jnn.GRU(3),), dict(merge="sum")),
    "FanInConcat": (jnn.FanInConcat, (), dict(axis=-2)),
    "FanOut": (jnn.FanOut, (3,), {}),
    "Reshape": (jnn.Reshape, ((2, -1),), {}),
    "Flatten": (jnn.Flatten, (), dict(ndim=2)),
    "Activation": (jnn.Activation, ("tanh",), {}),
    "MaxPool": (jnn.MaxPool, ((2, 2),), dict(strides=(1, 1))),
    "GlobalAvgPool": (jnn.GlobalAvgPool, (), dict(spatial_dims=1)),
}


def _frozen(value):
    return tuple(_frozen(v) for v in value) if isinstance(value, (list, tuple)) else value


@pytest.mark.parametrize("name", sorted(BUILT_WITH))
def test_the_description_holds_the_values_given(name):
    """Every argument, defaults included, is in the config with the value given: a missing
    or wrong value would let two different layers share one compiled program."""
    ctor, args, kwargs = BUILT_WITH[name]
    bound = inspect.signature(ctor).bind(*args, **kwargs)
    bound.apply_defaults()
    config = dict(jnn.layers.spec_of(ctor(*args, **kwargs)).config)
    children = {"layer", "layers"}  # described as children, not config
    assert set(config) == set(bound.arguments) - children
    for arg, value in bound.arguments.items():
        if arg in children:
            continue
        assert config[arg] == _frozen(value), (name, arg)
    first = inspect.signature(ctor).parameters
    numeric = next((p for p in first if isinstance(bound.arguments[p], (int, float))), None)
    if numeric is not None:  # one number changed: another structure
        other = dict(bound.arguments)
        other[numeric] = (
            other[numeric] + 1 if isinstance(other[numeric], int) else other[numeric] / 2
        )
        assert structure_key(ctor(**other)) != structure_key(ctor(*args, **kwargs))


@pytest.mark.parametrize(
    "layer, shape",
    [
        (jnn.Dense(3, dtype=jnp.bfloat16), (-1, 4)),
        (jnn.Conv(2, (3, 3), dtype=jnp.bfloat16), (-1, 6, 6, 2)),
        (jnn.ConvTranspose(2, (3, 3), dtype=jnp.bfloat16), (-1, 4, 4, 2)),
        (jnn.Embedding(10, 4, dtype=jnp.bfloat16), (-1, 3)),
        (jnn.LSTM(3, dtype=jnp.bfloat16), (-1, 4, 2)),
        (jnn.GRU(3, dtype=jnp.bfloat16), (-1, 4, 2)),
        (jnn.LayerNorm(dtype=jnp.bfloat16), (-1, 4)),
        (jnn.BatchNorm(dtype=jnp.bfloat16), (-1, 4)),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, tuple) and not isinstance(v[0], int) else "",
)
def test_every_parameter_takes_the_dtype_asked_for(layer, shape):
    params = layer.init(K, shape)[1]
    leaves = jax.tree.leaves(params)
    assert leaves and all(a.dtype == jnp.bfloat16 for a in leaves), jax.tree.map(
        lambda a: a.dtype, params
    )


@pytest.mark.parametrize("ctor", [jnn.Dense, jnn.LSTM, jnn.GRU, jnn.SimpleRNN, jnn.LSTMCell])
def test_a_bad_size_names_the_constructor_and_the_argument(ctor):
    with pytest.raises(ValueError, match=rf"^{ctor.__name__}: features must be a positive int"):
        ctor(0)


@pytest.mark.parametrize("ctor", [jnn.Conv, jnn.ConvTranspose])
def test_a_bad_conv_size_names_the_constructor_and_the_argument(ctor):
    with pytest.raises(ValueError, match=rf"^{ctor.__name__}: features must be a positive int"):
        ctor(0, (3, 3))


def _apply_error(layer, shape, x):
    params = layer.init(K, shape)[1]
    return lambda: layer.apply(params, x)


@pytest.mark.parametrize(
    "make, error, match",
    [
        (
            lambda: _apply_error(jnn.GRU(3), (-1, 5, 2), jnp.ones((1, 5, 4))),
            ValueError,
            r"^GRU\(3\): expected inputs with 2 features \(the last axis\), got shape \(1, 5, 4\)",
        ),
        (
            lambda: _apply_error(jnn.LSTMCell(3), (-1, 2), jnp.ones((1, 4))),
            ValueError,
            r"^LSTMCell\(3\): expected inputs with 2 features",
        ),
        (
            lambda: _apply_error(jnn.LSTMCell(3), (-1, 2), (jnp.ones((1, 2)), 5)),
            ValueError,
            r"^LSTMCell\(3\): the state must be a pair \(h, c\) of shapes .*, got int\.$",
        ),
        (
            lambda: _apply_error(jnn.LSTMCell(3), (-1, 2), (jnp.ones((1, 2)), jnp.ones((1, 3)))),
            ValueError,
            r"^LSTMCell\(3\): the state must be .*, got shape \(1, 3\)\.$",
        ),
        (
            lambda: _apply_error(jnn.Embedding(10, 4), (-1, 3), np.array([["a", "b", "c"]])),
            TypeError,
            r"^Embedding\(10, 4\): ids must be numeric",
        ),
        (
            lambda: _apply_error(jnn.LayerNorm(), (-1, 3), jnp.ones((2, 4))),
            ValueError,
            r"^LayerNorm: expected input of shape \(\.\.\., 3\), got \(2, 4\)\. The last axis must "
            r"hold the features the layer was initialized with\.$",
        ),
        (
            lambda: lambda: jnn.ConvTranspose(4, (3, 3)).init(K, (-1, 3)),
            ValueError,
            r"^ConvTranspose\(4, \(3, 3\)\)\.init: expected an input_shape of rank >= 3",
        ),
        (
            lambda: lambda: jnn.RMSNorm().init(K, (-1, None)),
            ValueError,
            r"^RMSNorm\.init: the feature \(last\) dimension must be known",
        ),
        (
            lambda: lambda: jnn.repeat("dense", 2),
            TypeError,
            r"^repeat: layer: expected a jnn\.Layer or jnn\.StatefulLayer, got str",
        ),
        (
            lambda: lambda: jnn.MultiHeadAttention(2, out_features=0),
            ValueError,
            r"^MultiHeadAttention: out_features must be a positive int or None, got 0\.$",
        ),
        (
            lambda: lambda: jnn.Conv(4, (3, 3), groups=0),
            ValueError,
            r"^Conv\(4, \(3, 3\)\): groups must be a positive int, got 0\.$",
        ),
        (
            lambda: lambda: jnn.Conv(4, (3, 3)).init(K, (-1, 5)),
            ValueError,
            r"^Conv\(4, \(3, 3\)\)\.init: expected an input_shape of rank >= 3, "
            r"\(\*batch, \*spatial\[2\], channels\), got \(-1, 5\)\.$",
        ),
        (
            lambda: lambda: jnn.RMSNorm(epsilon=-1.0),
            ValueError,
            r"^RMSNorm: epsilon must be a number > 0, got -1\.0\.$",
        ),
        (
            lambda: lambda: jnn.LSTM(4).init(K, (-1, 3)),
            ValueError,
            r"^LSTM\(4\)\.init: expected an input shape \(batch, T, features\), got \(-1, 3\)\. "
            r"For one sequence .* add a batch axis \(x\[None\]\); for one time step per "
            r"example use a cell \(jnn\.LSTMCell, jnn\.GRUCell\) or reshape to "
            r"\(batch, 1, features\)\.$",
        ),
    ]
    + [
        (
            lambda make=make, shape=shape, want=want: (
                lambda: make(
                    kernel_init=lambda key, shape, dtype=jnp.float32: jnp.zeros((1,), dtype)
                ).init(K, shape)
            ),
            ValueError,
            rf"^{want}\.init: the initializer of parameter 'w' returned shape \(1,\), expected",
        )
        for make, shape, want in [
            (functools.partial(jnn.Dense, 4), (-1, 3), r"Dense\(4\)"),
            (functools.partial(jnn.Conv, 4, (3, 3)), (-1, 8, 8, 3), r"Conv\(4, \(3, 3\)\)"),
            (
                functools.partial(jnn.ConvTranspose, 4, (3, 3)),
                (-1, 8, 8, 3),
                r"ConvTranspose\(4, \(3, 3\)\)",
            ),
        ]
    ],
)
def test_errors_name_the_layer(make, error, match):
    with pytest.raises(error, match=match):
        make()()


def test_recurrent_layers_are_named_by_their_type_in_bidirectional():
    layer = jnn.Bidirectional(jnn.GRU(3, return_state=True))
    params = layer.init(K, (-1, 5, 2))[1]
    with pytest.raises(ValueError, match=r"^Bidirectional\(GRU\(3\)\): the initial state must be"):
        layer.apply(params, (jnp.ones((1, 5, 2)), None, 5))


def test_convolutions_take_unbatched_inputs():
    """rank >= spatial dims + 1: one image (H, W, C) needs no batch axis."""
    conv = jnn.Conv(2, (3, 3), padding="VALID")
    out_shape, params = conv.init(K, (8, 8, 3))
    assert out_shape == (6, 6, 2)
    x = jax.random.normal(K, (8, 8, 3))
    np.testing.assert_allclose(conv.apply(params, x), conv.apply(params, x[None])[0], rtol=1e-6)


def test_remat_is_the_layer_it_wraps_in_both_modes():
    """Evaluation mode by default (a BatchNorm keeps its statistics), and the key reaches
    the wrapped layer (dropout draws the same mask)."""
    norm = jnn.BatchNorm()
    _, params, state = norm.init(K, (-1, 3))
    x = jax.random.normal(K, (8, 3)) + 2.0
    y, new_state = jnn.remat(norm).apply(params, state, x)
    want, want_state = norm.apply(params, state, x)
    np.testing.assert_allclose(y, want, rtol=1e-6)
    jax.tree.map(np.testing.assert_array_equal, new_state, state)  # not updated
    jax.tree.map(np.testing.assert_array_equal, want_state, state)
    drop = jnn.Dropout(0.5)
    x = jnp.ones((4, 16))
    got = jnn.remat(drop).apply({}, x, key=jax.random.key(3), train=True)
    np.testing.assert_array_equal(got, drop.apply({}, x, key=jax.random.key(3), train=True))
    assert (np.asarray(got) == 0).any()


def test_bidirectional_sum_adds_the_two_directions():
    layer = jnn.Bidirectional(jnn.GRU(3, return_sequences=True), merge="sum")
    out_shape, params = layer.init(K, (-1, 5, 2))
    assert out_shape == (-1, 5, 3)
    x = jax.random.normal(K, (2, 5, 2))
    forward = jnn.GRU(3, return_sequences=True).apply(params["forward"], x)
    backward = jnn.GRU(3, return_sequences=True, reverse=True).apply(params["backward"], x)
    np.testing.assert_allclose(layer.apply(params, x), forward + backward, rtol=1e-5, atol=1e-6)


def test_cells_take_any_leading_batch_axes():
    """A cell's input is (*batch, features): the kernel is sized by the last axis."""
    cell = jnn.LSTMCell(3)
    out_shape, params = cell.init(K, (-1, 5, 2))
    assert out_shape[0] == (-1, 5, 3) and params["w_ih"].shape == (2, 12)
    y, state = cell.apply(params, jnp.ones((4, 5, 2)))
    assert y.shape == (4, 5, 3) and state[0].shape == (4, 5, 3)


def test_global_pooling_bounds_its_rank():
    with pytest.raises(
        ValueError, match=r"^GlobalAvgPool: spatial_dims must be a positive int <= 32"
    ):
        jnn.GlobalAvgPool(spatial_dims=100)
