"""Metrics on random inputs against scikit-learn, with weights and masks, and their
errors naming the metric and the argument (mutation testing found these unchecked)."""

import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import accuracy_score

from jnn import losses, metrics

RNG = np.random.default_rng(0)
N, C = 40, 5
PROBS = RNG.uniform(size=(N, 1)).astype(np.float32)
BITS = (RNG.uniform(size=(N, 1)) > 0.5).astype(np.float32)
SCORES = RNG.normal(size=(N, C)).astype(np.float32)
IDS = RNG.integers(0, C, size=N).astype(np.int32)
W = RNG.uniform(0.1, 2.0, size=N).astype(np.float32)
MASK = np.arange(N) % 4 != 0


@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.8])
def test_binary_accuracy_matches_scikit_learn(threshold):
    want = (PROBS[:, 0] > threshold).astype(int)
    for fn in (metrics.binary_accuracy, metrics.accuracy):
        got = fn(PROBS, BITS, threshold=threshold)
        assert float(got) == pytest.approx(accuracy_score(BITS[:, 0], want))
        got = fn(PROBS, BITS, threshold=threshold, weights=W)
        assert float(got) == pytest.approx(accuracy_score(BITS[:, 0], want, sample_weight=W))
        got = fn(PROBS, BITS, threshold=threshold, weights=W, mask=MASK)
        want_masked = accuracy_score(BITS[MASK, 0], want[MASK], sample_weight=W[MASK])
        assert float(got) == pytest.approx(want_masked)
    # labels are 0/1 read as > 0.5: soft labels 0.6 / 0.4 are 1 / 0
    soft = np.where(BITS > 0.5, 0.6, 0.4).astype(np.float32)
    assert float(metrics.binary_accuracy(PROBS, soft, threshold=threshold)) == pytest.approx(
        accuracy_score(BITS[:, 0], want)
    )


def test_categorical_accuracy_matches_scikit_learn():
    want = SCORES.argmax(1)
    one_hot = np.eye(C, dtype=np.float32)[IDS]
    for fn in (metrics.categorical_accuracy, metrics.accuracy):
        for labels in (IDS, one_hot):
            assert float(fn(SCORES, labels)) == pytest.approx(accuracy_score(IDS, want))
            got = fn(SCORES, labels, weights=W, mask=MASK)
            want_masked = accuracy_score(IDS[MASK], want[MASK], sample_weight=W[MASK])
            assert float(got) == pytest.approx(want_masked)


def test_from_logits_thresholds_at_zero_for_both_binary_metrics():
    logits = SCORES[:, :1]
    want = accuracy_score(BITS[:, 0], (logits[:, 0] > 0).astype(int))
    for name in ("accuracy", "acc", "binary_accuracy"):
        fn = metrics.get(name, from_logits=True)
        assert float(fn(logits, BITS)) == pytest.approx(want), name
        assert metrics.get(name, from_logits=True) is fn  # one object: fit's cache key
    assert metrics.get("categorical_accuracy", from_logits=True) is metrics.categorical_accuracy
    assert metrics.get("acc") is metrics.accuracy
    assert metrics.get("bce") is losses.bce  # any loss is a metric
    custom = lambda p, t, **kw: jnp.mean(p)  # noqa: E731
    assert metrics.get(custom) is custom
    with pytest.raises(TypeError, match="metric must be a name or a callable, got int"):
        metrics.get(3)
    with pytest.raises(ValueError, match=r"Unknown metric 'nope'.*Known: .*accuracy"):
        metrics.get("nope")


@pytest.mark.parametrize("name", ["accuracy", "binary_accuracy", "categorical_accuracy"])
def test_bad_inputs_name_the_metric_and_the_argument(name):
    fn = getattr(metrics, name)
    pred, labels = (SCORES, IDS) if name == "categorical_accuracy" else (PROBS, BITS)
    with pytest.raises(TypeError, match=f"^{name}: predictions must be numeric"):
        fn(np.full(pred.shape, "a"), labels)
    if name == "categorical_accuracy":
        with pytest.raises(ValueError, match=rf"^{name}: integer labels must be in \[0, {C}\)"):
            fn(pred, np.full(N, C, np.int32))
    else:  # accuracy hands binary outputs to binary_accuracy, which names itself
        inner = "binary_accuracy"
        with pytest.raises(ValueError, match=f"^{inner}: shape mismatch"):
            fn(pred, labels[:, 0])
        with pytest.raises(TypeError, match=f"^{inner}: labels must be numeric"):
            fn(pred, np.full(labels.shape, "a"))


def test_boundaries_defaults_and_shapes_found_by_mutation_testing():
    """Survivors of a mutation run, each now pinned: the default threshold, strict
    comparisons at the boundary, two classes and leading axes, and bad weights named."""
    np.testing.assert_array_equal(
        metrics.binary_accuracy(PROBS, BITS), metrics.binary_accuracy(PROBS, BITS, threshold=0.5)
    )
    assert float(metrics.binary_accuracy(PROBS, BITS)) == pytest.approx(
        accuracy_score(BITS[:, 0], (PROBS[:, 0] > 0.5).astype(int))
    )
    # pred > threshold and labels > 0.5, both strict: 0.5 is negative on both sides
    half = np.full((2, 1), 0.5, np.float32)
    assert float(metrics.binary_accuracy(half, np.zeros((2, 1), np.float32))) == 1.0
    assert float(metrics.binary_accuracy(np.zeros((2, 1), np.float32), half)) == 1.0
    # two classes are categorical; (batch, T, C) scores take the argmax over the last axis
    two = SCORES[:, :2]
    ids2 = IDS % 2
    assert float(metrics.accuracy(two, ids2)) == pytest.approx(accuracy_score(ids2, two.argmax(1)))
    seq = SCORES[:, :3].reshape(8, 5, 3)
    ids3 = (IDS % 3).reshape(8, 5)
    want = accuracy_score(ids3.ravel(), seq.argmax(-1).ravel())
    assert float(metrics.accuracy(seq, ids3)) == pytest.approx(want)
    # one output unit with leading axes (batch, T, 1) is binary
    probs3, bits3 = PROBS.reshape(8, 5, 1), BITS.reshape(8, 5, 1)
    want = accuracy_score(BITS[:, 0], (PROBS[:, 0] > 0.5).astype(int))
    assert float(metrics.accuracy(probs3, bits3)) == pytest.approx(want)
    for name, pred, labels in [
        ("binary_accuracy", PROBS, BITS),
        ("categorical_accuracy", SCORES, IDS),
    ]:
        with pytest.raises(ValueError, match=f"^{name}: weights of shape"):
            getattr(metrics, name)(pred, labels, weights=np.ones(3, np.float32))
