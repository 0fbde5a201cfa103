"""Bad input, tried systematically on every public entry point.

One table row per (entry point, kind of bad input): the call, the exception
type and a regex the message must match. Every error must be a specific
ValueError/TypeError raised by jnn itself (the last traceback frame is in jnn/),
never an error from deep inside JAX/XLA.
"""

import functools
import traceback

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jnn
import jnn.export
from jnn import checkpoint as ckpt
from jnn import losses

K = jax.random.key(0)
RAW = jax.random.PRNGKey(0)
X = np.ones((8, 5), np.float32)
Y = np.zeros((8,), np.int32)  # class ids for a 3-class model
STRINGS = np.array([["a"] * 5] * 8)
OBJECTS = np.array([[object()] * 5] * 8)


@functools.cache
def _model():
    model = jnn.serial(jnn.Dense(4, activation="relu"), jnn.Dropout(0.1), jnn.Dense(3))
    return model, model.init(K, (-1, 5))[1]


def _other_params():
    return jnn.serial(jnn.Dense(4), jnn.Dropout(0.1), jnn.Dense(2)).init(K, (-1, 5))[1]


def fit(data=None, params=None, **kw):
    model, p = _model()
    kw = {"loss": "cross_entropy", "epochs": 1, "batch_size": 4, "key": K, "verbose": 0, **kw}
    return jnn.fit(model, p if params is None else params, (X, Y) if data is None else data, **kw)


def evaluate(data=None, params=None, **kw):
    model, p = _model()
    kw = {"loss": "cross_entropy", **kw}
    return jnn.evaluate(
        model, p if params is None else params, (X, Y) if data is None else data, **kw
    )


def predict(x=X, params=None, **kw):
    model, p = _model()
    return jnn.predict(model, p if params is None else params, x, **kw)


def apply(x, params=None, **kw):
    model, p = _model()
    return model.apply(p if params is None else params, x, **kw)


def init(key=K, shape=(-1, 5)):
    return jnn.Dense(3).init(key, shape)


def restore(tmp, make_file, template=None):
    path = make_file(tmp)
    template = {"w": jnp.zeros((10, 10))} if template is None else template
    return ckpt.restore(path, template)


def _good_file(tmp):
    return ckpt.save(tmp, {"w": jnp.zeros((10, 5))}, epoch=1)


def _damaged(cut):
    def make(tmp):
        path = ckpt.save(tmp, {"w": jnp.zeros((10, 10))}, epoch=1)
        path.write_bytes(cut(path.read_bytes()))
        return path

    return make


NAN_X = np.where(np.arange(40).reshape(8, 5) == 7, np.nan, X).astype(np.float32)
KEY_NEEDED = "key must be a PRNG key such as jax.random.key"

