"""The ``jnn`` command line: inspect, predict with and serve exported models.

::

    jnn info model.jnn
    jnn predict model.onnx --input data.npy [--output out.csv] [--batch-size 1024]
    jnn serve model.onnx [--host 127.0.0.1] [--port 8000] [--no-batching] [--sha256 HEX]

A model file is a ``.jnn`` file (:func:`jnn.export.save`, run on XLA) or an
``.onnx`` file (:func:`jnn.export.save_onnx`, run on ONNX Runtime without
importing jax). Inputs and outputs are ``.npy`` (no pickle), ``.csv`` (one
example per row, an optional header line) or ``.json`` (a list of examples,
or ``{"inputs": [...]}``). Also runs as ``python -m jnn``. Run from the command
line, a ``.jnn`` model's compilations are kept on disk by :func:`jnn.compile_cache`
(``JNN_COMPILE_CACHE`` names the folder, or ``off``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["main"]

FORMATS = (".npy", ".csv", ".json")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``jnn`` command line (the ``jnn`` script and ``python -m jnn`` call it).

    Args:
      argv: the arguments after the program name; default ``sys.argv[1:]``.

    Returns:
      The exit status: 0 on success, 1 if the command failed (bad input, a
      damaged or foreign model file, a sha256 mismatch, ...; a one-line error
      goes to stderr, never a traceback).

    Raises:
      SystemExit: from ``argparse``, for ``--help`` (status 0) or bad usage
        (status 2).

    Example:
      >>> import os, tempfile, numpy as np, jnn, jnn.export
      >>> from jnn.cli import main
      >>> d = tempfile.mkdtemp()
      >>> params = {"w": np.ones((3, 1), np.float32), "b": np.zeros(1, np.float32)}
      >>> _ = jnn.export.save(os.path.join(d, "m.jnn"), jnn.Dense(1), params, (-1, 3))
      >>> np.save(os.path.join(d, "x.npy"), np.eye(3, dtype=np.float32))
      >>> main(["predict", os.path.join(d, "m.jnn"), "--input", os.path.join(d, "x.npy")])
      {"predictions": [[1.0], [1.0], [1.0]]}
      0
      >>> main(["info", os.path.join(d, "missing.jnn")])  # the error goes to stderr
      1
    """
    parser = _parser()
    args = parser.parse_args(argv)
    args.compile_cache = argv is None  # a command line (not a call from Python): cache
    try:
        return args.run(args)
    except (ValueError, TypeError, OSError, EOFError) as err:  # EOFError: np.load, empty .npy
        print(f"jnn {args.command}: error: {err}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    from jnn import serve as s  # numpy and the standard library only, until an app is built

    parser = argparse.ArgumentParser(
        prog="jnn", description="Inspect, predict with and serve exported jnn models."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    model_help = "a .jnn (jnn.export.save) or .onnx (jnn.export.save_onnx) file"
    sha_help = "refuse the file unless its sha256 (hex, as sha256sum prints) is this"

    info = sub.add_parser("info", help="show a model's metadata and summary")
    info.add_argument("model", help=model_help)
    info.add_argument("--json", action="store_true", help="print the raw metadata as JSON")
    info.add_argument("--sha256", help=sha_help)
    info.set_defaults(run=_info)

    pred = sub.add_parser("predict", help="predict on a file of inputs")
    pred.add_argument("model", help=model_help)
    pred.add_argument("--input", required=True, help="inputs: .npy, .csv or .json")
    pred.add_argument(
        "--output", help="where to write predictions (.npy, .csv, .json); default: JSON on stdout"
    )
    pred.add_argument("--batch-size", type=_positive(int), default=1024, help="rows per call")
    pred.add_argument("--quiet", action="store_true", help="no progress bar")
    pred.add_argument("--sha256", help=sha_help)
    pred.set_defaults(run=_predict)

    serve = sub.add_parser(
        "serve",
        help="serve a model over HTTP (FastAPI + uvicorn)",
        description="Serve a model over HTTP. Requests whose headers or body arrive too "
        "slowly get 408, oversized headers 431, requests past --max-connections and "
        "forward passes over --compute-timeout-s 503.",
    )
    serve.add_argument("model", help=model_help)
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default loopback; 0.0.0.0 exposes it)"
    )
    serve.add_argument("--port", type=_port, default=8000, help="0-65535; 0 picks a free one")
    serve.add_argument("--sha256", help=sha_help)
    serve.add_argument("--max-body-bytes", type=_positive(int), default=s.DEFAULT_MAX_BODY_BYTES)
    serve.add_argument("--no-batching", action="store_true", help="turn micro-batching off")
    serve.add_argument("--max-batch-size", type=_positive(int), default=64)
    serve.add_argument(
        "--max-wait-ms",
        type=_non_negative,
        default=0.0,
        help="wait this long for more requests once the queue is empty (default 0: never)",
    )
    serve.add_argument("--compute-timeout-s", type=_positive(float), default=30.0)
    serve.add_argument("--header-timeout-s", type=_positive(float), default=s._HEADER_TIMEOUT_S)
    serve.add_argument("--body-timeout-s", type=_positive(float), default=s._BODY_TIMEOUT_S)
    serve.add_argument("--keep-alive-s", type=_positive(int), default=s._KEEP_ALIVE_S)
    serve.add_argument("--max-connections", type=_positive(int), default=s._MAX_CONNECTIONS)
    serve.add_argument("--max-header-bytes", type=_positive(int), default=s._MAX_HEADER_BYTES)
    serve.set_defaults(run=_serve)
    return parser


