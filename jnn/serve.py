"""An HTTP JSON service for an exported model (FastAPI + uvicorn, the ``serve`` extra).

Endpoints: ``POST /predict`` with ``{"inputs": one example or a batch}``,
``GET /health``, ``GET /metadata``, and FastAPI's OpenAPI docs at ``/docs``.
Malformed JSON is a 400, a body over ``max_body_bytes`` a 413, a wrong shape
or dtype a 422 naming the expected shape; an unexpected error is a 500 and
the server keeps running.

With micro-batching on, concurrent requests wait up to ``max_wait_ms`` to be
concatenated into one device call of at most ``max_batch_size`` rows. The
model is run with rows padded to powers of two, all compiled at start-up.

FastAPI and uvicorn are imported only when an app is built, so ``import jnn``
never needs them.
"""

import asyncio
import contextlib
import json
import os
import socket
import sys
from typing import Any

import numpy as np

from jnn.export import Predictor, load

DEFAULT_MAX_BODY_BYTES = 1 << 20

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
    """Collects concurrent requests into one device call (dynamic micro-batching)."""

    def __init__(self, predictor: Predictor, max_rows: int, max_wait_s: float):
        self.predictor, self.max_rows, self.max_wait_s = predictor, max_rows, max_wait_s
        self.queue: asyncio.Queue | None = None  # created on the serving loop, at start-up

    async def submit(self, x: np.ndarray) -> np.ndarray:
        future = asyncio.get_running_loop().create_future()
        assert self.queue is not None, "the batcher starts with the server"
        await self.queue.put((x, future))
        return await future

    async def run_forever(self) -> None:
        """Take the first waiting request, then whatever arrives within ``max_wait_s``.

        A batch never exceeds ``max_rows`` (requests that would overflow it open
        the next one), so every batch size is one that was compiled at warm-up.
        """
        loop = asyncio.get_running_loop()
        queue = self.queue
        assert queue is not None, "the batcher starts with the server"
        carry = None
        while True:
            items = [carry if carry is not None else await queue.get()]
            carry, rows = None, items[0][0].shape[0]
            waited = False
            while carry is None and rows < self.max_rows:
                if queue.empty():
                    if waited or self.max_wait_s <= 0:
                        break
                    await asyncio.sleep(self.max_wait_s)
                    waited = True
                    continue
                item = queue.get_nowait()
                if rows + item[0].shape[0] > self.max_rows:
                    carry = item
                else:
                    items.append(item)
                    rows += item[0].shape[0]
            xs = np.concatenate([x for x, _ in items])
            try:
                ys = await loop.run_in_executor(None, self.predictor.run, xs)
            except Exception as err:  # give every waiting request the error, keep serving
                for _, future in items:
                    if not future.done():
                        future.set_exception(err)
                continue
            start = 0
            for x, future in items:
                if not future.done():
                    future.set_result(ys[start : start + x.shape[0]])
                start += x.shape[0]


