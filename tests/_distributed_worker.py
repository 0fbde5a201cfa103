"""Subprocess side of tests/test_distributed.py (not a test module).

``python _distributed_worker.py devices OUT``: 4 forced CPU devices, one process.
``python _distributed_worker.py process PID PORT OUT``: one of two processes
joined by ``jax.distributed`` on 127.0.0.1. Both write JSON / msgpack to OUT.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

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
    report = {
        "history": res.history,
        "evaluate": ev,
        "predict": pred.tolist(),
        "more": _tolist(more_full),
        "more_specs": specs,
    }
    with open(os.path.join(out, f"process{pid}.json"), "w") as f:
        json.dump(report, f)
    jax.distributed.shutdown()


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if sys.argv[1] == "devices":
        devices(sys.argv[2])
    else:
        process(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
