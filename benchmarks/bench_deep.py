"""Deep models: compile time of ``jnn.repeat`` vs an unrolled ``serial``, and memory with ``remat``.

The model: ``Dense(256)``, then ``depth`` residual blocks ``residual(Dense(256,
relu), Dense(256))``, then ``Dense(1)``; its training step (MSE, Adam, one
``jax.jit``; written with optax here, so the figures measure the layers and
not ``jnn.fit``).

1. **compile**: for each depth (12, 48, 192), the seconds to trace and lower
   the training step (``jit(...).lower``) and to compile it (``.compile()``),
   ``repeat`` (one ``lax.scan`` over stacked params) vs ``serial`` of the same
   blocks (unrolled), medians of interleaved rounds; also the warm step time
   at depth 48.
2. **memory**: the peak memory of training (two steps) at depth 48,
   one fresh process per variant: ``serial``, ``serial`` of ``remat`` blocks,
   ``repeat``, ``repeat(remat(block))``. Peak RSS (``VmHWM``) and its growth
   during training on the CPU; ``peak_bytes_in_use`` on a GPU; and the size of
   the temporary buffers XLA assigned to the compiled step (deterministic,
   unlike RSS on a busy machine). On the CPU, XLA drops the optimization
   barriers that keep a rematerialized computation apart and merges it back
   into the forward pass, so ``remat`` saves memory there only inside a loop:
   ``repeat(remat(block))``, not a ``serial`` of ``remat`` blocks.

Target: ``repeat`` compiles an order of magnitude faster at depth 48, and its
compile time does not grow with depth; ``remat`` cuts the memory of training.

Run: ``python benchmarks/bench_deep.py [--quick] [--depths 12,48,192] [--depth 48] [--batch 4096]``
(``--device`` uses JAX's default device, a GPU when present; else the CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

WIDTH = 256
VARIANTS = ("serial", "serial of remat blocks", "repeat", "repeat(remat(block))")


def build(variant: str, depth: int):
    """The model of ``variant`` at ``depth`` blocks."""
    import jnn

    def block():
        return jnn.residual(jnn.Dense(WIDTH, activation="relu"), jnn.Dense(WIDTH))

    if variant == "serial":
        body = jnn.serial(*[block() for _ in range(depth)])
    elif variant == "serial of remat blocks":
        body = jnn.serial(*[jnn.remat(block()) for _ in range(depth)])
    elif variant == "repeat":
        body = jnn.repeat(block(), depth)
    elif variant == "repeat(remat(block))":
        body = jnn.repeat(jnn.remat(block()), depth)
    else:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    return jnn.serial(jnn.Dense(WIDTH), body, jnn.Dense(1))


def train_step(model, batch: int):
    """``(step, state, data)``: a jitted Adam step on MSE, its initial state and one batch."""
    import jax
    import jax.numpy as jnp
    import optax

    _, params = model.init(jax.random.key(0), (-1, WIDTH))
    opt = optax.adam(1e-3)
    kx, ky = jax.random.split(jax.random.key(1))
    x = jax.random.normal(kx, (batch, WIDTH))
    y = jax.random.normal(ky, (batch, 1))

    def step(state, x, y):
        params, opt_state = state
        loss, grads = jax.value_and_grad(lambda p: jnp.mean((model.apply(p, x) - y) ** 2))(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    return jax.jit(step, donate_argnums=0), (params, opt.init(params)), (x, y)


def compile_times(variant: str, depth: int, batch: int) -> dict:
    """Seconds to trace+lower and to compile the training step (no persistent cache)."""
    step, state, (x, y) = train_step(build(variant, depth), batch)
    start = time.perf_counter()
    lowered = step.lower(state, x, y)
    lower_s = time.perf_counter() - start
    start = time.perf_counter()
    lowered.compile()
    return {"lower_s": lower_s, "compile_s": time.perf_counter() - start}


def step_time(variant: str, depth: int, batch: int, repeats: int) -> float:
    """Median seconds of a warm training step."""
    import jax

    step, state, (x, y) = train_step(build(variant, depth), batch)
    state, loss = step(state, x, y)
    jax.block_until_ready(loss)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        state, loss = step(state, x, y)
        jax.block_until_ready(loss)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def memory_child(variant: str, depth: int, batch: int) -> None:
    """In a fresh process: two training steps, then peak memory as one JSON line."""
    import jax

    from benchmarks.run import _peak_rss_bytes, _rss_bytes

    step, state, (x, y) = train_step(build(variant, depth), batch)
    compiled = step.lower(state, x, y).compile()
    analysis = compiled.memory_analysis()
    before = _rss_bytes() or 0
    for _ in range(2):
        state, loss = compiled(state, x, y)
    jax.block_until_ready(loss)
    peak = _peak_rss_bytes()
    stats = jax.devices()[0].memory_stats() or {}
    print(json.dumps({
        "variant": variant,
        "peak_rss_bytes": peak,
        "training_rss_growth_bytes": peak - before,
        "device_peak_bytes": stats.get("peak_bytes_in_use"),
        "xla_temp_bytes": getattr(analysis, "temp_size_in_bytes", None),
    }))  # fmt: skip


def memory(depth: int, batch: int, device: bool) -> list[dict]:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get(
        "PYTHONPATH")]))}  # fmt: skip
    out = []
    for variant in VARIANTS:
        cmd = [sys.executable, os.path.abspath(__file__), "--memory-child", variant]
        cmd += ["--depth", str(depth), "--batch", str(batch)] + ["--device"] * device
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        lines = proc.stdout.strip().splitlines()
        if proc.returncode or not lines:
            out.append({"variant": variant, "error": proc.stderr.strip().splitlines()[-1:]})
        else:
            out.append(json.loads(lines[-1]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="depths 12,48, batch 1024, 1 round")
    parser.add_argument("--depths", default=None, help="compile part (default 12,48,192)")
    parser.add_argument("--depth", type=int, default=48, help="step time and memory (48)")
    parser.add_argument("--batch", type=int, default=None, help="rows per step (default 4096)")
    parser.add_argument("--rounds", type=int, default=None, help="compile rounds (default 3)")
    parser.add_argument("--repeats", type=int, default=5, help="timed warm steps")
    parser.add_argument("--parts", default="compile,memory", help="compile and/or memory")
    parser.add_argument("--device", action="store_true", help="JAX's default device, not CPU")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.device:
        os.environ["JAX_PLATFORMS"] = "cpu"
    depths = [int(d) for d in (args.depths or ("12,48" if args.quick else "12,48,192")).split(",")]
    batch = args.batch or (1024 if args.quick else 4096)
    rounds = args.rounds or (1 if args.quick else 3)
    if args.memory_child:
        memory_child(args.memory_child, args.depth, batch)
        return 0
    import jax

    print(f"residual MLP, width {WIDTH}, batch {batch}, Adam; JAX {jax.__version__} on "
          f"{jax.devices()[0].platform}; provisional unless run on a quiet machine")  # fmt: skip
    parts = args.parts.split(",")
    if "compile" in parts:
        # Rounds interleave every (depth, variant), so load changes hit all alike; medians.
        runs: dict = {}
        for _ in range(rounds):
            for depth in depths:
                for variant in ("serial", "repeat"):
                    runs.setdefault((variant, depth), []).append(
                        compile_times(variant, depth, batch)
                    )
        print(f"\ncompile time of the training step (seconds, median of {rounds} rounds):")
        print(f"  {'depth':>5}  {'variant':8}  {'trace+lower':>11}  {'compile':>8}  {'total':>7}")
        totals = {}
        for (variant, depth), ts in sorted(runs.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            lower = statistics.median(t["lower_s"] for t in ts)
            comp = statistics.median(t["compile_s"] for t in ts)
            totals[variant, depth] = statistics.median(t["lower_s"] + t["compile_s"] for t in ts)
            print(f"  {depth:5d}  {variant:8}  {lower:11.2f}  {comp:8.2f}  "
                  f"{totals[variant, depth]:7.2f}")  # fmt: skip
        for depth in depths:
            print(f"  depth {depth}: serial / repeat = "
                  f"{totals['serial', depth] / totals['repeat', depth]:.1f}x")  # fmt: skip
        for variant in ("serial", "repeat"):
            ms = 1e3 * step_time(variant, args.depth, batch, args.repeats)
            print(f"  warm training step, depth {args.depth}, {variant}: {ms:.0f} ms")
    if "memory" in parts:
        print(f"\nmemory of training, depth {args.depth} (a fresh process per variant):")
        for r in memory(args.depth, batch, args.device):
            if "error" in r:
                print(f"  {r['variant']:22}  error: {r['error']}")
                continue
            device, temp = r["device_peak_bytes"], r["xla_temp_bytes"]
            device_text = f", device peak {device / 2**20:.0f} MiB" if device else ""
            temp_text = f"XLA temp buffers {temp / 2**20:5.0f} MiB, " if temp is not None else ""
            print(f"  {r['variant']:22}  {temp_text}peak RSS {r['peak_rss_bytes'] / 2**20:5.0f} "
                  f"MiB (+{r['training_rss_growth_bytes'] / 2**20:.0f} MiB in training)"
                  f"{device_text}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
