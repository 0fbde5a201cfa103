"""Subprocess side of tests/test_distributed.py (not a test module).

``python _distributed_worker.py devices OUT``: 4 forced CPU devices, one process.
``python _distributed_worker.py process PID PORT OUT``: one of two processes
joined by ``jax.distributed`` on 127.0.0.1. Both write JSON / msgpack to OUT.
``python _distributed_worker.py crash|resume PID PORT OUT``: two processes of 2
forced devices each train with multi-host checkpoints; in ``crash`` process 1
SIGKILLs itself in the middle of saving epoch 2; ``resume`` (1 device each)
resumes from what is left.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

STREAM_FIT = {"loss": "bce", "learning_rate": 1e-2, "epochs": 2, "steps_per_call": 2, "verbose": 0}
CKPT_FIT = {"loss": "bce", "learning_rate": 1e-2, "epochs": 3, "batch_size": 16, "verbose": 0}


def local_batches(x, y, pid: int, take: int = 4):
    """Process ``pid``'s stream: its 32 rows of the 64 in batches of 8, 8, 8, 6 (ragged)."""
    rows = [(8 * i, min(8 * i + 8, 30)) for i in range(take)]
    return lambda: (
        (x[32 * pid + a : 32 * pid + b], y[32 * pid + a : 32 * pid + b]) for a, b in rows
    )


def global_batches(x, y):
    """The same batches as one process sees them: batch i = process 0's, then process 1's."""

    def gen():
        for a, b in zip(local_batches(x, y, 0)(), local_batches(x, y, 1)(), strict=True):
            yield np.concatenate([a[0], b[0]]), np.concatenate([a[1], b[1]])

    return gen


SEED_NET_FIT = {
    "loss": "bce",
    "optimizer": "adam",
    "learning_rate": 1e-2,
    "epochs": 3,
    "batch_size": 16,
    "verbose": 0,
}


def seed_problem():
    """The seed network 10-10-10-1 and 64 examples (the same in every process)."""
    import jax

    import jnn

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 10)).astype(np.float32)
    y = (x[:, :3].sum(1, keepdims=True) > 0).astype(np.float32)
    model = jnn.serial(
        jnn.Dense(10, activation="relu"),
        jnn.Dense(10, activation="relu"),
        jnn.Dense(1, activation="sigmoid"),
    )
    _, params = model.init(jax.random.key(0), (-1, 10))
    return model, params, x, y


def _tolist(tree):
    import jax

    return jax.tree.map(lambda a: np.asarray(a).tolist(), tree)