CASES = {
    # ------------------------------------------------------------- layer constructors
    "Dense zero units": (lambda t: jnn.Dense(0), ValueError, "features must be a positive int"),
    "Dense negative units": (lambda t: jnn.Dense(-2), ValueError, "positive int, got -2"),
    "Dense float units": (lambda t: jnn.Dense(2.5), ValueError, "positive int, got 2.5"),
    "Dense str units": (lambda t: jnn.Dense("3"), ValueError, "positive int, got '3'"),
    "activation typo": (
        lambda t: jnn.Dense(3, activation="rleu"),
        ValueError,
        "Unknown activation 'rleu'. Did you mean 'relu'",
    ),
    "activation int": (lambda t: jnn.Dense(3, activation=3), TypeError, "activation must be"),
    "Dropout rate 1": (
        lambda t: jnn.Dropout(1.0),
        ValueError,
        r"unit\) must be a number in \[0, 1\), got 1.0",
    ),
    "Dropout rate <0": (lambda t: jnn.Dropout(-0.1), ValueError, r"in \[0, 1\), got -0.1"),
    "serial non-layer": (lambda t: jnn.serial(jnn.Dense(2), 3), TypeError, "argument 1"),
    "serial uncalled": (lambda t: jnn.serial(jnn.Relu), TypeError, r"forget to call it"),
    "serial empty": (lambda t: jnn.serial(), ValueError, "at least one layer"),
    # ------------------------------------------------------------- init
    "init int key": (lambda t: init(key=0), TypeError, KEY_NEEDED + r".*got int"),
    "init float key": (lambda t: init(key=1.5), TypeError, KEY_NEEDED + r".*got float"),
    "init float-array key": (lambda t: init(key=jnp.zeros(2)), TypeError, "dtype float32"),
    "init batched typed key": (
        lambda t: init(key=jax.random.split(K, 2)),
        ValueError,
        r"single PRNG key, got a batch of shape \(2,\)",
    ),
    "init batched raw key": (
        lambda t: init(key=jax.random.split(RAW, 2)),
        ValueError,
        r"batch of raw keys of shape \(2, 2\)",
    ),
    "init batched key in serial": (
        lambda t: _model()[0].init(jax.random.split(K, 2), (-1, 5)),
        ValueError,
        "serial.init: expected a single PRNG key",
    ),
    "init rank-0 shape": (lambda t: init(shape=()), ValueError, "rank >= 1"),
    "init zero features": (lambda t: init(shape=(-1, 0)), ValueError, "positive int"),
    "init negative features": (lambda t: init(shape=(-1, -4)), ValueError, "positive int"),
    "init float dim": (lambda t: init(shape=(-1, 5.0)), ValueError, "positive int"),
    "init int shape": (lambda t: init(shape=5), TypeError, "input_shape must be a tuple"),
    "init unknown features": (lambda t: init(shape=(-1, None)), ValueError, "must be known"),
    # ------------------------------------------------------------- apply
    "apply wrong features": (lambda t: apply(X[:, :4]), ValueError, r"shape \(\.\.\., 5\)"),
    "apply scalar": (lambda t: apply(np.float32(1)), ValueError, r"got \(\)"),
    "apply strings": (lambda t: apply(STRINGS), TypeError, "dtype <U1 .strings"),
    "apply objects": (lambda t: apply(OBJECTS), TypeError, "dtype object"),
    "apply ints": (lambda t: apply(X.astype(np.int32)), TypeError, "floating-point input"),
    "apply other params": (
        lambda t: apply(X, params={"dense_0": _model()[1]["dense_0"]}),
        ValueError,
        "params has no entry 'dropout_0'",
    ),
    "apply dropout without key": (lambda t: apply(X, train=True), ValueError, "needs a PRNG key"),
    "apply int key": (lambda t: apply(X, key=3, train=True), TypeError, KEY_NEEDED),
    "apply batched key": (
        lambda t: apply(X, key=jax.random.split(K, 2), train=True),
        ValueError,
        "single PRNG key",
    ),
    # ------------------------------------------------------------- losses
    "loss (N,1) vs (N,)": (
        lambda t: losses.mse(jnp.ones((4, 1)), jnp.ones(4)),
        ValueError,
        r"shape mismatch: predictions \(4, 1\) vs labels \(4,\)",
    ),
    "loss strings": (lambda t: losses.mse(["a"], ["b"]), TypeError, "must be numeric"),
    "loss objects": (lambda t: losses.mae(OBJECTS, OBJECTS), TypeError, "must be numeric"),
    "loss int predictions": (
        lambda t: losses.mse(jnp.ones(3, jnp.int32), jnp.ones(3)),
        TypeError,
        "predictions must be floating point",
    ),
    "loss int probabilities": (
        lambda t: losses.bce(jnp.ones(3, jnp.int32), jnp.ones(3)),
        TypeError,
        "floating point",
    ),
    "loss empty": (lambda t: losses.mse(jnp.ones(0), jnp.ones(0)), ValueError, "is empty"),
    "loss empty logits": (
        lambda t: losses.cross_entropy(jnp.ones((0, 3)), jnp.ones(0, jnp.int32)),
        ValueError,
        "is empty",
    ),
    "loss NaN predictions": (
        lambda t: losses.bce(jnp.array([jnp.nan, 0.5]), jnp.ones(2)),
        ValueError,
        "1 NaN value",
    ),
    "loss NaN labels": (
        lambda t: losses.mse(jnp.ones(2), jnp.array([jnp.nan, 0.5])),
        ValueError,
        "labels holds 1 NaN",
    ),
    "loss weights shape": (
        lambda t: losses.mse(jnp.ones((4, 1)), jnp.ones((4, 1)), weights=jnp.ones(3)),
        ValueError,
        r"weights of shape \(3,\)",
    ),
    "cross_entropy label too big": (
        lambda t: losses.cross_entropy(jnp.zeros((4, 3)), jnp.array([0, 1, 2, 3])),
        ValueError,
        r"must be in \[0, 3\)",
    ),
    "cross_entropy negative label": (
        lambda t: losses.cross_entropy(jnp.zeros((4, 3)), jnp.array([0, 1, 2, -1])),
        ValueError,
        r"got values in \[-1, 2\]",
    ),
    "cross_entropy float ids": (
        lambda t: losses.cross_entropy(jnp.zeros((4, 3)), jnp.zeros(4)),
        TypeError,
        "must be integers",
    ),
    "cross_entropy label rank": (
        lambda t: losses.cross_entropy(jnp.zeros((4, 3)), jnp.zeros((4, 2), jnp.int32)),
        ValueError,
        r"do not fit logits of shape \(4, 3\)",
    ),
    "loss name typo": (lambda t: losses.get("mes"), ValueError, "Did you mean 'mse'"),
    "loss name int": (lambda t: losses.get(3), TypeError, "loss must be a name"),
    "optimizer typo": (lambda t: jnn.get_optimizer("sdg"), ValueError, "Did you mean 'sgd'"),
    "optimizer type": (lambda t: jnn.get_optimizer(3), TypeError, "optimizer must be a name"),
    "learning rate negative": (
        lambda t: jnn.get_optimizer("adam", -1.0),
        ValueError,
        r"learning_rate must be a number > 0, got -1.0",
    ),
    "metric typo": (lambda t: jnn.metrics.get("acuracy"), ValueError, "Did you mean 'accuracy'"),
    # ------------------------------------------------------------- fit
    "fit x strings": (lambda t: fit((STRINGS, Y)), TypeError, "x must be numeric.*strings"),
    "fit x objects": (lambda t: fit((OBJECTS, Y)), TypeError, "dtype object"),
    "fit x ragged": (lambda t: fit(([[1, 2], [1]], Y[:2])), TypeError, "could not be converted"),
    "fit x ints": (lambda t: fit((X.astype(np.int32), Y)), TypeError, "floating-point input"),
    "fit lengths differ": (lambda t: fit((X, Y[:5])), ValueError, "x with 8 .* y with 5"),
    "fit empty": (lambda t: fit((X[:0], Y[:0])), ValueError, r"x is empty \(shape \(0, 5\)\)"),
    "fit NaN x": (lambda t: fit((NAN_X, Y)), ValueError, "1 NaN/Inf.*at example 1, column 2"),
    "fit Inf y": (
        lambda t: fit((X, np.full((8, 3), np.inf, np.float32))),
        ValueError,
        "y holds 24 NaN/Inf",
    ),
    "fit x rank 1": (lambda t: fit((X[:, 0], Y)), ValueError, r"Dense\(4\): .* got \(1,\)"),
    "fit wrong features": (
        lambda t: fit((X[:, :4], Y)),
        ValueError,
        r"expected input of shape \(\.\.\., 5\), got \(\d+, 4\)",
    ),
    "fit label too big": (lambda t: fit((X, Y + 3)), ValueError, r"must be in \[0, 3\)"),
    "fit negative label": (lambda t: fit((X, Y - 1)), ValueError, r"values in \[-1, -1\]"),
    "fit steps_per_epoch 0": (
        lambda t: fit(data=[(X, Y)], steps_per_epoch=0),
        ValueError,
        "fit: steps_per_epoch must be a positive int, got 0",
    ),
    "fit steps_per_epoch for arrays": (
        lambda t: fit(steps_per_epoch=2),
        ValueError,
        "steps_per_epoch is only for a stream",
    ),
    "fit (N,1) vs (N,)": (
        lambda t: jnn.fit(
            jnn.Dense(1),
            jnn.Dense(1).init(K, (-1, 5))[1],
            (X, Y.astype("f4")),
            loss="mse",
            key=K,
            verbose=0,
        ),
        ValueError,  # the real shapes and fix, not the one-row probe's (1, 1) vs (1,)
        r"fit: mse: the model's predictions have shape \(8, 1\) but the labels y have shape "
        r"\(8,\).*y.reshape\(8, 1\)",
    ),
    "fit bce label 2": (
        lambda t: jnn.fit(
            jnn.Dense(1),
            jnn.Dense(1).init(K, (-1, 5))[1],
            (X, np.full((8, 1), 2.0, "f4")),
            loss="bce",
            key=K,
            verbose=0,
        ),
        ValueError,
        r"labels in \[0, 1\]",
    ),
    "fit batch_size 0": (lambda t: fit(batch_size=0), ValueError, "batch_size must be a positive"),
    "fit batch_size -1": (lambda t: fit(batch_size=-1), ValueError, "got -1"),
    "fit batch_size float": (lambda t: fit(batch_size=2.5), ValueError, "got 2.5"),
    "fit epochs 0": (lambda t: fit(epochs=0), ValueError, "epochs must be a positive int"),
    "fit int key": (lambda t: fit(key=0), TypeError, KEY_NEEDED + ".*got int"),
    "fit float key": (lambda t: fit(key=0.5), TypeError, "got float"),
    "fit batched key": (lambda t: fit(key=jax.random.split(K, 3)), ValueError, "batch of shape"),
    "fit batched raw key": (lambda t: fit(key=jax.random.split(RAW, 3)), ValueError, "raw keys"),
    "fit loss typo": (lambda t: fit(loss="crossentropy"), ValueError, "Did you mean"),
    "fit optimizer typo": (lambda t: fit(optimizer="adma"), ValueError, "Did you mean 'adam"),
    "fit metric typo": (lambda t: fit(metrics=["acuracy"]), ValueError, "Did you mean 'accuracy'"),
    "fit on_nan typo": (lambda t: fit(on_nan="rise"), ValueError, "Did you mean 'raise'"),
    "fit other params": (
        lambda t: fit(params=_other_params()),
        ValueError,
        r"params\['dense_1'\]\['b'\]: expected shape \(3,\), got \(2,\)",
    ),
    "fit params None": (
        lambda t: jnn.fit(_model()[0], None, (X, Y), loss="cross_entropy", key=K, verbose=0),
        TypeError,
        "params is None",
    ),
    "fit empty params": (
        lambda t: fit(params={}),
        ValueError,
        "params has no entry 'dense_0'",
    ),
    "fit data not a pair": (lambda t: fit(data=X), TypeError, "data must be a pair"),
    "fit validation features": (
        lambda t: fit(validation_data=(X[:, :4], Y)),
        ValueError,
        r"expected input of shape \(\.\.\., 5\), got \(\d+, 4\)",
    ),
    "fit validation labels": (
        lambda t: fit(validation_data=(X, Y + 5)),
        ValueError,
        r"validation_data: integer labels must be in \[0, 3\)",
    ),
    "fit sample_weight shape": (
        lambda t: fit(sample_weight=np.ones(3)),
        ValueError,
        r"sample_weight must have shape \(8,\)",
    ),
    "fit sample_weight NaN": (
        lambda t: fit(sample_weight=np.full(8, np.nan)),
        ValueError,
        "sample_weight holds 8 NaN",
    ),
    "fit sample_weight negative": (
        lambda t: fit(sample_weight=-np.ones(8)),
        ValueError,
        "non-negative",
    ),
    "fit loss without weights": (
        lambda t: fit(loss=lambda pred, target: jnp.mean(pred)),
        TypeError,
        "the loss and metric functions must accept a keyword argument `weights`",
    ),
    "fit early_stopping unknown": (
        lambda t: fit(early_stopping=jnn.EarlyStopping(monitor="val_los")),
        ValueError,
        "not recorded",
    ),
    # ------------------------------------------------------------- evaluate / predict
    "evaluate wrong features": (
        lambda t: evaluate((X[:, :4], Y)),
        ValueError,
        r"expected input of shape \(\.\.\., 5\), got \(\d+, 4\)",
    ),
    "evaluate label too big": (lambda t: evaluate((X, Y + 3)), ValueError, r"in \[0, 3\)"),
    "evaluate empty": (lambda t: evaluate((X[:0], Y[:0])), ValueError, "x is empty"),
    "evaluate NaN": (lambda t: evaluate((NAN_X, Y)), ValueError, "NaN/Inf"),
    "evaluate batch_size 0": (
        lambda t: evaluate(batch_size=0),
        ValueError,
        r"^evaluate: batch_size must be a positive int, got 0",
    ),
    "evaluate loss typo": (lambda t: evaluate(loss="mse2"), ValueError, "Did you mean 'mse'"),
    "evaluate other params": (lambda t: evaluate(params=_other_params()), ValueError, "dense_1"),
    "evaluate nothing": (lambda t: evaluate(loss=None), ValueError, "give a loss and/or metrics"),
    "predict stream steps 0": (
        lambda t: predict(iter([X]), steps=0),
        ValueError,
        r"^predict: steps must be a positive int, got 0",
    ),
    "predict wrong features": (
        lambda t: predict(X[:, :4]),
        ValueError,
        r"expected input of shape \(\.\.\., 5\), got \(\d+, 4\)",
    ),
    "predict strings": (lambda t: predict(STRINGS), TypeError, "x must be numeric"),
    "predict empty": (lambda t: predict(X[:0]), ValueError, "x is empty"),
    "predict scalar": (lambda t: predict(1.0), ValueError, "leading example axis"),
    "predict NaN": (lambda t: predict(NAN_X), ValueError, "NaN/Inf"),
    "predict Inf": (lambda t: predict(X * np.inf), ValueError, "NaN/Inf"),
    "predict batch_size 0": (lambda t: predict(batch_size=0), ValueError, "batch_size"),
    "predict other params": (lambda t: predict(params=_other_params()), ValueError, "dense_1"),
    "TrainState int key": (
        lambda t: jnn.TrainState.create(_model()[1], "adam", key=7),
        TypeError,
        KEY_NEEDED,
    ),
    # ------------------------------------------------------------- checkpoint restore
    "restore shape mismatch": (
        lambda t: restore(t, _good_file),
        ckpt.CheckpointError,
        r"w: expected \(10, 10\) float32, got \(10, 5\) float32",
    ),
    "restore dtype mismatch": (
        lambda t: restore(t, _good_file, {"w": jnp.zeros((10, 5), jnp.int32)}),
        ckpt.CheckpointError,
        "expected .* int32, got .* float32",
    ),
    "restore structure mismatch": (
        lambda t: restore(t, _good_file, {"v": jnp.zeros((10, 5))}),
        ckpt.CheckpointError,
        r"missing \['v'\], unexpected \['w'\]",
    ),
    "restore truncated": (
        lambda t: restore(t, _damaged(lambda b: b[:-3])),
        ckpt.CheckpointError,
        "truncated",
    ),
    "restore corrupted": (
        lambda t: restore(t, _damaged(lambda b: b[:-3] + b"xyz")),
        ckpt.CheckpointError,
        "checksum mismatch",
    ),
    "restore empty file": (
        lambda t: restore(t, _damaged(lambda b: b"")),
        ckpt.CheckpointError,
        "not a jnn checkpoint",
    ),
    "restore pickle file": (
        lambda t: restore(t, _damaged(lambda b: b"\x80\x04\x95" + b"\x00" * 60)),
        ckpt.CheckpointError,
        "wrong magic",
    ),
    "restore a directory": (lambda t: restore(t, lambda t: t), ckpt.CheckpointError, "directory"),
    "restore int path": (lambda t: restore(t, lambda t: 3), TypeError, "path must be a path"),
    "restore missing file": (
        lambda t: restore(t, lambda t: t / "nope.ckpt"),
        FileNotFoundError,
        "no such file",
    ),
    # ------------------------------------------------------------- found by tests/test_fuzz.py
    "FanInConcat of rank-0 shapes": (
        lambda t: jnn.serial(jnn.FanOut(2), jnn.FanInConcat()).init(K, ()),
        ValueError,
        r"FanInConcat\(axis=-1\): expected branch shapes of one rank",
    ),
    "FanInSum of one array": (
        lambda t: jnn.FanInSum().apply({}, jnp.ones((3, 2))),  # summed its rows
        ValueError,
        r"FanInSum: expected a tuple of branches .* got a ArrayImpl of shape \(3, 2\)",
    ),
    "FanOut init None": (lambda t: jnn.FanOut(2).init(K, None), TypeError, "input_shape must be"),
    "Embedding init int key": (
        lambda t: jnn.Embedding(4, 2).init(0, (-1, 3)),
        TypeError,
        r"Embedding\(4, 2\).init: key must be a PRNG key",
    ),
    "MaxPool window larger than input": (  # was an empty output
        lambda t: jnn.MaxPool((2,)).apply({}, jnp.ones((3, 1, 4))),
        ValueError,
        r"MaxPool\(\(2,\)\): input of shape \(3, 1, 4\) is too small for the window",
    ),
    "Conv kernel larger than padded input": (  # was an empty output
        lambda t: (lambda c: c.apply(c.init(K, (-1, 5, 3))[1], jnp.ones((2, 1, 3))))(
            jnn.Conv(2, (3,), padding=0)
        ),
        ValueError,
        r"input of shape \(2, 1, 3\) is too small for the window \(3,\)",
    ),
    "Reshape of objects": (lambda t: jnn.Reshape((2,)).apply({}, OBJECTS), TypeError, "numeric"),
    "GlobalAvgPool 2**62 axes": (  # was a MemoryError
        lambda t: jnn.GlobalAvgPool(2**62),
        ValueError,
        "spatial_dims must be a positive int <= 32",
    ),
    "accuracy of empty arrays": (  # was NaN
        lambda t: jnn.metrics.accuracy(np.zeros((0, 1)), np.zeros((0, 1))),
        ValueError,
        "empty",
    ),
    "categorical_accuracy no classes": (  # was an error from inside jnp.argmax
        lambda t: jnn.metrics.categorical_accuracy(np.zeros(0), np.zeros(0)),
        ValueError,
        "non-empty predictions",
    ),
    "checkpoint of strings": (  # was written, then unreadable
        lambda t: ckpt.save(t, {"names": np.array(["a", "b"])}, epoch=0),
        TypeError,
        r"\['names'\] must be numeric",
    ),
    "sweep seeds 2**62": (  # was a MemoryError
        lambda t: jnn.experiments.sweep(jnn.Dense(3), (X, Y), loss="mse", seeds=2**62),
        ValueError,
        "seeds must be a positive int <= 1048576",
    ),
    "export labels True": (
        lambda t: jnn.export.save(t / "m.jnn", *_model(), (-1, 5), labels=True),
        TypeError,
        "labels must be a list of strings",
    ),
    "export platforms 3": (
        lambda t: jnn.export.save(t / "m.jnn", *_model(), (-1, 5), platforms=3),
        ValueError,
        "platforms must be among",
    ),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_input(case, tmp_path):
    call, error, pattern = CASES[case]
    with pytest.raises(error, match=pattern) as info:
        call(tmp_path)
    # The documented exception itself (or a jnn subclass of it), never a bare Exception.
    assert info.type is error or info.type.__module__.startswith("jnn"), info.type
    # Raised by jnn itself, not from deep inside JAX or XLA.
    last = traceback.extract_tb(info.tb)[-1].filename
    assert "/jnn/" in last and "/jax/" not in last, last


def _key_data(tree):
    """Leaves as arrays, typed keys as their key data (raw and typed keys compare equal)."""

    def data(a):
        typed = hasattr(a, "dtype") and jnp.issubdtype(a.dtype, jax.dtypes.prng_key)
        return np.asarray(jax.random.key_data(a) if typed else a)

    return [data(a) for a in jax.tree.leaves(tree)]


@pytest.mark.parametrize(
    "raw, typed",
    [
        (lambda: init(key=RAW), lambda: init(key=K)),
        (lambda: apply(X, key=RAW, train=True), lambda: apply(X, key=K, train=True)),
        (
            lambda: jnn.TrainState.create(_model()[1], "adam", key=RAW),
            lambda: jnn.TrainState.create(_model()[1], "adam", key=K),
        ),
    ],
    ids=["init", "apply", "TrainState"],
)
def test_raw_keys_are_accepted_and_equal_typed_keys(raw, typed):
    a, b = _key_data(raw()), _key_data(typed())
    assert len(a) == len(b) > 0
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(u, v)


def test_minus_inf_logit_is_a_masked_class():
    """A -inf logit is a class with probability 0: the loss is exactly that of the rest."""
    got = losses.cross_entropy(jnp.array([[0.0, -jnp.inf], [1.0, -jnp.inf]]), jnp.array([0, 0]))
    assert float(got) == 0.0


def test_raw_and_typed_keys_give_the_same_fit():
    a = fit(key=jax.random.PRNGKey(3))
    b = fit(key=jax.random.wrap_key_data(jax.random.PRNGKey(3)))
    jax.tree.map(np.testing.assert_array_equal, a.params, b.params)


def test_checks_work_under_jit_and_vmap():
    """Shape errors are raised while tracing, so they surface under jit/vmap too."""
    with pytest.raises(ValueError, match="shape mismatch"):
        jax.jit(losses.mse)(jnp.ones((4, 1)), jnp.ones(4))
    with pytest.raises(ValueError, match="is empty"):
        jax.jit(losses.mse)(jnp.ones(0), jnp.ones(0))
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 5\)"):
        jax.vmap(lambda x: apply(x))(jnp.ones((2, 3, 4)))
