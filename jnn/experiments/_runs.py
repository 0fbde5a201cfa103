"""A sweep's runs: seeds and their keys, hyperparameter settings, the injected optimizer."""

from __future__ import annotations

import functools
import inspect
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jnn._data import (
    check_positive_int,
    close_match,
    is_int,
    is_number,
)
from jnn._typing import Array
from jnn.train import get_optimizer
from jnn.train._internal import OPTIMIZERS

Seed = int | tuple[int, int]


# --------------------------------------------------------------------------- runs


def _seed_keys(init_seed: Array, shuffle_seed: Array) -> tuple[Array, Array]:
    init_key = jax.random.split(jax.random.key(init_seed))[0]
    fit_key = jax.random.split(jax.random.key(shuffle_seed))[1]
    return init_key, fit_key


def run_keys(seed: Seed) -> tuple[Array, Array]:
    """``(init_key, fit_key)`` of a run: how :func:`sweep` turns a seed into keys.

    ``seed`` is an int, or a pair ``(init_seed, shuffle_seed)`` to vary the
    initialization and the shuffling separately (``s`` is ``(s, s)``).

    Args:
      seed: an int in ``[0, 2**31)``, or a pair of them.

    Returns:
      ``(init_key, fit_key)``: typed PRNG keys for ``model.init`` and for the
      ``key`` of :func:`jnn.fit`.

    Raises:
      ValueError: for a seed that is not such an int or pair.

    Example:
      >>> import jax, jnn
      >>> init_key, fit_key = jnn.experiments.run_keys(3)
      >>> _, params = jnn.Dense(2).init(init_key, (-1, 4))  # the params of run seed 3
    """
    init_seed, shuffle_seed = _check_seed(seed)
    return _seed_keys(jnp.int32(init_seed), jnp.int32(shuffle_seed))


def _check_seed(seed: Any, where: str = "run_keys") -> tuple[int, int]:
    pair = tuple(seed) if isinstance(seed, (tuple, list)) else (seed, seed)
    if len(pair) != 2 or not all(is_int(s) and 0 <= s < 2**31 for s in pair):
        raise ValueError(
            f"{where}: a seed must be an int in [0, 2**31) or a pair (init_seed, shuffle_seed) "
            f"of them, got {seed!r}."
        )
    return int(pair[0]), int(pair[1])


class Run(NamedTuple):
    """One run of a sweep: its index, seed, hyperparameters and fold (None: all data).

    ``SweepResult.runs`` holds one per run, in run-axis order.

    Attributes:
      index: the run's position on the run axis of :class:`SweepResult`.
      seed: an int or ``(init_seed, shuffle_seed)``; see :func:`run_keys`.
      hparams: the optimizer hyperparameters of the run (``{}`` without a grid).
      fold: the index of its fold or resample, or None when there are no folds.

    Example:
      >>> from jnn.experiments import Run, run_keys
      >>> run = Run(index=0, seed=(1, 2), hparams={"learning_rate": 0.01}, fold=None)
      >>> init_key, fit_key = run_keys(run.seed)   # what the sweep trained it with
      >>> run.hparams["learning_rate"]
      0.01
    """

    index: int  # type: ignore[assignment]  # (shadows tuple.index, as a field should)
    seed: Seed
    hparams: dict[str, float]
    fold: int | None


def _hparam_settings(hparams: Any) -> list[dict[str, float]]:
    if not hparams:
        return [{}]
    if isinstance(hparams, Mapping):
        names = list(hparams)
        grids = []
        for name in names:
            values = hparams[name]
            values = list(values) if isinstance(values, (list, tuple, np.ndarray)) else [values]
            if not values:
                raise ValueError(f"sweep: hparams[{name!r}] is empty.")
            grids.append(values)
        settings = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*grids)]
    elif isinstance(hparams, Sequence) and all(isinstance(h, Mapping) for h in hparams):
        settings = [dict(h) for h in hparams]
        if any(set(s) != set(settings[0]) for s in settings):
            raise ValueError("sweep: every hparams setting must name the same hyperparameters.")
    else:
        raise TypeError(
            "sweep: hparams must be a dict of value lists (a grid), e.g. "
            "{'learning_rate': [1e-3, 1e-2]}, or a list of dicts (explicit settings)."
        )
    for s in settings:
        for name, v in s.items():
            if not is_number(v):
                raise TypeError(
                    f"sweep: hyperparameter {name!r} must be a number to be swept, got {v!r}. "
                    "Fix non-numeric options inside the optimizer factory instead."
                )
    floats = {n for s in settings for n, v in s.items() if isinstance(v, (float, np.floating))}
    return [{n: float(v) if n in floats else int(v) for n, v in s.items()} for s in settings]


def _optimizer(optimizer: Any, settings: list[dict[str, float]]) -> tuple[Callable | None, Any]:
    """``(factory, tx)``: the hyperparameter factory (None without a grid) and the transform."""
    if settings == [{}]:
        return None, get_optimizer(optimizer)
    if isinstance(optimizer, str):
        if optimizer not in OPTIMIZERS:
            get_optimizer(optimizer)  # raises the named-optimizer error
        factory = OPTIMIZERS[optimizer][0]
    elif isinstance(optimizer, optax.GradientTransformation) or not callable(optimizer):
        raise TypeError(
            "sweep: with hparams, optimizer must be a name ('adam') or a factory taking the "
            "hyperparameters as keywords, e.g. lambda learning_rate: optax.adam(learning_rate)."
        )
    else:
        factory = optimizer
    _check_hparam_names(factory, settings[0])
    return factory, _injected(factory, tuple(settings[0].items()))


def _check_hparam_names(factory: Callable, setting: dict[str, float]) -> None:
    """The swept names must be keywords of ``factory``, and cover its required ones."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin without a signature: let optax report
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    named = getattr(factory, "__name__", "<")
    named = "the optimizer factory" if named.startswith("<") else named
    takes = [n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    for name in setting:
        if name not in takes:
            raise ValueError(
                f"sweep: hparams names {name!r}, which {named} does not take."
                f"{close_match(name, takes)} It takes: {', '.join(takes)}."
            )
    required = [
        n for n, p in params.items()
        if p.default is inspect.Parameter.empty
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]  # fmt: skip
    missing = [n for n in required if n not in setting]
    if missing:
        raise ValueError(
            f"sweep: {named} needs {', '.join(map(repr, missing))}, which hparams does not give: "
            "sweep it in hparams, or fix it inside the factory, e.g. "
            f"lambda {', '.join(setting)}: ..."
        )


@functools.lru_cache(maxsize=16)
def _injected(factory: Callable, setting: tuple) -> optax.GradientTransformation:
    """One transformation per factory: its update reads the hparams from each run's state."""
    return optax.inject_hyperparams(factory)(**dict(setting))


_MAX_SEEDS = 2**20  # a million runs per hyperparameter setting; a larger int is a mistake


def _seed_list(seeds: Any) -> list[Seed]:
    if is_int(seeds):
        return list(range(check_positive_int("sweep", "seeds", seeds, maximum=_MAX_SEEDS)))
    if isinstance(seeds, (list, tuple, np.ndarray)) and len(seeds) > 0:
        out: list[Seed] = []
        for s in seeds:
            init_seed, shuffle_seed = _check_seed(s, "sweep: seeds")
            out.append((init_seed, shuffle_seed) if isinstance(s, (tuple, list)) else init_seed)
        if len(set(out)) != len(out):
            raise ValueError(f"sweep: seeds must be distinct, got {seeds!r}.")
        return out
    raise TypeError(f"sweep: seeds must be a positive int or a non-empty list, got {seeds!r}.")
