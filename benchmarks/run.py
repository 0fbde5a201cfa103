"""The jnn benchmark suite: jnn against handwritten JAX and its peers, in one process.

Cases: (1) the seed network 10-10-10-1, batch 32 (dispatch-bound); (2) an MLP
784-1024-1024-10, batch 256 (compute-bound), also as a fraction of this
process's measured f32 ``a @ b`` throughput; (3) the digits CNN; (4) a sweep of
64 seed networks (vmap); (5) compile time to first step of every case; (6) the
peak memory of training case (2), one fresh process per implementation.

Every figure excludes compile and warm-up, repeats the timed call (in rounds
interleaved across a case's implementations, so load changes hit all alike)
and reports the median with min-max. Prints a markdown table and writes ``results.json``,
``results.md`` and ``results.png`` under ``--out`` (default
``benchmarks/results/``).

Usage::

    python -m benchmarks [--quick] [--device] [--cases seed,mlp] [--impls jnn,scan]
    python benchmarks/run.py --quick

Without ``--device`` JAX is pinned to the CPU (``JAX_PLATFORMS=cpu``); with it,
JAX uses its default device (a GPU when present) and the roofline is measured
there too.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ALL_CASES = ("seed", "mlp", "cnn", "sweep")
HERE = os.path.dirname(os.path.abspath(__file__))


def _mlp_impls(case):
    from benchmarks import _handwritten, _jnn, _peers

    return {
        "jnn.fit": lambda: _jnn.fit(case),
        "jax.jit per step": lambda: _handwritten.jit_step(case),
        "jax lax.scan epoch": lambda: _handwritten.scan_epoch(case),
        "jax lax.scan epoch, no shuffle (limit)": lambda: _handwritten.scan_epoch(case, False),
        "flax nnx (nnx.jit)": lambda: _peers.flax_nnx(case),
        "flax linen + optax (jax.jit)": lambda: _peers.flax_linen(case),
        "equinox (filter_jit)": lambda: _peers.equinox(case),
        "keras 3 fit": lambda: _peers.keras(case),
        "keras 3 fit, steps_per_execution=32": lambda: _peers.keras(case, 32),
        "torch eager CPU": lambda: _peers.torch_eager(case),
        "torch eager CPU, 1 thread": lambda: _peers.torch_eager(case, num_threads=1),
    }


def implementations(name: str, quick: bool, tiny: bool) -> dict:
    """Implementation name -> bench builder, for one case."""
    from benchmarks import _handwritten, _jnn
    from benchmarks._cases import cases

    mlp_cases = cases(quick, tiny)
    if name in ("seed", "mlp"):
        return _mlp_impls(mlp_cases[name])
    if name == "cnn":
        return {
            "jnn.fit": lambda: _jnn.cnn(),
            "jax lax.scan epoch": lambda: _handwritten.cnn_scan(),
            "jax lax.scan epoch, no shuffle (limit)": lambda: _handwritten.cnn_scan(shuffle=False),
        }
    if name == "sweep":
        case = mlp_cases["sweep"]
        return {
            "jnn experiments.sweep": lambda: _jnn.sweep(case),
            "jax vmap + lax.scan": lambda: _handwritten.vmap_sweep(case),
            "jax vmap + lax.scan, no shuffle (limit)": lambda: _handwritten.vmap_sweep(case, False),
            f"jnn.fit x {case.runs}, one after another": lambda: _jnn.fit_sequential(case),
        }
    raise ValueError(f"unknown case {name!r}; known: {', '.join(ALL_CASES)}")


def _selected(names, patterns):
    return [n for n in names if not patterns or any(p.lower() in n.lower() for p in patterns)]


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _peak_rss_bytes() -> int:
    """This process's peak RSS: VmHWM on Linux (``ru_maxrss`` survives exec, so a child
    started by a big parent would report the parent's peak), else ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # macOS: bytes, Linux: KiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def memory_child(impl: str, quick: bool, tiny: bool) -> int:
    """Case (6) in this fresh process: train case (2) with ``impl``, print peak memory as JSON."""
    import jax

    from benchmarks._harness import Skip

    make = implementations("mlp", quick, tiny)[impl]
    try:
        bench = make()
    except (ImportError, Skip) as e:
        print(json.dumps({"impl": impl, "skipped": f"skipped: {e}"}))
        return 0
    before = _rss_bytes()
    bench.call()
    bench.call()
    peak = _peak_rss_bytes()
    stats = jax.devices()[0].memory_stats() or {}
    print(
        json.dumps(
            {
                "impl": impl,
                "peak_rss_bytes": peak,
                "training_rss_growth_bytes": peak - (before or 0),
                "device_peak_bytes": stats.get("peak_bytes_in_use"),
            }
        )
    )
    return 0


