"""ONNX export checked by ONNX Runtime: every layer kind, trained weights, bad input, no jax.

Each model is trained for a few steps first (so the file must carry the
trained params and BatchNorm statistics, not an initialization), exported
with ``jnn.export.save_onnx``, loaded on ONNX Runtime and compared with
``jnn.predict`` on the original model at batch 1, 7 and 1000.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import pytest

import jnn
import jnn.export

ACTIVATIONS = ["relu", "sigmoid", "tanh", "gelu", "softmax", "log_softmax", "leaky_relu", "elu",
               "selu", "silu", "softplus"]  # fmt: skip

# name -> (model, feature shape, input dtype)
CASES = {
    "dense_every_activation": (
        jnn.serial(*[jnn.Dense(6, activation=a) for a in ACTIVATIONS]),
        (5,),
        np.float32,
    ),
    "activation_layers": (
        jnn.serial(
            jnn.Dense(6),
            jnn.Relu(),
            jnn.Activation("relu6"),
            jnn.Gelu(),
            jnn.Tanh(),
            jnn.Sigmoid(),
            jnn.Elu(),
            jnn.LeakyRelu(),
            jnn.Selu(),
            jnn.Silu(),
            jnn.Softplus(),
            jnn.Identity(),
            jnn.Softmax(),
            jnn.LogSoftmax(),
        ),
        (4,),
        np.float32,
    ),
    "conv1d": (jnn.Conv(4, (3,), strides=2, padding="SAME"), (9, 3), np.float32),
    "conv2d": (
        jnn.serial(jnn.Conv(4, (3, 3), dilation=2), jnn.Conv(4, (3, 3), groups=2, padding=1)),
        (9, 9, 2),
        np.float32,
    ),
    "conv3d": (
        jnn.serial(
            jnn.Conv(4, (2, 3, 2), strides=(2, 1, 1), padding="SAME"),
            jnn.Conv(4, (3, 2, 2), dilation=(2, 1, 1), groups=2),
        ),
        (7, 5, 5, 2),
        np.float32,
    ),
    "conv_transpose1d": (jnn.ConvTranspose(3, (3,), strides=2), (6, 2), np.float32),
    "conv_transpose2d": (
        jnn.ConvTranspose(3, (3, 3), strides=2, padding="SAME"),
        (6, 6, 2),
        np.float32,
    ),
    "conv_transpose3d": (
        jnn.ConvTranspose(3, (2, 3, 2), strides=(2, 2, 1)),
        (4, 4, 4, 2),
        np.float32,
    ),
    "pools1d": (
        jnn.serial(
            jnn.Conv(3, (2,)), jnn.MaxPool((3,), strides=2), jnn.AvgPool((2,)), jnn.GlobalMaxPool(1)
        ),
        (9, 3),
        np.float32,
    ),
    "pools2d": (
        jnn.serial(
            jnn.Conv(3, (2, 2)),
            jnn.MaxPool((2, 2)),
            jnn.AvgPool((2, 2), padding="SAME"),
            jnn.GlobalAvgPool(),
        ),
        (9, 9, 3),
        np.float32,
    ),
    "pools3d": (
        jnn.serial(
            jnn.Conv(3, (2, 2, 2)),
            jnn.MaxPool((2, 2, 2), padding="SAME"),
            jnn.AvgPool((2, 2, 2)),
            jnn.GlobalMaxPool(3),
        ),
        (5, 5, 5, 3),
        np.float32,
    ),
    "flatten_reshape": (
        jnn.serial(jnn.Flatten(), jnn.Dense(24), jnn.Reshape((4, 6)), jnn.Flatten()),
        (2, 3, 4),
        np.float32,
    ),
    "norms_dropout": (
        jnn.serial(jnn.LayerNorm(), jnn.Dense(6), jnn.RMSNorm(), jnn.Dropout(0.5), jnn.Dense(4)),
        (6,),
        np.float32,
    ),
    "batch_norm": (
        jnn.serial(
            jnn.Conv(4, (3, 3)),
            jnn.BatchNorm(),
            jnn.Relu(),
            jnn.Flatten(),
            jnn.Dense(5),
            jnn.BatchNorm(),
        ),
        (6, 6, 2),
        np.float32,
    ),
    "embeddings": (
        jnn.serial(jnn.Embedding(20, 8), jnn.PositionalEmbedding(10), jnn.Dense(3)),
        (10,),
        np.int32,
    ),
    "attention_causal": (
        jnn.serial(
            jnn.Dense(8), jnn.residual(jnn.LayerNorm(), jnn.MultiHeadAttention(2, causal=True))
        ),
        (5, 4),
        np.float32,
    ),
    "attention_masked": (
        jnn.serial(
            jnn.FanOut(3),
            jnn.parallel(
                jnn.Dense(8),
                jnn.Dense(6),
                jnn.layers.Layer(
                    lambda key, s: ((*s[:-1], s[-2]), {}),
                    lambda p, x, **kw: jnn.layers.attention_mask(x[..., 0] > -0.5),
                ),
            ),
            jnn.MultiHeadAttention(2),
        ),
        (5, 4),
        np.float32,
    ),
    "recurrent": (
        jnn.serial(
            jnn.LSTM(6, return_sequences=True),
            jnn.GRU(5, return_sequences=True),
            jnn.Bidirectional(jnn.SimpleRNN(4)),
            jnn.Dense(2),
        ),
        (6, 3),
        np.float32,
    ),
    "repeat_remat": (
        jnn.serial(jnn.repeat(jnn.Dense(4, activation="tanh"), 3), jnn.remat(jnn.Dense(2))),
        (4,),
        np.float32,
    ),
    "combinators": (
        jnn.serial(
            jnn.residual(jnn.Dense(5), jnn.Relu()),
            jnn.FanOut(2),
            jnn.parallel(jnn.Dense(3), jnn.Dense(2)),
            jnn.FanInConcat(),
            jnn.FanOut(2),
            jnn.parallel(jnn.Dense(4), jnn.Dense(4)),
            jnn.FanInSum(),
        ),
        (5,),
        np.float32,
    ),
}


def _inputs(rows, features, dtype, seed):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "i":
        return rng.integers(0, 20, size=(rows, *features)).astype(dtype)
    return rng.normal(size=(rows, *features)).astype(dtype)


def _train(model, features, dtype):
    """A few optimizer steps on random targets: params (and BatchNorm statistics) move."""
    out = jnn.stateful(model).init(jax.random.key(1), (-1, *features))
    x = _inputs(32, features, dtype, seed=2)
    y = np.random.default_rng(3).normal(size=(32, *out[0][1:])).astype(np.float32)
    result = jnn.fit(model, out[1], (x, y), loss="mse", optimizer="adam", learning_rate=1e-2,
                     epochs=2, batch_size=16, key=jax.random.key(4), verbose=0,
                     **({"model_state": out[2]} if jnn.is_stateful(model) else {}))  # fmt: skip
    changed = [
        not np.allclose(a, b)
        for a, b in zip(jax.tree.leaves(out[1]), jax.tree.leaves(result.params), strict=True)
    ]
    assert any(changed), "training did not change the params"
    return result.params, (result.model_state if jnn.is_stateful(model) else None)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx")


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_layer_kind_matches_jnn_predict(name, tmp):
    model, features, dtype = CASES[name]
    params, state = _train(model, features, dtype)
    path = str(tmp / f"{name}.onnx")
    meta = jnn.export.save_onnx(path, model, params, (-1, *features), model_state=state,
                                dtype=dtype)  # fmt: skip
    predictor = jnn.export.load(path)
    assert isinstance(predictor, jnn.export.OnnxPredictor)
    assert predictor.input_shape == (None, *features)
    assert meta["input"]["dtype"] == np.dtype(dtype).name
    for rows in (1, 7, 1000):
        x = _inputs(rows, features, dtype, seed=rows)
        want = jnn.predict(model, params, x, model_state=state)
        got = predictor(x)
        assert got.shape == want.shape and got.dtype == want.dtype
        scale = float(np.abs(want).max())
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * scale, err_msg=name)


@pytest.fixture(scope="module")
def trained_mlp(tmp):
    model = jnn.serial(jnn.Dense(16, activation="relu"), jnn.Dense(1, activation="sigmoid"))
    params, _ = _train(model, (10,), np.float32)
    path = str(tmp / "mlp.onnx")
    jnn.export.save_onnx(path, model, params, (-1, 10), labels=["no", "yes"], description="mlp")
    return model, params, path


def test_file_is_standard_onnx_with_symbolic_batch_and_metadata(trained_mlp):
    path = trained_mlp[2]
    proto = onnx.load(path)
    onnx.checker.check_model(proto)
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert inp.name == "inputs" and out.name == "predictions"
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [10]
    assert proto.opset_import[0].version == 17 and proto.producer_name == "jnn"
    meta = json.loads({p.key: p.value for p in proto.metadata_props}["jnn.metadata"])
    assert meta["input"] == {"shape": [None, 10], "dtype": "float32"}
    assert meta["labels"] == ["no", "yes"] and meta["jnn_version"] == jnn.__version__
    assert meta["summary"]["total_params"] == 10 * 16 + 16 + 16 + 1
    predictor = jnn.export.load(path)
    assert predictor.labels == ["no", "yes"] and "dense_1" in predictor.summary()


def test_the_file_holds_the_trained_params_not_an_initialization(trained_mlp):
    model, params, path = trained_mlp
    x = _inputs(64, (10,), np.float32, seed=9)
    got = jnn.export.load(path)(x)
    np.testing.assert_allclose(got, jnn.predict(model, params, x), rtol=1e-5, atol=1e-7)
    for seed in (0, 1):
        _, fresh = model.init(jax.random.key(seed), (-1, 10))
        assert not np.allclose(got, jnn.predict(model, fresh, x), atol=1e-4)


def test_a_newer_opset_can_be_asked_for(trained_mlp, tmp):
    model, params, _ = trained_mlp
    path = str(tmp / "opset21.onnx")
    assert jnn.export.save_onnx(path, model, params, (-1, 10), opset=21)["opset"] == 21
    assert onnx.load(path).opset_import[0].version == 21


# ----- bad input: clear errors, and no file


def test_wrong_input_spec_is_refused(trained_mlp, tmp):
    model, params, _ = trained_mlp
    path = tmp / "wrong.onnx"
    with pytest.raises(ValueError, match=r"input_spec \(-1, 5\) does not fit.*\(10, 16\)"):
        jnn.export.save_onnx(str(path), model, params, (-1, 5))
    with pytest.raises(ValueError, match="only the first"):
        jnn.export.save_onnx(str(path), model, params, (-1, None))
    with pytest.raises(TypeError, match="input_spec must be a shape"):
        jnn.export.save_onnx(str(path), model, params, 10)
    with pytest.raises(ValueError, match="do not match the model"):
        jnn.export.save_onnx(str(path), model, {"dense_0": params["dense_0"]}, (-1, 10))
    with pytest.raises(ValueError, match="model_state"):
        jnn.export.save_onnx(str(path), jnn.BatchNorm(), {}, (-1, 10))
    with pytest.raises(ValueError, match="opset must be an int from 17"):
        jnn.export.save_onnx(str(path), model, params, (-1, 10), opset=99)
    assert not path.exists()


def Doubler():
    """A custom layer using an operation with no ONNX form (a host callback)."""

    def init(key, input_shape):
        return tuple(input_shape), {}

    def apply(params, x, *, key=None, train=False):
        spec = jax.ShapeDtypeStruct(x.shape, x.dtype)
        return jax.pure_callback(lambda a: np.asarray(a) * 2, spec, x)

    return jnn.Layer(init, apply)


def test_a_layer_without_onnx_mapping_is_named(trained_mlp, tmp):
    path = tmp / "callback.onnx"
    model = jnn.serial(jnn.Dense(3), Doubler())
    _, params = model.init(jax.random.key(0), (-1, 4))
    with pytest.raises(ValueError, match=r"layer Doubler .*'pure_callback'.*no ONNX mapping"):
        jnn.export.save_onnx(str(path), model, params, (-1, 4))
    assert not path.exists()


def test_a_model_with_two_outputs_is_refused(tmp):
    model = jnn.serial(jnn.Dense(3), jnn.FanOut(2))
    _, params = model.init(jax.random.key(0), (-1, 4))
    with pytest.raises(ValueError, match="returns 2 arrays; ONNX export needs one"):
        jnn.export.save_onnx(str(tmp / "two.onnx"), model, params, (-1, 4))


def test_truncated_or_non_onnx_files_are_refused(trained_mlp, tmp):
    data = Path(trained_mlp[2]).read_bytes()
    for name, content in [
        ("truncated.onnx", data[: len(data) // 2]),
        ("text.onnx", b"this is not a model\n"),
        ("empty.onnx", b""),
        ("jnn_format.onnx", b"JNNMODEL" + bytes(40)),
    ]:
        (tmp / name).write_bytes(content)
        with pytest.raises(ValueError, match="not a usable ONNX model"):
            jnn.export.load(str(tmp / name))
    with pytest.raises(FileNotFoundError):
        jnn.export.load(str(tmp / "missing.onnx"))


def test_an_opset_the_runtime_lacks_is_a_clear_error(trained_mlp, tmp):
    proto = onnx.load(trained_mlp[2])
    proto.opset_import[0].version = 99
    onnx.save(proto, str(tmp / "future.onnx"))
    with pytest.raises(ValueError, match=r"(?s)Opset 99.*newer onnxruntime.*opset=N"):
        jnn.export.load(str(tmp / "future.onnx"))


def test_altered_metadata_and_sha256_are_checked(trained_mlp, tmp):
    from jnn._onnx_runtime import load_onnx

    proto = onnx.load(trained_mlp[2])
    entry = next(p for p in proto.metadata_props if p.key == "jnn.metadata")
    meta = json.loads(entry.value)
    meta["input"]["shape"] = [None, 11]
    entry.value = json.dumps(meta)
    onnx.save(proto, str(tmp / "altered.onnx"))
    with pytest.raises(ValueError, match="the file was altered"):
        jnn.export.load(str(tmp / "altered.onnx"))
    import hashlib

    digest = hashlib.sha256(Path(trained_mlp[2]).read_bytes()).hexdigest()
    assert load_onnx(trained_mlp[2], expected_sha256=digest.upper()).input_shape == (None, 10)
    with pytest.raises(ValueError, match="sha256 mismatch"):
        load_onnx(trained_mlp[2], expected_sha256="0" * 64)
    with pytest.raises(ValueError, match="64 hexadecimal digits"):
        load_onnx(trained_mlp[2], expected_sha256="abc")


def test_predictor_checks_inputs_like_the_jnn_predictor(trained_mlp):
    predictor = jnn.export.load(trained_mlp[2])
    with pytest.raises(ValueError, match=r"\(n, 10\)"):
        predictor(np.ones((3, 9), np.float32))
    with pytest.raises(TypeError, match="dtype"):
        predictor(np.array([["a"] * 10]))
    with pytest.raises(ValueError, match="NaN"):
        predictor(np.full((2, 10), np.nan))
    with pytest.raises(ValueError, match="batch_size"):
        predictor(np.ones((2, 10)), batch_size=0)
    assert predictor.check_input(np.ones(10), allow_single=True).shape == (1, 10)


# ----- the serving side needs no jax


def test_loading_predicting_and_serving_an_onnx_file_never_imports_jax(trained_mlp, tmp):
    """In a fresh interpreter where importing jax fails, .onnx files still predict and serve."""
    model, params, path = trained_mlp
    x = _inputs(4, (10,), np.float32, seed=5)
    np.save(tmp / "x.npy", x)
    code = textwrap.dedent(
        f"""
        import json, sys
        sys.modules["jax"] = None  # any `import jax` now raises ImportError
        import jnn
        from jnn.cli import main
        from jnn.serve import create_app, load_model
        from fastapi.testclient import TestClient

        assert main(["predict", {path!r}, "--input", {str(tmp / "x.npy")!r},
                     "--output", {str(tmp / "y.npy")!r}]) == 0
        assert main(["info", {path!r}]) == 0
        with TestClient(create_app(load_model({path!r}))) as client:
            reply = client.post("/predict", json={{"inputs": {x[:2].tolist()!r}}})
            assert reply.status_code == 200, reply.text
            print(json.dumps(reply.json()))
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("jax", "jaxlib", "flax"))
        assert loaded == ["jax"] and sys.modules["jax"] is None, loaded
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    served = json.loads(proc.stdout.strip().splitlines()[-1])["predictions"]
    want = jnn.predict(model, params, x)
    np.testing.assert_allclose(served, want[:2], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.load(tmp / "y.npy"), want, rtol=1e-5, atol=1e-7)


