"""Property-based bad input (hypothesis) over every public entry point.

Each test throws random arguments at one entry point: random shapes and
ranks, dtypes (bool, ints, float16, bfloat16, float32/64, complex, object,
strings), NaN/Inf, empty arrays, mismatched lengths, huge sizes, junk
scalars. Every outcome must be either a correct result or a ``ValueError`` /
``TypeError`` raised by jnn itself (the last traceback frame is in ``jnn/``,
not in JAX, XLA, numpy or msgpack) whose message names the argument or the
layer. Anything else (another exception type, an error from inside a
dependency) fails the test. Sizes that could abort the interpreter are only
ever huge enough to be refused by jnn's checks; the test for them that must
survive an abort runs in a subprocess (``tests/test_layers.py``).

Examples are few per entry point and shapes tiny, so the file stays quick on
a shared 2-core CPU; hypothesis shrinks any failure to a minimal call.
"""

from __future__ import annotations

import functools
import json
import os
import struct
import traceback
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jnn
import jnn.export
from jnn import checkpoint as ckpt
from jnn import losses, metrics

# CI runs a fixed, modest set of examples (derandomized: the same every run). To hunt for new
# failures, explore at random and longer:
#   JNN_FUZZ_EXAMPLES=500 python -m pytest tests/test_fuzz.py -n 0
_LONG = int(os.environ.get("JNN_FUZZ_EXAMPLES", "0"))
SETTINGS = settings(
    max_examples=_LONG or 25,
    derandomize=not _LONG,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
FEW = settings(SETTINGS, max_examples=_LONG // 5 or 10)
HERE = jax.export.default_export_platform()
KEY = jax.random.key(0)


def outcome(call, names, check=None):
    """``call()``: a result (checked by ``check``), or a jnn error naming one of ``names``."""
    try:
        result = call()
    except (ValueError, TypeError) as err:
        frames = traceback.extract_tb(err.__traceback__)
        last = frames[-1].filename if frames else "?"
        assert "/jnn/" in last and "site-packages" not in last, (
            f"{type(err).__name__} escaped from {last}:{frames[-1].lineno}: {err}"
        )
        message = str(err)
        assert any(n in message for n in names), f"the message names none of {names}: {message}"
        return None
    if check is not None:
        check(result)
    return result


# --------------------------------------------------------------------------- strategies

DTYPES = [
    np.bool_, np.int8, np.int32, np.int64, np.uint8, np.float16, ml_dtypes.bfloat16,
    np.float32, np.float64, np.complex64, np.object_, np.str_,
]  # fmt: skip
SPECIAL = [0.0, -0.0, 1.0, -1.0, 1e-30, 1e30, 1e39, np.nan, np.inf, -np.inf]


@st.composite
def arrays(draw, shape=None, dtypes=DTYPES, max_rank=3, max_dim=4):
    """A numpy array of a random dtype and shape (empty axes too), with special values."""
    if shape is None:
        shape = tuple(draw(st.lists(st.integers(0, max_dim), max_size=max_rank)))
    dtype = draw(st.sampled_from(dtypes))
    n = int(np.prod(shape))
    values = draw(st.lists(st.sampled_from(SPECIAL) | st.floats(-3, 3), min_size=n, max_size=n))
    base = np.asarray(values, np.float64).reshape(shape)
    if dtype is np.str_:
        return base.astype(str)
    if dtype is np.object_:
        return base.astype(object)
    with np.errstate(all="ignore"):
        if np.dtype(dtype).kind in "biu":
            return np.nan_to_num(base, posinf=7, neginf=-7).astype(dtype)
        return base.astype(dtype)


JUNK = st.sampled_from(
    [None, True, False, 0, -1, 1, 3, 2**62, 1.5, -0.5, np.nan, np.inf, "3", "relu", (),
     (3,), [2, 2], {"a": 1}, np.int64(2), np.int32(-4), np.float32(0.25), np.bool_(True),
     np.float64(2.0), b"\x00", object()]
)  # fmt: skip
DIMS = st.sampled_from([-1, None, 0, 1, 2, 3, 5, -3, 2**40, 2**62, 2**63 - 1, 2.0, True,
                        "4", np.int64(3), np.int32(-1)])  # fmt: skip
SHAPES = st.lists(DIMS, max_size=5).map(tuple) | JUNK | st.tuples(st.tuples(DIMS, DIMS))


def _is_layer(result):
    assert isinstance(result, (jnn.Layer, jnn.StatefulLayer)), type(result)


# --------------------------------------------------------------------------- layers

CONSTRUCTORS = {
    "Dense": (lambda v: jnn.Dense(v), "features"),
    "Dense activation": (lambda v: jnn.Dense(2, activation=v), "activation"),
    "Conv": (lambda v: jnn.Conv(v, (3,)), "features"),
    "Conv kernel_size": (lambda v: jnn.Conv(2, v), "kernel_size"),
    "Conv strides": (lambda v: jnn.Conv(2, (3, 3), strides=v), "strides"),
    "Conv padding": (lambda v: jnn.Conv(2, (3,), padding=v), "padding"),
    "Conv groups": (lambda v: jnn.Conv(2, (3,), groups=v), "groups"),
    "ConvTranspose": (lambda v: jnn.ConvTranspose(v, (2, 2)), "features"),
    "Dropout": (lambda v: jnn.Dropout(v), "rate"),
    "Flatten": (lambda v: jnn.Flatten(v), "ndim"),
    "FanOut": (lambda v: jnn.FanOut(v), "num"),
    "Embedding": (lambda v: jnn.Embedding(v, 4), "num_embeddings"),
    "Embedding features": (lambda v: jnn.Embedding(4, v), "features"),
    "PositionalEmbedding": (lambda v: jnn.PositionalEmbedding(v), "max_length"),
    "MultiHeadAttention": (lambda v: jnn.MultiHeadAttention(v), "num_heads"),
    "MultiHeadAttention head_dim": (lambda v: jnn.MultiHeadAttention(2, head_dim=v), "head_dim"),
    "MaxPool": (lambda v: jnn.MaxPool(v), "window"),
    "AvgPool strides": (lambda v: jnn.AvgPool((2,), strides=v), "strides"),
    "GlobalAvgPool": (lambda v: jnn.GlobalAvgPool(v), "spatial_dims"),
    "Reshape": (lambda v: jnn.Reshape(v), "target_shape"),
    "Reshape ndim": (lambda v: jnn.Reshape((2, -1), ndim=v), "ndim"),
    "BatchNorm": (lambda v: jnn.BatchNorm(momentum=v), "momentum"),
    "BatchNorm epsilon": (lambda v: jnn.BatchNorm(epsilon=v), "epsilon"),
    "LayerNorm": (lambda v: jnn.LayerNorm(epsilon=v), "epsilon"),
    "RMSNorm": (lambda v: jnn.RMSNorm(epsilon=v), "epsilon"),
    "Elu": (lambda v: jnn.Elu(v), "alpha"),
    "LeakyRelu": (lambda v: jnn.LeakyRelu(v), "negative_slope"),
    "Softmax": (lambda v: jnn.Softmax(v), "axis"),
    "LogSoftmax": (lambda v: jnn.LogSoftmax(v), "axis"),
    "Activation": (lambda v: jnn.Activation(v), "activation"),
    "LSTM": (lambda v: jnn.LSTM(v), "features"),
    "GRU return_sequences": (lambda v: jnn.GRU(2, return_sequences=v), "return_sequences"),
    "SimpleRNN": (lambda v: jnn.SimpleRNN(v), "features"),
    "LSTMCell": (lambda v: jnn.LSTMCell(v), "features"),
    "Bidirectional": (lambda v: jnn.Bidirectional(v), "layer"),
    "Bidirectional merge": (lambda v: jnn.Bidirectional(jnn.GRU(2), merge=v), "merge"),
    "repeat": (lambda v: jnn.repeat(jnn.Dense(2), v), "n"),
    "remat": (lambda v: jnn.remat(jnn.Dense(2), policy=v), "policy"),
    "serial": (lambda v: jnn.serial(jnn.Dense(2), v), "argument"),
    "parallel": (lambda v: jnn.parallel(v), "argument"),
    "residual": (lambda v: jnn.residual(v), "argument"),
}


@SETTINGS
@given(which=st.sampled_from(sorted(CONSTRUCTORS)), value=JUNK)
def test_layer_constructors(which, value):
    build, name = CONSTRUCTORS[which]
    outcome(lambda: build(value), [name, which.split()[0]], _is_layer)


@functools.cache
def _layers():
    return {
        "Dense": jnn.Dense(3),
        "Conv": jnn.Conv(2, (3, 3)),
        "ConvTranspose": jnn.ConvTranspose(2, (2,), strides=2),
        "MaxPool": jnn.MaxPool((2, 2)),
        "GlobalAvgPool": jnn.GlobalAvgPool(),
        "Flatten": jnn.Flatten(),
        "Reshape": jnn.Reshape((2, -1)),
        "Embedding": jnn.Embedding(5, 3),
        "PositionalEmbedding": jnn.PositionalEmbedding(4),
        "MultiHeadAttention": jnn.MultiHeadAttention(2),
        "BatchNorm": jnn.BatchNorm(),
        "LayerNorm": jnn.LayerNorm(),
        "Dropout": jnn.Dropout(0.5),
        "Relu": jnn.Relu(),
        "serial": jnn.serial(jnn.Dense(2), jnn.Relu(), jnn.Dense(1)),
        "parallel": jnn.parallel(jnn.Dense(2), jnn.Identity()),
        "residual": jnn.residual(jnn.Dense(4)),
        "FanOut+concat": jnn.serial(jnn.FanOut(2), jnn.FanInConcat()),
        "LSTM": jnn.LSTM(3),
        "Bidirectional": jnn.Bidirectional(jnn.GRU(2, return_sequences=True)),
        "GRUCell": jnn.GRUCell(2),
        "repeat": jnn.repeat(jnn.Dense(4), 2),
    }


def _init_result(result):
    shape, params = result[0], result[1]
    assert isinstance(shape, tuple)
    for leaf in jax.tree.leaves(params):  # created, small, finite
        assert leaf.size < 10_000 and bool(jnp.all(jnp.isfinite(leaf)))


@SETTINGS
@given(which=st.sampled_from(sorted(_layers())), shape=SHAPES, key=st.sampled_from([KEY, 0]))
def test_layer_init(which, shape, key):
    layer = _layers()[which]
    names = ["input_shape", "shape", "key", which.split("+")[0].split("(")[0], "init"]
    outcome(lambda: layer.init(key, shape), names, _init_result)


@functools.cache
def _initialized():
    out = {}
    for which, (layer, shape) in {
        "Dense": (jnn.Dense(3), (-1, 4)),
        "Conv": (jnn.Conv(2, (2,)), (-1, 4, 3)),
        "MaxPool": (jnn.MaxPool((2,)), (-1, 4, 3)),
        "Embedding": (jnn.Embedding(5, 3), (-1, 4)),
        "MultiHeadAttention": (jnn.MultiHeadAttention(2), (-1, 3, 4)),
        "LayerNorm": (jnn.LayerNorm(), (-1, 4)),
        "serial": (jnn.serial(jnn.Dense(4), jnn.Relu(), jnn.Dense(1)), (-1, 4)),
        "LSTM": (jnn.LSTM(3, return_sequences=True), (-1, 3, 4)),
        "Bidirectional": (jnn.Bidirectional(jnn.SimpleRNN(2)), (-1, 3, 4)),
        "repeat": (jnn.repeat(jnn.remat(jnn.Dense(4)), 2), (-1, 4)),
    }.items():
        out[which] = (layer, layer.init(KEY, shape)[1])
    return out


@SETTINGS
@given(which=st.sampled_from(sorted(_initialized())), x=arrays(max_rank=4), jit=st.booleans())
def test_layer_apply(which, x, jit):
    layer, params = _initialized()[which]
    # (jax.jit itself refuses object and string arrays before any jnn code runs)
    apply = jax.jit(layer.apply) if jit and x.dtype.kind not in "OU" else layer.apply

    def check(y):  # one output per example (an unbatched input is one example)
        assert (y.ndim >= 1 and y.shape[:1] == x.shape[:1]) or x.ndim <= 2

    outcome(lambda: apply(params, x), ["input", "ids", which, "query"], check)


# --------------------------------------------------------------------------- losses, metrics

LOSSES = ["mse", "mae", "bce", "bce_with_logits", "cross_entropy", "categorical_crossentropy"]
LOSS_NAMES = ["predictions", "labels", "weights", "mask", "logits", "probs", "reduction"]


@SETTINGS
@given(
    name=st.sampled_from(LOSSES),
    pred=arrays(max_rank=2, max_dim=3),
    target=arrays(max_rank=2, max_dim=3),
    weights=st.none() | arrays(max_rank=1, max_dim=3),
    reduction=st.sampled_from(["mean", "sum", "none", "avg", 3]),
)
def test_losses(name, pred, target, weights, reduction):
    fn = losses.get(name)

    def check(value):
        value = np.asarray(value)
        assert jnp.issubdtype(value.dtype, jnp.inexact)
        if reduction != "none":
            assert value.shape == ()

    outcome(lambda: fn(pred, target, weights=weights, reduction=reduction), LOSS_NAMES, check)


@SETTINGS
@given(
    name=st.sampled_from(["accuracy", "binary_accuracy", "categorical_accuracy", "acc", 3, None]),
    pred=arrays(max_rank=2, max_dim=3),
    target=arrays(max_rank=2, max_dim=3),
)
def test_metrics(name, pred, target):
    def run():
        return metrics.get(name)(pred, target)

    def check(value):
        assert np.asarray(value).shape == () and 0 <= float(value) <= 1

    outcome(run, [*LOSS_NAMES, "metric", "scores"], check)


@SETTINGS
@given(name=JUNK | st.text(max_size=8), lr=JUNK)
def test_names_and_optimizers(name, lr):
    outcome(lambda: losses.get(name), ["loss"], callable)
    outcome(lambda: metrics.get(name), ["metric"], callable)
    outcome(lambda: jnn.get_optimizer(name, lr), ["optimizer", "learning_rate"])
    outcome(lambda: jnn.get_optimizer("adam", lr), ["learning_rate"])


# --------------------------------------------------------------------------- fit, predict


@functools.cache
def _model():
    model = jnn.Dense(1)
    return model, model.init(KEY, (-1, 2))[1]


DATA_NAMES = ["x", "y", "data", "labels", "sample_weight", "Dense(1)", "shape mismatch", "batch"]


@st.composite
def xy(draw):
    """``(x, y)``: half the time shaped right for Dense(1) on 2 features (dtypes, values random)."""
    if draw(st.booleans()):
        return draw(arrays(max_rank=3, max_dim=3)), draw(arrays(max_rank=2, max_dim=3))
    n = draw(st.integers(0, 4))
    return draw(arrays(shape=(n, 2))), draw(arrays(shape=(n, 1)))


@FEW
@given(data=xy(), batch_size=st.sampled_from([1, 2, 0, True, 2.0, np.int64(2)]))
def test_fit_evaluate_predict(data, batch_size):
    x, y = data
    model, params = _model()

    def fit():
        return jnn.fit(model, params, (x, y), loss="mse", epochs=1, batch_size=batch_size,
                       key=KEY, verbose=0)  # fmt: skip

    def fitted(result):
        assert np.all(np.isfinite(np.asarray(result.params["w"])))
        assert len(result.history["loss"]) == 1

    outcome(fit, [*DATA_NAMES, "batch_size"], fitted)
    outcome(lambda: jnn.evaluate(model, params, (x, y), loss="mse"), DATA_NAMES)

    def rows(pred):  # one output row per input row
        assert pred.shape[0] == x.shape[0] and pred.shape[-1] == 1

    outcome(lambda: jnn.predict(model, params, x), DATA_NAMES, rows)


FIT_OPTIONS = [
    "early_stopping", "callbacks", "verbose", "checkpoint_dir", "on_nan", "checkpoint_every",
    "checkpoint_keep", "validation_data", "metrics", "sample_weight", "shuffle", "learning_rate",
]  # fmt: skip


@FEW
@given(
    option=st.sampled_from(FIT_OPTIONS),
    value=JUNK | st.sampled_from([jnn.EarlyStopping("loss", patience=-1), [print, 3], "rise"]),
)
def test_fit_options(tmp_path_factory, option, value):
    model, params = _model()
    x = np.linspace(0, 1, 8, dtype=np.float32).reshape(4, 2)
    if option == "checkpoint_dir" and isinstance(value, str):
        value = tmp_path_factory.mktemp("ck") / value
    kw = {"loss": "mse", "epochs": 1, "key": KEY, "verbose": 0, option: value}
    names = [option, option.rstrip("s"), "Unknown", "epoch", "validation"]
    outcome(lambda: jnn.fit(model, params, (x, x[:, :1]), **kw), names)


@FEW
@given(state_key=JUNK | st.just(KEY), optimizer=JUNK | st.sampled_from(["adam", "sgd"]))
def test_train_state_and_step(state_key, optimizer):
    _, params = _model()
    outcome(
        lambda: jnn.TrainState.create(params, optimizer, key=state_key),
        ["key", "optimizer", "learning_rate"],
    )
    outcome(lambda: jnn.make_train_step(_model()[0], "mse", optimizer), ["optimizer"], callable)


HPARAMS = [
    {"learnin_rate": [0.1]}, {"learning_rate": ["x"]}, {"learning_rate": []}, [1, 2],
    {"b1": [0.9]}, {"learning_rate": [np.float32(0.1)]}, None,
]  # fmt: skip


@FEW
@given(hparams=st.sampled_from(HPARAMS), seeds=JUNK | st.lists(JUNK, min_size=1, max_size=2))
def test_sweep_arguments(hparams, seeds):
    x = np.linspace(0, 1, 8, dtype=np.float32).reshape(4, 2)
    y = x[:, :1]
    model = jnn.Dense(1)

    def run():
        return jnn.experiments.sweep(model, (x, y), loss="mse", hparams=hparams, seeds=seeds,
                                     epochs=1, batch_size=2)  # fmt: skip

    outcome(run, ["hparams", "seeds", "seed", "learning_rate", "optimizer", "learnin_rate"])


@SETTINGS
@given(shape=SHAPES)
def test_summary(shape):
    model = jnn.serial(jnn.Dense(3), jnn.Relu())
    outcome(lambda: jnn.summary(model, shape), ["input_shape", "Dense", "key", "shape"])


# --------------------------------------------------------------------------- checkpoints


@SETTINGS
@given(data=st.data(), recompute=st.booleans())
def test_checkpoint_files(tmp_path_factory, data, recompute):
    """Random damage to a checkpoint, with or without a recomputed checksum: restored or refused."""
    import hashlib

    tmp = tmp_path_factory.mktemp("ck")
    state = {"w": jnp.arange(6.0).reshape(2, 3), "key": jax.random.key(1), "n": jnp.int32(3)}
    path = ckpt.save(tmp, state, epoch=1, history={"loss": [0.5]})
    raw = bytearray(path.read_bytes())
    head = struct.calcsize("<8sIQ32s")
    edits = data.draw(st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(0, 255)),
                               max_size=6))  # fmt: skip
    for pos, byte in edits:
        raw[pos] = byte
    cut = data.draw(st.none() | st.integers(0, len(raw)))
    if cut is not None:
        raw = raw[:cut]
    if recompute and len(raw) >= head:
        payload = bytes(raw[head:])
        raw[:head] = struct.pack("<8sIQ32s", b"JNNCKPT\n", 1, len(payload),
                                 hashlib.sha256(payload).digest())  # fmt: skip
    path.write_bytes(bytes(raw))

    def restored(got):
        assert got.state["w"].shape == (2, 3) and got.epoch >= 0

    outcome(lambda: ckpt.restore(path, state), [str(path)], restored)
    template = data.draw(st.sampled_from([state, {"w": jnp.zeros(2)}, {}, None, [1]]))
    outcome(lambda: ckpt.restore(path, template), [str(path), "template"])


