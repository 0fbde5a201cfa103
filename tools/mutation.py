"""Mutation testing of jnn's core modules with mutmut 3.x, one module group at a time.

Usage (from the repository root; not in CI, see tools/mutation.md)::

    pip install "mutmut>=3.8,<4"
    python tools/mutation.py losses            # every mutant of jnn/losses.py
    python tools/mutation.py layers --sample 150 --seed 0
    python tools/mutation.py --report          # the score table of every group run so far
    python tools/mutation.py layers --recheck  # its survivors again, with the tests written since

Each group runs in its own copy of the repository, ``.mutation/<group>/`` (gitignored),
whose ``pyproject.toml`` [tool.mutmut] names only that group's source files and its fast
test selection, so mutmut's stats pass (which tests reach which function) runs only
those tests. Results stay in that copy: a rerun resumes where the last stopped (mutmut
skips mutants it has already checked). ``--sample N`` checks a seeded random sample of N
of the group's mutants (the big groups: every mutant of layers/ and train/ takes hours
on two cores). The summary, with every surviving mutant's diff, goes to
``.mutation/<group>/survivors.txt``.

mutmut forks its workers from a fork server that has only collected the tests
(``process_isolation = "forkserver"``): forking from the process that ran the stats pass
would hand each worker jax's trace caches of the unmutated code, so a mutant inside a
jitted function could never run and would "survive".
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".mutation"

# group -> (source paths, test selection). Test selection: the tests that exercise the group
# directly and quickly; mutmut runs, per mutant, only those of them that reach its function.
GROUPS: dict[str, tuple[list[str], list[str]]] = {
    "losses": (["jnn/losses.py"], ["tests/test_losses.py", "tests/test_losses_reference.py"]),
    "metrics": (
        ["jnn/metrics/"],
        [
            "tests/test_metrics.py",
            "tests/test_metrics_reference.py",
            "tests/test_metrics_stateful.py",
        ],
    ),
    "layers": (
        ["jnn/layers/"],
        [
            "tests/test_layers.py",
            "tests/test_layers_conv.py",
            "tests/test_layers_norm.py",
            "tests/test_layers_pool.py",
            "tests/test_layers_attention.py",
            "tests/test_layers_recurrent.py",
            "tests/test_layers_repeat.py",
            "tests/test_layers_describe.py",
            "tests/test_layers_init.py",
            "tests/test_layers_contract.py",
            "tests/test_blind_spots.py",
        ],
    ),
    "train": (
        ["jnn/train/"],
        [
            "tests/test_train.py",
            "tests/test_train_engine.py",
            "tests/test_blind_spots.py",
            "tests/test_engine_reference.py",
            "tests/test_train_faults.py",
            "tests/test_stream.py",
            "tests/test_fit_cache.py",
            "tests/test_optimizers.py",
            "tests/test_precision.py",
            "tests/test_callbacks.py",
            "tests/test_metrics_stateful.py",
            "tests/test_bad_input.py",  # params from another model: the engine's own check
        ],
    ),
}


def _config(sources: list[str], tests: list[str]) -> str:
    def strings(xs: list[str]) -> str:
        return "[" + ", ".join(f'"{x}"' for x in xs) + "]"

    return (
        "\n[tool.mutmut]\n"
        f"source_paths = {strings(sources)}\n"
        f"pytest_add_cli_args_test_selection = {strings(tests)}\n"
        'also_copy = ["jnn/", "examples/"]  # the unmutated rest; tests import examples\n'
        # The Ctrl-C test sends a real SIGINT to the process running the tests: under
        # mutmut's stats pass it fails for reasons no mutant causes (still so after it
        # stopped being timed against the clock).
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-n", "0", "--no-header", "--deselect",'
        ' "tests/test_train_engine.py::test_ctrl_c_lands_inside_a_long_epoch"]\n'
        'process_isolation = "forkserver"\n'
        # A worker compiles what the stats pass (one process, caches shared by every test)
        # did not: mutmut's default limit (15x each test's share of that pass) timed out
        # mutants that the unmutated code also runs past.
        "timeout_multiplier = 60.0\n"
        # Fork from a server that has not imported jax: forking a process in which jax
        # (collected test modules create arrays) runs threads can deadlock the child,
        # which then shows up as a "timeout" the mutant did not cause.
        'forkserver_warmup = "none"\n'
    )


def _prepare(group: str) -> Path:
    """``.mutation/<group>/``: a copy of jnn/, tests/, examples/ and pyproject.toml."""
    sources, tests = GROUPS[group]
    where = WORK / group
    where.mkdir(parents=True, exist_ok=True)
    for name in ("jnn", "tests", "examples"):
        if (where / name).exists():
            shutil.rmtree(where / name)
        shutil.copytree(ROOT / name, where / name, ignore=shutil.ignore_patterns("__pycache__"))
    text = (ROOT / "pyproject.toml").read_text()
    text = re.sub(r"\n\[tool\.mutmut\]\n(?:[^\[].*\n|\n)*", "\n", text)  # drop the repo's own
    (where / "pyproject.toml").write_text(text + _config(sources, tests))
    return where


def _mutmut(where: Path, *args: str, capture: bool = False) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["JAX_PLATFORMS"] = "cpu"
    # jax's persistent compilation cache, shared by every worker: it is keyed by the
    # computation itself, so a mutant recompiles only what it changed (sound, and it
    # spares each forked worker recompiling the unmutated rest).
    env["JAX_COMPILATION_CACHE_DIR"] = str(WORK / "jax-cache")
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    cmd = [sys.executable, "-m", "mutmut", *args]
    if capture:
        return subprocess.run(cmd, cwd=where, env=env, capture_output=True, text=True).stdout
    subprocess.run(cmd, cwd=where, env=env, check=False)
    return ""


def _results(where: Path) -> dict[str, str]:
    """``{mutant name: status}`` of every mutant mutmut knows in this copy."""
    out = _mutmut(where, "results", "--all", "true", capture=True)
    found = {}
    for line in out.splitlines():
        name, _, status = line.strip().partition(": ")
        if name and status:
            found[name] = status
    return found


def run(group: str, sample: int | None, seed: int, max_children: int) -> None:
    where = _prepare(group)
    if sample is not None:
        # Generate the mutants and collect stats without running any (no name matches).
        _mutmut(where, "run", "--max-children", str(max_children), "no-such-mutant")
        names = sorted(_results(where))
        chosen = sorted(random.Random(seed).sample(names, min(sample, len(names))))
        (where / "sample.txt").write_text("\n".join(chosen) + "\n")
        _mutmut(where, "run", "--max-children", str(max_children), *chosen)
    else:
        _mutmut(where, "run", "--max-children", str(max_children))
    summarize(group)


def _sampled(where: Path) -> dict[str, str]:
    """:func:`_results`, only the mutants of the sample when the run drew one."""
    status = _results(where)
    sample_file = where / "sample.txt"
    if sample_file.exists():
        wanted = set(sample_file.read_text().split())
        status = {k: v for k, v in status.items() if k in wanted}
    return status


def recheck(group: str, max_children: int) -> None:
    """Run the group's survivors again against the current tests (after writing tests for
    them): fresh copies of jnn/ and tests/, and a fresh stats pass, so that the new tests
    are among those each mutant runs."""
    where = WORK / group
    if not where.exists():
        raise SystemExit(f"{group} never ran: nothing to recheck")
    survivors = [name for name, status in _sampled(where).items() if status == "survived"]
    if survivors:
        where = _prepare(group)
        (where / "mutmut-stats.json").unlink(missing_ok=True)
        _mutmut(where, "run", "--max-children", str(max_children), *survivors)
    summarize(group)


def summarize(group: str) -> dict[str, int] | None:
    """Write ``survivors.txt`` for a group; counts by outcome (``checked``, ``killed``,
    ``timeout``, ``survived``, ``no tests``), or None if the group never ran."""
    where = WORK / group
    if not where.exists():
        return None
    status = _sampled(where)
    checked = {k: v for k, v in status.items() if v not in ("not checked", "skipped")}
    # "check was interrupted by user" is pytest's exit status 2, which is also what a
    # collection error gives: a mutant that breaks importing the tests is detected.
    dead = {"killed", "segfault", "suspicious", "caught by type check",
            "check was interrupted by user"}  # fmt: skip
    survived = sorted(k for k, v in checked.items() if v not in dead | {"timeout"})
    counts = {
        "checked": len(checked),
        "killed": sum(v in dead for v in checked.values()),
        "timeout": sum(v == "timeout" for v in checked.values()),
        "survived": sum(v == "survived" for v in checked.values()),
        "no tests": sum(v == "no tests" for v in checked.values()),
    }
    lines = [f"{group}: {counts} ({len(status)} in the run)", ""]
    for name in survived:
        lines.append(f"## {name} ({checked[name]})")
        lines.append(_mutmut(where, "show", name, capture=True))
    (where / "survivors.txt").write_text("\n".join(lines))
    return counts


def report() -> None:
    """The score table: a timed-out mutant counts as detected (the tests did not pass),
    as mutmut counts it; the last column leaves timeouts out, for a stricter reading."""
    print("| module group | checked | killed | timed out | survived | reached by no test "
          "| score | killed only |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for group in GROUPS:
        c = summarize(group)
        if c and c["checked"]:
            n = c["checked"]
            print(
                f"| {group} | {n} | {c['killed']} | {c['timeout']} | {c['survived']} "
                f"| {c['no tests']} | {100 * (c['killed'] + c['timeout']) / n:.0f}% "
                f"| {100 * c['killed'] / n:.0f}% |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("group", nargs="?", choices=sorted(GROUPS))
    parser.add_argument("--sample", type=int, default=None, help="check N random mutants")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-children", type=int, default=1)
    parser.add_argument("--report", action="store_true", help="print the score table")
    parser.add_argument(
        "--recheck", action="store_true", help="run the group's survivors again (new tests)"
    )
    args = parser.parse_args()
    if args.report:
        report()
    elif args.group and args.recheck:
        recheck(args.group, args.max_children)
    elif args.group:
        run(args.group, args.sample, args.seed, args.max_children)
    else:
        parser.error("name a group or pass --report")


if __name__ == "__main__":
    main()