def devices(out: str) -> None:
    """4 devices: data-parallel and FSDP fit / evaluate / predict vs one device."""
    import jax

    import jnn

    assert len(jax.devices()) == 4, jax.devices()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(100, 12)).astype(np.float32)
    y = (x[:, :1] > 0).astype(np.float32)
    model = jnn.serial(jnn.Dense(16, activation="relu"), jnn.Dense(8), jnn.Dense(1))
    _, params = model.init(jax.random.key(0), (-1, 12))
    kw = dict(
        loss="bce_with_logits",
        optimizer="adam",
        learning_rate=1e-2,
        epochs=3,
        batch_size=20,
        key=jax.random.key(1),
        verbose=0,
        metrics=["accuracy"],
        validation_data=(x[:30], y[:30]),
    )
    one = jax.devices()[:1]
    ref = jnn.fit(model, params, (x, y), mesh=jnn.distributed.make_mesh(one), **kw)
    report = {"ref": {"params": _tolist(ref.params), "history": ref.history}}
    mesh = jnn.distributed.make_mesh()
    for ps in ("replicated", "fsdp"):
        res = jnn.fit(model, params, (x, y), mesh=mesh, param_sharding=ps, **kw)
        shards = jax.tree.map(
            lambda a: {
                "spec": list(a.sharding.spec),
                "shard_shapes": [list(s.data.shape) for s in a.addressable_shards],
                "devices": len({s.device for s in a.addressable_shards}),
            },
            {"params": res.params, "mu": res.opt_state[0].mu},
        )
        ev = jnn.evaluate(model, res.params, (x, y), loss="bce_with_logits", mesh=mesh)
        pred = jnn.predict(model, res.params, x, batch_size=40, mesh=mesh, param_sharding=ps)
        report[ps] = {
            "params": _tolist(jnn.distributed.gather(res.params)),
            "history": res.history,
            "shards": shards,
            "evaluate": ev,
            "predict": pred.tolist(),
        }
    report["ref_evaluate"] = jnn.evaluate(model, ref.params, (x, y), loss="bce_with_logits")
    report["ref_predict"] = jnn.predict(model, ref.params, x, batch_size=40).tolist()
    try:
        jnn.fit(model, params, (x, y), mesh=mesh, **{**kw, "batch_size": 10})
        report["bad_batch_error"] = None
    except ValueError as err:
        report["bad_batch_error"] = str(err)
    # A stream on the 4 devices (FSDP) vs the same stream on one device.
    batches = lambda: ((x[i : i + 20], y[i : i + 20]) for i in range(0, 100, 20))  # noqa: E731
    skw = {k: v for k, v in kw.items() if k not in ("batch_size", "validation_data")}
    sref = jnn.fit(model, params, batches, steps_per_call=2, **skw)
    sres = jnn.fit(
        model, params, batches, steps_per_call=2, mesh=mesh, param_sharding="fsdp", **skw
    )
    report["stream"] = {
        "ref": _tolist(sref.params),
        "fsdp": _tolist(jnn.distributed.gather(sres.params)),
        "spec": list(sres.params["dense_0"]["w"].sharding.spec),
    }
    try:
        odd = lambda: ((x[i : i + 10], y[i : i + 10]) for i in range(0, 100, 10))  # noqa: E731
        jnn.fit(model, params, odd, mesh=mesh, **skw)
        report["stream_bad_batch_error"] = None
    except ValueError as err:
        report["stream_bad_batch_error"] = str(err)
    with open(os.path.join(out, "devices.json"), "w") as f:
        json.dump(report, f)


def process(pid: int, port: int, out: str) -> None:
    """One of two processes: fit the seed network data-parallel; checkpoints both ways."""
    import flax.serialization
    import jax

    import jnn

    jnn.distributed.initialize(
        f"127.0.0.1:{port}",
        num_processes=2,
        process_id=pid,
        initialization_timeout=30,
        coordinator_bind_address=f"127.0.0.1:{port}",
    )
    assert jax.process_count() == 2 and len(jax.devices()) == 2
    model, params, x, y = seed_problem()
    mine = jnn.distributed.process_shard(x), jnn.distributed.process_shard(y)
    res = jnn.fit(model, params, mine, key=jax.random.key(1), mesh="auto", **SEED_NET_FIT)
    full = jnn.distributed.gather(res.params)
    ev = jnn.evaluate(model, res.params, mine, loss="bce", mesh="auto")
    pred = jnn.predict(model, res.params, mine[0], batch_size=16, mesh="auto")
    # A checkpoint written by a single process, restored here and trained on (FSDP).
    with open(os.path.join(out, "single.msgpack"), "rb") as f:
        restored = flax.serialization.from_bytes(params, f.read())
    more = jnn.fit(
        model,
        restored,
        mine,
        key=jax.random.key(2),
        mesh="auto",
        param_sharding="fsdp",
        **{**SEED_NET_FIT, "epochs": 1},
    )
    specs = jax.tree.map(lambda a: list(a.sharding.spec), more.params)
    more_full = jnn.distributed.gather(more.params)  # a collective: every process calls it
    if pid == 0:  # the multi-process checkpoint, for a single process to restore
        with open(os.path.join(out, "multi.msgpack"), "wb") as f:
            f.write(flax.serialization.to_bytes(full))
    # Streams on the mesh: each process streams its own rows of every global batch.
    stream = local_batches(x, y, pid)
    sres = jnn.fit(model, params, stream, key=jax.random.key(3), mesh="auto", **STREAM_FIT)
    sev = jnn.evaluate(model, sres.params, stream, loss="bce", mesh="auto")
    spred = jnn.predict(model, sres.params, (b[0] for b in stream()), mesh="auto")
    try:  # process 1's stream ends a batch early: an error in both processes, no hang
        jnn.fit(model, params, local_batches(x, y, pid, take=4 - pid), key=jax.random.key(3),
                mesh="auto", **STREAM_FIT)  # fmt: skip
        short = None
    except ValueError as err:
        short = str(err)
    # A sweep: the run axis over both processes' devices, results in both.
    sw = jnn.experiments.sweep(model, (x, y), loss="bce", seeds=[0, 1, 2], epochs=1, batch_size=16)
    report = {
        "history": res.history,
        "evaluate": ev,
        "predict": pred.tolist(),
        "more": _tolist(more_full),
        "more_specs": specs,
        "stream": {"params": _tolist(jnn.distributed.gather(sres.params)),
                   "history": sres.history, "evaluate": sev, "predict": spred.tolist()},
        "short_stream_error": short,
        "sweep": _tolist(sw.params),
    }  # fmt: skip
    with open(os.path.join(out, f"process{pid}.json"), "w") as f:
        json.dump(report, f)
    jax.distributed.shutdown()


