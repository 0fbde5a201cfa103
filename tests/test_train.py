"""Training: the seed's four steps, compiled epochs, determinism, no retracing, errors."""

import _reference as reference
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jnn


def seed_model():
    return jnn.serial(
        jnn.Dense(10, activation="relu"),
        jnn.Dense(10, activation="relu"),
        jnn.Dense(1, activation="sigmoid"),
    )


def toy_data(n=200, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 10)).astype(np.float32)
    y = (x[:, :3].sum(axis=1, keepdims=True) > 0).astype(np.float32)
    return x, y


def counting(layer):
    """A layer whose apply counts how often it is traced (or run eagerly)."""
    calls = []

    def apply(params, x, *, key=None, train=False):
        calls.append(x.shape)
        return layer.apply(params, x, key=key, train=train)

    return jnn.Layer(layer.init, apply), calls


def test_seed_four_steps_learn():
    x, y = toy_data(400)
    model = seed_model()  # 1. define
    _, params = model.init(jax.random.key(0), (-1, 10))
    res = jnn.fit(
        model,
        params,
        (x[:300], y[:300]),
        loss="bce",
        optimizer="adam",  # 2-3.
        learning_rate=1e-2,
        epochs=30,
        batch_size=32,
        key=jax.random.key(1),
        metrics=["accuracy"],
        validation_data=(x[300:], y[300:]),
        verbose=0,
    )
    probs = jnn.predict(model, res.params, x[300:])  # 4. predict
    assert probs.shape == (100, 1) and ((probs >= 0) & (probs <= 1)).all()
    assert res.history["loss"][-1] < 0.5 * res.history["loss"][0]
    assert res.history["val_accuracy"][-1] > 0.9
    assert list(res.history) == ["loss", "accuracy", "val_loss", "val_accuracy"]
    assert all(len(v) == 30 for v in res.history.values())
    acc = float(((probs > 0.5) == y[300:]).mean())
    assert acc == pytest.approx(res.history["val_accuracy"][-1], abs=1e-6)
    assert jax.tree.structure(res.opt_state) == jax.tree.structure(optax.adam(1e-2).init(params))


def test_fit_does_not_consume_callers_params():
    x, y = toy_data(64)
    model = seed_model()
    _, params = model.init(jax.random.key(0), (-1, 10))
    before = jax.tree.map(np.array, params)
    jnn.fit(model, params, (x, y), loss="bce", epochs=2, key=jax.random.key(1), verbose=0)
    chex.assert_trees_all_equal(jax.tree.map(np.asarray, params), before)  # not donated


def test_same_key_same_data_bit_identical():
    x, y = toy_data(150)
    model = jnn.serial(jnn.Dense(16, activation="relu"), jnn.Dropout(0.2), jnn.Dense(1))
    _, params = model.init(jax.random.key(0), (-1, 10))
    kw = dict(loss="bce_with_logits", epochs=3, batch_size=16, verbose=0)
    a = jnn.fit(model, params, (x, y), key=jax.random.key(7), **kw)
    b = jnn.fit(model, params, (x, y), key=jax.random.key(7), **kw)
    c = jnn.fit(model, params, (x, y), key=jax.random.key(8), **kw)
    chex.assert_trees_all_equal(a.params, b.params)
    assert a.history == b.history
    assert not np.array_equal(a.params["dense_0"]["w"], c.params["dense_0"]["w"])


def test_every_example_used_every_epoch_with_partial_batch():
    """With SGD on mse and a zero-init linear model, one epoch equals a hand computation."""
    n, batch = 10, 4  # batches of 4, 4, 2: the last one is partial
    x = np.arange(n, dtype=np.float32).reshape(n, 1) / n
    y = np.ones((n, 1), np.float32)
    model = jnn.Dense(1)
    params = {"w": jnp.zeros((1, 1)), "b": jnp.zeros(1)}
    res = jnn.fit(
        model,
        params,
        (x, y),
        loss="mse",
        optimizer=optax.sgd(0.1),
        epochs=1,
        batch_size=batch,
        shuffle=False,
        key=jax.random.key(0),
        verbose=0,
    )
    w, b = 0.0, 0.0
    for start in range(0, n, batch):
        xb, yb = x[start : start + batch, 0], y[start : start + batch, 0]
        err = w * xb + b - yb
        w, b = w - 0.1 * np.mean(2 * err * xb), b - 0.1 * np.mean(2 * err)
    np.testing.assert_allclose(res.params["w"][0, 0], w, rtol=1e-5)
    np.testing.assert_allclose(res.params["b"][0], b, rtol=1e-5)
    assert int(res.state.step) == 3


