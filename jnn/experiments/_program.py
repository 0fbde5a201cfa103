"""One run of a sweep as two pure pieces, ``init`` and ``train``, that the sweep vmaps.

``train`` scans ``fit``'s own epoch function (the engine's ``epoch_fn``) over
epochs, so a plain sweep (``init`` then ``train`` to the end), a successive-halving
rung (``train`` resumed from a saved state) and a PBT interval all run the very
steps ``jnn.fit`` runs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jnn.experiments._runs import _seed_keys
from jnn.train import TrainState
from jnn.train._internal import EpochSpec, epoch_fn, program_cache


class Program(NamedTuple):
    """``init(init_seed, shuffle_seed, hparams) -> state`` and
    ``train(state, fold, shared, epochs) -> (state, logs)``, for one run."""

    init: Callable
    train: Callable


@program_cache
def program(
    smodel, loss_fn, tx, factory, metric_fns, batch_size, shuffle, validate, folded, in_shape
) -> Program:
    """The pieces of one run (cached: the same settings give the same functions)."""
    epoch = epoch_fn(EpochSpec(smodel, loss_fn, tx, metric_fns, batch_size, shuffle, validate))

    def init(init_seed, shuffle_seed, hp):
        init_key, fit_key = _seed_keys(init_seed, shuffle_seed)
        _, params, model_state = smodel.init(init_key, in_shape)
        # Exactly what fit does with optax.inject_hyperparams(factory)(**hparams).
        run_tx = tx if factory is None else optax.inject_hyperparams(factory)(**hp)
        return TrainState(
            params, run_tx.init(params), jnp.zeros((), jnp.int32), fit_key, model_state
        )

    def train(state, fold, shared, epochs):
        xd, yd, train_w, val_w, val = shared
        run_val = (xd, yd, val_w[fold]) if folded else val

        def body(state, _):
            state, logs, _ = epoch(state, xd, yd, train_w[fold], run_val)
            return state, logs

        return jax.lax.scan(body, state, None, length=epochs)

    return Program(init, train)


@functools.lru_cache(maxsize=16)
def compiled_resume(prog: Program, epochs: int) -> Callable:
    """``resume(state, fold, shared)``: a chunk of runs trained ``epochs`` more, jitted.

    The states come from the host with raw key data (as :func:`_map_chunks` returns them).
    """

    def one_run(state, fold, shared):
        state = state._replace(key=jax.random.wrap_key_data(state.key))
        return prog.train(state, fold, shared, epochs)

    return jax.jit(jax.vmap(one_run, in_axes=(0, 0, None)))
