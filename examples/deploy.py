"""Deploy the seed network both ways: train, export (.jnn and .onnx), serve, query, stop.

Trains the 10-10-10-1 network on scikit-learn's breast-cancer data with the
feature scaling folded in (clients send raw measurements), then for each
format:

- ``.jnn`` (``jnn.export.save``): the forward pass as a StableHLO program,
  run by XLA; the serving side needs jax. A ``.jnn`` file is a program: load
  only files you trust.
- ``.onnx`` (``jnn.export.save_onnx``): an ONNX graph, run by ONNX Runtime;
  the serving side needs no jax (``pip install 'jnn[serve-onnx]'``) and the
  file also runs in TensorRT, OpenVINO, ONNX Runtime Web/Mobile.

starts ``jnn serve FILE`` on a free loopback port in a subprocess, queries it
with httpx, compares with ``jnn.predict``, prints the server's memory, and
stops it.

Run:  python examples/deploy.py [--epochs 30] [--format jnn|onnx|both]
(needs: pip install 'jnn[examples]')
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import httpx
import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

import jnn
import jnn.export


def Standardize(mean: np.ndarray, scale: np.ndarray) -> jnn.Layer:
    """``(x - mean) / scale`` with fixed statistics (constants of the exported program)."""
    mean = jnp.asarray(mean, jnp.float32).reshape(1, -1)
    scale = jnp.asarray(scale, jnp.float32).reshape(1, -1)

    def init(key, input_shape):
        return tuple(input_shape), {}

    def apply(params, x, *, key=None, train=False):
        return (x - mean) / scale

    return jnn.Layer(init, apply)


def train(epochs: int = 30) -> tuple:
    data = load_breast_cancer()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data, data.target, test_size=0.25, random_state=0, stratify=data.target
    )
    scaler = StandardScaler().fit(x_train)
    raw_test = x_test.astype(np.float32)
    x_train = scaler.transform(x_train).astype(np.float32)
    y_train, y_test = (a.astype(np.float32).reshape(-1, 1) for a in (y_train, y_test))
    model = jnn.serial(
        jnn.Dense(10, activation="relu"),
        jnn.Dense(10, activation="relu"),
        jnn.Dense(1, activation="sigmoid"),
    )
    _, params = model.init(jax.random.key(0), (-1, x_train.shape[1]))
    result = jnn.fit(
        model,
        params,
        (x_train, y_train),
        loss="bce",
        optimizer="adam",
        learning_rate=1e-2,
        epochs=epochs,
        batch_size=32,
        key=jax.random.key(1),
        metrics=["accuracy"],
        verbose=0,
    )
    print(f"trained: final loss {result.history['loss'][-1]:.4f}")
    # Deploy scaling + network as one model that takes raw measurements.
    deployed = jnn.serial(Standardize(scaler.mean_, scaler.scale_), model)
    deployed_params = {"standardize_0": {}, "serial_0": result.params}
    return deployed, deployed_params, raw_test, y_test, list(data.target_names)


def rss_mib(pid: int) -> float | None:
    """A process's resident memory (Linux /proc), or None elsewhere."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
    except OSError:
        return None


def start_server(path: str) -> tuple[subprocess.Popen, str]:
    """``jnn serve`` on a free loopback port; returns the process and its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "jnn", "serve", path, "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "listening on" in line:
            return proc, line.split("listening on ")[1].split()[0]
        if not line and proc.poll() is not None:
            break
    proc.terminate()
    raise RuntimeError("jnn serve did not start")


def query(path: str, model, params, x_test, y_test) -> dict:
    """Serve ``path`` with ``jnn serve``, query it, compare with jnn.predict, stop it."""
    proc, url = start_server(path)
    try:
        memory = rss_mib(proc.pid)
        with httpx.Client(base_url=url, timeout=30) as client:
            print("  GET /health ->", client.get("/health").json())
            meta = client.get("/metadata").json()
            print("  GET /metadata -> input", meta["input"], "labels", meta["labels"])
            one = client.post("/predict", json={"inputs": x_test[0].tolist()}).json()
            print(f"  POST /predict (one example) -> {one['predictions']}")
            batch = client.post("/predict", json={"inputs": x_test.tolist()}).json()
            probs = np.asarray(batch["predictions"])
            local = jnn.predict(model, params, x_test)
            max_diff = float(np.abs(probs - local).max())
            print(
                f"  POST /predict ({len(x_test)} examples): max |server - local| = {max_diff:.2e}"
            )
            accuracy = float(np.mean((probs > 0.5) == (y_test > 0.5)))
            print(f"  test accuracy through the server: {accuracy:.3f}")
            bad = client.post("/predict", json={"inputs": [[1.0, 2.0]]})
            print(
                f"  POST /predict with a wrong shape -> {bad.status_code}: {bad.json()['detail']}"
            )
        if memory is not None:
            print(f"  server memory after start-up: {memory:.0f} MiB")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        print("  server stopped")
    return {"accuracy": accuracy, "max_diff": max_diff, "bad_status": bad.status_code}


def main(epochs: int = 30, formats: tuple[str, ...] = ("jnn", "onnx")) -> dict:
    """Train, export, serve, query each format; returns what the queries measured.

    The result has, per format, the accuracy, the largest difference from
    ``jnn.predict`` and the status of a bad request; and the worst of each
    across formats (``accuracy``, ``max_diff``, ``bad_status``).
    """
    model, params, x_test, y_test, labels = train(epochs)
    directory = tempfile.mkdtemp()
    description = "Breast-cancer classifier on the 30 raw features; outputs P(benign)."
    results = {}
    for fmt in formats:
        path = os.path.join(directory, f"breast_cancer.{fmt}")
        save = jnn.export.save if fmt == "jnn" else jnn.export.save_onnx
        save(path, model, params, (-1, x_test.shape[1]), labels=labels, description=description)
        print(f"\n.{fmt}: exported to {path} ({os.path.getsize(path)} bytes)")
        print(jnn.export.load(path).summary())
        results[fmt] = query(path, model, params, x_test, y_test)
    return {
        "accuracy": min(r["accuracy"] for r in results.values()),
        "max_diff": max(r["max_diff"] for r in results.values()),
        "bad_status": max(r["bad_status"] for r in results.values()),
        "by_format": results,
    }


if __name__ == "__main__":
    jnn.compile_cache()  # reuse compilations across runs (JNN_COMPILE_CACHE=off: don't)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=30, help="training epochs (default 30)")
    parser.add_argument(
        "--format",
        choices=["jnn", "onnx", "both"],
        default="both",
        help="which export to serve: .jnn (XLA), .onnx (ONNX Runtime, no jax) or both",
    )
    args = parser.parse_args()
    if args.epochs < 1:
        parser.error("--epochs must be a positive int")
    main(args.epochs, ("jnn", "onnx") if args.format == "both" else (args.format,))
