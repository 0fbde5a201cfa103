"""A keyed permutation of ``[0, n)`` without a sort (private).

``jax.random.permutation`` sorts random keys: O(n log n), and on a CPU it costs more than
the epoch it shuffles. Here each index is sent through a small Feistel network, an
elementwise keyed bijection, so the whole permutation is a few integer operations per
element, in parallel, and vmaps (each run of a sweep gets its own order from its key).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from jnn._typing import Array, PRNGKey

# Feistel rounds (even, so the output layout is the input's). Four rounds make a strong
# pseudorandom permutation when the round function has many inputs; small radices (a round
# function of 3 values) mix slowly, and 6 rounds left n = 5 or 7 measurably non-uniform.
ROUNDS, ROUNDS_SMALL_RADIX = 6, 12


def _hash(x: Array, k: Array) -> Array:
    """A keyed 32-bit mixer (Wellons' "lowbias32" finalizer after xoring the key)."""
    x = x ^ k
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


@functools.lru_cache(maxsize=256)
def _split(n: int) -> tuple[int, int]:
    """Radices ``(p, q)`` with ``p * q >= n`` for the Feistel network.

    An exact factorization needs no cycle walking. Preferred: ``q`` the power of two
    dividing ``n`` nearest ``sqrt(n)`` (a mod by a power of two is a mask; epochs have
    ``n = batches * batch_size``), then any divisor within 64x of balance; else the
    near-square ``ceil(sqrt(n))`` split, whose few values past ``n`` are walked.
    """
    root = math.isqrt(n)
    twos = (n & -n).bit_length() - 1  # n = 2**twos * odd
    for k in sorted(range(1, twos + 1), key=lambda k: abs(2 * k - math.log2(n))):
        if n >> k >= 2 and max(n >> k, 1 << k) <= 64 * min(n >> k, 1 << k):
            return n >> k, 1 << k
    for p in range(root, max(2, root // 8) - 1, -1):
        if n % p == 0:
            return n // p, p
    p = root + (root * root < n)
    return p, -(-n // p)


def _cipher(keys: Array, x: Array, p: int, q: int) -> Array:
    """One pass of the Feistel network: a bijection of ``[0, p * q)``, elementwise.

    ``keys``: the round keys, shaped ``(rounds // 2, 2)``. The rounds run as a
    ``lax.scan`` of two rounds per iteration (one per radix, so the layout returns to
    ``(Z_p, Z_q)``): the epoch program traces, lowers and compiles two rounds, not all
    of them (unrolled, the rounds were a quarter of the seed epoch's equations, and XLA
    repeated them in every gather they fed). Unsigned integers only, so ``lax.div`` and
    ``lax.rem`` are floor division and modulo (``jnp``'s ``//`` and ``%`` add sign
    corrections that cost trace and compile time).
    """

    def two_rounds(uv: tuple[Array, Array], pair: Array) -> tuple[tuple[Array, Array], None]:
        u, v = uv
        for k, a in ((pair[0], jnp.uint32(p)), (pair[1], jnp.uint32(q))):
            # (u, v) -> (v, (u + F_k(v)) mod a): a bijection; the radices alternate
            w = u + lax.rem(_hash(v, k), a)
            u, v = v, lax.select(w >= a, w - a, w)
        return (u, v), None

    uv = (lax.div(x, jnp.uint32(q)), lax.rem(x, jnp.uint32(q)))  # x = u * q + v
    u, v = lax.scan(two_rounds, uv, keys)[0]
    return u * jnp.uint32(q) + v


# An epoch's randomness is ONE jax.random.split of the state's key into this many keys:
# the first replaces the state's key, the words of the others are the shuffle's round
# keys (every key holds >= 2 uint32 words, so they cover ROUNDS_SMALL_RADIX). One split,
# not a split and then random.bits: each threefry call is traced, lowered and compiled
# into the epoch program (the seed epoch's lowering shrank by a tenth).
EPOCH_KEYS = 1 + ROUNDS_SMALL_RADIX // 2


def split_epoch_key(key: PRNGKey) -> tuple[PRNGKey, Array]:
    """``(next_key, words)``: the key that replaces ``key`` after an epoch (the same for
    array and streamed epochs) and the uint32 words that key a :func:`shuffle`."""
    keys = jax.random.split(key, EPOCH_KEYS)
    return keys[0], jax.random.key_data(keys[1:]).reshape(-1).astype(jnp.uint32)


def shuffle(words: Array, n: int) -> Array:
    """A pseudorandom permutation of ``0 .. n-1`` (int32) keyed by uint32 ``words``
    (:func:`split_epoch_key`'s); a pure function of them."""
    if n == 1:
        return jnp.zeros((1,), jnp.int32)
    p, q = _split(n)
    keys = words[: ROUNDS if min(p, q) >= 16 else ROUNDS_SMALL_RADIX].reshape(-1, 2)
    y = _cipher(keys, jnp.arange(n, dtype=jnp.uint32), p, q)
    if p * q > n:  # cycle walking: re-encrypt the few values that fell outside [0, n)

        def walk(y):
            return jnp.where(y >= n, _cipher(keys, y, p, q), y)

        y = lax.while_loop(lambda y: jnp.any(y >= n), walk, y)
    return y.astype(jnp.int32)
