"""Host-side checks of user input, raised before anything is traced (documented internal module).

The one place for jnn's input checks, used by the layers, losses, training,
experiments, checkpoints, export and the CLI, so that one mistake gets one
message everywhere:

- :func:`check_int`, :func:`check_positive_int`, :func:`check_number`: sizes,
  counts and rates
  (numpy scalars accepted, ``bool`` refused);
- :func:`as_array`: THE array coercer (one message for non-numeric input);
  :func:`as_host_array` adds what data for ``fit``/``predict`` needs (an
  example axis, not empty, finite, inside float32's range);
- :func:`check_finite`: NaN/Inf/overflow, naming the example and the column;
- :func:`check_size`: a parameter or activation too large for the device (or
  for int64), named with its shape and bytes, before XLA tries to allocate it;
- :func:`close_match`: the ``Did you mean`` suffix of unknown-name errors;
- :func:`check_xy`, :func:`check_key`, :func:`check_labels`.

Layer authors: call :func:`jnn.layers._base.init_param` to create a
parameter (it runs :func:`check_size` first) and these checks for
constructor arguments.

Importing this module imports no jax (numpy and the standard library only), so
the jax-free serving path (:mod:`jnn._predictor`, ONNX files) checks inputs with
the same functions; jax is imported by the functions that need it.
"""

from __future__ import annotations

import difflib
import functools
import math
import os
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from jnn._typing import Array


def _kind(dtype: Any) -> str:
    """``"b"``, ``"i"`` (signed or unsigned), ``"f"`` (also bfloat16 and other ml_dtypes
    floats), ``"c"``, or ``""`` for anything else (strings, objects, PRNG keys)."""
    try:
        dt = np.dtype(dtype)
    except TypeError:  # jax's extended dtypes (PRNG keys)
        return ""
    if dt.kind in "biufc":
        return {"u": "i"}.get(dt.kind, dt.kind)
    return "f" if _ml_finfo(dt) is not None else ""


def _ml_finfo(dt: np.dtype) -> Any:
    """``ml_dtypes.finfo`` of a float type numpy does not know (bfloat16, float8), else None."""
    if dt.kind != "V":
        return None
    try:
        import ml_dtypes

        return ml_dtypes.finfo(dt)
    except (ImportError, TypeError, ValueError):
        return None


def _finfo_max(dtype: Any) -> float:
    dt = np.dtype(dtype)
    info = _ml_finfo(dt)
    return float((info if info is not None else np.finfo(dt)).max)


_STRING_HINT = " (strings: encode them as numbers first)"


def close_match(name: str, options: Iterable[str]) -> str:
    """A ``" Did you mean 'x'?"`` suffix for error messages, or ``""``."""
    match = difflib.get_close_matches(str(name), [str(o) for o in options], n=1)
    return f" Did you mean {match[0]!r}?" if match else ""


def is_int(value: Any) -> bool:
    """A Python or numpy integer, not a bool (``True`` is no size)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_number(value: Any) -> bool:
    """A Python or numpy int or float, not a bool."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def check_int(
    where: str,
    name: str,
    value: Any,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    hint: str = "",
) -> int:
    """``value`` as a Python int (``>= minimum`` if given); numpy integers accepted, bools refused.

    Args:
      where: the caller, e.g. ``"Dense"`` or ``"fit"``, opening the message.
      name: the argument's name.
      value: what the user passed.
      minimum: the smallest value allowed, or None.
      maximum: the largest value allowed, or None.
      hint: appended to what is expected, e.g. ``" or None"``.

    Returns:
      ``int(value)``.

    Raises:
      ValueError: for anything else (a bool, a float, a string, a smaller int).
    """
    if (
        not is_int(value)
        or (minimum is not None and value < minimum)
        or (maximum is not None and value > maximum)
    ):
        expected = {None: "an int", 1: "a positive int"}.get(minimum, f"an int >= {minimum}")
        if maximum is not None:
            expected = (
                f"an int in [{minimum}, {maximum}]" if minimum not in (None, 1) else
                f"{expected} <= {maximum}"
            )  # fmt: skip
        extra = " (a bool is not a size)" if isinstance(value, (bool, np.bool_)) else ""
        raise ValueError(f"{where}: {name} must be {expected}{hint}, got {value!r}{extra}.")
    return int(value)


def check_positive_int(
    where: str, name: str, value: Any, *, maximum: int | None = None, hint: str = ""
) -> int:
    """:func:`check_int` with ``minimum=1``: sizes, counts, epochs, batch sizes."""
    return check_int(where, name, value, minimum=1, maximum=maximum, hint=hint)


