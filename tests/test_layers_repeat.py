"""remat and repeat: same values as the plain layers, stacked params, one copy in the program."""

import re
import traceback

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jnn
from jnn.layers._base import structure_key

X = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)


def block(width=8):
    return jnn.residual(jnn.Dense(width, activation="relu"), jnn.LayerNorm(), jnn.Dense(width))


def unstack(stacked, n):
    """``serial``'s params from ``repeat``'s: copy ``i`` keyed ``<kind>_<i>``."""
    return [jax.tree.map(lambda p, i=i: p[i], stacked) for i in range(n)]


def same(a, b):
    return jax.tree.all(jax.tree.map(lambda u, v: bool(jnp.array_equal(u, v)), a, b))


def test_repeat_equals_serial_of_copies_with_the_same_params():
    n = 5
    deep, flat = jnn.repeat(block(), n), jnn.serial(*[block() for _ in range(n)])
    shape, params = deep.init(jax.random.key(0), (-1, 8))
    assert shape == (-1, 8)
    _, flat_params = flat.init(jax.random.key(0), (-1, 8))
    # Initialized alike: copy i from the i-th split key, as serial's i-th child.
    assert same(unstack(params, n), [flat_params[f"residual_{i}"] for i in range(n)])
    assert params["dense_1"]["w"].shape == (n, 8, 8)
    want = jax.jit(flat.apply)(flat_params, X)
    np.testing.assert_allclose(jax.jit(deep.apply)(params, X), want, rtol=1e-6, atol=1e-6)


def test_repeat_gradients_equal_serial():
    n = 3
    deep, flat = jnn.repeat(block(), n), jnn.serial(*[block() for _ in range(n)])
    _, params = deep.init(jax.random.key(0), (-1, 8))
    flat_params = {f"residual_{i}": p for i, p in enumerate(unstack(params, n))}
    g = jax.jit(jax.grad(lambda p: (deep.apply(p, X) ** 2).sum()))(params)
    g_flat = jax.jit(jax.grad(lambda p: (flat.apply(p, X) ** 2).sum()))(flat_params)
    for i, gi in enumerate(unstack(g, n)):
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
            gi,
            g_flat[f"residual_{i}"],
        )


def test_repeat_with_dropout_uses_serials_keys():
    layer = jnn.residual(jnn.Dense(8), jnn.Dropout(0.5))
    deep, flat = jnn.repeat(layer, 3), jnn.serial(layer, layer, layer)
    _, params = deep.init(jax.random.key(0), (-1, 8))
    flat_params = {f"residual_{i}": p for i, p in enumerate(unstack(params, 3))}
    key = jax.random.key(7)
    y = deep.apply(params, X, key=key, train=True)
    np.testing.assert_allclose(y, flat.apply(flat_params, X, key=key, train=True), rtol=1e-6)
    assert not np.allclose(y, deep.apply(params, X, key=jax.random.key(8), train=True))


def test_repeat_of_a_stateful_layer_stacks_its_state():
    layer = jnn.residual(jnn.Dense(8), jnn.BatchNorm())
    deep, flat = jnn.repeat(layer, 2), jnn.serial(layer, layer)
    assert jnn.is_stateful(deep)
    _, params, state = deep.init(jax.random.key(0), (-1, 8))
    assert state["batch_norm_0"]["mean"].shape == (2, 8)
    flat_params = {f"residual_{i}": p for i, p in enumerate(unstack(params, 2))}
    flat_state = {f"residual_{i}": s for i, s in enumerate(unstack(state, 2))}
    y, new_state = deep.apply(params, state, X, train=True)
    y_flat, new_flat = flat.apply(flat_params, flat_state, X, train=True)
    np.testing.assert_allclose(y, y_flat, rtol=1e-5, atol=1e-6)
    for i, s in enumerate(unstack(new_state, 2)):
        np.testing.assert_allclose(
            s["batch_norm_0"]["mean"], new_flat[f"residual_{i}"]["batch_norm_0"]["mean"], atol=1e-6
        )
    assert not np.allclose(new_state["batch_norm_0"]["mean"], 0.0)  # it moved


