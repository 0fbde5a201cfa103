"""An HTTP JSON service for a model file (FastAPI + uvicorn, the ``serve`` extra).

Endpoints: ``POST /predict`` with ``{"inputs": one example or a batch}``,
``GET /health``, ``GET /metadata``, and FastAPI's OpenAPI docs at ``/docs``.
Malformed JSON is a 400, a body over ``max_body_bytes`` a 413, a wrong shape
or dtype a 422 naming the expected shape, a forward pass over
``compute_timeout_s`` a 503; an unexpected error is a 500 and the server keeps
running. Requests that arrive too slowly (408), oversized headers (431) and
too many connections (503) are refused by the connection layer (see
:func:`serve`).

``.onnx`` files run on ONNX Runtime and this module then never imports jax
(a serving image needs ``pip install 'jnn[serve-onnx]'`` only); ``.jnn``
files run on XLA. With micro-batching on, the requests queued while the
model is busy are run together in one call of at most ``max_batch_size``
rows; a request that finds the model idle runs at once. A model so fast that
handing it to a worker thread would cost more (``inline_below_ms``) runs on
the event loop.

FastAPI and uvicorn are imported only when an app is built, so ``import jnn``
never needs them.
"""

import asyncio
import contextlib
import json
import os
import socket
import sys
import time
from typing import Any

import numpy as np

from jnn._onnx_runtime import ONNX_SUFFIX, load_onnx
from jnn._predictor import LoadedModel

DEFAULT_MAX_BODY_BYTES = 1 << 20
# Connection-layer defaults (also jnn serve's), safe on loopback and a LAN: a 1 MiB body
# arrives well within 30 s at 1 Mbit/s; idle kept-alive connections close after 5 s.
_HEADER_TIMEOUT_S, _BODY_TIMEOUT_S, _KEEP_ALIVE_S = 10.0, 30.0, 5
_MAX_CONNECTIONS, _MAX_HEADER_BYTES = 256, 1 << 16

_PREDICT_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "inputs": {
                            "description": "One example (the input shape without its batch axis) "
                            "or a batch of examples, as nested lists of numbers.",
                            "type": "array",
                        }
                    },
                },
                "example": {"inputs": [[0.0, 1.0]]},
            }
        },
    },
}


def load_model(path: str | os.PathLike, *, expected_sha256: str | None = None) -> LoadedModel:
    """Load an ``.onnx`` file on ONNX Runtime (no jax), any other with :func:`jnn.export.load`.

    Args:
      path: a model file.
      expected_sha256: if given, the file's sha256 (hex) must equal it.

    Returns:
      A predictor (:class:`jnn.export.OnnxPredictor` or :class:`jnn.export.Predictor`).

    Raises:
      OSError: if the file cannot be read.
      ValueError: if it is not a usable model, or its sha256 differs.

    Example:
      >>> import os, tempfile, numpy as np, jnn, jnn.export
      >>> from jnn.serve import load_model
      >>> model = jnn.Dense(1)
      >>> params = {"w": np.ones((3, 1), np.float32), "b": np.zeros(1, np.float32)}
      >>> path = os.path.join(tempfile.mkdtemp(), "m.onnx")
      >>> _ = jnn.export.save_onnx(path, model, params, (-1, 3))
      >>> predictor = load_model(path)  # in a serving process, this imports no jax
      >>> type(predictor).__name__, predictor(np.ones((2, 3))).ravel()
      ('OnnxPredictor', array([3., 3.], dtype=float32))
    """
    if os.fspath(path).lower().endswith(ONNX_SUFFIX):
        return load_onnx(path, expected_sha256=expected_sha256)
    from jnn.export import load  # jax, for .jnn files only

    return load(path, expected_sha256=expected_sha256)


def _import_server() -> tuple[Any, Any]:
    try:
        import fastapi
        import uvicorn
    except ImportError as err:
        raise ImportError(
            f"jnn serve needs FastAPI and uvicorn ({err}); install them with "
            "pip install 'jnn[serve]'."
        ) from None
    return fastapi, uvicorn


