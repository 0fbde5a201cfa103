"""Conv and ConvTranspose: shapes, numerics against numpy loops, gradients, jit/vmap, errors."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jnn


def _randn(seed, shape):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _pads(padding, spatial, kernel, strides, dilation):
    if isinstance(padding, str):
        eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilation, strict=True)]
        return jax.lax.padtype_to_pads(spatial, eff, strides, padding)
    if isinstance(padding, int):
        return [(padding, padding)] * len(spatial)
    return list(padding)


def conv_reference(x, w, b, strides, padding, dilation, groups):
    """Direct N-D cross-correlation with numpy loops: x (N, *S, C), w (*K, C/g, F)."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    nd = w.ndim - 2
    kernel, cin_g, feats = w.shape[:nd], w.shape[-2], w.shape[-1]
    pads = _pads(padding, x.shape[1:-1], kernel, strides, dilation)
    xp = np.pad(x, [(0, 0), *pads, (0, 0)])
    out_sp = [
        (xp.shape[1 + i] - (kernel[i] - 1) * dilation[i] - 1) // strides[i] + 1 for i in range(nd)
    ]
    out = np.zeros((x.shape[0], *out_sp, feats))
    fpg = feats // groups
    for pos in itertools.product(*(range(o) for o in out_sp)):
        for kpos in itertools.product(*(range(k) for k in kernel)):
            idx = tuple(
                p * s + k * d for p, s, k, d in zip(pos, strides, kpos, dilation, strict=True)
            )
            patch = xp[(slice(None), *idx)]  # (N, C)
            for g in range(groups):
                xs = patch[:, g * cin_g : (g + 1) * cin_g]
                out[(slice(None), *pos, slice(g * fpg, (g + 1) * fpg))] += (
                    xs @ w[(*kpos, slice(None), slice(g * fpg, (g + 1) * fpg))]
                )
    return out + np.asarray(b, np.float64)


SHAPE_GRID = [
    # (kernel, input spatial, strides, padding, dilation, groups)
    ((3,), (9,), 2, "VALID", 1, 2),
    ((2,), (7,), 3, ((2, 1),), 2, 1),
    ((3, 3), (8, 7), 2, "SAME", 1, 2),
    ((3, 2), (9, 8), (2, 1), "VALID", (1, 2), 1),
    ((3, 3), (6, 6), 1, 1, 2, 1),
    ((5, 5), (8, 8), 2, ((1, 2), (0, 3)), 1, 4),
    ((3, 1, 2), (5, 6, 4), (2, 1, 2), "VALID", 1, 2),
]


@pytest.mark.parametrize("kernel,spatial,strides,padding,dilation,groups", SHAPE_GRID)
def test_conv_shape_and_numerics(kernel, spatial, strides, padding, dilation, groups):
    conv = jnn.Conv(8, kernel, strides=strides, padding=padding, dilation=dilation, groups=groups)
    out_shape, params = conv.init(jax.random.key(0), (-1, *spatial, 4))
    params["b"] = _randn(2, params["b"].shape)
    x = _randn(1, (2, *spatial, 4))
    y = jax.jit(conv.apply)(params, x)
    assert y.shape == (2, *out_shape[1:])
    nd = len(kernel)
    as_t = lambda v: (v,) * nd if isinstance(v, int) else tuple(v)  # noqa: E731
    ref = conv_reference(
        x, params["w"], params["b"], as_t(strides), padding, as_t(dilation), groups
    )
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


def test_conv_1d_matches_numpy_correlate():
    conv = jnn.Conv(1, (3,), padding="VALID", use_bias=False)
    _, params = conv.init(jax.random.key(0), (-1, 10, 1))
    x = np.arange(10.0, dtype=np.float32)
    y = conv.apply(params, x.reshape(1, 10, 1)).ravel()
    np.testing.assert_allclose(y, np.correlate(x, np.asarray(params["w"]).ravel(), "valid"), 1e-5)


def test_conv_3d_matches_jax_scipy_correlate():
    conv = jnn.Conv(1, (2, 3, 2), padding="VALID", use_bias=False)
    _, params = conv.init(jax.random.key(0), (-1, 4, 5, 3, 1))
    x = _randn(1, (4, 5, 3))
    y = conv.apply(params, x.reshape(1, 4, 5, 3, 1))[0, ..., 0]
    ref = jax.scipy.signal.correlate(x, params["w"][..., 0, 0], mode="valid")
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def conv_transpose_reference(x, w, strides, pads):
    """Dilate the input by the strides, pad explicitly, then cross-correlate."""
    n, h, wd, c = x.shape
    s0, s1 = strides
    dil = np.zeros((n, (h - 1) * s0 + 1, (wd - 1) * s1 + 1, c))
    dil[:, ::s0, ::s1] = x
    return conv_reference(dil, w, 0.0, (1, 1), pads, (1, 1), 1)


