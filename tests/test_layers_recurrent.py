"""Recurrent layers against PyTorch (same weights mapped across), masks, cells, composition."""

import os
import subprocess
import sys
import textwrap
import traceback

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax.test_util import check_grads

import jnn
import jnn.export

torch.manual_seed(0)
TOL = dict(rtol=1e-5, atol=1e-5)
TORCH = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "simple_rnn": torch.nn.RNN}
JNN = {"lstm": jnn.LSTM, "gru": jnn.GRU, "simple_rnn": jnn.SimpleRNN}


def from_torch(module, kind, suffix=""):
    """jnn params of a torch RNN/LSTM/GRU layer: the documented mapping, exactly.

    ``w_ih = weight_ih.T`` and ``w_hh = weight_hh.T`` (gates side by side in torch's
    order: LSTM (i, f, g, o), GRU (r, z, n)); LSTM and SimpleRNN sum torch's two biases
    into ``b``; the GRU keeps both (``b_ih``, ``b_hh``): its reset gate multiplies
    ``h @ w_hh + b_hh``. ``suffix="_reverse"`` reads a bidirectional module's backward
    direction.
    """
    get = lambda name: getattr(module, f"{name}_l0{suffix}").detach().numpy()  # noqa: E731
    params = {"w_ih": get("weight_ih").T, "w_hh": get("weight_hh").T}
    if kind == "gru":
        params["b_ih"], params["b_hh"] = get("bias_ih"), get("bias_hh")
    else:
        params["b"] = get("bias_ih") + get("bias_hh")
    return jax.tree.map(jnp.asarray, params)


def torch_layer(kind, features, hidden, **kwargs):
    return TORCH[kind](features, hidden, batch_first=True, **kwargs)


def inputs(batch, steps, features, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, steps, features)).astype(np.float32)


def t(a):
    return torch.from_numpy(np.asarray(a))


def close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), **TOL)


@pytest.mark.parametrize("kind", ["lstm", "gru", "simple_rnn"])
@pytest.mark.parametrize("batch,steps", [(1, 1), (3, 5), (2, 17)])
def test_outputs_and_final_state_equal_torch(kind, batch, steps):
    ref = torch_layer(kind, 4, 6)
    layer = JNN[kind](6, return_sequences=True, return_state=True)
    x = inputs(batch, steps, 4)
    ys, state = layer.apply(from_torch(ref, kind), x)
    with torch.no_grad():
        ys_ref, state_ref = ref(t(x))
    close(ys, ys_ref)
    if kind == "lstm":
        close(state[0], state_ref[0][0])  # h
        close(state[1], state_ref[1][0])  # c
    else:
        close(state, state_ref[0])
    last = JNN[kind](6).apply(from_torch(ref, kind), x)  # return_sequences=False
    close(last, ys_ref[:, -1])


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_initial_state_equals_torch(kind):
    ref = torch_layer(kind, 3, 5)
    x = inputs(2, 4, 3)
    h0 = np.random.default_rng(1).normal(size=(2, 5)).astype(np.float32)
    c0 = np.random.default_rng(2).normal(size=(2, 5)).astype(np.float32)
    state0 = (h0, c0) if kind == "lstm" else h0
    torch_state0 = (t(h0)[None], t(c0)[None]) if kind == "lstm" else t(h0)[None]
    ys = JNN[kind](5, return_sequences=True).apply(from_torch(ref, kind), (x, None, state0))
    with torch.no_grad():
        ys_ref, _ = ref(t(x), torch_state0)
    close(ys, ys_ref)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("batch,steps", [(1, 3), (4, 6)])
