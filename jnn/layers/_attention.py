"""MultiHeadAttention and attention masks (private module).

Several inputs, one contract: a layer's input may be a tuple (as for
:func:`jnn.parallel`), and its ``init`` then gets the tuple of their shapes.
``MultiHeadAttention`` accepts

- ``x``: self-attention, ``(*batch, T, D)``;
- ``(query, key_value)``: cross-attention, ``(*batch, T, Dq)`` and ``(*batch, S, Dkv)``;
- ``(query, key_value, mask)``: either of the above (pass ``x`` twice for
  self-attention) with a boolean ``mask`` of shape ``(*batch, T, S)``, True
  where a query may attend to a key (see :func:`attention_mask`).

So a self-attention layer drops into ``serial``/``residual`` as is, and
cross-attention composes with ``FanOut``/``parallel`` or is called directly.

``init`` needs a batch axis and a sequence axis, ``(batch, T, D)``: a model
whose rows are ``(batch, features)`` has no sequence to attend over, and
treating the batch as one would make each prediction depend on the rest of
its batch. ``apply`` also takes a single unbatched sequence ``(T, D)``, which
is what it sees under ``jax.vmap`` over examples.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.nn import initializers

from jnn._data import check_key, check_positive_int
from jnn._typing import Array, ArrayLike, Params, PRNGKey, Shape
from jnn.layers._base import Layer, check_inexact, describe, init_param, normalize_shape

Initializer = Callable[..., Array]
_GLOROT_UNIFORM = initializers.glorot_uniform()


def attention_mask(query_valid: ArrayLike, key_valid: ArrayLike | None = None) -> Array:
    """A ``(*batch, T, S)`` boolean mask from per-position validity (padding) flags.

    Args:
      query_valid: ``(*batch, T)`` booleans, True for real (non-padding) queries.
      key_valid: ``(*batch, S)`` booleans for the keys; defaults to ``query_valid``
        (self-attention).

    Returns:
      ``query_valid[..., :, None] & key_valid[..., None, :]``.

    Example:
      >>> import jax.numpy as jnp, jnn
      >>> jnn.layers.attention_mask(jnp.array([True, True, False])).astype(int)
      Array([[1, 1, 0],
             [1, 1, 0],
             [0, 0, 0]], dtype=int32)
    """
    q = jnp.asarray(query_valid, bool)
    k = q if key_valid is None else jnp.asarray(key_valid, bool)
    if q.ndim < 1 or k.shape[:-1] != q.shape[:-1]:
        raise ValueError(
            f"attention_mask: expected query_valid (*batch, T) and key_valid (*batch, S) with "
            f"the same batch axes, got {tuple(q.shape)} and {tuple(k.shape)}."
        )
    return q[..., :, None] & k[..., None, :]


def _split_inputs(name: str, x: Any) -> tuple[Any, Any, Any]:
    if isinstance(x, (tuple, list)):
        if len(x) == 2:
            return x[0], x[1], None
        if len(x) == 3:
            return tuple(x)
        raise ValueError(
            f"{name}: expected x, (query, key_value) or (query, key_value, mask), got a "
            f"{type(x).__name__} of length {len(x)}."
        )
    return x, x, None


def _is_shape_tuple(shape: Any) -> bool:
    return isinstance(shape, (tuple, list)) and bool(shape) and isinstance(shape[0], (tuple, list))


def MultiHeadAttention(
    num_heads: int,
    *,
    head_dim: int | None = None,
    out_features: int | None = None,
    causal: bool = False,
    use_bias: bool = True,
    kernel_init: Initializer = _GLOROT_UNIFORM,
    dtype: jnp.dtype = jnp.float32,
) -> Layer:
    r"""Multi-head scaled dot-product attention, self or cross, with masks.

    For each head, :math:`\mathrm{softmax}(QK^\top/\sqrt{d} + \text{mask})V`
    with ``Q, K, V`` linear projections of the inputs, computed by
    ``jax.nn.dot_product_attention``; the heads are concatenated and projected
    to ``out_features``. See the module docstring for the input forms.

    Args:
      num_heads: number of heads.
      head_dim: size of each head; defaults to ``D_query // num_heads`` (which
        must then divide evenly).
      out_features: output size; defaults to the query's ``D``.
      causal: mask key ``j > i`` for query ``i`` (decoder self-attention);
        combined (AND) with any explicit mask.
      use_bias: biases on the four projections.
      kernel_init: initializer for the ``(in, out)`` projection kernels.
      dtype: dtype of the params.

    Returns:
      A :class:`Layer` with params ``{"query", "key", "value", "out"}``, each
      ``{"w": (in, out), "b": (out,)}``; the inner size is ``num_heads * head_dim``.

    Raises:
      ValueError: for inputs of the wrong rank, feature size, or mismatched
        batch axes, and masks of the wrong shape; messages give both shapes.
        ``init`` refuses shapes without a sequence axis, such as ``(-1, D)``
        rows after a ``Dense``: attention over them would let the examples of
        a batch attend to each other.

    Example:
      >>> import jax, jax.numpy as jnp, jnn
      >>> mha = jnn.MultiHeadAttention(4, causal=True)
      >>> out_shape, params = mha.init(jax.random.key(0), (-1, 10, 32))
      >>> out_shape, params["query"]["w"].shape
      ((-1, 10, 32), (32, 32))
      >>> cross = jnn.MultiHeadAttention(2)
      >>> shape, p = cross.init(jax.random.key(1), ((-1, 5, 8), (-1, 7, 6)))
      >>> cross.apply(p, (jnp.ones((3, 5, 8)), jnp.ones((3, 7, 6)))).shape
      (3, 5, 8)
    """
    where = "MultiHeadAttention"
    num_heads = check_positive_int(where, "num_heads", num_heads)
    if head_dim is not None:
        head_dim = check_positive_int(where, "head_dim", head_dim, hint=" or None")
    if out_features is not None:
        out_features = check_positive_int(where, "out_features", out_features, hint=" or None")
    name = f"MultiHeadAttention({num_heads})"

    def dense(key: PRNGKey, what: str, d_in: int, d_out: int) -> Params:
        p = {"w": init_param(name, f"{what}.w", kernel_init, key, (d_in, d_out), dtype)}
        if use_bias:
            p["b"] = init_param(name, f"{what}.b", initializers.zeros, None, (d_out,), dtype)
        return p

    def check_shapes(q: tuple, kv: tuple, mask: tuple | None, *, at_init: bool = False) -> None:
        if at_init and (len(q) < 3 or len(kv) < 3):
            raise ValueError(
                f"{name}.init: expected input shapes (batch, T, D) with a sequence axis, got "
                f"{q if len(q) < 3 else kv}. A 2-D (batch, features) input has no sequence: "
                "attention would mix the examples of a batch. Give each example a sequence "
                "axis, e.g. jnn.Reshape((T, D)) before this layer or x[:, None, :]."
            )
        if len(q) < 2 or len(kv) != len(q) or not _same_batch(q[:-2], kv[:-2]):
            raise ValueError(
                f"{name}: expected query (*batch, T, Dq) and key_value (*batch, S, Dkv) of "
                f"rank >= 2 with the same batch axes, got {q} and {kv}."
            )
        if 0 in (q[-2], kv[-2]):
            raise ValueError(f"{name}: empty sequence: query {q} and key_value {kv}, T and S >= 1.")
        if mask is not None:
            want = (*q[:-1], kv[-2])
            if len(mask) != len(want) or not _same_batch(mask, want):
                raise ValueError(
                    f"{name}: expected a mask of shape (*batch, T, S) = {want}, got {mask}."
                )

    def init(key: PRNGKey, input_shape: Any) -> tuple[Shape, Params]:
        if _is_shape_tuple(input_shape):
            q, kv, mask = _split_inputs(name, tuple(input_shape))
        else:
            q, kv, mask = input_shape, input_shape, None
        q, kv = normalize_shape(name, q), normalize_shape(name, kv)
        mask = None if mask is None else normalize_shape(name, mask)
        check_shapes(q, kv, mask, at_init=True)
        if q[-1] == -1 or kv[-1] == -1:
            raise ValueError(f"{name}.init: feature sizes must be known, got {q} and {kv}.")
        hd = head_dim
        if hd is None:
            if q[-1] % num_heads:
                raise ValueError(
                    f"{name}.init: query features {q[-1]} are not divisible by num_heads="
                    f"{num_heads}; pass head_dim= explicitly."
                )
            hd = q[-1] // num_heads
        inner, d_out = num_heads * hd, out_features or q[-1]
        kq, kk, kvv, ko = jax.random.split(check_key(f"{name}.init", key), 4)
        params = {
            "query": dense(kq, "query", q[-1], inner),
            "key": dense(kk, "key", kv[-1], inner),
            "value": dense(kvv, "value", kv[-1], inner),
            "out": dense(ko, "out", inner, d_out),
        }
        return (*q[:-1], d_out), params

    def project(p: Params, x: Array) -> Array:
        y = x @ p["w"].astype(x.dtype)
        return y + p["b"].reshape((1,) * (y.ndim - 1) + p["b"].shape) if "b" in p else y

    def apply(params: Params, x: Any, *, key: PRNGKey | None = None, train: bool = False):
        del key, train
        q_in, kv_in, mask = _split_inputs(name, x)
        q_in, kv_in = check_inexact(name, q_in), check_inexact(name, kv_in)
        mask_shape = None if mask is None else tuple(jnp.shape(mask))
        check_shapes(tuple(q_in.shape), tuple(kv_in.shape), mask_shape)
        for what, arr, want in (
            ("query", q_in, params["query"]["w"].shape[0]),
            ("key_value", kv_in, params["key"]["w"].shape[0]),
        ):
            if arr.shape[-1] != want:
                raise ValueError(
                    f"{name}: expected {what} of shape (*batch, length, {want}), got "
                    f"{tuple(arr.shape)}. The last axis must hold the features the layer "
                    "was initialized with."
                )
        lead, (t, s) = q_in.shape[:-2], (q_in.shape[-2], kv_in.shape[-2])
        inner = params["query"]["w"].shape[1]
        hd = inner // num_heads
        qb, kvb = q_in.reshape(-1, t, q_in.shape[-1]), kv_in.reshape(-1, s, kv_in.shape[-1])
        b = qb.shape[0]
        q = project(params["query"], qb).reshape(b, t, num_heads, hd)
        k = project(params["key"], kvb).reshape(b, s, num_heads, hd)
        v = project(params["value"], kvb).reshape(b, s, num_heads, hd)
        allowed = None
        if mask is not None:
            mask = jnp.asarray(mask)
            if mask.dtype != jnp.bool_:
                raise TypeError(f"{name}: mask must be boolean (True = attend), got {mask.dtype}.")
            allowed = mask.reshape(b, 1, t, s)
        if causal:
            tri = jnp.tril(jnp.ones((t, s), bool)).reshape(1, 1, t, s)
            tri = jnp.broadcast_to(tri, (b, 1, t, s))
            allowed = tri if allowed is None else allowed & tri
        out = jax.nn.dot_product_attention(q, k, v, mask=allowed)
        y = project(params["out"], out.reshape(b, t, inner))
        return y.reshape((*lead, t, y.shape[-1]))

    return describe(
        Layer(init, apply),
        "multi_head_attention",
        dict(
            num_heads=num_heads,
            head_dim=head_dim,
            out_features=out_features,
            causal=causal,
            use_bias=use_bias,
            kernel_init=kernel_init,
            dtype=dtype,
        ),
    )


def _same_batch(a: tuple, b: tuple) -> bool:
    """Equal shapes, treating -1 (unknown, at init) as matching anything."""
    return len(a) == len(b) and all(x == y or -1 in (x, y) for x, y in zip(a, b, strict=True))
