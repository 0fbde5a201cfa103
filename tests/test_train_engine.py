"""The training engine: the keyed shuffle's quality, the epoch's slots, split epochs, memory.

The shuffle and the epoch's slot table are private (jnn.train._shuffle/_epoch): their
statistical properties cannot be seen through fit's public results, so they are
tested directly. Everything else goes through jnn.fit.
"""

import itertools
import math
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import jnn
from jnn.train._epoch import EpochSpec, compiled_epoch, epoch_order
from jnn.train._shuffle import shuffle as shuffle_slots
from jnn.train._shuffle import split_epoch_key

# --------------------------------------------------------------------------- the shuffle


def permutation(key, n):
    """The permutation of ``0 .. n-1`` an epoch starting from ``key`` uses."""
    return shuffle_slots(split_epoch_key(key)[1], n)


def _perms(n: int, keys: int, seed: int = 0) -> np.ndarray:
    ks = jax.random.split(jax.random.key(seed), keys)
    return np.asarray(jax.jit(jax.vmap(lambda k: permutation(k, n)))(ks))


@pytest.mark.parametrize(
    "n, keys", [(1, 50), (2, 4000), (7, 7000), (1000, 2000), (32768, 300), (100003, 150)]
)
def test_shuffle_is_a_uniform_permutation(n, keys):
    perms = _perms(n, keys)
    # Every order is a permutation of 0..n-1.
    assert (np.sort(perms, axis=1) == np.arange(n)).all()
    if n == 1:
        return
    # Each element's position is uniform over keys: chi-square over position bins.
    bins = min(n, 10)
    pos = np.argsort(perms, axis=1)  # pos[k, e]: where element e went under key k
    elements = np.random.default_rng(0).choice(n, size=min(n, 100), replace=False)
    binned = pos[:, elements] * bins // n
    expected = np.bincount(np.arange(n) * bins // n, minlength=bins) / n * keys
    counts = np.stack([np.bincount(binned[:, e], minlength=bins) for e in range(len(elements))])
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert stats.chi2.sf(chi2, (bins - 1) * len(elements)) > 1e-3
    if n > 2:
        # Consecutive outputs are uncorrelated beyond sampling without replacement, whose
        # correlation is exactly -1/(n-1).
        r = np.mean([np.corrcoef(p[:-1], p[1:])[0, 1] for p in perms])
        assert abs(r + 1 / (n - 1)) < 5 / np.sqrt(keys * n) + 1e-3
    # Different keys give different orders.
    distinct = len({p.tobytes() for p in perms})
    assert distinct == 2 if n == 2 else distinct > 0.5 * min(keys, math.factorial(min(n, 12)))


def test_shuffle_two_elements_flips_half_the_time():
    flips = (_perms(2, 4000)[:, 0] == 1).mean()
    assert abs(flips - 0.5) < 0.03


def test_shuffle_is_a_pure_function_of_the_key():
    a = permutation(jax.random.key(3), 1000)
    b = jax.jit(permutation, static_argnums=1)(jax.random.key(3), 1000)
    c = permutation(jax.random.key(4), 1000)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    stacked = jax.vmap(lambda k: permutation(k, 1000))(jnp.stack([jax.random.key(3)] * 2))
    np.testing.assert_array_equal(stacked[0], a)


def _feistel_reference(words: np.ndarray, n: int) -> np.ndarray:
    """The shuffle's Feistel network written out in numpy, one round after another."""
    from jnn.train._shuffle import ROUNDS, ROUNDS_SMALL_RADIX, _split

    def mix(x, k):  # the keyed lowbias32 mixer
        x = x ^ k
        x = x ^ (x >> 16)
        x = x * np.uint32(0x7FEB352D)
        x = x ^ (x >> 15)
        x = x * np.uint32(0x846CA68B)
        return x ^ (x >> 16)

    p, q = _split(n)
    keys = words[: ROUNDS if min(p, q) >= 16 else ROUNDS_SMALL_RADIX]

    def cipher(x):
        u, v, a, b = x // np.uint32(q), x % np.uint32(q), p, q
        for k in keys:
            u, v, a, b = v, (u + mix(v, k) % np.uint32(a)) % np.uint32(a), b, a
        return u * np.uint32(b) + v

    y = cipher(np.arange(n, dtype=np.uint32))
    while (y >= n).any():  # cycle walking
        y = np.where(y >= n, cipher(y), y)
    return y.astype(np.int32)


@pytest.mark.parametrize("n", [2, 3, 7, 448, 1000, 4099])
def test_shuffle_is_the_feistel_network_round_by_round(n):
    # The rounds run two at a time in a lax.scan: each round's key and radix must be the
    # ones a plain unrolled network uses (one round key used for both rounds of a pair
    # still permutes uniformly, so the uniformity test alone would not see it; planted:
    # it passed, this fails).
    with np.errstate(over="ignore"):
        for seed in range(3):
            words = split_epoch_key(jax.random.key(seed))[1]
            expected = _feistel_reference(np.asarray(words), n)
            np.testing.assert_array_equal(shuffle_slots(words, n), expected)


@pytest.mark.parametrize("n, batch", [(10, 4), (32, 8), (97, 10), (5, 5)])
def test_epoch_slots_use_every_example_once(n, batch):
    for shuffle in (False, True):
        slots = np.asarray(epoch_order(split_epoch_key(jax.random.key(0))[1], n, batch, shuffle))
        assert slots.shape == (-(-n // batch), batch)
        np.testing.assert_array_equal(np.sort(slots.ravel()), np.arange(slots.size))
        pads = slots >= n  # padding slots: weight 0, fewer than a batch
        assert pads.sum() == slots.size - n < batch
        if not shuffle:  # in order, the padding at the end
            np.testing.assert_array_equal(slots.ravel()[:n], np.arange(n))


# --------------------------------------------------------------------------- split epochs


def _problem(n=9600, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = (x @ rng.normal(size=(4, 1)) > 0).astype("float32")
    model = jnn.serial(jnn.Dense(8, activation="relu"), jnn.Dropout(0.2), jnn.Dense(1))
    _, params = model.init(jax.random.key(0), (-1, 4))
    return model, params, x, y


FIT = dict(loss="bce_with_logits", epochs=2, batch_size=32, metrics=["accuracy"], verbose=0)


@pytest.mark.parametrize("steps_per_call", [1, 200])  # 300 steps: calls of 128 or 256 steps
def test_an_epoch_cut_into_calls_gives_the_same_bits(steps_per_call):
    model, params, x, y = _problem()
    val = (x[:50], y[:50])
    one = jnn.fit(model, params, (x, y), key=jax.random.key(1), validation_data=val, **FIT)
    cut = jnn.fit(model, params, (x, y), key=jax.random.key(1), validation_data=val,
                  steps_per_call=steps_per_call, **FIT)  # fmt: skip
    for a, b in zip(jax.tree.leaves(one.state), jax.tree.leaves(cut.state), strict=True):
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(a, b)
    assert one.history == cut.history


def test_nan_guard_in_a_cut_epoch_stops_at_the_same_step():
    model, params, x, y = _problem()
    x = x.copy()
    x[200] = np.nan  # a poisoned example: the step that sees it goes non-finite
    kw = dict(FIT, metrics=[])
    errors = []
    for steps_per_call in (None, 100):
        with pytest.raises(jnn.NonFiniteError) as info:
            _fit_unchecked(model, params, x, y, steps_per_call, kw)
        errors.append(info.value)
    assert (errors[0].epoch, errors[0].step) == (errors[1].epoch, errors[1].step)
    for a, b in zip(
        jax.tree.leaves(errors[0].result.params),
        jax.tree.leaves(errors[1].result.params),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)


def _fit_unchecked(model, params, x, y, steps_per_call, kw):
    """fit refuses NaN in the data up front; a loss that turns one example's value into NaN
    makes a non-finite step instead."""
    bad = np.isnan(x).any(axis=1)
    x = np.where(bad[:, None], 0.0, x).astype("float32")
    y = np.where(bad[:, None], 2.0, y).astype("float32")  # a label marking the bad example

    def poisoned(pred, target, *, weights=None):
        loss = jnn.losses.bce_with_logits(pred, jnp.minimum(target, 1.0), weights=weights)
        return jnp.where(jnp.any((target > 1.0) & (weights[:, None] > 0)), jnp.nan, loss)

    kw = {k: v for k, v in kw.items() if k != "loss"}
    return jnn.fit(model, params, (x, y), loss=poisoned, key=jax.random.key(1),
                   steps_per_call=steps_per_call, **kw)  # fmt: skip


def test_ctrl_c_lands_inside_a_long_epoch():
    """Ctrl-C (SIGINT, sent from inside the 1000th step, so no timing decides where it
    lands) stops fit within the call of the first epoch it arrives in."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, 2)).astype("float32")
    y = x[:, :1].copy()
    model = jnn.Dense(1)
    _, params = model.init(jax.random.key(0), (-1, 2))
    steps = itertools.count(1)  # next() is atomic: callbacks may run on several threads

    def count(_):
        if next(steps) == 1000:  # exactly one Ctrl-C (a second one raises KeyboardInterrupt)
            os.kill(os.getpid(), signal.SIGINT)

    def mse(pred, target, *, weights=None):
        jax.debug.callback(count, pred)
        return jnn.losses.mse(pred, target, weights=weights)

    with pytest.warns(UserWarning, match="during epoch 1; returning the state reached"):
        res = jnn.fit(model, params, (x, y), loss=mse, optimizer="sgd", epochs=2,
                      batch_size=1, steps_per_call=1, key=jax.random.key(1),
                      verbose=0)  # fmt: skip
    assert 1000 <= int(res.state.step) < 20_000  # stopped in the middle of the first epoch
    assert res.history == {"loss": []}


# --------------------------------------------------------------------------- memory


def test_the_epoch_holds_the_data_once():
    """The compiled epoch gathers each batch from the data: its scratch memory is far
    below one copy of the data (it used to build a shuffled, padded copy per epoch)."""
    n, d = 1_000_000, 64  # 256 MB of float32, only compiled (never allocated)
    model = jnn.stateful(jnn.Dense(1))
    _, params = jnn.Dense(1).init(jax.random.key(0), (-1, d))
    tx = jnn.get_optimizer("adam")
    # Private on purpose (no public API shows a compiled epoch's scratch memory); by
    # keyword, so a reordered or extended EpochSpec does not silently mis-assign fields.
    spec = EpochSpec(model=model, loss_fn=jnn.losses.get("mse"), tx=tx, metric_fns=(),
                     batch_size=256, shuffle=True, validate=False)  # fmt: skip
    state = jnn.TrainState.create(params, tx, key=jax.random.key(0))
    x = jax.ShapeDtypeStruct((n, d), jnp.float32)
    y, w = jax.ShapeDtypeStruct((n, 1), jnp.float32), jax.ShapeDtypeStruct((n,), jnp.float32)
    compiled = compiled_epoch(spec).lower(state, x, y, w, None).compile()
    scratch = compiled.memory_analysis().temp_size_in_bytes
    assert scratch < 0.1 * n * d * 4
