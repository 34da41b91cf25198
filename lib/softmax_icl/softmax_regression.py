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

from ._validate import as_array, as_matrix, as_vector, check_finite

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

def _as_weight_array(value: object, name: str, ndim: int, shape: tuple[int | None, ...]) -> np.ndarray:
    """A float64 array through :func:`as_array`, or an object array of SymPy expressions or real numbers
    (the symbolic checks run the library's weight formulas on SymPy entries) of the right shape."""
    arr = np.asarray(value) if isinstance(value, np.ndarray) else None
    if arr is None or arr.dtype != object:
        return as_array(value, name, ndim=ndim, shape=shape)
    import sympy as sp  # only for object arrays: symbolic entries

    if arr.ndim != ndim or any(w is not None and g != w for g, w in zip(arr.shape, shape, strict=True)) \
            or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty {ndim}-D array of shape {shape}, got shape {arr.shape}")
    entries = list(arr.flat)
    symbolic = any(isinstance(e, sp.Expr) and not e.is_number for e in entries)
    if not symbolic or not all(isinstance(e, sp.Expr) or (isinstance(e, int | float) and not isinstance(e, bool))
                               for e in entries):
        raise TypeError(f"{name} has dtype object: that is for SymPy expressions (symbolic checks); numbers "
                        f"must come as a float64 array")
    return arr


@dataclass(frozen=True)
class DiagonalPlusLowRank:
    """``W = diag(diagonal) + U C Uᵀ + diag(offset)`` (``U = factors`` n×k, ``C = core`` k×k symmetric),
    never formed. With a ``pivot`` m: ``W = Pᵀ(diag(diagonal) + U C Uᵀ)P + diag(offset)``, ``P = I − 1 e_mᵀ``
    (the softmax weights, whose rows sum to zero), evaluated without row m of ``diagonal`` and ``U``.

    The pivot is the largest softmax probability: the entries of row m are of size 1 and cancel
    when the softmax saturates, the other rows are as small as the result. Derived in
    :doc:`/book/softmax_regression`.
    """

    diagonal: np.ndarray
    factors: np.ndarray
    core: np.ndarray
    pivot: int | None = None
    offset: np.ndarray | None = None

    def __post_init__(self) -> None:
        diagonal = _as_weight_array(self.diagonal, "diagonal", 1, (None,))
        n = diagonal.shape[0]
        factors = _as_weight_array(self.factors, "factors", 2, (n, None))
        k = factors.shape[1]
        core = _as_weight_array(self.core, "core", 2, (k, k))
        if core.dtype != object and not np.array_equal(core, core.T):
            raise ValueError(f"core must be symmetric, got {core.tolist()!r}")
        pivot = self.pivot
        if pivot is not None:
            if isinstance(pivot, bool) or not isinstance(pivot, int | np.integer) or not 0 <= pivot < n:
                raise ValueError(f"pivot must be None or an integer index in [0, {n}), got {pivot!r}")
            pivot = int(pivot)
        offset = None if self.offset is None else as_vector(self.offset, "offset", length=n)
        for name, value in (("diagonal", diagonal), ("factors", factors), ("core", core), ("pivot", pivot),
                            ("offset", offset)):
            object.__setattr__(self, name, value)

    @classmethod
    def _unchecked(cls, diagonal: np.ndarray, factors: np.ndarray, core: np.ndarray, pivot: int | None = None,
                   offset: np.ndarray | None = None) -> DiagonalPlusLowRank:
        """For arrays the library has built itself: skips the checks of ``__post_init__``."""
        obj = object.__new__(cls)
        for name, value in (("diagonal", diagonal), ("factors", factors), ("core", core), ("pivot", pivot),
                            ("offset", offset)):
            object.__setattr__(obj, name, value)
        return obj

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
        m = self.pivot
        pv = v if m is None else v - v[m]                      # P v: entry m is exactly 0
        out = self.diagonal * pv + self.factors @ (self.core @ (self.factors.T @ pv))
        if m is not None:                                      # Pᵀ r: entry m is −Σ_{i≠m} r_i
            out[m] = 0.0
            out[m] = -np.sum(out)
        if self.offset is not None:
            out += self.offset * v
        return out

    def _sandwich(self, A: np.ndarray, v: np.ndarray) -> np.ndarray:
        return A.T @ self._matvec(A @ v)

    def _gram(self, A: np.ndarray) -> np.ndarray:
        m, offset = self.pivot, self.offset
        delta = self.diagonal if offset is None else self.diagonal + offset
        if m is None:
            G = _weighted_gram(A, delta, overwrite=False)
            AU = A.T @ self.factors
        else:
            # Aᵀ Pᵀ M P A = Ãᵀ M Ã with Ã = P A = A − 1 a_mᵀ (row m zero); diag(offset) through
            # Aᵀ diag(o) A = Ãᵀ diag(o) Ã + h a_mᵀ + a_m hᵀ + (Σ o) a_m a_mᵀ, h = Ãᵀ o.
            a_m = A[m].copy()
            At = A - a_m
            AU = At.T @ self.factors
            h = None if offset is None else At.T @ offset
            G = _weighted_gram(At, delta, overwrite=True)
            if h is not None:
                G += np.outer(h, a_m) + np.outer(a_m, h) + float(np.sum(offset)) * np.outer(a_m, a_m)
        G += AU @ self.core @ AU.T
        return 0.5 * (G + G.T)

    def plus_diagonal(self, extra: np.ndarray) -> DiagonalPlusLowRank:
        """``W + diag(extra)``."""
        extra = as_vector(extra, "extra", length=self.size)
        offset = extra if self.offset is None else self.offset + extra
        return DiagonalPlusLowRank._unchecked(self.diagonal, self.factors, self.core, self.pivot, offset)

    def dense(self, max_size: int = 5000) -> np.ndarray:
        """The explicit ``n×n`` matrix: a reference for tests, refused above ``max_size``."""
        if isinstance(max_size, bool) or not isinstance(max_size, int | np.integer) or max_size < 1:
            raise ValueError(f"max_size must be a positive integer, got {max_size!r}")
        if self.size > max_size:
            raise ValueError(f"refusing to form a dense {self.size}×{self.size} weight matrix (max_size={max_size})")
        M = np.diag(self.diagonal) + self.factors @ self.core @ self.factors.T
        m = self.pivot
        if m is not None:                                       # Pᵀ M P from the rows and columns ≠ m
            M[m, :] = 0.0
            M[:, m] = 0.0
            rows, cols = M.sum(axis=1), M.sum(axis=0)
            M[m, :], M[:, m] = -cols, -rows
            M[m, m] = rows.sum()
        if self.offset is not None:
            M = M + np.diag(self.offset)
        return M


