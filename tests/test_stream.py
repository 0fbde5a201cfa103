"""Streams of batches in fit / evaluate / predict (jnn/_stream.py)."""

import itertools
import logging
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jnn
from jnn.train import _stream

N, B, D = 1000, 48, 5  # 21 batches, the last of 40 rows: ragged batch and ragged groups


def _data(n=N, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, D)).astype(np.float32)
    y = (x[:, :2].sum(1, keepdims=True) > 0).astype(np.float32)
    return x, y


MODEL = jnn.serial(jnn.Dense(8, activation="relu"), jnn.Dense(1, activation="sigmoid"))


def _model():  # one object, so compiled functions are reused across tests
    return MODEL


def _params():
    return _model().init(jax.random.key(0), (-1, D))[1]


def _batches(x, y, bsz=B, w=None):
    def gen():
        for i in range(0, x.shape[0], bsz):
            sl = slice(i, i + bsz)
            yield (x[sl], y[sl]) if w is None else (x[sl], y[sl], w[sl])

    return gen


FIT = dict(loss="bce", optimizer="adam", learning_rate=0.01, key=jax.random.key(1), verbose=0)


def _close(a, b, tol=1e-5):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=tol, atol=tol)


@pytest.fixture(scope="module")
def array_result():
    x, y = _data()
    return jnn.fit(_model(), _params(), (x, y), epochs=2, batch_size=B, shuffle=False, **FIT)


@pytest.mark.parametrize("k", [1, 8, 64])
def test_stream_matches_array_path(array_result, k):
    x, y = _data()
    res = jnn.fit(_model(), _params(), _batches(x, y), epochs=2, steps_per_call=k, **FIT)
    _close(res.params, array_result.params)
    _close(res.opt_state, array_result.opt_state)
    for name, values in array_result.history.items():
        np.testing.assert_allclose(res.history[name], values, rtol=1e-5)
    assert int(res.state.step) == 2 * 21  # skipped steps of a short group are not counted


def test_ragged_tail_counts_every_example():
    x, y = _data()

    def seen(pred, y, *, weights):  # per step: the number of real examples in the batch
        return jnp.sum(weights)

    res = jnn.fit(_model(), _params(), _batches(x, y), epochs=1, steps_per_call=8,
                  metrics=[seen], **FIT)  # fmt: skip
    # The epoch's value is sum_b W_b * W_b / sum_b W_b over batches with W_b real rows.
    sizes = [B] * 20 + [N - 20 * B]
    expected = sum(s * s for s in sizes) / sum(sizes)
    assert res.history["seen"][0] == pytest.approx(expected)
    assert int(res.state.step) == 21


def test_compiles_at_most_twice_across_epochs(caplog):
    x, y = _data()
    model = jnn.serial(jnn.Dense(3, activation="relu"), jnn.Dense(1, activation="sigmoid"))
    _, params = model.init(jax.random.key(0), (-1, D))
    with caplog.at_level(logging.WARNING), jax.log_compiles():
        for _ in range(2):
            jnn.fit(model, params, _batches(x, y), epochs=3, steps_per_call=8, **FIT)
    compiled = [r for r in caplog.messages if r.startswith("Finished XLA compilation of jit(call)")]
    assert len(compiled) == 2  # the full group and the short last one, once for all epochs


def test_weights_in_batches_match_sample_weight():
    x, y = _data()
    w = np.random.default_rng(3).uniform(0, 2, size=N).astype(np.float32)
    ref = jnn.fit(_model(), _params(), (x, y), epochs=1, batch_size=B, shuffle=False,
                  sample_weight=w, **FIT)  # fmt: skip
    res = jnn.fit(_model(), _params(), _batches(x, y, w=w), epochs=1, steps_per_call=8, **FIT)
    _close(res.params, ref.params)
    ev_ref = jnn.evaluate(_model(), ref.params, (x, y), loss="bce", batch_size=B, sample_weight=w)
    ev = jnn.evaluate(_model(), ref.params, _batches(x, y, w=w)(), loss="bce", steps_per_call=8)
    assert ev["loss"] == pytest.approx(ev_ref["loss"], rel=1e-5)


def test_infinite_iterator_with_steps_per_epoch_continues_across_epochs():
    x, y = _data()
    pulled = []

    def forever():
        for i in itertools.count():
            pulled.append(i)
            j = (i * B) % (N - B)
            yield x[j : j + B], y[j : j + B]

    res = jnn.fit(_model(), _params(), forever(), epochs=3, steps_per_epoch=10, steps_per_call=8,
                  **FIT)  # fmt: skip
    assert int(res.state.step) == 30
    assert len(res.history["loss"]) == 3
    assert pulled == list(range(30))  # continued, never restarted, never read ahead


