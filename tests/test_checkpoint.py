"""jnn.checkpoint: round trips, template errors naming paths, corrupt files, atomicity, keep."""

import os
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jnn
from jnn import checkpoint as ckpt


def _state(key=None, widths=(10, 10), optimizer="adam"):
    model = jnn.serial(*(jnn.Dense(n) for n in widths))
    _, params = model.init(jax.random.key(0), (-1, 4))
    key = jax.random.key(7) if key is None else key
    state = jnn.TrainState.create(params, optimizer, key=key)
    return state._replace(model_state={"bn": {"mean": jnp.arange(3.0), "count": jnp.int32(5)}})


def _same(a, b):
    def leaf(u, v):
        if jnp.issubdtype(u.dtype, jax.dtypes.prng_key):
            assert jnp.issubdtype(v.dtype, jax.dtypes.prng_key)
            u, v = jax.random.key_data(u), jax.random.key_data(v)
        assert u.dtype == v.dtype and u.shape == v.shape
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))

    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(leaf, a, b)


@pytest.mark.parametrize("key", [jax.random.key(3), jax.random.PRNGKey(3)], ids=["typed", "raw"])
def test_round_trip_full_state(tmp_path, key):
    state = _state(key)
    state = state._replace(step=jnp.int32(12))
    path = ckpt.save(tmp_path, state, epoch=4, history={"loss": [0.5, 0.25]})
    got = ckpt.restore(path, _state(key))
    _same(got.state, state)
    assert (got.epoch, got.history, got.path) == (4, {"loss": [0.5, 0.25]}, path)
    assert isinstance(got.state.opt_state[0], type(state.opt_state[0]))  # optax NamedTuple back
    # The restored key generates the same numbers.
    a = jax.random.normal(got.state.key, (3,))
    np.testing.assert_array_equal(a, jax.random.normal(state.key, (3,)))


def test_restore_works_under_jit(tmp_path):
    state = _state()
    got = ckpt.restore(ckpt.save(tmp_path, state, epoch=0), state).state
    f = jax.jit(lambda s: jax.tree.map(lambda p: p * 2, s.params))
    _same(f(got), f(state))


def test_shape_mismatch_names_the_path(tmp_path):
    path = ckpt.save(tmp_path, _state(widths=(10, 5)), epoch=1)
    with pytest.raises(ckpt.CheckpointError) as err:
        ckpt.restore(path, _state(widths=(10, 10)))
    msg = str(err.value)
    assert "params['dense_1']['w']: expected (10, 10) float32, got (10, 5) float32" in msg
    assert "opt_state['0']['mu']['dense_1']['w']" in msg  # every mismatch, not just the first


def test_structure_and_dtype_mismatch(tmp_path):
    path = ckpt.save(tmp_path, {"a": jnp.zeros(2), "b": jnp.zeros(2)}, epoch=0)
    with pytest.raises(ckpt.CheckpointError, match=r"missing \['c'\], unexpected \['b'\]"):
        ckpt.restore(path, {"a": jnp.zeros(2), "c": jnp.zeros(2)})
    with pytest.raises(ckpt.CheckpointError, match=r"a: expected \(2,\) int32, got \(2,\) float32"):
        ckpt.restore(path, {"a": jnp.zeros(2, jnp.int32), "b": jnp.zeros(2)})
    with pytest.raises(ckpt.CheckpointError, match=r"structure differs"):
        ckpt.restore(path, _state())


def test_optimizer_mismatch_is_named(tmp_path):
    path = ckpt.save(tmp_path, _state(optimizer="sgd"), epoch=0)
    with pytest.raises(ckpt.CheckpointError, match=r"opt_state\['0'\]"):
        ckpt.restore(path, _state(optimizer="adam"))


