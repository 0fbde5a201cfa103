"""Many training runs as one compiled program: seeds x hyperparameters x data folds.

:func:`sweep` trains every run in lockstep with ``jax.vmap`` over the very
epoch function :func:`jnn.fit` compiles (shuffle, padded and masked batches,
``lax.scan``), with all epochs in one ``lax.scan``. Each run is defined by

- a seed: ``init_key, fit_key = run_keys(seed)``; the params are
  ``model.init(init_key, ...)`` and ``fit_key`` is the ``key`` of :func:`jnn.fit`
  (shuffling and dropout);
- an optimizer hyperparameter setting, injected with
  ``optax.inject_hyperparams`` so every run shares one compiled program;
- a data fold, expressed as per-example weights (k-fold: 0/1 masks; bootstrap:
  resample counts), so every run sees arrays of the same shapes.

Run ``i`` therefore equals ``jnn.fit(model, data=data, **result.fit_args(i), ...)``
done alone, to float tolerance. Runs go in chunks (``chunk_size``, by default
sized from the memory one run needs) compiled once, and the run axis is sharded
across devices when there are several: every device of every process in a
multi-process job (:func:`jnn.distributed.initialize`; every process calls
:func:`sweep` with the same arguments), and every process gets every run's
results (schedules: tested on one process).

Searches: ``hparams`` may be a space (:class:`LogUniform`, :class:`Uniform`,
:class:`IntUniform`, :class:`Choice`) sampled ``num_samples`` times (Sobol or
random, from ``key``); ``schedule=SuccessiveHalving(...)`` stops the worse
settings at rungs and continues the rest in a smaller program, and
``schedule=PBT(...)`` copies and perturbs settings inside the compiled program.
"""

from jnn._table import Table
from jnn.experiments._folds import Bootstrap, KFold, bootstrap_weights, kfold_weights
from jnn.experiments._results import SweepResult
from jnn.experiments._runs import Run, run_keys
from jnn.experiments._schedule import PBT, SuccessiveHalving
from jnn.experiments._space import Choice, IntUniform, LogUniform, Uniform
from jnn.experiments._sweep import sweep

__all__ = [
    "PBT",
    "Bootstrap",
    "Choice",
    "IntUniform",
    "KFold",
    "LogUniform",
    "Run",
    "SuccessiveHalving",
    "SweepResult",
    "Table",
    "bootstrap_weights",
    "kfold_weights",
    "Uniform",
    "run_keys",
    "sweep",
]
