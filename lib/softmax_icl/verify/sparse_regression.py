"""Checks of the chapter *Sparse linear regression in context*: excess risk under isotropic inputs,
the statistic ``r̂``, preprocess-then-optimize as preconditioned gradient descent, and the
linear-attention construction (d preprocessing heads, the impossibility with fewer heads, the
gradient-step head, the full transformer).

Symbolic checks take Gaussian expectations of explicit polynomials exactly (moments of independent
standard normals) or work on the library's own weight matrices converted to exact rationals;
numeric checks run the library (NumPy estimators, JAX transformer) at d = 20. Monte Carlo checks
compare with a tolerance of 5 standard errors at a fixed seed. Each check takes the implementation
under test as an optional argument, so a test can show that a wrong one is caught.
"""

from __future__ import annotations

from collections.abc import Callable
from math import prod

import jax
import numpy as np
import sympy as sp

from .. import sparse_regression as sr
from .. import transformer as tf
from ..checks import assert_close
from .legacy_ledger import Claim, Evidence


def _require_x64() -> None:
    if not jax.config.jax_enable_x64:
        raise RuntimeError(
            'these checks need float64 in JAX: jax.config.update("jax_enable_x64", True)'
        )


def _sym_vector(name: str, d: int) -> sp.Matrix:
    return sp.Matrix(d, 1, lambda i, _: sp.Symbol(f"{name}_{i}", real=True))


def gaussian_expectation(expr: sp.Expr, gens: list[sp.Symbol], std: list[sp.Expr]) -> sp.Expr:
    """``E[expr]`` for a polynomial in independent ``N(0, std_k²)`` variables ``gens``
    (``E z^m = std^m (m−1)!!`` for even ``m``, 0 for odd)."""
    poly = sp.Poly(sp.expand(expr), *gens)
    out = sp.Integer(0)
    for powers, coeff in poly.terms():
        if any(m % 2 for m in powers):
            continue
        out += coeff * prod(s**m * sp.factorial2(m - 1) for s, m in zip(std, powers, strict=True))
    return sp.expand(out)


# ---- excess risk -----------------------------------------------------------------------------


def _true_excess_risk(w_hat: np.ndarray, w_star: np.ndarray) -> np.ndarray:
    return sr.excess_risk(w_hat, w_star)


def check_excess_risk_symbolic(d: int = 3, risk: Callable | None = None) -> Evidence:
    """``E[(y − ⟨ŵ,x⟩)²] − E[(y − ⟨w*,x⟩)²]`` with ``y = ⟨w*,x⟩ + ξ`` equals ``‖ŵ − w*‖²``."""
    x, w, v = _sym_vector("x", d), _sym_vector("w", d), _sym_vector("v", d)  # v plays ŵ
    xi, sigma = sp.Symbol("xi", real=True), sp.Symbol("sigma", positive=True)
    y = (w.T * x)[0] + xi
    excess = (y - (v.T * x)[0]) ** 2 - (y - (w.T * x)[0]) ** 2
    expected = gaussian_expectation(excess, list(x) + [xi], [sp.Integer(1)] * d + [sigma])
    closed = (risk or (lambda a, b: sum((ai - bi) ** 2 for ai, bi in zip(a, b, strict=True))))(
        list(v), list(w)
    )
    assert sp.expand(expected - closed) == 0, (
        f"excess risk: E[...] − closed form = {sp.expand(expected - closed)}"
    )
    return Evidence("symbolic", f"d={d}, Gaussian moments", 0.0)


def check_excess_risk_monte_carlo(
    d: int = 20,
    n_samples: int = 400_000,
    sigma: float = 0.5,
    seed: int = 0,
    risk: Callable = _true_excess_risk,
) -> Evidence:
    """Fresh-sample estimate of the excess risk of a fixed ``ŵ`` against the closed form (5 SE)."""
    rng = np.random.default_rng(seed)
    w_star, w_hat = rng.standard_normal(d), rng.standard_normal(d)
    x = rng.standard_normal((n_samples, d))
    y = x @ w_star + sigma * rng.standard_normal(n_samples)
    diff = (y - x @ w_hat) ** 2 - (y - x @ w_star) ** 2
    mean, se = diff.mean(), diff.std(ddof=1) / np.sqrt(n_samples)
    closed = float(risk(w_hat[None], w_star[None])[0])
    assert abs(mean - closed) <= 5 * se, (
        f"excess risk: Monte Carlo {mean:.4f} ± {se:.4f} vs closed form {closed:.4f}"
    )
    return Evidence(
        "numeric",
        f"d={d}, {n_samples} fresh samples, |MC − closed|/closed",
        abs(mean - closed) / closed,
    )


