"""Activation functions by name, and activation layers (private module).

Every function here is ``jax.nn``'s, with one exception: ``"sigmoid"`` is
:func:`sigmoid`, whose value is ``jax.nn.sigmoid``'s but whose derivative has a
floor of ``EPS * (1 - EPS)``. Together with :func:`jnn.losses.bce`, which clips
probabilities to ``[EPS, 1 - EPS]``, this makes a sigmoid output trained with
BCE behave like the logits form at saturation: the two ``EPS`` factors cancel
and the gradient with respect to the logits stays ``~ p - y`` instead of
underflowing to zero (``sigmoid(1e4)`` is exactly 1.0 in float32).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from jnn._data import check_int, check_number, close_match
from jnn._typing import ActivationLike, Array
from jnn.layers._base import Layer, check_numeric, describe, normalize_shape

#: Probability clipping used by sigmoid's gradient floor and by the BCE losses.
EPS = 1e-7


@jax.custom_jvp
def sigmoid(x: Array) -> Array:
    """``jax.nn.sigmoid`` with a gradient that never underflows to exactly zero.

    The derivative is ``max(s * (1 - s), EPS * (1 - EPS))`` with ``EPS = 1e-7``:
    identical to the true one wherever ``s`` is inside ``[EPS, 1 - EPS]``.
    Together with :func:`jnn.losses.bce`, which clips probabilities to the same
    ``[EPS, 1 - EPS]``, a sigmoid output trained with BCE keeps a logit
    gradient of about ``p - y`` at saturation, where ``jax.nn.sigmoid``'s
    derivative is exactly 0 in float32.

    Args:
      x: logits, any shape.

    Returns:
      ``1 / (1 + exp(-x))``, elementwise.

    Example:
      >>> import jax, jnn
      >>> float(jax.grad(jnn.layers.sigmoid)(0.0))
      0.25
      >>> float(jax.grad(jnn.layers.sigmoid)(1e4)) > 0
      True
    """
    return jax.nn.sigmoid(x)


@sigmoid.defjvp
def _sigmoid_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    s = jax.nn.sigmoid(x)
    # s * (1 - s) written as sigmoid(x) * sigmoid(-x) keeps precision for x >> 0.
    slope = jnp.maximum(s * jax.nn.sigmoid(-x), EPS * (1.0 - EPS))
    return s, slope * dx


ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "linear": lambda x: x,
    "relu": jax.nn.relu,
    "relu6": jax.nn.relu6,
    "sigmoid": sigmoid,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "softmax": jax.nn.softmax,
    "log_softmax": jax.nn.log_softmax,
    "leaky_relu": jax.nn.leaky_relu,
    "elu": jax.nn.elu,
    "celu": jax.nn.celu,
    "selu": jax.nn.selu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "mish": jax.nn.mish,
    "softplus": jax.nn.softplus,
    "soft_sign": jax.nn.soft_sign,
    "hard_tanh": jax.nn.hard_tanh,
    "hard_sigmoid": jax.nn.hard_sigmoid,
    "log_sigmoid": jax.nn.log_sigmoid,
}
"""Activation functions by name, for ``Dense(..., activation=name)`` and :func:`Activation`.

