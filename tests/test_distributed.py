"""jnn.distributed and fit/evaluate/predict(mesh=...).

The multi-device and multi-process checks run in subprocesses (4 forced CPU
devices; two processes joined by jax.distributed on 127.0.0.1), so the rest of
the suite keeps its single device.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jnn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "_distributed_worker.py")
sys.path.insert(0, os.path.join(ROOT, "tests"))
from _distributed_worker import (  # noqa: E402
    CKPT_FIT,
    SEED_NET_FIT,
    STREAM_FIT,
    global_batches,
    seed_problem,
)

TIMEOUT = 240  # seconds, per subprocess: a hang fails the test instead of the suite


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, **extra)
    return env


def _close(a, b, tol=1e-5):
    """Trees equal to ``tol``; JSON lists (from the subprocesses) count as leaves."""

    def close(u, v):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=tol, atol=tol)

    jax.tree.map(close, a, b, is_leaf=lambda v: isinstance(v, list))


# --------------------------------------------------------------------------- one device


def test_mesh_on_one_device_matches_no_mesh():
    model, params, x, y = seed_problem()
    kw = dict(SEED_NET_FIT, key=jax.random.key(1))
    ref = jnn.fit(model, params, (x, y), **kw)
    res = jnn.fit(model, params, (x, y), mesh="auto", param_sharding="fsdp", **kw)
    _close(ref.params, res.params, 1e-6)
    assert res.history.keys() == ref.history.keys()
    for k in ref.history:
        assert res.history[k] == pytest.approx(ref.history[k]), k
    assert jnn.evaluate(model, res.params, (x, y), loss="bce", mesh="auto") == pytest.approx(
        jnn.evaluate(model, ref.params, (x, y), loss="bce")
    )
    pred = jnn.predict(model, res.params, x, batch_size=24, mesh="auto")
    np.testing.assert_allclose(pred, jnn.predict(model, ref.params, x), atol=1e-6)
    # What comes back is ordinary arrays: they compose with jit and grad.
    g = jax.jit(jax.grad(lambda p: jnp.sum(model.apply(p, x))))(res.params)
    assert jax.tree.structure(g) == jax.tree.structure(params)
    assert np.isfinite(np.asarray(g["dense_0"]["w"])).all()


def test_bad_mesh_arguments_are_clear_errors():
    model, params, x, y = seed_problem()
    kw = dict(SEED_NET_FIT, key=jax.random.key(1))
    with pytest.raises(TypeError, match=r"jax\.sharding\.Mesh"):
        jnn.fit(model, params, (x, y), mesh=jax.devices(), **kw)
    with pytest.raises(ValueError, match="'auto'"):
        jnn.predict(model, params, x, mesh="all")
    with pytest.raises(ValueError, match="needs a mesh"):
        jnn.fit(model, params, (x, y), param_sharding="fsdp", **kw)
    with pytest.raises(ValueError, match="'replicated' or 'fsdp'"):
        jnn.evaluate(model, params, (x, y), loss="bce", mesh="auto", param_sharding="zero3")
    mesh2d = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ("a", "b"))
    with pytest.raises(ValueError, match="axis named 'data'"):
        jnn.fit(model, params, (x, y), mesh=mesh2d, **kw)


def test_fsdp_rule_and_helpers():
    from jax.sharding import PartitionSpec as P

    from jnn.distributed import _fsdp_spec

    assert _fsdp_spec((12, 16), 4, "data") == P(None, "data")  # the largest divisible axis
    assert _fsdp_spec((10, 10), 4, "data") == P()  # none divides: replicated
    assert _fsdp_spec((), 4, "data") == P()
    assert _fsdp_spec((8,), 1, "data") == P()
    np.testing.assert_array_equal(jnn.distributed.process_shard(np.arange(10)), np.arange(10))
    tree = {"w": jnp.ones((3, 2)), "k": jax.random.key(0)}
    placed = jnn.distributed.shard_params(tree, jnn.distributed.make_mesh(), fsdp=True)
    got = jnn.distributed.gather(placed)
    np.testing.assert_array_equal(got["w"], np.ones((3, 2)))
    np.testing.assert_array_equal(got["k"], jax.random.key_data(jax.random.key(0)))


# --------------------------------------------------------------------------- 4 devices


def test_four_devices_data_parallel_and_fsdp(tmp_path):
    # XLA dumps the optimized HLO of the compiled epochs: the public way to see that the
    # gradient all-reduce is XLA's (no private engine call in the worker).
    dump = tmp_path / "hlo"
    env = _env(
        XLA_FLAGS="--xla_force_host_platform_device_count=4 "
        f"--xla_dump_to={dump} --xla_dump_hlo_as_text --xla_dump_hlo_module_re=.*epoch.*"
    )
    proc = subprocess.run(
        [sys.executable, WORKER, "devices", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads((tmp_path / "devices.json").read_text())
    for ps in ("replicated", "fsdp"):
        _close(rep[ps]["params"], rep["ref"]["params"])
        for k, v in rep["ref"]["history"].items():
            np.testing.assert_allclose(rep[ps]["history"][k], v, rtol=1e-5, atol=1e-6)
        assert rep[ps]["evaluate"] == pytest.approx(rep["ref_evaluate"], rel=1e-5)
        np.testing.assert_allclose(rep[ps]["predict"], rep["ref_predict"], atol=1e-5)
    replicated = rep["replicated"]["shards"]["params"]
    assert replicated["dense_0"]["w"] == {
        "spec": [],
        "shard_shapes": [[12, 16]] * 4,
        "devices": 4,
    }
    fsdp = rep["fsdp"]["shards"]
    # Each device holds a quarter of every divisible leaf, params and Adam moments alike.
    for tree in (fsdp["params"], fsdp["mu"]):
        assert tree["dense_0"]["w"]["shard_shapes"] == [[12, 4]] * 4
        assert tree["dense_0"]["w"]["devices"] == 4
        assert tree["dense_1"]["w"]["shard_shapes"] == [[4, 8]] * 4
        assert tree["dense_1"]["b"]["shard_shapes"] == [[2]] * 4
        assert tree["dense_2"]["b"]["spec"] == []  # (1,): replicated
    assert "multiple of the 4 devices" in rep["bad_batch_error"]
    _close(rep["stream"]["fsdp"], rep["stream"]["ref"])
    assert rep["stream"]["spec"] == [None, "data"]
    assert "batch of 10 rows per process" in rep["stream_bad_batch_error"]
    assert "multiple of 4 rows" in rep["stream_bad_batch_error"]
    optimized = sorted(dump.glob("*epoch*after_optimizations.txt"))
    assert optimized, sorted(p.name for p in dump.iterdir())[:20]
    assert any("all-reduce" in p.read_text() for p in optimized)


# --------------------------------------------------------------------------- 2 processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_agree_with_one(tmp_path):
    model, params, x, y = seed_problem()
    # A single-process checkpoint for the two processes to restore and train on.
    with open(tmp_path / "single.msgpack", "wb") as f:
        f.write(flax.serialization.to_bytes(params))
    procs = _two_processes("process", tmp_path)
    try:  # the single-process reference, computed while the two processes run
        ref = jnn.fit(model, params, (x, y), key=jax.random.key(1), **SEED_NET_FIT)
        more = jnn.fit(model, params, (x, y), key=jax.random.key(2), **SEED_NET_FIT | {"epochs": 1})
        ref_eval = jnn.evaluate(model, ref.params, (x, y), loss="bce")
        ref_pred = jnn.predict(model, ref.params, x)
        sref = jnn.fit(model, params, global_batches(x, y), key=jax.random.key(3), **STREAM_FIT)
        sref_eval = jnn.evaluate(model, sref.params, global_batches(x, y), loss="bce")
        sref_pred = jnn.predict(model, sref.params, x)
        sweep = jnn.experiments.sweep(model, (x, y), loss="bce", seeds=[0, 1, 2], batch_size=16)
    finally:
        codes, logs = _wait(procs)
    assert codes == [0, 0], logs

    reports = [json.loads((tmp_path / f"process{i}.json").read_text()) for i in (0, 1)]
    # The multi-process checkpoint restores here, in one process, to the same params.
    with open(tmp_path / "multi.msgpack", "rb") as f:
        restored = flax.serialization.from_bytes(params, f.read())
    _close(restored, ref.params)
    for pid, rep in enumerate(reports):
        for k, v in ref.history.items():
            np.testing.assert_allclose(rep["history"][k], v, rtol=1e-5)
        assert rep["evaluate"] == pytest.approx(ref_eval, rel=1e-5)
        np.testing.assert_allclose(rep["predict"], ref_pred[pid * 32 : (pid + 1) * 32], atol=1e-5)
        _close(rep["more"], more.params)
        assert rep["more_specs"]["dense_0"]["w"] == ["data"]  # FSDP across hosts
        # A stream per process on the mesh == one stream of the concatenated batches.
        _close(rep["stream"]["params"], sref.params)
        for k, v in sref.history.items():
            np.testing.assert_allclose(rep["stream"]["history"][k], v, rtol=1e-5)
        assert rep["stream"]["evaluate"] == pytest.approx(sref_eval, rel=1e-5)
        rows = np.r_[pid * 32 : pid * 32 + 30]  # the 30 rows this process streamed
        np.testing.assert_allclose(rep["stream"]["predict"], sref_pred[rows], atol=1e-5)
        assert "disagree on their length" in rep["short_stream_error"]
        assert "[2, 1] batches left" in rep["short_stream_error"]
        _close(rep["sweep"], sweep.params)  # every run, gathered in every process


def _two_processes(mode: str, tmp_path, **env) -> list[subprocess.Popen]:
    port = _free_port()
    return [
        subprocess.Popen(
            [sys.executable, WORKER, mode, str(pid), str(port), str(tmp_path)],
            env=_env(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for pid in (0, 1)
    ]


def _wait(procs) -> tuple[list[int | None], str]:
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=TIMEOUT)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [p.returncode for p in procs], "\n".join(s[-2000:] for s in logs)


def test_checkpoints_across_processes_survive_a_kill_and_change_of_devices(tmp_path):
    """2 processes x 2 devices (FSDP) save per-process shards; process 1 is SIGKILLed in
    the middle of saving epoch 2; 2 processes x 1 device resume from epoch 1."""
    model, params, x, y = seed_problem()
    procs = _two_processes("crash", tmp_path, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    try:
        ref1 = jnn.fit(model, params, (x, y), key=jax.random.key(1), **CKPT_FIT | {"epochs": 1})
        ref = jnn.fit(model, params, (x, y), key=jax.random.key(1), **CKPT_FIT)
    finally:
        codes, logs = _wait(procs)
    assert codes == [0, -9], logs  # process 1 SIGKILLed, process 0 gave up waiting: no hang
    crash = json.loads((tmp_path / "crash0.json").read_text())
    assert crash["devices"] == 4
    assert "process 1 did not reach the same point within 5 s" in crash["error"]
    ckpt = tmp_path / "ckpt"
    assert (ckpt / "epoch_000001.shards" / "COMMIT").is_file()
    assert (ckpt / "epoch_000002.shards" / "process_1_of_2.ckpt").is_file()  # written, but
    assert not (ckpt / "epoch_000002.shards" / "COMMIT").exists()  # never committed
    template = jnn.TrainState.create(params, "adam", learning_rate=1e-2, key=jax.random.key(1))
    with pytest.raises(jnn.checkpoint.CheckpointError, match="incomplete: no COMMIT"):
        jnn.checkpoint.restore(ckpt / "epoch_000002.shards", template)
    # One process, one device, restores what 4 devices in 2 processes wrote.
    first = jnn.checkpoint.restore(ckpt / "epoch_000001.shards", template)
    _close(first.state.params, ref1.params)
    assert first.epoch == 1 and first.history["loss"] == pytest.approx(ref1.history["loss"])

    procs = _two_processes("resume", tmp_path)
    codes, logs = _wait(procs)
    assert codes == [0, 0], logs
    for pid in (0, 1):
        rep = json.loads((tmp_path / f"resume{pid}.json").read_text())
        assert rep["devices"] == 2
        assert any("epoch_000002.shards: incomplete" in w for w in rep["warnings"])
        _close(rep["params"], ref.params)  # resumed at epoch 1: the uninterrupted result
        for k, v in ref.history.items():
            np.testing.assert_allclose(rep["history"][k], v, rtol=1e-5)
        assert rep["specs"]["dense_0"]["w"] == []  # replicated now
        assert rep["epoch1_specs"]["dense_0"]["w"] == ["data", None]  # FSDP over 2 devices
        _close(rep["epoch1"], ref1.params)
        assert "written by 2 process(es)" in rep["mismatch"]
        assert "expected (10, 5) float32, got (10, 10) float32" in rep["mismatch"]
    # keep=2: epoch 1 pruned by process 0 after epoch 3's commit; 2 (saved again) and 3 kept.
    assert sorted(p.name for p in ckpt.iterdir()) == ["epoch_000002.shards", "epoch_000003.shards"]
    assert (ckpt / "epoch_000002.shards" / "COMMIT").is_file()
    # Shards of a process that this host cannot see: a clear error, not garbage.
    (ckpt / "epoch_000003.shards" / "process_1_of_2.ckpt").unlink()
    with pytest.raises(jnn.checkpoint.CheckpointError, match="need a directory that every"):
        jnn.checkpoint.restore(ckpt / "epoch_000003.shards", template)