class _Batcher:
    """Runs the requests queued while the model was busy as one call (dynamic micro-batching).

    A request that finds the model idle runs at once, alone: nothing waits for
    company unless ``max_wait_s > 0`` asks for it.
    """

    def __init__(self, run: Any, max_rows: int, max_wait_s: float):
        self.run, self.max_rows, self.max_wait_s = run, max_rows, max_wait_s
        self.queue: asyncio.Queue | None = None  # created on the serving loop, at start-up

    async def submit(self, x: np.ndarray) -> Any:
        """Queue ``x``; returns the future of its predictions."""
        future = asyncio.get_running_loop().create_future()
        if self.queue is None:
            raise RuntimeError("the batcher starts with the server")
        self.queue.put_nowait((x, future))
        return future

    def _take(self, items: list, rows: int) -> tuple[int, Any]:
        """Add queued requests to ``items`` without exceeding ``max_rows``; (rows, carry-over)."""
        assert self.queue is not None
        while rows < self.max_rows and not self.queue.empty():
            item = self.queue.get_nowait()
            if rows + item[0].shape[0] > self.max_rows:
                return rows, item  # opens the next batch
            items.append(item)
            rows += item[0].shape[0]
        return rows, None

    async def run_forever(self) -> None:
        """Take the first waiting request and everything queued behind it, run, repeat.

        A batch never exceeds ``max_rows`` (a request that would overflow it
        opens the next one), so every batch size is one compiled at warm-up.
        """
        loop = asyncio.get_running_loop()
        assert self.queue is not None, "the batcher starts with the server"
        carry = None
        while True:
            items = [carry if carry is not None else await self.queue.get()]
            rows, carry = self._take(items, items[0][0].shape[0])
            if carry is None and rows < self.max_rows and self.max_wait_s > 0:
                await asyncio.sleep(self.max_wait_s)
                rows, carry = self._take(items, rows)
            live = [(x, f) for x, f in items if not f.done()]  # timed-out requests are skipped
            if not live:
                continue
            xs = live[0][0] if len(live) == 1 else np.concatenate([x for x, _ in live])
            try:
                ys = await loop.run_in_executor(None, self.run, xs)
            except Exception as err:  # give every waiting request the error, keep serving
                for _, future in live:
                    if not future.done():
                        future.set_exception(err)
                continue
            start = 0
            for x, future in live:
                if not future.done():
                    future.set_result(ys[start : start + x.shape[0]])
                start += x.shape[0]