@pytest.mark.parametrize(
    "policy", [None, "nothing_saveable", "dots_saveable", "everything_saveable"]
)
def test_remat_gradients_are_bit_identical(policy):
    plain = jnn.serial(jnn.Dense(16, activation="gelu"), block(16), jnn.Dense(1))
    light = jnn.remat(plain, policy=policy)
    _, params = plain.init(jax.random.key(0), (-1, 8))
    assert same(light.init(jax.random.key(0), (-1, 8))[1], params)  # the same params

    def grads(model):
        return jax.jit(jax.value_and_grad(lambda p: (model.apply(p, X) ** 2).mean()))(params)

    (v, g), (v_remat, g_remat) = grads(plain), grads(light)
    assert float(v) == float(v_remat)
    if policy == "everything_saveable":
        # Nothing is recomputed, but XLA fuses the saved forward differently: rounding only.
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), g, g_remat
        )
    else:
        assert same(g, g_remat)


def test_remat_really_recomputes():
    """The backward pass of the remat'd layer runs its forward again (checkpoint in the jaxpr)."""
    layer = block()
    _, params = layer.init(jax.random.key(0), (-1, 8))
    for model, want in ((layer, False), (jnn.remat(layer), True)):
        jaxpr = jax.make_jaxpr(jax.grad(lambda p, m=model: m.apply(p, X).sum()))(params)
        assert ("remat" in str(jaxpr) or "checkpoint" in str(jaxpr)) is want


def test_remat_of_a_stateful_layer():
    layer = jnn.serial(jnn.Dense(8), jnn.BatchNorm())
    light = jnn.remat(layer)
    assert jnn.is_stateful(light)
    _, params, state = layer.init(jax.random.key(0), (-1, 8))

    def loss(model):
        def f(p):
            y, new = model.apply(p, state, X, train=True)
            return (y**2).sum(), new

        return jax.jit(jax.grad(f, has_aux=True))(params)

    (g, s), (g_remat, s_remat) = loss(layer), loss(light)
    assert same(g, g_remat) and same(s, s_remat)


def test_repeat_composes_with_remat_and_residual():
    n = 4
    plain, light = jnn.repeat(block(), n), jnn.repeat(jnn.remat(block()), n)
    _, params = plain.init(jax.random.key(0), (-1, 8))
    assert same(light.init(jax.random.key(0), (-1, 8))[1], params)
    g = jax.jit(jax.grad(lambda p: (plain.apply(p, X) ** 2).sum()))(params)
    g_remat = jax.jit(jax.grad(lambda p: (light.apply(p, X) ** 2).sum()))(params)
    assert same(g, g_remat)
    outer = jnn.remat(jnn.repeat(block(), n))  # remat around the whole stack works too
    np.testing.assert_allclose(outer.apply(params, X), plain.apply(params, X), rtol=1e-6)


def test_program_holds_one_copy_whatever_n():
    """Not a timing: the lowered program has as many matmuls for 2 copies as for 32."""

    def dots(n):
        model = jnn.repeat(block(), n)
        _, params = model.init(jax.random.key(0), (-1, 8))
        text = jax.jit(jax.grad(lambda p: model.apply(p, X).sum())).lower(params).as_text()
        return len(re.findall(r"stablehlo\.dot_general", text))

    assert dots(2) == dots(32) > 0
    unrolled = jnn.serial(*[block() for _ in range(4)])
    _, params = unrolled.init(jax.random.key(0), (-1, 8))
    text = jax.jit(lambda p: unrolled.apply(p, X)).lower(params).as_text()
    assert len(re.findall(r"stablehlo\.dot_general", text)) == 8  # serial unrolls: 2 per block


def test_jit_vmap_grad_compose():
    model = jnn.repeat(block(), 3)
    stacked = jax.vmap(lambda k: model.init(k, (-1, 8))[1])(jax.random.split(jax.random.key(0), 2))
    assert stacked["dense_0"]["w"].shape == (2, 3, 8, 8)  # ensemble axis, then layer axis
    outs = jax.jit(jax.vmap(model.apply, in_axes=(0, None)))(stacked, X)
    np.testing.assert_allclose(
        outs[1], model.apply(jax.tree.map(lambda p: p[1], stacked), X), rtol=1e-6, atol=1e-6
    )
    per_example = jax.vmap(lambda x: model.apply(jax.tree.map(lambda p: p[0], stacked), x))(X)
    np.testing.assert_allclose(per_example, outs[0], rtol=1e-6, atol=1e-6)


def test_fit_trains_a_repeated_remat_model():
    x = np.random.default_rng(0).normal(size=(128, 8)).astype(np.float32)
    y = np.sin(x.sum(axis=1, keepdims=True))
    model = jnn.serial(jnn.repeat(jnn.remat(block()), 3), jnn.Dense(1))
    _, params = model.init(jax.random.key(0), (-1, 8))
    result = jnn.fit(model, params, (x, y), loss="mse", optimizer="adam", learning_rate=1e-2,
                     epochs=10, batch_size=32, key=jax.random.key(1), verbose=0)  # fmt: skip
    assert result.history["loss"][-1] < 0.5 * result.history["loss"][0]


