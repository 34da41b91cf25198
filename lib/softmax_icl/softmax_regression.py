"""Single softmax regression: value, gradient, Hessian and Hessian-vector product of three losses.

Derived in :doc:`/book/softmax_regression`. For data ``A ∈ R^{n×d}``, target ``b ∈ R^n`` and weights
``x ∈ R^d``::

    α(x) = ⟨exp(Ax), 1⟩,   f(x) = exp(Ax) / α(x),   c(x) = f(x) − b,   J = diag(f) − f fᵀ
    normalized   L(x)     = ½‖f(x) − b‖²
    rescaled     L_res(x) = ½‖exp(Ax) − ⟨exp(Ax), 1⟩ b‖²  (= α(x)² L(x))
    regularized  L_reg(x) = L(x) + ½‖diag(w) A x‖²

Every Hessian is ``Aᵀ W A`` with an ``n×n`` weight matrix ``W`` that is diagonal plus rank ≤ 2
(:class:`DiagonalPlusLowRank`): it costs one weighted Gram product ``Aᵀ diag(·) A`` and rank-2
corrections; ``W`` is never formed. Everything is evaluated through ``f`` (a shifted softmax), so
nothing overflows for ``‖Ax‖_∞`` up to 1000; the rescaled loss is ``α²`` times a bounded quantity,
and where ``α²`` itself is beyond float64 its functions raise ``OverflowError`` (use
:func:`log_rescaled_loss` there).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validate import as_matrix, as_vector

__all__ = [
    "DiagonalPlusLowRank",
    "log_alpha", "alpha", "alpha_gradient",
    "softmax_prediction", "softmax_jacobian", "softmax_jacobian_product", "softmax_jacobian_weights",
    "softmax_prediction_hessian", "softmax_prediction_second_derivative",
    "normalized_residual", "normalized_loss", "normalized_gradient", "softmax_curvature_weights",
    "normalized_hessian_weights", "normalized_hessian", "normalized_hvp",
    "rescaled_loss", "log_rescaled_loss", "rescaled_gradient", "rescaled_hessian_weights",
    "rescaled_hessian", "rescaled_hvp",
    "regularized_loss", "regularized_gradient", "regularized_hessian_weights", "regularized_hessian",
    "regularized_hvp", "regularization_threshold",
]

_LOG_MAX = float(np.log(np.finfo(np.float64).max))


# ---- the weight matrices: diagonal plus low rank ---------------------------------------------

@dataclass(frozen=True)
class DiagonalPlusLowRank:
    """``W = diag(diagonal) + U C Uᵀ`` (``U = factors`` n×k, ``C = core`` k×k symmetric), never formed.

    Derived in :doc:`/book/softmax_regression`.
    """

    diagonal: np.ndarray
    factors: np.ndarray
    core: np.ndarray

    @property
    def size(self) -> int:
        return int(self.diagonal.shape[0])

    def matvec(self, v: np.ndarray) -> np.ndarray:
        """``W v`` in O(n k)."""
        return self._matvec(as_vector(v, "v", length=self.size))

    def gram(self, A: np.ndarray) -> np.ndarray:
        """``Aᵀ W A``: one weighted Gram product ``Aᵀ diag(·) A`` plus a rank-k correction; symmetric."""
        return self._gram(as_matrix(A, "A", rows=self.size))

    def sandwich(self, A: np.ndarray, v: np.ndarray) -> np.ndarray:
        """``Aᵀ W A v`` in O(n d)."""
        A = as_matrix(A, "A", rows=self.size)
        return self._sandwich(A, as_vector(v, "v", length=A.shape[1]))

    # unvalidated versions, for arguments the library has validated already
    def _matvec(self, v: np.ndarray) -> np.ndarray:
        return self.diagonal * v + self.factors @ (self.core @ (self.factors.T @ v))

    def _sandwich(self, A: np.ndarray, v: np.ndarray) -> np.ndarray:
        return A.T @ self._matvec(A @ v)

    def _gram(self, A: np.ndarray) -> np.ndarray:
        # Aᵀ diag(δ) A = s (BᵀB − 2 B_mᵀB_m) with B = sqrt|δ|∘A, s the sign of the majority of the
        # entries of δ and B_m the rows of B of the other sign: a symmetric rank-k update (BLAS syrk,
        # half the flops of a general product) over n rows, plus one over the minority rows.
        delta = self.diagonal
        B = np.sqrt(np.abs(delta))[:, None] * A
        s = 1.0 if np.count_nonzero(delta > 0) >= delta.shape[0] / 2 else -1.0
        minority = np.flatnonzero(s * delta < 0)
        G = B.T @ B
        if minority.size:
            Bm = B.take(minority, axis=0)
            G -= 2.0 * (Bm.T @ Bm)
        G *= s
        AU = A.T @ self.factors
        G += AU @ self.core @ AU.T
        return 0.5 * (G + G.T)

    def plus_diagonal(self, extra: np.ndarray) -> DiagonalPlusLowRank:
        """``W + diag(extra)``."""
        extra = as_vector(extra, "extra", length=self.size)
        return DiagonalPlusLowRank(self.diagonal + extra, self.factors, self.core)

    def dense(self, max_size: int = 5000) -> np.ndarray:
        """The explicit ``n×n`` matrix: a reference for tests, refused above ``max_size``."""
        if self.size > max_size:
            raise ValueError(f"refusing to form a dense {self.size}×{self.size} weight matrix (max_size={max_size})")
        return np.diag(self.diagonal) + self.factors @ self.core @ self.factors.T


# ---- validation and the shared softmax state --------------------------------------------------

def _data(A: object, x: object) -> tuple[np.ndarray, np.ndarray]:
    A = as_matrix(A, "A")
    x = as_vector(x, "x", length=A.shape[1])
    return A, x


def _target(A: np.ndarray, b: object) -> np.ndarray:
    return as_vector(b, "b", length=A.shape[0])


def _state(A: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, float]:
    """``(f, log α)`` through the max-shifted exponential (no overflow)."""
    z = A @ x
    m = float(np.max(z))
    e = np.exp(z - m)
    s = float(np.sum(e))
    return e / s, m + float(np.log(s))


def _probability(f: object) -> np.ndarray:
    f = as_vector(f, "f")
    if np.any(f < 0) or abs(float(np.sum(f)) - 1.0) > 1e-8:
        raise ValueError(f"f must be a probability vector (entries >= 0, sum 1), got sum {float(np.sum(f))!r}")
    return f


def _times_exp(value: np.ndarray | float, log_scale: float, what: str) -> np.ndarray | float:
    """``exp(log_scale) · value`` computed as ``sign · exp(log_scale + log|value|)``; raises on overflow."""
    v = np.asarray(value, dtype=np.float64)
    if log_scale <= _LOG_MAX:
        with np.errstate(over="ignore", under="ignore"):
            direct = v * np.exp(log_scale)
        if np.all(np.isfinite(direct)):
            return float(direct) if np.ndim(value) == 0 else direct
    with np.errstate(divide="ignore"):
        log_abs = np.log(np.abs(v)) + log_scale
    if np.any(log_abs > _LOG_MAX):
        raise OverflowError(f"{what} is about e^{float(np.max(log_abs)):.0f}, beyond float64 (max e^{_LOG_MAX:.1f}); "
                            "use log_rescaled_loss, or the normalized loss, which differs by the factor α(x)²")
    out = np.sign(v) * np.exp(log_abs)
    return float(out) if np.ndim(value) == 0 else out


# ---- α and f ------------------------------------------------------------------------------------

def log_alpha(A: np.ndarray, x: np.ndarray) -> float:
    """``log α(x) = log ⟨exp(Ax), 1⟩`` by log-sum-exp. Derived in :doc:`/book/softmax_regression`."""
    A, x = _data(A, x)
    return _state(A, x)[1]


def alpha(A: np.ndarray, x: np.ndarray) -> float:
    """``α(x) = ⟨exp(Ax), 1⟩`` (OverflowError beyond float64). Derived in :doc:`/book/softmax_regression`."""
    A, x = _data(A, x)
    return float(_times_exp(1.0, _state(A, x)[1], "α(x)"))


def alpha_gradient(A: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``∇α(x) = Aᵀ exp(Ax) = α(x) Aᵀ f(x)``. Derived in :doc:`/book/softmax_regression`."""
    A, x = _data(A, x)
    f, la = _state(A, x)
    return _times_exp(A.T @ f, la, "∇α(x)")