def run_memory(args, impls: list[str]) -> list[dict]:
    out = []
    for impl in impls:
        cmd = [sys.executable, "-m", "benchmarks.run", "--memory-child", impl]
        cmd += ["--quick"] * args.quick + ["--tiny"] * args.tiny + ["--device"] * args.device
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [_root(), os.environ.get("PYTHONPATH")])),
        }
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
            line = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
            out.append(
                json.loads(line)
                if line.startswith("{")
                else {"impl": impl, "skipped": f"error: {proc.stderr.strip().splitlines()[-1:]}"}
            )
        except subprocess.TimeoutExpired:
            out.append({"impl": impl, "skipped": "error: timed out"})
        print(f"  memory {impl}: {out[-1]}", file=sys.stderr)
    return out


def _root() -> str:
    return os.path.dirname(HERE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="jnn vs handwritten JAX and peers.")
    parser.add_argument("--quick", action="store_true", help="smaller data, fewer repeats")
    parser.add_argument("--tiny", action="store_true", help="smoke-test sizes (seconds)")
    parser.add_argument("--device", action="store_true", help="use the default JAX device (GPU)")
    parser.add_argument("--cases", default=",".join(ALL_CASES), help="comma-separated cases")
    parser.add_argument("--impls", default="", help="comma-separated name substrings to run")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls (default 5; 3)")
    parser.add_argument("--budget", type=float, default=None, help="max timed s per figure")
    parser.add_argument("--no-memory", action="store_true", help="skip case (6)")
    parser.add_argument("--out", default=os.path.join(HERE, "results"), help="output folder")
    parser.add_argument("--update-readme", action="store_true", help="put the table in README")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.device:
        os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ.setdefault("KERAS_BACKEND", "jax")
    if args.memory_child:
        return memory_child(args.memory_child, args.quick, args.tiny)

    import jax

    from benchmarks import _report
    from benchmarks._harness import matmul_flops_per_s, measure_case

    if args.device and jax.default_backend() == "cpu":
        print("--device: no accelerator found, running on the CPU.", file=sys.stderr)
    small = args.quick or args.tiny
    repeats = args.repeats or (3 if small else 5)
    budget = args.budget or (20.0 if small else 60.0)
    patterns = [p for p in args.impls.split(",") if p]
    started = time.time()
    matmul = matmul_flops_per_s(1024, repeats=3 if args.tiny else 10)
    rooflines = {"1024": matmul}
    if args.device and jax.default_backend() != "cpu":
        rooflines["8192"] = matmul_flops_per_s(8192, repeats=10)
    print(f"f32 matmul 1024^3: {matmul['flops_per_s'] / 1e9:.1f} GFLOP/s", file=sys.stderr)

    results = []
    for case in [c for c in args.cases.split(",") if c]:
        impls = implementations(case, args.quick, args.tiny)
        if case == "mlp":  # the roofline again, next to the case it judges; keep the best
            again = matmul_flops_per_s(1024, repeats=3 if args.tiny else 10)
            if again["flops_per_s"] > matmul["flops_per_s"]:
                matmul.update(again)
        chosen = {name: impls[name] for name in _selected(impls, patterns)}
        for r in measure_case(case, chosen, repeats=repeats, budget_s=budget):
            results.append(r)
            shown = r.skipped or f"{r.steps_per_s:.1f} steps/s, compile {r.compile_s:.2f} s"
            print(f"  {case:6s} {r.impl}: {shown}", file=sys.stderr)

    memory = []
    if "mlp" in args.cases.split(",") and not args.no_memory:
        mem_impls = _selected(_mlp_impls(None), patterns)
        if small:
            mem_impls = [n for n in mem_impls if n in ("jnn.fit", "jax lax.scan epoch")]
        memory = run_memory(args, mem_impls)

    machine = _report.machine_info()
    target_rows = _report.targets(results, matmul)
    md = "\n".join(
        [
            f"Machine: {machine['cpu']}, {machine['cpu_count']} CPUs, "
            f"{machine['memory_gib']} GiB; JAX {machine['versions']['jax']} on "
            f"{machine['backend']} ({machine['device']}). f32 matmul 1024^3: "
            f"{matmul['flops_per_s'] / 1e9:.1f} GFLOP/s"
            + (
                f"; 8192^3: {rooflines['8192']['flops_per_s'] / 1e12:.1f} TFLOP/s"
                if "8192" in rooflines
                else ""
            )
            + f". Mode: {'tiny' if args.tiny else 'quick' if args.quick else 'full'}, "
            f"{repeats} repeats.",
            "",
            _report.table(results, matmul),
            _report.memory_table(memory) if memory else "",
            _report.targets_table(target_rows),
        ]
    )
    print(md)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(md)
    _report.write_json(
        os.path.join(args.out, "results.json"),
        {
            "machine": machine,
            "mode": {"quick": args.quick, "tiny": args.tiny, "device": args.device},
            "repeats": repeats,
            "rooflines": rooflines,
            "results": results,
            "memory": memory,
            "targets": target_rows,
            "seconds": time.time() - started,
        },
    )
    _report.bar_chart(os.path.join(args.out, "results.png"), results)
    if args.update_readme:
        _update_readme(md)
    return 0


def _update_readme(md: str) -> None:
    path = os.path.join(HERE, "README.md")
    with open(path) as f:
        text = f.read()
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    with open(path, "w") as f:
        f.write(f"{head}{start}\n{md}\n{end}{tail}")


if __name__ == "__main__":
    raise SystemExit(main())
