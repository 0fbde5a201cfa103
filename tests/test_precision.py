"""Precision policies: bfloat16/float16 compute with float32 params, dynamic loss scaling,
low-precision inputs everywhere floats go, and export computing as trained."""

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest

import jnn
import jnn.export
from jnn import experiments as ex
from jnn.train._precision import LossScaleState, loss_scaled

BF16 = ml_dtypes.bfloat16
MLP = jnn.serial(jnn.Dense(16, activation="relu"), jnn.Dense(2))


def data(n=96, d=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x, (x[:, :2].sum(1) > 0).astype(np.int32)


def handwritten_forward(params, x, dtype):
    """The MLP by hand, every matmul in ``dtype``, the output cast to float32."""
    h = x.astype(dtype)
    for i, layer in enumerate(("dense_0", "dense_1")):
        w, b = params[layer]["w"].astype(dtype), params[layer]["b"].astype(dtype)
        h = h @ w + b[None]
        h = jax.nn.relu(h) if i == 0 else h
    return h.astype(jnp.float32)


def test_named_policies_and_errors():
    assert jnn.get_policy("mixed_bfloat16") == jnn.Policy("float32", "bfloat16", "float32")
    assert jnn.get_policy(None) == jnn.get_policy("float32") == jnn.Policy()
    assert jnn.get_policy("mixed_float16").loss_scaling
    assert jnn.Policy(jnp.float32, jnp.bfloat16, np.float32).compute_dtype == "bfloat16"
    with pytest.raises(ValueError, match="Did you mean 'mixed_bfloat16'"):
        jnn.get_policy("mixed_bfloat")
    with pytest.raises(ValueError, match=r"compute_dtype must be one of.*got 'int8'"):
        jnn.Policy("float32", "int8")
    with pytest.raises(TypeError, match="policy must be a name"):
        jnn.get_policy(16)
    x, y = data()
    _, params = MLP.init(jax.random.key(0), (-1, 6))
    for call in (
        lambda: jnn.fit(
            MLP,
            params,
            (x, y),
            loss="cross_entropy",
            key=jax.random.key(1),
            policy="mixed_float32",
            verbose=0,
        ),
        lambda: jnn.predict(MLP, params, x, policy="bf16"),
        lambda: jnn.evaluate(MLP, params, (x, y), loss="cross_entropy", policy="fp16"),
        lambda: jnn.make_train_step(MLP, "mse", "sgd", policy="half"),
    ):
        with pytest.raises(ValueError, match="unknown policy"):
            call()


def test_bfloat16_computes_in_bfloat16_with_float32_params_and_outputs():
    x, y = data()
    _, params = MLP.init(jax.random.key(0), (-1, 6))
    out = jnn.predict(MLP, params, x, policy="mixed_bfloat16")
    assert out.dtype == np.float32
    ref16 = np.asarray(handwritten_forward(params, x, jnp.bfloat16))
    ref32 = np.asarray(handwritten_forward(params, x, jnp.float32))
    np.testing.assert_allclose(out, ref16, atol=2e-3)  # the bf16 program
    assert np.abs(out - ref16).max() < 0.2 * np.abs(out - ref32).max()  # not the float32 one
    res = jnn.fit(MLP, params, (x, y), loss="cross_entropy", epochs=2, batch_size=32,
                  key=jax.random.key(1), policy="mixed_bfloat16", verbose=0)  # fmt: skip
    assert {a.dtype for a in jax.tree.leaves((res.params, res.opt_state))} <= {
        np.dtype("float32"),
        np.dtype("int32"),
    }
    # the loss is computed in float32 from the bf16 outputs (handwritten reference)
    got = jnn.evaluate(MLP, res.params, (x, y), loss="cross_entropy", policy="mixed_bfloat16")
    ref16, ref32 = (
        float(jnn.losses.cross_entropy(handwritten_forward(res.params, x, dt), jnp.asarray(y)))
        for dt in (jnp.bfloat16, jnp.float32)
    )  # XLA may keep a bf16 intermediate in float32 inside a fused program: close, not equal
    assert abs(got["loss"] - ref16) < 0.2 * abs(got["loss"] - ref32)


def test_quickstart_mixed_bfloat16_reaches_093():
    path = Path(__file__).parents[1] / "examples" / "quickstart.py"
    spec = importlib.util.spec_from_file_location("quickstart_bf16", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(epochs=60, out=None, verbose=0, policy="mixed_bfloat16") >= 0.93


def test_loss_scale_skips_overflow_halves_and_grows():
    params = {"w": jnp.ones(3)}
    tx = loss_scaled(optax.adam(0.1), period=2)
    state = tx.init(params)
    assert isinstance(state, LossScaleState) and float(state.scale) == 2.0**15
    bad = {"w": jnp.array([1.0, jnp.inf, 0.0])}
    updates, after = jax.jit(tx.update)(bad, state, params)
    assert float(after.scale) == 2.0**14 and not np.any(np.asarray(updates["w"]))
    assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), after.inner, state.inner))
    good = {"w": jnp.array([0.5, -1.0, 2.0])}
    ref_updates, _ = optax.adam(0.1).update(good, state.inner, params)
    updates, one = tx.update(good, after, params)
    np.testing.assert_allclose(updates["w"], ref_updates["w"])  # exactly adam when finite
    _, two = tx.update(good, one, params)
    assert float(one.scale) == 2.0**14 and float(two.scale) == 2.0**15  # 2 finite: doubled


