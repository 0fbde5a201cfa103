"""Deploy the seed network: train, export, serve over HTTP, query, shut down.

Trains the 10-10-10-1 network on scikit-learn's breast-cancer data, exports
it with ``jnn.export.save`` (one file, no Python code needed to run it) with
the feature scaling folded in, so clients send raw measurements,
starts ``jnn serve`` on a free loopback port in a subprocess, queries it with
httpx and stops it.

Run:  python examples/deploy.py        (needs: pip install 'jnn[examples]')
"""

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


def main(epochs: int = 30) -> dict:
    """Train, export, serve, query; returns what the queries measured."""
    model, params, x_test, y_test, labels = train(epochs)
    path = os.path.join(tempfile.mkdtemp(), "breast_cancer.jnn")
    jnn.export.save(
        path,
        model,
        params,
        (-1, x_test.shape[1]),
        labels=labels,
        description="Breast-cancer classifier on the 30 raw features; outputs P(benign).",
    )
    print(f"exported to {path} ({os.path.getsize(path)} bytes)")
    print(jnn.export.load(path).summary())

    proc, url = start_server(path)
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            print("GET /health ->", client.get("/health").json())
            meta = client.get("/metadata").json()
            print("GET /metadata -> input", meta["input"], "labels", meta["labels"])
            one = client.post("/predict", json={"inputs": x_test[0].tolist()}).json()
            print(f"POST /predict (one example) -> {one['predictions']}")
            batch = client.post("/predict", json={"inputs": x_test.tolist()}).json()
            probs = np.asarray(batch["predictions"])
            local = jnn.predict(model, params, x_test)
            max_diff = float(np.abs(probs - local).max())
            print(f"POST /predict ({len(x_test)} examples): max |server - local| = {max_diff:.2e}")
            accuracy = float(np.mean((probs > 0.5) == (y_test > 0.5)))
            print(f"test accuracy through the server: {accuracy:.3f}")
            bad = client.post("/predict", json={"inputs": [[1.0, 2.0]]})
            print(f"POST /predict with a wrong shape -> {bad.status_code}: {bad.json()['detail']}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        print("server stopped")
    return {"accuracy": accuracy, "max_diff": max_diff, "bad_status": bad.status_code}


if __name__ == "__main__":
    main()
