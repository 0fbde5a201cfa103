"""Conv and ConvTranspose, channels-last, on ``jax.lax`` (private module)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.nn import initializers

from jnn._data import check_key, check_positive_int
from jnn._typing import ActivationLike, Array, Params, PRNGKey, Shape
from jnn.layers._activations import get_activation
from jnn.layers._base import Layer, check_inexact, describe, init_param
from jnn.layers._spatial import (
    Padding,
    check_padding,
    check_rank,
    dimension_numbers,
    fold_batch,
    int_tuple,
    spatial_and_channels,
    spatial_input_shape,
    unfold_batch,
    window_output,
)

Initializer = Callable[..., Array]
_GLOROT_UNIFORM = initializers.glorot_uniform()  # fan-in/out over the whole receptive field


def _kernel_size(name: str, kernel_size: Sequence[int]) -> tuple[int, ...]:
    if isinstance(kernel_size, int) or not isinstance(kernel_size, (tuple, list)):
        raise TypeError(
            f"{name}: kernel_size must be a tuple with one int per spatial axis, which fixes "
            f"the dimensionality: (3,) for 1-D, (3, 3) for 2-D, (3, 3, 3) for 3-D; "
            f"got {kernel_size!r}."
        )
    nd = len(kernel_size)
    if nd not in (1, 2, 3):
        raise ValueError(f"{name}: only 1-D, 2-D and 3-D kernels are supported, got {kernel_size}.")
    return int_tuple(name, "kernel_size", kernel_size, nd)


def _check_channels(name: str, x: Array, nd: int, in_channels: int) -> None:
    check_rank(name, x, nd, f"*spatial[{nd}], channels")
    if x.shape[-1] != in_channels:
        raise ValueError(
            f"{name}: expected input of shape (*batch, *spatial[{nd}], {in_channels}), got "
            f"{tuple(x.shape)}. The last axis must hold the {in_channels} channels the layer "
            "was initialized with (channels-last layout)."
        )


def Conv(
    features: int,
    kernel_size: Sequence[int],
    *,
    strides: int | Sequence[int] = 1,
    padding: Padding = "SAME",
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    activation: ActivationLike = None,
    use_bias: bool = True,
    kernel_init: Initializer = _GLOROT_UNIFORM,
    bias_init: Initializer = initializers.zeros,
    dtype: jnp.dtype = jnp.float32,
) -> Layer:
    """An N-D convolution (N = 1, 2, 3) over channels-last input.

    Input ``(*batch, *spatial, C_in)`` maps to ``(*batch, *spatial', features)``,
    with any number of leading batch axes. Built on
    ``jax.lax.conv_general_dilated`` (a cross-correlation, as in every deep
    learning library).

    Args:
      features: number of output channels.
      kernel_size: a tuple with one size per spatial axis; its length sets the
        dimensionality: ``(3,)``, ``(3, 3)`` or ``(3, 3, 3)``.
      strides: an int or one int per spatial axis.
      padding: ``"SAME"`` (output size ``ceil(size / stride)``), ``"VALID"`` (no
        padding), a non-negative int for every side, or ``(low, high)`` pairs
        per spatial axis.
      dilation: kernel (atrous) dilation, an int or one per spatial axis.
      groups: feature groups; ``C_in`` and ``features`` must both be divisible
        by it (``groups == C_in`` is a depthwise convolution).
      activation: as in :func:`jnn.Dense`.
      use_bias: whether to add a bias per output channel.
      kernel_init, bias_init, dtype: as in :func:`jnn.Dense`.

    Returns:
      A :class:`Layer` with params ``{"w": (*kernel_size, C_in // groups,
      features), "b": (features,)}``.

    Raises:
      TypeError: if ``kernel_size`` is not a tuple.
      ValueError: for bad sizes or padding; from ``init``/``apply``, for input of
        the wrong rank or channel count (the message names both shapes).

    Example:
      >>> import jax, jax.numpy as jnp, jnn
      >>> conv = jnn.Conv(8, (3, 3), strides=2)
      >>> out_shape, params = conv.init(jax.random.key(0), (-1, 28, 28, 1))
      >>> out_shape, params["w"].shape
      ((-1, 14, 14, 8), (3, 3, 1, 8))
      >>> conv.apply(params, jnp.ones((2, 28, 28, 1))).shape
      (2, 14, 14, 8)
    """
    base = "Conv"
    features = check_positive_int(base, "features", features)
    window = _kernel_size(base, kernel_size)
    nd = len(window)
    name = f"Conv({features}, {window})"
    strides_ = int_tuple(name, "strides", strides, nd)
    dilation_ = int_tuple(name, "dilation", dilation, nd)
    padding_ = check_padding(name, padding, nd)
    groups = check_positive_int(name, "groups", groups)
    if features % groups:
        raise ValueError(f"{name}: features={features} is not divisible by groups={groups}.")
    act = get_activation(activation)
    dn = dimension_numbers(nd)

    def init(key: PRNGKey, input_shape: Shape) -> tuple[Shape, Params]:
        shape = spatial_input_shape(name, input_shape, nd, f"*spatial[{nd}], channels")
        spatial, in_ch = spatial_and_channels(shape, nd)
        if in_ch % groups:
            raise ValueError(
                f"{name}.init: input channels {in_ch} (input_shape {shape}) are not divisible "
                f"by groups={groups}."
            )
        out = window_output(f"{name}.init", shape, spatial, window, strides_, dilation_, padding_)
        k_key, b_key = jax.random.split(check_key(f"{name}.init", key))
        w_shape = (*window, in_ch // groups, features)
        params = {"w": init_param(name, "w", kernel_init, k_key, w_shape, dtype)}
        if use_bias:
            params["b"] = init_param(name, "b", bias_init, b_key, (features,), dtype)
        return (*shape[: -nd - 1], *out, features), params

    def apply(params: Params, x: Array, *, key: PRNGKey | None = None, train: bool = False):
        del key, train
        x = check_inexact(name, x)
        w = params["w"]
        _check_channels(name, x, nd, w.shape[-2] * groups)
        xb, lead = fold_batch(x, nd)
        window_output(name, x.shape, xb.shape[1:-1], window, strides_, dilation_, padding_)
        y = lax.conv_general_dilated(
            xb,
            w.astype(x.dtype),
            window_strides=strides_,
            padding=padding_,
            rhs_dilation=dilation_,
            dimension_numbers=dn,
            feature_group_count=groups,
        )
        if use_bias:
            y = y + params["b"].reshape((1,) * (y.ndim - 1) + (features,))
        return act(unfold_batch(y, lead))

    return describe(
        Layer(init, apply),
        "conv",
        dict(
            features=features,
            kernel_size=kernel_size,
            strides=strides,
            padding=padding,
            dilation=dilation,
            groups=groups,
            activation=activation,
            use_bias=use_bias,
            kernel_init=kernel_init,
            bias_init=bias_init,
            dtype=dtype,
        ),
    )


def ConvTranspose(
    features: int,
    kernel_size: Sequence[int],
    *,
    strides: int | Sequence[int] = 1,
    padding: Padding = "SAME",
    dilation: int | Sequence[int] = 1,
    activation: ActivationLike = None,
    use_bias: bool = True,
    kernel_init: Initializer = _GLOROT_UNIFORM,
    bias_init: Initializer = initializers.zeros,
    dtype: jnp.dtype = jnp.float32,
) -> Layer:
    """A transposed ("fractionally strided") convolution, channels-last, 1-D to 3-D.

    The usual upsampling layer: with ``padding="SAME"`` the spatial size is
    multiplied by ``strides``. Built on ``jax.lax.conv_transpose`` (flax's
    convention: the kernel is not flipped, ``transpose_kernel=False``).

    Args:
      features: number of output channels.
      kernel_size: one size per spatial axis, e.g. ``(3, 3)`` for 2-D.
      strides: upsampling factor per spatial axis.
      padding: ``"SAME"`` (output ``size * stride``), ``"VALID"`` (output
        ``size * stride + max(k - stride, 0)``), or explicit ``(low, high)``
        pairs applied to the stride-dilated input.
      dilation: kernel dilation.
      activation, use_bias, kernel_init, bias_init, dtype: as in :func:`Conv`.

    Returns:
      A :class:`Layer` with params ``{"w": (*kernel_size, C_in, features),
      "b": (features,)}``.

    Example:
      >>> import jax, jax.numpy as jnp, jnn
      >>> up = jnn.ConvTranspose(4, (3, 3), strides=2)
      >>> out_shape, params = up.init(jax.random.key(0), (-1, 7, 7, 8))
      >>> out_shape
      (-1, 14, 14, 4)
      >>> up.apply(params, jnp.ones((2, 7, 7, 8))).shape
      (2, 14, 14, 4)
    """
    base = "ConvTranspose"
    features = check_positive_int(base, "features", features)
    window = _kernel_size(base, kernel_size)
    nd = len(window)
    name = f"ConvTranspose({features}, {window})"
    strides_ = int_tuple(name, "strides", strides, nd)
    dilation_ = int_tuple(name, "dilation", dilation, nd)
    padding_ = check_padding(name, padding, nd)
    act = get_activation(activation)
    dn = dimension_numbers(nd)

    def out_size(size: int, k: int, s: int, d: int, pads: tuple[int, int] | None) -> int:
        effective = (k - 1) * d + 1
        if padding_ == "SAME":
            return size * s
        if padding_ == "VALID":
            return size * s + max(effective - s, 0)
        assert pads is not None  # explicit padding
        return (size - 1) * s + 1 + pads[0] + pads[1] - effective + 1

    def init(key: PRNGKey, input_shape: Shape) -> tuple[Shape, Params]:
        shape = spatial_input_shape(name, input_shape, nd, f"*spatial[{nd}], channels")
        spatial, in_ch = spatial_and_channels(shape, nd)
        pads = padding_ if not isinstance(padding_, str) else (None,) * nd
        out = tuple(
            out_size(*a) for a in zip(spatial, window, strides_, dilation_, pads, strict=True)
        )
        if min(out) < 1:
            raise ValueError(f"{name}.init: input_shape {shape} gives an empty output {out}.")
        k_key, b_key = jax.random.split(check_key(f"{name}.init", key))
        w_shape = (*window, in_ch, features)
        params = {"w": init_param(name, "w", kernel_init, k_key, w_shape, dtype)}
        if use_bias:
            params["b"] = init_param(name, "b", bias_init, b_key, (features,), dtype)
        return (*shape[: -nd - 1], *out, features), params

    def apply(params: Params, x: Array, *, key: PRNGKey | None = None, train: bool = False):
        del key, train
        x = check_inexact(name, x)
        w = params["w"]
        _check_channels(name, x, nd, w.shape[-2])
        xb, lead = fold_batch(x, nd)
        y = lax.conv_transpose(
            xb,
            w.astype(x.dtype),
            strides=strides_,
            padding=padding_,
            rhs_dilation=dilation_,
            dimension_numbers=dn,
        )
        if use_bias:
            y = y + params["b"].reshape((1,) * (y.ndim - 1) + (features,))
        return act(unfold_batch(y, lead))

    return describe(
        Layer(init, apply),
        "conv_transpose",
        dict(
            features=features,
            kernel_size=kernel_size,
            strides=strides,
            padding=padding,
            dilation=dilation,
            activation=activation,
            use_bias=use_bias,
            kernel_init=kernel_init,
            bias_init=bias_init,
            dtype=dtype,
        ),
    )