def _weighted_gram(A: np.ndarray, delta: np.ndarray, *, overwrite: bool) -> np.ndarray:
    # Aᵀ diag(δ) A = s (BᵀB − 2 B_mᵀB_m) with B = sqrt|δ|∘A, s the sign of the majority of the
    # entries of δ and B_m the rows of B of the other sign: a symmetric rank-k update (BLAS syrk,
    # half the flops of a general product) over n rows, plus one over the minority rows.
    root = np.sqrt(np.abs(delta))[:, None]
    if overwrite:
        A *= root
        B = A
    else:
        B = root * A
    s = 1.0 if np.count_nonzero(delta > 0) >= delta.shape[0] / 2 else -1.0
    minority = np.flatnonzero(s * delta < 0)
    G = B.T @ B
    if minority.size:
        Bm = B.take(minority, axis=0)
        G -= 2.0 * (Bm.T @ Bm)
    G *= s
    return G


# ---- validation and the shared softmax state --------------------------------------------------

@dataclass(frozen=True)
class _Softmax:
    """The softmax of ``z`` with what the accurate formulas need: ``f``, the pivot ``m = argmax z``,
    ``f − f_m = expm1(z − z_m)/s`` (accurate where ``f_i ≈ f_m``) and ``log α``."""

    f: np.ndarray
    pivot: int
    gap: np.ndarray
    log_alpha: float
    logits: np.ndarray


def _softmax(z: np.ndarray) -> _Softmax:
    m = int(np.argmax(z))
    y = z - z[m]
    e = np.exp(y)
    s = float(np.sum(e))                       # 1 + Σ_{i≠m} e_i ≥ 1, a sum of positive terms
    return _Softmax(e / s, m, np.expm1(y) / s, float(z[m]) + float(np.log(s)), z)


def _data(A: object, x: object) -> tuple[np.ndarray, np.ndarray, _Softmax]:
    """Validated ``A``, ``x`` and the softmax state of ``A x``. ``A`` is proved finite by the product itself
    where every ``x_j ≠ 0`` (a non-finite ``A_ij`` makes ``(A x)_i`` non-finite) and scanned otherwise."""
    A = as_matrix(A, "A", finite=False)
    x = as_vector(x, "x", length=A.shape[1])
    with np.errstate(invalid="ignore", over="ignore"):
        z = A @ x
    finite = bool(np.all(np.isfinite(z)))
    if not finite or not np.all(x):
        check_finite(A, "A")
    if not finite:
        raise ValueError("A @ x overflows float64 (an entry is not finite); scale A or x down")
    return A, x, _softmax(z)