def test_bidirectional_equals_torch(kind, batch, steps):
    ref = torch_layer(kind, 3, 5, bidirectional=True)
    bi = jnn.Bidirectional(JNN[kind](5, return_sequences=True, return_state=True))
    params = {"forward": from_torch(ref, kind), "backward": from_torch(ref, kind, "_reverse")}
    x = inputs(batch, steps, 3)
    ys, (s_f, s_b) = bi.apply(params, x)
    with torch.no_grad():
        ys_ref, s_ref = ref(t(x))
    close(ys, ys_ref)  # (batch, T, 2H): forward features first, as torch
    h_ref = s_ref[0] if kind == "lstm" else s_ref
    close(s_f[0] if kind == "lstm" else s_f, h_ref[0])
    close(s_b[0] if kind == "lstm" else s_b, h_ref[1])
    # reverse=True alone is torch's backward direction.
    backward = JNN[kind](5, return_sequences=True, reverse=True)
    close(backward.apply(params["backward"], x), ys_ref[..., 5:])
    # Without return_sequences: forward's last output and backward's output at step 0.
    last = jnn.Bidirectional(JNN[kind](5)).apply(params, x)
    close(last, np.concatenate([ys_ref[:, -1, :5], ys_ref[:, 0, 5:]], axis=-1))
    summed = jnn.Bidirectional(JNN[kind](5, return_sequences=True), merge="sum")
    close(summed.apply(params, x), ys_ref[..., :5] + ys_ref[..., 5:])


def packed_reference(ref, x, lengths, kind):
    """torch on packed padded sequences: outputs zero-padded to T, final states."""
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        t(x), torch.tensor(lengths), batch_first=True, enforce_sorted=False
    )
    with torch.no_grad():
        out, state = ref(packed)
    ys, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return ys, (state[0] if kind == "lstm" else state)


