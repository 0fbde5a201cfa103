"""Data-parallel and FSDP training with jnn on every device (and every host) there is.

One machine, all its devices (GPUs, TPU cores, or CPU devices faked with a flag)::

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python examples/data_parallel.py

Several processes (here two on this machine; on a cluster, one per host, with
the coordinator on host 0), each feeding its own shard of the data::

    python examples/data_parallel.py --coordinator 127.0.0.1:12345 --num-processes 2 \
        --process-id 0 &
    python examples/data_parallel.py --coordinator 127.0.0.1:12345 --num-processes 2 \
        --process-id 1

The training code is the same in both cases: only ``mesh=`` is new.
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--coordinator", help="host:port of process 0 (multi-process only)")
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()

    import jax

    import jnn

    if args.num_processes > 1:  # before any other JAX call
        jnn.distributed.initialize(
            args.coordinator, num_processes=args.num_processes, process_id=args.process_id
        )
    jnn.compile_cache()  # reuse compilations across runs (JNN_COMPILE_CACHE=off: don't)
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    y = y.reshape(-1, 1).astype(np.float32)
    n_dev = len(jax.devices())
    keep = len(x) // n_dev * n_dev  # every process feeds the same number of rows
    x, y = x[:keep], y[:keep]
    # Each process keeps only its own block of rows (at scale: reads only its own files).
    x_mine, y_mine = jnn.distributed.process_shard(x), jnn.distributed.process_shard(y)

    model = jnn.serial(
        jnn.Dense(64, activation="relu"),
        jnn.Dense(64, activation="relu"),
        jnn.Dense(1, activation="sigmoid"),
    )
    _, params = model.init(jax.random.key(0), (-1, x.shape[1]))
    mesh = jnn.distributed.make_mesh()  # all devices of all processes, axis "data"
    say = print if jax.process_index() == 0 else (lambda *a, **k: None)
    say(f"{jax.process_count()} process(es), {n_dev} device(s): {jax.devices()}")

    common = dict(
        loss="bce", optimizer="adam", learning_rate=1e-3, epochs=args.epochs,
        batch_size=8 * n_dev, key=jax.random.key(1), metrics=["accuracy"], verbose=0,
    )  # fmt: skip
    for param_sharding in ("replicated", "fsdp"):
        res = jnn.fit(
            model, params, (x_mine, y_mine), mesh=mesh, param_sharding=param_sharding, **common
        )
        w = res.params["dense_1"]["w"]
        ev = jnn.evaluate(model, res.params, (x_mine, y_mine), loss="bce", metrics=["accuracy"],
                          mesh=mesh)  # fmt: skip
        say(
            f"{param_sharding:>10}: loss {res.history['loss'][-1]:.4f}, accuracy "
            f"{ev['accuracy']:.3f}; dense_1.w {w.shape} held as {w.sharding.spec}, "
            f"{w.addressable_shards[0].data.shape} per device"
        )
        trained = jnn.distributed.gather(res.params)  # numpy on every host, e.g. to save

    if jax.process_count() == 1:  # the same global batches on one device: the same params
        single = jnn.fit(model, params, (x, y), **common)
        diff = max(
            float(np.abs(a - np.asarray(b)).max())
            for a, b in zip(jax.tree.leaves(trained), jax.tree.leaves(single.params), strict=True)
        )
        say(f"max |params(mesh) - params(one device)| = {diff:.2e}")


if __name__ == "__main__":
    main()
