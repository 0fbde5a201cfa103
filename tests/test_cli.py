"""Tests for the jnn command line: info and predict on npy/csv/json."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from _reference import trained

import jnn
import jnn.export
from jnn.cli import main

# The platform these tests run on (the files they load must be lowered for it).
HERE = jax.export.default_export_platform()
FEATURES = 3


@pytest.fixture(scope="module")
def trained_model():
    """A model and TRAINED params: a file holding fresh params would not match predict."""
    model = jnn.serial(jnn.Dense(5, activation="tanh"), jnn.Dense(2))
    _, params = model.init(jax.random.key(0), (-1, FEATURES))
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, FEATURES)).astype(np.float32)
    y = np.stack([x.sum(1), x[:, 0] * x[:, 1]], axis=1).astype(np.float32)
    return model, trained(model, params, x, y)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, trained_model):
    model, params = trained_model
    tmp = tmp_path_factory.mktemp("cli")
    path = str(tmp / "m.jnn")
    jnn.export.save(path, model, params, (-1, FEATURES), labels=["a", "b"], platforms=HERE)
    x = np.random.default_rng(0).normal(size=(50, FEATURES)).astype(np.float32)
    return path, x, jnn.predict(model, params, x), tmp


def test_info(setup, capsys):
    path = setup[0]
    assert main(["info", path]) == 0
    out = capsys.readouterr().out
    assert "input:       (n, 3) float32" in out and "output:      (n, 2) float32" in out
    assert "labels:      a, b" in out and "dense_1" in out and "Total params: 32" in out
    assert main(["info", path, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"]["total_params"] == 32


def _write(path, x, fmt):
    if fmt == "npy":
        np.save(path, x)
    elif fmt == "csv":
        np.savetxt(path, x, delimiter=",", header="f0,f1,f2", comments="", fmt="%.9g")
    else:
        path.write_text(json.dumps({"inputs": x.tolist()}))


def _read(path, fmt):
    if fmt == "npy":
        return np.load(path)
    if fmt == "csv":
        return np.loadtxt(path, delimiter=",", ndmin=2)
    return np.asarray(json.loads(path.read_text())["predictions"])


@pytest.mark.parametrize("fmt_in", ["npy", "csv", "json"])
@pytest.mark.parametrize("fmt_out", ["npy", "csv", "json"])
def test_predict_formats(setup, fmt_in, fmt_out, capsys):
    path, x, want, tmp = setup
    src, dst = tmp / f"in_{fmt_in}.{fmt_in}", tmp / f"out_{fmt_in}.{fmt_out}"
    _write(src, x, fmt_in)
    assert (
        main(["predict", path, "--input", str(src), "--output", str(dst), "--batch-size", "16"])
        == 0
    )
    got = _read(dst, fmt_out)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    err = capsys.readouterr().err
    assert "50/50 rows" in err and "wrote 50 predictions" in err


def test_predict_to_stdout_and_quiet(setup, capsys):
    path, x, want, tmp = setup
    np.save(tmp / "x.npy", x[:4])
    assert main(["predict", path, "--input", str(tmp / "x.npy"), "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(out["predictions"], want[:4], rtol=1e-5, atol=1e-6)


def test_predict_errors(setup, capsys):
    path, _, _, tmp = setup
    np.save(tmp / "bad.npy", np.ones((4, FEATURES + 1), np.float32))
    assert main(["predict", path, "--input", str(tmp / "bad.npy")]) == 1
    assert "(n, 3)" in capsys.readouterr().err
    (tmp / "bad.csv").write_text("1,2\n3,4\n")
    assert main(["predict", path, "--input", str(tmp / "bad.csv")]) == 1
    assert "2 columns" in capsys.readouterr().err
    assert main(["predict", path, "--input", str(tmp / "x.txt")]) == 1
    assert "unsupported file type" in capsys.readouterr().err
    (tmp / "corrupt.jnn").write_bytes(b"JNNMODEL" + b"\x01\x00\x00\x00" + b"\x00" * 40)
    assert main(["info", str(tmp / "corrupt.jnn")]) == 1
    assert "checksum" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["predict", path])  # --input is required


def test_python_dash_m_jnn(setup):
    proc = subprocess.run(
        [sys.executable, "-m", "jnn", "info", setup[0]],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "Total params: 32" in proc.stdout


# ----- ONNX files, integrity, and bad input that used to escape as tracebacks


@pytest.fixture(scope="module")
def onnx_setup(setup, trained_model, tmp_path_factory):
    _, x, want, _ = setup
    model, params = trained_model
    onnx_path = str(tmp_path_factory.mktemp("cli_onnx") / "m.onnx")
    jnn.export.save_onnx(onnx_path, model, params, (-1, FEATURES), labels=["a", "b"])
    return onnx_path, x, want


def test_info_and_predict_on_an_onnx_file(onnx_setup, tmp_path, capsys):
    path, x, want = onnx_setup
    assert main(["info", path]) == 0
    out = capsys.readouterr().out
    assert "input:       (n, 3) float32" in out and "runtime:     ONNX Runtime (opset 17" in out
    assert "labels:      a, b" in out and "Total params: 32" in out
    np.save(tmp_path / "x.npy", x)
    assert main(["predict", path, "--input", str(tmp_path / "x.npy"), "--quiet"]) == 0
    got = json.loads(capsys.readouterr().out)["predictions"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("which", ["jnn", "onnx"])
def test_sha256_is_checked(setup, onnx_setup, which, capsys):
    import hashlib

    path = setup[0] if which == "jnn" else onnx_setup[0]
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    assert main(["info", path, "--sha256", digest]) == 0
    capsys.readouterr()
    assert main(["info", path, "--sha256", "f" * 64]) == 1
    err = capsys.readouterr().err
    assert "sha256 mismatch" in err and digest in err and "Traceback" not in err
    assert main(["serve", path, "--sha256", "f" * 64, "--port", "0"]) == 1  # before binding
    assert "sha256 mismatch" in capsys.readouterr().err


@pytest.mark.parametrize("port", ["99999", "-1", "http", "65536"])
def test_serve_refuses_a_bad_port_with_a_usage_error(setup, port, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", setup[0], "--port", port])
    assert exit_info.value.code == 2
    assert "a port is 0 to 65535" in capsys.readouterr().err


def test_bad_numeric_flags_are_usage_errors(setup, capsys):
    for flags in (["--max-batch-size", "0"], ["--compute-timeout-s", "nan"],
                  ["--max-wait-ms", "-1"], ["--header-timeout-s", "inf"]):  # fmt: skip
        with pytest.raises(SystemExit):
            main(["serve", setup[0], *flags])
        assert "expected" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["predict", setup[0], "--input", "x.npy", "--batch-size", "0"])


def test_deeply_nested_json_input_is_a_clear_error(setup, tmp_path, capsys):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    assert main(["predict", setup[0], "--input", str(deep)]) == 1
    err = capsys.readouterr().err
    assert "nested too deeply" in err and "Traceback" not in err


def test_a_damaged_model_file_never_escapes_as_a_traceback(setup, onnx_setup, monkeypatch, capsys):
    """Whatever a decoder raises on a damaged body (KeyError, ...) is one line and status 1."""
    import jnn.export as export

    def broken(path, **kwargs):
        raise KeyError("exported")

    monkeypatch.setattr(export, "load", broken)
    for command in (["info", setup[0]], ["predict", setup[0], "--input", "x.npy"]):
        assert main(command) == 1
        err = capsys.readouterr().err
        assert "not a usable model file (KeyError" in err and err.count("\n") == 1
    truncated = onnx_setup[0] + ".truncated.onnx"
    with open(onnx_setup[0], "rb") as f, open(truncated, "wb") as g:
        g.write(f.read()[:100])
    assert main(["info", truncated]) == 1
    assert "not a usable ONNX model" in capsys.readouterr().err
