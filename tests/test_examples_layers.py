"""The layer examples train to their targets (digits CNN >= 0.97, tiny transformer >= 0.95)."""

import importlib.util
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"_example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_digits_cnn_reaches_097_and_saves_its_plot(tmp_path):
    plot = tmp_path / "curve.png"
    scores = _load("digits_cnn").main(["--epochs", "15", "--verbose", "0", "--out", str(plot)])
    assert scores["accuracy"] >= 0.97
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tiny_transformer_reverses_sequences():
    scores = _load("tiny_transformer").main(["--verbose", "0"])
    assert scores["accuracy"] >= 0.95


def test_resnet_block_with_batch_norm_is_stateful():
    import jax
    import jax.numpy as jnp

    import jnn

    block = jnn.serial(
        jnn.residual(
            jnn.Conv(4, (3, 3)), jnn.BatchNorm(), jnn.Relu(), jnn.Conv(4, (3, 3)), jnn.BatchNorm()
        ),
        jnn.Relu(),
    )
    assert jnn.is_stateful(block)
    shape, params, state = block.init(jax.random.key(0), (-1, 6, 6, 4))
    y, new_state = block.apply(params, state, jnp.ones((2, 6, 6, 4)), train=True)
    assert shape == (-1, 6, 6, 4) and y.shape == (2, 6, 6, 4)
    assert set(new_state["residual_0"]) == {
        "conv_0",
        "batch_norm_0",
        "relu_0",
        "conv_1",
        "batch_norm_1",
    }
