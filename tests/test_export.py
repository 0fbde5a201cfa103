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
    head = struct.calcsize("<8sI32s")
    flipped = bytearray(data)
    flipped[head + len(flipped[head:]) // 2] ^= 0xFF
    cases = {
        "flipped.jnn": (bytes(flipped), "checksum"),
        "truncated.jnn": (data[: len(data) - 100], "checksum"),
        "version.jnn": (MAGIC + struct.pack("<I", 99) + data[12:], "unknown format version 99"),
        "other.jnn": (b"PK\x03\x04" + data[4:], "not a jnn model"),
        "empty.jnn": (b"", "not a jnn model"),
    }
    for name, (content, match) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=match):
            jnn.export.load(tmp_path / name)


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
