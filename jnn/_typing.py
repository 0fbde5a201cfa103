"""Type aliases shared across jnn's modules (private)."""

from collections.abc import Callable
from typing import Any, Protocol, TypeAlias

import jax
from jax.typing import ArrayLike

Array: TypeAlias = jax.Array
PRNGKey: TypeAlias = jax.Array
#: A shape with ``-1`` or ``None`` standing for an unknown batch dimension.
Shape: TypeAlias = tuple[int | None, ...]
#: A pytree of arrays, usually nested dicts with string keys.
Params: TypeAlias = Any
State: TypeAlias = Any
ActivationLike: TypeAlias = str | Callable[[Array], Array] | None


class InitFn(Protocol):
    """``init(key, input_shape) -> (output_shape, params)``."""

    def __call__(self, key: PRNGKey, input_shape: Shape) -> tuple[Shape, Params]: ...


class ApplyFn(Protocol):
    """``apply(params, x, *, key=None, train=False) -> y``."""

    def __call__(
        self, params: Params, x: Any, *, key: PRNGKey | None = None, train: bool = False
    ) -> Any: ...


class LossFn(Protocol):
    """``loss(pred, target, *, weights=None, mask=None) -> scalar``."""

    def __call__(
        self,
        pred: ArrayLike,
        target: ArrayLike,
        *,
        weights: ArrayLike | None = None,
        mask: ArrayLike | None = None,
    ) -> Array: ...


__all__ = [
    "ActivationLike",
    "ApplyFn",
    "Array",
    "ArrayLike",
    "InitFn",
    "LossFn",
    "PRNGKey",
    "Params",
    "Shape",
    "State",
]
