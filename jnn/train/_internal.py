"""The training engine's internal API for other jnn modules (not public; no stability promise).

``jnn.experiments`` vmaps the very epoch ``fit`` compiles, and ``jnn.export`` checks
a model's state like ``fit`` does; they import these names from here, and only from
here, so the engine's private modules can change without reaching into them.
"""

from jnn.train._cache import program_cache
from jnn.train._checks import check_model_state, check_trace
from jnn.train._epoch import EpochSpec, epoch_fn
from jnn.train._logs import resolve_metrics
from jnn.train._optim import build_tx
from jnn.train._precision import Policy, apply_policy, cast_floating, get_policy
from jnn.train._state import OPTIMIZERS

__all__ = ["OPTIMIZERS", "EpochSpec", "Policy", "apply_policy", "build_tx", "cast_floating",
           "check_model_state", "check_trace", "epoch_fn", "get_policy", "program_cache",
           "resolve_metrics"]  # fmt: skip