@SETTINGS
@given(value=JUNK | arrays(max_rank=2), epoch=JUNK, keep=JUNK)
def test_checkpoint_save_arguments(tmp_path_factory, value, epoch, keep):
    tmp = tmp_path_factory.mktemp("save")
    outcome(
        lambda: ckpt.save(tmp, {"v": value}, epoch=epoch, keep=keep),
        ["epoch", "keep", "['v']", "checkpoint"],
        lambda p: ckpt.restore(p, {"v": value}),
    )


# --------------------------------------------------------------------------- export


@functools.cache
def _exported(root: str):
    model = jnn.serial(jnn.Dense(3, activation="relu"), jnn.Dense(2))
    _, params = model.init(KEY, (-1, 4))
    path = os.path.join(root, "m.jnn")
    jnn.export.save(path, model, params, (-1, 4), labels=["a", "b"], platforms=HERE)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return _exported(str(tmp_path_factory.mktemp("export")))


def _json_values():
    leaves = st.none() | st.booleans() | st.integers(-3, 5) | st.text(max_size=4)

    def nest(inner):
        return st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)

    return st.recursive(leaves, nest, max_leaves=8)


FIELDS = ["input", "output", "labels", "summary", "platforms", "shape", "dtype", "weights",
          "exported", "drop", "raw"]  # fmt: skip


