"""Losses: values by hand, stability at extreme values, no broadcasting, weights/masks."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jnn
from jnn import losses


def test_mse_by_hand():
    pred, target = jnp.array([[1.0], [2.0], [4.0]]), jnp.array([[0.0], [2.0], [1.0]])
    assert float(losses.mse(pred, target)) == pytest.approx((1 + 0 + 9) / 3)
    # The tutorial's L = 1/(2N) sum (y - yhat)^2 is half of it.
    assert float(0.5 * losses.mse(pred, target)) == pytest.approx(10 / 6)


def test_mae_by_hand():
    assert float(losses.mae(jnp.array([1.0, -3.0]), jnp.array([0.0, 0.0]))) == 2.0


def test_bce_by_hand():
    p, y = jnp.array([0.9, 0.2, 0.6]), jnp.array([1.0, 0.0, 0.0])
    expected = -(math.log(0.9) + math.log(0.8) + math.log(0.4)) / 3
    assert float(losses.bce(p, y)) == pytest.approx(expected, rel=1e-6)


def test_bce_with_logits_by_hand():
    z, y = jnp.array([2.0, -1.0]), jnp.array([1.0, 0.0])
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    expected = -(math.log(sig(2.0)) + math.log(1 - sig(-1.0))) / 2
    assert float(losses.bce_with_logits(z, y)) == pytest.approx(expected, rel=1e-6)


def test_cross_entropy_integer_and_one_hot_agree_by_hand():
    logits = jnp.array([[1.0, 2.0, 3.0], [1.0, 0.0, -1.0]])
    labels = jnp.array([2, 0])
    lse = [math.log(math.exp(1) + math.exp(2) + math.exp(3)), math.log(math.e + 1 + math.exp(-1))]
    expected = ((lse[0] - 3.0) + (lse[1] - 1.0)) / 2
    assert float(losses.cross_entropy(logits, labels)) == pytest.approx(expected, rel=1e-6)
    one_hot = jax.nn.one_hot(labels, 3)
    assert float(losses.cross_entropy(logits, one_hot)) == pytest.approx(expected, rel=1e-6)


def test_categorical_crossentropy_from_probs():
    probs = jnp.array([[0.2, 0.8], [0.6, 0.4]])
    expected = -(math.log(0.8) + math.log(0.6)) / 2
    assert float(losses.categorical_crossentropy(probs, jnp.array([1, 0]))) == pytest.approx(
        expected, rel=1e-6
    )
    one_hot = jnp.array([[0.0, 1.0], [1.0, 0.0]])
    assert float(losses.categorical_crossentropy(probs, one_hot)) == pytest.approx(
        expected, rel=1e-6
    )


@pytest.mark.parametrize("logit", [1e4, -1e4, 1e9, -1e9])
@pytest.mark.parametrize("label", [0.0, 1.0])
def test_bce_with_logits_is_finite_and_exact_at_extremes(logit, label):
    z, y = jnp.array([logit]), jnp.array([label])
    value = float(losses.bce_with_logits(z, y))
    wrong = (logit > 0) != (label == 1.0)
    assert value == pytest.approx(abs(logit) if wrong else 0.0, abs=1e-6)
    grad = float(jax.grad(lambda v: losses.bce_with_logits(v, y))(z)[0])
    assert grad == pytest.approx(float(jax.nn.sigmoid(logit)) - label, abs=1e-6)


@pytest.mark.parametrize("logit", [1e4, -1e4, 50.0, -50.0])
@pytest.mark.parametrize("label", [0.0, 1.0])
def test_bce_on_jnn_sigmoid_trains_like_logits_at_saturation(logit, label):
    """The sigmoid + bce pair: finite loss, and the logits' gradient keeps sign and ~size."""
    z, y = jnp.array([logit]), jnp.array([label])

    def loss(v):
        return losses.bce(jnn.layers.sigmoid(v), y)

    value, grad = jax.value_and_grad(loss)(z)
    assert np.isfinite(float(value)) and np.isfinite(float(grad[0]))
    reference = float(jax.grad(lambda v: losses.bce_with_logits(v, y))(z)[0])
    if abs(reference) > 0.5:  # wrong and saturated: must still push back at ~unit rate
        assert np.sign(float(grad[0])) == np.sign(reference)
        assert 0.5 < abs(float(grad[0])) < 2.0
    else:  # right and saturated: next to no push
        assert abs(float(grad[0])) < 1e-6


def test_saturated_sigmoid_model_trains_with_bce():
    """A model whose logits start at ~±1e4 on the wrong side recovers under BCE."""
    x = jnp.concatenate([jnp.ones((16, 1)), -jnp.ones((16, 1))])
    y = jnp.concatenate([jnp.zeros((16, 1)), jnp.ones((16, 1))])
    model = jnn.Dense(1, activation="sigmoid")
    params = {"w": jnp.array([[1e4]]), "b": jnp.zeros(1)}  # confidently wrong
    res = jnn.fit(
        model,
        params,
        (x, y),
        loss="bce",
        optimizer="sgd",
        learning_rate=1e3,
        epochs=30,
        batch_size=32,
        key=jax.random.key(0),
        verbose=0,
    )
    assert all(np.isfinite(res.history["loss"]))
    assert res.history["loss"][-1] < 0.1 * res.history["loss"][0]
    assert float(res.params["w"][0, 0]) < 0


