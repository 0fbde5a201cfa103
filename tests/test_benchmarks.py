"""Smoke test of the benchmark suite: case (1) at tiny size produces its table, JSON and chart.

No timing is asserted (performance targets live in benchmarks/README.md).
"""

import json
import os
import subprocess
import sys

from benchmarks._harness import Bench, Skip, measure, mlp_train_flops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_suite_runs_case_one_and_writes_table_json_and_chart(tmp_path):
    cmd = [sys.executable, "-m", "benchmarks", "--tiny", "--cases", "seed", "--repeats", "1"]
    cmd += ["--impls", "jnn.fit,jax lax.scan epoch,no-such-peer", "--out", str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| jnn.fit |" in proc.stdout and "| jax lax.scan epoch |" in proc.stdout
    assert "### Targets" in proc.stdout
    data = json.loads((tmp_path / "results.json").read_text())
    by_impl = {r["impl"]: r for r in data["results"]}
    # --impls selects by substring: the scan epoch and its no-shuffle (limit) variant
    limit = "jax lax.scan epoch, no shuffle (limit)"
    assert set(by_impl) == {"jnn.fit", "jax lax.scan epoch", limit}
    assert "| x limit |" in proc.stdout  # jnn's rate over the limit's, a column of the table
    for r in by_impl.values():
        assert r["skipped"] is None and r["steps_per_s"] > 0
        assert 0 <= r["compile_s"] < r["first_call_s"]  # the first call compiles, then runs
        assert r["steps_per_s_min"] <= r["steps_per_s"] <= r["steps_per_s_max"]
    assert data["rooflines"]["1024"]["flops_per_s"] > 0
    assert (tmp_path / "results.md").read_text().startswith("Machine:")
    assert (tmp_path / "results.png").stat().st_size > 0


def test_a_missing_or_broken_peer_is_a_skip_not_an_error():
    def missing():
        raise ImportError("no module", name="somepeer")

    def cannot():
        raise Skip("skipped: needs a GPU")

    def broken():
        raise RuntimeError("boom")

    assert measure("c", "p", missing, repeats=1).skipped == "skipped: not installed (somepeer)"
    assert measure("c", "p", cannot, repeats=1).skipped == "skipped: needs a GPU"
    assert "RuntimeError: boom" in measure("c", "p", broken, repeats=1).skipped


def test_measure_reports_median_and_range_of_the_repeats():
    calls = []
    r = measure("c", "p", lambda: Bench(lambda: calls.append(1), steps=10, examples=320), repeats=3)
    assert len(calls) == 1 + 1 + 3  # first call, one warm-up, three timed
    assert r.steps_per_s_min <= r.steps_per_s <= r.steps_per_s_max
    assert r.examples_per_s == r.steps_per_s * 32


def test_mlp_flop_count():
    # forward + weight grads for both layers, input grad for the second only
    assert mlp_train_flops((4, 3, 2), batch=5) == 2 * 5 * (3 * (12 + 6) - 12)
