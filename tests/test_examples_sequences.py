"""The sequence examples reach their targets (LSTM digits >= 0.95; the forecast beats naive)."""

import importlib.util
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PNG = b"\x89PNG\r\n\x1a\n"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"_example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sequence_digits_lstm_reaches_095(tmp_path):
    plot = tmp_path / "digits.png"
    scores = _load("sequence_digits").main(["--epochs", "15", "--verbose", "0", "--out", str(plot)])
    assert scores["accuracy"] >= 0.95
    assert plot.read_bytes()[:8] == PNG


def test_forecast_beats_the_naive_forecast(tmp_path):
    plot = tmp_path / "forecast.png"
    scores = _load("forecast").main(["--epochs", "30", "--out", str(plot)])
    assert scores["mse"] < 0.5 * scores["naive_mse"]
    assert scores["ar_mse"] < scores["naive_mse"]  # the reference itself is sane
    assert plot.read_bytes()[:8] == PNG