def create_app(
    predictor: Predictor,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    batching: bool = True,
    max_batch_size: int = 64,
    max_wait_ms: float = 2.0,
    warmup: bool = True,
    on_ready: Any = None,
) -> Any:
    """A FastAPI app serving ``predictor``.

    Args:
      predictor: from :func:`jnn.export.load`.
      max_body_bytes: larger request bodies are refused with 413.
      batching: whether to micro-batch concurrent requests.
      max_batch_size: most rows per micro-batch (larger requests run alone).
      max_wait_ms: how long a request may wait for others to join its batch.
      warmup: compile the model for every batch bucket at start-up.
      on_ready: optional callable run once start-up (and warm-up) is done.

    Returns:
      A ``fastapi.FastAPI`` application (run it with uvicorn, or :func:`serve`).

    Raises:
      ImportError: if FastAPI or uvicorn is missing (``pip install 'jnn[serve]'``).
      ValueError: for a non-positive size or a negative wait.

    Example:
      >>> import os, tempfile, jax, jnn, jnn.export
      >>> from jnn.serve import create_app
      >>> model = jnn.Dense(2)
      >>> _, params = model.init(jax.random.key(0), (-1, 3))
      >>> path = os.path.join(tempfile.mkdtemp(), "m.jnn")
      >>> _ = jnn.export.save(path, model, params, (-1, 3))
      >>> app = create_app(jnn.export.load(path), max_batch_size=4)
      >>> sorted(r.path for r in app.routes if r.path in ("/predict", "/health", "/metadata"))
      ['/health', '/metadata', '/predict']
    """
    fastapi, _ = _import_server()
    from fastapi.responses import JSONResponse

    for name, value in (("max_body_bytes", max_body_bytes), ("max_batch_size", max_batch_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"create_app: {name} must be a positive int, got {value!r}.")
    if not max_wait_ms >= 0:
        raise ValueError(f"create_app: max_wait_ms must be >= 0, got {max_wait_ms!r}.")
    batcher = _Batcher(predictor, max_batch_size, max_wait_ms / 1e3) if batching else None

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if warmup:
            await asyncio.get_running_loop().run_in_executor(None, predictor.warmup, max_batch_size)
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
        description=meta.get("description") or "A jnn model exported with jnn.export.save.",
        version=str(meta.get("jnn_version")),
        lifespan=lifespan,
    )

    def error(status: int, message: str) -> Any:
        return JSONResponse({"detail": message}, status_code=status)

    @app.get("/health")
    async def health() -> dict:
        """Liveness: the model is loaded and compiled."""
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
                f"{predictor.input_shape[1:]} or a batch of shape (n, "
                + ", ".join(map(str, predictor.input_shape[1:]))
                + ").",
            )
        features = tuple(predictor.input_shape[1:])
        expected = "(n, " + ", ".join(map(str, features)) + ")"
        try:
            raw = np.asarray(body["inputs"])
            single = raw.shape == tuple(predictor.input_shape[1:])
            x = predictor.check_input(raw, allow_single=True)
        except (ValueError, TypeError, RecursionError) as err:
            message = str(err)
            if expected not in message:
                message += f" The model expects inputs of shape {expected} or {features}."
            return error(422, message)
        if batcher is not None and x.shape[0] < max_batch_size:
            y = await batcher.submit(x)
        else:
            y = await asyncio.get_running_loop().run_in_executor(None, predictor, x)
        return {"predictions": (y[0] if single else y).tolist()}

    @app.exception_handler(Exception)
    async def unexpected(request: Any, err: Exception) -> Any:
        return error(500, f"internal error: {type(err).__name__}: {err}")

    return app


def serve(
    model: str | os.PathLike | Predictor,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "warning",
    **app_options: Any,
) -> None:
    """Serve a model file (or loaded :class:`Predictor`) until interrupted.

    Binds ``host`` (loopback by default; ``"0.0.0.0"`` must be asked for),
    prints the address it listens on once the model is warmed up (``port=0``
    picks a free one), and shuts down cleanly on Ctrl-C / SIGTERM.
    ``jnn serve model.jnn`` on the command line calls it. In a script (not run
    here: it blocks until interrupted)::

        jnn.serve.serve("model.jnn", port=8000, max_batch_size=32)

    Args:
      model: a file written by :func:`jnn.export.save`, or a loaded
        :class:`jnn.export.Predictor`.
      host: the address to bind; anything but loopback prints a warning, as
        the service has no authentication.
      port: the port to bind; 0 picks a free one.
      log_level: uvicorn's log level.
      **app_options: keyword arguments of :func:`create_app` (``max_body_bytes``,
        ``batching``, ``max_batch_size``, ``max_wait_ms``, ``warmup``).

    Raises:
      ImportError: if FastAPI or uvicorn is missing (``pip install 'jnn[serve]'``).
      ValueError: from :func:`jnn.export.load`, for a file that is not a usable model.
      OSError: if the address cannot be bound (e.g. the port is in use).

    Example:
      ``serve(path, max_batch_size=32)`` serves the app that
      ``create_app(load(path), max_batch_size=32)`` builds, which can be
      inspected without starting a server:

      >>> import os, tempfile, jax, jnn, jnn.export
      >>> from jnn.serve import create_app
      >>> model = jnn.Dense(2)
      >>> _, params = model.init(jax.random.key(0), (-1, 3))
      >>> path = os.path.join(tempfile.mkdtemp(), "m.jnn")
      >>> _ = jnn.export.save(path, model, params, (-1, 3))
      >>> app = create_app(jnn.export.load(path), max_batch_size=32)
      >>> sorted(app.openapi()["paths"])
      ['/health', '/metadata', '/predict']
    """
    _, uvicorn = _import_server()
    predictor = model if isinstance(model, Predictor) else load(model)
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
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level))
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        bound = sock.getsockname()
        address.append(f"http://{bound[0]}:{bound[1]}")
        server.run(sockets=[sock])
    finally:
        sock.close()
        sys.stdout.flush()


__all__ = ["DEFAULT_MAX_BODY_BYTES", "create_app", "serve"]