@pytest.mark.parametrize("kind", ["lstm", "gru", "simple_rnn"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padded_sequences_equal_torch_packed(kind, bidirectional):
    lengths = [7, 1, 4, 7, 2]
    x = inputs(len(lengths), 7, 3)
    x[np.arange(7)[None, :] >= np.array(lengths)[:, None]] = 9.0  # junk in the padding
    ref = torch_layer(kind, 3, 4, bidirectional=bidirectional)
    ys_ref, h_ref = packed_reference(ref, x, lengths, kind)
    mask = jnn.layers.sequence_mask(np.array(lengths), 7)
    base = JNN[kind](4, return_sequences=True, return_state=True)
    if bidirectional:
        layer = jnn.Bidirectional(base)
        params = {"forward": from_torch(ref, kind), "backward": from_torch(ref, kind, "_reverse")}
    else:
        layer, params = base, from_torch(ref, kind)
    (ys, mask_out), state = layer.apply(params, (x, mask))
    close(ys, ys_ref)  # zeros at padded steps, like pad_packed_sequence
    assert mask_out is mask  # the mask travels with the sequence
    states = state if bidirectional else (state,)
    for i, s in enumerate(states):
        close(s[0] if kind == "lstm" else s, h_ref[i])  # state after each last real step


def test_masked_steps_neither_update_state_nor_output():
    layer = jnn.LSTM(5, return_sequences=True, return_state=True)
    _, params = layer.init(jax.random.key(0), (-1, 6, 3))
    x = inputs(2, 6, 3)
    mask = np.array([[1, 1, 0, 1, 0, 1], [1, 1, 1, 1, 1, 1]], bool)  # holes, not only padding
    (ys, _), state = layer.apply(params, (x, mask))
    np.testing.assert_array_equal(np.asarray(ys)[~mask], 0.0)
    # The same as running the real steps only.
    kept = x[0][mask[0]][None]
    ys_kept, state_kept = layer.apply(params, kept)
    close(np.asarray(ys)[0][mask[0]], ys_kept[0])
    close(state[0][0], state_kept[0][0])
    # Changing the input at masked steps changes nothing.
    x2 = x.copy()
    x2[~mask] = -1e3
    (ys2, _), state2 = layer.apply(params, (x2, mask))
    np.testing.assert_array_equal(ys, ys2)
    np.testing.assert_array_equal(state[1], state2[1])


def test_stacked_masked_layers_in_serial_match_unpadded_rows():
    model = jnn.serial(jnn.GRU(6, return_sequences=True), jnn.GRU(4), jnn.Dense(1))
    _, params = model.init(jax.random.key(0), ((-1, 5, 3), (-1, 5)))
    x = inputs(3, 5, 3)
    lengths = np.array([5, 2, 3])
    out = model.apply(params, (x, jnn.layers.sequence_mask(lengths, 5)))
    for i, n in enumerate(lengths):
        close(out[i], model.apply(params, x[i : i + 1, :n])[0])


def test_hand_loop_over_the_cell_equals_the_layer():
    cell, layer = jnn.LSTMCell(6), jnn.LSTM(6, return_sequences=True, return_state=True)
    (_, state_shape), params = cell.init(jax.random.key(0), (-1, 3))
    assert state_shape == ((-1, 6), (-1, 6))
    assert cell.init(jax.random.key(0), (None, 3))[0] == ((-1, 6), state_shape)
    assert cell.init(jax.random.key(0), ((None, 3), state_shape))[0] == ((-1, 6), state_shape)
    _, layer_params = layer.init(jax.random.key(0), (-1, 4, 3))
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, layer_params)
    x = inputs(2, 4, 3)

    def step(state, x_t):
        y, state = cell.apply(params, (x_t, state))
        return state, y

    zeros = jnp.zeros((2, 6))
    state, ys = jax.lax.scan(step, (zeros, zeros), jnp.swapaxes(x, 0, 1))
    ys_layer, state_layer = layer.apply(params, x)
    close(jnp.swapaxes(ys, 0, 1), ys_layer)
    close(state[1], state_layer[1])
    # No state given: a zero state.
    y0, _ = cell.apply(params, x[:, 0])
    close(y0, ys[0])


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_cells_equal_torch_cells(kind):
    ref = {"lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}[kind](3, 4)
    cell = {"lstm": jnn.LSTMCell, "gru": jnn.GRUCell}[kind](4)
    params = {"w_ih": ref.weight_ih.detach().numpy().T, "w_hh": ref.weight_hh.detach().numpy().T}
    b_ih, b_hh = ref.bias_ih.detach().numpy(), ref.bias_hh.detach().numpy()
    params |= {"b_ih": b_ih, "b_hh": b_hh} if kind == "gru" else {"b": b_ih + b_hh}
    x, h = inputs(1, 2, 3)[0], inputs(1, 2, 4, seed=1)[0]
    state = (h, h * 0.5) if kind == "lstm" else h
    y, new = cell.apply(params, (x, state))
    with torch.no_grad():
        out = ref(t(x), (t(h), t(h * 0.5)) if kind == "lstm" else t(h))
    close(y, out[0] if kind == "lstm" else out)
    if kind == "lstm":
        close(new[1], out[1])


@pytest.mark.parametrize("make", [jnn.LSTMCell, jnn.GRUCell])
def test_cell_gradients_match_finite_differences(make):
    with jax.enable_x64(True):
        cell = make(3, dtype=jnp.float64)
        _, params = cell.init(jax.random.key(0), (-1, 2))
        params = jax.tree.map(lambda p: p + 0.1, params)  # nonzero biases
        x = jnp.asarray(inputs(2, 1, 2)[:, 0], jnp.float64)
        h = jnp.full((2, 3), 0.3, jnp.float64)
        state = (h, -h) if make is jnn.LSTMCell else h

        @jax.jit
        def f(params, x, state):
            return cell.apply(params, (x, state))

        check_grads(f, (params, x, state), order=1, modes=["fwd", "rev"])


@pytest.mark.parametrize("make", [jnn.LSTM, jnn.GRU, jnn.SimpleRNN])
def test_bfloat16_inputs_compute_in_bfloat16_with_float32_params(make):
    """Params stay float32; the recurrence (input projection, bias, state) runs in the
    inputs' dtype, and agrees with the float32 computation to bfloat16's precision."""
    layer = make(6, return_sequences=True)
    _, params = layer.init(jax.random.key(0), (-1, 5, 3))
    x = jax.random.normal(jax.random.key(1), (2, 5, 3))
    params = jax.tree.map(lambda a: a + 0.1, params)  # non-zero biases
    low = layer.apply(params, x.astype(jnp.bfloat16))
    assert low.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(low, np.float32), layer.apply(params, x), atol=0.05)


def test_extreme_inputs_stay_finite():
    layer = jnn.LSTM(4, return_sequences=True)
    _, params = layer.init(jax.random.key(0), (-1, 3, 2))
    x = jnp.array([[[1e4, -1e4], [-1e30, 1e30], [0.0, 0.0]]], jnp.float32)
    ys = layer.apply(params, x)
    grads = jax.grad(lambda p: layer.apply(p, x).sum())(params)
    assert bool(jnp.isfinite(ys).all())
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))
    assert float(jnp.abs(ys).max()) <= 1.0  # h = o * tanh(c)