# ---- the statistic r̂ ------------------------------------------------------------------------


def rhat_error_closed_form(w_star: np.ndarray, sigma: float, n: int) -> np.ndarray:
    """``E‖r̂ − w*‖² = ((d + 1)‖w*‖² + d σ²)/n`` (per row of ``w_star``)."""
    d = w_star.shape[-1]
    return ((d + 1) * np.sum(w_star**2, axis=-1) + d * sigma**2) / n


def check_rhat_symbolic(d: int = 3) -> Evidence:
    """``E[y x] = w*`` and ``E‖y x − w*‖² = (d + 1)‖w*‖² + d σ²`` for one token (so ``/n`` for
    ``r̂``)."""
    x, w = _sym_vector("x", d), _sym_vector("w", d)
    xi, sigma = sp.Symbol("xi", real=True), sp.Symbol("sigma", positive=True)
    y = (w.T * x)[0] + xi
    gens, std = list(x) + [xi], [sp.Integer(1)] * d + [sigma]
    mean = sp.Matrix([gaussian_expectation(y * x[i], gens, std) for i in range(d)])
    assert all(sp.expand(e) == 0 for e in mean - w), "E[y x] != w*"
    second = gaussian_expectation(sum((y * x[i] - w[i]) ** 2 for i in range(d)), gens, std)
    closed = (d + 1) * sum(wi**2 for wi in w) + d * sigma**2
    assert sp.expand(second - closed) == 0, (
        f"E‖yx − w*‖² − closed form = {sp.expand(second - closed)}"
    )
    return Evidence("symbolic", f"d={d}, Gaussian moments up to order 4", 0.0)


def check_rhat_monte_carlo(
    d: int = 20,
    n: int = 10,
    sigma: float = 0.5,
    n_tasks: int = 40_000,
    seed: int = 1,
    closed_form: Callable = rhat_error_closed_form,
) -> Evidence:
    """``‖r̂ − w*‖²`` from :func:`sparse_regression.empirical_correlation` against the closed
    form."""
    rng = np.random.default_rng(seed)
    w_star = np.zeros(d)
    w_star[:3] = [1.0, -0.5, 2.0]
    X = rng.standard_normal((n_tasks, n, d))
    y = X @ w_star + sigma * rng.standard_normal((n_tasks, n))
    err = np.sum((sr.empirical_correlation(X, y) - w_star) ** 2, axis=1)
    mean, se = err.mean(), err.std(ddof=1) / np.sqrt(n_tasks)
    closed = float(closed_form(w_star, sigma, n))
    assert abs(mean - closed) <= 5 * se, (
        f"E‖r̂ − w*‖²: Monte Carlo {mean:.4f} ± {se:.4f} vs closed form {closed:.4f}"
    )
    return Evidence(
        "numeric",
        f"d={d}, n={n}, {n_tasks} contexts, |MC − closed|/closed",
        abs(mean - closed) / closed,
    )


# ---- preprocess-then-optimize is preconditioned gradient descent -------------------------------


def check_pto_preconditioned_symbolic(d: int = 2, n: int = 2, K: int = 2) -> Evidence:
    """``r̂∘u_K`` (GD on ``x̃ = r̂∘x``) equals ``K`` steps of GD preconditioned by ``diag(r̂²)``."""
    X = sp.Matrix(n, d, lambda i, j: sp.Symbol(f"x_{i}{j}", real=True))
    y = _sym_vector("y", n)
    eta = sp.Symbol("eta", positive=True)
    r = X.T * y / n
    Xt = X * sp.diag(*r)
    u, w = sp.zeros(d, 1), sp.zeros(d, 1)
    P = sp.diag(*[ri**2 for ri in r])
    for _ in range(K):
        u = u + eta * Xt.T * (y - Xt * u) / n
        w = w + eta * P * X.T * (y - X * w) / n
    diff = sp.diag(*r) * u - w
    assert all(sp.expand(e) == 0 for e in diff), "r̂∘u_K != preconditioned GD iterate"
    return Evidence("symbolic", f"d={d}, n={n}, K={K}", 0.0)


