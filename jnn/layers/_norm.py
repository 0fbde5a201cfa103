"""LayerNorm, RMSNorm and BatchNorm (private module).

BatchNorm is a :class:`StatefulLayer`: its running statistics are state, kept
apart from the trainable ``scale``/``bias`` params (see :mod:`jnn.layers`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.nn import initializers

from jnn._data import check_number
from jnn._typing import Array, Params, PRNGKey, Shape, State
from jnn.layers._base import (
    Layer,
    StatefulLayer,
    check_inexact,
    describe,
    feature_dim,
    init_param,
    normalize_shape,
)


def _check_eps(name: str, epsilon: float) -> float:
    return check_number(name, "epsilon", epsilon, low=0.0, low_open=True)


def _check_features(name: str, x: Array, features: int) -> None:
    if x.ndim < 1 or x.shape[-1] != features:
        raise ValueError(
            f"{name}: expected input of shape (..., {features}), got {tuple(x.shape)}. The "
            "last axis must hold the features the layer was initialized with."
        )


def _row(v: Array, ndim: int) -> Array:
    """A per-feature vector ``(C,)`` reshaped to broadcast against rank-``ndim`` input."""
    return v.reshape((1,) * (ndim - 1) + (v.shape[-1],))


def _stats_dtype(x: Array) -> Array:
    """``x`` in at least float32, for its statistics (low-precision floats lose them)."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _affine_params(name: str, features: int, use_scale: bool, use_bias: bool, dtype) -> Params:
    params = {}
    if use_scale:
        params["scale"] = init_param(name, "scale", initializers.ones, None, (features,), dtype)
    if use_bias:
        params["bias"] = init_param(name, "bias", initializers.zeros, None, (features,), dtype)
    return params


def _affine(params: Params, y: Array) -> Array:
    if "scale" in params:
        y = y * _row(params["scale"], y.ndim).astype(y.dtype)
    if "bias" in params:
        y = y + _row(params["bias"], y.ndim).astype(y.dtype)
    return y


