"""Training: ``TrainState``, ``make_train_step``, and ``fit`` / ``evaluate`` / ``predict``.

``fit`` runs each epoch as ONE compiled call: an on-device shuffle (a keyed
elementwise permutation, no sort), a ``lax.scan`` over the batches gathered from
the one device copy of the data (the last, partial batch padded and masked, so
every example is used every epoch with a single compilation), the training
metrics accumulated on device, and the validation pass. Python touches the loop
once per epoch (a long epoch is cut into a few calls so progress shows).

The package holds one private module per concern:

- ``_state``: :class:`TrainState` and the optimizer registry;
- ``_step``: the pure training step, the NaN guard, :func:`make_train_step`;
- ``_shuffle``: the keyed permutation;
- ``_logs``: metric resolution and how an epoch adds up batch logs;
- ``_epoch``: THE scan body and the compiled array epochs;
- ``_stream``: epochs over a stream of batches (the same scan body);
- ``_checks``: params, shapes and labels checked before compiling;
- ``_control``: early stopping, callbacks, progress, Ctrl-C, :class:`FitResult`;
- ``_fit``: :func:`fit`; ``_infer``: :func:`evaluate` and :func:`predict`;
- ``_cache``: compiled programs, shared by models of one structure (bounded LRUs);
- ``_internal``: the names other jnn modules (experiments, export) build on.
"""

from jnn._compile_cache import compile_cache
from jnn.train._control import Callback, EarlyStopping, FitResult
from jnn.train._fit import fit
from jnn.train._infer import evaluate, predict
from jnn.train._state import TrainState, get_optimizer
from jnn.train._step import NonFiniteError, make_train_step

__all__ = [
    "Callback",
    "EarlyStopping",
    "FitResult",
    "NonFiniteError",
    "TrainState",
    "compile_cache",
    "evaluate",
    "fit",
    "get_optimizer",
    "make_train_step",
    "predict",
]
