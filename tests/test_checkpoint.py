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
    """A forged payload with a msgpack extension type (how code could hide) is refused,
    for that reason: once in a bare payload, once hidden in an otherwise valid state."""
    import hashlib

    import msgpack
    from flax import serialization

    state, path = _saved(tmp_path)
    valid = path.read_bytes()
    header = struct.Struct("<8sIQ32s")

    def forge(payload):
        digest = hashlib.sha256(payload).digest()
        path.write_bytes(header.pack(b"JNNCKPT\n", 1, len(payload), digest) + payload)

    forge(msgpack.packb({"format": "jnn.checkpoint", "x": msgpack.ExtType(42, b"os.system")}))
    with pytest.raises(ckpt.CheckpointError, match="malformed payload: it holds a ExtType"):
        ckpt.restore(path, state)
    content = serialization.msgpack_restore(valid[header.size :])
    content["state"]["params"]["dense_0"]["b"] = msgpack.ExtType(42, b"os.system")
    forge(serialization.msgpack_serialize(content))
    with pytest.raises(ckpt.CheckpointError, match="malformed payload: it holds a ExtType"):
        ckpt.restore(path, state)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"epoch": -1}, ValueError, "epoch must be an int >= 0, got -1"),
        ({"epoch": 1.5}, ValueError, "epoch must be an int"),
        ({"epoch": 1, "keep": 0}, ValueError, "keep must be a positive int or None, got 0"),
        ({"epoch": 1, "keep": True}, ValueError, "a bool is not a size"),
        ({"epoch": np.int64(2), "keep": np.int32(1)}, None, None),
    ],
)
def test_save_arguments(tmp_path, kwargs, error, message):
    if error is None:  # numpy integers are ints
        assert ckpt.save(tmp_path, {"a": jnp.zeros(1)}, **kwargs).name == "epoch_000002.ckpt"
        return
    with pytest.raises(error, match=message):
        ckpt.save(tmp_path, {"a": jnp.zeros(1)}, **kwargs)


def test_save_refuses_non_array_leaves(tmp_path):
    with pytest.raises(TypeError, match=r"\['f'\] is a function"):
        ckpt.save(tmp_path, {"f": lambda: 0}, epoch=0)


def _corrupt(path):
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))


def test_keep_counts_only_good_checkpoints(tmp_path):
    """A corrupt newest-numbered file is not counted, not deleted, and never evicts a good one."""
    state = _state()
    bad = ckpt.save(tmp_path, state, epoch=99)
    _corrupt(bad)
    for epoch in range(1, 4):
        with pytest.warns(UserWarning, match=r"leaving an unusable file alone.*epoch_000099"):
            written = ckpt.save(tmp_path, state, epoch=epoch, keep=1)
        assert written.exists()  # keep=1 never deletes the checkpoint it just wrote
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_000003.ckpt", "epoch_000099.ckpt"]
    with pytest.warns(UserWarning, match="skipping unusable checkpoint"):
        assert ckpt.restore_latest(tmp_path, state).epoch == 3
    # keep=2 keeps the two newest GOOD ones, whatever lies between them.
    with pytest.warns(UserWarning, match="epoch_000099"):
        ckpt.save(tmp_path, state, epoch=4, keep=2)
    (tmp_path / "epoch_000005.ckpt").write_bytes(b"JNNCKPT\n garbage")
    with pytest.warns(UserWarning, match="unusable") as record:
        ckpt.save(tmp_path, state, epoch=6, keep=2)
    warned = " ".join(str(w.message) for w in record)
    assert "epoch_000005.ckpt: not a jnn checkpoint" in warned and "epoch_000099" in warned
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["epoch_000004.ckpt", "epoch_000005.ckpt", "epoch_000006.ckpt", bad.name]


def test_keep_reverifies_a_file_damaged_after_it_was_written(tmp_path):
    state = _state()
    first = ckpt.save(tmp_path, state, epoch=1, keep=2)
    ckpt.save(tmp_path, state, epoch=2, keep=2)
    _corrupt(tmp_path / "epoch_000002.ckpt")  # damaged after pruning had verified it
    with pytest.warns(UserWarning, match="alone.*epoch_000002.ckpt: checksum mismatch"):
        ckpt.save(tmp_path, state, epoch=3, keep=2)
    assert first.exists()  # still one of the two newest good ones


def test_directory_problems_are_checkpoint_errors(tmp_path):
    state = _state()
    (tmp_path / "epoch_000001.ckpt").mkdir()  # a directory where a file is expected
    with pytest.raises(ckpt.CheckpointError, match=r"holds epoch_000001.ckpt, which is not a file"):
        ckpt.check_directory(tmp_path)
    with pytest.raises(ckpt.CheckpointError, match="not a file"):
        ckpt.save(tmp_path, state, epoch=1)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    with pytest.raises(ckpt.CheckpointError, match=r"notes.txt is a file, not a directory"):
        ckpt.save(a_file, state, epoch=1)
    with pytest.raises(TypeError, match="checkpoint_dir must be a path, got int"):
        ckpt.check_directory(3)
    # restore_latest skips the directory (a warning), it does not crash on it.
    with pytest.warns(UserWarning, match="is a directory"):
        assert ckpt.restore_latest(tmp_path, state) is None


def test_restore_latest_decides_on_the_error_type(tmp_path, monkeypatch):
    """Mismatch raises, damage falls back: decided by type, whatever the message says."""
    state = _state()
    ckpt.save(tmp_path, state, epoch=1)
    ckpt.save(tmp_path, state, epoch=2)

    def damaged(path, template):
        if path.name == "epoch_000002.ckpt":
            raise ckpt.CheckpointError("does not match the template (but only damaged)")
        return original(path, template)

    original = ckpt.restore
    monkeypatch.setattr(ckpt, "restore", damaged)
    with pytest.warns(UserWarning, match="skipping"):
        assert ckpt.restore_latest(tmp_path, state).epoch == 1
    monkeypatch.undo()
    with pytest.raises(ckpt.CheckpointMismatchError, match="does not match the template"):
        ckpt.restore_latest(tmp_path, _state(widths=(10, 5)))


def test_files_of_format_1_still_load():
    """A checkpoint written by the first release (tests/data) restores unchanged."""
    from pathlib import Path

    path = Path(__file__).parent / "data" / "checkpoint_v1.ckpt"
    template = {"w": jnp.zeros((2, 3)), "key": jax.random.key(0), "step": jnp.int32(0)}
    got = ckpt.restore(path, template)
    np.testing.assert_array_equal(got.state["w"], np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(
        jax.random.key_data(got.state["key"]), jax.random.key_data(jax.random.key(5))
    )
    assert (int(got.state["step"]), got.epoch, got.history) == (7, 2, {"loss": [0.5, 0.25]})


def test_checkpoints_get_ordinary_file_permissions(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    path = ckpt.save(tmp_path, _state(), epoch=1)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