@SETTINGS
@given(data=st.data())
def test_export_files(exported, tmp_path_factory, data):
    """Forged bodies behind a valid checksum (metadata, weights, structure), and raw damage.

    The program bytes are kept or emptied, never scrambled: MLIR's deserializer can
    abort the interpreter on a crafted program, which is why a model file must be
    trusted input (see the README) and why load(expected_sha256=) exists.
    """
    import hashlib

    from flax import serialization

    head = struct.calcsize("<8sIQ32s")
    raw = Path(exported).read_bytes()
    body = serialization.msgpack_restore(raw[head:])
    meta = json.loads(body["metadata"])
    field = data.draw(st.sampled_from(FIELDS))
    value = data.draw(_json_values())
    if field in ("input", "output", "labels", "summary", "platforms"):
        meta[field] = value
    elif field in ("shape", "dtype"):
        meta["input"][field] = value
    elif field == "weights":
        body["weights"] = data.draw(st.lists(arrays(dtypes=[np.float32, np.int32, np.float64]),
                                             max_size=5))  # fmt: skip
    elif field == "exported":
        body["exported"] = data.draw(st.sampled_from([b"", 3, "x", [b"a"], None]))
    elif field == "drop":
        del body[data.draw(st.sampled_from(sorted(body)))]
    body_bytes = serialization.msgpack_serialize({**body, "metadata": json.dumps(meta)})
    if field == "drop":
        body_bytes = serialization.msgpack_serialize({k: v for k, v in body.items()})
    if field == "raw":  # damage without a recomputed checksum: always refused
        damaged = bytearray(raw)
        for pos in data.draw(st.lists(st.integers(0, len(raw) - 1), min_size=1, max_size=4)):
            damaged[pos] ^= 0xFF
        file_bytes = bytes(damaged[: data.draw(st.integers(0, len(raw)))])
    else:
        digest = hashlib.sha256(body_bytes).digest()
        file_bytes = struct.pack("<8sIQ32s", b"JNNMODEL", 2, len(body_bytes), digest) + body_bytes
    path = tmp_path_factory.mktemp("forged") / "m.jnn"
    path.write_bytes(file_bytes)

    def usable(predictor):
        y = predictor(np.ones((2, *predictor.input_shape[1:]), predictor.input_dtype))
        assert y.shape[0] == 2

    outcome(lambda: jnn.export.load(path), [str(path), "Predictor", "input"], usable)


