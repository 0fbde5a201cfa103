"""Real HTTP tests of jnn.serve against servers on free loopback ports."""

import asyncio
import concurrent.futures
import json
import os
import re
import signal
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
from _reference import trained

import jnn
import jnn.export
from jnn.serve import create_app

FEATURES = 4
MAX_BODY = 4096


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    model = jnn.serial(jnn.Dense(8, activation="relu"), jnn.Dense(2))
    _, params = model.init(jax.random.key(0), (-1, FEATURES))
    # TRAINED params: a file holding freshly initialised ones would not match predict.
    x = np.random.default_rng(1).normal(size=(64, FEATURES)).astype(np.float32)
    params = trained(model, params, x, np.stack([x.sum(1), x[:, 0] - x[:, 1]], axis=1))
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


def _half(model_file):
    """predict's answer for one example of 0.5s (what the tests below post)."""
    return _expected(model_file, np.full((1, FEATURES), 0.5))[0]


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
    got = client.post("/predict", json={"inputs": big}).json()["predictions"]
    np.testing.assert_allclose(got, _expected(model_file, big), rtol=1e-5, atol=1e-6)


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
        # 400 at Python's default recursion limit, 422 (not an object) where jax2onnx's
        # plugins raised it (in the same test process): a clear error either way.
        (b"[" * 2000 + b"]" * 2000, (400, 422), r"malformed JSON|\{\"inputs\""),
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
    if isinstance(status, tuple):
        assert r.status_code in status and re.search(match, r.json()["detail"]), r.text
    else:
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
    with pytest.raises(ValueError, match="compute_timeout_s"):
        create_app(predictor, compute_timeout_s=0)
    from jnn.serve import serve

    for option in ({"port": 99999}, {"port": True}, {"header_timeout_s": 0},
                   {"max_connections": 0}, {"max_header_bytes": 1.5}):  # fmt: skip
        with pytest.raises(ValueError, match=next(iter(option))):
            serve(predictor, **option)


def test_serve_checks_options_before_opening_a_socket(model_file, monkeypatch):
    from jnn import serve as serve_module

    opened = []
    monkeypatch.setattr(serve_module.socket, "socket", lambda *a, **k: opened.append(a))
    with pytest.raises(ValueError, match="max_body_bytes"):
        serve_module.serve(model_file[2], port=0, max_body_bytes=0)
    assert opened == []