def test_keras_like_initializers():
    _, p = jnn.LSTM(8).init(jax.random.key(0), (-1, 5, 3))
    b = np.asarray(p["b"])
    np.testing.assert_array_equal(b[8:16], 1.0)  # forget gate (i, f, g, o): bias 1
    np.testing.assert_array_equal(np.delete(b, np.s_[8:16]), 0.0)
    w_hh = np.asarray(p["w_hh"])  # (H, 4H), orthogonal rows
    np.testing.assert_allclose(w_hh @ w_hh.T, np.eye(8), atol=1e-5)
    limit = np.sqrt(6 / (3 + 32))  # glorot-uniform over the (F, 4H) kernel
    assert np.abs(np.asarray(p["w_ih"])).max() <= limit
    assert np.abs(np.asarray(p["w_ih"])).max() > 0.8 * limit
    _, p = jnn.LSTM(8, unit_forget_bias=False).init(jax.random.key(0), (-1, 5, 3))
    np.testing.assert_array_equal(p["b"], 0.0)
    _, g = jnn.GRU(8).init(jax.random.key(0), (-1, 5, 3))
    assert {k: v.shape for k, v in g.items()} == {
        "w_ih": (3, 24), "w_hh": (8, 24), "b_ih": (24,), "b_hh": (24,)
    }  # fmt: skip


def test_init_shapes_for_every_input_form():
    lstm = jnn.LSTM(4, return_sequences=True, return_state=True)
    shape, _ = lstm.init(jax.random.key(0), (None, None, 3))  # unknown batch and length
    assert shape == ((-1, -1, 4), ((-1, 4), (-1, 4)))
    shape, _ = lstm.init(jax.random.key(0), ((-1, 7, 3), (-1, 7)))
    assert shape == (((-1, 7, 4), (-1, 7)), ((-1, 4), (-1, 4)))
    shape, _ = jnn.GRU(4).init(jax.random.key(0), ((-1, 7, 3), None, (-1, 4)))
    assert shape == (-1, 4)
    bi = jnn.Bidirectional(jnn.GRU(4, return_state=True))
    assert bi.init(jax.random.key(0), (-1, 7, 3))[0] == ((-1, 8), ((-1, 4), (-1, 4)))


def test_jit_vmap_grad_compose():
    layer = jnn.Bidirectional(jnn.LSTM(4, return_sequences=True))
    apply = jax.jit(layer.apply)
    _, params = layer.init(jax.random.key(0), (-1, 5, 3))
    x = jnp.asarray(inputs(2, 5, 3))
    mask = jnn.layers.sequence_mask(jnp.array([5, 3]), 5)
    close(apply(params, (x, mask))[0], layer.apply(params, (x, mask))[0])  # jit == eager
    # vmap over an ensemble of params, and over an extra leading batch axis of the inputs.
    keys = jax.random.split(jax.random.key(1), 3)
    stacked = jax.vmap(lambda k: layer.init(k, (-1, 5, 3))[1])(keys)
    outs = jax.jit(jax.vmap(apply, in_axes=(0, None)))(stacked, x)
    assert outs.shape == (3, 2, 5, 8)
    close(outs[1], apply(jax.tree.map(lambda p: p[1], stacked), x))
    per_group = jax.jit(jax.vmap(apply, in_axes=(None, 0)))(params, jnp.stack([x, -x]))
    close(per_group[1], apply(params, -x))
    close(apply(params, jnp.stack([x, -x])), per_group)  # extra leading batch axes work too
    # grad: finite, and zero for the padded inputs.
    gx = jax.jit(jax.grad(lambda x: layer.apply(params, (x, mask))[0].sum()))(x)
    assert bool(jnp.isfinite(gx).all())
    assert bool((gx[0] != 0).all()) and bool((gx[1, :3] != 0).all())
    np.testing.assert_array_equal(np.asarray(gx)[1, 3:], 0.0)