@SETTINGS
@given(x=arrays(max_rank=3) | JUNK, batch_size=st.sampled_from([1, 4, 0, True, np.int64(2)]))
def test_predictor_inputs(exported, x, batch_size):
    predictor = jnn.export.load(exported)

    def rows(y):
        assert y.shape == (np.shape(x)[0], 2)

    outcome(lambda: predictor(x, batch_size=batch_size), ["input", "batch_size"], rows)


@FEW
@given(spec=SHAPES, labels=JUNK | st.lists(st.text(max_size=3), max_size=3),
       platforms=st.sampled_from([HERE, "gpu", (), [HERE, 3], 3]))  # fmt: skip
def test_export_save_arguments(tmp_path_factory, spec, labels, platforms):
    model = jnn.Dense(2)
    _, params = model.init(KEY, (-1, 3))
    path = tmp_path_factory.mktemp("save") / "m.jnn"
    outcome(
        lambda: jnn.export.save(path, model, params, spec, labels=labels, platforms=platforms),
        ["input_spec", "labels", "platforms", "Dense(2)", "input_shape"],
        lambda meta: jnn.export.load(path),
    )


@FEW
@given(batches=st.lists(xy(), min_size=1, max_size=3) | JUNK, steps=st.sampled_from([None, 1, 0]))
def test_fit_on_a_stream(batches, steps):
    """Streams of batches (a list: re-iterated each epoch) with random shapes and dtypes."""
    model, params = _model()

    def fit():
        return jnn.fit(model, params, batches, loss="mse", epochs=1, steps_per_epoch=steps,
                       key=KEY, verbose=0)  # fmt: skip

    outcome(fit, [*DATA_NAMES, "batch", "stream", "steps_per_epoch"])