def check_pto_preconditioned_numeric(
    d: int = 20,
    n: int = 15,
    K: int = 30,
    seed: int = 2,
    pto: Callable = sr.preprocess_then_optimize,
) -> Evidence:
    """The library's preprocess-then-optimize against its preconditioned-GD routine."""
    rng = np.random.default_rng(seed)
    t = sr.sample_tasks(200, n, d, 3, 0.1, rng)
    r = sr.empirical_correlation(t.X, t.y)
    eta = 0.5 / sr._largest_curvature(sr._pto_setup(t.X, t.y, "none", False)[1])
    res = assert_close(
        pto(t.X, t.y, eta, K),
        sr.preconditioned_gradient_descent(t.X, t.y, r**2, eta, K),
        rtol=1e-12,
        name="PtO = preconditioned GD",
    )
    return Evidence("numeric", f"d={d}, n={n}, K={K}, 200 tasks", res.worst_relative_error)


# ---- the construction ------------------------------------------------------------------------


def theory_matrices(attn: tf.Params) -> tuple[np.ndarray, np.ndarray]:
    """``(W^{PV}_j, W^{KQ}_j)`` of every head of a linear-attention layer: ``(W_V W_O)ᵀ``, ``W_K
    W_Qᵀ``."""
    PV = np.einsum("hDv,hvE->hDE", np.asarray(attn["W_V"]), np.asarray(attn["W_O"])).transpose(
        0, 2, 1
    )
    KQ = np.einsum("hDk,hEk->hDE", np.asarray(attn["W_K"]), np.asarray(attn["W_Q"]))
    return PV, KQ


def _rational(M: np.ndarray) -> sp.Matrix:
    return sp.Matrix(
        M.shape[0], M.shape[1], lambda i, j: sp.nsimplify(float(M[i, j]), rational=True)
    )


def _symbolic_tokens(d: int, n: int, y_symbols: bool = True) -> tuple[list[sp.Matrix], sp.Matrix]:
    """Stream tokens ``(x, 0_d, y)`` for ``n`` context tokens and the query ``(x_q, 0, 0)``."""
    tokens = []
    for i in range(n + 1):
        x = [sp.Symbol(f"x_{i}{j}", real=True) for j in range(d)]
        yi = sp.Symbol(f"y_{i}", real=True) if i < n else sp.Integer(0)
        tokens.append(sp.Matrix(x + [0] * d + [yi]))
    G = sum((z * z.T for z in tokens[:n]), sp.zeros(2 * d + 1, 2 * d + 1)) / n
    return tokens, G


def check_preprocess_heads_symbolic(
    d: int = 3, n: int = 2, layer: Callable = tf.preprocess_layer
) -> Evidence:
    """With the library's weights, ``Σ_j W^{PV}_j Ĝ W^{KQ}_j z = (0, r̂∘x, 0)`` for every token."""
    PV, KQ = theory_matrices(layer(d)["attn"])
    tokens, G = _symbolic_tokens(d, n)
    r = [sum(tokens[i][j] * tokens[i][2 * d] for i in range(n)) / n for j in range(d)]
    for z in tokens:
        out = sum(
            (_rational(PV[h]) * G * _rational(KQ[h]) * z for h in range(PV.shape[0])),
            sp.zeros(2 * d + 1, 1),
        )
        want = sp.Matrix([0] * d + [r[j] * z[j] for j in range(d)] + [0])
        assert all(sp.expand(e) == 0 for e in out - want), "d heads do not add diag(r̂)x"
    return Evidence("symbolic", f"d={d}, n={n}, all n+1 tokens", 0.0)


def _random_prompts(d: int, n: int, n_prompts: int, sigma: float, seed: int):
    rng = np.random.default_rng(seed)
    t = sr.sample_tasks(n_prompts, n + 1, d, 3, sigma, rng)
    X, y, xq = t.X[:, :n], t.y[:, :n], t.X[:, n]
    return X, y, xq, tf.make_prompt(X, y, xq)