def _foreign(path, batch):
    """An ONNX model not written by jnn: y = relu(x), x of shape (batch, 3)."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_an_onnx_model_from_elsewhere_is_served_from_its_graph(tmp):
    _foreign(str(tmp / "relu.onnx"), "n")
    predictor = jnn.export.load(str(tmp / "relu.onnx"))
    assert predictor.input_shape == (None, 3) and predictor.labels is None
    np.testing.assert_array_equal(predictor([[-1.0, 0.5, 2.0]]), [[0.0, 0.5, 2.0]])
    assert "no jnn summary" in predictor.summary()
    _foreign(str(tmp / "fixed.onnx"), 1)
    with pytest.raises(ValueError, match="symbolic leading batch axis"):
        jnn.export.load(str(tmp / "fixed.onnx"))


def ReverseCumsum():
    """A custom layer scanning its time axis backwards (as a Bidirectional RNN's backward pass)."""
    from jax import lax

    def init(key, input_shape):
        return tuple(input_shape), {"decay": jax.random.uniform(key, (input_shape[-1],))}

    def apply(params, x, *, key=None, train=False):
        def step(carry, xt):
            carry = carry * params["decay"][None, :] + xt
            return carry, carry

        _, ys = lax.scan(step, x[:, 0] * 0, jnp.swapaxes(x, 0, 1), reverse=True)
        return jnp.swapaxes(ys, 0, 1)

    return jnn.Layer(init, apply)


def test_a_reverse_scan_converts(tmp):
    model = jnn.serial(jnn.Dense(4), ReverseCumsum(), jnn.Dense(2))
    params, _ = _train(model, (6, 3), np.float32)
    path = str(tmp / "reverse.onnx")
    jnn.export.save_onnx(path, model, params, (-1, 6, 3))
    predictor = jnn.export.load(path)
    for rows in (1, 7, 1000):
        x = _inputs(rows, (6, 3), np.float32, seed=rows)
        want = jnn.predict(model, params, x)
        np.testing.assert_allclose(predictor(x), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
