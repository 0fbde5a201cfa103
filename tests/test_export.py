"""Tests for jnn.export: save -> load (in a fresh process too), validation, integrity."""

import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _reference import trained

import jnn
import jnn.export
from jnn.export import FORMAT_VERSION, MAGIC

# The platform these tests run on (the files they load must be lowered for it).
HERE = jax.export.default_export_platform()
FEATURES = 30


def seed_model():
    return jnn.serial(
        jnn.Dense(10, activation="relu"),
        jnn.Dense(10, activation="relu"),
        jnn.Dense(1, activation="sigmoid"),
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = seed_model()
    _, params = model.init(jax.random.key(0), (-1, FEATURES))
    # TRAINED params: a file holding freshly initialised ones would not match predict.
    x = np.random.default_rng(1).normal(size=(64, FEATURES)).astype(np.float32)
    params = trained(model, params, x, (x[:, :1] > 0).astype(np.float32))
    path = str(tmp_path_factory.mktemp("export") / "seed.jnn")
    meta = jnn.export.save(
        path, model, params, (-1, FEATURES), labels=["malignant", "benign"], description="seed"
    )
    return model, params, path, meta


def test_metadata(exported):
    model, _, path, meta = exported
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["input"] == {"shape": [None, FEATURES], "dtype": "float32"}
    assert meta["output"] == {"shape": [None, 1], "dtype": "float32"}
    assert meta["platforms"] == ["cpu", "cuda", "tpu"]
    assert meta["jax_version"] == jax.__version__ and meta["jnn_version"] == jnn.__version__
    assert meta["labels"] == ["malignant", "benign"]
    assert meta["summary"] == jnn.summary(model, (-1, FEATURES)).to_dict()
    loaded = jnn.export.load(path)
    assert loaded.metadata == meta
    assert loaded.input_shape == (None, FEATURES) and loaded.output_shape == (None, 1)
    assert "dense_2" in loaded.summary()


def test_load_in_fresh_process_matches_predict(exported, tmp_path):
    """The loading process never imports this file, where the model is defined."""
    model, params, path, _ = exported
    rng = np.random.default_rng(0)
    expected = {}
    for n in (1, 7, 1000):
        x = rng.normal(size=(n, FEATURES)).astype(np.float32)
        np.save(tmp_path / f"x{n}.npy", x)
        expected[n] = jnn.predict(model, params, x)
    script = textwrap.dedent(
        """
        import json, sys
        import numpy as np
        from jnn.export import load
        predictor = load(sys.argv[1])
        for n in (1, 7, 1000):
            x = np.load(f"{sys.argv[2]}/x{n}.npy")
            np.save(f"{sys.argv[2]}/y{n}.npy", predictor(x))
        print(json.dumps(sorted(sys.modules)))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, path, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert proc.returncode == 0, proc.stderr
    modules = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not [m for m in modules if "test_export" in m or m.startswith("tests")]
    assert "fastapi" not in modules and "uvicorn" not in modules  # serving deps stay optional
    for n, want in expected.items():
        got = np.load(tmp_path / f"y{n}.npy")
        assert got.shape == (n, 1)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_any_batch_size_and_single_example(exported):
    model, params, path, _ = exported
    predictor = jnn.export.load(path)
    x = np.random.default_rng(1).normal(size=(13, FEATURES)).astype(np.float32)
    want = jnn.predict(model, params, x)
    np.testing.assert_allclose(predictor(x, batch_size=4), want, rtol=1e-5, atol=1e-6)
    single = predictor.check_input(x[0], allow_single=True)
    assert single.shape == (1, FEATURES)
    # Ints and float64 of the right shape are cast (same kind or safe).
    np.testing.assert_allclose(predictor(x.astype(np.float64)), want, rtol=1e-5, atol=1e-6)
    assert predictor(np.ones((2, FEATURES), np.int32)).shape == (2, 1)


@pytest.mark.parametrize(
    ("bad", "error", "match"),
    [
        (np.ones((3, FEATURES + 1), np.float32), ValueError, r"\(n, 30\)"),
        (np.ones((FEATURES,), np.float32), ValueError, r"\(n, 30\)"),
        (np.ones((2, 3, FEATURES), np.float32), ValueError, r"\(n, 30\)"),
        (np.ones((0, FEATURES), np.float32), ValueError, "n >= 1"),
        (np.array([["a"] * FEATURES]), TypeError, "dtype"),
        (np.ones((1, FEATURES), np.complex64), TypeError, "dtype"),
        (np.ones((1, FEATURES), bool), TypeError, "dtype"),
        (np.full((1, FEATURES), np.nan, np.float32), ValueError, "NaN"),
    ],
)
def test_rejects_wrong_inputs(exported, bad, error, match):
    predictor = jnn.export.load(exported[2])
    with pytest.raises(error, match=match):
        predictor(bad)


def test_corrupted_files_are_refused(exported, tmp_path):
    data = Path(exported[2]).read_bytes()
    head = struct.calcsize("<8sIQ32s")
    flipped = bytearray(data)
    flipped[head + len(flipped[head:]) // 2] ^= 0xFF
    cases = {
        "flipped.jnn": (bytes(flipped), "checksum mismatch"),
        "truncated.jnn": (data[: len(data) - 100], "truncated"),
        "version.jnn": (MAGIC + struct.pack("<I", 99) + data[12:], "format version 99"),
        "other.jnn": (b"PK\x03\x04" + data[4:], "not a jnn model"),
        "empty.jnn": (b"", "not a jnn model"),
    }
    for name, (content, match) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(jnn.export.ExportError, match=match) as err:
            jnn.export.load(tmp_path / name)
        assert name in str(err.value)  # the message names the file


def test_files_of_format_1_still_load():
    """A file written by format 1 (no length field in the header) loads and predicts."""
    path = Path(__file__).parent / "data" / "format_v1.jnn"
    assert struct.unpack_from("<I", path.read_bytes(), 8) == (1,)
    predictor = jnn.export.load(path)
    assert predictor.metadata["format_version"] == 1 and predictor.labels == ["a", "b"]
    # relu(x @ [[0, .1], [.2, .3], [.4, .5]] + [.5, -4]) for x = (1, 2, 3)
    np.testing.assert_allclose(predictor(np.array([[1.0, 2.0, 3.0]])), [[2.1, 0.0]], rtol=1e-6)


def _body(path):
    from flax import serialization

    data = Path(path).read_bytes()
    return serialization.msgpack_restore(data[struct.calcsize("<8sIQ32s") :])


def _write_framed(path, body: bytes):
    """A model file around ``body`` with a correct header and checksum (a forger's file)."""
    import hashlib

    header = struct.pack(
        "<8sIQ32s", MAGIC, FORMAT_VERSION, len(body), hashlib.sha256(body).digest()
    )
    Path(path).write_bytes(header + body)
    return path


def _forged(path, **changes):
    from flax import serialization

    body = {k: v for k, v in _body(path).items() if changes.get(k, 0) is not None}
    body.update({k: v for k, v in changes.items() if v is not None})
    return serialization.msgpack_serialize(body)


def test_malformed_bodies_with_a_valid_checksum_are_export_errors(exported, tmp_path, capsys):
    """A file that passes its checksum but whose body is wrong: one typed error, naming the file."""
    import msgpack

    from jnn.cli import main

    path = exported[2]
    meta = json.loads(_body(path)["metadata"])
    bodies = {
        "garbage": (b"\xc1\xc1\xc1", "unreadable payload"),
        "not a map": (msgpack.packb([1, 2, 3]), "expected a map, got a list"),
        "extension type": (msgpack.packb({"x": msgpack.ExtType(42, b"os.system")}), "ExtType"),
        "no program": (_forged(path, exported=None), "no exported entry"),
        "no weights": (_forged(path, weights=None), "no weights entry"),
        "metadata not JSON": (_forged(path, metadata="{nope"), "not JSON"),
        "metadata a list": (_forged(path, metadata="[1]"), "a list, not an object"),
        "no input shape": (
            _forged(path, metadata=json.dumps({**meta, "input": {"dtype": "float32"}})),
            "input/output shapes",
        ),
        "unknown dtype": (
            _forged(
                path, metadata=json.dumps({**meta, "input": {"shape": [None, 30], "dtype": "f9"}})
            ),
            "unknown dtype",
        ),
        "program not bytes": (_forged(path, exported="text"), "program is not bytes"),
        "program garbage": (_forged(path, exported=b"\x00" * 64), "could not be deserialized"),
        "weights not arrays": (_forged(path, weights=["a"]), "not a list of arrays"),
        "weights mismatch": (
            _forged(path, weights=[np.zeros(2, np.float32)]),
            "do not match the program's arguments",
        ),
    }
    for name, (body, match) in bodies.items():
        file = _write_framed(tmp_path / f"{name.replace(' ', '_')}.jnn", body)
        with pytest.raises(jnn.export.ExportError, match=match) as err:
            jnn.export.load(file)
        assert file.name in str(err.value), name
        # `jnn info` prints the same error on one line, no traceback, exit status 1.
        assert main(["info", str(file)]) == 1, name
        printed = capsys.readouterr().err
        assert printed.startswith("jnn info: error: export.load(") and "Traceback" not in printed


def test_foreign_custom_calls_are_refused(exported, tmp_path):
    """A program calling native code jnn's layers never produce (here LAPACK) does not load."""
    weights = _body(exported[2])["weights"]
    weights = (
        [weights[k] for k in sorted(weights, key=int)] if isinstance(weights, dict) else weights
    )

    def forward(ws, x):  # the seed model's signature, plus a Cholesky factorization
        c = jnp.linalg.cholesky(jnp.eye(1) * 2.0)
        h = jax.nn.relu(x @ ws[1] + ws[0][None])
        h = jax.nn.relu(h @ ws[3] + ws[2][None])
        return jax.nn.sigmoid(h @ ws[5] @ c + ws[4][None])

    (batch,) = jax.export.symbolic_shape("batch")
    specs = (
        [jax.ShapeDtypeStruct(w.shape, w.dtype) for w in weights],
        jax.ShapeDtypeStruct((batch, FEATURES), jnp.float32),
    )
    program = jax.export.export(jax.jit(forward), platforms=(HERE,))(*specs)
    targets = jnn.export.custom_call_targets(program.mlir_module())
    assert targets - jnn.export.ALLOWED_CUSTOM_CALLS, targets  # it does hold a foreign call
    file = _write_framed(
        tmp_path / "lapack.jnn", _forged(exported[2], exported=program.serialize())
    )
    with pytest.raises(jnn.export.ExportError, match=r"custom call target\(s\) \['\w+potrf"):
        jnn.export.load(file)


def _every_layer_kind():
    """One model per layer constructor, with an input it accepts (and its input dtype)."""
    L = jnn
    conv2d = (-1, 8, 8, 2)
    return {
        "Dense+activations": (
            L.serial(L.Dense(4, activation="relu"), L.Sigmoid(), L.Tanh(), L.Gelu(),
                     L.Gelu(approximate=False), L.Elu(), L.Selu(), L.Silu(), L.Softplus(),
                     L.LeakyRelu(), L.Relu(), L.Activation("swish"), L.Softmax(),
                     L.LogSoftmax(), L.Dropout(0.5), L.Identity()),
            (-1, 3), jnp.float32,
        ),
        "Conv+pool+norm": (
            L.serial(L.Conv(4, (3, 3), groups=2), L.BatchNorm(), L.MaxPool((2, 2)),
                     L.ConvTranspose(2, (3, 3), strides=2), L.AvgPool((2, 2), padding="SAME"),
                     L.GlobalAvgPool(), L.LayerNorm(), L.RMSNorm()),
            conv2d, jnp.float32,
        ),
        "Conv1d/3d": (
            L.serial(L.Conv(2, (3, 3, 3), dilation=2, padding=1), L.GlobalMaxPool(3)),
            (-1, 6, 6, 6, 1), jnp.float32,
        ),
        "Flatten+Reshape": (
            L.serial(L.Conv(2, (3,)), L.Flatten(), L.Reshape((2, -1)), L.Flatten()),
            (-1, 5, 2), jnp.float32,
        ),
        "attention": (
            L.serial(L.Embedding(10, 8), L.PositionalEmbedding(6),
                     L.residual(L.LayerNorm(), L.MultiHeadAttention(2, causal=True)), L.Dense(2)),
            (-1, 5), jnp.int32,
        ),
        "fan": (
            L.serial(L.FanOut(2), L.parallel(L.Dense(3), L.Identity()), L.FanInSum(),
                     L.FanOut(2), L.FanInConcat()),
            (-1, 3), jnp.float32,
        ),
        "recurrent": (
            L.serial(L.Bidirectional(L.LSTM(3, return_sequences=True)),
                     L.GRU(2, return_sequences=True), L.SimpleRNN(2),
                     L.repeat(L.remat(L.Dense(2)), 2)),
            (-1, 4, 3), jnp.float32,
        ),
        "cells": (  # (x, (h, c)) for the LSTM cell
            L.serial(L.FanOut(2), L.parallel(L.Identity(), L.serial(L.Dense(3), L.FanOut(2))),
                     L.LSTMCell(3)),
            (-1, 3), jnp.float32,
        ),
        "gru_cell": (
            L.serial(L.FanOut(2), L.GRUCell(3)),
            (-1, 3), jnp.float32,
        ),
    }  # fmt: skip


def test_allowed_custom_calls_are_what_every_layer_kind_produces():
    """The allow-list, derived: export every layer kind for cpu, cuda and tpu, read its calls."""
    from test_layers_describe import BUILT  # one instance of every public constructor

    models = _every_layer_kind()
    covered = set()
    for model, _, _ in models.values():
        stack = [model]
        while stack:
            spec = jnn.layers.spec_of(stack.pop())
            covered.add(spec.kind)
            stack.extend(child for _, child in spec.children)
    missing = {jnn.layers.spec_of(layer).kind for layer in BUILT.values()} - covered
    assert not missing, f"add the layer kind(s) {sorted(missing)} to _every_layer_kind()"
    found = set()
    (batch,) = jax.export.symbolic_shape("batch")
    for model, shape, dtype in models.values():
        # What export.save lowers: the forward pass in evaluation mode, batch axis symbolic
        # (all outputs here: the cells return (y, state), which save would refuse).
        smodel = jnn.stateful(model)
        _, params, state = smodel.init(jax.random.key(0), shape)
        spec = jax.ShapeDtypeStruct((batch, *shape[1:]), dtype)
        forward = jax.jit(lambda p, s, x, m=smodel: m.apply(p, s, x, train=False)[0])
        program = jax.export.export(forward, platforms=("cpu", "cuda", "tpu"))(params, state, spec)
        found |= jnn.export.custom_call_targets(program.mlir_module())
    assert found == jnn.export.ALLOWED_CUSTOM_CALLS


def test_expected_sha256_refuses_altered_weights(exported, tmp_path):
    """Weights altered and the inner checksum recomputed: loads unless the file's hash is pinned."""
    path = exported[2]
    digest = jnn.export.file_sha256(path)
    assert digest == __import__("hashlib").sha256(Path(path).read_bytes()).hexdigest()
    assert jnn.export.load(path, expected_sha256=digest.upper()).input_shape == (None, FEATURES)
    weights = _body(path)["weights"]
    keys = sorted(weights, key=int) if isinstance(weights, dict) else range(len(weights))
    altered = [np.asarray(weights[k]) * (-1.0 if i == 0 else 1.0) for i, k in enumerate(keys)]
    forged = _write_framed(tmp_path / "forged.jnn", _forged(path, weights=altered))
    jnn.export.load(forged)  # the checksum only guards against accidents: this loads...
    with pytest.raises(
        jnn.export.ExportError,
        match=f"sha256 mismatch: the file's is [0-9a-f]{{64}}, expected {digest}",
    ):
        jnn.export.load(forged, expected_sha256=digest)  # ...but not as the file you trusted
    with pytest.raises(ValueError, match="64 hexadecimal digits"):
        jnn.export.load(path, expected_sha256="abc")


def test_inputs_beyond_float32_are_refused_naming_the_column(exported):
    predictor = jnn.export.load(exported[2])
    x = np.ones((2, FEATURES))
    x[1, 4] = 1e39
    with pytest.raises(ValueError, match=r"beyond float32's range.*example 1, column 4"):
        predictor(x)
    model, params = exported[0], exported[1]
    with pytest.raises(ValueError, match=r"beyond float32's range.*example 1, column 4"):
        jnn.predict(model, params, x)  # the same input, the same answer


def test_save_is_atomic(exported, tmp_path, monkeypatch):
    model, params, _, _ = exported
    target = tmp_path / "m.jnn"
    jnn.export.save(target, model, params, (-1, FEATURES), platforms=HERE)
    before = target.read_bytes()

    def crash(src, dst):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        jnn.export.save(target, model, params, (-1, FEATURES), platforms=HERE, description="v2")
    monkeypatch.undo()
    assert target.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["m.jnn"]


def test_stateful_model_exports_its_state(tmp_path):
    def Shift():
        def init(key, input_shape):
            return input_shape, {}, {"mean": jnp.full(input_shape[-1:], 2.0)}

        def apply(params, state, x, *, key=None, train=False):
            return x - state["mean"].reshape(1, -1), state

        return jnn.StatefulLayer(init, apply)

    model = jnn.serial(Shift(), jnn.Dense(2))
    _, params, state = model.init(jax.random.key(0), (-1, 3))
    with pytest.raises(ValueError, match="model_state"):
        jnn.export.save(tmp_path / "m.jnn", model, params, (-1, 3), platforms="cpu")
    jnn.export.save(tmp_path / "m.jnn", model, params, (-1, 3), model_state=state, platforms=HERE)
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    want = jnn.predict(model, params, x, model_state=state)
    np.testing.assert_allclose(jnn.export.load(tmp_path / "m.jnn")(x), want, rtol=1e-6)


def test_multidimensional_input_and_example_array_spec(tmp_path):
    model = jnn.serial(jnn.Flatten(), jnn.Dense(3), jnn.Softmax())
    _, params = model.init(jax.random.key(0), (-1, 2, 4))
    example = np.zeros((5, 2, 4), np.float32)  # the batch axis of a spec is made symbolic
    meta = jnn.export.save(
        tmp_path / "m.jnn", model, params, example, labels=["a", "b", "c"], platforms=[HERE]
    )
    assert meta["input"]["shape"] == [None, 2, 4] and meta["platforms"] == [HERE]
    x = np.random.default_rng(0).normal(size=(9, 2, 4)).astype(np.float32)
    got = jnn.export.load(tmp_path / "m.jnn")(x)
    np.testing.assert_allclose(got, jnn.predict(model, params, x), rtol=1e-5, atol=1e-6)


def test_save_argument_errors(tmp_path):
    model = jnn.Dense(2)
    _, params = model.init(jax.random.key(0), (-1, 3))
    path = tmp_path / "m.jnn"
    with pytest.raises(ValueError, match="only the first"):
        jnn.export.save(path, model, params, (-1, -1), platforms="cpu")
    with pytest.raises(TypeError, match="input_spec"):
        jnn.export.save(path, model, params, 3, platforms="cpu")
    with pytest.raises(ValueError, match="platforms"):
        jnn.export.save(path, model, params, (-1, 3), platforms=("gpu-ish",))
    with pytest.raises(ValueError, match="labels"):
        jnn.export.save(path, model, params, (-1, 3), labels=["a", "b", "c"], platforms="cpu")
    with pytest.raises(TypeError, match="labels"):
        jnn.export.save(path, model, params, (-1, 3), labels="ab", platforms="cpu")
    with pytest.raises(TypeError, match=r"jnn\.Layer"):
        jnn.export.save(path, jnn.Dense, params, (-1, 3), platforms="cpu")
    two_outputs = jnn.serial(jnn.Dense(2), jnn.FanOut(2))
    with pytest.raises(ValueError, match="one output array"):
        jnn.export.save(
            path, two_outputs, {"dense_0": params, "fan_out_0": {}}, (-1, 3), platforms="cpu"
        )
    assert not path.exists()


def test_predictor_function_composes_with_jit(exported):
    """The loaded program is a jax function of x: it runs under jit, on any batch size."""
    _, _, path, _ = exported
    predictor = jnn.export.load(path)
    x = np.random.default_rng(2).normal(size=(4, FEATURES)).astype(np.float32)
    fn = predictor.jax_function()
    np.testing.assert_allclose(np.asarray(jax.jit(fn)(x)), predictor(x), rtol=1e-6)
    doubled = jax.jit(lambda v: 2.0 * fn(v))(x[:3])
    np.testing.assert_allclose(np.asarray(doubled), 2.0 * predictor(x[:3]), rtol=1e-6)
