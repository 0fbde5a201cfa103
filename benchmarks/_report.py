"""The suite's outputs: the markdown table, the targets, machine facts, JSON and the bar chart."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import platform

BASELINE = {
    "seed": "jax lax.scan epoch",
    "mlp": "jax lax.scan epoch",
    "cnn": "jax lax.scan epoch",
    "sweep": "jax vmap + lax.scan",
}
# The machine's limit for each case: the handwritten baseline without the shuffle.
LIMIT = {
    "seed": "jax lax.scan epoch, no shuffle (limit)",
    "mlp": "jax lax.scan epoch, no shuffle (limit)",
    "cnn": "jax lax.scan epoch, no shuffle (limit)",
    "sweep": "jax vmap + lax.scan, no shuffle (limit)",
}
JNN = {"seed": "jnn.fit", "mlp": "jnn.fit", "cnn": "jnn.fit", "sweep": "jnn experiments.sweep"}
TITLES = {
    "seed": "(1) seed network 10-10-10-1, batch 32, Adam, BCE",
    "mlp": "(2) MLP 784-1024-1024-10, batch 256, Adam, softmax CE",
    "cnn": "(3) digits CNN (Conv-BN-relu-pool x2, Dropout, Dense), batch 32",
    "sweep": "(4) sweep: 64 seed networks at once (vmap)",
}


def machine_info() -> dict:
    """Where the figures come from: CPU, memory, devices, and package versions."""
    import jax

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    mem_gib = None
    try:
        with open("/proc/meminfo") as f:
            mem_gib = round(int(f.readline().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    versions = {}
    for pkg in ("jax", "jaxlib", "optax", "flax", "equinox", "keras", "torch", "numpy"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    dev = jax.devices()[0]
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "memory_gib": mem_gib,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "backend": jax.default_backend(),
        "device": getattr(dev, "device_kind", str(dev)),
        "device_count": jax.device_count(),
        "versions": versions,
    }


def _fmt(v: float | None, digits: int = 0) -> str:
    if v is None:
        return ""
    if abs(v) >= 1e6:
        return f"{v / 1e6:.2f}M"
    if abs(v) >= 1e4:
        return f"{v / 1e3:.1f}k"
    return f"{v:.{digits}f}"


def _get(results, case, impl):
    for r in results:
        if r.case == case and r.impl == impl and r.skipped is None:
            return r
    return None


def table(results, matmul: dict) -> str:
    """One markdown table per case, plus the compile-time and memory tables."""
    lines = []
    for case in dict.fromkeys(r.case for r in results):
        base, ours = _get(results, case, BASELINE[case]), _get(results, case, JNN[case])
        limit = _get(results, case, LIMIT.get(case, ""))
        lines += [
            f"### {TITLES.get(case, case)}",
            "",
            "| implementation | steps/s median (min-max) | examples/s | ms/step "
            "| of matmul peak | x limit | x handwritten | jnn ÷ this |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in (r for r in results if r.case == case):
            if r.skipped:
                lines.append(f"| {r.impl} | {r.skipped} | | | | | | |")
                continue
            vs_limit = f"{r.steps_per_s / limit.steps_per_s:.2f}x" if limit else ""
            peak = (
                f"{r.flops_per_s / matmul['flops_per_s']:.1%}"
                if r.flops_per_s and case == "mlp"
                else ""
            )
            vs_base = f"{r.steps_per_s / base.steps_per_s:.2f}x" if base else ""
            ours_vs = f"{ours.steps_per_s / r.steps_per_s:.2f}x" if ours else ""
            lines.append(
                f"| {r.impl} | {_fmt(r.steps_per_s)} ({_fmt(r.steps_per_s_min)}-"
                f"{_fmt(r.steps_per_s_max)}) | {_fmt(r.examples_per_s)} | "
                f"{1e3 / r.steps_per_s:.3f} | {peak} | {vs_limit} | {vs_base} | {ours_vs} |"
            )
        lines.append("")
    lines += [
        "### (5) compile time to first step (s): first call minus a warm call",
        "",
        "| case | " + " | ".join(["implementation", "compile s", "first call s"]) + " |",
        "|---|---|---|---|",
    ]
    for r in results:
        if not r.skipped:
            lines.append(f"| {r.case} | {r.impl} | {r.compile_s:.2f} | {r.first_call_s:.2f} |")
    lines.append("")
    return "\n".join(lines)


def memory_table(memory: list[dict]) -> str:
    lines = [
        "### (6) peak memory training case (2), one fresh process per implementation",
        "",
        "| implementation | peak RSS MiB | RSS growth in training MiB | device peak MiB |",
        "|---|---|---|---|",
    ]
    for m in memory:
        if m.get("skipped"):
            lines.append(f"| {m['impl']} | {m['skipped']} | | |")
            continue
        dev = m.get("device_peak_bytes")
        lines.append(
            f"| {m['impl']} | {m['peak_rss_bytes'] / 2**20:.0f} | "
            f"{m['training_rss_growth_bytes'] / 2**20:.0f} | "
            f"{'' if dev is None else f'{dev / 2**20:.0f}'} |"
        )
    lines.append("")
    return "\n".join(lines)


def targets(results, matmul: dict) -> list[dict]:
    """The issue's targets, each with the measured ratio and met / MISSED / n/a."""

    def ratio(case, a, b):
        ra, rb = _get(results, case, a), _get(results, case, b)
        return None if ra is None or rb is None else ra.steps_per_s / rb.steps_per_s

    keras = [
        r for r in results if r.case == "seed" and r.impl.startswith("keras") and r.skipped is None
    ]
    best_keras = max(keras, key=lambda r: r.steps_per_s).impl if keras else "keras"
    mlp = _get(results, "mlp", "jnn.fit")
    hand_mlp = [_get(results, "mlp", n) for n in ("jax lax.scan epoch", "jax.jit per step")]
    hand_mlp = [r for r in hand_mlp if r is not None]
    rows = [
        ("seed: jnn.fit / limit (scan, no shuffle)", ratio("seed", "jnn.fit", LIMIT["seed"]), 0.85),
        ("seed: jnn.fit / jax lax.scan epoch", ratio("seed", "jnn.fit", "jax lax.scan epoch"), 0.8),
        ("seed: jnn.fit / jax.jit per step", ratio("seed", "jnn.fit", "jax.jit per step"), 20.0),
        (f"seed: jnn.fit / best keras ({best_keras})", ratio("seed", "jnn.fit", best_keras), 5.0),
        ("seed: jnn.fit / flax nnx", ratio("seed", "jnn.fit", "flax nnx (nnx.jit)"), 20.0),
        (
            "mlp: jnn.fit fraction of matmul peak",
            mlp.flops_per_s / matmul["flops_per_s"] if mlp else None,
            0.85,
        ),
        (
            "mlp: jnn.fit / best handwritten JAX",
            mlp.steps_per_s / max(r.steps_per_s for r in hand_mlp) if mlp and hand_mlp else None,
            1.0,
        ),
        ("mlp: jnn.fit / limit (scan, no shuffle)", ratio("mlp", "jnn.fit", LIMIT["mlp"]), 0.9),
        ("cnn: jnn.fit / limit (scan, no shuffle)", ratio("cnn", "jnn.fit", LIMIT["cnn"]), 0.9),
        ("sweep: jnn sweep / jax vmap", ratio("sweep", JNN["sweep"], BASELINE["sweep"]), 0.9),
        (
            "sweep: jnn sweep / limit (vmap, no shuffle)",
            ratio("sweep", JNN["sweep"], LIMIT["sweep"]),
            0.85,
        ),
    ]
    return [
        {
            "target": name,
            "measured": value,
            "goal": goal,
            "status": "n/a" if value is None else ("met" if value >= goal else "MISSED"),
        }
        for name, value, goal in rows
    ]