def check_preprocess_heads_numeric(
    d: int = 20, n: int = 30, seed: int = 3, layer: Callable = tf.preprocess_layer
) -> Evidence:
    """The JAX forward pass of the read-in and the d-head layer: slots ``x̃`` hold ``r̂∘x``, ``x``
    and ``y`` unchanged, on every token of 256 random prompts."""
    _require_x64()
    X, y, xq, E = _random_prompts(d, n, 256, 0.1, seed)
    params = tf.construct_pto_transformer(d, 0.0, 0)
    params["layers"] = [layer(d)]
    Z = np.asarray(tf.forward(params, E))
    E = np.asarray(E)
    r = sr.empirical_correlation(X, y)
    want = np.concatenate([E[:, :, :d], r[:, None, :] * E[:, :, :d], E[:, :, d:]], axis=2)
    res = assert_close(Z, want, rtol=1e-13, name="d heads add diag(r̂)x")
    return Evidence("numeric", f"d={d}, n={n}, 256 prompts", res.worst_relative_error)


def head_reduction_residual(seed: int = 4, d: int = 3, D: int = 5, h: int = 2) -> float:
    """The identity behind the impossibility proof: with all context tokens equal to ``P u + t q``,
    ``R Σ_j W^{PV}_j Ĝ W^{KQ}_j P x = Σ_j (U_j u + t b_j)(C_jᵀu + t a_j)ᵀ x`` for random weights."""
    rng = np.random.default_rng(seed)
    P, q, R = rng.standard_normal((D, d)), rng.standard_normal(D), rng.standard_normal((d, D))
    PV, KQ = rng.standard_normal((2, h, D, D))
    u, t, x = rng.standard_normal(d), rng.standard_normal(), rng.standard_normal(d)
    z1 = P @ u + t * q
    G = np.outer(z1, z1)  # Ĝ of n equal context tokens, any n
    lhs = sum(R @ PV[j] @ G @ KQ[j] @ P @ x for j in range(h))
    U = [R @ PV[j] @ P for j in range(h)]
    b = [R @ PV[j] @ q for j in range(h)]
    C = [P.T @ KQ[j] @ P for j in range(h)]
    a = [P.T @ KQ[j].T @ q for j in range(h)]
    rhs = sum(np.outer(U[j] @ u + t * b[j], C[j].T @ u + t * a[j]) @ x for j in range(h))
    return float(np.max(np.abs(lhs - rhs)) / np.max(np.abs(rhs)))


def check_heads_necessary_reduction() -> Evidence:
    """Numeric check of the polynomial identity the proof starts from (random weights,
    embedding)."""
    err = max(head_reduction_residual(seed=s) for s in range(5))
    assert err <= 1e-12, f"reduction identity fails: relative error {err:.2e}"
    return Evidence("numeric", "random W, P, q, R; d=3, D=5, h=2", err)


def check_one_head_impossible_groebner(d: int = 2) -> Evidence:
    """For ``d = 2`` and one head, the coefficient equations of
    ``(U u + t b)(Cᵀu + t a)ᵀ = t diag(u)`` generate the unit ideal: no real (or complex)
    solution."""
    U = sp.Matrix(d, d, lambda i, j: sp.Symbol(f"U_{i}{j}"))
    C = sp.Matrix(d, d, lambda i, j: sp.Symbol(f"C_{i}{j}"))
    b, a, u = _sym_vector("b", d), _sym_vector("a", d), _sym_vector("u", d)
    t = sp.Symbol("t")
    M = (U * u + t * b) * (C.T * u + t * a).T - t * sp.diag(*u)
    equations = {c for e in M for c in sp.Poly(sp.expand(e), *u, t).coeffs()}
    basis = sp.groebner(
        sorted(equations, key=sp.default_sort_key),
        *(list(U) + list(C) + list(b) + list(a)),
        order="grevlex",
    )
    assert list(basis.exprs) == [1], (
        f"one head can represent diag(r̂)x for d={d}? basis {basis.exprs}"
    )
    return Evidence("symbolic", f"d={d}, one head: Gröbner basis {{1}}", 0.0)


