"""Peak memory of ``jnn.fit`` on a dataset of at least 1 GB of float32.

One fresh process per run: it builds the data (float32, ``--rows`` x 64 features),
notes its resident memory, fits a small MLP for one epoch (batch 1024, shuffled,
accuracy on), and reports the peak resident memory (VmHWM) above the process with
the data loaded, in units of the data's size. On an accelerator it also reports the
device's ``peak_bytes_in_use``.

jnn gathers each chunk of batches from the one device copy of the data inside the
compiled epoch, so the target is: peak <= host data + 1.1x data + batch-sized
buffers (on a CPU the "device copy" is a second host buffer). A second run on a
small dataset (same program, 1% of the rows) measures what does not grow with the
data (the XLA compiler's own memory, ~0.2 GB here); the slope between the two is
the memory fit needs per byte of data.

Run: ``python benchmarks/bench_memory.py [--rows 4200000]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(key)


def child(rows: int) -> dict:
    import jax
    import numpy as np

    import jnn

    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, 64), dtype=np.float32)
    y = (x[:, :1] > 0).astype(np.float32)
    model = jnn.serial(jnn.Dense(32, activation="relu"), jnn.Dense(1))
    _, params = model.init(jax.random.key(0), (-1, 64))
    loaded = _status("VmRSS")
    jnn.fit(model, params, (x, y), loss="bce_with_logits", epochs=1, batch_size=1024,
            key=jax.random.key(1), metrics=["accuracy"], verbose=0)  # fmt: skip
    peak = _status("VmHWM")
    stats = jax.devices()[0].memory_stats() or {}
    return {
        "rows": rows,
        "data_bytes": x.nbytes + y.nbytes,
        "rss_with_data_bytes": loaded,
        "peak_rss_bytes": peak,
        "device_peak_bytes": stats.get("peak_bytes_in_use"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4_200_000, help="rows of 64 float32")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.rows)))
        return 0

    def run(rows: int) -> dict:
        out = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--child", "--rows", str(rows)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        r = json.loads(out.stdout.strip().splitlines()[-1])
        r["extra_bytes"] = r["peak_rss_bytes"] - r["rss_with_data_bytes"]
        return r

    big, small = run(args.rows), run(max(args.rows // 100, 4096))
    data, extra = big["data_bytes"], big["extra_bytes"]
    slope = (extra - small["extra_bytes"]) / (data - small["data_bytes"])
    mib = 2**20
    print(f"data: {big['rows']:,} x 64 float32 (+ labels) = {data / mib:,.0f} MiB")
    print(
        f"RSS with the data loaded (and jax imported): {big['rss_with_data_bytes'] / mib:,.0f} MiB"
    )
    print(f"peak RSS during fit: {big['peak_rss_bytes'] / mib:,.0f} MiB "
          f"(+{extra / mib:,.0f} MiB = {extra / data:.2f}x the data)")  # fmt: skip
    print(f"the same fit on {small['rows']:,} rows: +{small['extra_bytes'] / mib:,.0f} MiB "
          "(compilation and fixed buffers)")  # fmt: skip
    print(f"memory per byte of data: {slope:.2f}x (one device copy is 1.0x)")
    if big["device_peak_bytes"] is not None:
        print(f"device peak_bytes_in_use: {big['device_peak_bytes'] / mib:,.0f} MiB")
    fixed = small["extra_bytes"] + 64 * mib
    ok = extra <= 1.1 * data + fixed
    print(f"target: peak <= data loaded + 1.1x data + fixed buffers: {'met' if ok else 'MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
