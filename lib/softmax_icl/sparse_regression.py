"""Sparse linear regression in context: task sampling, estimators batched over tasks, tuning.

Derived in :doc:`/book/sparse_regression`.

A *task* is ``w* ∈ R^d`` with ``s`` non-zeros (support uniform, values N(0, 1)); its context is
``x_i ~ N(0, I_d)``, ``y_i = ⟨w*, x_i⟩ + ξ_i``, ``ξ_i ~ N(0, σ²)``, ``i = 1..n``. Every estimator
takes a stack of contexts ``X`` of shape ``(T, n, d)`` and labels ``y`` of shape ``(T, n)`` and
returns ``ŵ`` of shape ``(T, d)``; under isotropic inputs the excess risk of ``ŵ`` is
``‖ŵ − w*‖²``. Losses are normalized by ``n`` as in scikit-learn's Lasso:
ridge ``(1/2n)‖y − Xw‖² + (λ/2)‖w‖²``, Lasso ``(1/2n)‖y − Xw‖² + λ‖w‖₁``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ._validate import as_array, as_bool, as_nonnegative_float, as_nonnegative_int, as_positive_int

__all__ = [
    "Tasks",
    "sample_tasks",
    "excess_risk",
    "gram",
    "empirical_correlation",
    "min_norm_least_squares",
    "ridge",
    "bayes_posterior_mean",
    "gradient_descent",
    "preprocess_then_optimize",
    "preprocessing_weights",
    "preconditioned_gradient_descent",
    "lasso",
    "lasso_path",
    "lasso_kkt_violation",
    "Tuning",
    "tune_ridge",
    "tune_gd",
    "tune_pto",
    "tune_lasso",
    "mean_and_halfwidth",
    "Comparison",
    "compare_estimators",
    "setting_rng",
    "PTO_VARIANTS",
]

Normalize = Literal["none", "l2"]
DEFAULT_LAMBDAS_RIDGE = np.geomspace(1e-4, 10.0, 26)
DEFAULT_LAMBDAS_LASSO = np.geomspace(1e-4, 1.0, 9)
# Step sizes are searched as fractions of 1/L, L = the largest curvature λ_max(G) over the training
# tasks (the classical safe step): larger steps can win on the training average and then diverge on
# an unlucky held-out task.
DEFAULT_STEP_FRACTIONS = np.geomspace(0.03, 1.0, 10)
DEFAULT_K_MAX = 100
MAX_ELEMENTS = 2**28  # numbers in one stack of tasks, checked before allocation
MAX_STEPS = 10**6  # gradient steps K (and K_max): beyond, a call would run for hours
MAX_SUPPORTS = 10**5  # supports C(d, s) the Bayes posterior mean enumerates
# The variants of preprocess-then-optimize explored in the chapter: (normalize, split).
PTO_VARIANTS: dict[str, tuple[Normalize, bool]] = {
    "raw": ("none", False),
    "l2-normalized": ("l2", False),
    "split": ("none", True),
    "split, l2-normalized": ("l2", True),
}


# ---- data ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tasks:
    """A stack of ``T`` sparse-regression tasks: contexts ``X`` (T, n, d), labels ``y`` (T, n),
    true weights ``w_star`` (T, d), noise level ``sigma``.

    Derived in :doc:`/book/sparse_regression`.
    """

    X: np.ndarray
    y: np.ndarray
    w_star: np.ndarray
    sigma: float

    def __post_init__(self) -> None:
        X = as_array(self.X, "X", ndim=3)
        object.__setattr__(self, "X", X)
        object.__setattr__(self, "y", as_array(self.y, "y", ndim=2, shape=X.shape[:2]))
        object.__setattr__(self, "w_star", as_array(self.w_star, "w_star", ndim=2, shape=(X.shape[0], X.shape[2])))
        object.__setattr__(self, "sigma", as_nonnegative_float(self.sigma, "sigma"))

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.X.shape  # type: ignore[return-value]


def sample_tasks(
    n_tasks: int, n: int, d: int, s: int, sigma: float, rng: np.random.Generator
) -> Tasks:
    """``T`` tasks: ``w*`` s-sparse (uniform support, N(0,1) values), ``x ~ N(0, I_d)``,
    ``y = ⟨w*, x⟩ + ξ``, ``ξ ~ N(0, σ²)``. Derived in :doc:`/book/sparse_regression`."""
    T, n, d, s = (
        as_positive_int(v, k) for v, k in ((n_tasks, "n_tasks"), (n, "n"), (d, "d"), (s, "s"))
    )
    sigma = as_nonnegative_float(sigma, "sigma")
    if s > d:
        raise ValueError(f"sparsity s must be <= d, got s={s}, d={d}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if T * (n + 1) * d > MAX_ELEMENTS:
        raise ValueError(f"{T} tasks of {n} examples in dimension {d} would hold {T * (n + 1) * d:.3g} numbers, "
                         f"more than the limit {MAX_ELEMENTS:.3g}")
    support = np.argsort(rng.random((T, d)), axis=1)[:, :s]
    w_star = np.zeros((T, d))
    np.put_along_axis(w_star, support, rng.standard_normal((T, s)), axis=1)
    X = rng.standard_normal((T, n, d))
    y = np.einsum("tnd,td->tn", X, w_star) + sigma * rng.standard_normal((T, n))
    return Tasks(X, y, w_star, sigma)


def _context(X: object, y: object) -> tuple[np.ndarray, np.ndarray]:
    X = as_array(X, "X", ndim=3)
    y = as_array(y, "y", ndim=2, shape=X.shape[:2])
    return X, y


def _ndim(value: object, name: str) -> int:
    try:
        return int(np.ndim(value))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name} must be an array; could not convert it ({exc})") from exc


def excess_risk(w_hat: object, w_star: object) -> np.ndarray:
    """``‖ŵ − w*‖²`` along the last axis: the excess risk under ``x ~ N(0, I_d)``.
    Derived in :doc:`/book/sparse_regression`."""
    w_hat = as_array(w_hat, "w_hat", ndim=max(_ndim(w_hat, "w_hat"), 1))
    w_star = as_array(w_star, "w_star", ndim=max(_ndim(w_star, "w_star"), 1))
    if w_hat.shape[-1] != w_star.shape[-1]:
        raise ValueError(f"w_hat has dimension {w_hat.shape[-1]} but w_star has {w_star.shape[-1]}")
    if w_star.ndim >= 2 and w_hat.ndim >= 2 and w_hat.shape[-2] != w_star.shape[-2]:
        raise ValueError(f"w_hat has {w_hat.shape[-2]} tasks but w_star has {w_star.shape[-2]}")
    return np.sum((w_hat - w_star) ** 2, axis=-1)


def gram(X: object, y: object) -> tuple[np.ndarray, np.ndarray]:
    """``G = XᵀX/n`` (T, d, d) and ``c = Xᵀy/n`` (T, d): the least-squares loss is
    ``½wᵀGw − cᵀw + const``.

    Derived in :doc:`/book/sparse_regression`.
    """
    X, y = _context(X, y)
    n = X.shape[1]
    return np.einsum("tni,tnj->tij", X, X) / n, np.einsum("tni,tn->ti", X, y) / n


def empirical_correlation(X: object, y: object) -> np.ndarray:
    """``r̂ = (1/n) Σ_i y_i x_i`` for each task, shape (T, d); ``E r̂ = w*`` when ``Σ = I``.

    Derived in :doc:`/book/sparse_regression`.
    """
    X, y = _context(X, y)
    return np.einsum("tni,tn->ti", X, y) / X.shape[1]


# ---- closed-form estimators ----------------------------------------------------------------------


def min_norm_least_squares(X: object, y: object) -> np.ndarray:
    """``ŵ = X⁺ y`` (the minimum-norm interpolator when n < d, ordinary least squares when n ≥
    d).

    Derived in :doc:`/book/sparse_regression`.
    """
    X, y = _context(X, y)
    return np.einsum("tdn,tn->td", np.linalg.pinv(X), y)


def ridge(X: object, y: object, lam: float | Sequence[float] | np.ndarray) -> np.ndarray:
    """``argmin (1/2n)‖y − Xw‖² + (λ/2)‖w‖² = V diag(s/(s² + nλ)) Uᵀ y`` (thin SVD of each ``X``);
    ``lam`` a scalar gives (T, d), a grid of L values gives (L, T, d). ``λ = 0`` is ``X⁺y``.

    Derived in :doc:`/book/sparse_regression`.
    """
    X, y = _context(X, y)
    if isinstance(lam, bool) or np.ndim(lam) > 1:
        raise ValueError(f"lam must be a finite non-negative scalar or 1-D grid, got {lam!r}")
    lams = _grid(np.atleast_1d(lam), "lam", positive=False)
    n = X.shape[1]
    U, S, Vt = np.linalg.svd(X, full_matrices=False)  # (T,n,k), (T,k), (T,k,d)
    Uy = np.einsum("tnk,tn->tk", U, y)
    tiny = S.max(axis=1, keepdims=True) * max(X.shape[1:]) * np.finfo(float).eps
    S_safe = np.where(S > tiny, S, np.inf)  # drop numerically zero directions
    filt = S_safe[None] / (S_safe[None] ** 2 + n * lams[:, None, None])  # (L, T, k)
    out = np.einsum("ltk,tk,tkd->ltd", filt, Uy, Vt)
    return out[0] if np.ndim(lam) == 0 else out


def bayes_posterior_mean(X: object, y: object, s: int, sigma: float) -> np.ndarray:
    """``E[w* | X, y]`` under the task prior (support uniform over the ``C(d, s)`` subsets, N(0, I_s)
    values, noise N(0, σ²)), exact: the mixture over every support ``S`` of the Gaussian posteriors
    ``N(A_S⁻¹ X_Sᵀ y, σ² A_S⁻¹)``, ``A_S = X_SᵀX_S + σ² I_s``, weighted by the evidence
    ``p(y | X, S) = N(y; 0, σ² I_n + X_S X_Sᵀ)`` (log-sum-exp over supports). Its mean excess risk is
    the least any estimator reaches on these tasks. Needs ``σ > 0``.

    Derived in :doc:`/book/multihead_experiment`.
    """
    X, y = _context(X, y)
    T, n, d = X.shape
    s = as_positive_int(s, "s")
    if s > d:
        raise ValueError(f"sparsity s must be <= d = {d}, got {s}")
    sigma = as_nonnegative_float(sigma, "sigma")
    if sigma == 0:
        raise ValueError("sigma must be > 0: without noise the posterior is singular")
    from itertools import combinations
    from math import comb

    if comb(d, s) > MAX_SUPPORTS:
        raise ValueError(f"C({d}, {s}) = {comb(d, s)} supports exceed the limit {MAX_SUPPORTS}")
    if T * comb(d, s) * (s * s + n) > MAX_ELEMENTS:
        raise ValueError(f"{T} tasks × {comb(d, s)} supports exceed the limit of {MAX_ELEMENTS:.3g} numbers")
    supports = np.array(list(combinations(range(d), s)))  # (M, s)
    var = sigma**2
    G = np.einsum("tnd,tne->tde", X, X)
    c = np.einsum("tnd,tn->td", X, y)
    G_S = G[:, supports[:, :, None], supports[:, None, :]]  # (T, M, s, s)
    c_S = c[:, supports]  # (T, M, s)
    A = G_S + var * np.eye(s)
    L = np.linalg.cholesky(A)
    mean_S = np.linalg.solve(A, c_S[..., None])[..., 0]  # (T, M, s)
    # log N(y; 0, σ²I + X_S X_Sᵀ) up to terms equal for every S (Woodbury and the determinant lemma)
    log_det = 2 * np.log(np.diagonal(L, axis1=-2, axis2=-1)).sum(-1) - s * np.log(var)
    log_evidence = -0.5 * log_det + 0.5 * np.einsum("tms,tms->tm", c_S, mean_S) / var
    weights = np.exp(log_evidence - log_evidence.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    w = np.zeros((T, d))
    np.add.at(w, (np.arange(T)[:, None, None], supports[None, :, :]), weights[..., None] * mean_S)
    return w


# ---- gradient descent and preprocess-then-optimize ----------------------------------------------


def _gd_from_gram(G: np.ndarray, c: np.ndarray, eta: float, K: int) -> np.ndarray:
    u = np.zeros_like(c)
    for _ in range(K):
        u = u + eta * (c - np.einsum("tij,tj->ti", G, u))
    return u


def _check_eta_K(eta: object, K: object) -> tuple[float, int]:
    eta = as_nonnegative_float(eta, "eta")
    if isinstance(K, bool) or not isinstance(K, int | np.integer) or not 0 <= K <= MAX_STEPS:
        raise ValueError(f"K must be an integer in [0, {MAX_STEPS}], got {K!r}")
    return eta, int(K)


def gradient_descent(X: object, y: object, eta: float, K: int) -> np.ndarray:
    """``K`` steps of ``w ← w + η (1/n) Xᵀ(y − Xw)`` from ``w = 0``, for each task.

    Derived in :doc:`/book/sparse_regression`.
    """
    eta, K = _check_eta_K(eta, K)
    G, c = gram(X, y)
    return _gd_from_gram(G, c, eta, K)


def preconditioned_gradient_descent(
    X: object, y: object, P_diag: object, eta: float, K: int
) -> np.ndarray:
    """``K`` steps of ``w ← w + η P (1/n) Xᵀ(y − Xw)`` from 0 with ``P = diag(P_diag)`` (T, d).

    Derived in :doc:`/book/sparse_regression`.
    """
    eta, K = _check_eta_K(eta, K)
    X, y = _context(X, y)
    P = as_array(P_diag, "P_diag", ndim=2, shape=(X.shape[0], X.shape[2]))
    G, c = gram(X, y)
    w = np.zeros_like(c)
    for _ in range(K):
        w = w + eta * P * (c - np.einsum("tij,tj->ti", G, w))
    return w


def preprocessing_weights(X: object, y: object, normalize: Normalize = "none") -> np.ndarray:
    """The reweighting ``r̂ = (1/n) Σ_i y_i x_i`` of preprocess-then-optimize, (T, d), or
    ``r̂/‖r̂‖`` with ``normalize='l2'`` (a zero ``r̂`` stays zero).

    Derived in :doc:`/book/sparse_regression`.
    """
    if not isinstance(normalize, str) or normalize not in ("none", "l2"):
        raise ValueError(f"normalize must be 'none' or 'l2', got {normalize!r}")
    r = empirical_correlation(X, y)
    if normalize == "l2":
        norm = np.linalg.norm(r, axis=1, keepdims=True)
        r = r / np.where(norm > 0, norm, 1.0)
    return r


def _pto_setup(X: np.ndarray, y: np.ndarray, normalize: str, split: bool):
    """Weights ``r`` (T, d) and the Gram pair of the reweighted optimization tokens."""
    if not isinstance(normalize, str) or normalize not in ("none", "l2"):
        raise ValueError(f"normalize must be 'none' or 'l2', got {normalize!r}")
    as_bool(split, "split")
    n = X.shape[1]
    if split:
        if n < 2:
            raise ValueError("split=True needs at least 2 context tokens")
        m = n // 2
        r = preprocessing_weights(X[:, :m], y[:, :m], normalize)
        X_opt, y_opt = X[:, m:], y[:, m:]
    else:
        r = preprocessing_weights(X, y, normalize)
        X_opt, y_opt = X, y
    G, c = gram(X_opt, y_opt)
    G_tilde = r[:, :, None] * G * r[:, None, :]
    return r, G_tilde, r * c


def preprocess_then_optimize(
    X: object, y: object, eta: float, K: int, *, normalize: Normalize = "none", split: bool = False
) -> np.ndarray:
    """Preprocess ``x̃ = diag(r̂)x`` with ``r̂ = (1/n)Σ y_i x_i``, run ``K`` GD steps on
    ``(1/2n)Σ(y_i − ⟨u, x̃_i⟩)²`` from 0, return ``ŵ = r̂∘u_K`` (so ``⟨ŵ, x⟩ = ⟨u_K, x̃⟩``).
    ``normalize='l2'`` uses ``r̂/‖r̂‖``; ``split`` computes ``r̂`` on the first ⌊n/2⌋ tokens and
    runs
    GD on the rest. Derived in :doc:`/book/sparse_regression` (our
    reconstruction)."""
    eta, K = _check_eta_K(eta, K)
    X, y = _context(X, y)
    r, G_t, c_t = _pto_setup(X, y, normalize, split)
    return r * _gd_from_gram(G_t, c_t, eta, K)


# ---- Lasso: coordinate descent vectorized over tasks -----------------------------------------


def _soft(z: np.ndarray, t: np.ndarray | float) -> np.ndarray:
    return np.sign(z) * np.maximum(np.abs(z) - t, 0.0)


def _kkt(G: np.ndarray, c: np.ndarray, lam: np.ndarray, w: np.ndarray) -> np.ndarray:
    g = np.einsum("tij,tj->ti", G, w) - c
    l = lam[:, None]
    return np.where(w != 0, np.abs(g + l * np.sign(w)), np.maximum(np.abs(g) - l, 0.0)).max(axis=1)


def _cd_sweeps(
    G: np.ndarray, c: np.ndarray, lam: np.ndarray, w: np.ndarray, sweeps: int
) -> np.ndarray:
    """``sweeps`` rounds of cyclic coordinate descent on ``½wᵀGw − cᵀw + λ‖w‖₁`` for every task."""
    diag = np.einsum("tii->ti", G)
    safe = np.where(diag > 0, diag, 1.0)
    q = c - np.einsum("tij,tj->ti", G, w)  # q = −∇(smooth part)
    for _ in range(sweeps):
        for j in range(c.shape[1]):
            new = np.where(
                diag[:, j] > 0, _soft(q[:, j] + diag[:, j] * w[:, j], lam) / safe[:, j], 0.0
            )
            delta = new - w[:, j]
            q -= G[:, :, j] * delta[:, None]
            w[:, j] = new
    return w


def _reduce_support(
    G: np.ndarray, c: np.ndarray, lam: np.ndarray, w: np.ndarray, n: int
) -> np.ndarray:
    """Tasks with more than ``n`` non-zeros: ``G_SS`` (rank ≤ n) has a null vector ``v`` along which
    the smooth part is flat, so moving along ``±v`` (the direction that does not increase the
    objective) until a coordinate reaches 0 shrinks the support without increasing the objective.
    Repeated, all such tasks at once, until every support has at most ``n`` elements."""
    w = w.copy()
    for _ in range(c.shape[1]):
        idx = np.flatnonzero(np.count_nonzero(w, axis=1) > n)
        if idx.size == 0:
            break
        Gi, ci, li, wi = G[idx], c[idx], lam[idx], w[idx]
        mask = wi != 0
        big = 1e6 * (1.0 + np.einsum("tii->t", Gi))[:, None]
        A = (
            np.where(mask[:, :, None] & mask[:, None, :], Gi, 0.0)
            + np.eye(c.shape[1]) * np.where(mask, 0.0, big)[:, :, None]
        )
        v = np.where(mask, np.linalg.eigh(A)[1][:, :, 0], 0.0)  # null vector of G_SS
        slope = np.sum(
            (np.einsum("tij,tj->ti", Gi, wi) - ci + li[:, None] * np.sign(wi)) * v, axis=1
        )
        v = np.where((slope > 0)[:, None], -v, v)
        v = np.where(np.any(wi * v < 0, axis=1)[:, None], v, -v)  # flat: either way works
        shrinking = wi * v < 0
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = np.where(shrinking, -wi / v, np.inf)
        k = np.argmin(ratios, axis=1)
        rows = np.arange(idx.size)
        wi = wi + ratios[rows, k][:, None] * v
        wi[rows, k] = 0.0
        w[idx] = wi
    return w


def _objective(G: np.ndarray, c: np.ndarray, lam: np.ndarray, W: np.ndarray) -> np.ndarray:
    """``½wᵀGw − cᵀw + λ‖w‖₁`` for points ``W`` of shape (T, m, d)."""
    return np.sum(W * (0.5 * (W @ G) - c[:, None, :]), axis=2) + lam[:, None] * np.abs(W).sum(
        axis=2
    )


def _polish(
    G: np.ndarray,
    c: np.ndarray,
    lam: np.ndarray,
    w: np.ndarray,
    n: int,
    rounds: int = 4,
    shrink: bool = True,
) -> np.ndarray:
    """Feature-sign steps: solve exactly on the current sign pattern, ``w_S = G_SS⁻¹(c_S − λ
    sign(w_S))``,
    then move from ``w`` towards that point only as far as the Lasso objective decreases (a
    coordinate crossing zero is dropped). Supports larger than ``n`` (singular ``G_SS``) are first
    shrunk (if ``shrink``; otherwise such tasks are left to coordinate descent). Never increases
    the objective."""
    d = c.shape[1]
    w = w.copy()
    for _ in range(rounds):
        if shrink:
            w = _reduce_support(G, c, lam, w, n)
        skip = np.count_nonzero(w, axis=1) > n  # left to coordinate descent
        mask = (w != 0) & ~skip[:, None]
        A = np.where(mask[:, :, None] & mask[:, None, :], G, 0.0) + np.eye(d) * (~mask)[:, :, None]
        b = np.where(mask, c - lam[:, None] * np.sign(w), 0.0)
        try:
            out = np.linalg.solve(A, b[:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:
            return w
        step = out - w
        with np.errstate(divide="ignore", invalid="ignore"):
            t_cross = np.where(mask & (np.sign(out) != np.sign(w)), w / (w - out), np.inf)
        t_cand = np.concatenate(
            [np.zeros((w.shape[0], 1)), np.minimum(t_cross, 1.0), np.ones((w.shape[0], 1))], axis=1
        )
        pts = w[:, None, :] + t_cand[:, :, None] * step[:, None, :]
        cross_of = np.concatenate(
            [
                np.full((w.shape[0], 1), -1),
                np.arange(d)[None].repeat(w.shape[0], 0),
                np.full((w.shape[0], 1), -1),
            ],
            axis=1,
        )
        best = np.argmin(_objective(G, c, lam, pts), axis=1)
        rows = np.arange(w.shape[0])
        best = np.where(skip, 0, best)
        w = pts[rows, best]
        j = cross_of[rows, best]
        hit = (j >= 0) & np.isfinite(t_cross[rows, np.maximum(j, 0)])
        w[rows[hit], j[hit]] = 0.0
        if not hit.any():
            break
    return w


def _lasso_solve(
    G: np.ndarray,
    c: np.ndarray,
    lam: float,
    w: np.ndarray,
    n: int,
    tol: float,
    max_sweeps: int,
    chunk: int = 10,
) -> np.ndarray:
    """Coordinate descent on the tasks not yet optimal, polished on the sign pattern every
    ``chunk`` sweeps; a task is done when its KKT violation is below ``tol·(1 + max|c|)``."""
    lam_v = np.full(c.shape[0], lam)
    w = w.copy()
    scale = tol * (1.0 + np.abs(c).max(axis=1))
    todo = np.flatnonzero(_kkt(G, c, lam_v, w) > scale)
    done_sweeps = 0
    while todo.size:
        if done_sweeps >= max_sweeps:
            raise RuntimeError(
                f"Lasso did not reach KKT tolerance {tol:g} at λ={lam:.3g} on "
                f"{todo.size} task(s) within {max_sweeps} sweeps"
            )
        Gt, ct, lt = G[todo], c[todo], lam_v[todo]
        wt = _cd_sweeps(Gt, ct, lt, w[todo], chunk)
        done_sweeps += chunk
        wt = _polish(Gt, ct, lt, wt, n, shrink=done_sweeps >= 0)
        w[todo] = wt
        todo = todo[_kkt(Gt, ct, lt, wt) > scale[todo]]
    return w


def _check_tol(tol: object, max_sweeps: object) -> tuple[float, int]:
    tol = as_nonnegative_float(tol, "tol")
    if not 1e-15 <= tol <= 1.0:
        raise ValueError(f"tol must be in [1e-15, 1] (a relative KKT tolerance above round-off), got {tol!r}")
    return tol, as_positive_int(max_sweeps, "max_sweeps")


def _grid(values: object, name: str, *, positive: bool) -> np.ndarray:
    """A non-empty 1-D grid of finite real values (> 0 if ``positive``, else >= 0)."""
    try:
        arr = np.asarray(values)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name} must be a non-empty 1-D grid of numbers ({exc})") from exc
    if arr.dtype.kind not in "iuf" or arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D grid of real numbers, got {values!r}")
    arr = arr.astype(float)
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0 if positive else arr < 0):
        raise ValueError(f"{name} must hold finite values {'> 0' if positive else '>= 0'}, got {values!r}")
    return arr


def _tasks(train: object) -> Tasks:
    if not isinstance(train, Tasks):
        raise TypeError(f"train must be Tasks (see sample_tasks), got {type(train).__name__}")
    return train


def lasso(
    X: object,
    y: object,
    lam: float,
    *,
    tol: float = 1e-10,
    max_sweeps: int = 20000,
    w0: object | None = None,
) -> np.ndarray:
    """``argmin (1/2n)‖y − Xw‖² + λ‖w‖₁`` for each task (scikit-learn's ``Lasso(alpha=λ)`` scaling),
    by cyclic coordinate descent vectorized over tasks, polished by an exact solve on the sign
    pattern; returns when every task satisfies the optimality conditions to ``tol·(1 + max|c|)``.

    Derived in :doc:`/book/sparse_regression`.
    """
    lam = as_nonnegative_float(lam, "lam")
    tol, max_sweeps = _check_tol(tol, max_sweeps)
    X, y = _context(X, y)
    G, c = gram(X, y)
    w = np.zeros_like(c) if w0 is None else as_array(w0, "w0", ndim=2, shape=c.shape)
    return _lasso_solve(G, c, lam, w, X.shape[1], tol, max_sweeps)


def lasso_path(
    X: object,
    y: object,
    lams: Sequence[float] | np.ndarray,
    *,
    tol: float = 1e-10,
    max_sweeps: int = 20000,
) -> np.ndarray:
    """Lasso solutions (L, T, d) for a grid of ``λ``, solved from the largest to the smallest with
    warm starts (the order of the output follows ``lams``).

    Derived in :doc:`/book/sparse_regression`.
    """
    lams = _grid(lams, "lams", positive=False)
    tol, max_sweeps = _check_tol(tol, max_sweeps)
    X, y = _context(X, y)
    G, c = gram(X, y)
    out = np.empty((lams.size,) + c.shape)
    w = np.zeros_like(c)
    for k in np.argsort(-lams):
        w = _lasso_solve(G, c, float(lams[k]), w, X.shape[1], tol, max_sweeps)
        out[k] = w
    return out


def lasso_kkt_violation(X: object, y: object, w: object, lam: float) -> np.ndarray:
    """Per task, the largest violation of the Lasso optimality conditions ``g_j = −λ sign(w_j)`` if
    ``w_j ≠ 0`` and ``|g_j| ≤ λ`` if ``w_j = 0``, where ``g = (1/n)Xᵀ(Xw − y)``.

    Derived in :doc:`/book/sparse_regression`.
    """
    lam = as_nonnegative_float(lam, "lam")
    G, c = gram(X, y)
    w = as_array(w, "w", ndim=2, shape=c.shape)
    return _kkt(G, c, np.full(c.shape[0], lam), w)


# ---- tuning on training tasks ----------------------------------------------------------------


@dataclass(frozen=True)
class Tuning:
    """The mean training excess risk over a hyper-parameter grid and the minimizer.

    ``axes`` names the grid axes in the order of ``risk``'s axes (e.g. ``{"eta": ..., "K":
    ...}``).

    Derived in :doc:`/book/sparse_regression`.
    """

    estimator: str
    axes: dict[str, np.ndarray]
    risk: np.ndarray
    best: dict[str, float] = field(default_factory=dict)


def _argmin_grid(name: str, axes: dict[str, np.ndarray], risk: np.ndarray) -> Tuning:
    risk = np.where(np.isfinite(risk), risk, np.inf)
    idx = np.unravel_index(int(np.argmin(risk)), risk.shape)
    best = {
        k: (int(v[i]) if k == "K" else float(v[i]))
        for (k, v), i in zip(axes.items(), idx, strict=True)
    }
    return Tuning(name, axes, risk, best)


def tune_ridge(train: Tasks, lams: np.ndarray = DEFAULT_LAMBDAS_RIDGE) -> Tuning:
    """Mean training excess risk of ridge over a grid of ``λ``; ``best = {'lam': λ*}``.

    Derived in :doc:`/book/sparse_regression`.
    """
    train, lams = _tasks(train), _grid(lams, "lams", positive=False)
    W = ridge(train.X, train.y, lams)
    return _argmin_grid("ridge", {"lam": lams}, excess_risk(W, train.w_star[None]).mean(axis=1))


def _gd_risk_table(
    G: np.ndarray,
    c: np.ndarray,
    r: np.ndarray | None,
    w_star: np.ndarray,
    etas: np.ndarray,
    K_max: int,
) -> np.ndarray:
    """Mean excess risk (E, K_max+1) of ``ŵ_k = r∘u_k`` along GD on (G, c), all step sizes at
    once."""
    T, d = c.shape
    U = np.zeros((T, d, etas.size))
    weight = 1.0 if r is None else r[:, :, None]
    risk = np.empty((etas.size, K_max + 1))
    risk[:, 0] = np.mean(np.sum(w_star**2, axis=1))
    dead = np.zeros(etas.size, dtype=bool)  # step sizes whose iterates blew up on some task
    with np.errstate(over="ignore", invalid="ignore"):
        for k in range(1, K_max + 1):
            U = U + etas * (c[:, :, None] - G @ U)
            dead |= ~np.all(np.abs(U) < 1e100, axis=(0, 1))
            U[:, :, dead] = 0.0
            risk[:, k] = np.mean(np.sum((weight * U - w_star[:, :, None]) ** 2, axis=1), axis=0)
            risk[dead, k] = np.inf
    return np.where(np.isfinite(risk), risk, np.inf)


def _largest_curvature(G: np.ndarray) -> float:
    return float(np.max(np.linalg.eigvalsh(G)[:, -1]))


def tune_gd(
    train: Tasks, fractions: np.ndarray = DEFAULT_STEP_FRACTIONS, K_max: int = DEFAULT_K_MAX
) -> Tuning:
    """Mean training excess risk of K-step GD over step sizes ``η = f/L`` (``L = max_t λ_max(G_t)``
    on the training tasks) × ``K = 0..K_max``.

    Derived in :doc:`/book/sparse_regression`.
    """
    train, fractions = _tasks(train), _grid(fractions, "fractions", positive=True)
    K_max = _check_eta_K(0.0, as_positive_int(K_max, "K_max"))[1]
    G, c = gram(train.X, train.y)
    etas = fractions / _largest_curvature(G)
    risk = _gd_risk_table(G, c, None, train.w_star, etas, as_positive_int(K_max, "K_max"))
    return _argmin_grid("GD", {"eta": etas, "K": np.arange(K_max + 1)}, risk)


def tune_pto(
    train: Tasks,
    fractions: np.ndarray = DEFAULT_STEP_FRACTIONS,
    K_max: int = DEFAULT_K_MAX,
    *,
    normalize: Normalize = "none",
    split: bool = False,
) -> Tuning:
    """Mean training excess risk of preprocess-then-optimize over ``η = f/L`` (``L`` the largest
    curvature of the reweighted problems on the training tasks) × ``K = 0..K_max``.

    Derived in :doc:`/book/sparse_regression`.
    """
    train, fractions = _tasks(train), _grid(fractions, "fractions", positive=True)
    K_max = _check_eta_K(0.0, as_positive_int(K_max, "K_max"))[1]
    X, y = _context(train.X, train.y)
    r, G_t, c_t = _pto_setup(X, y, normalize, split)
    etas = fractions / _largest_curvature(G_t)
    risk = _gd_risk_table(G_t, c_t, r, train.w_star, etas, as_positive_int(K_max, "K_max"))
    return _argmin_grid("PtO", {"eta": etas, "K": np.arange(K_max + 1)}, risk)


def tune_lasso(
    train: Tasks, lams: np.ndarray = DEFAULT_LAMBDAS_LASSO, tol: float = 1e-10
) -> Tuning:
    """Mean training excess risk of the Lasso over a grid of ``λ`` (warm-started path).

    Derived in :doc:`/book/sparse_regression`.
    """
    train, lams = _tasks(train), _grid(lams, "lams", positive=False)
    W = lasso_path(train.X, train.y, lams, tol=tol)
    return _argmin_grid("Lasso", {"lam": lams}, excess_risk(W, train.w_star[None]).mean(axis=1))


# ---- the comparison --------------------------------------------------------------------------


def mean_and_halfwidth(risks: np.ndarray, z: float = 1.96) -> tuple[float, float]:
    """Sample mean and the half-width ``z·sd/√T`` of its normal confidence interval.

    Derived in :doc:`/book/sparse_regression`.
    """
    risks = as_array(risks, "risks", ndim=1)
    z = as_nonnegative_float(z, "z")
    if risks.size < 2:
        raise ValueError("need at least two risks for a confidence interval")
    return float(risks.mean()), float(z * risks.std(ddof=1) / np.sqrt(risks.size))


@dataclass(frozen=True)
class Comparison:
    """Held-out excess risks (T_test,) per estimator, the tuned hyper-parameters and the tunings.

    Derived in :doc:`/book/sparse_regression`.
    """

    n: int
    sigma: float
    risks: dict[str, np.ndarray]
    params: dict[str, dict[str, float]]
    tunings: dict[str, Tuning]


def setting_rng(n: int, sigma: float, seed: int = 2024) -> np.random.Generator:
    """The generator of one (n, σ) setting, so a setting's numbers do not depend on which others
    run.

    Derived in :doc:`/book/sparse_regression`.
    """
    n, sigma = as_positive_int(n, "n"), as_nonnegative_float(sigma, "sigma")
    seed = as_nonnegative_int(seed, "seed")
    return np.random.default_rng([seed, n, int(round(1000 * sigma))])


def compare_estimators(
    n: int,
    sigma: float,
    rng: np.random.Generator,
    *,
    d: int = 20,
    s: int = 3,
    n_train: int = 300,
    n_test: int = 2000,
    K_max: int = DEFAULT_K_MAX,
    pto_variants: Sequence[str] = ("l2-normalized", "raw"),
    lasso_tol: float = 1e-8,
) -> Comparison:
    """Tune every estimator on ``n_train`` training tasks and evaluate it on ``n_test`` fresh tasks;
    preprocess-then-optimize appears once per variant, as ``"PtO (<variant>)"``.

    Derived in :doc:`/book/sparse_regression`.
    """
    if isinstance(pto_variants, str) or not isinstance(pto_variants, Sequence):
        raise TypeError(f"pto_variants must be a list of variant names, got {pto_variants!r}")
    _check_tol(lasso_tol, 1)
    for v in pto_variants:
        if not isinstance(v, str) or v not in PTO_VARIANTS:
            raise ValueError(
                f"unknown preprocess-then-optimize variant {v!r}; choose from "
                f"{sorted(PTO_VARIANTS)}"
            )
    train = sample_tasks(n_train, n, d, s, sigma, rng)
    test = sample_tasks(n_test, n, d, s, sigma, rng)
    tunings = {"ridge": tune_ridge(train), "GD": tune_gd(train, K_max=K_max)}
    for v in pto_variants:
        normalize, split = PTO_VARIANTS[v]
        tunings[f"PtO ({v})"] = tune_pto(train, K_max=K_max, normalize=normalize, split=split)
    tunings["Lasso"] = tune_lasso(train, tol=lasso_tol)
    p = {k: t.best for k, t in tunings.items()}
    estimates = {
        "min-norm LS": min_norm_least_squares(test.X, test.y),
        "ridge": ridge(test.X, test.y, p["ridge"]["lam"]),
        "GD": gradient_descent(test.X, test.y, p["GD"]["eta"], int(p["GD"]["K"])),
    }
    for v in pto_variants:
        normalize, split = PTO_VARIANTS[v]
        q = p[f"PtO ({v})"]
        with np.errstate(over="ignore", invalid="ignore"):
            estimates[f"PtO ({v})"] = preprocess_then_optimize(
                test.X, test.y, q["eta"], int(q["K"]), normalize=normalize, split=split
            )
    estimates["Lasso"] = lasso(test.X, test.y, p["Lasso"]["lam"], tol=lasso_tol)
    with np.errstate(over="ignore", invalid="ignore"):
        risks = {
            k: np.where(
                np.isfinite(e).all(axis=1), excess_risk(np.nan_to_num(e), test.w_star), np.inf
            )
            for k, e in estimates.items()
        }
    return Comparison(n, sigma, risks, {"min-norm LS": {}, **p}, tunings)