def _saved(tmp_path):
    state = _state()
    return state, ckpt.save(tmp_path, state, epoch=1)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b[: len(b) - 7], "truncated"),
        (lambda b: b[:30], "too short"),
        (lambda b: b[:-100] + bytes([b[-100] ^ 1]) + b[-99:], "checksum mismatch"),
        (lambda b: b"PK\x03\x04" + b[4:], "wrong magic"),
        (lambda b: b[:8] + struct.pack("<I", 99) + b[12:], "format version 99"),
        (lambda b: b"", "too short"),
    ],
    ids=["truncated", "header-only", "bitflip", "foreign", "future-version", "empty"],
)
def test_damaged_files_are_refused(tmp_path, damage, message):
    state, path = _saved(tmp_path)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ckpt.CheckpointError, match=message):
        ckpt.restore(path, state)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        ckpt.restore(tmp_path / "epoch_000001.ckpt", {})


def test_crash_mid_write_keeps_previous(tmp_path, monkeypatch):
    state, path = _saved(tmp_path)
    before = path.read_bytes()

    def crash(src, dst):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        ckpt.save(tmp_path, state, epoch=1)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # temp file removed
    # A temp file left by a SIGKILL is ignored, then cleaned by the next save.
    (tmp_path / ".tmp-epoch_abc").write_bytes(b"half a checkpoint")
    assert ckpt.latest(tmp_path) == path
    ckpt.save(tmp_path, state, epoch=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_000001.ckpt", "epoch_000002.ckpt"]


def test_keep_newest(tmp_path):
    state = _state()
    for epoch in range(6):
        ckpt.save(tmp_path, state, epoch=epoch, keep=2)
    assert [p.name for p in ckpt.all_checkpoints(tmp_path)] == [
        "epoch_000004.ckpt",
        "epoch_000005.ckpt",
    ]
    ckpt.save(tmp_path, state, epoch=10, keep=None)
    assert len(ckpt.all_checkpoints(tmp_path)) == 3


def test_restore_latest_skips_corrupt_newest(tmp_path):
    state = _state()
    ckpt.save(tmp_path, state, epoch=1)
    newest = ckpt.save(tmp_path, state, epoch=2)
    newest.write_bytes(newest.read_bytes()[:-1])
    with pytest.warns(UserWarning, match="skipping unusable checkpoint"):
        got = ckpt.restore_latest(tmp_path, state)
    assert got.epoch == 1
    assert ckpt.restore_latest(tmp_path / "nowhere", state) is None


def test_restore_latest_raises_on_template_mismatch(tmp_path):
    ckpt.save(tmp_path, _state(widths=(10, 5)), epoch=1)
    with pytest.raises(ckpt.CheckpointError, match="does not match the template"):
        ckpt.restore_latest(tmp_path, _state())


def test_payload_holds_no_code(tmp_path):
    """A forged payload with a msgpack extension type (how code could hide) is refused."""
    import hashlib

    import msgpack

    state, path = _saved(tmp_path)
    payload = msgpack.packb({"format": "jnn.checkpoint", "x": msgpack.ExtType(42, b"os.system")})
    header = struct.pack(
        "<8sIQ32s", b"JNNCKPT\n", 1, len(payload), hashlib.sha256(payload).digest()
    )
    path.write_bytes(header + payload)
    with pytest.raises(ckpt.CheckpointError):
        ckpt.restore(path, state)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"epoch": -1}, ValueError, "epoch must be an int >= 0"),
        ({"epoch": 1.5}, ValueError, "epoch must be an int"),
        ({"epoch": 1, "keep": 0}, ValueError, "keep must be None or an int >= 1"),
    ],
)
def test_save_arguments(tmp_path, kwargs, error, message):
    with pytest.raises(error, match=message):
        ckpt.save(tmp_path, {"a": jnp.zeros(1)}, **kwargs)


def test_save_refuses_non_array_leaves(tmp_path):
    with pytest.raises(TypeError, match=r"\['f'\] is a function"):
        ckpt.save(tmp_path, {"f": lambda: 0}, epoch=0)
