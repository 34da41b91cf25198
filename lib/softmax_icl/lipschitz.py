"""Lipschitz bounds of the softmax prediction and the two target shifts of in-context learning.

Derived in :doc:`/book/lipschitz`. With data ``A ∈ R^{n×d}``, weights ``x ∈ R^d`` and
``f(x) = softmax(Ax)``, under ``‖A‖₂ ≤ R`` and ``‖x‖₂ ≤ R``::

    e^{−R²} ≤ exp(Ax)_i ≤ e^{R²},      n e^{−R²} ≤ α(x) ≤ n e^{R²}
    ‖diag(p) − p pᵀ‖₂ ≤ ½                                       (every probability vector p)
    ‖f_A(x) − f_A(y)‖ ≤ ½‖A(x − y)‖ ≤ (R/2)‖x − y‖              (weights)
    ‖f_A(x) − f_B(x)‖ ≤ ½‖(A − B)x‖ ≤ (R/2)‖A − B‖₂             (data)

A gradient step ``x_t → x_{t+1}`` and an attention step ``A_t → A_{t+1}`` each equal a shift of the
target ``b → b̃ = b − (new prediction − old prediction)``, so ``‖b̃ − b‖`` obeys the bounds above;
the constant of Li, Song, Xia, Yu, Zhou (2304.13276) is ``M = n^{1.5} exp(10 R²)``.
"""

from __future__ import annotations

import math

import numpy as np

from . import softmax_regression as sr
from ._validate import as_matrix, as_nonnegative_float, as_positive_int, as_vector
from .notation import softmax_last_axis

__all__ = [
    "exp_entry_bounds",
    "alpha_bounds",
    "softmax_jacobian_norm",
    "JACOBIAN_NORM_BOUND",
    "lipschitz_constant",
    "paper_factor",
    "log_paper_factor",
    "gradient_step",
    "gradient_descent",
    "weight_shift_target",
    "data_shift_target",
    "weight_step_as_data_step",
    "self_attention",
    "attention_layer",
    "attention_as_regression_weights",
    "attention_step_row_bound",
    "attention_step_bound",
]

#: ``sup_p ‖diag(p) − p pᵀ‖₂`` over probability vectors, attained at ``p = (e_i + e_j)/2``.
JACOBIAN_NORM_BOUND = 0.5
_LOG_MAX = math.log(np.finfo(np.float64).max)
MAX_STEPS = 10**6


def _radius(R: object) -> float:
    return as_nonnegative_float(R, "R")


# ---- unvalidated kernels: the public functions validate and call these; they also accept leading batch axes
# (``A`` of shape (..., n, d), ``x`` of shape (..., d)), which the random and adversarial checks use.


def _predict(A: np.ndarray, x: np.ndarray) -> np.ndarray:
    return softmax_last_axis((A @ x[..., None])[..., 0])


def _jacobian_norm(p: np.ndarray) -> np.ndarray:
    J = p[..., :, None] * np.eye(p.shape[-1]) - p[..., :, None] * p[..., None, :]
    return np.linalg.eigvalsh(J)[..., -1]


def _weight_shift_target(
    A: np.ndarray, x_t: np.ndarray, x_next: np.ndarray, b: np.ndarray
) -> np.ndarray:
    return b - (_predict(A, x_next) - _predict(A, x_t))


def _data_shift_target(
    A_t: np.ndarray, A_next: np.ndarray, x: np.ndarray, b: np.ndarray
) -> np.ndarray:
    return b - (_predict(A_next, x) - _predict(A_t, x))


def _attention_layer(X: np.ndarray, W: np.ndarray, W_V: np.ndarray) -> np.ndarray:
    return X + softmax_last_axis(X @ W @ np.swapaxes(X, -1, -2)) @ (X @ W_V)


def _attention_step_row_bound(X: np.ndarray, W_V: np.ndarray) -> np.ndarray:
    return np.max(np.linalg.norm(X @ W_V, axis=-1), axis=-1)


def _attention_step_bound(X: np.ndarray, W: np.ndarray, W_V: np.ndarray) -> np.ndarray:
    n = X.shape[-2]
    exponent = np.max(np.sum(X * X, axis=-1), axis=-1) * np.linalg.norm(W, 2, axis=(-2, -1))
    factor = np.where(
        exponent > 0.5 * math.log(n), math.sqrt(n), np.exp(np.minimum(exponent, 0.5 * math.log(n)))
    )
    return factor * np.linalg.norm(X @ W_V, 2, axis=(-2, -1))


