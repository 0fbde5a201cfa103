"""jnn.compile_cache: JAX's persistent compilation cache, safe with bad folders and entries.

The cross-process checks run the same small fit in fresh processes (a cold cache, a warm
one, then one whose every entry was corrupted) and compare them with the cold run.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

import jnn

ROOT = Path(__file__).resolve().parent.parent

WORKER = """
import collections, json, warnings
import jax, numpy as np, jnn
events = collections.Counter()
jax.monitoring.register_event_listener(lambda name, **kw: events.update([name]))
folder = jnn.compile_cache()  # the folder from JNN_COMPILE_CACHE
x = np.random.default_rng(0).normal(size=(48, 3)).astype("float32")
y = (x.sum(1, keepdims=True) > 0).astype("float32")
model = jnn.serial(jnn.Dense(4, activation="relu"), jnn.Dense(1, activation="sigmoid"))
_, params = model.init(jax.random.key(0), (-1, 3))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    res = jnn.fit(model, params, (x, y), loss="bce", epochs=2, batch_size=16,
                  key=jax.random.key(1), verbose=0)
    pred = jnn.predict(model, res.params, x[:5])
print(json.dumps({
    "folder": str(folder), "history": res.history, "pred": pred.tolist(),
    "hits": events["/jax/compilation_cache/cache_hits"],
    "misses": events["/jax/compilation_cache/cache_misses"],
    "warnings": [str(w.message) for w in caught],
}))
"""


def _run(folder: Path) -> dict:
    env = {**os.environ, "JNN_COMPILE_CACHE": str(folder), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", WORKER], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_fresh_processes_reuse_the_cache_and_survive_corrupted_entries(tmp_path):
    folder = tmp_path / "xla"
    cold = _run(folder)
    assert cold["folder"] == str(folder) and cold["misses"] > 0 and cold["hits"] == 0
    entries = sorted(folder.glob("*-cache"))
    assert entries, "nothing was written to the cache"
    warm = _run(folder)
    assert warm["hits"] >= cold["misses"] and warm["misses"] == 0
    assert (warm["history"], warm["pred"]) == (cold["history"], cold["pred"])
    for entry in entries:  # every entry garbage: each read fails
        entry.write_bytes(b"not a compiled program" + os.urandom(64))
    broken = _run(folder)
    assert broken["misses"] == cold["misses"] and broken["hits"] == 0  # compiled again
    assert any("persistent compilation cache" in w for w in broken["warnings"])
    assert (broken["history"], broken["pred"]) == (cold["history"], cold["pred"])


def test_a_folder_that_cannot_be_used_warns_and_changes_nothing(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    before = jax.config.jax_compilation_cache_dir
    with pytest.warns(UserWarning, match="cannot use .* as a compilation cache"):
        assert jnn.compile_cache(blocker / "xla") is None
    assert jax.config.jax_compilation_cache_dir == before


def test_off_and_bad_arguments(monkeypatch):
    before = jax.config.jax_compilation_cache_dir
    monkeypatch.setenv("JNN_COMPILE_CACHE", "off")
    assert jnn.compile_cache() is None
    assert jax.config.jax_compilation_cache_dir == before
    with pytest.raises(TypeError, match="path must be a folder"):
        jnn.compile_cache(3)  # type: ignore[arg-type]


def test_the_default_folder_is_the_users_cache(monkeypatch, tmp_path):
    from jnn._compile_cache import default_cache_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    if sys.platform.startswith("linux"):
        assert default_cache_dir() == tmp_path / "jnn" / "xla"
    assert default_cache_dir().parts[-2:] == ("jnn", "xla")