def targets_table(rows: list[dict]) -> str:
    lines = ["### Targets", "", "| target | measured | goal | status |", "|---|---|---|---|"]
    for t in rows:
        m = "" if t["measured"] is None else f"{t['measured']:.2f}"
        lines.append(f"| {t['target']} | {m} | >= {t['goal']} | {t['status']} |")
    lines.append("")
    return "\n".join(lines)


def write_json(path: str, payload: dict) -> None:
    def default(o):
        if dataclasses.is_dataclass(o):
            return dataclasses.asdict(o)
        return str(o)

    with open(path, "w") as f:
        json.dump(payload, f, indent=1, default=default)


def bar_chart(path: str, results) -> bool:
    """Steps/s per implementation, one panel per case, log scale, min-max whiskers."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    cases = list(dict.fromkeys(r.case for r in results if r.skipped is None))
    if not cases:
        return False
    fig, axes = plt.subplots(len(cases), 1, figsize=(9, 2.2 + 0.45 * len(results)), squeeze=False)
    for ax, case in zip(axes[:, 0], cases, strict=True):
        rs = [r for r in results if r.case == case and r.skipped is None]
        names = [r.impl for r in rs]
        med = [r.steps_per_s for r in rs]
        err = [
            [m - r.steps_per_s_min for m, r in zip(med, rs, strict=True)],
            [r.steps_per_s_max - m for m, r in zip(med, rs, strict=True)],
        ]
        colors = ["tab:orange" if n.startswith("jnn") else "tab:blue" for n in names]
        ax.barh(names, med, xerr=err, color=colors)
        ax.set_xscale("log")
        ax.invert_yaxis()
        ax.set_title(TITLES.get(case, case), fontsize=9)
        ax.set_xlabel("training steps/s (median, min-max)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