def fit_heads_curve(
    d: int = 4,
    n: int = 10,
    n_fit: int = 600,
    n_eval: int = 600,
    seed: int = 5,
    n_iter: int = 60,
    restarts: int = 1,
) -> dict[int, float]:
    """Relative error of the best ``h``-head fit (alternating least squares) to ``diag(r̂)x``,
    measured by the library's JAX forward pass on held-out prompts, for ``h = 1..d``."""
    _require_x64()
    rng = np.random.default_rng(seed)
    fit = sr.sample_tasks(n_fit, n + 1, d, 2, 0.1, rng)
    ev = sr.sample_tasks(n_eval, n + 1, d, 2, 0.1, rng)
    X, y, xq = ev.X[:, :n], ev.y[:, :n], ev.X[:, n]
    E = tf.make_prompt(X, y, xq)
    target = sr.empirical_correlation(X, y) * xq
    out = {}
    for h in range(1, d + 1):
        U, V, _ = tf.fit_preprocess_heads(
            h, fit.X[:, :n], fit.y[:, :n], fit.X[:, n], rng, n_iter=n_iter, restarts=restarts
        )
        params = tf.construct_pto_transformer(d, 0.0, 0)
        params["layers"] = [tf.fitted_heads_layer(U, V)]
        Z = np.asarray(tf.forward(params, E))
        out[h] = float(np.sum((Z[:, -1, d : 2 * d] - target) ** 2) / np.sum(target**2))
    return out


def check_heads_fit(curve: dict[int, float] | None = None, d: int = 4) -> Evidence:
    """The least-squares fit reaches round-off with ``d`` heads and stays clearly away from 0 with
    fewer (consistent with the theorem; the fit is a local optimum, so an upper bound on the
    best)."""
    curve = curve or fit_heads_curve(d=d)
    assert curve[d] <= 1e-10, (
        f"{d} heads should fit diag(r̂)x exactly, relative error {curve[d]:.2e}"
    )
    worst = min(curve[h] for h in range(1, d))
    assert worst >= 1e-2, f"fewer than d heads fitted diag(r̂)x to relative error {worst:.2e}"
    return Evidence(
        "numeric", f"d={d}: h=d error {curve[d]:.1e}; min over h<d {worst:.3f}", curve[d]
    )


def check_gd_head_symbolic(d: int = 2, n: int = 2, layer: Callable = tf.gd_layer) -> Evidence:
    """With the library's weights, the head adds ``−η (1/n) Σ_i y_i ⟨x̃_i, x̃_t⟩`` to each label
    slot
    and nothing elsewhere (tokens with symbolic ``x̃`` slots)."""
    eta = sp.Rational(3, 7)
    PV, KQ = theory_matrices(layer(d, float(eta))["attn"])
    tokens = []
    for i in range(n + 1):
        xt = [sp.Symbol(f"s_{i}{j}", real=True) for j in range(d)]
        x = [sp.Symbol(f"x_{i}{j}", real=True) for j in range(d)]
        tokens.append(sp.Matrix(x + xt + [sp.Symbol(f"y_{i}", real=True) if i < n else 0]))
    G = sum((z * z.T for z in tokens[:n]), sp.zeros(2 * d + 1, 2 * d + 1)) / n
    for z in tokens:
        out = _rational(PV[0]) * G * _rational(KQ[0]) * z
        step = (
            -eta
            * sum(
                tokens[i][2 * d] * sum(tokens[i][d + j] * z[d + j] for j in range(d))
                for i in range(n)
            )
            / n
        )
        want = sp.Matrix([0] * (2 * d) + [step])
        assert all(sp.expand(e) == 0 for e in out - want), (
            "the head is not one gradient step on the labels"
        )
    return Evidence("symbolic", f"d={d}, n={n}, η=3/7", 0.0)


