"""Dense, Flatten, Dropout and Identity (private module)."""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.nn import initializers

from jnn._data import check_key, check_number, check_positive_int
from jnn._typing import ActivationLike, Array, Params, PRNGKey, Shape
from jnn.layers._activations import get_activation
from jnn.layers._base import (
    Layer,
    check_inexact,
    check_numeric,
    check_shapes,
    describe,
    feature_dim,
    init_param,
    normalize_shape,
)

Initializer = Callable[..., Array]
_GLOROT_UNIFORM = initializers.glorot_uniform()  # Keras's default kernel initializer


def Dense(
    features: int,
    *,
    activation: ActivationLike = None,
    use_bias: bool = True,
    kernel_init: Initializer = _GLOROT_UNIFORM,
    bias_init: Initializer = initializers.zeros,
    dtype: jnp.dtype = jnp.float32,
) -> Layer:
    """A fully connected layer: ``y = activation(x @ w + b)``.

    Args:
      features: number of output units.
      activation: a name (``"relu"``, ``"sigmoid"``, ...; see
        :func:`jnn.layers.get_activation`), a callable, or ``None`` for linear.
      use_bias: whether to add the bias ``b``.
      kernel_init: initializer for the ``(in, out)`` kernel ``w``. The default,
        ``jax.nn.initializers.glorot_uniform()``, is Keras's.
      bias_init: initializer for ``b`` of shape ``(out,)``; zeros, as in Keras.
      dtype: dtype of the params.

    Returns:
      A :class:`Layer` with params ``{"w": (in, out), "b": (out,)}``. ``apply``
      works on any leading batch dimensions.

    Raises:
      ValueError: if ``features`` is not a positive int (numpy ints are fine,
        bools are not); from ``init``, if the feature dimension is unknown or
        the kernel would not fit in memory; from ``apply``, if the input's
        last dimension differs from the kernel's.

    Example:
      >>> import jax, jax.numpy as jnp, jnn
      >>> layer = jnn.Dense(4, activation="relu")
      >>> out_shape, params = layer.init(jax.random.key(0), (None, 3))
      >>> out_shape, params["w"].shape, params["b"].shape
      ((-1, 4), (3, 4), (4,))
      >>> layer.apply(params, jnp.ones((2, 5, 3))).shape
      (2, 5, 4)
    """
    features = check_positive_int("Dense", "features", features)
    act = get_activation(activation)
    name = f"Dense({features})"

    def init(key: PRNGKey, input_shape: Shape) -> tuple[Shape, Params]:
        in_dim = feature_dim(name, input_shape)
        k_key, b_key = jax.random.split(check_key(f"{name}.init", key))
        params = {"w": init_param(name, "w", kernel_init, k_key, (in_dim, features), dtype)}
        if use_bias:
            params["b"] = init_param(name, "b", bias_init, b_key, (features,), dtype)
        return (*normalize_shape(name, input_shape)[:-1], features), params

    def apply(params: Params, x: Array, *, key: PRNGKey | None = None, train: bool = False):
        del key, train
        x = check_inexact(name, x)
        w = params["w"]
        if x.ndim < 1 or x.shape[-1] != w.shape[0]:
            raise ValueError(
                f"{name}: expected input of shape (..., {w.shape[0]}), got {tuple(x.shape)}. "
                "The last axis must hold the features the layer was initialized with."
            )
        y = x @ w
        if use_bias:
            y = y + params["b"].reshape((1,) * (y.ndim - 1) + (features,))
        return act(y)

    return describe(
        Layer(init, apply),
        "dense",
        dict(
            features=features,
            activation=activation,
            use_bias=use_bias,
            kernel_init=kernel_init,
            bias_init=bias_init,
            dtype=dtype,
        ),
    )