# ---- bounds on exp(Ax), α and J -------------------------------------------------------------------


def exp_entry_bounds(R: float) -> tuple[float, float]:
    """``(e^{−R²}, e^{R²})``: every entry of ``exp(Ax)`` lies between them when ``‖A‖₂, ‖x‖₂ ≤ R``
    (the upper bound is ``inf`` beyond float64).

    Derived in :doc:`/book/lipschitz`.
    """
    R = _radius(R)
    r2 = R * R
    return math.exp(-r2), (math.exp(r2) if r2 <= _LOG_MAX else math.inf)


def alpha_bounds(n: int, R: float) -> tuple[float, float]:
    """``(n e^{−R²}, n e^{R²})``: ``α(x) = ⟨exp(Ax), 1_n⟩`` lies between them when ``‖A‖₂, ‖x‖₂ ≤ R``.

    Derived in :doc:`/book/lipschitz`.
    """
    n = as_positive_int(n, "n")
    lo, hi = exp_entry_bounds(R)
    return n * lo, n * hi


def softmax_jacobian_norm(p: np.ndarray, max_size: int = 4000) -> float:
    """``‖diag(p) − p pᵀ‖₂`` (its largest eigenvalue; the matrix is positive semidefinite), ``≤ ½``.

    Derived in :doc:`/book/lipschitz`.
    """
    p = as_vector(p, "p")
    max_size = as_positive_int(max_size, "max_size")
    if np.any(p < 0) or abs(float(np.sum(p)) - 1.0) > 1e-8:
        raise ValueError(
            f"p must be a probability vector (entries >= 0, sum 1), got sum {float(np.sum(p))!r}"
        )
    if p.shape[0] > max_size:
        raise ValueError(
            f"refusing to form a dense {p.shape[0]}×{p.shape[0]} matrix (max_size={max_size})"
        )
    return float(_jacobian_norm(p))


# ---- Lipschitz constants --------------------------------------------------------------------------


def lipschitz_constant(R: float) -> float:
    """``R/2``: the Lipschitz constant of ``x ↦ softmax(Ax)`` for ``‖A‖₂ ≤ R`` and of ``A ↦ softmax(Ax)``
    for ``‖x‖ ≤ R``.

    Derived in :doc:`/book/lipschitz`.
    """
    return 0.5 * _radius(R)


def log_paper_factor(n: int, R: float) -> float:
    """``log M = 1.5 log n + 10 R²``, the logarithm of the factor of 2304.13276 (finite for every ``R``).

    Derived in :doc:`/book/lipschitz`.
    """
    n = as_positive_int(n, "n")
    R = _radius(R)
    return 1.5 * math.log(n) + 10.0 * R * R


def paper_factor(n: int, R: float) -> float:
    """``M = n^{1.5} exp(10 R²)``, the universal factor of 2304.13276 (OverflowError beyond float64).

    Derived in :doc:`/book/lipschitz`.
    """
    log_m = log_paper_factor(n, R)
    if log_m > math.log(np.finfo(np.float64).max):
        raise OverflowError(f"M = e^{log_m:.0f} is beyond float64; use log_paper_factor")
    return math.exp(log_m)


# ---- the weight step and its target shift ----------------------------------------------------------


def gradient_step(A: np.ndarray, x: np.ndarray, b: np.ndarray, eta: float) -> np.ndarray:
    """``x − η ∇L(x)`` with ``L(x) = ½‖softmax(Ax) − b‖²``.

    Derived in :doc:`/book/lipschitz`.
    """
    eta = as_nonnegative_float(eta, "eta")
    return as_vector(x, "x") - eta * sr.normalized_gradient(A, x, b)


def gradient_descent(
    A: np.ndarray, x0: np.ndarray, b: np.ndarray, eta: float, steps: int
) -> np.ndarray:
    """The iterates ``x_0, …, x_T`` of ``x_{t+1} = x_t − η∇L(x_t)`` as a ``(T + 1) × d`` array.

    Derived in :doc:`/book/lipschitz`.
    """
    steps = as_positive_int(steps, "steps")
    if steps > MAX_STEPS:
        raise ValueError(f"steps must be at most {MAX_STEPS}, got {steps}")
    A = as_matrix(A, "A")
    b = as_vector(b, "b", length=A.shape[0])
    eta = as_nonnegative_float(eta, "eta")
    xs = [as_vector(x0, "x0", length=A.shape[1])]
    for _ in range(steps):
        xs.append(gradient_step(A, xs[-1], b, eta))
    return np.stack(xs)


