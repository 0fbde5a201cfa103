"""Real HTTP tests of jnn.serve against servers on free loopback ports."""

import concurrent.futures
import json
import os
import socket
import subprocess
import sys
import threading
import time

import httpx
import jax
import numpy as np
import pytest
import uvicorn

import jnn
import jnn.export
from jnn.serve import create_app

FEATURES = 4
MAX_BODY = 4096


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    model = jnn.serial(jnn.Dense(8, activation="relu"), jnn.Dense(2))
    _, params = model.init(jax.random.key(0), (-1, FEATURES))
    path = str(tmp_path_factory.mktemp("serve") / "m.jnn")
    jnn.export.save(path, model, params, (-1, FEATURES), labels=["no", "yes"], platforms="cpu")
    return model, params, path


def _start(app):
    """Run ``app`` with uvicorn in a thread on a free loopback port; returns (url, stop)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="error"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("server did not start")
        time.sleep(0.02)

    def stop():
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        assert not thread.is_alive()

    return f"http://127.0.0.1:{sock.getsockname()[1]}", stop


@pytest.fixture(scope="module", params=[True, False], ids=["batching", "no_batching"])
def server(request, model_file):
    predictor = jnn.export.load(model_file[2])
    app = create_app(
        predictor,
        max_body_bytes=MAX_BODY,
        batching=request.param,
        max_batch_size=8,
        max_wait_ms=5.0,
    )
    url, stop = _start(app)
    with httpx.Client(base_url=url, timeout=30) as client:
        yield client, model_file
    stop()


def _expected(model_file, x):
    model, params, _ = model_file
    return jnn.predict(model, params, np.asarray(x, np.float32))


def test_health_metadata_and_docs(server):
    client, _ = server
    assert client.get("/health").json() == {"status": "ok"}
    meta = client.get("/metadata").json()
    assert meta["input"]["shape"] == [None, FEATURES] and meta["labels"] == ["no", "yes"]
    spec = client.get("/openapi.json").json()
    assert {"/predict", "/health", "/metadata"} <= set(spec["paths"])
    assert "requestBody" in spec["paths"]["/predict"]["post"]
    assert client.get("/docs").status_code == 200


def test_single_example_and_batch(server):
    client, model_file = server
    x = np.random.default_rng(0).normal(size=(5, FEATURES)).astype(np.float32)
    one = client.post("/predict", json={"inputs": x[0].tolist()})
    assert one.status_code == 200
    np.testing.assert_allclose(
        one.json()["predictions"], _expected(model_file, x[:1])[0], rtol=1e-5, atol=1e-6
    )
    batch = client.post("/predict", json={"inputs": x.tolist()})
    assert batch.status_code == 200
    np.testing.assert_allclose(
        batch.json()["predictions"], _expected(model_file, x), rtol=1e-5, atol=1e-6
    )
    big = np.ones((40, FEATURES)).tolist()  # more rows than max_batch_size: runs alone
    assert len(client.post("/predict", json={"inputs": big}).json()["predictions"]) == 40


def test_concurrent_requests_all_answered_correctly(server):
    client, model_file = server
    xs = np.random.default_rng(1).normal(size=(24, FEATURES)).astype(np.float32)
    sizes = [1, 2, 3, 1, 5, 1, 2, 9]  # one request larger than max_batch_size

    def ask(i):
        start = sum(sizes[:i])
        x = xs[start : start + sizes[i]]
        return client.post("/predict", json={"inputs": x.tolist()}).json()["predictions"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = [row for rows in pool.map(ask, range(len(sizes))) for row in rows]
    np.testing.assert_allclose(answers, _expected(model_file, xs), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("body", "status", "match"),
    [
        (b"{not json", 400, "malformed JSON"),
        (b"\xff\xfe", 400, "malformed JSON"),
        (b"[" * 100_000 + b"]" * 100_000, 413, "over"),
        (b"[" * 2000 + b"]" * 2000, 400, "malformed JSON"),
        (json.dumps([[1, 2, 3, 4]]).encode(), 422, '"inputs"'),
        (json.dumps({"x": [[1, 2, 3, 4]]}).encode(), 422, "(n, 4)"),
        (json.dumps({"inputs": [[1, 2, 3]]}).encode(), 422, "(n, 4)"),
        (json.dumps({"inputs": [1, 2, 3]}).encode(), 422, "(n, 4)"),
        (json.dumps({"inputs": [[[1, 2, 3, 4]]]}).encode(), 422, "(n, 4)"),
        (json.dumps({"inputs": [[1, 2], [1, 2, 3, 4]]}).encode(), 422, "(n, 4)"),
        (json.dumps({"inputs": []}).encode(), 422, "(n, 4)"),
        (json.dumps({"inputs": [["a", "b", "c", "d"]]}).encode(), 422, "dtype"),
        (json.dumps({"inputs": [[True, False, True, True]]}).encode(), 422, "dtype"),
        (json.dumps({"inputs": [[{"a": 1}, 2, 3, 4]]}).encode(), 422, "dtype"),
        (json.dumps({"inputs": [[10**400, 2, 3, 4]]}).encode(), 422, "dtype"),
        (b'{"inputs": [[NaN, 1, 2, 3]]}', 422, "NaN"),
        (json.dumps({"inputs": "1,2,3,4"}).encode(), 422, "(n, 4)"),
    ],
)
def test_bad_inputs_then_server_still_works(server, body, status, match):
    client, _ = server
    r = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert match in r.json()["detail"]
    ok = client.post("/predict", json={"inputs": [[0.0, 1.0, 2.0, 3.0]]})
    assert ok.status_code == 200 and np.shape(ok.json()["predictions"]) == (1, 2)


def test_oversized_body_without_content_length_is_refused(server):
    """A chunked body (no content-length) is counted as it streams in."""
    client, _ = server

    def chunks():
        yield b'{"inputs": ['
        for _ in range(400):
            yield b"[1, 2, 3, 4], "
        yield b"[1, 2, 3, 4]]}"

    r = client.post("/predict", content=chunks())
    assert r.status_code == 413 and str(MAX_BODY) in r.json()["detail"]
    assert client.get("/health").status_code == 200


def test_micro_batching_merges_concurrent_requests(model_file):
    """Concurrent requests share device calls, and no call exceeds max_batch_size rows."""
    predictor = jnn.export.load(model_file[2])
    calls = []
    run = predictor.run

    def counting_run(x):
        calls.append(x.shape[0])
        return run(x)

    predictor.run = counting_run
    app = create_app(predictor, max_batch_size=8, max_wait_ms=50.0, warmup=False)
    url, stop = _start(app)
    try:
        xs = np.random.default_rng(3).normal(size=(16, 3, FEATURES)).astype(np.float32)
        with httpx.Client(base_url=url, timeout=30) as client:

            def ask(x):
                return client.post("/predict", json={"inputs": x.tolist()}).json()["predictions"]

            with concurrent.futures.ThreadPoolExecutor(16) as pool:
                answers = list(pool.map(ask, xs))
    finally:
        stop()
    np.testing.assert_allclose(
        np.concatenate(answers),
        _expected(model_file, xs.reshape(-1, FEATURES)),
        rtol=1e-5,
        atol=1e-6,
    )
    assert sum(calls) == 48 and max(calls) <= 8
    assert len(calls) < 16  # some requests were served together


def test_create_app_rejects_bad_options(model_file):
    predictor = jnn.export.load(model_file[2])
    with pytest.raises(ValueError, match="max_body_bytes"):
        create_app(predictor, max_body_bytes=0)
    with pytest.raises(ValueError, match="max_wait_ms"):
        create_app(predictor, max_wait_ms=-1)


def test_serve_checks_options_before_opening_a_socket(model_file, monkeypatch):
    from jnn import serve as serve_module

    opened = []
    monkeypatch.setattr(serve_module.socket, "socket", lambda *a, **k: opened.append(a))
    with pytest.raises(ValueError, match="max_body_bytes"):
        serve_module.serve(model_file[2], port=0, max_body_bytes=0)
    assert opened == []


def test_cli_serve_subprocess(model_file):
    """`python -m jnn serve` on port 0: loopback by default, answers, then shuts down."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "jnn", "serve", model_file[2], "--port", "0", "--no-batching"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    try:
        line = ""
        deadline = time.monotonic() + 90
        while "listening on" not in line and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
        assert "listening on http://127.0.0.1:" in line, line
        url = line.split("listening on ")[1].split()[0]
        r = httpx.post(url + "/predict", json={"inputs": [0.5] * FEATURES}, timeout=30)
        assert r.status_code == 200 and len(r.json()["predictions"]) == 2
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode is not None