def checkpoints(mode: str, pid: int, port: int, out: str) -> None:
    """Multi-host checkpoints: ``crash`` (4 devices, FSDP) dies mid-save; ``resume``
    (2 devices, replicated) carries on from the last committed epoch."""
    import signal

    import jax

    import jnn

    jnn.distributed.initialize(
        f"127.0.0.1:{port}",
        num_processes=2,
        process_id=pid,
        initialization_timeout=30,
        coordinator_bind_address=f"127.0.0.1:{port}",
    )
    model, params, x, y = seed_problem()
    mine = jnn.distributed.process_shard(x), jnn.distributed.process_shard(y)
    ckpt = os.path.join(out, "ckpt")
    report: dict = {"devices": len(jax.devices())}
    if mode == "crash":
        jnn.distributed.TIMEOUT = 5.0  # process 0 gives up on the dead process 1 quickly
        exchange, saves = jnn.distributed._exchange, []

        def dies_mid_save(where, value, **kw):
            if where == "checkpoint.save":
                saves.append(value)
                if pid == 1 and len(saves) == 2:  # its file of epoch 2 is down, no commit yet
                    os.kill(os.getpid(), signal.SIGKILL)
            return exchange(where, value, **kw)

        jnn.distributed._exchange = dies_mid_save
        try:
            jnn.fit(model, params, mine, key=jax.random.key(1), mesh="auto",
                    param_sharding="fsdp", checkpoint_dir=ckpt, checkpoint_keep=None,
                    **CKPT_FIT)  # fmt: skip
        except TimeoutError as err:
            report["error"] = str(err)
    else:
        import warnings

        # Epoch 1 (written on 4 devices, FSDP) onto these 2 devices, FSDP.
        mesh = jnn.distributed.make_mesh()
        template = jnn.TrainState.create(params, "adam", learning_rate=1e-2, key=jax.random.key(1))
        template = jnn.distributed._plan("t", mesh, "fsdp").put_state(template)
        first = jnn.checkpoint.restore(os.path.join(ckpt, "epoch_000001.shards"), template)
        report["epoch1_specs"] = jax.tree.map(lambda a: list(a.sharding.spec), first.state.params)
        report["epoch1"] = _tolist(jnn.distributed.gather(first.state.params))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = jnn.fit(model, params, mine, key=jax.random.key(1), mesh="auto",
                          checkpoint_dir=ckpt, resume=True, checkpoint_keep=2,
                          **CKPT_FIT)  # fmt: skip
        report["warnings"] = [str(w.message) for w in caught]
        report["params"] = _tolist(jnn.distributed.gather(res.params))
        report["specs"] = jax.tree.map(lambda a: list(a.sharding.spec), res.params)
        report["history"] = res.history
        wrong = {**params, "dense_0": {**params["dense_0"], "w": np.zeros((10, 5), np.float32)}}
        try:
            jnn.checkpoint.restore_latest(ckpt, template._replace(params=wrong))
        except jnn.checkpoint.CheckpointMismatchError as err:
            report["mismatch"] = str(err)
    with open(os.path.join(out, f"{mode}{pid}.json"), "w") as f:
        json.dump(report, f)
    if mode == "resume":
        jax.distributed.shutdown()
    else:
        os._exit(0)  # the peer is dead: skip the shutdown barrier


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if sys.argv[1] == "devices":
        devices(sys.argv[2])
    elif sys.argv[1] == "process":
        process(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    else:
        checkpoints(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