All are ``jax.nn``'s (or ``jnp.tanh``) except ``"sigmoid"``, which is :func:`sigmoid`.
"""


def get_activation(activation: ActivationLike) -> Callable[[Array], Array]:
    """Resolve an activation given by name, as a callable, or ``None`` (identity).

    Args:
      activation: a key of :data:`ACTIVATIONS`, any callable (returned as
        is), or ``None`` for the identity.

    Returns:
      The elementwise function ``f(x) -> y``.

    Raises:
      ValueError: for an unknown name, listing the known ones and the closest.
      TypeError: for anything that is neither a string, a callable nor None.

    Example:
      >>> import jnn
      >>> jnn.layers.get_activation("relu")(-1.0)
      Array(0., dtype=float32, weak_type=True)
    """
    if activation is None:
        return ACTIVATIONS["linear"]
    if isinstance(activation, str):
        try:
            return ACTIVATIONS[activation]
        except KeyError:
            raise ValueError(
                f"Unknown activation {activation!r}.{close_match(activation, ACTIVATIONS)} "
                f"Known: {', '.join(sorted(ACTIVATIONS))}; or pass any callable."
            ) from None
    if callable(activation):
        return activation
    raise TypeError(
        f"activation must be a name, a callable or None, got {type(activation).__name__}."
    )


def _elementwise(
    fn: Callable[[Array], Array], kind: str, config: dict[str, Any] | None = None
) -> Layer:
    """A parameter-free layer applying ``fn``, described as ``kind`` with ``config``."""
    name = "".join(part.title() for part in kind.split("_"))  # "leaky_relu" -> "LeakyRelu"

    def init(key, input_shape):
        del key
        return normalize_shape(name, input_shape), {}

    def apply(params, x, *, key=None, train=False):
        del params, key, train
        return fn(check_numeric(name, x))

    return describe(Layer(init, apply), kind, config)


def Activation(activation: ActivationLike) -> Layer:
    """A parameter-free layer applying ``activation`` (a name or a callable).

    Args:
      activation: a name from :data:`ACTIVATIONS` (``"relu"``, ``"tanh"``,
        ...), any callable ``f(x) -> y``, or ``None`` for the identity.

    Returns:
      A :class:`Layer` with empty params that keeps the input shape.

    Raises:
      ValueError: for an unknown name (the message lists the known ones).
      TypeError: for anything that is neither a name, a callable nor None.

    Example:
      >>> import jax.numpy as jnp, jnn
      >>> layer = jnn.Activation("relu")
      >>> layer.apply({}, jnp.array([-1.0, 2.0]))
      Array([0., 2.], dtype=float32)
    """
    return _elementwise(get_activation(activation), "activation", {"activation": activation})


def Relu() -> Layer:
    """``jax.nn.relu`` as a layer: ``max(x, 0)``.

    Returns:
      A parameter-free :class:`Layer` that keeps the input shape.

    Example:
      >>> import jax.numpy as jnp, jnn
      >>> jnn.Relu().apply({}, jnp.array([-1.0, 2.0]))
      Array([0., 2.], dtype=float32)
    """
    return _elementwise(jax.nn.relu, "relu")


def Sigmoid() -> Layer:
    """:func:`sigmoid` (``jax.nn.sigmoid``'s value, a floored gradient) as a layer.

    Returns:
      A parameter-free :class:`Layer` that keeps the input shape.

    Example:
      >>> import jax.numpy as jnp, jnn
      >>> jnn.Sigmoid().apply({}, jnp.array([0.0]))
      Array([0.5], dtype=float32)
    """
    return _elementwise(sigmoid, "sigmoid")


def Tanh() -> Layer:
    """``jnp.tanh`` as a layer.

    Returns:
      A parameter-free :class:`Layer` that keeps the input shape.

    Example:
      >>> import jax.numpy as jnp, jnn
      >>> jnn.Tanh().apply({}, jnp.array([0.0]))
      Array([0.], dtype=float32)
    """
    return _elementwise(jnp.tanh, "tanh")


def Gelu(approximate: bool = True) -> Layer:
    """``jax.nn.gelu`` as a layer.

    Args:
      approximate: use the tanh approximation (``jax.nn.gelu``'s default)
        rather than the exact ``erf`` form.

    Returns:
      A parameter-free :class:`Layer` that keeps the input shape.

    Example:
      >>> import jax.numpy as jnp, jnn
      >>> jnn.Gelu(approximate=False).apply({}, jnp.array([0.0, 1.0]))
      Array([0. , 0.841...], dtype=float32)
    """
    return _elementwise(
        partial(jax.nn.gelu, approximate=approximate), "gelu", {"approximate": approximate}
    )


def Elu(alpha: float = 1.0) -> Layer:
    """``jax.nn.elu`` as a layer: ``x`` for ``x > 0``, ``alpha * (exp(x) - 1)`` otherwise.

    Args:
      alpha: the scale of the negative part.

    Returns:
      A parameter-free :class:`Layer` that keeps the input shape.

    Example:
      >>> import jax.numpy as jnp, jnn
      >>> jnn.Elu(alpha=2.0).apply({}, jnp.array([1.0, -100.0]))
      Array([ 1., -2.], dtype=float32)
    """
    alpha = check_number("Elu", "alpha", alpha)
    return _elementwise(partial(jax.nn.elu, alpha=alpha), "elu", {"alpha": alpha})


def LeakyRelu(negative_slope: float = 0.01) -> Layer:
    """``jax.nn.leaky_relu`` as a layer: ``x`` for ``x >= 0``, ``negative_slope * x`` otherwise.

    Args:
      negative_slope: the slope for negative inputs.

    Returns:
      A parameter-free :class:`Layer` that keeps the input shape.

    Example:
      >>> import jax.numpy as jnp, jnn
      >>> jnn.LeakyRelu(0.1).apply({}, jnp.array([-2.0, 3.0]))
      Array([-0.2,  3. ], dtype=float32)
    """
    negative_slope = check_number("LeakyRelu", "negative_slope", negative_slope)
    return _elementwise(
        partial(jax.nn.leaky_relu, negative_slope=negative_slope),
        "leaky_relu",
        {"negative_slope": negative_slope},
    )


def Selu() -> Layer:
    """``jax.nn.selu`` (scaled ELU) as a layer.

    Returns:
      A parameter-free :class:`Layer` that keeps the input shape.

    Example:
      >>> import jax.numpy as jnp, jnn
      >>> jnn.Selu().apply({}, jnp.array([0.0, 1.0]))
      Array([0.  , 1.0507...], dtype=float32)
    """
    return _elementwise(jax.nn.selu, "selu")


def Silu() -> Layer:
    """``jax.nn.silu`` (swish, ``x * sigmoid(x)``) as a layer.

    Returns:
      A parameter-free :class:`Layer` that keeps the input shape.

    Example:
      >>> import jax.numpy as jnp, jnn
      >>> jnn.Silu().apply({}, jnp.array([0.0, 1.0]))
      Array([0.  , 0.7310...], dtype=float32)
    """
    return _elementwise(jax.nn.silu, "silu")


def Softplus() -> Layer:
    """``jax.nn.softplus`` (``log(1 + exp(x))``) as a layer.

    Returns:
      A parameter-free :class:`Layer` that keeps the input shape.

    Example:
      >>> import jax.numpy as jnp, jnn
      >>> jnn.Softplus().apply({}, jnp.array([0.0]))
      Array([0.693...], dtype=float32)
    """
    return _elementwise(jax.nn.softplus, "softplus")


def Softmax(axis: int = -1) -> Layer:
    """``jax.nn.softmax`` over ``axis`` as a layer.

    Args:
      axis: the axis that sums to one (default: the features).

    Returns:
      A parameter-free :class:`Layer` that keeps the input shape.

    Example:
      >>> import jax.numpy as jnp, jnn
      >>> jnn.Softmax().apply({}, jnp.array([[0.0, 0.0]]))
      Array([[0.5, 0.5]], dtype=float32)
    """
    axis = check_int("Softmax", "axis", axis)
    return _elementwise(partial(jax.nn.softmax, axis=axis), "softmax", {"axis": axis})


def LogSoftmax(axis: int = -1) -> Layer:
    """``jax.nn.log_softmax`` over ``axis`` as a layer.

    Args:
      axis: the axis to normalize over (default: the features).

    Returns:
      A parameter-free :class:`Layer` that keeps the input shape.

    Example:
      >>> import jax.numpy as jnp, jnn
      >>> jnn.LogSoftmax().apply({}, jnp.array([[0.0, 0.0]]))
      Array([[-0.693..., -0.693...]], dtype=float32)
    """
    axis = check_int("LogSoftmax", "axis", axis)
    return _elementwise(partial(jax.nn.log_softmax, axis=axis), "log_softmax", {"axis": axis})
