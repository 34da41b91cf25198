"""Input validation at the library's public boundary.

Every public function passes its array arguments through these helpers, so bad input raises a
``TypeError`` or ``ValueError`` that names the argument and the expected shape, never a raw
broadcasting trace or a silently truncated result.
"""

from __future__ import annotations

import numpy as np

__all__ = ["as_array", "as_matrix", "as_vector", "as_positive_int", "as_nonnegative_float", "check_finite",
           "as_nonnegative_int", "as_bool", "check_size"]


def _describe(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("any" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def as_array(value: object, name: str, *, ndim: int, shape: tuple[int | None, ...] | None = None,
             finite: bool = True) -> np.ndarray:
    """Return ``value`` as a finite float64 array with ``ndim`` axes (and ``shape`` if given).

    Raises ``TypeError`` for non-floating dtypes (integer, bool, complex, object: they would
    truncate or drop information) and ``ValueError`` for a wrong shape or a non-finite entry.
    ``finite=False`` leaves the finiteness check to the caller (:func:`check_finite`), which can
    often prove it from a product it computes anyway.
    """
    if shape is not None and len(shape) != ndim:
        raise AssertionError("shape and ndim disagree")
    expected = _describe(shape if shape is not None else (None,) * ndim)
    try:
        arr = np.asarray(value)
    except Exception as exc:  # e.g. ragged nested lists
        raise ValueError(f"{name} must be an array of shape {expected}; could not convert it: {exc}") from exc
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(
            f"{name} must be a real floating-point array (float64), got dtype {arr.dtype}; "
            f"convert it explicitly, e.g. np.asarray({name}, dtype=float)"
        )
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D with shape {expected}, got shape {arr.shape}")
    if shape is not None:
        for axis, (got, want) in enumerate(zip(arr.shape, shape, strict=True)):
            if want is not None and got != want:
                raise ValueError(
                    f"{name} must have shape {expected}, got {arr.shape} (axis {axis}: {got} != {want})"
                )
    if any(s == 0 for s in arr.shape):
        raise ValueError(f"{name} must be non-empty, got shape {arr.shape}")
    arr = arr.astype(np.float64, copy=False)
    if finite:
        check_finite(arr, name)
    return arr


def check_finite(arr: np.ndarray, name: str) -> None:
    """Raise ``ValueError`` naming the first non-finite entry of ``arr``."""
    # A finite sum proves every entry finite (an inf or nan entry makes the sum inf or nan); only
    # when the sum is not finite (or overflows) is the entrywise scan needed to locate the culprit.
    if not np.isfinite(arr.sum()) and not np.all(np.isfinite(arr)):
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        raise ValueError(f"{name} must be finite; entry {bad} is {arr[bad]}")


def as_matrix(value: object, name: str, *, rows: int | None = None, cols: int | None = None,
              finite: bool = True) -> np.ndarray:
    """A finite float64 matrix of shape ``(rows, cols)`` (``None`` = any)."""
    return as_array(value, name, ndim=2, shape=(rows, cols), finite=finite)


def as_vector(value: object, name: str, *, length: int | None = None) -> np.ndarray:
    """A finite float64 vector of the given length (``None`` = any)."""
    return as_array(value, name, ndim=1, shape=(length,))


def as_positive_int(value: object, name: str) -> int:
    """A positive Python int (bools and floats are rejected)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def as_nonnegative_float(value: object, name: str) -> float:
    """A finite non-negative Python float."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    out = float(value)
    if not np.isfinite(out) or out < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {out}")
    return out


def as_nonnegative_int(value: object, name: str) -> int:
    """A non-negative Python int (bools, floats and strings are rejected)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return int(value)


def as_bool(value: object, name: str) -> bool:
    """A real bool (no truthy strings or numbers)."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be true or false, got {type(value).__name__} {value!r}")
    return bool(value)


def check_size(count: int, limit: int, what: str) -> None:
    """Refuse an allocation of ``count`` elements above ``limit``, before it is attempted."""
    if count > limit:
        raise ValueError(f"{what} would hold {count:.3g} elements, more than the limit {limit:.3g}")