def weight_shift_target(
    A: np.ndarray, x_t: np.ndarray, x_next: np.ndarray, b: np.ndarray
) -> np.ndarray:
    """``b̃ = b − (f(x_{t+1}) − f(x_t))``: then ``L(x_{t+1}; b) = L(x_t; b̃)`` and ``‖b̃ − b‖ ≤ (‖A‖₂/2)‖x_{t+1} − x_t‖``.

    Derived in :doc:`/book/lipschitz`.
    """
    A = as_matrix(A, "A")
    x_t = as_vector(x_t, "x_t", length=A.shape[1])
    x_next = as_vector(x_next, "x_next", length=A.shape[1])
    b = as_vector(b, "b", length=A.shape[0])
    return _weight_shift_target(A, x_t, x_next, b)


# ---- the data step and its target shift --------------------------------------------------------------


def data_shift_target(
    A_t: np.ndarray, A_next: np.ndarray, x: np.ndarray, b: np.ndarray
) -> np.ndarray:
    """``b̃ = b − (f_{A_{t+1}}(x) − f_{A_t}(x))``: then ``L(A_{t+1}; b) = L(A_t; b̃)`` and
    ``‖b̃ − b‖ ≤ (‖x‖/2)‖A_{t+1} − A_t‖₂``.

    Derived in :doc:`/book/lipschitz`.
    """
    A_t = as_matrix(A_t, "A_t")
    A_next = as_matrix(A_next, "A_next", rows=A_t.shape[0], cols=A_t.shape[1])
    x = as_vector(x, "x", length=A_t.shape[1])
    b = as_vector(b, "b", length=A_t.shape[0])
    return _data_shift_target(A_t, A_next, x, b)


def weight_step_as_data_step(A: np.ndarray, x_t: np.ndarray, x_next: np.ndarray) -> np.ndarray:
    """``A + A(x_{t+1} − x_t) x_tᵀ/‖x_t‖²``: a rank-one data step with ``(A + ΔA)x_t = A x_{t+1}`` (needs ``x_t ≠ 0``).

    Derived in :doc:`/book/lipschitz`.
    """
    A = as_matrix(A, "A")
    x_t = as_vector(x_t, "x_t", length=A.shape[1])
    x_next = as_vector(x_next, "x_next", length=A.shape[1])
    norm2 = float(np.dot(x_t, x_t))
    if norm2 == 0.0:
        raise ValueError("x_t must be non-zero: a data step cannot move the prediction at x_t = 0")
    return A + np.outer(A @ (x_next - x_t), x_t) / norm2


# ---- the softmax self-attention layer --------------------------------------------------------------