def test_one_shot_iterator_needs_steps_or_a_callable():
    x, y = _data()
    with pytest.raises(ValueError, match="no batch in epoch 2"):
        jnn.fit(_model(), _params(), _batches(x, y)(), epochs=2, **FIT)


def test_list_streams_are_reiterated(array_result):
    x, y = _data()
    batches = list(_batches(x, y)())
    res = jnn.fit(_model(), _params(), batches, epochs=2, steps_per_call=8, **FIT)
    _close(res.params, array_result.params)


def test_validation_from_a_stream(array_result):
    x, y = _data()
    xv, yv = _data(200, seed=1)
    res = jnn.fit(_model(), _params(), _batches(x, y), epochs=2, steps_per_call=8,
                  validation_data=_batches(xv, yv), validation_steps=3, **FIT)  # fmt: skip
    np.testing.assert_allclose(res.history["loss"], array_result.history["loss"], rtol=1e-5)
    # validation_steps=3: the first 144 validation examples, after each epoch
    res1 = jnn.fit(_model(), _params(), _batches(x, y), epochs=1, steps_per_call=8, **FIT)
    ev = jnn.evaluate(_model(), res1.params, (xv[: 3 * B], yv[: 3 * B]), loss="bce", batch_size=B)
    assert res.history["val_loss"][0] == pytest.approx(ev["loss"], rel=1e-5)


def test_evaluate_and_predict_from_streams():
    x, y = _data()
    params = _params()
    ref = jnn.evaluate(_model(), params, (x, y), loss="bce", batch_size=B)
    for k in (1, 8):
        got = jnn.evaluate(_model(), params, _batches(x, y)(), loss="bce", steps_per_call=k)
        assert got == pytest.approx(ref, rel=1e-5)
    out = jnn.predict(_model(), params, (xb for xb, _ in _batches(x, y)()))
    np.testing.assert_allclose(out, jnn.predict(_model(), params, x), rtol=1e-6)
    assert out.shape == (N, 1)
    out = jnn.predict(_model(), params, _batches(x, y), steps=2)  # tuples: first item is x
    assert out.shape == (2 * B, 1)


def test_progress_shows_examples_per_second(capsys):
    x, y = _data()
    jnn.fit(_model(), _params(), list(_batches(x, y)()), epochs=1, **{**FIT, "verbose": 2})
    line = capsys.readouterr().out
    assert "21/21 batches" in line and "examples/s" in line


def test_progress_on_a_terminal_shows_the_running_epoch(capsys, monkeypatch):
    x, y = _data()
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    jnn.fit(_model(), _params(), list(_batches(x, y)()), epochs=1, **{**FIT, "verbose": 1})
    out = capsys.readouterr().out
    assert "Epoch 1/1 " in out and "/21 batches" in out and "ETA" in out


def test_bad_streams_fail_clearly():
    x, y = _data()
    fit = lambda data, **kw: jnn.fit(_model(), _params(), data, epochs=1, **FIT, **kw)  # noqa: E731
    with pytest.raises(ValueError, match="batch 1 of the stream has 96 examples"):
        fit([(x[:48], y[:48]), (x[:96], y[:96])])
    with pytest.raises(ValueError, match="sample_weight is for array data"):
        fit(_batches(x, y), sample_weight=np.ones(N))
    with pytest.raises(TypeError, match=r"tuple \(x, y\)"):
        fit(iter([{"x": x, "y": y}]))
    with pytest.raises(ValueError, match="per-example shape"):
        fit(iter([(x[:4], y[:4]), (x[:4, :3], y[:4])]))
    bad = x[:8].copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit(iter([(x[:8], y[:8]), (bad, y[:8])]))
    with pytest.raises(ValueError, match="produced no batch"):
        fit(iter([]))
    with pytest.raises(ValueError, match="steps_per_call must be a positive int"):
        fit(_batches(x, y), steps_per_call=0)
    with pytest.raises(ValueError, match="only for a stream"):
        fit((x, y), steps_per_epoch=3)


@pytest.mark.parametrize("weighted", [False, True], ids=["fast path", "checked path"])
def test_stream_errors_name_the_batch_by_its_index_in_the_stream(weighted):
    """After groups of k = 2 batches (plain numpy pairs take the fast path, triples with
    weights the checked one), a bad batch or NaN is named by its index in the stream."""
    x, y = _data(8 * 7)
    w = np.ones(len(x), np.float32) if weighted else None
    good = list(_batches(x, y, bsz=8, w=w)())  # 7 batches of 8 rows

    def fit(data):
        return jnn.fit(_model(), _params(), iter(data), epochs=1, steps_per_call=2, **FIT)

    wrong = (x[:8, :3], *good[5][1:])  # 3 features instead of 5
    with pytest.raises(ValueError, match=r"batch 5 of the stream: x has shape \(8, 3\)"):
        fit([*good[:5], wrong, good[6]])
    nan_x = x[:8].copy()
    nan_x[2, 0] = np.nan
    with pytest.raises(ValueError, match=r"NaN/Inf in the stream's batches 4\.\.5\."):
        fit([*good[:5], (nan_x, *good[5][1:]), good[6]])


