"""Metrics: binary and categorical accuracy by hand, masks, logits thresholds."""

import jax
import jax.numpy as jnp
import pytest

from jnn import metrics


def test_binary_accuracy_threshold():
    probs, labels = jnp.array([[0.9], [0.4], [0.6], [0.1]]), jnp.array([[1.0], [1.0], [0.0], [0.0]])
    assert float(metrics.accuracy(probs, labels)) == 0.5
    assert float(metrics.binary_accuracy(probs, labels, threshold=0.3)) == 0.75


def test_categorical_accuracy_integer_and_one_hot():
    scores = jnp.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.0, 0.1, 0.9]])
    labels = jnp.array([1, 2, 2])
    assert float(metrics.accuracy(scores, labels)) == pytest.approx(2 / 3)
    assert float(metrics.accuracy(scores, jax.nn.one_hot(labels, 3))) == pytest.approx(2 / 3)


def test_accuracy_with_mask():
    probs, labels = jnp.array([[0.9], [0.9], [0.9]]), jnp.array([[1.0], [0.0], [0.0]])
    assert float(metrics.accuracy(probs, labels, mask=jnp.array([1.0, 0.0, 0.0]))) == 1.0


def test_get_from_logits_thresholds_at_zero():
    acc = metrics.get("accuracy", from_logits=True)
    assert float(acc(jnp.array([[0.2], [-0.2]]), jnp.array([[1.0], [0.0]]))) == 1.0
    assert float(metrics.get("accuracy")(jnp.array([[0.2]]), jnp.array([[1.0]]))) == 0.0


def test_losses_are_metrics_and_unknown_names_suggest():
    assert metrics.get("mse")(jnp.ones(2), jnp.zeros(2)) == 1.0
    with pytest.raises(ValueError, match="Did you mean 'accuracy'"):
        metrics.get("acuracy")


def test_accuracy_refuses_broadcasting():
    with pytest.raises(ValueError, match="shape mismatch"):
        metrics.accuracy(jnp.ones((4, 1)), jnp.ones((4,)))
