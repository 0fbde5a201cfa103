"""Tests that fail when training is wrong (issue 22).

Each test here was checked against a planted bug (tools/blind_spots.md lists them): a
plausible one-line mistake in jnn that the rest of the suite let through. They work
through the public API, against references that share no code with jnn: optax's
transformations, ``jax.nn``, handwritten layer math, scikit-learn's ``KFold``.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.model_selection import KFold

import jnn
from jnn.experiments import kfold_weights

# --------------------------------------------------------------------------- shuffling


_SEEN: list[np.ndarray] = []


def _recording_mse(pred, target, *, weights=None):
    """mse that records each step's targets (one function: fit compiles it once)."""
    jax.debug.callback(lambda t: _SEEN.append(np.asarray(t).ravel().copy()), target,
                       ordered=True)  # fmt: skip
    return jnn.losses.mse(pred, target, weights=weights)


_LINEAR = jnn.Dense(1)


def _recording_fit(key, *, epochs=3, shuffle=True, n=16, batch_size=4):
    """The targets (= row numbers) of every training step, in the order fit used them."""
    _SEEN.clear()
    x = np.arange(n, dtype=np.float32).reshape(n, 1)
    _, params = _LINEAR.init(jax.random.key(0), (-1, 1))
    jnn.fit(_LINEAR, params, (x, x.copy()), loss=_recording_mse, optimizer=optax.sgd(0.0),
            epochs=epochs, batch_size=batch_size, key=key, verbose=0,
            shuffle=shuffle)  # fmt: skip
    steps = n // batch_size
    assert len(_SEEN) == epochs * steps
    return [np.concatenate(_SEEN[e * steps : (e + 1) * steps]).astype(int) for e in range(epochs)]


def test_fit_shuffles_every_epoch_by_its_key():
    n = 16
    orders = _recording_fit(jax.random.key(1))
    for order in orders:  # every row exactly once per epoch
        np.testing.assert_array_equal(np.sort(order), np.arange(n))
    # Each epoch has its own order, and none is the identity.
    assert len({tuple(o) for o in orders}) == len(orders)
    assert all(not np.array_equal(o, np.arange(n)) for o in orders)
    # The order is a pure function of the key: same key, same orders; another key, others.
    again = _recording_fit(jax.random.key(1))
    for a, b in zip(orders, again, strict=True):
        np.testing.assert_array_equal(a, b)
    other = _recording_fit(jax.random.key(2))
    assert not any(np.array_equal(a, b) for a, b in zip(orders, other, strict=True))
    # shuffle=False walks the rows in order.
    for order in _recording_fit(jax.random.key(1), shuffle=False):
        np.testing.assert_array_equal(order, np.arange(n))


# --------------------------------------------------------------------------- dropout


_DROP = jnn.serial(jnn.Dropout(0.5), jnn.Dense(1, use_bias=False))
_DROP_STEP = jnn.make_train_step(_DROP, "mse", optax.sgd(1.0), donate=False)


def _dropout_masks(key, steps):
    """Which inputs each training step's dropout kept, read off an SGD update.

    The model is Dropout then a linear map; with x = 1 and lr = 1, the weight update of
    input i is zero exactly when dropout dropped input i.
    """
    f = 64
    _, params = _DROP.init(jax.random.key(0), (-1, f))
    state = jnn.TrainState.create(params, optax.sgd(1.0), key=key)
    x, y = jnp.ones((1, f)), jnp.full((1, 1), 100.0)
    masks = []
    for _ in range(steps):
        new, _ = _DROP_STEP(state, (x, y))
        delta = np.asarray(new.params["dense_0"]["w"] - state.params["dense_0"]["w"])[:, 0]
        masks.append(delta != 0)
        state = new
    return masks