def test_a_one_batch_stream_evaluates_as_its_arrays():
    x, y = _data(B)
    params = _params()
    want = jnn.evaluate(_model(), params, (x, y), loss="bce", batch_size=B)
    got = jnn.evaluate(_model(), params, iter([(x, y)]), loss="bce")
    assert got == pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError, match="the data stream produced no batch"):
        jnn.evaluate(_model(), params, iter([]), loss="bce")


def test_errors_in_the_loader_reach_the_caller():
    x, y = _data()

    def broken():
        yield x[:B], y[:B]
        yield x[:B], y[:B]
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        jnn.fit(_model(), _params(), broken, epochs=1, steps_per_call=1, **FIT)


def test_prefetch_puts_with_a_sharding_and_stops_early():
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    x, y = _data()
    spec = _stream.Spec(B, ((D,), (1,)), (np.dtype(np.float32),) * 2)
    source = _stream.groups("t", _batches(x, y)(), spec, 4, 2)
    prefetch = _stream.Prefetch(source, _stream.sharded_put(sharding))
    first = next(iter(prefetch))
    xs, ys, ws, valid = first.arrays
    assert xs.shape == (4, B, D) and ys.shape == (4, B, 1) and ws.shape == (4, B)
    assert bool(valid.all())
    assert xs.sharding.spec == jax.sharding.PartitionSpec(None, "data")
    prefetch.close()
    assert not prefetch._thread.is_alive()


def test_grain_loaders(array_result):
    import grain  # in the test extra: never skipped

    x, y = _data()
    ref = array_result
    dataset = grain.MapDataset.source(list(zip(x, y, strict=True))).batch(B)
    res = jnn.fit(_model(), _params(), dataset, epochs=2, steps_per_call=8, **FIT)
    _close(res.params, ref.params)
    sampler = grain.samplers.IndexSampler(num_records=N, shuffle=False, num_epochs=1, seed=0)
    loader = grain.DataLoader(
        data_source=list(zip(x, y, strict=True)), sampler=sampler,
        operations=[grain.transforms.Batch(batch_size=B)], worker_count=0,
    )  # fmt: skip
    res = jnn.fit(_model(), _params(), loader, epochs=2, steps_per_call=8, **FIT)
    _close(res.params, ref.params)


def test_torch_dataloader(array_result):
    import torch  # the test extra pins torch==2.13.0 (CPU): never skipped

    x, y = _data()
    ref = array_result
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    loader = torch.utils.data.DataLoader(dataset, batch_size=B, shuffle=False)
    res = jnn.fit(_model(), _params(), loader, epochs=2, steps_per_call=8, **FIT)
    _close(res.params, ref.params)
    ev = jnn.evaluate(_model(), ref.params, loader, loss="bce", steps_per_call=8)
    ev_ref = jnn.evaluate(_model(), ref.params, (x, y), loss="bce", batch_size=B)
    assert ev["loss"] == pytest.approx(ev_ref["loss"], rel=1e-5)


MEMORY_SCRIPT = textwrap.dedent(
    """
    import jax, numpy as np, jnn

    def peak_mib():  # VmHWM: this process's peak RSS (ru_maxrss would include the forking parent)
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) // 1024
    ROWS, FEATURES, BATCHES = 1024, 256, {batches}  # 1 MiB of x per batch

    def stream(n):
        def gen():
            for i in range(n):  # made on the fly, never all in memory
                yield np.full((ROWS, FEATURES), i % 7, np.float32), np.ones((ROWS, 1), np.float32)
        return gen

    model = jnn.Dense(1)
    _, params = model.init(jax.random.key(0), (-1, FEATURES))
    kw = dict(loss="mse", optimizer="sgd", learning_rate=1e-6, key=jax.random.key(1), verbose=0,
              steps_per_call=8)
    jnn.fit(model, params, stream(16), epochs=1, **kw)  # compile both variants
    base = peak_mib()
    res = jnn.fit(model, params, stream(BATCHES), epochs=1, **kw)
    assert int(res.state.step) == BATCHES
    print(base, peak_mib())
    """
)


def test_memory_stays_bounded_while_streaming_2gb():
    batches = 2048  # 2 GiB of x over the epoch
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT.format(batches=batches)],
        capture_output=True, text=True, timeout=240, env=env, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    base_mib, peak_mib = map(int, out.stdout.split()[-2:])
    assert peak_mib < 1024, (base_mib, peak_mib)  # far below the 2048 MiB streamed
    assert peak_mib - base_mib < 512, (base_mib, peak_mib)  # bounded: ~100-200 MiB seen here


