"""What the seed epoch program's compile time goes to: trace + lower vs XLA compile, by part.

The seed workload's epoch (10-10-10-1 net, 426 rows of examples/quickstart.py, batch
32, Adam, BCE, accuracy, NaN guard, shuffle, state donated) is lowered with
``jax.jit(epoch).lower(...)`` and compiled with ``.compile()``; then again with one part
removed or changed at a time, and the parts alone. Medians of interleaved rounds, each
after ``jax.clear_caches()``. The HLO lines are those of the optimized program.
Every program is compiled as jnn compiles a small epoch on a CPU
(``jnn._compile_cache.FAST_COMPILE``: optimization level 0, XLA's classic emitters)
except the two rows that show XLA's defaults and level 0 alone.

Run: ``python benchmarks/bench_compile_breakdown.py [rounds]`` (default 3).
"""

import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import jnn
from jnn import losses
from jnn._compile_cache import FAST_COMPILE
from jnn.layers._base import stateful
from jnn.train._epoch import EpochSpec, epoch_fn, eval_fn
from jnn.train._logs import resolve_metrics
from jnn.train._state import fresh_state, get_optimizer
from jnn.train._step import pure_step

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
)
from quickstart import load_data

xtr, xte, ytr, yte = load_data()
data = tuple(map(jnp.asarray, (xtr, ytr, np.ones(len(xtr), np.float32))))
val = tuple(map(jnp.asarray, (xte, yte, np.ones(len(xte), np.float32))))
loss = losses.get("bce")


def build():
    return stateful(
        jnn.serial(
            jnn.Dense(10, activation="relu"),
            jnn.Dense(10, activation="relu"),
            jnn.Dense(1, activation="sigmoid"),
        )
    )


def spec(**kw):
    base = dict(
        model=build(),
        loss_fn=loss,
        tx=get_optimizer(kw.pop("opt", "adam")),
        metric_fns=resolve_metrics(kw.pop("metrics", ["accuracy"]), loss),
        batch_size=32,
        shuffle=True,
        validate=False,
        on_nan="raise",
    )
    base.update(kw)
    return EpochSpec(**base)


def measure(name, sp, donate=True, what="epoch", opts=FAST_COMPILE):
    _, params = sp.model.init(jax.random.key(0), (-1, 10))[:2]
    state = fresh_state(sp.tx)(params, None, jax.random.key(1), {})
    if what == "epoch":
        fn = jax.jit(epoch_fn(sp), donate_argnums=(0,) if donate else ())
        args = (state, *data, val if sp.validate else None)
    elif what == "step":
        step = pure_step(sp.model, sp.loss_fn, sp.tx, sp.metric_fns)
        fn = jax.jit(lambda s, x, y, w: step(s, x, y, w))
        args = (state, data[0][:32], data[1][:32], data[2][:32])
    elif what == "eval":
        fn = jax.jit(eval_fn(sp.model, sp.loss_fn, sp.metric_fns, 32))
        args = (state.params, {}, *val)
    elif what == "shuffle":
        from jnn.train._epoch import epoch_order
        from jnn.train._shuffle import split_epoch_key

        fn = jax.jit(lambda k: epoch_order(split_epoch_key(k)[1], 426, 32, True))
        args = (jax.random.key(0),)
    t0 = time.perf_counter()
    lowered = fn.lower(*args)
    t1 = time.perf_counter()
    compiled = lowered.compile(opts) if opts else lowered.compile()  # opts: see module doc
    t2 = time.perf_counter()
    hlo = compiled.as_text() or ""
    return t1 - t0, t2 - t1, hlo.count("\n")


def main() -> None:
    variants = {
        "seed epoch (shuffle, adam, accuracy, NaN guard, donated)": lambda: measure("", spec()),
        "  XLA's default options": lambda: measure("", spec(), opts=None),
        "  xla_backend_optimization_level=0 only": lambda: measure(
            "", spec(), opts={"xla_backend_optimization_level": 0}
        ),
        "  shuffle=False": lambda: measure("", spec(shuffle=False)),
        "  on_nan=None (no guard)": lambda: measure("", spec(on_nan=None)),
        "  no donation": lambda: measure("", spec(), donate=False),
        "  no metrics": lambda: measure("", spec(metrics=[])),
        "  sgd instead of adam": lambda: measure("", spec(opt="sgd")),
        "  + validation in the program": lambda: measure("", spec(validate=True)),
        "one step alone (jit)": lambda: measure("", spec(), what="step"),
        "evaluate program alone": lambda: measure("", spec(), what="eval"),
        "shuffle alone": lambda: measure("", spec(), what="shuffle"),
    }
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    res = {k: [] for k in variants}
    measure("warm", spec())  # warm up jax itself
    for _ in range(rounds):
        for k, f in variants.items():
            jax.clear_caches()
            res[k].append(f())
    print("| program | trace+lower (ms) | XLA compile (ms) | HLO lines |")
    print("|---|---:|---:|---:|")
    for k, v in res.items():
        lo = statistics.median(a for a, _, _ in v) * 1e3
        co = statistics.median(b for _, b, _ in v) * 1e3
        print(f"| {k} | {lo:.0f} | {co:.0f} | {v[0][2]} |")


if __name__ == "__main__":
    main()
