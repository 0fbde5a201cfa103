"""Search spaces for :func:`jnn.experiments.sweep`, and the seeded designs that sample them.

A space maps a uniform number ``u`` in ``[0, 1)`` to a hyperparameter value
(:meth:`Space.from_unit`), with numpy on the host (sampling the settings) or
``jax.numpy`` inside the compiled program (PBT's resampling), so one formula
serves both.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jnn._data import check_int, check_number, is_number

__all__ = ["Choice", "IntUniform", "LogUniform", "Space", "Uniform"]


class Space:
    """A one-dimensional search space: ``from_unit(u)`` maps ``[0, 1)`` onto it."""

    integer: bool = False
    lo: float
    hi: float

    def from_unit(self, u: Any, xp: Any = np) -> Any:
        """The value at quantile ``u``: one formula for the host and the compiled program.

        Args:
          u: an array of numbers in ``[0, 1)``.
          xp: ``numpy`` (on the host) or ``jax.numpy`` (inside a traced function).

        Returns:
          An array of values of the space, ``u``'s shape (int32 for integer spaces).
        """
        raise NotImplementedError

    def clip(self, v: Any, xp: Any = np) -> Any:
        """``v`` brought back into the space's range (after a PBT perturbation).

        Args:
          v: an array of values.
          xp: ``numpy`` or ``jax.numpy``.

        Returns:
          ``v`` clipped to ``[lo, hi]``.
        """
        return xp.clip(v, self.lo, self.hi)


def _range(where: str, lo: Any, hi: Any, *, positive: bool = False) -> tuple[float, float]:
    lo = check_number(where, "lo", lo, low=0.0 if positive else None, low_open=positive)
    hi = check_number(where, "hi", hi)
    if not lo < hi:
        raise ValueError(
            f"{where}: the range is empty or inverted: lo={lo:g} must be below hi={hi:g}; "
            f"e.g. {where}({min(lo, hi):g}, {max(lo, hi) if lo != hi else lo * 10 or 1:g})."
        )
    return lo, hi


class LogUniform(Space):
    """Values spread evenly in ``log``, from ``lo`` to ``hi`` (both > 0): learning rates.

    Example:
      >>> import numpy as np
      >>> from jnn.experiments import LogUniform
      >>> LogUniform(1e-4, 1e-1).from_unit(np.array([0.0, 0.5])).round(6).tolist()
      [0.0001, 0.003162]
    """

    def __init__(self, lo: float, hi: float):
        self.lo, self.hi = _range("LogUniform", lo, hi, positive=True)

    def from_unit(self, u: Any, xp: Any = np) -> Any:
        return xp.exp(math.log(self.lo) + u * (math.log(self.hi) - math.log(self.lo)))

    def __repr__(self) -> str:
        return f"LogUniform({self.lo:g}, {self.hi:g})"


class Uniform(Space):
    """Values spread evenly from ``lo`` to ``hi``.

    Example:
      >>> import numpy as np
      >>> from jnn.experiments import Uniform
      >>> Uniform(0.0, 0.5).from_unit(np.array([0.0, 0.5])).tolist()
      [0.0, 0.25]
    """

    def __init__(self, lo: float, hi: float):
        self.lo, self.hi = _range("Uniform", lo, hi)

    def from_unit(self, u: Any, xp: Any = np) -> Any:
        return self.lo + u * (self.hi - self.lo)

    def __repr__(self) -> str:
        return f"Uniform({self.lo:g}, {self.hi:g})"


class IntUniform(Space):
    """Integers ``lo, lo + 1, ..., hi`` (both included), equally likely.

    Example:
      >>> import numpy as np
      >>> from jnn.experiments import IntUniform
      >>> IntUniform(1, 3).from_unit(np.array([0.0, 0.4, 0.99])).tolist()
      [1, 2, 3]
    """

    integer = True

    def __init__(self, lo: int, hi: int):
        lo = check_int("IntUniform", "lo", lo)
        hi = check_int("IntUniform", "hi", hi)
        _range("IntUniform", lo, hi)
        self.lo, self.hi = lo, hi

    def from_unit(self, u: Any, xp: Any = np) -> Any:
        v = xp.floor(self.lo + u * (self.hi - self.lo + 1))
        return xp.clip(v, self.lo, self.hi).astype(xp.int32)

    def __repr__(self) -> str:
        return f"IntUniform({self.lo}, {self.hi})"


class Choice(Space):
    """One of a list of numbers, equally likely (a list in a sampled ``hparams`` is one).

    Example:
      >>> import numpy as np
      >>> from jnn.experiments import Choice
      >>> Choice([0.9, 0.99, 0.999]).from_unit(np.array([0.1, 0.5, 0.9])).tolist()
      [0.9, 0.99, 0.999]
    """

    def __init__(self, values: Sequence[float]):
        values = list(values) if isinstance(values, (list, tuple, np.ndarray)) else values
        if not isinstance(values, list) or not values:
            raise ValueError(f"Choice: values must be a non-empty list of numbers, got {values!r}.")
        for v in values:
            if not is_number(v):
                raise TypeError(f"Choice: every value must be a number, got {v!r} in {values!r}.")
        self.integer = not any(isinstance(v, (float, np.floating)) for v in values)
        self.values = [int(v) if self.integer else float(v) for v in values]
        self.lo, self.hi = min(self.values), max(self.values)

    def from_unit(self, u: Any, xp: Any = np) -> Any:
        dtype = (xp.int32 if self.integer else xp.float32) if xp is not np else None
        table = xp.asarray(self.values, dtype=dtype)
        index = xp.clip(xp.floor(u * len(self.values)), 0, len(self.values) - 1)
        return table[index.astype(xp.int32)]

    def __repr__(self) -> str:
        return f"Choice({self.values!r})"


def has_space(hparams: Any) -> bool:
    """Whether a ``hparams`` dict names a search space (so it must be sampled)."""
    return isinstance(hparams, Mapping) and any(isinstance(v, Space) for v in hparams.values())


def as_spaces(hparams: Mapping[str, Any]) -> dict[str, Space | float]:
    """Each name's space: lists become :class:`Choice`; a lone number stays fixed."""
    out: dict[str, Space | float] = {}
    for name, v in hparams.items():
        if isinstance(v, Space):
            out[name] = v
        elif isinstance(v, (list, tuple, np.ndarray)):
            out[name] = Choice(list(v))
        elif is_number(v):
            out[name] = v
        else:
            raise TypeError(
                f"sweep: hparams[{name!r}] must be a space (LogUniform, Uniform, IntUniform, "
                f"Choice), a list of numbers or a number, got {v!r}."
            )
    return out