def check_gd_layers_numeric(d: int = 20, n: int = 30, K: int = 5, seed: int = 6) -> Evidence:
    """After the d-head layer and ``k`` gradient layers the label slots hold ``y_i − ⟨u_k,
    x̃_i⟩`` on
    the context and ``−⟨u_k, x̃_q⟩`` on the query, for ``k = 1..K`` (JAX forward pass)."""
    _require_x64()
    X, y, xq, E = _random_prompts(d, n, 128, 0.1, seed)
    r, G_t, c_t = sr._pto_setup(X, y, "none", False)
    eta = 0.5 / sr._largest_curvature(G_t)
    Xt, xqt = X * r[:, None, :], xq * r
    params = tf.construct_pto_transformer(d, eta, 0)
    Z = tf.forward(params, E)  # read-in and the d-head layer
    step = jax.jit(jax.vmap(tf.block, in_axes=(None, 0)))  # one gradient layer, compiled once
    worst = 0.0
    for k in range(1, K + 1):
        Z = step(tf.gd_layer(d, eta), Z)
        u = sr._gd_from_gram(G_t, c_t, eta, k)
        want = np.concatenate(
            [y - np.einsum("tnd,td->tn", Xt, u), -np.einsum("td,td->t", xqt, u)[:, None]], axis=1
        )
        got = np.asarray(Z)[:, :, 2 * d]
        worst = max(
            worst,
            assert_close(
                got, want, rtol=1e-12, name=f"labels after {k} steps"
            ).worst_relative_error,
        )
    return Evidence("numeric", f"d={d}, n={n}, k=1..{K}, 128 prompts", worst)


def check_construction(
    d: int = 20,
    n: int = 30,
    K: int = 10,
    n_prompts: int = 512,
    seed: int = 7,
    sigma: float = 0.1,
    predict: Callable | None = None,
) -> Evidence:
    """The constructed transformer's predictions equal preprocess-then-optimize's ``⟨ŵ, x_q⟩`` to
    1e-10 (normwise relative) on random prompts."""
    _require_x64()
    X, y, xq, E = _random_prompts(d, n, n_prompts, sigma, seed)
    eta = 0.5 / sr._largest_curvature(sr._pto_setup(X, y, "none", False)[1])
    params = tf.construct_pto_transformer(d, eta, K)
    got = np.asarray((predict or tf.predict)(params, E))
    want = np.einsum("td,td->t", sr.preprocess_then_optimize(X, y, eta, K), xq)
    res = assert_close(got, want, rtol=1e-10, name="transformer vs preprocess-then-optimize")
    return Evidence(
        "numeric", f"d={d}, n={n}, K={K}, {n_prompts} prompts", res.worst_relative_error
    )


CHAPTER = "book/sparse_regression"
CLAIMS = [
    Claim(
        "lem-sparse-excess-risk",
        CHAPTER,
        "Excess risk under isotropic inputs",
        "ours (standard)",
        (check_excess_risk_symbolic, check_excess_risk_monte_carlo),
    ),
    Claim(
        "lem-sparse-rhat",
        CHAPTER,
        "Mean and error of the statistic r̂",
        "ours",
        (check_rhat_symbolic, check_rhat_monte_carlo),
    ),
    Claim(
        "lem-sparse-pto-preconditioned",
        CHAPTER,
        "Preprocess-then-optimize is preconditioned GD",
        "ours (reconstruction of CZZ24's algorithm)",
        (check_pto_preconditioned_symbolic, check_pto_preconditioned_numeric),
    ),
    Claim(
        "lem-sparse-preprocess-heads",
        CHAPTER,
        "d linear heads add diag(r̂)x to every token",
        "ours (construction in the spirit of CZZ24)",
        (check_preprocess_heads_symbolic, check_preprocess_heads_numeric),
    ),
    Claim(
        "thm-sparse-heads-necessary",
        CHAPTER,
        "Fewer than d heads cannot compute diag(r̂)x",
        "ours",
        (check_heads_necessary_reduction, check_one_head_impossible_groebner, check_heads_fit),
    ),
    Claim(
        "lem-sparse-gd-head",
        CHAPTER,
        "One linear head performs one gradient step on the labels",
        "ours (after von Oswald et al.)",
        (check_gd_head_symbolic, check_gd_layers_numeric),
    ),
    Claim(
        "thm-sparse-construction",
        CHAPTER,
        "The constructed transformer computes preprocess-then-optimize",
        "ours (CZZ24's mechanism, our construction)",
        (check_construction,),
    ),
]