def create_app(
    predictor: LoadedModel,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    batching: bool = True,
    max_batch_size: int = 64,
    max_wait_ms: float = 0.0,
    compute_timeout_s: float = 30.0,
    inline_below_ms: float = 0.5,
    warmup: bool = True,
    on_ready: Any = None,
) -> Any:
    """A FastAPI app serving ``predictor``.

    Args:
      predictor: from :func:`load_model` (or :func:`jnn.export.load`).
      max_body_bytes: larger request bodies are refused with 413.
      batching: whether to micro-batch concurrent requests.
      max_batch_size: most rows per micro-batch (larger requests run alone).
      max_wait_ms: how long a batch waits for more requests once the queue
        is empty (default 0: never; requests queued while the model is busy
        are batched anyway).
      compute_timeout_s: a request whose predictions take longer (queueing
        included) is answered 503; the server keeps serving.
      inline_below_ms: a model whose largest batch (``max_batch_size`` rows)
        runs faster than this, as measured at warm-up, runs on the event loop
        (no hand-off to a worker thread, which would cost more than the model);
        slower models run in a worker thread, where ``compute_timeout_s``
        applies. 0 always uses the worker thread.
      warmup: compile the model for every batch bucket at start-up (and time it).
      on_ready: optional callable run once start-up (and warm-up) is done.

    Returns:
      A ``fastapi.FastAPI`` application (run it with uvicorn, or :func:`serve`).

    Raises:
      ImportError: if FastAPI or uvicorn is missing (``pip install 'jnn[serve]'``).
      ValueError: for a non-positive size or timeout, or a negative wait.

    Example:
      >>> import os, tempfile, jax, jnn, jnn.export
      >>> from jnn.serve import create_app, load_model
      >>> model = jnn.Dense(2)
      >>> _, params = model.init(jax.random.key(0), (-1, 3))
      >>> path = os.path.join(tempfile.mkdtemp(), "m.jnn")
      >>> _ = jnn.export.save(path, model, params, (-1, 3))
      >>> app = create_app(load_model(path), max_batch_size=4)
      >>> sorted(r.path for r in app.routes if r.path in ("/predict", "/health", "/metadata"))
      ['/health', '/metadata', '/predict']
    """
    fastapi, _ = _import_server()
    from fastapi.responses import JSONResponse, Response

    for name, value in (("max_body_bytes", max_body_bytes), ("max_batch_size", max_batch_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"create_app: {name} must be a positive int, got {value!r}.")
    if not _is_number(max_wait_ms) or not max_wait_ms >= 0:
        raise ValueError(f"create_app: max_wait_ms must be >= 0, got {max_wait_ms!r}.")
    if not _is_number(compute_timeout_s) or not 0 < compute_timeout_s < float("inf"):
        raise ValueError(
            f"create_app: compute_timeout_s must be a positive number, got {compute_timeout_s!r}."
        )
    if not _is_number(inline_below_ms) or not 0 <= inline_below_ms < float("inf"):
        raise ValueError(f"create_app: inline_below_ms must be >= 0, got {inline_below_ms!r}.")
    batcher = _Batcher(predictor.run, max_batch_size, max_wait_ms / 1e3) if batching else None
    inline = [False]  # set at warm-up: is the largest batch fast enough to run on the loop?

    def warm_up() -> None:
        predictor.warmup(max_batch_size)
        largest = np.zeros((max_batch_size, *predictor.input_shape[1:]), predictor.input_dtype)
        fastest = float("inf")
        for _ in range(10):  # the fastest of 10 runs: what the model costs, not the machine's noise
            start = time.perf_counter()
            predictor.run(largest)
            fastest = min(fastest, time.perf_counter() - start)
        inline[0] = fastest * 1e3 < inline_below_ms

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if warmup:
            await asyncio.get_running_loop().run_in_executor(None, warm_up)
        task = None
        if batcher is not None:
            batcher.queue = asyncio.Queue()  # bound to this server's event loop
            task = asyncio.create_task(batcher.run_forever())
        if on_ready is not None:
            on_ready()
        yield
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    meta = predictor.metadata
    app = fastapi.FastAPI(
        title="jnn model",
        description=meta.get("description") or "A model exported with jnn.export.",
        version=str(meta.get("jnn_version")),
        lifespan=lifespan,
    )

    def error(status: int, message: str) -> Any:
        return JSONResponse({"detail": message}, status_code=status)

    features = tuple(predictor.input_shape[1:])
    expected = "(n, " + ", ".join(map(str, features)) + ")"

    @app.get("/health")
    async def health() -> dict:
        """Liveness: the model is loaded and warmed up."""
        return {"status": "ok"}

    @app.get("/metadata")
    async def metadata() -> dict:
        """Input/output shapes and dtypes, versions, labels and the model summary."""
        return meta

    @app.post("/predict", openapi_extra=_PREDICT_DOC)
    async def predict(request: fastapi.Request) -> Any:  # type: ignore[name-defined]
        """Predict on one example or a batch: ``{"inputs": [...]}`` -> ``{"predictions": ...}``."""
        too_big = f"request body over {max_body_bytes} bytes; send smaller batches."
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body_bytes:
            return error(413, too_big)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                return error(413, too_big)
            chunks.append(chunk)
        try:
            body = json.loads(b"".join(chunks))
        except (ValueError, RecursionError) as err:
            return error(400, f"malformed JSON: {err}")
        if not isinstance(body, dict) or "inputs" not in body:
            return error(
                422,
                'expected a JSON object {"inputs": [...]} holding one example of shape '
                f"{features} or a batch of shape {expected}.",
            )
        try:
            raw = np.asarray(body["inputs"])
            single = raw.shape == features
            x = predictor.check_input(raw, allow_single=True)
        except (ValueError, TypeError, RecursionError) as err:
            message = str(err)
            if expected not in message:
                message += f" The model expects inputs of shape {expected} or {features}."
            return error(422, message)
        if inline[0] and x.shape[0] <= max_batch_size:
            y = predictor.run(x)  # faster than handing it to a thread (measured at warm-up)
            content = json.dumps({"predictions": (y[0] if single else y).tolist()})
            return Response(content, media_type="application/json")
        loop = asyncio.get_running_loop()
        if batcher is not None and x.shape[0] < max_batch_size:
            pending = await batcher.submit(x)
        else:
            pending = loop.run_in_executor(None, predictor, x)
        try:
            y = await asyncio.wait_for(asyncio.shield(pending), compute_timeout_s)
        except TimeoutError:
            return error(
                503,
                f"the model did not answer within compute_timeout_s={compute_timeout_s}s "
                "(the server is busy or the input too large); retry, or send fewer rows.",
            )
        content = json.dumps({"predictions": (y[0] if single else y).tolist()})
        return Response(content, media_type="application/json")

    @app.exception_handler(Exception)
    async def unexpected(request: Any, err: Exception) -> Any:
        return error(500, f"internal error: {type(err).__name__}: {err}")

    return app


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def serve(
    model: str | os.PathLike | LoadedModel,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "warning",
    expected_sha256: str | None = None,
    header_timeout_s: float = _HEADER_TIMEOUT_S,
    body_timeout_s: float = _BODY_TIMEOUT_S,
    max_connections: int = _MAX_CONNECTIONS,
    max_header_bytes: int = _MAX_HEADER_BYTES,
    keep_alive_s: int = _KEEP_ALIVE_S,
    **app_options: Any,
) -> None:
    """Serve a model file (or a loaded predictor) until interrupted.

    Binds ``host`` (loopback by default; ``"0.0.0.0"`` must be asked for),
    prints the address once the model is warmed up and the socket accepts
    connections (``port=0`` picks a free one), and shuts down cleanly on
    Ctrl-C / SIGTERM. ``jnn serve FILE`` on the command line calls it. In a
    script (not run here: it blocks until interrupted)::

        jnn.serve.serve("model.onnx", port=8000, max_batch_size=32)

    Connection limits (all refusals are JSON ``{"detail": ...}``): a request
    whose line and headers take over ``header_timeout_s`` or whose body takes
    over ``body_timeout_s`` to arrive is answered 408 and its connection
    closed; headers over ``max_header_bytes`` get 431; past
    ``max_connections`` open connections, requests get 503; an idle kept-alive
    connection closes after ``keep_alive_s``.

    Args:
      model: a ``.jnn`` or ``.onnx`` file, or a loaded predictor.
      host: the address to bind; anything but loopback prints a warning, as
        the service has no authentication.
      port: the port to bind (0 to 65535; 0 picks a free one).
      log_level: uvicorn's log level.
      expected_sha256: refuse a file whose sha256 (hex) differs.
      header_timeout_s: default 10.
      body_timeout_s: default 30.
      max_connections: default 256.
      max_header_bytes: default 65536.
      keep_alive_s: default 5.
      **app_options: keyword arguments of :func:`create_app` (``max_body_bytes``,
        ``batching``, ``max_batch_size``, ``max_wait_ms``, ``compute_timeout_s``,
        ``warmup``).

    Raises:
      ImportError: if FastAPI or uvicorn is missing (``pip install 'jnn[serve]'``).
      ValueError: for a bad option, or a file that is not a usable model.
      OSError: if the address cannot be bound (e.g. the port is in use).

    Example:
      ``serve(path, max_batch_size=32)`` serves the app that
      ``create_app(load_model(path), max_batch_size=32)`` builds, which can be
      inspected without starting a server:

      >>> import os, tempfile, jax, jnn, jnn.export
      >>> from jnn.serve import create_app, load_model
      >>> model = jnn.Dense(2)
      >>> _, params = model.init(jax.random.key(0), (-1, 3))
      >>> path = os.path.join(tempfile.mkdtemp(), "m.onnx")
      >>> _ = jnn.export.save_onnx(path, model, params, (-1, 3))
      >>> app = create_app(load_model(path), max_batch_size=32)
      >>> sorted(app.openapi()["paths"])
      ['/health', '/metadata', '/predict']
    """
    _, uvicorn = _import_server()
    from jnn._http import limited_protocol

    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ValueError(f"serve: port must be an int from 0 to 65535, got {port!r}.")
    for name, value in (("header_timeout_s", header_timeout_s), ("body_timeout_s", body_timeout_s)):
        if not _is_number(value) or not 0 < value < float("inf"):
            raise ValueError(f"serve: {name} must be a positive number of seconds, got {value!r}.")
    for name, value in (
        ("max_connections", max_connections),
        ("max_header_bytes", max_header_bytes),
        ("keep_alive_s", keep_alive_s),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"serve: {name} must be a positive int, got {value!r}.")
    predictor = (
        load_model(model, expected_sha256=expected_sha256)
        if isinstance(model, (str, os.PathLike))
        else model
    )
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"jnn serve: warning: binding {host}, reachable from other machines; "
            "there is no authentication. Use the default 127.0.0.1 for local use.",
            file=sys.stderr,
            flush=True,
        )
    address: list[str] = []  # the bound URL, once the socket exists

    def ready() -> None:
        url = address[0]
        print(f"jnn serve: listening on {url} (API docs at {url}/docs)", flush=True)

    # The app first: bad options raise before any socket is opened.
    app = create_app(predictor, on_ready=ready, **app_options)
    config = uvicorn.Config(
        app,
        log_level=log_level,
        http=limited_protocol(
            header_timeout=header_timeout_s,
            body_timeout=body_timeout_s,
            max_header_bytes=max_header_bytes,
        ),
        limit_concurrency=max_connections,
        timeout_keep_alive=keep_alive_s,
        h11_max_incomplete_event_size=max_header_bytes + (1 << 20),  # ours answers 431 first
    )
    server = uvicorn.Server(config)
    sock = _listening_socket(host, port)
    try:
        bound = sock.getsockname()
        address.append(f"http://{bound[0]}:{bound[1]}")
        server.run(sockets=[sock])
    finally:
        sock.close()
        sys.stdout.flush()


def _listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``(host, port)`` and already listening.

    Listening before the app starts means a client that connects as soon as
    "listening on" is printed is queued by the kernel, never refused.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    return sock


__all__ = ["DEFAULT_MAX_BODY_BYTES", "create_app", "load_model", "serve"]
