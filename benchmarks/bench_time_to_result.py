"""Time to result on small data: build a model, fit it, predict; compile time included.

The seed workload (issue 21): the 10-10-10-1 network (relu, relu, sigmoid) on the
breast-cancer split of ``examples/quickstart.py`` (426 training rows, 10 features),
30 epochs, batch 32, Adam, binary cross-entropy; then predictions on the 143 held-out
rows. Each seed builds a NEW model, as a user's loop over seeds or folds does. Every
case runs in a fresh process:

- ``jnn cold``: the first seed of a process (no persistent cache);
- ``jnn warm process``: seeds 2..N of that process (a new model, same architecture);
- ``jnn persistent cache``: the first seed of a fresh process whose persistent
  compilation cache (:func:`jnn.compile_cache`) was filled by an earlier process;
- ``keras cold`` / ``keras warm process``: Keras 3 on the JAX backend, the same steps
  (``Sequential``, ``compile``, ``fit(epochs=30, batch_size=32)``, ``predict``);
- ``torch cold`` / ``torch warm process``: PyTorch, eager, a plain loop over
  ``DataLoader``-free shuffled batches (one thread).

Per case: the median seconds of build + fit + predict (``total``) and of ``fit``
alone, wall-clock and CPU time of the process (on a loaded machine the CPU time is
the steadier figure), the compile seconds of that phase (JAX's backend-compile events: XLA compiles
and persistent-cache loads; none for torch), and the mean held-out accuracy. The
process setup (imports, loading the data; not in the other columns) is shown apart:
each library's imports happen there (``import keras``, ``import torch``, ``import jnn,
jnn.train``: jnn imports its engine and optax lazily, on the first ``fit``, otherwise).

Targets (issue 21): new model, same architecture, same process: fit <= 50 ms; fresh
process with a warm persistent cache: fit <= 0.3 s; cold: fit <= 0.5 s; end to end
>= 5x faster than Keras warm and >= 1.5x cold; accuracy equal within noise.

Run: ``python benchmarks/bench_time_to_result.py [--seeds 10] [--rounds 1] [--json out.json]``
(``--quick``: 3 seeds, 5 epochs). Figures on a loaded machine are provisional: compare
the ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One fresh process per case: it prints one JSON line with a record per seed.
WORKER = r"""
import json, os, sys, time
t_start = time.perf_counter()
impl, seeds, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sys.path.insert(0, os.path.join(os.environ["JNN_ROOT"], "examples"))
import numpy as np
compile_s = [0.0]
if impl in ("jnn", "keras"):
    if impl == "keras":
        os.environ["KERAS_BACKEND"] = "jax"
    import jax
    def on_duration(name, secs, **kw):
        if name == "/jax/core/compile/backend_compile_duration":
            compile_s[0] += secs
    jax.monitoring.register_event_duration_secs_listener(on_duration)
from quickstart import load_data
x_train, x_test, y_train, y_test = load_data()
records = []

if impl == "jnn":
    import jnn
    import jnn.train  # as `import keras` does: the engine (and optax) imported in setup
    cache = os.environ.get("BENCH_CACHE")
    if cache:
        jnn.compile_cache(cache)
    def run(seed):
        model = jnn.serial(jnn.Dense(10, activation="relu"), jnn.Dense(10, activation="relu"),
                           jnn.Dense(1, activation="sigmoid"))
        _, params = model.init(jax.random.key(seed), (-1, 10))
        t, c = time.perf_counter(), time.process_time()
        res = jnn.fit(model, params, (x_train, y_train), loss="bce", optimizer="adam",
                      epochs=epochs, batch_size=32, key=jax.random.key(seed), verbose=0)
        fit_s = (time.perf_counter() - t, time.process_time() - c)
        return fit_s, jnn.predict(model, res.params, x_test)
elif impl == "keras":
    import keras
    def run(seed):
        keras.utils.set_random_seed(seed)
        model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(10, activation="relu"),
                                  keras.layers.Dense(10, activation="relu"),
                                  keras.layers.Dense(1, activation="sigmoid")])
        model.compile(optimizer="adam", loss="binary_crossentropy")
        t, c = time.perf_counter(), time.process_time()
        model.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)
        fit_s = (time.perf_counter() - t, time.process_time() - c)
        return fit_s, model.predict(x_test, verbose=0)