def Flatten(ndim: int | None = None) -> Layer:
    """Flatten trailing axes into one feature axis.

    Args:
      ndim: how many trailing axes to flatten. ``None`` (the default, as in
        Keras) keeps only the first axis: ``(N, H, W, C) -> (N, H*W*C)``. Give
        ``ndim`` to support extra leading batch axes or ``vmap`` over single
        examples: ``Flatten(3)`` maps ``(..., H, W, C) -> (..., H*W*C)``.

    Returns:
      A parameter-free :class:`Layer`.

    Raises:
      ValueError: if ``ndim`` is not a positive int or None; from ``init`` or
        ``apply``, if the input has too few axes or unknown flattened axes.

    Example:
      >>> import jax, jax.numpy as jnp, jnn
      >>> jnn.Flatten().init(jax.random.key(0), (-1, 8, 8, 3))[0]
      (-1, 192)
      >>> jnn.Flatten(2).apply({}, jnp.ones((4, 5, 8, 3))).shape
      (4, 5, 24)
    """
    if ndim is not None:
        ndim = check_positive_int("Flatten", "ndim", ndim, hint=" or None")

    def _split(shape: tuple[int, ...]) -> int:
        lead = 1 if ndim is None else len(shape) - ndim
        if lead < (0 if ndim is not None else 1) or len(shape) < 1:
            raise ValueError(f"Flatten(ndim={ndim}): input of shape {shape} has too few axes.")
        return lead

    def init(key: PRNGKey, input_shape: Shape) -> tuple[Shape, Params]:
        del key
        shape = normalize_shape("Flatten", input_shape)
        lead = _split(shape)
        tail = shape[lead:]
        if -1 in tail:
            raise ValueError(f"Flatten: the flattened axes {tail} must all be known.")
        return (*shape[:lead], math.prod(tail)), {}

    def apply(params: Params, x: Array, *, key: PRNGKey | None = None, train: bool = False):
        del params, key, train
        x = check_numeric("Flatten", x)
        lead = _split(x.shape)
        return x.reshape(*x.shape[:lead], -1)

    return describe(Layer(init, apply), "flatten", {"ndim": ndim})


def Dropout(rate: float) -> Layer:
    """Randomly zero a fraction ``rate`` of the inputs during training.

    Kept values are scaled by ``1 / (1 - rate)`` so the expectation is
    unchanged; in evaluation mode (``train=False``) the layer is the identity.

    Args:
      rate: the probability of DROPPING each element, in ``[0, 1)`` (Keras's
        meaning; stax's ``rate`` was the keep probability).

    Returns:
      A parameter-free :class:`Layer` that keeps the input shape.

    Raises:
      ValueError: if ``rate`` is outside ``[0, 1)``; from ``apply``, if called
        with ``train=True`` and no ``key``.

    Example:
      >>> import jax, jax.numpy as jnp, jnn
      >>> drop = jnn.Dropout(0.5)
      >>> x = jnp.ones((2, 4))
      >>> bool((drop.apply({}, x) == x).all())   # evaluation mode: identity
      True
      >>> y = drop.apply({}, x, key=jax.random.key(0), train=True)
      >>> sorted({float(v) for v in y.ravel()}) in ([0.0, 2.0], [0.0], [2.0])
      True
    """
    rate = check_number(
        "Dropout", "rate", rate, low=0.0, high=1.0, high_open=True,
        meaning="(the probability of dropping a unit) ",
    )  # fmt: skip

    def init(key: PRNGKey, input_shape: Shape) -> tuple[Shape, Params]:
        del key
        return normalize_shape("Dropout", input_shape), {}

    def apply(params: Params, x: Array, *, key: PRNGKey | None = None, train: bool = False):
        del params
        x = check_numeric(f"Dropout(rate={rate})", x)
        if not train or rate == 0.0:
            return x
        if key is None:
            raise ValueError(
                f"Dropout(rate={rate}) in training mode needs a PRNG key: call "
                "apply(params, x, key=jax.random.key(seed), train=True), or train=False "
                "for inference. jnn.fit and jnn.make_train_step pass one for you."
            )
        key = check_key(f"Dropout(rate={rate})", key)
        keep = jax.random.bernoulli(key, 1.0 - rate, jnp.shape(x))
        return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))

    return describe(Layer(init, apply), "dropout", {"rate": rate})


def Identity() -> Layer:
    """The identity layer (no params).

    Returns:
      A :class:`Layer` whose ``apply`` returns its input.

    Example:
      >>> import jax.numpy as jnp, jnn
      >>> jnn.Identity().apply({}, jnp.ones(2))
      Array([1., 1.], dtype=float32)
    """

    def init(key: PRNGKey, input_shape: Shape) -> tuple[Shape, Params]:
        del key
        return check_shapes("Identity", input_shape), {}

    def apply(params: Params, x: Array, *, key: PRNGKey | None = None, train: bool = False):
        del params, key, train
        return x

    return describe(Layer(init, apply), "identity")