@SETTINGS
@given(
    data=st.data(),
    ext=st.sampled_from([".npy", ".csv", ".json", ".txt"]),
    batch_size=st.sampled_from(["4", "0", "-1"]),
)
def test_cli_predict_inputs(exported, tmp_path_factory, capsys, data, ext, batch_size):
    """`jnn predict` on random input files: predictions (status 0) or one error line (status 1)."""
    from jnn.cli import main

    path = tmp_path_factory.mktemp("cli") / f"x{ext}"
    x = data.draw(arrays(max_rank=3) | st.just(np.ones((3, 4), np.float32)))
    if ext == ".npy":
        if x.dtype == object:
            path.write_bytes(data.draw(st.binary(max_size=64)))
        else:
            np.save(path, x)
    elif ext == ".json":
        payload = data.draw(st.sampled_from([x.tolist(), {"inputs": x.tolist()}, {"x": 1}, "a"]))
        path.write_text(json.dumps(payload, default=str))
    else:
        table = np.atleast_2d(x)
        table = table.reshape(table.shape[0], -1) if table.size else table.reshape(0, 0)
        path.write_text("\n".join(",".join(map(str, row)) for row in table))
    try:
        status = main(["predict", exported, "--input", str(path), "--batch-size", batch_size])
    except SystemExit as usage:  # argparse refuses a bad option value: status 2, named
        status = usage.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    if status == 0:
        assert len(json.loads(out)["predictions"]) >= 1
    elif status == 2:
        assert batch_size != "4" and "--batch-size" in err, err
    else:
        assert status == 1 and err.startswith("jnn predict: error:"), err