def test_dropout_mask_changes_every_step_and_repeats_for_the_same_key_and_step():
    masks = _dropout_masks(jax.random.key(3), 3)
    for m in masks:
        assert 16 <= m.sum() <= 48  # about half kept
    assert len({m.tobytes() for m in masks}) == 3  # a new mask at every step
    again = _dropout_masks(jax.random.key(3), 3)
    for a, b in zip(masks, again, strict=True):
        np.testing.assert_array_equal(a, b)  # same key and step: same mask
    other = _dropout_masks(jax.random.key(4), 1)[0]
    assert not np.array_equal(other, masks[0])


# --------------------------------------------------------------------------- optimizers

# The names jnn documents, and the optax transformation each one is.
OPTAX = {
    "sgd": optax.sgd,
    "adam": optax.adam,
    "adamw": optax.adamw,
    "rmsprop": optax.rmsprop,
    "adagrad": optax.adagrad,
    "adamax": optax.adamax,
    "nadam": optax.nadam,
    "lamb": optax.lamb,
    "lion": optax.lion,
}


def test_optimizer_names_are_the_documented_ones():
    with pytest.raises(ValueError, match="Unknown optimizer 'nope'") as err:
        jnn.get_optimizer("nope")
    known = re.search(r"Known: (.*?); or pass", str(err.value)).group(1).split(", ")
    assert sorted(known) == sorted(OPTAX)