def test_fast_and_checked_batch_paths_agree():
    """Full numpy (x, y) tuples take the one-copy path; lists, float64 or a ragged batch the
    checked per-batch path. Mixed in one stream, they give the same training."""
    x, y = _data()
    spec = _stream.Spec(B, ((D,), (1,)), (np.dtype(np.float32), np.dtype(np.float32)))
    plain = list(_batches(x, y)())
    mixed = [
        [a, b] if i % 3 == 0 else (a.astype(np.float64), b) if i % 3 == 1 else (a, b)
        for i, (a, b) in enumerate(plain)
    ]
    for k in (1, 4, 8):
        fast = list(_stream.groups("fit", iter(plain), spec, k, 2))
        slow = list(_stream.groups("fit", iter(mixed), spec, k, 2))
        assert len(fast) == len(slow)
        for f, s in zip(fast, slow, strict=True):
            assert (f.batches, f.examples) == (s.batches, s.examples)
            for u, v in zip(f.arrays, s.arrays, strict=True):
                np.testing.assert_array_equal(u, v)
    res = jnn.fit(_model(), _params(), mixed, epochs=2, steps_per_call=4, **FIT)
    want = jnn.fit(_model(), _params(), plain, epochs=2, steps_per_call=4, **FIT)
    _close(res.params, want.params, 1e-6)


def test_streams_on_a_one_device_mesh_match_no_mesh():
    # More devices and processes: tests/test_distributed.py (subprocesses).
    x, y = _data()
    kw = dict(epochs=2, steps_per_call=2, **FIT)
    ref = jnn.fit(_model(), _params(), _batches(x, y), validation_data=_batches(x, y), **kw)
    res = jnn.fit(_model(), _params(), _batches(x, y), validation_data=_batches(x, y),
                  mesh="auto", param_sharding="fsdp", **kw)  # fmt: skip
    _close(res.params, ref.params, 1e-6)
    assert res.history.keys() == ref.history.keys()
    for k, v in ref.history.items():
        np.testing.assert_allclose(res.history[k], v, rtol=1e-6)
    ev = jnn.evaluate(_model(), ref.params, _batches(x, y), loss="bce", mesh="auto")
    assert ev == pytest.approx(jnn.evaluate(_model(), ref.params, (x, y), loss="bce"))
    pred = jnn.predict(_model(), ref.params, (x[i : i + B] for i in range(0, N, B)), mesh="auto")
    np.testing.assert_allclose(pred, jnn.predict(_model(), ref.params, x), atol=1e-6)


def test_stateful_models_evaluate_and_predict_on_streams_as_on_arrays():
    """The model state (BatchNorm's statistics) reaches every evaluation-mode call."""
    model = jnn.serial(jnn.Dense(4), jnn.BatchNorm(), jnn.Dense(1))
    _, params, state = model.init(jax.random.key(0), (-1, 3))
    state = jax.tree.map(lambda s: s + 0.5, state)  # not the identity statistics
    x = np.random.default_rng(0).normal(size=(24, 3)).astype(np.float32)
    y = x[:, :1] * 2.0

    def batches():
        return ((x[i : i + 8], y[i : i + 8]) for i in range(0, 24, 8))

    on_arrays = jnn.evaluate(model, params, (x, y), loss="mse", model_state=state)
    on_stream = jnn.evaluate(model, params, batches, loss="mse", model_state=state)
    np.testing.assert_allclose(on_stream["loss"], on_arrays["loss"], rtol=1e-5)
    want = jnn.predict(model, params, x, model_state=state)
    got = jnn.predict(model, params, lambda: (xb for xb, _ in batches()), model_state=state)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_an_iterable_that_is_also_callable_is_iterated_not_called():
    """A stream object may be both (e.g. a loader with a __call__ for something else):
    ``fit`` iterates it; only a callable that is not iterable is called for each epoch."""
    x = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)
    y = x[:, :1]

    class Loader:
        def __iter__(self):
            return iter([(x[:8], y[:8]), (x[8:], y[8:])])

        def __call__(self):
            raise AssertionError("called instead of iterated")

    model = jnn.Dense(1)
    params = model.init(jax.random.key(0), (-1, 3))[1]
    res = jnn.fit(model, params, Loader(), loss="mse", epochs=2, key=jax.random.key(1),
                  verbose=0)  # fmt: skip
    want = jnn.fit(model, params, lambda: iter(Loader()), loss="mse", epochs=2,
                   key=jax.random.key(1), verbose=0)  # fmt: skip
    assert res.history["loss"] == want.history["loss"]