def LayerNorm(
    *,
    epsilon: float = 1e-5,
    use_scale: bool = True,
    use_bias: bool = True,
    dtype: jnp.dtype = jnp.float32,
) -> Layer:
    r"""Normalize each example over its last (feature) axis.

    .. math:: y = \frac{x - \mathrm{mean}(x)}{\sqrt{\mathrm{var}(x) + \epsilon}}
              \cdot \mathrm{scale} + \mathrm{bias}

    Statistics are per example, so the layer is the same in training and
    evaluation and needs no state.

    Args:
      epsilon: added to the variance.
      use_scale, use_bias: learn ``scale`` (init 1) / ``bias`` (init 0), shape ``(C,)``.
      dtype: dtype of the params.

    Returns:
      A :class:`Layer` that keeps the input shape, with params ``{"scale":
      (C,), "bias": (C,)}`` (each only if enabled).

    Raises:
      ValueError: for a non-positive ``epsilon``; from ``apply``, if the last
        axis differs from the initialized feature count.

    Example:
      >>> import jax, jax.numpy as jnp, jnn
      >>> ln = jnn.LayerNorm()
      >>> _, params = ln.init(jax.random.key(0), (-1, 4))
      >>> y = ln.apply(params, jnp.array([[1.0, 2.0, 3.0, 4.0]]))
      >>> round(float(y.mean()), 6), round(float(y.std()), 3)
      (0.0, 1.0)
    """
    epsilon = _check_eps("LayerNorm", epsilon)

    def init(key: PRNGKey, input_shape: Shape) -> tuple[Shape, Params]:
        del key
        features = feature_dim("LayerNorm", input_shape)
        return normalize_shape("LayerNorm", input_shape), _affine_params(
            "LayerNorm", features, use_scale, use_bias, dtype
        )

    def apply(params: Params, x: Array, *, key: PRNGKey | None = None, train: bool = False):
        del key, train
        x = check_inexact("LayerNorm", x)
        if params:
            _check_features("LayerNorm", x, next(iter(params.values())).shape[0])
        xf = _stats_dtype(x)  # statistics in float32 under a bfloat16/float16 policy
        mean = jnp.mean(xf, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
        return _affine(params, ((xf - mean) * lax.rsqrt(var + epsilon)).astype(x.dtype))

    return describe(
        Layer(init, apply),
        "layer_norm",
        dict(
            epsilon=epsilon,
            use_scale=use_scale,
            use_bias=use_bias,
            dtype=dtype,
        ),
    )


def RMSNorm(
    *, epsilon: float = 1e-6, use_scale: bool = True, dtype: jnp.dtype = jnp.float32
) -> Layer:
    r"""Root-mean-square normalization over the last axis (no centering).

    .. math:: y = \frac{x}{\sqrt{\mathrm{mean}(x^2) + \epsilon}} \cdot \mathrm{scale}

    Args:
      epsilon: added to the mean square.
      use_scale: learn ``scale`` (init 1), shape ``(C,)``. There is no bias.
      dtype: dtype of the params.

    Returns:
      A :class:`Layer` that keeps the input shape, with params ``{"scale":
      (C,)}`` (or ``{}`` without ``use_scale``).

    Raises:
      ValueError: for a non-positive ``epsilon``; from ``apply``, if the last
        axis differs from the initialized feature count.

    Example:
      >>> import jax, jax.numpy as jnp, jnn
      >>> rms = jnn.RMSNorm()
      >>> _, params = rms.init(jax.random.key(0), (-1, 2))
      >>> rms.apply(params, jnp.array([[3.0, 4.0]]))
      Array([[0.8485..., 1.1313...]], dtype=float32)
    """
    epsilon = _check_eps("RMSNorm", epsilon)

    def init(key: PRNGKey, input_shape: Shape) -> tuple[Shape, Params]:
        del key
        features = feature_dim("RMSNorm", input_shape)
        return normalize_shape("RMSNorm", input_shape), _affine_params(
            "RMSNorm", features, use_scale, False, dtype
        )

    def apply(params: Params, x: Array, *, key: PRNGKey | None = None, train: bool = False):
        del key, train
        x = check_inexact("RMSNorm", x)
        if params:
            _check_features("RMSNorm", x, params["scale"].shape[0])
        xf = _stats_dtype(x)
        ms = jnp.mean(jnp.square(xf), axis=-1, keepdims=True)
        return _affine(params, (xf * lax.rsqrt(ms + epsilon)).astype(x.dtype))

    return describe(
        Layer(init, apply),
        "rmsnorm",
        dict(
            epsilon=epsilon,
            use_scale=use_scale,
            dtype=dtype,
        ),
    )


def BatchNorm(
    *,
    momentum: float = 0.99,
    epsilon: float = 1e-5,
    use_scale: bool = True,
    use_bias: bool = True,
    axis_name: str | None = None,
    dtype: jnp.dtype = jnp.float32,
) -> StatefulLayer:
    r"""Batch normalization with running statistics kept as state.

    Normalizes each feature (the last axis) over all other axes::

        train=True:  y = (x - batch_mean) / sqrt(batch_var + eps) * scale + bias
                     state.mean <- momentum * state.mean + (1 - momentum) * batch_mean
                     state.var  <- momentum * state.var  + (1 - momentum) * batch_var
        train=False: y = (x - state.mean) / sqrt(state.var + eps) * scale + bias
                     state unchanged

    ``batch_var`` is the biased (1/N) variance, as in flax and Keras. The
    running statistics are computed under ``stop_gradient`` and live in the
    state, never in the params, so no optimizer ever updates them.

    Args:
      momentum: decay of the running averages (Keras's and flax's 0.99; PyTorch's
        ``momentum=0.1`` is 0.9 here). Lower it for short training runs.
      epsilon: added to the variance.
      use_scale, use_bias: learn ``scale`` (init 1) / ``bias`` (init 0).
      axis_name: under ``jax.vmap(..., axis_name=...)`` or ``pmap``/``shard_map``,
        the mapped axis to average the batch statistics over (``lax.pmean``).
        Without it, a vmapped call sees only its own slice.
      dtype: dtype of params and state.

    Returns:
      A :class:`StatefulLayer`: ``init`` returns ``(shape, {"scale", "bias"},
      {"mean", "var"})``, ``apply(params, state, x, *, train)`` returns ``(y, state)``.

    Raises:
      ValueError: for a bad ``momentum``/``epsilon``; from ``apply``, if the last
        axis differs from the initialized feature count.

    Example:
      >>> import jax, jax.numpy as jnp, jnn
      >>> bn = jnn.BatchNorm(momentum=0.9)
      >>> shape, params, state = bn.init(jax.random.key(0), (-1, 2))
      >>> x = jnp.array([[0.0, 10.0], [2.0, 30.0]])
      >>> y, new_state = bn.apply(params, state, x, train=True)
      >>> new_state["mean"]
      Array([0.1, 2. ], dtype=float32)
      >>> _, same = bn.apply(params, new_state, x)          # eval: state unchanged
      >>> bool((same["mean"] == new_state["mean"]).all())
      True
    """
    name = "BatchNorm"
    momentum = check_number(name, "momentum", momentum, low=0.0, high=1.0, high_open=True)
    epsilon = _check_eps(name, epsilon)

    def init(key: PRNGKey, input_shape: Shape) -> tuple[Shape, Params, State]:
        del key
        features = feature_dim(name, input_shape)
        state = {
            "mean": init_param(name, "mean", initializers.zeros, None, (features,), dtype),
            "var": init_param(name, "var", initializers.ones, None, (features,), dtype),
        }
        params = _affine_params(name, features, use_scale, use_bias, dtype)
        return normalize_shape(name, input_shape), params, state

    def apply(
        params: Params,
        state: State,
        x: Array,
        *,
        key: PRNGKey | None = None,
        train: bool = False,
    ) -> tuple[Array, State]:
        del key
        x = check_inexact(name, x)
        _check_features(name, x, state["mean"].shape[0])
        if train:
            axes = tuple(range(x.ndim - 1))
            xf = _stats_dtype(x)
            mean = jnp.mean(xf, axis=axes)
            if axis_name is not None:
                mean = lax.pmean(mean, axis_name)
            var = jnp.mean(jnp.square(xf - _row(mean, x.ndim)), axis=axes)
            if axis_name is not None:
                var = lax.pmean(var, axis_name)
            stats = jax.lax.stop_gradient((mean, var))
            new_state = {
                "mean": (momentum * state["mean"] + (1.0 - momentum) * stats[0]).astype(dtype),
                "var": (momentum * state["var"] + (1.0 - momentum) * stats[1]).astype(dtype),
            }
        else:
            mean, var, new_state = state["mean"], state["var"], state
        inv = lax.rsqrt(_row(var, x.ndim) + epsilon)
        y = ((x - _row(mean, x.ndim)) * inv).astype(x.dtype)
        return _affine(params, y), new_state

    return describe(
        StatefulLayer(init, apply),
        "batch_norm",
        dict(
            momentum=momentum,
            epsilon=epsilon,
            use_scale=use_scale,
            use_bias=use_bias,
            axis_name=axis_name,
            dtype=dtype,
        ),
    )
