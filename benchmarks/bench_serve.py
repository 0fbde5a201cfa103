"""Load test of ``jnn serve`` on loopback: requests/s and latency, micro-batching on and off.

Exports the seed network (10-10-10-1 on 30 features), starts ``jnn serve`` in
a subprocess on a free 127.0.0.1 port, sends a bounded number of single-example
``POST /predict`` requests from ``--clients`` concurrent clients (asyncio +
httpx), checks every answer, prints one table row per setting and always
stops the server.

Run:  python benchmarks/bench_serve.py [--requests 5000] [--clients 8]
(needs: pip install 'jnn[bench]'). Figures on a shared machine are noisy.
"""

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time

import httpx
import jax
import numpy as np

import jnn
import jnn.export

FEATURES = 30


def export_seed(path: str) -> tuple:
    model = jnn.serial(
        jnn.Dense(10, activation="relu"),
        jnn.Dense(10, activation="relu"),
        jnn.Dense(1, activation="sigmoid"),
    )
    _, params = model.init(jax.random.key(0), (-1, FEATURES))
    jnn.export.save(path, model, params, (-1, FEATURES), platforms="cpu")
    return model, params


def start_server(path: str, extra: list[str]) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "jnn", "serve", path, "--port", "0", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "listening on" in line:
            return proc, line.split("listening on ")[1].split()[0]
        if not line and proc.poll() is not None:
            break
    proc.terminate()
    proc.wait(timeout=30)
    raise RuntimeError(f"{' '.join(cmd)} did not start")


async def load(url: str, xs: np.ndarray, clients: int) -> tuple[np.ndarray, float, np.ndarray]:
    """Send one request per row of ``xs`` from ``clients`` workers; (latencies, seconds, preds)."""
    latencies = np.zeros(len(xs))
    preds = np.zeros(len(xs))
    next_index = iter(range(len(xs)))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def worker() -> None:
            for i in next_index:
                start = time.perf_counter()
                r = await client.post("/predict", json={"inputs": xs[i].tolist()})
                latencies[i] = time.perf_counter() - start
                r.raise_for_status()
                preds[i] = r.json()["predictions"][0]

        await client.post("/predict", json={"inputs": xs[0].tolist()})  # open a connection
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return latencies, time.perf_counter() - start, preds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    args = parser.parse_args()
    if not 1 <= args.requests <= 100_000 or not 1 <= args.clients <= 64:
        parser.error("keep the load bounded: 1..100000 requests, 1..64 clients")

    path = os.path.join(tempfile.mkdtemp(), "seed.jnn")
    model, params = export_seed(path)
    xs = np.random.default_rng(0).normal(size=(args.requests, FEATURES)).astype(np.float32)
    want = jnn.predict(model, params, xs)[:, 0]
    settings = {
        "micro-batching on": ["--max-wait-ms", str(args.max_wait_ms)],
        "micro-batching off": ["--no-batching"],
    }
    print(
        f"jnn serve, seed network, {args.requests} single-example requests, "
        f"{args.clients} concurrent clients, loopback"
    )
    print(f"{'setting':<20} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max err':>9}")
    for name, extra in settings.items():
        proc, url = start_server(path, extra)
        try:
            latencies, seconds, preds = asyncio.run(load(url, xs, args.clients))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        p50, p99 = np.percentile(latencies, [50, 99]) * 1e3
        err = float(np.abs(preds - want).max())
        print(f"{name:<20} {args.requests / seconds:>8.0f} {p50:>8.2f} {p99:>8.2f} {err:>9.1e}")


if __name__ == "__main__":
    main()