def test_mixed_float16_overflow_is_skipped_not_divergence():
    """Large targets overflow float16 gradients at the initial 2**15 scale: those steps are
    skipped and the scale drops (on_nan="raise" does not fire), then training proceeds."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = (x @ np.array([[300.0], [-200.0], [100.0], [50.0]], np.float32)).astype(np.float32)
    model = jnn.Dense(1)
    _, params = model.init(jax.random.key(0), (-1, 4))
    res = jnn.fit(model, params, (x, y), loss="mse", optimizer="adam", learning_rate=20.0,
                  epochs=10, batch_size=16, key=jax.random.key(1), policy="mixed_float16",
                  on_nan="raise", verbose=0)  # fmt: skip
    assert isinstance(res.opt_state, LossScaleState)
    assert float(res.opt_state.scale) < 2.0**15  # overflowing steps lowered it
    assert res.history["loss"][-1] < 0.05 * res.history["loss"][0]  # and it trains
    # make_train_step needs the state that holds the loss scale
    step = jnn.make_train_step(model, "mse", "sgd", learning_rate=0.01, policy="mixed_float16")
    plain = jnn.TrainState.create(params, "sgd", learning_rate=0.01, key=jax.random.key(2))
    needs = r"TrainState\.create\(params, optimizer, key=\.\.\., policy=\.\.\.\) using the same"
    with pytest.raises(ValueError, match=needs):
        step(plain, (x, y))
    state = jnn.TrainState.create(params, "sgd", learning_rate=0.01, key=jax.random.key(2),
                                  policy="mixed_float16")  # fmt: skip
    state, logs = step(state, (x, y))
    assert np.isfinite(float(logs["loss"])) and int(state.step) == 1


def test_make_train_step_policy_composes_with_vmap():
    x, y = data(32)
    _, params = MLP.init(jax.random.key(0), (-1, 6))
    step = jnn.make_train_step(MLP, "cross_entropy", "sgd", learning_rate=0.1,
                               policy="mixed_bfloat16", donate=False)  # fmt: skip
    states = [jnn.TrainState.create(params, "sgd", learning_rate=0.1, key=jax.random.key(i))
              for i in range(2)]  # fmt: skip
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *states)
    batched, logs = jax.vmap(step, in_axes=(0, None))(stacked, (x, y))
    one, one_logs = step(states[0], (x, y))
    np.testing.assert_allclose(batched.params["dense_0"]["w"][0], one.params["dense_0"]["w"])
    np.testing.assert_allclose(logs["loss"][0], one_logs["loss"])


def test_layer_norm_statistics_in_float32():
    x = (1000.0 + np.random.default_rng(0).normal(size=(8, 16))).astype(np.float32)
    ln = jnn.LayerNorm()
    _, params = ln.init(jax.random.key(0), (-1, 16))
    xb = jnp.asarray(x.astype(BF16))
    got = np.asarray(ln.apply(params, xb).astype(jnp.float32))
    xf = np.asarray(xb.astype(jnp.float32))
    ref = (xf - xf.mean(-1, keepdims=True)) / np.sqrt(xf.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(got, ref, atol=0.02)  # bf16 statistics are off by ~1
    rms = jnn.RMSNorm()
    _, rp = rms.init(jax.random.key(0), (-1, 16))
    ref = xf / np.sqrt((xf**2).mean(-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(np.asarray(rms.apply(rp, xb).astype(jnp.float32)), ref, atol=0.01)


def test_low_precision_inputs_everywhere(tmp_path):
    x, y = data(64)
    _, params = MLP.init(jax.random.key(0), (-1, 6))
    for dtype in (BF16, np.float16):
        xl = x.astype(dtype)  # computed in float32 (the default policy) from the same values
        ref = jnn.predict(MLP, params, xl.astype(np.float32))
        np.testing.assert_array_equal(jnn.predict(MLP, params, xl), ref)
    xl = x.astype(BF16)
    stream = [(xl[i : i + 32], y[i : i + 32]) for i in range(0, 64, 32)]
    streamed = jnn.fit(MLP, params, stream, loss="cross_entropy", epochs=1,
                       key=jax.random.key(1), shuffle=False, verbose=0)  # fmt: skip
    arrays = jnn.fit(MLP, params, (xl, y), loss="cross_entropy", epochs=1, batch_size=32,
                     key=jax.random.key(1), shuffle=False, validation_data=(xl, y),
                     verbose=0)  # fmt: skip
    assert np.isfinite(arrays.history["val_loss"][0])
    np.testing.assert_allclose(streamed.history["loss"], arrays.history["loss"], rtol=1e-5)
    with pytest.raises(ValueError, match=r"not finite|NaN|Inf"):
        bad = x.astype(BF16)
        bad[3, 2] = np.inf
        jnn.predict(MLP, params, bad)


def test_export_computes_as_trained(tmp_path):
    x, y = data(40)
    _, params = MLP.init(jax.random.key(0), (-1, 6))
    res = jnn.fit(MLP, params, (x, y), loss="cross_entropy", epochs=2, key=jax.random.key(1),
                  policy="mixed_bfloat16", verbose=0)  # fmt: skip
    trained = jnn.predict(MLP, res.params, x, policy="mixed_bfloat16")
    path = tmp_path / "m.jnn"
    meta = jnn.export.save(path, MLP, res.params, (-1, 6), policy="mixed_bfloat16", dtype=BF16)
    assert meta["policy"]["compute_dtype"] == "bfloat16" and meta["input"]["dtype"] == "bfloat16"
    predictor = jnn.export.load(path)
    for xin in (x, x.astype(BF16)):  # float32 in is cast to the model's bfloat16 input
        np.testing.assert_array_equal(np.asarray(predictor(xin)), trained)
    assert np.abs(trained - jnn.predict(MLP, res.params, x)).max() > 1e-4


def test_sweep_policy_equals_lone_fit():
    x, y = data(48, d=3)
    model = jnn.serial(jnn.Dense(8, activation="relu"), jnn.Dense(2))
    kw = dict(loss="cross_entropy", epochs=1, batch_size=16)
    res = ex.sweep(model, (x, y), optimizer=optax.adam(1e-2), seeds=[(3, 4)],
                   policy="mixed_bfloat16", **kw)  # fmt: skip
    init_key, fit_key = ex.run_keys((3, 4))
    _, params = model.init(init_key, (-1, 3))
    alone = jnn.fit(model, params, (x, y), optimizer=optax.adam(1e-2), key=fit_key,
                    policy="mixed_bfloat16", verbose=0, **kw)  # fmt: skip
    np.testing.assert_allclose(alone.history["loss"], res.history["loss"][0], rtol=1e-5)


def test_policy_models_share_programs_by_structure_never_with_float32():
    from jnn.layers._base import stateful
    from jnn.train._cache import canonical
    from jnn.train._precision import apply_policy

    def build():
        return jnn.serial(jnn.Dense(4, activation="relu"), jnn.Dense(1))

    bf16, f32 = jnn.get_policy("mixed_bfloat16"), jnn.get_policy("float32")
    first, second = apply_policy(stateful(build()), bf16), apply_policy(stateful(build()), bf16)
    assert first is second  # built by the same code: one wrapper, one set of programs
    assert canonical(first) is first  # never mapped to the unwrapped model's programs
    assert apply_policy(stateful(build()), f32) is not first