def test_trains_with_fit():
    # Sign of the sum of a sequence: needs the whole sequence.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 6, 1)).astype(np.float32)
    y = (x.sum(axis=(1, 2)) > 0).astype(np.float32)[:, None]
    model = jnn.serial(jnn.GRU(8), jnn.Dense(1))
    _, params = model.init(jax.random.key(0), (-1, 6, 1))
    result = jnn.fit(model, params, (x, y), loss="bce_with_logits", optimizer="adam",
                     learning_rate=1e-2, epochs=15, batch_size=32, key=jax.random.key(1),
                     metrics=["binary_accuracy"], verbose=0)  # fmt: skip
    assert result.history["loss"][-1] < 0.5 * result.history["loss"][0]


def test_summary_lists_both_directions():
    model = jnn.serial(jnn.Bidirectional(jnn.LSTM(8, return_sequences=True)), jnn.GRU(4))
    rows = jnn.summary(model, (-1, 5, 3)).rows
    assert [(r.depth, r.name, r.output_shape) for r in rows] == [
        (0, "serial", (-1, 4)),
        (1, "bidirectional_0", (-1, 5, 16)),
        (2, "forward", (-1, 5, 8)),
        (2, "backward", (-1, 5, 8)),  # fed the wrapper's input, not forward's output
        (1, "gru_0", (-1, 4)),
    ]
    assert rows[3].param_shapes == {"b": (32,), "w_hh": (8, 32), "w_ih": (3, 32)}
    assert rows[1].params == rows[2].params + rows[3].params


def test_export_runs_in_a_fresh_process_without_the_model_code(tmp_path):
    model = jnn.serial(jnn.LSTM(8, return_sequences=True), jnn.LSTM(8), jnn.Dense(2))
    _, params = model.init(jax.random.key(0), (-1, 6, 3))
    path = tmp_path / "lstm.jnn"
    jnn.export.save(path, model, params, (-1, 6, 3), platforms=(jax.default_backend(),))
    x = inputs(5, 6, 3)
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(
        f"""
        import numpy as np
        from jnn.export import load
        import jnn.layers._cells as cells, jnn.layers._recurrent as recurrent

        def unavailable(*args, **kwargs):
            raise RuntimeError("the recurrent layers' Python code ran")

        recurrent.run = cells.lstm = unavailable  # the file must not need them
        out = load({str(path)!r})(np.load({str(tmp_path / "x.npy")!r}))
        np.save({str(tmp_path / "y.npy")!r}, out)
        """
    )
    env = {**os.environ, "JAX_PLATFORMS": jax.default_backend()}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    close(np.load(tmp_path / "y.npy"), model.apply(params, x))