def _attention_arguments(
    X: object, W: object, W_V: object
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X = as_matrix(X, "X")
    d = X.shape[1]
    return X, as_matrix(W, "W", rows=d, cols=d), as_matrix(W_V, "W_V", rows=d, cols=d)


def self_attention(X: np.ndarray, W: np.ndarray, W_V: np.ndarray) -> np.ndarray:
    """``softmax_row(X W Xᵀ) X W_V`` (``W = W_Q W_Kᵀ``, rows of ``X`` are tokens).

    Derived in :doc:`/book/lipschitz`.
    """
    X, W, W_V = _attention_arguments(X, W, W_V)
    return softmax_last_axis(X @ W @ X.T) @ (X @ W_V)


def attention_layer(X: np.ndarray, W: np.ndarray, W_V: np.ndarray) -> np.ndarray:
    """``X + softmax_row(X W Xᵀ) X W_V``: one softmax self-attention layer with a residual connection.

    Derived in :doc:`/book/lipschitz`.
    """
    X, W, W_V = _attention_arguments(X, W, W_V)
    return _attention_layer(X, W, W_V)


def attention_as_regression_weights(X: np.ndarray, W: np.ndarray) -> np.ndarray:
    """``X W`` (n×d): row ``j`` is ``x_jᵀ`` with ``x_j = Wᵀ X_{j,*}ᵀ``, and row ``j`` of ``softmax_row(X W Xᵀ)``
    is ``softmax(X x_j)``.

    Derived in :doc:`/book/lipschitz`.
    """
    X = as_matrix(X, "X")
    W = as_matrix(W, "W", rows=X.shape[1], cols=X.shape[1])
    return X @ W


def attention_step_row_bound(X: np.ndarray, W_V: np.ndarray) -> float:
    """``max_k ‖(X W_V)_{k,*}‖``: every row of ``A_{t+1} − A_t`` has at most this norm, so
    ``‖A_{t+1} − A_t‖_F ≤ √n`` times it.

    Derived in :doc:`/book/lipschitz`.
    """
    X = as_matrix(X, "X")
    W_V = as_matrix(W_V, "W_V", rows=X.shape[1], cols=X.shape[1])
    return float(_attention_step_row_bound(X, W_V))


def attention_step_bound(X: np.ndarray, W: np.ndarray, W_V: np.ndarray) -> float:
    """``min(√n, exp(ρ²‖W‖₂)) ‖X W_V‖₂`` with ``ρ = max_k ‖X_{k,*}‖``: a bound on ``‖A_{t+1} − A_t‖₂``.

    Derived in :doc:`/book/lipschitz`.
    """
    X, W, W_V = _attention_arguments(X, W, W_V)
    return float(_attention_step_bound(X, W, W_V))


# ---- n-dependent constants under ‖A‖₂ ≤ R, ‖x‖₂ ≤ R (so ‖Ax‖₂ ≤ R²) -------------------------------

__all__ += [
    "largest_softmax_entry",
    "smallest_softmax_entry_bounds",
    "ball_lipschitz_constant",
    "ball_lipschitz_lower_bound",
]


def _inverse_one_plus(count: float, log_ratio: float) -> float:
    """``1 / (1 + count·e^{log_ratio})`` without overflow (``count ≥ 0``)."""
    if count == 0.0:
        return 1.0
    return math.exp(-float(np.logaddexp(0.0, math.log(count) + log_ratio)))


def largest_softmax_entry(n: int, R: float) -> float:
    """``1/(1 + (n−1)e^{−R²√(n/(n−1))})``: the largest entry of ``softmax(z)`` over ``‖z‖₂ ≤ R²`` (attained).

    Derived in :doc:`/book/lipschitz`.
    """
    n, R = as_positive_int(n, "n"), _radius(R)
    if n == 1:
        return 1.0
    return _inverse_one_plus(n - 1.0, -R * R * math.sqrt(n / (n - 1.0)))


def smallest_softmax_entry_bounds(n: int, R: float) -> tuple[float, float]:
    """``(1/(1 + (n−1)e^{√2R²}), 1/(1 + (n−1)e^{R²√(n/(n−1))}))``: the smallest entry of ``softmax(z)``
    over ``‖z‖₂ ≤ R²`` lies between them; the second is attained, both are equal for ``n = 2``.

    Derived in :doc:`/book/lipschitz`.
    """
    n, R = as_positive_int(n, "n"), _radius(R)
    if n == 1:
        return 1.0, 1.0
    lower = _inverse_one_plus(n - 1.0, math.sqrt(2.0) * R * R)
    return lower, _inverse_one_plus(n - 1.0, R * R * math.sqrt(n / (n - 1.0)))


def ball_lipschitz_constant(n: int, R: float) -> float:
    """``κ(n, R) = R·min(½, largest_softmax_entry(n, R))``: the Lipschitz constant of ``x ↦ softmax(Ax)``
    on ``‖x‖₂ ≤ R`` for ``‖A‖₂ ≤ R`` (and of ``A ↦ softmax(Ax)`` on ``‖A‖₂ ≤ R`` at ``‖x‖₂ ≤ R``).

    Derived in :doc:`/book/lipschitz`.
    """
    return _radius(R) * min(JACOBIAN_NORM_BOUND, largest_softmax_entry(n, R))


def ball_lipschitz_lower_bound(n: int, R: float) -> float:
    """``R·max(P(1 − P + (1 − P)/(n − 1)), P₂)`` with ``P = largest_softmax_entry(n, R)`` and
    ``P₂ = 1/(2 + (n−2)e^{−R²√(n/(2(n−2)))})``: explicit instances (``d ≥ 2``) reach this Lipschitz ratio.

    Derived in :doc:`/book/lipschitz`.
    """
    n, R = as_positive_int(n, "n"), _radius(R)
    if n == 1:
        return 0.0
    if n == 2:
        return 0.5 * R
    P = largest_softmax_entry(n, R)
    single = P * (1.0 - P + (1.0 - P) / (n - 1.0))
    two = 0.5 * _inverse_one_plus((n - 2.0) / 2.0, -R * R * math.sqrt(n / (2.0 * (n - 2.0))))
    return R * max(single, two)