@pytest.mark.parametrize(
    "kernel,spatial,strides,padding",
    [
        ((3, 3), (5, 4), 2, "VALID"),
        ((4, 4), (3, 3), 2, "SAME"),
        ((2, 3), (4, 5), (1, 2), "VALID"),
        ((3, 3), (4, 4), 2, ((1, 2), (2, 1))),
    ],
)
def test_conv_transpose_shapes_and_numerics(kernel, spatial, strides, padding):
    layer = jnn.ConvTranspose(5, kernel, strides=strides, padding=padding)
    out_shape, params = layer.init(jax.random.key(0), (None, *spatial, 3))
    x = _randn(1, (2, *spatial, 3))
    y = jax.jit(layer.apply)(params, x)
    assert y.shape == (2, *out_shape[1:])
    if not isinstance(padding, str):
        st = (strides,) * 2 if isinstance(strides, int) else strides
        ref = conv_transpose_reference(np.asarray(x), params["w"], st, padding)
        np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


def test_conv_transpose_same_upsamples_by_stride():
    layer = jnn.ConvTranspose(2, (3, 3), strides=(2, 3))
    assert layer.init(jax.random.key(0), (-1, 4, 5, 1))[0] == (-1, 8, 15, 2)


@pytest.mark.parametrize(
    "layer", [jnn.Conv(3, (2, 2), strides=2, groups=1), jnn.ConvTranspose(3, (2, 2))]
)
def test_conv_gradients_match_finite_differences(layer):
    _, params = layer.init(jax.random.key(0), (-1, 4, 4, 2))
    x = _randn(1, (2, 4, 4, 2))
    check_grads(
        lambda p, x: layer.apply(p, x), (params, x), order=1, modes=["rev"], atol=2e-2, rtol=2e-2
    )


def test_conv_jit_vmap_and_extra_batch_axes():
    conv = jnn.Conv(4, (3, 3), strides=2, activation="relu")
    _, params = conv.init(jax.random.key(0), (-1, 6, 6, 2))
    x = _randn(1, (3, 5, 6, 6, 2))
    batched = conv.apply(params, x.reshape(15, 6, 6, 2)).reshape(3, 5, 3, 3, 4)
    np.testing.assert_allclose(conv.apply(params, x), batched, rtol=1e-5, atol=1e-6)
    per_example = jax.jit(jax.vmap(jax.vmap(lambda xi: conv.apply(params, xi))))(x)
    np.testing.assert_allclose(per_example, batched, rtol=1e-5, atol=1e-6)
    up = jnn.ConvTranspose(3, (2, 2), strides=2)
    _, up_params = up.init(jax.random.key(2), (-1, 6, 6, 2))
    flat = x.reshape(15, 6, 6, 2)
    np.testing.assert_allclose(
        jax.jit(jax.vmap(lambda xi: up.apply(up_params, xi)))(flat),
        up.apply(up_params, flat),
        rtol=1e-5,
        atol=1e-6,
    )


def test_conv_errors_name_layer_and_shapes():
    conv = jnn.Conv(4, (3, 3))
    _, params = conv.init(jax.random.key(0), (-1, 6, 6, 2))
    with pytest.raises(
        ValueError, match=r"Conv\(4, \(3, 3\)\).*\(\*batch, \*spatial\[2\], 2\).*\(1, 6, 6, 3\)"
    ):
        conv.apply(params, jnp.ones((1, 6, 6, 3)))
    with pytest.raises(ValueError, match=r"Conv\(4, \(3, 3\)\).*rank >= 3.*\(6, 6\)"):
        conv.apply(params, jnp.ones((6, 6)))
    with pytest.raises(ValueError, match=r"Conv\(4, \(3, 3\)\)\.init.*rank >= 3.*\(-1, 6\)"):
        conv.init(jax.random.key(0), (-1, 6))
    with pytest.raises(TypeError, match="kernel_size must be a tuple"):
        jnn.Conv(4, 3)
    with pytest.raises(ValueError, match="groups"):
        jnn.Conv(4, (3, 3), groups=3)
    with pytest.raises(ValueError, match="not divisible by groups=2"):
        jnn.Conv(4, (3, 3), groups=2).init(jax.random.key(0), (-1, 6, 6, 3))
    with pytest.raises(ValueError, match="padding"):
        jnn.Conv(4, (3, 3), padding="FULL")
    with pytest.raises(ValueError, match="too small"):
        jnn.Conv(4, (5, 5), padding="VALID").init(jax.random.key(0), (-1, 3, 3, 1))
    up = jnn.ConvTranspose(2, (3, 3))
    _, p = up.init(jax.random.key(0), (-1, 4, 4, 3))
    with pytest.raises(ValueError, match=r"ConvTranspose\(2, \(3, 3\)\).*3\).*\(2, 4, 4, 1\)"):
        up.apply(p, jnp.ones((2, 4, 4, 1)))