def softmax_prediction(A: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``f(x) = α(x)⁻¹ exp(Ax)``, the softmax of ``Ax``. Derived in :doc:`/book/softmax_regression`."""
    A, x = _data(A, x)
    return _state(A, x)[0]


def softmax_jacobian_product(f: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``J v = (diag f − f fᵀ) v = f∘v − ⟨f, v⟩ f`` in O(n). Derived in :doc:`/book/softmax_regression`."""
    f = _probability(f)
    v = as_vector(v, "v", length=f.shape[0])
    return f * v - np.dot(f, v) * f


def softmax_jacobian_weights(f: np.ndarray) -> DiagonalPlusLowRank:
    """``J = diag(f) − f fᵀ`` as diagonal plus rank one. Derived in :doc:`/book/softmax_regression`."""
    f = _probability(f)
    return DiagonalPlusLowRank(f.copy(), f[:, None], np.array([[-1.0]]))


def softmax_jacobian(A: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``∂f/∂x = (diag f − f fᵀ) A`` (n×d), column ``i``: ``f∘A_{*,i} − ⟨f, A_{*,i}⟩ f``. Derived in :doc:`/book/softmax_regression`."""
    A, x = _data(A, x)
    f = _state(A, x)[0]
    return f[:, None] * A - np.outer(f, f @ A)


def softmax_prediction_second_derivative(A: np.ndarray, x: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``Σ_ij u_i v_j ∂²f/∂x_i∂x_j = p∘q∘f − ⟨f,p⟩ f∘q − ⟨f,q⟩ f∘p − ⟨f,p∘q⟩ f + 2⟨f,p⟩⟨f,q⟩ f`` with
    ``p = Au``, ``q = Av``, in O(nd). Derived in :doc:`/book/softmax_regression`."""
    A, x = _data(A, x)
    u = as_vector(u, "u", length=A.shape[1])
    v = as_vector(v, "v", length=A.shape[1])
    f = _state(A, x)[0]
    p, q = A @ u, A @ v
    fp, fq = np.dot(f, p), np.dot(f, q)
    return p * q * f - fp * f * q - fq * f * p - np.dot(f, p * q) * f + 2.0 * fp * fq * f


def softmax_prediction_hessian(A: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``∂²f/∂x_i∂x_j`` as an (n, d, d) array (entry ``[k, i, j]``), the formula of
    :func:`softmax_prediction_second_derivative` for all ``i, j``. Derived in :doc:`/book/softmax_regression`."""
    A, x = _data(A, x)
    f = _state(A, x)[0]
    m = f @ A                                  # m_i = ⟨f, A_{*,i}⟩
    fA = f[:, None] * A                        # f∘A_{*,i}
    P = np.einsum("k,ki,kj->ij", f, A, A)      # ⟨f, A_{*,i}∘A_{*,j}⟩
    return (fA[:, :, None] * A[:, None, :]
            - fA[:, None, :] * m[None, :, None] - fA[:, :, None] * m[None, None, :]
            - f[:, None, None] * P[None] + 2.0 * f[:, None, None] * np.outer(m, m)[None])


# ---- the normalized loss L = ½‖f − b‖² ------------------------------------------------------------

def normalized_residual(A: np.ndarray, x: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``c(x) = f(x) − b``. Derived in :doc:`/book/softmax_regression`."""
    A, x = _data(A, x)
    return _state(A, x)[0] - _target(A, b)


def normalized_loss(A: np.ndarray, x: np.ndarray, b: np.ndarray) -> float:
    """``L(x) = ½‖f(x) − b‖²``. Derived in :doc:`/book/softmax_regression`."""
    c = normalized_residual(A, x, b)
    return 0.5 * float(np.dot(c, c))


def _normalized_gradient(A: np.ndarray, f: np.ndarray, c: np.ndarray) -> np.ndarray:
    return A.T @ (f * c - np.dot(f, c) * f)


def normalized_gradient(A: np.ndarray, x: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``∇L(x) = Aᵀ J c = Aᵀ(f∘c − ⟨f, c⟩ f)``. Derived in :doc:`/book/softmax_regression`."""
    A, x = _data(A, x)
    b = _target(A, b)
    f = _state(A, x)[0]
    return _normalized_gradient(A, f, f - b)


def softmax_curvature_weights(f: np.ndarray, c: np.ndarray) -> DiagonalPlusLowRank:
    """``K = Σ_k c_k ∇²_z f_k = diag(f∘c) − (f∘c)fᵀ − f(f∘c)ᵀ + 2⟨f,c⟩ f fᵀ − ⟨f,c⟩ diag(f)`` (rank-2 part).
    Derived in :doc:`/book/softmax_regression`."""
    f = _probability(f)
    c = as_vector(c, "c", length=f.shape[0])
    fc = np.dot(f, c)
    return DiagonalPlusLowRank(f * c - fc * f, np.column_stack([f, f * c]),
                               np.array([[2.0 * fc, -1.0], [-1.0, 0.0]]))


def _normalized_weights(f: np.ndarray, c: np.ndarray) -> DiagonalPlusLowRank:
    # J² + K = diag(f∘f + f∘c − ⟨f,c⟩f) − g fᵀ − f gᵀ + β f fᵀ,  g = f∘(f + c),  β = ‖f‖² + 2⟨f,c⟩
    fc = np.dot(f, c)
    g = f * (f + c)
    beta = np.dot(f, f) + 2.0 * fc
    return DiagonalPlusLowRank(g - fc * f, np.column_stack([f, g]), np.array([[beta, -1.0], [-1.0, 0.0]]))


def normalized_hessian_weights(A: np.ndarray, x: np.ndarray, b: np.ndarray) -> DiagonalPlusLowRank:
    """``W = J² + K`` with ``∇²L = Aᵀ W A``: diagonal plus rank 2. Derived in :doc:`/book/softmax_regression`."""
    A, x = _data(A, x)
    b = _target(A, b)
    f = _state(A, x)[0]
    return _normalized_weights(f, f - b)


def normalized_hessian(A: np.ndarray, x: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``∇²L(x) = Aᵀ(J² + K)A``: one weighted Gram product plus rank-2 corrections. Derived in :doc:`/book/softmax_regression`."""
    A, x = _data(A, x)
    b = _target(A, b)
    f = _state(A, x)[0]
    return _normalized_weights(f, f - b)._gram(A)


def normalized_hvp(A: np.ndarray, x: np.ndarray, b: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``∇²L(x) v = Aᵀ(J² + K)(A v)`` in O(nd). Derived in :doc:`/book/softmax_regression`."""
    A, x = _data(A, x)
    b = _target(A, b)
    v = as_vector(v, "v", length=A.shape[1])
    f = _state(A, x)[0]
    return _normalized_weights(f, f - b)._sandwich(A, v)


# ---- the rescaled loss L_res = ½‖exp(Ax) − ⟨exp(Ax),1⟩ b‖² = α² L ------------------------------------

def rescaled_loss(A: np.ndarray, x: np.ndarray, b: np.ndarray) -> float:
    """``L_res(x) = ½‖exp(Ax) − ⟨exp(Ax),1⟩ b‖² = α(x)² L(x)``. Derived in :doc:`/book/softmax_regression`."""
    A, x = _data(A, x)
    b = _target(A, b)
    f, la = _state(A, x)
    c = f - b
    return float(_times_exp(0.5 * np.dot(c, c), 2.0 * la, "the rescaled loss"))


def log_rescaled_loss(A: np.ndarray, x: np.ndarray, b: np.ndarray) -> float:
    """``log L_res(x) = 2 log α(x) + log L(x)`` (finite for any ``‖Ax‖_∞``; −inf at a zero). Derived in :doc:`/book/softmax_regression`."""
    A, x = _data(A, x)
    b = _target(A, b)
    f, la = _state(A, x)
    c = f - b
    with np.errstate(divide="ignore"):
        return 2.0 * la + float(np.log(0.5 * np.dot(c, c)))


def rescaled_gradient(A: np.ndarray, x: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``∇L_res = Aᵀ(diag(u) − u bᵀ) c_res = α² Aᵀ(f∘c − ⟨b, c⟩ f)`` (``u = exp(Ax)``, ``c_res = α c``).
    Derived in :doc:`/book/softmax_regression`."""
    A, x = _data(A, x)
    b = _target(A, b)
    f, la = _state(A, x)
    c = f - b
    return _times_exp(A.T @ (f * c - np.dot(b, c) * f), 2.0 * la, "the rescaled gradient")


def _rescaled_weights_unscaled(f: np.ndarray, b: np.ndarray) -> DiagonalPlusLowRank:
    # α⁻² W_res = (diag f − f bᵀ)(diag f − b fᵀ) + diag(f∘(c − ⟨b,c⟩1))
    #           = diag(f∘f + f∘c − ⟨b,c⟩ f) − (f∘b) fᵀ − f (f∘b)ᵀ + ‖b‖² f fᵀ
    c = f - b
    return DiagonalPlusLowRank(f * f + f * c - np.dot(b, c) * f, np.column_stack([f, f * b]),
                               np.array([[np.dot(b, b), -1.0], [-1.0, 0.0]]))


def rescaled_hessian_weights(A: np.ndarray, x: np.ndarray, b: np.ndarray) -> DiagonalPlusLowRank:
    """``W_res = Mᵀ M + diag(u∘(c_res − ⟨b, c_res⟩1))``, ``M = diag(u) − b uᵀ``, ``∇²L_res = Aᵀ W_res A``.
    Derived in :doc:`/book/softmax_regression`."""
    A, x = _data(A, x)
    b = _target(A, b)
    f, la = _state(A, x)
    W = _rescaled_weights_unscaled(f, b)
    return DiagonalPlusLowRank(_times_exp(W.diagonal, 2.0 * la, "the rescaled Hessian weights"),
                               W.factors, _times_exp(W.core, 2.0 * la, "the rescaled Hessian weights"))


def rescaled_hessian(A: np.ndarray, x: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``∇²L_res = Aᵀ(Mᵀ M + diag(u∘(c_res − ⟨b,c_res⟩1)))A``, ``M = diag(u) − b uᵀ``. Derived in :doc:`/book/softmax_regression`."""
    A, x = _data(A, x)
    b = _target(A, b)
    f, la = _state(A, x)
    return _times_exp(_rescaled_weights_unscaled(f, b)._gram(A), 2.0 * la, "the rescaled Hessian")


def rescaled_hvp(A: np.ndarray, x: np.ndarray, b: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``∇²L_res v`` in O(nd). Derived in :doc:`/book/softmax_regression`."""
    A, x = _data(A, x)
    b = _target(A, b)
    v = as_vector(v, "v", length=A.shape[1])
    f, la = _state(A, x)
    return _times_exp(_rescaled_weights_unscaled(f, b)._sandwich(A, v), 2.0 * la, "the rescaled Hessian-vector product")


# ---- the regularized loss L_reg = L + ½‖diag(w) A x‖² ---------------------------------------------

def _weights(A: np.ndarray, w: object) -> np.ndarray:
    return as_vector(w, "w", length=A.shape[0])


def regularized_loss(A: np.ndarray, x: np.ndarray, b: np.ndarray, w: np.ndarray) -> float:
    """``L_reg(x) = ½‖f(x) − b‖² + ½‖diag(w) A x‖²``. Derived in :doc:`/book/softmax_regression`."""
    A, x = _data(A, x)
    b, w = _target(A, b), _weights(A, w)
    f = _state(A, x)[0]
    c, r = f - b, w * (A @ x)
    return 0.5 * float(np.dot(c, c)) + 0.5 * float(np.dot(r, r))


def regularized_gradient(A: np.ndarray, x: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``∇L_reg = Aᵀ(J c + w²∘(Ax))``. Derived in :doc:`/book/softmax_regression`."""
    A, x = _data(A, x)
    b, w = _target(A, b), _weights(A, w)
    z = A @ x
    f = _state(A, x)[0]
    c = f - b
    return A.T @ (f * c - np.dot(f, c) * f + w * w * z)


def _regularized(A: object, x: object, b: object, w: object) -> tuple[np.ndarray, DiagonalPlusLowRank]:
    A, x = _data(A, x)
    b, w = _target(A, b), _weights(A, w)
    f = _state(A, x)[0]
    return A, _normalized_weights(f, f - b).plus_diagonal(w * w)


def regularized_hessian_weights(A: np.ndarray, x: np.ndarray, b: np.ndarray, w: np.ndarray) -> DiagonalPlusLowRank:
    """``J² + K + diag(w²)``, with ``∇²L_reg = Aᵀ(J² + K + diag(w²))A``. Derived in :doc:`/book/softmax_regression`."""
    return _regularized(A, x, b, w)[1]


def regularized_hessian(A: np.ndarray, x: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``∇²L_reg = Aᵀ(J² + K + diag(w²))A``. Derived in :doc:`/book/softmax_regression`."""
    A, W = _regularized(A, x, b, w)
    return W._gram(A)


def regularized_hvp(A: np.ndarray, x: np.ndarray, b: np.ndarray, w: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``∇²L_reg v`` in O(nd). Derived in :doc:`/book/softmax_regression`."""
    A, W = _regularized(A, x, b, w)
    return W._sandwich(A, as_vector(v, "v", length=A.shape[1]))


def regularization_threshold(A: np.ndarray, x: np.ndarray, b: np.ndarray) -> float:
    """``½(max_i c_i − min_i c_i) ≥ ‖K‖₂``: ``min_i w_i²`` above it and ``A`` of full column rank make
    ``∇²L_reg(x)`` positive definite. Derived in :doc:`/book/softmax_regression`."""
    c = normalized_residual(A, x, b)
    return 0.5 * float(np.max(c) - np.min(c))
