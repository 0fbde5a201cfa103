"""Optimizer extras: any optax transformation (MultiSteps, reduce_on_plateau with
value=loss), gradient accumulation, an EMA of the params, frozen params; each against
a handwritten optax loop."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jnn

MODEL = jnn.serial(jnn.Dense(8, activation="tanh"), jnn.Dense(1))
KW = dict(loss="mse", verbose=0, shuffle=False, key=jax.random.key(1))


def data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    return x, (x @ np.array([[1.0], [-2.0], [0.5]], np.float32)).astype(np.float32)


def init(seed=0):
    return MODEL.init(jax.random.key(seed), (-1, 3))[1]


def loss_fn(params, x, y):
    return jnp.mean((MODEL.apply(params, x) - y) ** 2)


def handwritten(tx, params, batches, epochs, *, ema=None):
    """Plain optax: ``tx.update(grads, state, params, value=loss)`` over the batches."""

    @jax.jit
    def step(params, state, avg, xb, yb):
        loss, grads = jax.value_and_grad(loss_fn)(params, xb, yb)
        updates, state = tx.update(grads, state, params, value=loss)
        params = optax.apply_updates(params, updates)
        if ema is not None:
            avg = jax.tree.map(lambda e, p: ema * e + (1 - ema) * p, avg, params)
        return params, state, avg

    state, avg = tx.init(params), params
    for _ in range(epochs):
        for xb, yb in batches:
            params, state, avg = step(params, state, avg, xb, yb)
    return params, state, avg


def close(a, b, rtol=1e-5, atol=1e-6):
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=rtol, atol=atol), a, b)


def test_reduce_on_plateau_gets_the_loss_and_lowers_the_rate():
    x, _ = data()
    y = np.random.default_rng(5).normal(size=(32, 1)).astype(np.float32)  # noise: a plateau
    tx = optax.chain(
        optax.sgd(0.05), optax.contrib.reduce_on_plateau(patience=2, factor=0.5, rtol=1e-2)
    )
    res = jnn.fit(MODEL, init(), (x, y), optimizer=tx, epochs=40, batch_size=32, **KW)
    params, state, _ = handwritten(tx, init(), [(x, y)], 40)
    close(res.params, params)
    scale = float(res.opt_state[1].scale)
    assert scale == float(state[1].scale) and scale < 1.0  # the rate really dropped


def test_multisteps_object_and_accumulate_steps_equal_one_big_batch():
    x, y = data(32)
    big = jnn.fit(MODEL, init(), (x, y), optimizer=optax.adam(0.01), epochs=2, batch_size=32,
                  **KW)  # fmt: skip
    acc = jnn.fit(MODEL, init(), (x, y), optimizer=optax.adam(0.01), epochs=2, batch_size=8,
                  accumulate_steps=4, **KW)  # fmt: skip
    multi = jnn.fit(MODEL, init(), (x, y), optimizer=optax.MultiSteps(optax.adam(0.01), 4),
                    epochs=2, batch_size=8, **KW)  # fmt: skip
    close(acc.params, big.params)
    close(multi.params, big.params)
    assert int(acc.state.step) == 8  # steps count batches; 2 updates were made
    assert jnn.get_optimizer(optax.MultiSteps(optax.sgd(0.1), 2)).init(init()) is not None


def test_ema_matches_handwritten_evaluates_and_resumes(tmp_path):
    x, y = data(32)
    xv, yv = data(16, seed=1)
    tx = optax.sgd(0.05)
    res = jnn.fit(MODEL, init(), (x, y), optimizer=tx, epochs=3, batch_size=8, ema=0.9,
                  ema_eval=True, validation_data=(xv, yv), **KW)  # fmt: skip
    batches = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 32, 8)]
    params, _, avg = handwritten(tx, init(), batches, 3, ema=0.9)
    close(res.params, params)
    close(res.ema_params, avg)
    val = jnn.evaluate(MODEL, res.ema_params, (xv, yv), loss="mse")["loss"]
    np.testing.assert_allclose(res.history["val_loss"][-1], val, rtol=1e-5)
    assert jnn.fit(MODEL, init(), (x, y), epochs=1, **KW).ema_params is None
    # checkpoints carry the EMA: 2 epochs, then resume to 3 == 3 straight
    ck = dict(optimizer=tx, batch_size=8, ema=0.9, checkpoint_dir=tmp_path, **KW)
    jnn.fit(MODEL, init(), (x, y), epochs=2, **ck)
    resumed = jnn.fit(MODEL, init(), (x, y), epochs=3, resume=True, **ck)
    straight = jnn.fit(MODEL, init(), (x, y), optimizer=tx, epochs=3, batch_size=8, ema=0.9,
                       **KW)  # fmt: skip
    jax.tree.map(np.testing.assert_array_equal, resumed.ema_params, straight.ema_params)


def test_frozen_params_bit_identical_no_state_and_trainable_ones_as_handwritten():
    x, y = data(32)
    params = init()
    tx = optax.adam(0.05)
    for trainable in (lambda path: path.startswith("dense_1"), {"dense_0": False, "dense_1": True}):
        res = jnn.fit(MODEL, params, (x, y), optimizer=tx, epochs=3, batch_size=16,
                      trainable=trainable, **KW)  # fmt: skip
        jax.tree.map(np.testing.assert_array_equal, res.params["dense_0"], params["dense_0"])
        mu = res.opt_state.inner_states["train"].inner_state[0].mu
        assert isinstance(mu["dense_0"]["w"], optax.MaskedNode)  # no state for frozen ones

        def head_loss(head, xb, yb):
            return loss_fn({"dense_0": params["dense_0"], "dense_1": head}, xb, yb)

        @jax.jit
        def step(head, state, xb, yb):
            updates, state = tx.update(jax.grad(head_loss)(head, xb, yb), state, head)
            return optax.apply_updates(head, updates), state

        head, state = params["dense_1"], tx.init(params["dense_1"])
        for _ in range(3):
            for i in (0, 16):
                head, state = step(head, state, x[i : i + 16], y[i : i + 16])
        close(res.params["dense_1"], head)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(accumulate_steps=0), ValueError, "accumulate_steps must be a positive int, got 0"),
        (dict(accumulate_steps=2.5), ValueError, "accumulate_steps must be a positive int"),
        (dict(ema=1.0), ValueError, r"ema must be a number in \(0, 1\), got 1.0"),
        (dict(ema=0), ValueError, r"ema must be a number in \(0, 1\)"),
        (dict(ema="high"), ValueError, r"ema must be a number in \(0, 1\), got 'high'"),
        (dict(ema_eval=True), ValueError, "ema_eval=True evaluates with the EMA"),
        (dict(trainable=lambda path: False), ValueError, "leaves no param trainable"),
        (dict(trainable={"dense_0": True, "head": False}), ValueError,
         "at the root, trainable= has 'head', which the params lack"),
        (dict(trainable={"dense_0": {"w": True}, "dense_1": True}), ValueError,
         "at dense_0, trainable= lacks 'b'"),
        (dict(trainable={"dense_0": True, "dense_1": {"w": True}}), ValueError,
         "at dense_1, trainable= lacks 'b'"),  # past a key that matches
        (dict(policy="mixed_bfloat"), ValueError, "Did you mean 'mixed_bfloat16'"),
    ],
)  # fmt: skip
def test_bad_extras_are_named_before_compiling(kwargs, error, match):
    x, y = data(8)
    with pytest.raises(error, match=match):
        jnn.fit(MODEL, init(), (x, y), epochs=1, **KW, **kwargs)


def test_ema_inside_gradient_accumulation_averages_the_real_updates():
    """accumulate_steps=2 of batches of 8 is one update per 16 rows; the EMA (inside the
    accumulator) averages those updates, and fit finds it there."""
    x, y = data(32)
    tx = optax.sgd(0.05)
    res = jnn.fit(MODEL, init(), (x, y), optimizer=tx, epochs=3, batch_size=8, ema=0.9,
                  accumulate_steps=2, **KW)  # fmt: skip
    assert res.ema_params is not None
    batches = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 32, 16)]
    params, _, avg = handwritten(tx, init(), batches, 3, ema=0.9)
    close(res.params, params)
    close(res.ema_params, avg)