BAD = [
    (lambda: jnn.LSTM(4).apply(PARAMS, np.ones((2, 3), np.float32)), ValueError,
     r"expected input of shape \(batch, T, features\), got \(2, 3\).*x\[None\]"),
    (lambda: jnn.LSTM(4).init(jax.random.key(0), (-1, 3)), ValueError,
     r"expected an input shape \(batch, T, features\), got \(-1, 3\)"),
    (lambda: jnn.LSTM(4).apply(PARAMS, (np.ones((2, 5, 3), np.float32), np.ones((2, 4), bool))),
     ValueError, r"mask must have shape \(\*batch, T\) = \(2, 5\) for x of shape \(2, 5, 3\), "
     r"got \(2, 4\)"),
    (lambda: jnn.LSTM(4).apply(PARAMS, (np.ones((2, 5, 3), np.float32), np.ones((2, 5)))),
     TypeError, r"mask must be boolean.*sequence_mask"),
    (lambda: jnn.LSTM(4).init(jax.random.key(0), ((-1, 5, 3), (-1, 6))), ValueError,
     r"mask must have shape \(\*batch, T\) = \(-1, 5\).*got \(-1, 6\)"),
    (lambda: jnn.LSTM(4).apply(PARAMS, (np.ones((2, 5, 3), np.float32), None, np.zeros((2, 4)))),
     ValueError, r"state must be a pair \(h, c\) of shapes \(\(2, 4\), \(2, 4\)\)"),
    (lambda: jnn.LSTM(4).apply(PARAMS, (np.ones((2, 5, 3), np.float32), None,
                                        (np.zeros((3, 4)), np.zeros((3, 4))))),
     ValueError, r"shape \(2, 4\) each .*got \(\(3, 4\), \(3, 4\)\)"),
    (lambda: jnn.LSTM(4).apply(PARAMS, np.ones((2, 5, 7), np.float32)), ValueError,
     r"expected inputs with 3 features.*got shape \(2, 5, 7\)"),
    (lambda: jnn.LSTM(4).apply(PARAMS, (1, 2, 3, 4)), ValueError,
     r"expected x, \(x, mask\) or \(x, mask, initial_state\), got a tuple of length 4"),
    (lambda: jnn.LSTM(0), ValueError, r"features must be a positive int, got 0"),
    (lambda: jnn.GRU(True), ValueError, r"features must be a positive int, got True"),
    (lambda: jnn.GRU(4, return_sequences="yes"), TypeError, r"return_sequences must be True"),
    (lambda: jnn.Bidirectional(jnn.Dense(3)), TypeError,
     r"expected jnn.SimpleRNN, jnn.LSTM or jnn.GRU, got a 'dense' layer"),
    (lambda: jnn.Bidirectional(jnn.LSTM(3), merge="concatenate"), ValueError,
     r"merge must be one of .*Did you mean 'concat'"),
    (lambda: jnn.layers.sequence_mask(np.array([3, 9]), 5), ValueError,
     r"lengths must lie in \[0, 5\], got values in \[3, 9\]"),
    (lambda: jnn.layers.sequence_mask(np.array([1.5]), 5), TypeError, "must be integers"),
    (lambda: jnn.LSTMCell(4).apply(PARAMS, (np.ones((2, 3), np.float32), np.zeros((2, 4)))),
     ValueError, r"state must be a pair \(h, c\)"),
]  # fmt: skip
PARAMS = jnn.LSTM(4).init(jax.random.key(0), (-1, 5, 3))[1]


@pytest.mark.parametrize("make,error,match", BAD)
def test_bad_input_is_a_clear_error(make, error, match):
    with pytest.raises(error, match=match) as info:
        make()
    last = traceback.extract_tb(info.tb)[-1].filename  # raised by jnn, not deep in JAX
    assert "/jnn/" in last and "/jax/" not in last, last


def test_numpy_integer_features_are_accepted():
    shape, _ = jnn.LSTM(np.int64(3)).init(jax.random.key(0), (-1, 2, 2))
    assert shape == (-1, 3) and type(shape[-1]) is int


@pytest.mark.parametrize("ctor", [jnn.SimpleRNN, jnn.LSTM, jnn.GRU])
def test_each_initializer_argument_reaches_its_parameter(ctor):
    """kernel_init -> w_ih, recurrent_init -> w_hh, bias_init -> every bias (but LSTM's
    forget-gate bias, which starts at 1 as in Keras's unit_forget_bias)."""
    inits = dict(
        kernel_init=jax.nn.initializers.constant(0.5),
        recurrent_init=jax.nn.initializers.constant(0.25),
        bias_init=jax.nn.initializers.constant(0.125),
    )
    _, params = ctor(4, **inits).init(jax.random.key(0), (-1, 6, 3))
    np.testing.assert_array_equal(params["w_ih"], np.full(params["w_ih"].shape, 0.5))
    np.testing.assert_array_equal(params["w_hh"], np.full(params["w_hh"].shape, 0.25))
    biases = [v for k, v in params.items() if k.startswith("b")]
    assert biases
    for b in biases:
        assert np.isin(np.asarray(b), [0.125, 1.0]).all(), b
        assert (np.asarray(b) == 0.125).any()