def test_epochs_do_not_retrace_and_fit_reuses_compilation():
    x, y = toy_data(100)
    model, calls = counting(seed_model())
    _, params = model.init(jax.random.key(0), (-1, 10))
    kw = dict(loss="bce", epochs=2, batch_size=32, key=jax.random.key(0), verbose=0)
    jnn.fit(model, params, (x, y), **kw)
    after_two = len(calls)
    jnn.fit(model, params, (x, y), **{**kw, "epochs": 8})
    # The second call only re-traces the eager shape check, never the compiled epoch.
    assert len(calls) - after_two <= 1
    assert all(shape[0] in (1, 32) for shape in calls)


def test_make_train_step_compiles_once_and_donates():
    model = seed_model()
    _, params = model.init(jax.random.key(0), (-1, 10))
    state = jnn.TrainState.create(params, "adam", key=jax.random.key(1))
    traced = chex.assert_max_traces(model.apply, n=1)
    step = jnn.make_train_step(traced, "bce", "adam", metrics=["accuracy"])
    x, y = toy_data(32)
    first = state
    for _ in range(5):
        state, logs = step(state, (x, y))
    assert int(state.step) == 5 and set(logs) == {"loss", "accuracy"}
    assert first.params["dense_0"]["w"].is_deleted()  # donated buffers
    chex.clear_trace_counter()


def test_donation_never_deletes_the_callers_arrays_and_reuse_is_explained():
    model = seed_model()
    _, params = model.init(jax.random.key(0), (-1, 10))
    key = jax.random.key(1)
    state = jnn.TrainState.create(params, "adam", key=key)
    step = jnn.make_train_step(model, "bce", "adam")
    x, y = toy_data(32)
    new_state, _ = step(state, (x, y))
    # The state was donated; the params and key it was created from were not.
    assert state.params["dense_0"]["w"].is_deleted()
    assert model.apply(params, x).shape == (32, 1)
    assert jax.random.normal(key, (2,)).shape == (2,)
    again = jnn.TrainState.create(params, "adam", key=key)  # and can start another run
    assert int(step(again, (x, y))[0].step) == 1
    with pytest.raises(ValueError, match=r"already donated.*Pass the state the previous step"):
        step(state, (x, y))
    assert int(step(new_state, (x, y))[0].step) == 2


def test_train_state_is_a_pytree_and_steps_compose_with_vmap():
    model = seed_model()
    keys = jax.random.split(jax.random.key(0), 4)
    params = jax.vmap(lambda k: model.init(k, (-1, 10))[1])(keys)
    tx = optax.sgd(0.1)
    states = jax.vmap(lambda p, k: jnn.TrainState.create(p, tx, key=k))(params, keys)
    step = jnn.make_train_step(model, "bce", tx, donate=False)
    x, y = toy_data(32)
    new_states, logs = jax.vmap(step, in_axes=(0, None))(states, (x, y))
    assert logs["loss"].shape == (4,)
    one, _ = step(jax.tree.map(lambda a: a[2], states), (x, y))
    chex.assert_trees_all_close(
        jax.tree.map(lambda a: a[2], new_states.params), one.params, rtol=1e-5
    )


def test_grad_of_model_and_loss_matches_finite_differences():
    model = seed_model()
    _, params = model.init(jax.random.key(0), (-1, 10))
    x, y = toy_data(16)

    def loss(p):
        return jnn.losses.bce(model.apply(p, x), y)

    from jax.test_util import check_grads

    check_grads(loss, (params,), order=1, modes=["rev"], eps=1e-2, atol=5e-2, rtol=5e-2)


