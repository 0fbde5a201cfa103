"""The examples reach their stated targets (they are what the README runs)."""

import importlib.util
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quickstart_reaches_093_held_out_accuracy(tmp_path):
    out = tmp_path / "curves.png"
    accuracy = load("quickstart").main(epochs=60, out=str(out), verbose=0)
    assert accuracy >= 0.93
    assert out.stat().st_size > 10_000  # a real figure was drawn


def test_regression_beats_the_mean_and_matches_least_squares(tmp_path):
    result = load("regression").main(epochs=200, out=str(tmp_path / "r.png"))
    assert result["mse"] < 0.75 * result["baseline_mse"]
    assert result["mse"] < 1.15 * result["linear_mse"]


def test_deploy_serves_the_trained_model_over_http():
    result = load("deploy").main(epochs=10)
    assert set(result["by_format"]) == {"jnn", "onnx"}  # both paths, each through a server
    assert result["accuracy"] >= 0.9
    assert result["max_diff"] < 1e-5
    assert result["bad_status"] == 422


def test_deploy_help_prints_usage_and_runs_nothing():
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "deploy.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "--format {jnn,onnx,both}" in proc.stdout
    assert "exported" not in proc.stdout