def test_summary_shows_the_repeated_layer_with_stacked_shapes():
    model = jnn.serial(jnn.Dense(8), jnn.repeat(jnn.remat(block()), 6), jnn.Dense(1))
    s = jnn.summary(model, (-1, 4))
    rows = {(r.depth, r.name): r for r in s.rows}
    assert [(r.depth, r.name) for r in s.rows] == [
        (0, "serial"), (1, "dense_0"), (1, "repeat_0"), (2, "remat"), (3, "residual"),
        (4, "dense_0"), (4, "layer_norm_0"), (4, "dense_1"), (1, "dense_1"),
    ]  # fmt: skip
    per_copy = 2 * (8 * 8 + 8) + 2 * 8
    assert rows[(1, "repeat_0")].params == rows[(2, "remat")].params == 6 * per_copy
    assert rows[(1, "repeat_0")].param_shapes == {}  # its leaves are the child's, shown there
    assert rows[(4, "dense_0")].param_shapes == {"b": (6, 8), "w": (6, 8, 8)}
    assert rows[(4, "dense_0")].params == 6 * (8 * 8 + 8)
    assert s.total_params == (4 * 8 + 8) + 6 * per_copy + (8 + 1)
    assert "w (6, 8, 8)" in str(s)


def test_descriptions_tell_remat_and_repeat_apart():
    layer = block()
    assert jnn.layers.spec_of(jnn.remat(layer, policy="dots_saveable")).config == (
        ("policy", "dots_saveable"),
    )
    assert jnn.layers.spec_of(layer).kind == "residual"  # the child's description is untouched
    keys = {structure_key(m) for m in (layer, jnn.remat(layer), jnn.repeat(layer, 2),
                                       jnn.repeat(layer, 3))}  # fmt: skip
    assert len(keys) == 4
    _, params = jnn.serial(jnn.remat(jnn.Dense(3)), jnn.repeat(jnn.Dense(3), 2)).init(
        jax.random.key(0), (-1, 3)
    )
    assert sorted(params) == ["remat_0", "repeat_0"]


BAD = [
    (lambda: jnn.repeat(jnn.Dense(8), 0), ValueError, r"repeat: n must be a positive int, got 0"),
    (lambda: jnn.repeat(jnn.Dense(8), True), ValueError, r"positive int, got True"),
    (lambda: jnn.repeat(jnn.Dense, 2), TypeError, r"did you forget to call it"),
    (lambda: jnn.repeat(jnn.Dense(4), 2).init(jax.random.key(0), (-1, 8)), ValueError,
     r"repeat: the layer maps shape \(-1, 8\) to \(-1, 4\)"),
    (lambda: jnn.repeat(jnn.Dense(8), 2).apply(
        jnn.repeat(jnn.Dense(8), 2).init(jax.random.key(0), (-1, 8))[1],
        np.ones((2, 8), np.float16)), ValueError, r"maps input \(shape, dtype\).*float16"),
    (lambda: jnn.remat(jnn.Dense(2), policy="dot_saveable"), ValueError,
     r"unknown policy 'dot_saveable'.*Did you mean 'dots_saveable'"),
    (lambda: jnn.remat(jnn.Dense(2), policy="save_only_these_names"), ValueError,
     r"policy factory: pass what it returns"),
    (lambda: jnn.remat(jnn.Dense(2), policy=3), TypeError, r"policy must be None, a name"),
    (lambda: jnn.remat("dense"), TypeError, r"expected a jnn.Layer"),
]  # fmt: skip


@pytest.mark.parametrize("make,error,match", BAD)
def test_bad_input_is_a_clear_error(make, error, match):
    with pytest.raises(error, match=match) as info:
        make()
    last = traceback.extract_tb(info.tb)[-1].filename  # raised by jnn, not deep in JAX
    assert "/jnn/" in last and "/jax/" not in last, last


def test_numpy_integer_n_and_policy_functions_are_accepted():
    model = jnn.repeat(jnn.Dense(8), np.int64(3))
    assert model.init(jax.random.key(0), (-1, 8))[1]["w"].shape == (3, 8, 8)
    policy = jax.checkpoint_policies.save_only_these_names("nothing")
    light = jnn.remat(jnn.Dense(8), policy=policy)
    _, params = light.init(jax.random.key(0), (-1, 8))
    np.testing.assert_allclose(light.apply(params, X), jnn.Dense(8).apply(params, X))