def check_number(
    where: str,
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    meaning: str = "",
) -> float:
    """``value`` as a finite Python float in an interval; numpy numbers accepted, bools refused.

    Args:
      where, name: as in :func:`check_positive_int`.
      value: what the user passed.
      low, high: the bounds (None: unbounded).
      low_open, high_open: whether a bound itself is excluded.
      meaning: what the number means, put before the interval in the message.

    Raises:
      ValueError: for a bool, a non-number, NaN/Inf or a value out of range.
    """
    ok = is_number(value)
    number = float(value) if ok else math.nan
    if ok and math.isfinite(number):
        ok = (low is None or number > low or (number == low and not low_open)) and (
            high is None or number < high or (number == high and not high_open)
        )
    else:
        ok = False
    if not ok:
        if low is not None and high is not None:
            span = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        elif low is not None:
            span = f"{'>' if low_open else '>='} {low:g}" if low != 0 or not low_open else "> 0"
        elif high is not None:
            span = f"{'<' if high_open else '<='} {high:g}"
        else:
            span = "finite"
        raise ValueError(f"{where}: {name} {meaning}must be a number {span}, got {value!r}.")
    return number


def as_array(
    where: str, what: str, value: Any, *, host: bool = False, complex_ok: bool = False
) -> Any:
    """THE array coercer: ``value`` as a numeric array, or one TypeError naming ``what``.

    A ``jax.Array`` (or tracer) is returned as is unless ``host``; anything
    else goes through ``np.asarray``. Booleans, integers and floats (also
    float16 and bfloat16) are numeric; complex numbers only with
    ``complex_ok``; strings, objects and ragged lists are refused.

    Args:
      where: the caller, opening the message.
      what: the argument's name, e.g. ``"x"`` or ``"labels"``.
      value: what the user passed.
      host: return a numpy array (device arrays are copied to the host).
      complex_ok: accept complex dtypes.

    Returns:
      A ``jax.Array`` (or tracer) or a ``np.ndarray``.

    Raises:
      TypeError: for None, something not convertible, or a non-numeric dtype.
    """
    if value is None:
        raise TypeError(f"{where}: {what} is None; expected a numeric array.")
    arr: Any
    jax = sys.modules.get("jax")  # no jax imported: no jax arrays to keep
    if jax is not None and isinstance(value, jax.Array) and not host:
        arr = value
    else:
        try:
            arr = np.asarray(value)
        except Exception as err:  # ragged lists, exotic objects
            raise TypeError(
                f"{where}: {what} could not be converted to an array ({type(err).__name__}: "
                f"{err}); expected a numeric array."
            ) from None
    dtype = arr.dtype
    kind = _kind(dtype)
    if not kind or kind not in "bif" + ("c" if complex_ok else ""):
        hint = _STRING_HINT if getattr(dtype, "kind", "") in ("U", "S", "O") else ""
        raise TypeError(
            f"{where}: {what} must be numeric (bool, int or float), got dtype {dtype}{hint}."
        )
    return arr


def check_finite(where: str, what: str, arr: np.ndarray, *, cast_to: Any = None) -> None:
    """Refuse NaN/Inf in a host array, and values that casting to ``cast_to`` would make Inf.

    The message gives the count and the first bad example and column, e.g.
    ``x holds 1 value(s) beyond float32's range ... (first at example 0, column 3)``.
    Clean data costs one sum and one min/max, with no temporary as large as
    the data; the elementwise search runs only when something is wrong.

    Args:
      where, what: the caller and the argument, for the message.
      arr: a numeric numpy array with a leading example axis.
      cast_to: the floating dtype ``arr`` is about to be cast to, if any.

    Raises:
      ValueError: naming the count, the first example and its column.
    """
    floating = _kind(arr.dtype) == "f"
    # A sum is NaN/Inf when any element is (and only then, short of an overflow).
    if floating and not np.isfinite(np.sum(arr, dtype=np.float64)):
        bad = ~np.isfinite(arr)
        if bad.any():
            raise ValueError(
                f"{where}: {what} holds {int(bad.sum())} NaN/Inf value(s), {_first(bad)}. "
                "Clean or impute them first."
            )
    if cast_to is None or _kind(cast_to) != "f" or arr.size == 0 or _kind(arr.dtype) not in "if":
        return
    top = _finfo_max(cast_to)
    if floating and _finfo_max(arr.dtype) <= top:
        return  # the cast cannot overflow
    if max(float(arr.max()), -float(arr.min())) > top:
        big = np.abs(arr.astype(np.float64)) > top
        name = np.dtype(cast_to).name
        raise ValueError(
            f"{where}: {what} holds {int(big.sum())} value(s) beyond {name}'s range "
            f"(|x| > {top:.4g}), {_first(big)}; as {name} they would become Inf. Rescale them"
            + (
                " (or enable float64 with jax.config.update('jax_enable_x64', True))."
                if name == "float32"
                else "."
            )
        )


