"""Checks of the chapter *Notation and conventions*: Hadamard/diag, softmax shift invariance,
``vec`` of a matrix product in both orders, mixed product and transpose of a Kronecker product.

Symbolic checks build fully symbolic matrices of small non-square sizes (a transposed index cannot
hide) and prove the difference of the two sides is the zero matrix after expansion. Numeric checks
compare the library's helpers at sizes >= 50. Each helper takes the implementation under test as a
parameter, so a test can show that a wrong implementation is caught.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import sympy as sp

from .. import notation
from ..checks import assert_close
from .legacy_ledger import Claim, Evidence

Kron = Callable[[np.ndarray, np.ndarray], np.ndarray]


def symbolic_matrix(name: str, rows: int, cols: int) -> sp.Matrix:
    """A matrix of independent real symbols ``name_{i,j}``."""
    return sp.Matrix(rows, cols, lambda i, j: sp.Symbol(f"{name}_{i}{j}", real=True))


def row_vec(M: sp.Matrix) -> sp.Matrix:
    """Row-major ``vec`` of a SymPy matrix (SymPy's own ``Matrix.vec()`` is column-major)."""
    return M.T.vec()


def is_zero_matrix(M: sp.Matrix) -> bool:
    return all(sp.expand(e) == 0 for e in M)


# ---- Hadamard product and diag ---------------------------------------------------------------

def check_hadamard_symbolic(n: int = 4) -> Evidence:
    u, v, w = (symbolic_matrix(s, n, 1) for s in "uvw")
    had = u.multiply_elementwise(v)
    assert is_zero_matrix(sp.diag(*u) * v - had), "diag(u) v != u∘v"
    assert sp.expand((had.T * w)[0] - (u.T * sp.diag(*v) * w)[0]) == 0, "<u∘v, w> != u^T diag(v) w"
    return Evidence("symbolic", f"n={n}", 0.0)


def check_hadamard_numeric(n: int = 500, seed: int = 0) -> Evidence:
    rng = np.random.default_rng(seed)
    u, v, w = rng.standard_normal((3, n))
    r1 = assert_close(np.diag(u) @ v, u * v, rtol=1e-15, name="diag(u) v = u∘v")
    r2 = assert_close(np.dot(u * v, w), u @ np.diag(v) @ w, rtol=1e-12, name="<u∘v,w> = u^T diag(v) w")
    return Evidence("numeric", f"n={n}", max(r1.worst_relative_error, r2.worst_relative_error))


# ---- softmax -----------------------------------------------------------------------------------

def check_softmax_shift_symbolic(n: int = 4) -> Evidence:
    z = symbolic_matrix("z", n, 1)
    t = sp.Symbol("t", real=True)
    soft = lambda y: sp.Matrix([sp.exp(e) for e in y]) / sum(sp.exp(e) for e in y)  # noqa: E731
    diff = soft(z + t * sp.ones(n, 1)) - soft(z)
    # exp(z_i + t) = exp(t) exp(z_i): expand the exponentials, then the common factor cancels.
    assert all(sp.cancel(sp.expand(e, power_exp=True)) == 0 for e in diff), "softmax is not shift invariant"
    return Evidence("symbolic", f"n={n}", 0.0)


def check_softmax_numeric(n: int = 1000, seed: int = 0, softmax: Callable = notation.softmax) -> Evidence:
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(n)
    naive = np.exp(z) / np.exp(z).sum()
    r1 = assert_close(softmax(z), naive, rtol=1e-13, name="stable softmax vs naive formula")
    big = rng.uniform(-1000.0, 1000.0, n)  # exp(big) overflows: only the shifted form survives
    p = softmax(big)
    assert np.all(np.isfinite(p)) and abs(p.sum() - 1.0) < 1e-12, "softmax overflowed at |z| ~ 1000"
    r2 = assert_close(softmax(big + 123.0), p, rtol=1e-12, name="softmax(z + t 1) = softmax(z)")
    return Evidence("numeric", f"n={n}, |z| up to {np.abs(big).max():.0f}",
                    max(r1.worst_relative_error, r2.worst_relative_error))


# ---- vec and the Kronecker product -------------------------------------------------------------
# Sizes: A is m×p, X is p×q, B is k×q (row-major) — all different, so a transposed index shows.

def vec_kron_row_residual(m: int = 2, p: int = 3, q: int = 4, k: int = 5, kron: Kron | None = None) -> sp.Matrix:
    """``vec_r(A X Bᵀ) − (A ⊗ B) vec_r(X)`` on symbolic matrices (zero iff the identity holds)."""
    kron = kron or sp.kronecker_product
    A, X, B = symbolic_matrix("a", m, p), symbolic_matrix("x", p, q), symbolic_matrix("b", k, q)
    return row_vec(A * X * B.T) - kron(A, B) * row_vec(X)


def vec_kron_column_residual(m: int = 2, p: int = 3, q: int = 4, k: int = 5, kron: Kron | None = None) -> sp.Matrix:
    """``vec_c(A X B) − (Bᵀ ⊗ A) vec_c(X)`` on symbolic matrices (B is q×k here)."""
    kron = kron or sp.kronecker_product
    A, X, B = symbolic_matrix("a", m, p), symbolic_matrix("x", p, q), symbolic_matrix("b", q, k)
    return (A * X * B).vec() - kron(B.T, A) * X.vec()


def check_vec_row_symbolic(kron: Kron | None = None) -> Evidence:
    assert is_zero_matrix(vec_kron_row_residual(kron=kron)), "vec_r(A X B^T) != (A⊗B) vec_r(X)"
    return Evidence("symbolic", "A 2×3, X 3×4, B 5×4", 0.0)


def check_vec_column_symbolic(kron: Kron | None = None) -> Evidence:
    assert is_zero_matrix(vec_kron_column_residual(kron=kron)), "vec_c(A X B) != (B^T⊗A) vec_c(X)"
    return Evidence("symbolic", "A 2×3, X 3×4, B 4×5", 0.0)


def check_vec_row_numeric(seed: int = 0, kron: Kron = notation.kron) -> Evidence:
    rng = np.random.default_rng(seed)
    A, X, B = rng.standard_normal((50, 60)), rng.standard_normal((60, 55)), rng.standard_normal((52, 55))
    lhs = notation.vec(A @ X @ B.T, "row")
    r = assert_close(kron(A, B) @ notation.vec(X, "row"), lhs, rtol=1e-12, name="row-major vec identity")
    return Evidence("numeric", "A 50×60, X 60×55, B 52×55", r.worst_relative_error)


def check_vec_column_numeric(seed: int = 0, kron: Kron = notation.kron) -> Evidence:
    rng = np.random.default_rng(seed)
    A, X, B = rng.standard_normal((50, 60)), rng.standard_normal((60, 55)), rng.standard_normal((55, 52))
    lhs = notation.vec(A @ X @ B, "column")
    r = assert_close(kron(B.T, A) @ notation.vec(X, "column"), lhs, rtol=1e-12, name="column-major vec identity")
    return Evidence("numeric", "A 50×60, X 60×55, B 55×52", r.worst_relative_error)


def check_kron_mixed_product_symbolic() -> Evidence:
    A, C = symbolic_matrix("a", 2, 3), symbolic_matrix("c", 3, 2)
    B, D = symbolic_matrix("b", 3, 2), symbolic_matrix("d", 2, 4)
    K = sp.kronecker_product
    assert is_zero_matrix(K(A, B) * K(C, D) - K(A * C, B * D)), "(A⊗B)(C⊗D) != (AC)⊗(BD)"
    return Evidence("symbolic", "A 2×3, C 3×2, B 3×2, D 2×4", 0.0)


def check_kron_mixed_product_numeric(seed: int = 0, kron: Kron = notation.kron) -> Evidence:
    rng = np.random.default_rng(seed)
    A, C = rng.standard_normal((50, 6)), rng.standard_normal((6, 51))
    B, D = rng.standard_normal((7, 52)), rng.standard_normal((52, 8))
    r = assert_close(kron(A, B) @ kron(C, D), kron(A @ C, B @ D), rtol=1e-12, name="mixed product")
    return Evidence("numeric", "A 50×6, C 6×51, B 7×52, D 52×8", r.worst_relative_error)


def check_kron_transpose_symbolic() -> Evidence:
    A, B = symbolic_matrix("a", 2, 3), symbolic_matrix("b", 4, 2)
    K = sp.kronecker_product
    assert is_zero_matrix(K(A, B).T - K(A.T, B.T)), "(A⊗B)^T != A^T⊗B^T"
    return Evidence("symbolic", "A 2×3, B 4×2", 0.0)


def check_kron_transpose_numeric(seed: int = 0, kron: Kron = notation.kron) -> Evidence:
    rng = np.random.default_rng(seed)
    A, B = rng.standard_normal((50, 7)), rng.standard_normal((9, 53))
    r = assert_close(kron(A, B).T, kron(A.T, B.T), rtol=0.0, name="(A⊗B)^T = A^T⊗B^T")
    return Evidence("numeric", "A 50×7, B 9×53", r.worst_relative_error)


CHAPTER = "book/notation"
CLAIMS = [
    Claim("lem-hadamard-diag", CHAPTER, "Hadamard product and diag", "ours",
          (check_hadamard_symbolic, check_hadamard_numeric)),
    Claim("lem-softmax-shift", CHAPTER, "Shift invariance of softmax (stable evaluation)", "ours",
          (check_softmax_shift_symbolic, check_softmax_numeric)),
    Claim("lem-vec-row", CHAPTER, "Row-major vec of a matrix product", "ours (GSX23 uses the tensor trick)",
          (check_vec_row_symbolic, check_vec_row_numeric)),
    Claim("lem-vec-column", CHAPTER, "Column-major vec of a matrix product", "ours (standard identity)",
          (check_vec_column_symbolic, check_vec_column_numeric)),
    Claim("lem-kron-mixed", CHAPTER, "Mixed-product property", "ours (standard identity)",
          (check_kron_mixed_product_symbolic, check_kron_mixed_product_numeric)),
    Claim("lem-kron-transpose", CHAPTER, "Transpose of a Kronecker product", "ours (standard identity)",
          (check_kron_transpose_symbolic, check_kron_transpose_numeric)),
]
