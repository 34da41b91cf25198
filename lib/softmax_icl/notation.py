"""Notation helpers: stable softmax, log-sum-exp, ``vec``/``unvec`` in both orders, Kronecker product.

Derived in :doc:`/book/notation`.
Row-major ``vec`` (NumPy's C order) stacks the rows: ``vec(A X B^T) = (A ⊗ B) vec(X)``.
Column-major ``vec`` (SymPy's ``Matrix.vec()``) stacks the columns: ``vec(A X B) = (B^T ⊗ A) vec(X)``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from ._validate import as_array, as_matrix, as_vector

__all__ = ["Order", "log_sum_exp", "softmax", "softmax_last_axis", "vec", "unvec", "kron"]

Order = Literal["row", "column"]
_NUMPY_ORDER = {"row": "C", "column": "F"}


def _numpy_order(order: str) -> str:
    if not isinstance(order, str) or order not in _NUMPY_ORDER:
        raise ValueError(f"order must be 'row' (NumPy C order) or 'column' (Fortran order), got {order!r}")
    return _NUMPY_ORDER[order]


def log_sum_exp(z: np.ndarray) -> float:
    """``log Σ_i exp(z_i)`` computed as ``m + log Σ_i exp(z_i − m)`` with ``m = max z`` (no overflow).

    Derived in :doc:`/book/notation`.
    """
    z = as_vector(z, "z")
    m = float(np.max(z))
    return m + float(np.log(np.sum(np.exp(z - m))))


def softmax(z: np.ndarray) -> np.ndarray:
    """``exp(z) / ⟨exp(z), 1⟩`` of a vector, or of each row of a matrix, shifted by the max first.

    Derived in :doc:`/book/notation`.
    """
    arr = np.asarray(z)
    z = as_array(z, "z", ndim=arr.ndim if arr.ndim in (1, 2) else 1)
    return softmax_last_axis(z)


def softmax_last_axis(z: np.ndarray) -> np.ndarray:
    """Kernel of :func:`softmax` over the last axis of a float array of any shape (one cheap check:
    a non-empty, finite, real floating array).

    Derived in :doc:`/book/notation`.
    """
    if not isinstance(z, np.ndarray) or not np.issubdtype(z.dtype, np.floating) or z.ndim == 0 or z.size == 0:
        raise TypeError(f"z must be a non-empty floating-point numpy array with at least one axis, got "
                        f"{type(z).__name__} {getattr(z, 'dtype', '')} {getattr(z, 'shape', '')}")
    if not np.all(np.isfinite(z)):
        raise ValueError("z must be finite")
    e = np.exp(z - np.max(z, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def vec(X: np.ndarray, order: Order = "row") -> np.ndarray:
    """Stack the rows (``order='row'``) or the columns (``order='column'``) of a matrix into a vector.

    Derived in :doc:`/book/notation`.
    """
    numpy_order = _numpy_order(order)
    X = as_matrix(X, "X")
    return X.reshape(-1, order=numpy_order)


def unvec(v: np.ndarray, shape: tuple[int, int], order: Order = "row") -> np.ndarray:
    """Inverse of :func:`vec`: the matrix of the given shape whose ``vec`` is ``v``.

    Derived in :doc:`/book/notation`.
    """
    if (not isinstance(shape, tuple | list) or len(shape) != 2
            or any(isinstance(s, bool) or not isinstance(s, int | np.integer) or s < 1 for s in shape)):
        raise ValueError(f"shape must be two positive integers, got {shape!r}")
    numpy_order = _numpy_order(order)
    v = as_vector(v, "v", length=int(shape[0]) * int(shape[1]))
    return v.reshape(tuple(int(s) for s in shape), order=numpy_order)


def kron(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Kronecker product: block ``(i, j)`` of ``A ⊗ B`` is ``A[i, j] * B``.

    Derived in :doc:`/book/notation`.
    """
    A = as_matrix(A, "A")
    B = as_matrix(B, "B")
    if A.size * B.size > 2**28:
        raise ValueError(f"A ⊗ B would hold {A.size * B.size:.3g} entries, more than the limit {2**28:.3g}")
    return (A[:, None, :, None] * B[None, :, None, :]).reshape(A.shape[0] * B.shape[0], A.shape[1] * B.shape[1])
