"""Accuracy of the softmax-regression derivatives when the softmax saturates, is nearly uniform, or
``b ≈ f``: every closed form against a high-precision reference (mpmath, the textbook formulas with
enough digits to absorb their cancellation), for logit gaps from 0 to 1000.

The claim checked: relative error ≤ 1e-10, except where the problem itself is ill-conditioned, and
there within a few ε of its condition: the error allowed is ``RTOL·‖y‖ + 16 ε ‖cond‖`` with
``cond = Σ_θ |∂y/∂θ| |θ|`` over every input entry θ (the change of the exact result when each input
is perturbed by a relative ε, as rounding the inputs does). The condition is computed, in high
precision, only when the plain relative error exceeds 1e-10. Saturation is well-conditioned: the
textbook formulas lose ε·e^gap there, which this allowance does not cover.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import mpmath
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from softmax_icl import softmax_regression as sr

RTOL = 1e-10
EPS = float(np.finfo(float).eps)
# below this a float64 result has no relative precision left (subnormals start at 2.2e-308)
TINY = 1e-290

mpf = mpmath.mpf


# ---- the reference: the textbook formulas in high precision ----------------------------------
# Arrays are nested lists of mpf; a matrix is a list of rows.

def _dot(p, q):
    return mpmath.fsum(pi * qi for pi, qi in zip(p, q, strict=True))


def _mv(A, v):
    return [_dot(row, v) for row in A]


def _tmv(A, r):
    return [mpmath.fsum(A[i][j] * r[i] for i in range(len(A))) for j in range(len(A[0]))]


def _softmax(z):
    e = [mpmath.exp(zi) for zi in z]
    s = mpmath.fsum(e)
    return [ei / s for ei in e]


def _J(f, q):
    fq = _dot(f, q)
    return [fi * qi - fq * fi for fi, qi in zip(f, q, strict=True)]


def _K(f, u, q):
    fq, uq = _dot(f, q), _dot(u, q)
    return [ui * qi - fq * ui - uq * fi for ui, qi, fi in zip(u, q, f, strict=True)]


def _W(f, u, q):
    return [a + k for a, k in zip(_J(f, _J(f, q)), _K(f, u, q), strict=True)]


def _state(A, x, b):
    f = _softmax(_mv(A, x))
    return f, _J(f, [fi - bi for fi, bi in zip(f, b, strict=True)])


def ref_gradient(A, x, b):
    return _tmv(A, _state(A, x, b)[1])


def ref_hvp(A, x, b, v):
    f, u = _state(A, x, b)
    return _tmv(A, _W(f, u, _mv(A, v)))


def ref_hessian(A, x, b):
    f, u = _state(A, x, b)
    d = len(A[0])
    return [_tmv(A, _W(f, u, [row[j] for row in A])) for j in range(d)]


def ref_weights(A, x, b):
    f, u = _state(A, x, b)
    n = len(A)
    return [_W(f, u, [mpf(int(i == j)) for i in range(n)]) for j in range(n)]


def ref_weights_matvec(A, x, b, q):
    f, u = _state(A, x, b)
    return _W(f, u, q)


def ref_jacobian(A, x):
    f = _softmax(_mv(A, x))
    cols = [_J(f, [row[j] for row in A]) for j in range(len(A[0]))]
    return [[cols[j][i] for j in range(len(cols))] for i in range(len(A))]


def ref_second(A, x, u, v):
    f = _softmax(_mv(A, x))
    p, q = _mv(A, u), _mv(A, v)
    fp, fq = _dot(f, p), _dot(f, q)
    return _J(f, [(pi - fp) * (qi - fq) for pi, qi in zip(p, q, strict=True)])


def ref_regularized_gradient(A, x, b, w):
    z = _mv(A, x)
    return [g + r for g, r in zip(ref_gradient(A, x, b), _tmv(A, [wi * wi * zi for wi, zi in zip(w, z, strict=True)]),
                                  strict=True)]


def ref_regularized_hvp(A, x, b, w, v):
    q = _mv(A, v)
    return [h + r for h, r in zip(ref_hvp(A, x, b, v), _tmv(A, [wi * wi * qi for wi, qi in zip(w, q, strict=True)]),
                                  strict=True)]


def ref_regularized_hessian(A, x, b, w):
    d = len(A[0])
    return [ref_regularized_hvp(A, x, b, w, [mpf(int(i == j)) for i in range(d)]) for j in range(d)]


def ref_J_from_f(f, q):
    s = mpmath.fsum(f)
    return _J([fi / s for fi in f], q)


def ref_K_from_f(f, c, q):
    s = mpmath.fsum(f)
    f = [fi / s for fi in f]
    return _K(f, _J(f, c), q)


# ---- comparison ---------------------------------------------------------------------------------

def _to_mp(a: np.ndarray):
    a = np.asarray(a, dtype=np.float64)
    return [_to_mp(r) for r in a] if a.ndim > 1 else [mpf(float(t)) for t in a]


def _flat(y) -> list:
    return [t for r in y for t in _flat(r)] if isinstance(y, list) else [y]


def digits(A: np.ndarray, x: np.ndarray) -> int:
    """Enough digits for the textbook formulas: the cancellation of size 1 terms against e^{-spread}
    and, for nearly uniform logits, against the spread itself (f_i − f_j ≈ (z_i − z_j)/n)."""
    z = [math.fsum(float(A[i, j]) * float(x[j]) for j in range(A.shape[1])) for i in range(A.shape[0])]
    spread = max(z) - min(z)
    fine = -math.log10(spread) if 0.0 < spread < 1.0 else 0.0
    return 40 + int(2 * spread / math.log(10)) + int(2 * fine)


def check(actual: np.ndarray, fn: Callable, *inputs: np.ndarray, dps: int, floor: float = 0.0) -> float:
    """Assert ``actual`` meets the claim of the module docstring against ``fn(*inputs)`` (plus an absolute
    ``floor`` where a function documents one); return the relative error."""
    a = np.asarray(actual, dtype=np.float64).ravel()
    with mpmath.workdps(dps):
        args = [_to_mp(t) for t in inputs]
        y = _flat(fn(*args))
        assert len(y) == a.size
        diff = max(abs(mpf(float(ai)) - yi) for ai, yi in zip(a, y, strict=True))
        size = max(max(abs(yi) for yi in y), mpf(TINY))
        if diff <= RTOL * size + floor:
            return float(diff / size)
        # the componentwise condition Σ_θ |∂y/∂θ| |θ|, by a forward difference in high precision
        h = mpf(10) ** (-(dps // 3))
        cond = [mpf(0)] * len(y)
        for k, arr in enumerate(inputs):
            for idx in np.ndindex(*np.shape(arr)):
                theta = float(np.asarray(arr)[idx])
                if theta == 0.0:
                    continue
                pert = [_to_mp(t) for t in inputs]
                target = pert[k]
                for i in idx[:-1]:
                    target = target[i]
                target[idx[-1]] = mpf(theta) * (1 + h)
                yp = _flat(fn(*pert))
                cond = [ci + abs(ypi - yi) / h for ci, ypi, yi in zip(cond, yp, y, strict=True)]
        allowed = RTOL * size + 16 * EPS * max(cond)
        assert diff <= allowed, (f"error {float(diff):.3e} > allowed {float(allowed):.3e} "
                                 f"(|y| = {float(size):.3e}, cond = {float(max(cond)):.3e})")
        return float(diff / size)


# ---- the reproducer -------------------------------------------------------------------------

def test_reproducer_gap_40() -> None:
    A, x, b = np.array([[40.0], [0.0], [-1.0]]), np.array([1.0]), np.array([0.2, 0.3, 0.5])
    dps = digits(A, x)
    with mpmath.workdps(dps):
        g = ref_gradient(_to_mp(A), _to_mp(x), _to_mp(b))
        H = ref_hessian(_to_mp(A), _to_mp(x), _to_mp(b))
    assert float(g[0]) == pytest.approx(2.70e-16, rel=5e-3)
    assert float(H[0][0]) == pytest.approx(-1.09e-14, rel=5e-3)
    assert check(sr.normalized_gradient(A, x, b), ref_gradient, A, x, b, dps=dps) <= RTOL
    assert check(sr.normalized_hessian(A, x, b), ref_hessian, A, x, b, dps=dps) <= RTOL
    v = np.array([1.0])
    assert check(sr.normalized_hvp(A, x, b, v), ref_hvp, A, x, b, v, dps=dps) <= RTOL
    assert check(sr.normalized_hessian_weights(A, x, b).dense(), ref_weights, A, x, b, dps=dps) <= RTOL


def test_extreme_logits_at_1000() -> None:
    rng = np.random.default_rng(7)
    A = rng.standard_normal((40, 3))
    x = rng.standard_normal(3)
    x *= 1000.0 / np.max(np.abs(A @ x))
    b = rng.dirichlet(np.ones(40))
    v = rng.standard_normal(3)
    dps = digits(A, x)
    assert check(sr.normalized_gradient(A, x, b), ref_gradient, A, x, b, dps=dps) <= RTOL
    assert check(sr.normalized_hvp(A, x, b, v), ref_hvp, A, x, b, v, dps=dps) <= RTOL
    assert check(sr.normalized_hessian(A, x, b), ref_hessian, A, x, b, dps=dps) <= RTOL
    assert check(sr.softmax_jacobian(A, x), ref_jacobian, A, x, dps=dps) <= RTOL


def test_a_textbook_formula_fails_the_check() -> None:
    """The check is not vacuous: f∘c − ⟨f,c⟩f, as written, is caught at a gap of 40."""
    A, x, b = np.array([[40.0], [0.0], [-1.0]]), np.array([1.0]), np.array([0.2, 0.3, 0.5])
    f = sr.softmax_prediction(A, x)
    c = f - b
    with pytest.raises(AssertionError, match="allowed"):
        check(A.T @ (f * c - np.dot(f, c) * f), ref_gradient, A, x, b, dps=digits(A, x))


# ---- the gap sweep ------------------------------------------------------------------------------

unit = st.floats(-1.0, 1.0, allow_nan=False, allow_subnormal=False)


@st.composite
def saturated_problems(draw):
    n = draw(st.integers(2, 6))
    d = draw(st.integers(1, 3))
    A = np.array(draw(st.lists(st.lists(unit, min_size=d, max_size=d), min_size=n, max_size=n)))
    x = np.array(draw(st.lists(unit, min_size=d, max_size=d)))
    z = np.sort(A @ x)
    gap0 = z[-1] - z[-2]
    assume(gap0 > 1e-3 * max(1e-300, z[-1] - z[0]) and gap0 > 1e-8)
    kind = draw(st.sampled_from(["gap", "near-uniform"]))
    gap = draw(st.floats(0.0, 1000.0)) if kind == "gap" else 10.0 ** draw(st.floats(-12.0, -2.0))
    x = x * (gap / gap0)
    assume(np.max(np.abs(A @ x)) <= 3000.0)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    target = draw(st.sampled_from(["dirichlet", "uniform", "near-f", "one-hot"]))
    if target == "dirichlet":
        b = rng.dirichlet(np.ones(n))
    elif target == "uniform":
        b = np.full(n, 1.0 / n)
    elif target == "one-hot":
        b = np.eye(n)[rng.integers(n)]
    else:   # b = f (1 + η r), renormalized: c is a relative η of f
        f = sr.softmax_prediction(A, x)
        b = f * (1.0 + 10.0 ** draw(st.floats(-9.0, -2.0)) * rng.uniform(-1, 1, n))
        b /= b.sum()
    return A, x, b, rng.standard_normal(d), rng.standard_normal(d), rng.uniform(0.0, 2.0, n)


@settings(max_examples=150, deadline=None)
@given(saturated_problems())
def test_gap_sweep_normalized_derivatives(problem) -> None:
    A, x, b, v, u, w = problem
    dps = digits(A, x)
    check(sr.normalized_gradient(A, x, b), ref_gradient, A, x, b, dps=dps)
    check(sr.normalized_hvp(A, x, b, v), ref_hvp, A, x, b, v, dps=dps)
    check(sr.normalized_hessian(A, x, b), ref_hessian, A, x, b, dps=dps)
    W = sr.normalized_hessian_weights(A, x, b)
    check(W.dense(), ref_weights, A, x, b, dps=dps)
    q = A @ v
    check(W.matvec(q), ref_weights_matvec, A, x, b, q, dps=dps)
    check(sr.softmax_jacobian(A, x), ref_jacobian, A, x, dps=dps)
    # documented: ∂²f keeps absolute accuracy ε·max f∘|p̄|∘|q̄| only, where it vanishes to first order
    # (an inflection: f nearly uniform on two points)
    f, p, q = sr.softmax_prediction(A, x), A @ u, A @ v
    terms = float(np.max(f * np.abs(p - f @ p) * np.abs(q - f @ q)))
    check(sr.softmax_prediction_second_derivative(A, x, u, v), ref_second, A, x, u, v, dps=dps, floor=16 * EPS * terms)


@settings(max_examples=60, deadline=None)
@given(saturated_problems())
def test_gap_sweep_weight_objects_from_f(problem) -> None:
    A, x, b, v, u, w = problem
    dps = digits(A, x)
    f = sr.softmax_prediction(A, x)
    c, q = f - b, A @ v
    check(sr.softmax_jacobian_weights(f).matvec(q), ref_J_from_f, f, q, dps=dps)
    check(sr.softmax_jacobian_product(f, q), ref_J_from_f, f, q, dps=dps)
    check(sr.softmax_curvature_weights(f, c).matvec(q), ref_K_from_f, f, c, q, dps=dps)


@settings(max_examples=60, deadline=None)
@given(saturated_problems())
def test_gap_sweep_regularized(problem) -> None:
    A, x, b, v, u, w = problem
    dps = digits(A, x)
    check(sr.regularized_gradient(A, x, b, w), ref_regularized_gradient, A, x, b, w, dps=dps)
    check(sr.regularized_hvp(A, x, b, w, v), ref_regularized_hvp, A, x, b, w, v, dps=dps)
    check(sr.regularized_hessian_weights(A, x, b, w).sandwich(A, v), ref_regularized_hvp, A, x, b, w, v, dps=dps)
    check(sr.regularized_hessian(A, x, b, w), ref_regularized_hessian, A, x, b, w, dps=dps)
