"""Every loss on random, non-trivial inputs against a handwritten NumPy reference, with
every reduction, weights and mask; and every loss's bad-input errors naming the loss and
the argument (mutation testing found targets of zero and messages nobody read)."""

import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import log_loss, mean_absolute_error, mean_squared_error

from jnn import losses

EPS = 1e-7
RNG = np.random.default_rng(0)
N, C = 6, 4
PRED = RNG.normal(size=(N, C)).astype(np.float32)
TARGET = RNG.normal(size=(N, C)).astype(np.float32)
PROBS = RNG.uniform(0.05, 0.95, size=(N, C)).astype(np.float32)
BITS = (RNG.uniform(size=(N, C)) > 0.5).astype(np.float32)
SOFT = (np.exp(PRED) / np.exp(PRED).sum(1, keepdims=True)).astype(np.float32)
IDS = RNG.integers(0, C, size=N).astype(np.int32)
WEIGHTS = RNG.uniform(0.1, 2.0, size=N).astype(np.float32)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z.astype(np.float64)))


# name -> (pred, target, per-element values by hand)
CASES = {
    "mse": (PRED, TARGET, (PRED.astype(np.float64) - TARGET) ** 2),
    "mae": (PRED, TARGET, np.abs(PRED.astype(np.float64) - TARGET)),
    "bce": (PROBS, BITS, -(BITS * np.log(PROBS) + (1 - BITS) * np.log(1 - PROBS))),
    "bce_with_logits": (
        PRED,
        BITS,
        -(BITS * np.log(_sigmoid(PRED)) + (1 - BITS) * np.log(1 - _sigmoid(PRED))),
    ),
    "cross_entropy": (
        PRED,
        IDS,
        -np.log(SOFT.astype(np.float64)[np.arange(N), IDS]),
    ),
    "categorical_crossentropy": (SOFT, IDS, -np.log(SOFT.astype(np.float64)[np.arange(N), IDS])),
}


def _per_example(values):
    return values if values.ndim == 1 else values.mean(axis=1)


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_reduction_weights_and_mask_match_a_handwritten_loss(name):
    fn = getattr(losses, name)
    pred, target, values = CASES[name]
    np.testing.assert_allclose(fn(pred, target, reduction="none"), values, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fn(pred, target), values.mean(), rtol=1e-5)
    np.testing.assert_allclose(fn(pred, target, reduction="sum"), values.sum(), rtol=1e-5)
    ex = _per_example(values)
    np.testing.assert_allclose(
        fn(pred, target, weights=WEIGHTS), np.sum(WEIGHTS * ex) / WEIGHTS.sum(), rtol=1e-5
    )
    mask = np.arange(N) % 3 != 0
    np.testing.assert_allclose(fn(pred, target, mask=mask), ex[mask].mean(), rtol=1e-5)
    both = np.sum((WEIGHTS * mask) * ex) / np.sum(WEIGHTS * mask)
    np.testing.assert_allclose(fn(pred, target, weights=WEIGHTS, mask=mask), both, rtol=1e-5)


def test_losses_agree_with_scikit_learn():
    np.testing.assert_allclose(losses.mse(PRED, TARGET), mean_squared_error(TARGET, PRED), 1e-5)
    np.testing.assert_allclose(losses.mae(PRED, TARGET), mean_absolute_error(TARGET, PRED), 1e-5)
    p, y = PROBS[:, 0], BITS[:, 0]
    np.testing.assert_allclose(losses.bce(p, y), log_loss(y, p), rtol=1e-5)
    got = losses.categorical_crossentropy(SOFT, IDS)
    np.testing.assert_allclose(got, log_loss(IDS, SOFT, labels=range(C)), rtol=1e-5)
    one_hot = np.eye(C, dtype=np.float32)[IDS]
    np.testing.assert_allclose(losses.categorical_crossentropy(SOFT, one_hot), got, rtol=1e-6)
    np.testing.assert_allclose(losses.cross_entropy(PRED, one_hot), losses.cross_entropy(PRED, IDS),
                               rtol=1e-6)  # fmt: skip


def test_probabilities_are_clipped_to_eps():
    """0 and 1 probabilities give the finite loss of EPS and 1 - EPS, not inf
    (-log(1e-7) = 16.1; float32's 1 - 1e-7 is a little further from 1)."""
    p, y = np.array([0.0, 1.0], np.float32), np.array([1.0, 0.0], np.float32)
    assert float(losses.bce(p, y)) == pytest.approx(-np.log(EPS), rel=1e-2)
    probs = np.array([[0.0, 1.0]], np.float32)
    got = float(losses.categorical_crossentropy(probs, np.array([0], np.int32)))
    assert got == pytest.approx(-np.log(EPS), rel=1e-2)