def _serve_subprocess(path, *flags):
    """``python -m jnn serve path --port 0 *flags``; returns (process, url) once it listens."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "jnn", "serve", path, "--port", "0", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    line = ""
    deadline = time.monotonic() + 90
    while "listening on" not in line and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
    if "listening on http://127.0.0.1:" not in line:
        proc.terminate()
        raise AssertionError(f"jnn serve did not start: {line!r}")
    return proc, line.split("listening on ")[1].split()[0]


def _stop(proc):
    proc.terminate()
    # uvicorn shuts down cleanly on SIGTERM (0); killed mid-startup it reports the signal.
    assert proc.wait(timeout=30) in (0, -signal.SIGTERM), proc.returncode


def test_cli_serve_subprocess(model_file):
    """`python -m jnn serve` on port 0: loopback, connectable the moment it says so, answers."""
    proc, url = _serve_subprocess(model_file[2], "--no-batching")
    try:
        host, port = url.removeprefix("http://").split(":")
        socket.create_connection((host, int(port)), timeout=5).close()  # refused before the fix
        r = httpx.post(url + "/predict", json={"inputs": [0.5] * FEATURES}, timeout=30)
        assert r.status_code == 200
        np.testing.assert_allclose(r.json()["predictions"], _half(model_file), rtol=1e-5, atol=1e-6)
    finally:
        _stop(proc)


def test_the_socket_listens_before_listening_on_is_printed():
    """serve() prints its address once the socket accepts: _listening_socket listens already."""
    from jnn.serve import _listening_socket

    sock = _listening_socket("127.0.0.1", 0)
    try:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        socket.create_connection(sock.getsockname(), timeout=5).close()
    finally:
        sock.close()


# ----- the connection layer: deadlines, header size, connection limit (a real server process)


@pytest.fixture(scope="module")
def onnx_file(model_file, tmp_path_factory):
    model, params, _ = model_file
    path = str(tmp_path_factory.mktemp("serve_onnx") / "m.onnx")
    jnn.export.save_onnx(path, model, params, (-1, FEATURES))
    return path


@pytest.fixture(scope="module")
def guarded_server(onnx_file):
    proc, url = _serve_subprocess(
        onnx_file, "--header-timeout-s", "0.5", "--body-timeout-s", "0.5",
        "--max-header-bytes", "8192",
    )  # fmt: skip
    host, port = url.removeprefix("http://").split(":")
    yield url, (host, int(port))
    _stop(proc)


def _raw(address, data, *, wait=10.0):
    """Send ``data`` on a fresh connection; everything received until the server closes."""
    with socket.create_connection(address, timeout=wait) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_slow_headers_get_408_and_the_connection_closes(guarded_server):
    url, address = guarded_server
    reply = _raw(address, b"POST /predict HTTP/1.1\r\nHost: x\r\n")  # headers never end
    assert reply.startswith(b"HTTP/1.1 408 ") and b"headers not received within 0.5s" in reply
    assert _raw(address, b"") == b""  # an idle connection is closed, not held
    assert httpx.get(url + "/health", timeout=10).status_code == 200


def test_slow_body_gets_408(guarded_server):
    url, address = guarded_server
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    reply = _raw(address, head + b"Content-Length: 100\r\n\r\n" + b'{"inputs": [')
    assert reply.startswith(b"HTTP/1.1 408 ") and b"body not received within 0.5s" in reply
    assert httpx.get(url + "/health", timeout=10).status_code == 200


def test_oversized_headers_get_431_not_a_reset(guarded_server, model_file):
    url = guarded_server[0]
    r = httpx.get(url + "/health", headers={"x-big": "a" * 200_000}, timeout=10)
    assert r.status_code == 431 and "8192 bytes" in r.json()["detail"]
    ok = httpx.post(url + "/predict", json={"inputs": [0.5] * FEATURES}, timeout=10)
    assert ok.status_code == 200
    np.testing.assert_allclose(ok.json()["predictions"], _half(model_file), rtol=1e-5, atol=1e-6)


def test_connections_past_the_limit_get_503_then_service_resumes(onnx_file, model_file):
    proc, url = _serve_subprocess(onnx_file, "--max-connections", "3")
    host, port = url.removeprefix("http://").split(":")
    try:
        idle = [socket.create_connection((host, int(port)), timeout=5) for _ in range(3)]
        time.sleep(0.2)  # let the server accept them (not a timing assertion)
        r = httpx.get(url + "/health", timeout=10)
        assert r.status_code == 503
        for sock in idle:
            sock.close()
        deadline = time.monotonic() + 10
        while (r := httpx.get(url + "/health", timeout=10)).status_code != 200:
            assert time.monotonic() < deadline, r.text
            time.sleep(0.05)
    finally:
        _stop(proc)


# ----- compute time limit and the batcher


class _Gate:
    """A predictor wrapper whose ``run`` blocks until released, recording batch sizes."""

    def __init__(self, predictor):
        self.predictor, self.calls, self.open = predictor, [], threading.Event()
        self.metadata, self.input_shape = predictor.metadata, predictor.input_shape
        self.check_input, self.warmup = predictor.check_input, predictor.warmup

    def run(self, x):
        self.calls.append(x.shape[0])
        self.open.wait(timeout=30)
        return self.predictor.run(x)

    def __call__(self, x):
        return self.run(x)


@pytest.mark.parametrize("batching", [True, False])
def test_a_forward_pass_over_the_time_limit_gets_503_and_the_server_stays_up(model_file, batching):
    gate = _Gate(jnn.export.load(model_file[2]))
    app = create_app(gate, batching=batching, compute_timeout_s=0.3, warmup=False)
    url, stop = _start(app)
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            r = client.post("/predict", json={"inputs": [0.5] * FEATURES})
            assert r.status_code == 503 and "compute_timeout_s=0.3" in r.json()["detail"]
            assert client.get("/health").status_code == 200
            gate.open.set()
            for _ in range(50):  # the timed-out call finishes; then the model answers again
                r = client.post("/predict", json={"inputs": [0.5] * FEATURES})
                if r.status_code == 200:
                    break
            assert r.status_code == 200
            np.testing.assert_allclose(r.json()["predictions"], _half(model_file), rtol=1e-5,
                                       atol=1e-6)  # fmt: skip
    finally:
        gate.open.set()
        stop()


def test_requests_queued_while_the_model_is_busy_run_together(model_file):
    """No waiting for company: the first request runs alone, those queued behind it as one."""
    gate = _Gate(jnn.export.load(model_file[2]))
    app = create_app(gate, max_batch_size=64, warmup=False)
    url, stop = _start(app)
    xs = np.random.default_rng(4).normal(size=(6, FEATURES)).astype(np.float32)
    try:
        with (
            httpx.Client(base_url=url, timeout=30) as client,
            concurrent.futures.ThreadPoolExecutor(6) as pool,
        ):
            ask = lambda x: client.post("/predict", json={"inputs": x.tolist()}).json()  # noqa: E731
            first = pool.submit(ask, xs[0])
            deadline = time.monotonic() + 30
            while not gate.calls:  # the first request is in the model
                assert time.monotonic() < deadline
                time.sleep(0.01)
            rest = [pool.submit(ask, x) for x in xs[1:]]
            time.sleep(0.3)  # let them queue (not a timing assertion)
            gate.open.set()
            answers = [first.result()["predictions"]] + [f.result()["predictions"] for f in rest]
    finally:
        gate.open.set()
        stop()
    np.testing.assert_allclose(answers, _expected(model_file, xs), rtol=1e-5, atol=1e-6)
    assert gate.calls == [1, 5]


def test_a_lone_request_never_waits_for_company(model_file, monkeypatch):
    """With the default max_wait_ms=0 the batcher never sleeps; it did (2 ms) before."""
    from jnn.serve import _Batcher

    slept, here = [], []
    real_sleep = asyncio.sleep

    async def recording_sleep(seconds, *args):
        slept.append((asyncio.get_running_loop(), seconds))  # other servers' loops sleep too
        return await real_sleep(seconds, *args)

    async def scenario():
        here.append(asyncio.get_running_loop())
        batcher = _Batcher(lambda x: x * 2, max_rows=8, max_wait_s=0.0)
        batcher.queue = asyncio.Queue()
        task = asyncio.create_task(batcher.run_forever())
        outs = []
        for i in range(3):
            outs.append(await (await batcher.submit(np.full((1, 2), float(i)))))
        task.cancel()
        return outs

    monkeypatch.setattr(asyncio, "sleep", recording_sleep)
    outs = asyncio.run(scenario())
    assert [o.tolist() for o in outs] == [[[0.0, 0.0]], [[2.0, 2.0]], [[4.0, 4.0]]]
    assert [s for loop, s in slept if loop is here[0] and s > 0] == []