def _positive(kind: type) -> Any:
    """An argparse type: a positive ``kind`` (int or float), finite."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not 0 < value < float("inf"):
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return value

    parse.__name__ = f"positive {kind.__name__}"
    return parse


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535 (0: any free port), got {text!r}")
    return int(text)


def _load(args: argparse.Namespace) -> Any:
    """The model, or a ValueError naming the file: no traceback for a damaged file."""
    from jnn.serve import load_model

    if args.compile_cache and not str(args.model).lower().endswith(".onnx"):  # runs on XLA
        from jnn._compile_cache import compile_cache

        compile_cache()
    try:
        return load_model(args.model, expected_sha256=args.sha256)
    except (ValueError, TypeError, OSError, ImportError):
        raise
    except Exception as err:  # a damaged file can fail deep in a decoder: one clear line
        raise ValueError(
            f"{args.model}: not a usable model file ({type(err).__name__}: {err})."
        ) from None


def _info(args: argparse.Namespace) -> int:
    predictor = _load(args)
    meta = predictor.metadata
    if args.json:
        print(json.dumps(meta, indent=2))
        return 0
    shape = lambda s: "(" + ", ".join("n" if d is None else str(d) for d in s) + ")"  # noqa: E731
    print(f"model:       {args.model}")
    print(f"input:       {shape(meta['input']['shape'])} {meta['input']['dtype']}")
    print(f"output:      {shape(meta['output']['shape'])} {meta['output']['dtype']}")
    if meta.get("labels"):
        print(f"labels:      {', '.join(meta['labels'])}")
    if "platforms" in meta:
        print(f"platforms:   {', '.join(meta['platforms'])}")
    if "opset" in meta:
        print(f"runtime:     ONNX Runtime (opset {meta['opset']}, {meta.get('converter')})")
    if "jnn_version" in meta:
        print(f"versions:    jnn {meta['jnn_version']}, jax {meta.get('jax_version')}")
    if "created" in meta:
        print(f"created:     {meta['created']}")
    if meta.get("description"):
        print(f"description: {meta['description']}")
    print()
    print(predictor.summary())
    return 0


def _predict(args: argparse.Namespace) -> int:
    predictor = _load(args)
    x = read_inputs(args.input, predictor.input_shape[1:])
    x = predictor.check_input(x)
    n, parts = x.shape[0], []
    show = not args.quiet and n > args.batch_size
    for i in range(0, n, args.batch_size):
        parts.append(predictor(x[i : i + args.batch_size]))
        if show:
            _progress(min(i + args.batch_size, n), n)
    if show:
        sys.stderr.write("\n")
    y = np.concatenate(parts)
    if args.output:
        write_outputs(args.output, y)
        print(f"wrote {n} predictions of shape {y.shape[1:]} to {args.output}", file=sys.stderr)
    else:
        print(json.dumps({"predictions": y.tolist()}))
    return 0


def _serve(args: argparse.Namespace) -> int:
    from jnn.serve import serve

    serve(
        _load(args),
        host=args.host,
        port=args.port,
        header_timeout_s=args.header_timeout_s,
        body_timeout_s=args.body_timeout_s,
        keep_alive_s=args.keep_alive_s,
        max_connections=args.max_connections,
        max_header_bytes=args.max_header_bytes,
        max_body_bytes=args.max_body_bytes,
        batching=not args.no_batching,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        compute_timeout_s=args.compute_timeout_s,
    )
    return 0


def _progress(done: int, total: int) -> None:
    filled = round(30 * done / total)
    sys.stderr.write(f"\r[{'=' * filled}{'.' * (30 - filled)}] {done}/{total} rows")
    sys.stderr.flush()


def read_inputs(path: str, features: Sequence[int]) -> np.ndarray:
    """Read examples from ``.npy``, ``.csv`` or ``.json``; csv rows are reshaped to ``features``."""
    ext = _extension(path)
    if ext == ".npy":
        return np.load(path, allow_pickle=False)
    if ext == ".json":
        try:
            with open(path) as f:
                data = json.load(f)
            data = data["inputs"] if isinstance(data, dict) and "inputs" in data else data
            return np.asarray(data)
        except RecursionError:
            raise ValueError(
                f"{path}: the JSON is nested too deeply to be an input array."
            ) from None
    with open(path) as f:
        lines = [line for line in f.read().splitlines() if line.strip()]
    if lines and not _is_numeric_row(lines[0]):
        lines = lines[1:]  # a header
    if not lines:
        raise ValueError(f"{path}: no data rows.")
    x = np.loadtxt(lines, delimiter=",", ndmin=2, dtype=np.float64)
    width = int(np.prod(features))
    if x.shape[1] != width:
        raise ValueError(
            f"{path}: rows have {x.shape[1]} columns but the model takes {width} "
            f"features (input shape {tuple(features)})."
        )
    return x.reshape(x.shape[0], *features)


def write_outputs(path: str, y: np.ndarray) -> None:
    """Write predictions to ``.npy``, ``.csv`` (one row per example) or ``.json``."""
    ext = _extension(path)
    if ext == ".npy":
        np.save(path, y, allow_pickle=False)
    elif ext == ".json":
        with open(path, "w") as f:
            json.dump({"predictions": y.tolist()}, f)
    else:
        np.savetxt(path, y.reshape(y.shape[0], -1), delimiter=",", fmt="%.9g")


def _extension(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise ValueError(f"{path}: unsupported file type {ext!r}; use one of {FORMATS}.")
    return ext


def _is_numeric_row(line: str) -> bool:
    try:
        [float(v) for v in line.split(",")]
    except ValueError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
