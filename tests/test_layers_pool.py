"""MaxPool, AvgPool, GlobalAvgPool/GlobalMaxPool and Reshape."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jnn


def _randn(seed, shape):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def pool_reference(x, window, strides, pads, kind):
    """Numpy loops over windows; padded cells are excluded (max and mean)."""
    nd = len(window)
    xp = np.pad(x, [(0, 0), *pads, (0, 0)], constant_values=np.nan)
    out_sp = [(xp.shape[1 + i] - window[i]) // strides[i] + 1 for i in range(nd)]
    out = np.zeros((x.shape[0], *out_sp, x.shape[-1]))
    for pos in itertools.product(*(range(o) for o in out_sp)):
        sl = tuple(slice(p * s, p * s + w) for p, s, w in zip(pos, strides, window, strict=True))
        patch = xp[(slice(None), *sl)].reshape(x.shape[0], -1, x.shape[-1])
        out[(slice(None), *pos)] = (np.nanmax if kind == "max" else np.nanmean)(patch, axis=1)
    return out


@pytest.mark.parametrize(
    "window,spatial,strides,padding",
    [
        ((2, 2), (8, 8), None, "VALID"),
        ((3, 3), (7, 8), 2, "SAME"),
        ((3, 2), (7, 5), (1, 2), ((1, 1), (0, 1))),
        ((3,), (10,), 2, "SAME"),
        ((2, 2, 2), (4, 5, 4), None, "VALID"),
    ],
)
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_shapes_and_numerics(window, spatial, strides, padding, kind):
    layer = (jnn.MaxPool if kind == "max" else jnn.AvgPool)(
        window, strides=strides, padding=padding
    )
    out_shape, params = layer.init(jax.random.key(0), (-1, *spatial, 3))
    assert params == {}
    x = _randn(0, (2, *spatial, 3))
    y = jax.jit(layer.apply)(params, x)
    assert y.shape == (2, *out_shape[1:])
    st = (
        window
        if strides is None
        else ((strides,) * len(window) if isinstance(strides, int) else strides)
    )
    if isinstance(padding, str):
        pads = jax.lax.padtype_to_pads(spatial, window, st, padding)
    else:
        pads = padding
    np.testing.assert_allclose(y, pool_reference(x, window, st, pads, kind), rtol=1e-5, atol=1e-6)


def test_pool_vmap_over_single_examples():
    pool = jnn.AvgPool((2, 2))
    x = _randn(0, (4, 6, 6, 2))
    np.testing.assert_allclose(
        jax.vmap(lambda xi: pool.apply({}, xi))(x), pool.apply({}, x), rtol=1e-6
    )


def test_global_pools():
    x = _randn(0, (3, 4, 5, 6))
    assert jnn.GlobalAvgPool().init(jax.random.key(0), (-1, 4, 5, 6))[0] == (-1, 6)
    np.testing.assert_allclose(jnn.GlobalAvgPool().apply({}, x), x.mean(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(jnn.GlobalMaxPool().apply({}, x), x.max(axis=(1, 2)))
    np.testing.assert_allclose(jnn.GlobalAvgPool(1).apply({}, x), x.mean(axis=2), rtol=1e-5)
    g = jax.grad(lambda x: jnn.GlobalAvgPool().apply({}, x).sum())(jnp.asarray(x))
    np.testing.assert_allclose(g, np.full(x.shape, 1 / 20), rtol=1e-6)


def test_pool_errors():
    with pytest.raises(ValueError, match=r"MaxPool\(\(2, 2\)\).*rank >= 3.*got \(4, 4\)"):
        jnn.MaxPool((2, 2)).apply({}, jnp.ones((4, 4)))
    with pytest.raises(ValueError, match=r"AvgPool\(\(3, 3\)\)\.init.*too small for the window"):
        jnn.AvgPool((3, 3)).init(jax.random.key(0), (-1, 2, 2, 1))
    with pytest.raises(TypeError, match="window_shape must be a tuple"):
        jnn.MaxPool(2)
    with pytest.raises(ValueError, match=r"GlobalAvgPool\(spatial_dims=2\).*rank >= 3.*\(5, 3\)"):
        jnn.GlobalAvgPool().apply({}, jnp.ones((5, 3)))


def test_reshape():
    layer = jnn.Reshape((4, 4, -1))
    assert layer.init(jax.random.key(0), (None, 32))[0] == (-1, 4, 4, 2)
    x = jnp.arange(64.0).reshape(2, 32)
    np.testing.assert_array_equal(layer.apply({}, x), x.reshape(2, 4, 4, 2))
    assert jax.vmap(jnn.Reshape((2, 3), ndim=1).apply, in_axes=(None, 0))(
        {}, jnp.ones((5, 6))
    ).shape == (5, 2, 3)
    with pytest.raises(ValueError, match=r"Reshape\(\(4, 4, 3\)\).*\(32,\).*\(4, 4, 3\)"):
        jnn.Reshape((4, 4, 3)).init(jax.random.key(0), (-1, 32))
    with pytest.raises(ValueError, match="at most one -1"):
        jnn.Reshape((-1, -1))
