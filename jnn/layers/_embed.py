"""Embedding and PositionalEmbedding (private module)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.nn import initializers

from jnn._data import check_positive_int
from jnn._typing import Array, Params, PRNGKey, Shape
from jnn.layers._base import (
    Layer,
    check_inexact,
    check_numeric,
    describe,
    feature_dim,
    init_param,
    normalize_shape,
)

Initializer = Callable[..., Array]
_NORMAL_1 = initializers.normal(stddev=1.0)
_NORMAL_002 = initializers.normal(stddev=0.02)


def Embedding(
    num_embeddings: int,
    features: int,
    *,
    embedding_init: Initializer = _NORMAL_1,
    dtype: jnp.dtype = jnp.float32,
) -> Layer:
    """A lookup table: integer ids ``(...)`` -> vectors ``(..., features)``.

    Args:
      num_embeddings: vocabulary size; valid ids are ``0 .. num_embeddings - 1``.
      features: size of each vector.
      embedding_init: initializer of the ``(num_embeddings, features)`` table
        (default: standard normal, as in flax).
      dtype: dtype of the table.

    Returns:
      A :class:`Layer` with params ``{"embedding": (num_embeddings, features)}``.

    Raises:
      TypeError: from ``apply``, for non-integer ids.
      ValueError: from ``apply``, for ids outside ``[0, num_embeddings)`` when
        they are concrete. Under ``jit`` out-of-range ids give NaN rows (never
        a silently clipped, valid-looking vector).

    Example:
      >>> import jax, jax.numpy as jnp, jnn
      >>> emb = jnn.Embedding(10, 4)
      >>> out_shape, params = emb.init(jax.random.key(0), (-1, 7))
      >>> out_shape, params["embedding"].shape
      ((-1, 7, 4), (10, 4))
      >>> emb.apply(params, jnp.array([[1, 2, 3]])).shape
      (1, 3, 4)
    """
    num_embeddings = check_positive_int("Embedding", "num_embeddings", num_embeddings)
    features = check_positive_int("Embedding", "features", features)
    name = f"Embedding({num_embeddings}, {features})"

    def init(key: PRNGKey, input_shape: Shape) -> tuple[Shape, Params]:
        shape = normalize_shape(name, input_shape)
        table_shape = (num_embeddings, features)
        table = init_param(name, "embedding", embedding_init, key, table_shape, dtype)
        return (*shape, features), {"embedding": table}

    def apply(params: Params, x: Array, *, key: PRNGKey | None = None, train: bool = False):
        del key, train
        ids = check_numeric(name, x, "ids")
        if not jnp.issubdtype(ids.dtype, jnp.integer):
            raise TypeError(
                f"{name}: expected integer ids, got dtype {ids.dtype} with shape "
                f"{tuple(ids.shape)}. Cast them, e.g. x.astype(jnp.int32)."
            )
        table = params["embedding"]
        if not isinstance(ids, jax.core.Tracer) and ids.size:
            host = np.asarray(ids)
            if host.min() < 0 or host.max() >= table.shape[0]:
                raise ValueError(
                    f"{name}: ids must be in [0, {table.shape[0]}), got values in "
                    f"[{host.min()}, {host.max()}]."
                )
        return jnp.take(table, ids, axis=0, mode="fill", fill_value=jnp.nan)

    return describe(
        Layer(init, apply),
        "embedding",
        dict(
            num_embeddings=num_embeddings,
            features=features,
            embedding_init=embedding_init,
            dtype=dtype,
        ),
    )


def PositionalEmbedding(
    max_length: int,
    *,
    embedding_init: Initializer = _NORMAL_002,
    dtype: jnp.dtype = jnp.float32,
) -> Layer:
    """Add a learned vector per position: ``(..., T, D) -> (..., T, D)``, ``T <= max_length``.

    Args:
      max_length: the longest sequence the table covers.
      embedding_init: initializer of the ``(max_length, D)`` table.
      dtype: dtype of the table.

    Returns:
      A :class:`Layer` with params ``{"embedding": (max_length, D)}``.

    Raises:
      ValueError: if the sequence is longer than ``max_length`` or the feature
        size differs from the table's.

    Example:
      >>> import jax, jax.numpy as jnp, jnn
      >>> model = jnn.serial(jnn.Embedding(10, 8), jnn.PositionalEmbedding(16))
      >>> out_shape, params = model.init(jax.random.key(0), (-1, 12))
      >>> out_shape
      (-1, 12, 8)
    """
    max_length = check_positive_int("PositionalEmbedding", "max_length", max_length)
    name = f"PositionalEmbedding({max_length})"

    def check(shape: tuple, features: int | None = None) -> None:
        if len(shape) < 2 or shape[-2] > max_length or (features and shape[-1] != features):
            raise ValueError(
                f"{name}: expected input of shape (..., T, {features or 'D'}) with "
                f"T <= {max_length}, got {shape}."
            )

    def init(key: PRNGKey, input_shape: Shape) -> tuple[Shape, Params]:
        shape = normalize_shape(name, input_shape)
        features = feature_dim(name, shape, min_rank=2)
        check(shape)
        table = init_param(name, "embedding", embedding_init, key, (max_length, features), dtype)
        return shape, {"embedding": table}

    def apply(params: Params, x: Array, *, key: PRNGKey | None = None, train: bool = False):
        del key, train
        x = check_inexact(name, x)
        table = params["embedding"]
        check(tuple(x.shape), table.shape[1])
        pos = table[: x.shape[-2]].astype(x.dtype)
        return x + pos.reshape((1,) * (x.ndim - 2) + pos.shape)

    return describe(
        Layer(init, apply),
        "positional_embedding",
        dict(
            max_length=max_length,
            embedding_init=embedding_init,
            dtype=dtype,
        ),
    )