def test_early_stopping_restores_best_and_callbacks_run():
    x, y = toy_data(200)
    model = seed_model()
    _, params = model.init(jax.random.key(0), (-1, 10))
    seen = []

    def callback(epoch, logs, state):
        seen.append((epoch, logs["val_loss"], int(state.step)))
        return epoch == 5  # stop after the sixth epoch

    res = jnn.fit(
        model,
        params,
        (x[:150], y[:150]),
        loss="bce",
        epochs=50,
        batch_size=50,
        key=jax.random.key(0),
        validation_data=(x[150:], y[150:]),
        callbacks=[callback],
        verbose=0,
    )
    assert [e for e, _, _ in seen] == list(range(6)) and len(res.history["loss"]) == 6
    assert seen[-1][2] == 6 * 3

    res = jnn.fit(
        model,
        params,
        (x[:150], y[:150]),
        loss="bce",
        optimizer="sgd",
        learning_rate=5.0,
        epochs=40,
        batch_size=8,
        key=jax.random.key(0),
        validation_data=(x[150:], y[150:]),
        early_stopping=jnn.EarlyStopping(patience=2),
        verbose=0,
    )
    val = res.history["val_loss"]
    assert len(val) < 40
    best = int(np.argmin(val))
    assert len(val) == best + 3  # stopped after `patience` epochs without improvement
    restored = jnn.evaluate(model, res.params, (x[150:], y[150:]), loss="bce")["loss"]
    assert restored == pytest.approx(val[best], rel=1e-5)


def test_evaluate_matches_numpy():
    x, y = toy_data(103)
    model = seed_model()
    _, params = model.init(jax.random.key(3), (-1, 10))
    probs = np.asarray(model.apply(params, x))
    p = np.clip(probs, 1e-7, 1 - 1e-7)
    bce = float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))
    acc = float(np.mean((probs > 0.5) == y))
    out = jnn.evaluate(model, params, (x, y), loss="bce", metrics=["accuracy"], batch_size=10)
    assert out["loss"] == pytest.approx(bce, rel=1e-5)
    assert out["accuracy"] == pytest.approx(acc, abs=1e-6)


def test_predict_one_row_per_input_and_one_compile():
    model, calls = counting(seed_model())
    _, params = model.init(jax.random.key(0), (-1, 10))
    x = np.random.default_rng(0).normal(size=(1_000_000, 10)).astype(np.float32)
    out = jnn.predict(model, params, x, batch_size=65_536)
    assert out.shape == (1_000_000, 1)
    # The device only ever sees one batch: every traced shape is a single batch.
    assert calls and all(shape == (65_536, 10) for shape in calls)
    np.testing.assert_allclose(out[-5:], model.apply(params, x[-5:]), rtol=1e-5, atol=1e-6)


def test_predict_leading_batch_dims_and_small_inputs():
    model = seed_model()
    _, params = model.init(jax.random.key(0), (-1, 10))
    x = np.ones((3, 10), np.float32)
    np.testing.assert_allclose(
        jnn.predict(model, params, x, batch_size=2), model.apply(params, x), rtol=1e-6
    )


def test_optimizer_names_and_objects():
    x, y = toy_data(64)
    model = seed_model()
    _, params = model.init(jax.random.key(0), (-1, 10))
    # Each name with Keras's default learning rate, and an object: the same training as
    # the optax transformation in a plain loop (tests/_reference.py).
    for opt, tx in [
        ("sgd", optax.sgd(0.01)),
        ("adam", optax.adam(1e-3)),
        ("adamw", optax.adamw(1e-3)),
        ("rmsprop", optax.rmsprop(1e-3)),
        (optax.adam(1e-2), optax.adam(1e-2)),
    ]:
        res = jnn.fit(
            model,
            params,
            (x, y),
            loss="bce",
            optimizer=opt,
            epochs=1,
            key=jax.random.key(0),
            verbose=0,
            shuffle=False,
        )
        want, _, losses = reference.fit(
            model.apply, params, x, y, loss=reference.bce, tx=tx, epochs=1, batch_size=32
        )
        reference.assert_trees_close(res.params, want)
        assert res.history["loss"] == pytest.approx(losses, rel=1e-5)
    with pytest.raises(ValueError, match="Did you mean 'adam'"):
        jnn.get_optimizer("adm")
    with pytest.raises(ValueError, match="only used with an optimizer name"):
        jnn.get_optimizer(optax.sgd(0.1), 0.1)


def test_progress_output(capsys):
    x, y = toy_data(64)
    model = seed_model()
    _, params = model.init(jax.random.key(0), (-1, 10))
    jnn.fit(
        model,
        params,
        (x, y),
        loss="bce",
        epochs=2,
        key=jax.random.key(0),
        verbose=1,
        metrics=["accuracy"],
    )
    out = capsys.readouterr().out
    assert "Epoch 2/2" in out and "loss:" in out and "accuracy:" in out
    jnn.fit(model, params, (x, y), loss="bce", epochs=2, key=jax.random.key(0), verbose=0)
    assert capsys.readouterr().out == ""