@pytest.mark.parametrize("name", sorted(OPTAX))
def test_each_optimizer_name_is_the_optax_transformation_it_names(name):
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)}
    grads = [{"w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)} for _ in range(3)]
    got_tx, want_tx = jnn.get_optimizer(name, 0.03), OPTAX[name](learning_rate=0.03)
    got_state, want_state = got_tx.init(params), want_tx.init(params)
    p_got = p_want = params
    for g in grads:  # three steps with different gradients: first steps can coincide
        u_got, got_state = got_tx.update(g, got_state, p_got)
        u_want, want_state = want_tx.update(g, want_state, p_want)
        np.testing.assert_array_equal(np.asarray(u_got["w"]), np.asarray(u_want["w"]))
        p_got, p_want = optax.apply_updates(p_got, u_got), optax.apply_updates(p_want, u_want)


# --------------------------------------------------------------------------- layers


def _rand(key, shape, lo=None):
    v = np.asarray(jax.random.normal(jax.random.key(key), shape))
    return v if lo is None else lo + np.abs(v)


def test_layer_norm_and_rms_norm_use_their_scale_and_bias():
    x = _rand(0, (4, 3, 6)) * 3.0 + 1.0
    scale, bias = _rand(1, (6,)), _rand(2, (6,))
    xn, sn, bn = np.asarray(x), np.asarray(scale), np.asarray(bias)
    ln = jnn.LayerNorm(epsilon=1e-3)
    _, p = ln.init(jax.random.key(0), x.shape)
    assert set(p) == {"scale", "bias"}
    got = ln.apply({"scale": scale, "bias": bias}, x)
    mean, var = xn.mean(-1, keepdims=True), xn.var(-1, keepdims=True)
    np.testing.assert_allclose(got, (xn - mean) / np.sqrt(var + 1e-3) * sn + bn, atol=1e-5)
    rms = jnn.RMSNorm(epsilon=1e-3)
    rms.init(jax.random.key(0), x.shape)
    got = rms.apply({"scale": scale}, x)
    want = xn / np.sqrt((xn**2).mean(-1, keepdims=True) + 1e-3) * sn
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_batch_norm_uses_scale_bias_and_running_statistics():
    x = _rand(0, (8, 5)) * 2.0 - 0.5
    bn = jnn.BatchNorm(momentum=0.8, epsilon=1e-3)
    _, params, state = bn.init(jax.random.key(0), (-1, 5))
    assert set(params) == {"scale", "bias"} and set(state) == {"mean", "var"}
    params = {"scale": _rand(1, (5,)), "bias": _rand(2, (5,))}
    state = {"mean": _rand(3, (5,)), "var": _rand(4, (5,), lo=0.5)}
    y, new = bn.apply(params, state, x, train=True)
    mu, var = x.mean(0), x.var(0)
    want = (x - mu) / np.sqrt(var + 1e-3) * params["scale"] + params["bias"]
    np.testing.assert_allclose(y, want, atol=1e-5)
    np.testing.assert_allclose(new["mean"], 0.8 * state["mean"] + 0.2 * mu, atol=1e-6)
    np.testing.assert_allclose(new["var"], 0.8 * state["var"] + 0.2 * var, atol=1e-6)
    y, same = bn.apply(params, state, x, train=False)
    want = (x - state["mean"]) / np.sqrt(state["var"] + 1e-3) * params["scale"] + params["bias"]
    np.testing.assert_allclose(y, want, atol=1e-5)
    for k in state:
        np.testing.assert_array_equal(same[k], state[k])


def _conv_transpose_reference(x, w, b, stride):
    """Handwritten 1-D transposed convolution, padding VALID, flax's unflipped kernel:
    input row i, tap j lands on output row i * stride + (k - 1 - j)."""
    n, length, _ = x.shape
    k, _, out = w.shape
    y = np.zeros((n, (length - 1) * stride + k, out), np.float64)
    for i in range(length):
        for j in range(k):
            y[:, i * stride + (k - 1 - j)] += np.asarray(x[:, i], np.float64) @ np.asarray(
                w[j], np.float64
            )
    return y + np.asarray(b, np.float64)


@pytest.mark.parametrize("stride", [1, 2])
def test_conv_transpose_with_bias_matches_a_handwritten_reference(stride):
    x = _rand(0, (2, 5, 3))
    layer = jnn.ConvTranspose(4, (3,), strides=stride, padding="VALID")
    out_shape, params = layer.init(jax.random.key(0), (-1, 5, 3))
    params = {"w": _rand(1, params["w"].shape), "b": _rand(2, (4,))}
    got = layer.apply(params, x)
    want = _conv_transpose_reference(x, params["w"], params["b"], stride)
    assert got.shape == want.shape and out_shape[1:] == want.shape[1:]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# Every activation name and its jax.nn function (sigmoid's value is jax.nn's; only its
# gradient floor differs, tested in test_layers).
JAX_NN = {
    "linear": lambda x: x,
    "relu": jax.nn.relu,
    "relu6": jax.nn.relu6,
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "softmax": jax.nn.softmax,
    "log_softmax": jax.nn.log_softmax,
    "leaky_relu": jax.nn.leaky_relu,
    "elu": jax.nn.elu,
    "celu": jax.nn.celu,
    "selu": jax.nn.selu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "mish": jax.nn.mish,
    "softplus": jax.nn.softplus,
    "soft_sign": jax.nn.soft_sign,
    "hard_tanh": jax.nn.hard_tanh,
    "hard_sigmoid": jax.nn.hard_sigmoid,
    "log_sigmoid": jax.nn.log_sigmoid,
}


def test_every_activation_name_is_its_jax_nn_function():
    assert sorted(jnn.layers.ACTIVATIONS) == sorted(JAX_NN)
    x = jnp.linspace(-7.0, 7.0, 57).reshape(3, 19)  # both sides of every kink (0, +-1, 6)
    both = jax.jit(lambda x: {n: (jnn.Activation(n).apply({}, x), f(x)) for n, f in JAX_NN.items()})
    for name, (got, want) in both(x).items():  # one compilation for all
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7, err_msg=name)
    # Dense(activation=name) goes through the same table.
    dense = jnn.Dense(19, activation="gelu")
    _, p = dense.init(jax.random.key(0), (-1, 19))
    np.testing.assert_allclose(dense.apply(p, x), jax.nn.gelu(x @ p["w"] + p["b"][None]),
                               rtol=1e-6, atol=1e-6)  # fmt: skip


# --------------------------------------------------------------------------- k-fold


@pytest.mark.parametrize("n, k", [(7, 3), (10, 4), (9, 2), (5, 5)])
def test_kfold_matches_scikit_learn_kfold_semantics(n, k):
    """Each example in exactly one validation fold, train its complement, and fold sizes
    those of scikit-learn's KFold (the first ``n % k`` folds one larger). Unshuffled,
    example i is in fold i % k; shuffled, folds are those of a permutation."""
    sk_sizes = [len(val) for _, val in KFold(k).split(np.zeros((n, 1)))]
    for shuffle in (False, True):
        train, val = kfold_weights(n, k, seed=3, shuffle=shuffle)
        assert train.shape == val.shape == (k, n)
        np.testing.assert_array_equal(train + val, np.ones((k, n)))
        np.testing.assert_array_equal(val.sum(axis=0), np.ones(n))
        assert val.sum(axis=1).astype(int).tolist() == sk_sizes
    _, val = kfold_weights(n, k, shuffle=False)
    for j in range(k):
        np.testing.assert_array_equal(np.flatnonzero(val[j]), np.arange(j, n, k))


def test_sweep_folds_validate_on_exactly_the_kfold_rows():
    """sweep(folds=k) validates run j on kfold_weights' fold j alone: with lr 0 the params
    never move, so each run's val_loss is the loss on those rows."""
    n, k = 7, 3
    x = np.arange(n, dtype=np.float32)[:, None]
    _, val = kfold_weights(n, k, seed=0)
    res = jnn.experiments.sweep(jnn.Dense(1), (x, x), loss="mse", optimizer=optax.sgd(0.0),
                                epochs=1, batch_size=n, folds=k, verbose=0)  # fmt: skip
    assert [run.fold for run in res.runs] == list(range(k))
    for run in res.runs:
        pred = np.asarray(jnn.Dense(1).apply(res.run_params(run.index), x))
        want = np.mean(((pred - x) ** 2)[val[run.fold] == 1])
        assert res.history["val_loss"][run.index, -1] == pytest.approx(want, rel=1e-5)


# --------------------------------------------------------------------------- epoch means


def test_epoch_logs_are_weighted_means_over_examples_not_means_of_batch_means():
    """Unequal batches (4, 4, 2 rows) and unequal sample weights: the epoch's loss is
    sum(w * l) / sum(w) over all rows. lr = 0 keeps the params, so it is exact."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 3)).astype(np.float32)
    y = rng.normal(size=(10, 1)).astype(np.float32)
    w = rng.uniform(0.2, 3.0, size=10).astype(np.float32)
    model = jnn.Dense(1)
    _, params = model.init(jax.random.key(0), (-1, 3))
    per_row = ((np.asarray(model.apply(params, x)) - y) ** 2)[:, 0]
    res = jnn.fit(model, params, (x, y), loss="mse", optimizer=optax.sgd(0.0), epochs=1,
                  batch_size=4, key=jax.random.key(0), verbose=0, shuffle=False,
                  metrics=["mae"])  # fmt: skip
    assert res.history["loss"][0] == pytest.approx(per_row.mean(), rel=1e-6)
    batch_means = np.mean([per_row[:4].mean(), per_row[4:8].mean(), per_row[8:].mean()])
    assert abs(batch_means - per_row.mean()) > 1e-2  # the two readings really differ
    res = jnn.fit(model, params, (x, y), loss="mse", optimizer=optax.sgd(0.0), epochs=1,
                  batch_size=4, key=jax.random.key(0), verbose=0, shuffle=False,
                  sample_weight=w)  # fmt: skip
    assert res.history["loss"][0] == pytest.approx(np.sum(w * per_row) / np.sum(w), rel=1e-6)
    got = jnn.evaluate(model, params, (x, y), loss="mse", batch_size=4, sample_weight=w)
    assert got["loss"] == pytest.approx(np.sum(w * per_row) / np.sum(w), rel=1e-6)