def _target(A: np.ndarray, b: object) -> np.ndarray:
    return as_vector(b, "b", length=A.shape[0])


def _centred(f: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """``y − ⟨f, y⟩1 = Σ_j f_j (y_i − y_j)`` from ``dy = y − y_m`` (``dy_m = 0``): no term of size
    ``|y|`` cancels, only differences of ``y`` enter."""
    return dy - np.dot(f, dy)


def _jacobian_of_residual(S: _Softmax, b: np.ndarray) -> np.ndarray:
    """``u = J c = f∘(c − ⟨f, c⟩1)`` with ``c_i − c_m = (f_i − f_m) − (b_i − b_m)`` formed from the accurate
    ``f − f_m``: relative round-off for every logit gap."""
    dc = S.gap - (b - b[S.pivot])
    return S.f * _centred(S.f, dc)


def _probability(f: object) -> np.ndarray:
    """A probability vector (entries >= 0, sum 1 within 1e-8), rescaled to sum exactly 1 up to round-off."""
    f = as_vector(f, "f")
    total = float(np.sum(f))
    if np.any(f < 0) or abs(total - 1.0) > 1e-8:
        raise ValueError(f"f must be a probability vector (entries >= 0, sum 1), got sum {total!r}")
    return f / total


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
    A, x, S = _data(A, x)
    return S.log_alpha


def alpha(A: np.ndarray, x: np.ndarray) -> float:
    """``α(x) = ⟨exp(Ax), 1⟩`` (OverflowError beyond float64). Derived in :doc:`/book/softmax_regression`."""
    A, x, S = _data(A, x)
    return float(_times_exp(1.0, S.log_alpha, "α(x)"))


def alpha_gradient(A: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``∇α(x) = Aᵀ exp(Ax) = α(x) Aᵀ f(x)``. Derived in :doc:`/book/softmax_regression`."""
    A, x, S = _data(A, x)
    f, la = (S.f, S.log_alpha)
    return _times_exp(A.T @ f, la, "∇α(x)")


def softmax_prediction(A: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``f(x) = α(x)⁻¹ exp(Ax)``, the softmax of ``Ax``. Derived in :doc:`/book/softmax_regression`."""
    A, x, S = _data(A, x)
    return S.f


def softmax_jacobian_product(f: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``J v = (diag f − f fᵀ) v = f∘(v − ⟨f, v⟩1)`` in O(n). Derived in :doc:`/book/softmax_regression`."""
    f = _probability(f)
    v = as_vector(v, "v", length=f.shape[0])
    m = int(np.argmax(f))
    return f * _centred(f, v - v[m])


def softmax_jacobian_weights(f: np.ndarray) -> DiagonalPlusLowRank:
    """``J = diag(f) − f fᵀ`` as diagonal plus rank one. Derived in :doc:`/book/softmax_regression`."""
    f = _probability(f)
    return DiagonalPlusLowRank(f.copy(), f[:, None].copy(), np.array([[-1.0]]), int(np.argmax(f)))


def softmax_jacobian(A: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``∂f/∂x = (diag f − f fᵀ) A`` (n×d), column ``i``: ``f∘(A_{*,i} − ⟨f, A_{*,i}⟩1)``.
    Derived in :doc:`/book/softmax_regression`."""
    A, x, S = _data(A, x)
    D = A - A[S.pivot]
    D -= S.f @ D
    D *= S.f[:, None]
    return D


def softmax_prediction_second_derivative(A: np.ndarray, x: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``Σ_ij u_i v_j ∂²f/∂x_i∂x_j = p∘q∘f − ⟨f,p⟩ f∘q − ⟨f,q⟩ f∘p − ⟨f,p∘q⟩ f + 2⟨f,p⟩⟨f,q⟩ f = J(p̄∘q̄)`` with
    ``p = Au``, ``q = Av``, ``p̄ = p − ⟨f,p⟩1``, ``q̄ = q − ⟨f,q⟩1``, in O(nd).
    Derived in :doc:`/book/softmax_regression`.

    Accurate to relative round-off when the softmax saturates; where it vanishes to first order (an
    inflection: ``f`` nearly uniform on two points) to the absolute round-off ``ε·max f∘|p̄|∘|q̄|``."""
    A, x, S = _data(A, x)
    u = as_vector(u, "u", length=A.shape[1])
    v = as_vector(v, "v", length=A.shape[1])
    f, m = S.f, S.pivot
    p, q = A @ u, A @ v
    w = _centred(f, p - p[m]) * _centred(f, q - q[m])
    return f * _centred(f, w - w[m])


def softmax_prediction_hessian(A: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``∂²f/∂x_i∂x_j`` as an (n, d, d) array (entry ``[k, i, j]``), the formula of
    :func:`softmax_prediction_second_derivative` for all ``i, j``. Derived in :doc:`/book/softmax_regression`."""
    A, x, S = _data(A, x)
    f, m = S.f, S.pivot
    D = A - A[m]
    D -= f @ D                                     # rows a_k − Σ_l f_l a_l
    T = D[:, :, None] * D[:, None, :]
    T -= T[m].copy()
    return f[:, None, None] * (T - np.einsum("k,kij->ij", f, T)[None])


# ---- the normalized loss L = ½‖f − b‖² ------------------------------------------------------------

def normalized_residual(A: np.ndarray, x: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``c(x) = f(x) − b``. Derived in :doc:`/book/softmax_regression`."""
    A, x, S = _data(A, x)
    return S.f - _target(A, b)


def normalized_loss(A: np.ndarray, x: np.ndarray, b: np.ndarray) -> float:
    """``L(x) = ½‖f(x) − b‖²``. Derived in :doc:`/book/softmax_regression`."""
    c = normalized_residual(A, x, b)
    return 0.5 * float(np.dot(c, c))


def normalized_gradient(A: np.ndarray, x: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``∇L(x) = Aᵀ J c = Aᵀ(f∘(c − ⟨f, c⟩1))``. Derived in :doc:`/book/softmax_regression`."""
    A, x, S = _data(A, x)
    b = _target(A, b)
    return A.T @ _jacobian_of_residual(S, b)


def softmax_curvature_weights(f: np.ndarray, c: np.ndarray) -> DiagonalPlusLowRank:
    """``K = Σ_k c_k ∇²_z f_k = diag(f∘c) − (f∘c)fᵀ − f(f∘c)ᵀ + 2⟨f,c⟩ f fᵀ − ⟨f,c⟩ diag(f)
    = diag(u) − u fᵀ − f uᵀ`` with ``u = J c`` (rank-2 part). Derived in :doc:`/book/softmax_regression`."""
    f = _probability(f)
    c = as_vector(c, "c", length=f.shape[0])
    m = int(np.argmax(f))
    u = f * _centred(f, c - c[m])
    return DiagonalPlusLowRank(u, np.column_stack([f, u]), np.array([[0.0, -1.0], [-1.0, 0.0]]), m)


def _weights_from_jc(f: np.ndarray, u: np.ndarray, pivot: int | None) -> DiagonalPlusLowRank:
    # J² + K = diag(g) − g fᵀ − f gᵀ + ‖f‖² f fᵀ,  g = f∘f + u,  u = J c
    g = f * f + u
    core = np.array([[np.dot(f, f), -1.0], [-1.0, 0.0]])
    return DiagonalPlusLowRank._unchecked(g, np.column_stack([f, g]), core, pivot)


def _normalized_weights(f: np.ndarray, c: np.ndarray) -> DiagonalPlusLowRank:
    """``J² + K`` from ``f`` and ``c`` as written (no pivot): the algebraic form, also on SymPy arrays."""
    return _weights_from_jc(f, f * c - np.dot(f, c) * f, None)


def _normalized_state(S: _Softmax, b: np.ndarray) -> DiagonalPlusLowRank:
    return _weights_from_jc(S.f, _jacobian_of_residual(S, b), S.pivot)


def normalized_hessian_weights(A: np.ndarray, x: np.ndarray, b: np.ndarray) -> DiagonalPlusLowRank:
    """``W = J² + K`` with ``∇²L = Aᵀ W A``: diagonal plus rank 2. Derived in :doc:`/book/softmax_regression`."""
    A, x, S = _data(A, x)
    return _normalized_state(S, _target(A, b))


def normalized_hessian(A: np.ndarray, x: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``∇²L(x) = Aᵀ(J² + K)A``: one weighted Gram product plus rank-2 corrections.
    Derived in :doc:`/book/softmax_regression`."""
    A, x, S = _data(A, x)
    return _normalized_state(S, _target(A, b))._gram(A)


def normalized_hvp(A: np.ndarray, x: np.ndarray, b: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``∇²L(x) v = Aᵀ(J² + K)(A v)`` in O(nd). Derived in :doc:`/book/softmax_regression`."""
    A, x, S = _data(A, x)
    b = _target(A, b)
    v = as_vector(v, "v", length=A.shape[1])
    return _normalized_state(S, b)._sandwich(A, v)


# ---- the rescaled loss L_res = ½‖exp(Ax) − ⟨exp(Ax),1⟩ b‖² = α² L ------------------------------------

def rescaled_loss(A: np.ndarray, x: np.ndarray, b: np.ndarray) -> float:
    """``L_res(x) = ½‖exp(Ax) − ⟨exp(Ax),1⟩ b‖² = α(x)² L(x)``. Derived in :doc:`/book/softmax_regression`."""
    A, x, S = _data(A, x)
    b = _target(A, b)
    f, la = (S.f, S.log_alpha)
    c = f - b
    return float(_times_exp(0.5 * np.dot(c, c), 2.0 * la, "the rescaled loss"))


def log_rescaled_loss(A: np.ndarray, x: np.ndarray, b: np.ndarray) -> float:
    """``log L_res(x) = 2 log α(x) + log L(x)`` (finite for any ``‖Ax‖_∞``; −inf at a zero).
    Derived in :doc:`/book/softmax_regression`."""
    A, x, S = _data(A, x)
    b = _target(A, b)
    f, la = (S.f, S.log_alpha)
    c = f - b
    with np.errstate(divide="ignore"):
        return 2.0 * la + float(np.log(0.5 * np.dot(c, c)))


def rescaled_gradient(A: np.ndarray, x: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``∇L_res = Aᵀ(diag(u) − u bᵀ) c_res = α² Aᵀ(f∘c − ⟨b, c⟩ f)`` (``u = exp(Ax)``, ``c_res = α c``).
    Derived in :doc:`/book/softmax_regression`."""
    A, x, S = _data(A, x)
    b = _target(A, b)
    f, la = (S.f, S.log_alpha)
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
    A, x, S = _data(A, x)
    b = _target(A, b)
    f, la = (S.f, S.log_alpha)
    W = _rescaled_weights_unscaled(f, b)
    return DiagonalPlusLowRank(_times_exp(W.diagonal, 2.0 * la, "the rescaled Hessian weights"),
                               W.factors, _times_exp(W.core, 2.0 * la, "the rescaled Hessian weights"))


def rescaled_hessian(A: np.ndarray, x: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``∇²L_res = Aᵀ(Mᵀ M + diag(u∘(c_res − ⟨b,c_res⟩1)))A``, ``M = diag(u) − b uᵀ``.
    Derived in :doc:`/book/softmax_regression`."""
    A, x, S = _data(A, x)
    b = _target(A, b)
    f, la = (S.f, S.log_alpha)
    return _times_exp(_rescaled_weights_unscaled(f, b)._gram(A), 2.0 * la, "the rescaled Hessian")


def rescaled_hvp(A: np.ndarray, x: np.ndarray, b: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``∇²L_res v`` in O(nd). Derived in :doc:`/book/softmax_regression`."""
    A, x, S = _data(A, x)
    b = _target(A, b)
    v = as_vector(v, "v", length=A.shape[1])
    f, la = (S.f, S.log_alpha)
    return _times_exp(_rescaled_weights_unscaled(f, b)._sandwich(A, v), 2.0 * la, "the rescaled Hessian-vector product")


# ---- the regularized loss L_reg = L + ½‖diag(w) A x‖² ---------------------------------------------

def _weights(A: np.ndarray, w: object) -> np.ndarray:
    return as_vector(w, "w", length=A.shape[0])


def regularized_loss(A: np.ndarray, x: np.ndarray, b: np.ndarray, w: np.ndarray) -> float:
    """``L_reg(x) = ½‖f(x) − b‖² + ½‖diag(w) A x‖²``. Derived in :doc:`/book/softmax_regression`."""
    A, x, S = _data(A, x)
    b, w = _target(A, b), _weights(A, w)
    f = S.f
    c, r = f - b, w * (A @ x)
    return 0.5 * float(np.dot(c, c)) + 0.5 * float(np.dot(r, r))


def regularized_gradient(A: np.ndarray, x: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``∇L_reg = Aᵀ(J c + w²∘(Ax))``. Derived in :doc:`/book/softmax_regression`."""
    A, x, S = _data(A, x)
    b, w = _target(A, b), _weights(A, w)
    z = A @ x
    return A.T @ (_jacobian_of_residual(_softmax(z), b) + w * w * z)


def _regularized(A: object, x: object, b: object, w: object) -> tuple[np.ndarray, DiagonalPlusLowRank]:
    A, x, S = _data(A, x)
    b, w = _target(A, b), _weights(A, w)
    return A, _normalized_state(S, b).plus_diagonal(w * w)


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
