"""LSTM throughput: ``jnn.LSTM`` vs a handwritten ``lax.scan`` LSTM vs ``torch.nn.LSTM`` (CPU).

One model, three implementations, timed in interleaved rounds in one process:
an LSTM over ``(batch, T, F)`` sequences, its last output into a linear head,
MSE, Adam. Figures: training steps/s (forward, backward and update, one
``jax.jit`` step per call for JAX) and inference sequences/s (forward only).

- ``jnn.LSTM``: ``jnn.serial(jnn.LSTM(H), jnn.Dense(1))``, stepped with optax.
- ``handwritten lax.scan``: the LSTM as people write it from the equations: a
  ``lax.scan`` over time whose step computes ``x_t @ w_ih + h @ w_hh + b``.
- ``torch.nn.LSTM``: ``batch_first=True`` + ``nn.Linear``, ``torch.optim.Adam``,
  eager on the CPU with torch's default threads, and with one thread (on a
  busy machine torch's threads spin against each other).

Run: ``python benchmarks/bench_lstm.py [--quick] [--batch 64 --steps 64 --features 32
--hidden 128] [--repeats 5]``. JAX runs on the CPU (``--device`` for the default device).
"""

from __future__ import annotations

import argparse
import os
import sys

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _data(batch: int, steps: int, features: int):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, steps, features)).astype(np.float32)
    return x, x.mean(axis=(1, 2))[:, None].astype(np.float32)


def _jax_benches(apply, params, x, y, calls: int):
    """Training and inference benches for a JAX ``apply(params, x)``."""
    import jax
    import jax.numpy as jnp
    import optax

    from benchmarks._harness import Bench, block

    opt = optax.adam(1e-3)

    @jax.jit
    def train(params, opt_state, x, y):
        grads = jax.grad(lambda p: jnp.mean((apply(p, x) - y) ** 2))(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    infer = jax.jit(apply)
    x, y = jnp.asarray(x), jnp.asarray(y)
    state = {"params": params, "opt": opt.init(params)}

    def train_call():
        p, o = state["params"], state["opt"]
        for _ in range(calls):
            p, o = train(p, o, x, y)
        state["params"], state["opt"] = block((p, o))

    def infer_call():
        out = None
        for _ in range(calls):
            out = infer(state["params"], x)
        block(out)

    n = x.shape[0]
    return Bench(train_call, calls, calls * n), Bench(infer_call, calls, calls * n)


def jnn_lstm(x, y, hidden: int, calls: int):
    import jax

    import jnn

    model = jnn.serial(jnn.LSTM(hidden), jnn.Dense(1))
    _, params = model.init(jax.random.key(0), (-1, *x.shape[1:]))
    return _jax_benches(model.apply, params, x, y, calls)


def handwritten_lstm(x, y, hidden: int, calls: int):
    import jax
    import jax.numpy as jnp
    from jax import lax

    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    f = x.shape[-1]
    params = {
        "w_ih": jax.nn.initializers.glorot_uniform()(k1, (f, 4 * hidden)),
        "w_hh": jax.nn.initializers.orthogonal()(k2, (hidden, 4 * hidden)),
        "b": jnp.zeros((4 * hidden,)),
        "w_out": jax.nn.initializers.glorot_uniform()(k3, (hidden, 1)),
        "b_out": jnp.zeros((1,)),
    }

    def apply(p, x):
        def step(carry, x_t):
            h, c = carry
            z = x_t @ p["w_ih"] + h @ p["w_hh"] + p["b"][None, :]
            i, f_, g, o = jnp.split(z, 4, axis=-1)
            c = jax.nn.sigmoid(f_) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), None

        zeros = jnp.zeros((x.shape[0], hidden), x.dtype)
        (h, _), _ = lax.scan(step, (zeros, zeros), jnp.swapaxes(x, 0, 1))
        return h @ p["w_out"] + p["b_out"][None, :]

    return _jax_benches(apply, params, x, y, calls)


def torch_lstm(x, y, hidden: int, calls: int, num_threads: int | None = None):
    import torch

    from benchmarks._harness import Bench

    torch.manual_seed(0)
    lstm = torch.nn.LSTM(x.shape[-1], hidden, batch_first=True)
    head = torch.nn.Linear(hidden, 1)
    params = [*lstm.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=1e-3)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def forward():
        out, _ = lstm(tx)
        return head(out[:, -1])

    def threads(fn):
        def call():
            default = torch.get_num_threads()
            torch.set_num_threads(num_threads or default)
            try:
                fn()
            finally:
                torch.set_num_threads(default)

        return call

    @threads
    def train_call():
        for _ in range(calls):
            opt.zero_grad()
            loss = torch.mean((forward() - ty) ** 2)
            loss.backward()
            opt.step()

    @threads
    def infer_call():
        with torch.no_grad():
            for _ in range(calls):
                forward()

    n = x.shape[0]
    return Bench(train_call, calls, calls * n), Bench(infer_call, calls, calls * n)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats, 3 steps per call")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=64, help="sequence length T")
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=None, help="timed calls (default 5, 3)")
    parser.add_argument("--device", action="store_true", help="JAX's default device, not CPU")
    args = parser.parse_args(argv)
    if not args.device:
        os.environ["JAX_PLATFORMS"] = "cpu"
    from benchmarks._harness import measure_case

    repeats = args.repeats or (3 if args.quick else 5)
    calls = 3 if args.quick else 10
    x, y = _data(args.batch, args.steps, args.features)
    impls = {
        "jnn.LSTM": jnn_lstm,
        "handwritten lax.scan": handwritten_lstm,
        "torch.nn.LSTM (CPU)": torch_lstm,
        "torch.nn.LSTM, 1 thread": lambda *a: torch_lstm(*a, num_threads=1),
    }
    built: dict = {}

    def maker(name: str, part: int):
        def make():
            if name not in built:
                built[name] = impls[name](x, y, args.hidden, calls)
            return built[name][part]

        return make

    print(f"LSTM: batch {args.batch}, T {args.steps}, F {args.features}, H {args.hidden}, "
          f"median of {repeats} calls of {calls} steps (min-max); provisional unless run on "
          "a quiet machine")  # fmt: skip
    for part, (what, unit) in enumerate((("training", "steps/s"), ("inference", "batches/s"))):
        results = measure_case(what, {name: maker(name, part) for name in impls}, repeats=repeats)
        print(f"\n{what} ({unit}):")
        base = results[0].steps_per_s
        for r in results:
            if r.skipped:
                print(f"  {r.impl:24} {r.skipped}")
                continue
            ratio = f"  jnn / this = {base / r.steps_per_s:.2f}x" if r is not results[0] else ""
            spread = f"({r.steps_per_s_min:.1f}-{r.steps_per_s_max:.1f})"
            print(f"  {r.impl:24} {r.steps_per_s:8.1f} {spread:17} "
                  f"{r.examples_per_s:8.0f} sequences/s{ratio}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