else:
    import torch
    torch.set_num_threads(1)
    xt, yt, xe = (torch.from_numpy(np.ascontiguousarray(a)) for a in (x_train, y_train, x_test))
    def run(seed):
        torch.manual_seed(seed)
        nn = torch.nn
        model = nn.Sequential(nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 10), nn.ReLU(),
                              nn.Linear(10, 1), nn.Sigmoid())
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        loss_fn = torch.nn.BCELoss()
        t, c = time.perf_counter(), time.process_time()
        for _ in range(epochs):
            order = torch.randperm(len(xt))
            for i in range(0, len(xt), 32):
                idx = order[i:i + 32]
                opt.zero_grad()
                loss_fn(model(xt[idx]), yt[idx]).backward()
                opt.step()
        fit_s = (time.perf_counter() - t, time.process_time() - c)
        with torch.no_grad():
            return fit_s, model(xe).numpy()

setup_s = time.perf_counter() - t_start
for seed in range(seeds):
    compile_s[0] = 0.0
    t, c = time.perf_counter(), time.process_time()
    (fit_s, fit_cpu), pred = run(seed)
    total, total_cpu = time.perf_counter() - t, time.process_time() - c
    acc = float(((np.asarray(pred).reshape(-1) > 0.5) == (y_test.reshape(-1) > 0.5)).mean())
    records.append(dict(total=total, total_cpu=total_cpu, fit=fit_s, fit_cpu=fit_cpu,
                        compile=compile_s[0], accuracy=acc, setup=setup_s))
print(json.dumps({"impl": impl, "setup_s": setup_s, "records": records}))
"""


def _process(impl: str, seeds: int, epochs: int, cache: str | None = None) -> dict:
    env = {**os.environ, "JNN_ROOT": ROOT, "PYTHONPATH": ROOT, "JNN_COMPILE_CACHE": "off"}
    env.pop("BENCH_CACHE", None)
    if cache:
        env["BENCH_CACHE"] = cache
    cmd = [sys.executable, "-c", WORKER, impl, str(seeds), str(epochs)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        return {"impl": impl, "error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _summary(name: str, records: list[dict]) -> dict:
    med = lambda k: statistics.median(r[k] for r in records)  # noqa: E731
    return {
        "case": name,
        "n": len(records),
        "total_s": med("total"),
        "total_cpu_s": med("total_cpu"),
        "fit_s": med("fit"),
        "fit_cpu_s": med("fit_cpu"),
        "compile_s": med("compile"),
        "import_s": med("setup"),
        "accuracy": statistics.fmean(r["accuracy"] for r in records),
    }


def run(seeds: int, epochs: int, rounds: int) -> list[dict]:
    """Every case, ``rounds`` times interleaved; the records of all rounds pooled."""
    pooled: dict[str, list[dict]] = {}

    def add(name: str, records: list[dict]) -> None:
        pooled.setdefault(name, []).extend(records)

    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as cache:
            _process("jnn", 1, epochs, cache)  # fills the persistent cache
            warm_cache = _process("jnn", 1, epochs, cache)
        for impl in ("jnn", "keras", "torch"):
            out = _process(impl, seeds, epochs)
            if "error" in out:
                print(f"{impl}: skipped ({out['error']})", file=sys.stderr)
                continue
            add(f"{impl} cold", out["records"][:1])
            add(f"{impl} warm process, new model", out["records"][1:])
        if "error" not in warm_cache:
            add("jnn persistent cache, fresh process", warm_cache["records"])
    order = ["jnn cold", "jnn warm process, new model", "jnn persistent cache, fresh process",
             "keras cold", "keras warm process, new model", "torch cold",
             "torch warm process, new model"]  # fmt: skip
    return [_summary(name, pooled[name]) for name in order if pooled.get(name)]


def table(rows: list[dict]) -> str:
    """The markdown table, with each case's speed-up over Keras in the same state."""
    by = {r["case"]: r for r in rows}
    lines = [
        "| case | build + fit + predict (s) | CPU (s) | fit (s) | fit CPU (s) | compile (s) "
        "| accuracy | vs keras | vs keras, CPU | process setup (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        fresh = "cold" in r["case"] or "fresh process" in r["case"]  # vs Keras in a new process
        peer = "keras cold" if fresh else "keras warm process, new model"
        ratio = cpu_ratio = ""
        if peer in by and not r["case"].startswith("keras"):
            ratio = f"{by[peer]['total_s'] / r['total_s']:.1f}x"
            cpu_ratio = f"{by[peer]['total_cpu_s'] / max(r['total_cpu_s'], 1e-9):.1f}x"
        lines.append(
            f"| {r['case']} | {r['total_s']:.3f} | {r['total_cpu_s']:.3f} | {r['fit_s']:.3f} "
            f"| {r['fit_cpu_s']:.3f} | {r['compile_s']:.3f} | {r['accuracy']:.3f} | {ratio} "
            f"| {cpu_ratio} | {r['import_s']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="3 seeds, 5 epochs")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs = 3, 5
    rows = run(args.seeds, args.epochs, args.rounds)
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
