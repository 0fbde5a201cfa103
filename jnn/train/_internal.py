"""The training engine's internal API for other jnn modules (not public; no stability promise).

``jnn.experiments`` vmaps the very epoch ``fit`` compiles, and ``jnn.export`` checks
a model's state like ``fit`` does; they import these names from here, and only from
here, so the engine's private modules can change without reaching into them.
"""

from jnn.train._cache import program_cache
from jnn.train._checks import check_model_state, check_trace
from jnn.train._epoch import EpochSpec, epoch_fn
from jnn.train._logs import resolve_metrics
from jnn.train._state import OPTIMIZERS

__all__ = ["OPTIMIZERS", "EpochSpec", "check_model_state", "check_trace", "epoch_fn",
           "program_cache", "resolve_metrics"]  # fmt: skip