BAD_FIT = [
    (dict(data=(np.ones((10, 10)), np.ones((9, 1)))), ValueError, "same number of examples.*10.*9"),
    (
        dict(data=(np.ones((10, 7)), np.ones((10, 1)))),
        ValueError,
        r"expected input of shape \(\.\.\., 10\), got \(1, 7\)",
    ),
    (dict(data=(np.array([["a"] * 10] * 4), np.ones((4, 1)))), TypeError, "numeric"),
    (dict(data=(np.ones((0, 10)), np.ones((0, 1)))), ValueError, "empty"),
    (dict(batch_size=0), ValueError, "batch_size must be a positive int"),
    (dict(epochs=-1), ValueError, "epochs must be a positive int"),
    (
        dict(data=(np.full((4, 10), np.nan), np.ones((4, 1)))),
        ValueError,
        "NaN/Inf.*first at example 0",
    ),
    (dict(data=(np.ones((4, 10)), np.full((4, 1), 2.0))), ValueError, r"labels in \[0, 1\]"),
    (
        dict(data=(np.ones((4, 10)), np.ones((4,)))),
        ValueError,
        r"predictions have shape \(4, 1\) but the labels y have shape \(4,\).*reshape\(4, 1\)",
    ),
    (dict(data=np.ones((4, 10))), TypeError, "pair"),
    (dict(loss="bc"), ValueError, "Did you mean 'bce'"),
    (dict(optimizer="adamm"), ValueError, "Did you mean 'adam'"),
    (dict(key=0), TypeError, r"jax\.random\.key\(0\)"),
    (dict(metrics=["acc", "acc"]), ValueError, "unique"),
    (
        dict(early_stopping=jnn.EarlyStopping(monitor="val_loss")),
        ValueError,
        "needs validation_data",
    ),
]


@pytest.mark.parametrize("overrides, error, pattern", BAD_FIT)
def test_fit_rejects_bad_input_before_compiling(overrides, error, pattern):
    model = seed_model()
    _, params = model.init(jax.random.key(0), (-1, 10))
    kwargs = dict(
        data=(np.ones((4, 10), np.float32), np.ones((4, 1), np.float32)),
        loss="bce",
        key=jax.random.key(0),
        verbose=0,
    )
    kwargs.update(overrides)
    data = kwargs.pop("data")
    with pytest.raises(error, match=pattern):
        jnn.fit(model, params, data, **kwargs)


def test_stateful_model_requires_model_state():
    stateful = jnn.stateful(seed_model())
    _, params, state = stateful.init(jax.random.key(0), (-1, 10))
    x, y = toy_data(32)
    with pytest.raises(ValueError, match="model_state="):
        jnn.fit(stateful, params, (x, y), loss="bce", key=jax.random.key(0), verbose=0)
    res = jnn.fit(
        stateful, params, (x, y), loss="bce", key=jax.random.key(0), verbose=0, model_state=state
    )
    assert res.model_state == state == {}
    plain = jnn.fit(seed_model(), params, (x, y), loss="bce", key=jax.random.key(0), verbose=0)
    reference.assert_trees_close(res.params, plain.params, 1e-6)
    assert res.history == plain.history


def test_progress_never_redraws_a_line_when_stdout_is_not_a_terminal(capsys):
    """The running line (\\r, erase, batches so far) is for terminals only: a log file gets
    one line per epoch, however long the epoch (here a slow stream, ticked every batch)."""
    import time

    x, y = toy_data(64)
    model = seed_model()
    _, params = model.init(jax.random.key(0), (-1, 10))

    def slow_batches():
        for i in range(0, 64, 16):
            time.sleep(0.25)  # each tick comes > 0.2 s after the last: a terminal redraws
            yield x[i : i + 16], y[i : i + 16]

    jnn.fit(model, params, slow_batches, loss="bce", epochs=1, steps_per_call=1,
            key=jax.random.key(0), verbose=1)  # fmt: skip
    out = capsys.readouterr().out
    assert "\r" not in out and "\x1b[2K" not in out
    assert out.count("Epoch 1/1") == 1 and "4 batches" in out