@pytest.mark.parametrize("loss_fn", [losses.mse, losses.bce, losses.bce_with_logits, losses.mae])
def test_no_silent_broadcasting(loss_fn):
    pred, labels = jnp.full((8, 1), 0.5), jnp.zeros((8,))
    with pytest.raises(ValueError, match=r"\(8, 1\) vs labels \(8,\).*labels.reshape\(8, 1\)"):
        loss_fn(pred, labels)
    with pytest.raises(ValueError, match=r"shape mismatch"):
        jax.jit(loss_fn)(pred, labels)  # raised while tracing, before XLA


def test_cross_entropy_label_shape_errors():
    logits = jnp.zeros((4, 3))
    with pytest.raises(ValueError, match=r"labels of shape \(4, 1\).*reshape\(-1\)"):
        losses.cross_entropy(logits, jnp.zeros((4, 1), jnp.int32))
    with pytest.raises(TypeError, match="must be integers"):
        losses.cross_entropy(logits, jnp.zeros((4,), jnp.float32))
    with pytest.raises(ValueError, match=r"in \[0, 3\).*\[0, 3\]"):
        losses.cross_entropy(logits, jnp.array([0, 1, 2, 3]))


def test_weights_and_mask():
    pred, target = jnp.array([[1.0], [3.0], [5.0]]), jnp.zeros((3, 1))
    # weighted mean: sum(w l) / sum(w)
    w = jnp.array([1.0, 0.0, 3.0])
    assert float(losses.mse(pred, target, weights=w)) == pytest.approx((1 + 75) / 4)
    mask = jnp.array([True, True, False])
    assert float(losses.mse(pred, target, mask=mask)) == pytest.approx(5.0)
    assert float(losses.mse(pred, target, mask=jnp.zeros(3, bool))) == 0.0  # not NaN
    assert float(losses.mse(pred, target, weights=w, reduction="sum")) == pytest.approx(76.0)
    assert losses.mse(pred, target, reduction="none").shape == (3, 1)
    with pytest.raises(ValueError, match=r"weights of shape \(2,\).*leading"):
        losses.mse(pred, target, weights=jnp.ones(2))


def test_cross_entropy_mask_drops_padding():
    logits = jnp.array([[5.0, 0.0], [0.0, 5.0], [9.0, -9.0]])
    labels = jnp.array([0, 1, 1])
    masked = losses.cross_entropy(logits, labels, mask=jnp.array([1.0, 1.0, 0.0]))
    np.testing.assert_allclose(masked, losses.cross_entropy(logits[:2], labels[:2]), rtol=1e-6)


@pytest.mark.parametrize("name", ["mse", "bce", "bce_with_logits", "mae"])
def test_loss_gradients_against_finite_differences(name):
    fn = losses.get(name)
    k1, k2 = jax.random.split(jax.random.key(0))
    pred = jax.random.uniform(k1, (5, 2), minval=0.1, maxval=0.9)
    target = (jax.random.uniform(k2, (5, 2)) > 0.5).astype(jnp.float32)
    check_grads(
        lambda p: fn(p, target), (pred,), order=2, modes=["rev"], eps=1e-3, atol=1e-2, rtol=1e-2
    )


def test_cross_entropy_gradient_against_finite_differences():
    logits = jax.random.normal(jax.random.key(1), (4, 3))
    labels = jnp.array([0, 2, 1, 1])
    check_grads(
        lambda z: losses.cross_entropy(z, labels),
        (logits,),
        order=2,
        modes=["rev"],
        eps=1e-3,
        atol=1e-2,
        rtol=1e-2,
    )


def test_losses_compose_with_jit_and_vmap():
    pred = jax.random.uniform(jax.random.key(0), (6, 4, 1))
    target = jnp.ones((6, 4, 1))
    per_run = jax.vmap(jax.jit(losses.bce))(pred, target)
    assert per_run.shape == (6,)
    np.testing.assert_allclose(per_run[2], losses.bce(pred[2], target[2]), rtol=1e-6)


def test_get_resolves_names_and_suggests():
    assert losses.get("binary_crossentropy") is losses.bce
    assert losses.get("mean_squared_error") is losses.mse
    with pytest.raises(ValueError, match="Did you mean 'bce'"):
        losses.get("bcee")
    with pytest.raises(TypeError):
        losses.get(3)


def test_non_numeric_inputs_rejected():
    with pytest.raises(TypeError, match="numeric"):
        losses.mse(np.array(["a", "b"]), np.array([1.0, 2.0]))