# name -> what it calls its predictions in errors
WHAT = {
    "mse": "predictions",
    "mae": "predictions",
    "bce": "predictions",
    "bce_with_logits": "predictions",
    "cross_entropy": "logits",
    "categorical_crossentropy": "probs",
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_inputs_name_the_loss_and_the_argument(name):
    fn, what = getattr(losses, name), WHAT[name]
    pred, target, _ = CASES[name]
    with pytest.raises(TypeError, match=f"^{name}: {what} must be numeric"):
        fn(np.full(pred.shape, "a"), target)
    with pytest.raises(TypeError, match=f"^{name}: labels must be numeric"):
        fn(pred, np.full(target.shape, "a"))
    bad = pred.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=f"^{name}: {what} holds 1 NaN"):
        fn(bad, target)
    if target.ndim == 1:  # class ids: out of range, and the wrong shape
        with pytest.raises(ValueError, match=rf"^{name}: integer labels must be in \[0, {C}\)"):
            fn(pred, np.full(N, C, np.int32))
        with pytest.raises(ValueError, match=rf"^{name}: labels of shape \(3,\) do not fit {what}"):
            fn(pred, target[:3])
    else:
        with pytest.raises(ValueError, match=rf"^{name}: shape mismatch: predictions \({N}, {C}\)"):
            fn(pred, target[:, :1])


def test_survivors_of_a_mutation_run_are_pinned():
    """Bad weights name the loss; class ids index the last axis of (batch, T, C) scores;
    get() names what it was given."""
    for name, (pred, target, _) in CASES.items():
        with pytest.raises(ValueError, match=f"^{name}: weights of shape"):
            getattr(losses, name)(pred, target, weights=np.ones(3, np.float32))
    probs = SOFT[:, :3] / SOFT[:, :3].sum(1, keepdims=True)
    seq, ids = probs.reshape(2, 3, 3), (IDS % 3).reshape(2, 3)
    want = -np.log(seq.reshape(6, 3)[np.arange(6), ids.ravel()]).mean()
    assert float(losses.categorical_crossentropy(seq, ids)) == pytest.approx(want, rel=1e-5)
    assert float(losses.cross_entropy(np.log(seq), ids)) == pytest.approx(want, rel=1e-5)
    with pytest.raises(TypeError, match="loss must be a name or a callable, got int"):
        losses.get(3)


def test_more_survivors_of_a_mutation_run_are_pinned():
    """(N, 1) class ids get the squeeze hint with both expected shapes; NaN labels are
    named as labels; elementwise losses compute in the predictions' dtype."""
    for name in ("cross_entropy", "categorical_crossentropy"):
        pred = CASES[name][0]
        with pytest.raises(
            ValueError,
            match=rf"^{name}: labels of shape \({N}, 1\) do not fit {WHAT[name]} of shape "
            rf"\({N}, {C}\): expected integer class ids of shape \({N},\) or one-hot labels of "
            rf"shape \({N}, {C}\)\. Squeeze the trailing axis with labels\.reshape\(-1\)\.$",
        ):
            getattr(losses, name)(pred, IDS[:, None])
        with pytest.raises(ValueError, match=rf"one-hot labels of shape \({N}, {C}\)\.$"):
            getattr(losses, name)(pred, IDS[:3])  # no squeeze hint for another shape
    for name in ("mse", "mae", "bce", "bce_with_logits"):
        pred, target, _ = CASES[name]
        bad = target.copy()
        bad[0, 1] = np.nan
        with pytest.raises(ValueError, match=f"^{name}: labels holds 1 NaN"):
            getattr(losses, name)(pred, bad)
        half = getattr(losses, name)(jnp.asarray(pred, jnp.bfloat16), target)
        assert half.dtype == jnp.bfloat16, name


def test_scalar_class_scores_are_refused_with_their_shape():
    with pytest.raises(ValueError, match=r"^categorical_crossentropy: expected non-empty probs of "
                       r"shape \(\.\.\., num_classes\), got \(\)\.$"):  # fmt: skip
        losses.categorical_crossentropy(np.float32(0.5), np.int32(0))


def test_sequence_scores_get_the_squeeze_hint_with_their_shapes():
    """(batch, T, C) scores: class ids are (batch, T), and (batch, T, 1) gets the hint."""
    scores = np.zeros((2, 3, C), np.float32)
    want = rf"class ids of shape \(2, 3\) or one-hot labels of shape \(2, 3, {C}\)\. Squeeze"
    with pytest.raises(ValueError, match=want):
        losses.cross_entropy(scores, np.zeros((2, 3, 1), np.int32))
