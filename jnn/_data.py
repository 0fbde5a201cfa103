"""Eager validation of user data, raised before anything is traced (private)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jnn._typing import Array


def as_host_array(where: str, what: str, value: Any, *, allow_int: bool = True) -> np.ndarray:
    """``value`` as a numeric numpy array, with clear errors for anything else."""
    if value is None:
        raise TypeError(f"{where}: {what} is None; expected a numeric array.")
    try:
        arr = np.asarray(value)
    except Exception as err:  # ragged lists, exotic objects
        raise TypeError(f"{where}: {what} could not be converted to an array: {err}") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(
            f"{where}: {what} must be numeric, got dtype {arr.dtype}"
            + (" (strings: encode them as numbers first)." if arr.dtype.kind in "USO" else ".")
        )
    if not allow_int and arr.dtype.kind != "f":
        raise TypeError(f"{where}: {what} must be floating point, got {arr.dtype}.")
    if arr.ndim == 0:
        raise ValueError(f"{where}: {what} must have a leading example axis, got a scalar.")
    if arr.shape[0] == 0:
        raise ValueError(f"{where}: {what} is empty (shape {arr.shape}); nothing to do.")
    # A sum is NaN/Inf when any element is (and only then, short of an overflow): checked
    # with no temporary as large as the data; the elementwise search runs only if it is not.
    if arr.dtype.kind == "f" and not np.isfinite(np.sum(arr, dtype=np.float64)):
        bad = ~np.isfinite(arr)
        if bad.any():
            rows = np.unique(np.nonzero(bad.reshape(arr.shape[0], -1))[0])
            raise ValueError(
                f"{where}: {what} holds {int(bad.sum())} NaN/Inf value(s), in {rows.size} "
                f"example(s) (first at index {int(rows[0])}). Clean or impute them first."
            )
    if arr.dtype == np.float64 and not jax.config.read("jax_enable_x64"):
        arr = arr.astype(np.float32)
    return arr


def check_xy(where: str, data: Any, *, weights: Any = None) -> tuple[np.ndarray, ...]:
    """Validate ``data=(x, y)`` and optional per-example ``weights``."""
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        got = (
            f"a {type(data).__name__} of length {len(data)}"
            if isinstance(data, (tuple, list))
            else type(data).__name__
        )
        raise TypeError(f"{where}: data must be a pair (x, y) of arrays, got {got}.")
    x = as_host_array(where, "x", data[0])
    y = as_host_array(where, "y", data[1])
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{where}: x and y must hold the same number of examples, got x with "
            f"{x.shape[0]} (shape {x.shape}) and y with {y.shape[0]} (shape {y.shape})."
        )
    out = [x, y]
    if weights is not None:
        w = as_host_array(where, "sample_weight", weights).astype(np.float32)
        if w.shape != (x.shape[0],):
            raise ValueError(
                f"{where}: sample_weight must have shape ({x.shape[0]},), one weight per "
                f"example, got {w.shape}."
            )
        if (w < 0).any():
            raise ValueError(f"{where}: sample_weight must be non-negative.")
        out.append(w)
    else:
        out.append(np.ones((x.shape[0],), np.float32))
    return tuple(out)


def check_positive_int(where: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{where}: {name} must be a positive int, got {value!r}.")
    return int(value)


def check_key(where: str, key: Any) -> Array:
    """Accept a typed key (``jax.random.key``) or a raw ``uint32[2]`` key."""
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(
                f"{where}: expected a single PRNG key, got a batch of shape {key.shape}."
            )
        return key
    if isinstance(key, (jax.Array, np.ndarray)) and key.dtype == np.uint32:
        if key.shape == (2,):
            return jnp.asarray(key)
        if key.ndim > 1 and key.shape[-1] == 2:
            raise ValueError(
                f"{where}: expected a single PRNG key, got a batch of raw keys of shape "
                f"{key.shape}; pass one (e.g. keys[0]) or jax.vmap over them."
            )
    raise TypeError(
        f"{where}: key must be a PRNG key such as jax.random.key(0), got "
        f"{type(key).__name__}"
        + (f" with dtype {key.dtype} and shape {key.shape}" if hasattr(key, "dtype") else "")
        + "."
    )


def check_labels(where: str, loss_name: str | None, y: np.ndarray, out_shape: tuple) -> None:
    """Label ranges the loss needs, checked on the host before compiling."""
    if loss_name in ("bce", "bce_with_logits", "binary_crossentropy") and (
        y.min() < 0 or y.max() > 1
    ):
        raise ValueError(
            f"{where}: {loss_name} needs labels in [0, 1], got values in [{y.min()}, {y.max()}]."
        )
    if (
        loss_name
        in (
            "cross_entropy",
            "softmax_cross_entropy",
            "categorical_crossentropy",
            "sparse_categorical_crossentropy",
        )
        and y.dtype.kind in "iu"
    ):
        num_classes = out_shape[-1]
        if y.shape[1:] == tuple(out_shape[1:-1]) and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(
                f"{where}: integer labels must be in [0, {num_classes}) for a model with "
                f"{num_classes} outputs, got values in [{y.min()}, {y.max()}]."
            )
