"""Adaptive searches: successive halving (rungs re-packed on the host) and population-based
training (exploit and explore inside the compiled program, on the run axis).

Runs are ordered setting-major (``run = setting * m + r`` with ``m`` seeds x folds),
so a setting's score is the mean of its ``m`` runs' monitored metric, and copying a
setting is a gather of the run axis.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jnn._data import check_int, check_number
from jnn.experiments._chunks import _assemble, _chunk_size, _map_chunks, _sharding
from jnn.experiments._program import Program, compiled_resume
from jnn.experiments._space import Choice, Space

__all__ = ["PBT", "SuccessiveHalving"]


def _check_mode(where: str, mode: Any) -> str | None:
    if mode not in (None, "min", "max"):
        raise ValueError(
            f"{where}: mode must be 'min', 'max' or None (from the name), got {mode!r}."
        )
    return mode


class SuccessiveHalving:
    """Stop the worse runs at rungs of ``min_epochs * eta**i`` epochs; continue the best 1/eta.

    After each rung the settings are ranked by ``monitor`` at the rung's last
    epoch (mean over seeds and folds; diverged settings last), the best
    ``max(1, n // eta)`` go on, re-packed into a smaller vmapped program; the
    others keep their last metrics and state (``SweepResult.epochs_run``).

    Args:
      eta: the reduction factor, an int >= 2.
      min_epochs: epochs of the first rung, >= 1 (and <= the sweep's epochs).
      monitor: the metric that ranks settings; default the sweep's ``monitor``.
      mode: ``"min"`` or ``"max"``; default max for accuracies, else min.

    Example:
      >>> from jnn.experiments import SuccessiveHalving
      >>> SuccessiveHalving(eta=3, min_epochs=2).rungs(20)
      [2, 6, 18, 20]
    """

    def __init__(
        self, eta: int = 3, min_epochs: int = 1, *, monitor: str | None = None,
        mode: str | None = None,
    ):  # fmt: skip
        self.eta = check_int("SuccessiveHalving", "eta", eta, minimum=2)
        self.min_epochs = check_int("SuccessiveHalving", "min_epochs", min_epochs, minimum=1)
        self.monitor = monitor
        self.mode = _check_mode("SuccessiveHalving", mode)

    def __repr__(self) -> str:
        return f"SuccessiveHalving(eta={self.eta}, min_epochs={self.min_epochs})"

    def rungs(self, epochs: int) -> list[int]:
        """The epoch counts at which settings are ranked, the last being ``epochs``.

        Args:
          epochs: the sweep's epochs.

        Returns:
          ``[min_epochs, min_epochs * eta, ...]`` below ``epochs``, then ``epochs``.

        Raises:
          ValueError: if ``min_epochs`` is more than ``epochs``.
        """
        if self.min_epochs > epochs:
            raise ValueError(
                f"SuccessiveHalving: min_epochs={self.min_epochs} is more than the sweep's "
                f"epochs={epochs}; lower min_epochs or train longer."
            )
        out, e = [], self.min_epochs
        while e < epochs:
            out.append(e)
            e *= self.eta
        return [*out, epochs]


class PBT:
    """Population-based training: every ``interval`` epochs, inside the compiled program,
    the bottom ``quantile`` of settings copy a top-quantile setting and explore.

    A copied setting takes the donor's params, optimizer state (its injected
    hyperparameters included) and model state, seed by seed and fold by fold
    (each run keeps its own shuffling key); then each of its sampled
    hyperparameters is, with probability ``resample``, drawn afresh from its
    space, else multiplied by one of ``perturb`` (a :class:`Choice` moves to a
    neighbouring value), clipped to the space. Donors and draws come from the
    sweep's ``key``. ``SweepResult.hparam_history`` and ``parents`` record it.

    Args:
      interval: epochs between exploit steps, >= 1 (and < the sweep's epochs).
      quantile: the fraction replaced (and copied from), in (0, 0.5].
      perturb: the two factors a hyperparameter is multiplied by, > 0.
      resample: the probability of a fresh draw instead, in [0, 1].
      monitor, mode: as for :class:`SuccessiveHalving`.

    Example:
      >>> from jnn.experiments import PBT
      >>> PBT(interval=4, quantile=0.25)
      PBT(interval=4, quantile=0.25, perturb=(0.8, 1.2), resample=0.25)
    """

    def __init__(
        self, interval: int = 1, quantile: float = 0.25, perturb: tuple[float, float] = (0.8, 1.2),
        resample: float = 0.25, *, monitor: str | None = None, mode: str | None = None,
    ):  # fmt: skip
        where = "PBT"
        self.interval = check_int(where, "interval", interval, minimum=1)
        self.quantile = check_number(where, "quantile", quantile, low=0.0, high=0.5, low_open=True)
        if not isinstance(perturb, (tuple, list)) or len(perturb) != 2:
            raise ValueError(f"{where}: perturb must be two factors (down, up), got {perturb!r}.")
        self.perturb = tuple(
            check_number(where, "perturb", p, low=0.0, low_open=True) for p in perturb
        )
        self.resample = check_number(where, "resample", resample, low=0.0, high=1.0)
        self.monitor = monitor
        self.mode = _check_mode(where, mode)

    def __repr__(self) -> str:
        return (
            f"PBT(interval={self.interval}, quantile={self.quantile:g}, "
            f"perturb={self.perturb}, resample={self.resample:g})"
        )


class Context(NamedTuple):
    """What :func:`sweep` hands a schedule (everything checked, nothing compiled yet)."""

    prog: Program
    compiled_first: Callable  # epochs -> train(init_seed, shuffle_seed, fold, hp, shared)
    runs: tuple
    per_run: dict
    shared: tuple
    keys: list[str]
    monitor: str
    maximize: bool
    num_settings: int
    epochs: int
    chunk_size: int | None
    run_bytes: Callable
    verbose: int
    cls: type
    extra: dict
    key: Any
    spaces: tuple  # ((name, Space | number), ...)


def _setting_scores(final, loss, num_settings, maximize, xp=np):
    """Mean over each setting's runs of ``final`` (sign flipped to minimize); NaN/Inf or a
    non-finite loss in the segment rank last."""
    score = final.reshape(num_settings, -1)
    bad = (~xp.isfinite(loss).all(axis=-1)).reshape(num_settings, -1).any(axis=1)
    score = score.mean(axis=1) * (-1.0 if maximize else 1.0)
    return xp.where(bad | ~xp.isfinite(score), xp.inf, score)


def run_halving(sched: SuccessiveHalving, ctx: Context):
    """Train rung by rung, continuing the best 1/eta settings; a :class:`SweepResult`."""
    num_runs, epochs = len(ctx.runs), ctx.epochs
    m = num_runs // ctx.num_settings
    alive = np.arange(ctx.num_settings)
    history = {k: np.full((num_runs, epochs), np.nan, np.float32) for k in ctx.keys}
    epochs_run = np.zeros(num_runs, np.int64)
    state: Any = None
    prev = 0
    rungs = sched.rungs(epochs)
    for i, e in enumerate(rungs):
        idx = (alive[:, None] * m + np.arange(m)).ravel()
        chunk = _chunk_size(ctx.chunk_size, idx.size, len(jax.devices()), ctx.run_bytes)
        chunk = min(chunk, -(-idx.size // len(jax.devices())) * len(jax.devices()))
        label = f"sweep rung {i + 1}/{len(rungs)} ({idx.size} runs, epochs {prev + 1}-{e})"
        if state is None:
            p = ctx.per_run
            args = (p["init_seed"], p["shuffle_seed"], p["fold"], p["hparams"])
            state, logs = _map_chunks(
                ctx.compiled_first(e), args, ctx.shared, idx.size, chunk, ctx.verbose, label
            )
        else:
            resume_args = (jax.tree.map(lambda a, idx=idx: a[idx], state), ctx.per_run["fold"][idx])
            part, logs = _map_chunks(
                compiled_resume(ctx.prog, e - prev), resume_args, ctx.shared, idx.size, chunk,
                ctx.verbose, label,
            )  # fmt: skip

            def put(full, new, idx=idx):
                full[idx] = new
                return full

            state = jax.tree.map(put, state, part)
        for k in ctx.keys:
            history[k][idx, prev:e] = logs[k]
        epochs_run[idx] = e
        if e == epochs:
            break
        score = _setting_scores(logs[ctx.monitor][:, -1], logs["loss"], alive.size, ctx.maximize)
        alive = alive[np.argsort(score, kind="stable")[: max(1, alive.size // sched.eta)]]
        prev = e
    extra = dict(ctx.extra, epochs_run=epochs_run, schedule=sched)
    return _assemble(ctx.cls, state, history, ctx.runs, extra, epochs_run)


def _explore(space: Any, v, key, child, sched: PBT):
    """New values of one hyperparameter for the copied settings (``child``), per setting."""
    k_fresh, k_up, k_which = jax.random.split(key, 3)
    n = v.shape[0]
    fresh = space.from_unit(jax.random.uniform(k_fresh, (n,)), jnp).astype(v.dtype)
    up = jax.random.bernoulli(k_up, 0.5, (n,))
    if isinstance(space, Choice):  # a neighbouring value
        table = jnp.asarray(space.values, v.dtype)
        at = jnp.argmin(jnp.abs(table[None, :] - v[:, None]), axis=1)
        perturbed = table[jnp.clip(at + jnp.where(up, 1, -1), 0, len(space.values) - 1)]
    else:
        factor = jnp.where(up, sched.perturb[1], sched.perturb[0])
        perturbed = space.clip(v * factor, jnp)
        perturbed = jnp.round(perturbed) if space.integer else perturbed
        perturbed = perturbed.astype(v.dtype)
    new = jnp.where(jax.random.uniform(k_which, (n,)) < sched.resample, fresh, perturbed)
    return jnp.where(child, new, v)


def _exploit(state, score, key, sched: PBT, spaces: tuple, num_settings: int):
    """Bottom-quantile settings copy a top-quantile one and explore: gathers on the run axis."""
    m = jax.tree.leaves(state.params)[0].shape[0] // num_settings
    q = max(1, int(sched.quantile * num_settings))
    order = jnp.argsort(score, stable=True)  # best first
    k_donor, k_explore = jax.random.split(key)
    donors = order[:q][jax.random.randint(k_donor, (q,), 0, q)]
    parent_setting = jnp.arange(num_settings).at[order[num_settings - q :]].set(donors)
    child = parent_setting != jnp.arange(num_settings)
    parent = (parent_setting[:, None] * m + jnp.arange(m)[None, :]).reshape(-1)
    own_key = state.key
    state = jax.tree.map(lambda a: a[parent], state)._replace(key=own_key)
    hp = dict(state.opt_state.hyperparams)
    for j, (name, space) in enumerate(spaces):
        if isinstance(space, Space):
            v = hp[name].reshape(num_settings, m)[:, 0]
            new = _explore(space, v, jax.random.fold_in(k_explore, j), child, sched)
            hp[name] = jnp.repeat(new, m)
    state = state._replace(opt_state=state.opt_state._replace(hyperparams=hp))
    return state, parent


@functools.lru_cache(maxsize=8)
def compiled_pbt(prog: Program, sched: PBT, spaces: tuple, num_settings: int, epochs: int,
                 monitor: str, maximize: bool) -> Callable:  # fmt: skip
    """``pbt(init_seed, shuffle_seed, fold, hp, shared, key)``: the whole population, jitted.

    Returns ``(state, logs (runs, epochs), parents (exploits, runs), hparams {name:
    (exploits, runs)})``: intervals of training, each followed by an exploit step.
    """
    interval = sched.interval
    exploits = epochs // interval - (epochs % interval == 0)
    tail = epochs - exploits * interval

    def train(state, fold, shared, n):
        return jax.vmap(lambda s, f: prog.train(s, f, shared, n))(state, fold)

    def pbt(init_seed, shuffle_seed, fold, hp, shared, key):
        state = jax.vmap(prog.init)(init_seed, shuffle_seed, hp)

        def block(state, i):
            state, logs = train(state, fold, shared, interval)
            score = _setting_scores(logs[monitor][:, -1], logs["loss"], num_settings, maximize, jnp)
            state, parent = _exploit(
                state, score, jax.random.fold_in(key, i), sched, spaces, num_settings
            )
            return state, (logs, parent, state.opt_state.hyperparams)

        state, (logs, parents, hps) = jax.lax.scan(block, state, jnp.arange(exploits))
        state, last = train(state, fold, shared, tail)
        logs = {
            k: jnp.concatenate([jnp.moveaxis(v, 0, 1).reshape(v.shape[1], -1), last[k]], axis=1)
            for k, v in logs.items()
        }
        return state._replace(key=jax.random.key_data(state.key)), logs, parents, hps

    return jax.jit(pbt)


def run_pbt(sched: PBT, ctx: Context):
    """Train the population as one program; a :class:`SweepResult` with the trajectories."""
    num_runs, epochs = len(ctx.runs), ctx.epochs
    if ctx.chunk_size is not None and ctx.chunk_size < num_runs:
        raise ValueError(
            f"sweep: PBT trains the whole population ({num_runs} runs) in one program; "
            f"chunk_size={ctx.chunk_size} would split it. Drop chunk_size or sample fewer."
        )
    fn = compiled_pbt(
        ctx.prog, sched, ctx.spaces, ctx.num_settings, epochs, ctx.monitor, ctx.maximize
    )
    p = ctx.per_run
    args = (p["init_seed"], p["shuffle_seed"], p["fold"], p["hparams"])
    sharding = _sharding()
    if sharding is not None and num_runs % len(jax.devices()) == 0:
        args = jax.device_put(args, sharding)
    state, logs, parents, hps = fn(*args, ctx.shared, ctx.key)
    state, logs, parents, hps = jax.tree.map(np.asarray, (state, logs, parents, hps))
    # The value each run trained with at each epoch: the initial one, then each exploit's.
    starts = np.arange(1, parents.shape[0] + 1) * sched.interval
    spans = np.diff(np.append(starts, epochs))
    trajectory = {}
    for name, init in p["hparams"].items():
        pieces = [np.repeat(init[:, None], sched.interval, axis=1)]
        pieces += [np.repeat(hps[name][i][:, None], s, axis=1) for i, s in enumerate(spans)]
        trajectory[name] = np.concatenate(pieces, axis=1)
    extra = dict(
        ctx.extra, epochs_run=np.full(num_runs, epochs), schedule=sched,
        hparam_history=trajectory, parents=parents.T,
    )  # fmt: skip
    last_copy = parents.shape[0] * sched.interval  # the runs as they ended, since the last copy
    return _assemble(
        ctx.cls, state, {k: logs[k] for k in ctx.keys}, ctx.runs, extra, None, last_copy
    )