def sample_settings(
    hparams: Any, num_samples: int, sampler: str, seed: int
) -> list[dict[str, float]]:
    """``num_samples`` settings drawn from ``hparams`` (a dict of spaces, lists, numbers).

    ``sampler="sobol"`` takes the first points of a scrambled Sobol sequence
    (scipy), ``"random"`` independent uniform draws; both seeded by ``seed``.
    """
    where = "sweep"
    num_samples = check_int(where, "num_samples", num_samples, minimum=1, maximum=2**20)
    if not isinstance(hparams, Mapping) or not hparams:
        raise ValueError(
            f"{where}: num_samples needs hparams as a dict of spaces, e.g. "
            "{'learning_rate': jnn.experiments.LogUniform(1e-4, 1e-1)}."
        )
    spaces = as_spaces(hparams)
    drawn = [n for n, s in spaces.items() if isinstance(s, Space)]
    if not any(isinstance(hparams[n], Space) for n in drawn):
        raise ValueError(
            f"{where}: num_samples={num_samples} with a grid-only hparams (lists, no space): "
            "drop num_samples to train the grid, or give a space such as "
            "LogUniform(1e-4, 1e-1) to sample from."
        )
    if sampler == "sobol":
        from scipy.stats import qmc  # type: ignore[import-untyped]

        with warnings.catch_warnings():  # n not a power of 2: still a fine design
            warnings.simplefilter("ignore", UserWarning)
            unit = qmc.Sobol(len(drawn), scramble=True, seed=seed).random(num_samples)
    elif sampler == "random":
        unit = np.random.default_rng(seed).random((num_samples, len(drawn)))
    else:
        raise ValueError(f"{where}: sampler must be 'sobol' or 'random', got {sampler!r}.")
    columns = {n: spaces[n].from_unit(unit[:, j]) for j, n in enumerate(drawn)}  # type: ignore[union-attr]
    settings = []
    for i in range(num_samples):
        setting: dict[str, float] = {}
        for n, s in spaces.items():
            if isinstance(s, Space):
                setting[n] = int(columns[n][i]) if s.integer else float(columns[n][i])
            else:
                setting[n] = s
        settings.append(setting)
    return settings