def _first(mask: np.ndarray) -> str:
    """Where the first True of ``mask`` is: ``"in 2 example(s) (first at example 5, column 3)"``."""
    rows = np.unique(np.nonzero(mask.reshape(mask.shape[0], -1))[0]) if mask.ndim else [0]
    index = tuple(int(i) for i in np.argwhere(mask)[0]) if mask.ndim else ()
    if len(index) == 2:
        at = f"example {index[0]}, column {index[1]}"
    elif len(index) == 1:
        at = f"example {index[0]}"
    else:
        at = f"example {index[0]}, position {index[1:]}" if index else "the scalar"
    return f"in {len(rows)} example(s) (first at {at})"


def as_host_array(where: str, what: str, value: Any, *, allow_int: bool = True) -> np.ndarray:
    """``value`` as a numeric numpy array of examples: a leading axis, not empty, finite.

    float64 is cast to float32 unless x64 is on (values beyond float32's range
    are refused, not turned into Inf).
    """
    arr = as_array(where, what, value, host=True)
    if not allow_int and _kind(arr.dtype) != "f":
        raise TypeError(f"{where}: {what} must be floating point, got {arr.dtype}.")
    if arr.ndim == 0:
        raise ValueError(f"{where}: {what} must have a leading example axis, got a scalar.")
    if arr.shape[0] == 0:
        raise ValueError(f"{where}: {what} is empty (shape {arr.shape}); nothing to do.")
    import jax

    if arr.dtype == np.float64 and not jax.config.read("jax_enable_x64"):
        check_finite(where, what, arr, cast_to=np.float32)
        return arr.astype(np.float32)
    check_finite(where, what, arr)
    return arr


@functools.cache
def device_memory() -> tuple[int, str] | None:
    """``(bytes, device description)`` of the default device's memory, or None if unknown.

    Accelerators report their limit (``memory_stats()["bytes_limit"]``); a CPU
    device's memory is the machine's physical memory.
    """
    import jax

    device = jax.local_devices()[0]
    try:
        stats = device.memory_stats()
    except Exception:  # backends without memory statistics
        stats = None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), f"{device.platform} device {device.id}"
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None
    return int(total), f"this machine ({device.platform})"


def _bytes(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.4g} {unit}" if unit != "bytes" else f"{n} bytes"
        n /= 1024  # type: ignore[assignment]
    return f"{n} bytes"  # pragma: no cover


def check_size(where: str, what: str, shape: tuple[int, ...], dtype: Any = None) -> None:
    """Refuse an array XLA cannot allocate: too many elements for int64, or more than memory.

    Unknown dimensions (``-1``, the batch) are left out, so for an activation
    the check is per example. Run it before creating a parameter (see
    :func:`jnn.layers._base.init_param`): XLA aborts the interpreter on an
    element count that overflows, and reports a too-large allocation only
    later, at first use.

    Args:
      where: the layer, e.g. ``"Dense(4).init"``.
      what: the array, e.g. ``"parameter 'w'"`` or ``"input_shape"``.
      shape: its shape (Python ints; ``-1`` for unknown).
      dtype: its dtype (for the bytes); None for a shape whose dtype is not
        known yet (then every element counts as at least one byte).

    Raises:
      ValueError: naming ``where``, ``what``, the shape and the bytes.
    """
    count = math.prod(int(d) for d in shape if d != -1)
    per = " per example" if -1 in shape else ""
    if dtype is None:
        nbytes, kind = count, f"holds {count} elements{per} (at least {_bytes(count)})"
    else:
        nbytes = count * np.dtype(dtype).itemsize
        kind = f"{np.dtype(dtype)} needs {nbytes} bytes ({_bytes(nbytes)}){per}"
    if count >= 2**63:
        raise ValueError(
            f"{where}: {what} of shape {tuple(shape)} has {count} elements{per}, more than "
            "XLA can index (2**63 - 1). Use smaller sizes."
        )
    memory = device_memory()
    if memory is not None and nbytes > memory[0]:
        raise ValueError(
            f"{where}: {what} of shape {tuple(shape)} {kind}, more than the "
            f"{_bytes(memory[0])} of memory of {memory[1]}. Use smaller sizes."
        )


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


def check_key(where: str, key: Any) -> Array:
    """Accept a typed key (``jax.random.key``) or a raw ``uint32[2]`` key."""
    import jax
    import jax.numpy as jnp

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
