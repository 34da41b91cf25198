"""Accuracy of the softmax-regression derivatives when the softmax saturates, is nearly uniform, or
``b ≈ f``: every closed form against a high-precision reference (mpmath, with enough digits to
absorb the cancellation of the textbook formulas), for logit gaps from 0 to 1000."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from softmax_icl import softmax_regression as sr

RTOL = 1e-10
# below this a float64 result has no relative precision left (subnormals start at 2.2e-308)
TINY = 1e-290


# ---- the reference: the textbook formulas in high precision ----------------------------------

class Reference:
    """``f, c, J c, ∇L, ∇²L v, ∂f/∂x`` … of ``A, x, b`` (float64 inputs taken exactly), in mpmath."""

    def __init__(self, A: np.ndarray, x: np.ndarray, b: np.ndarray) -> None:
        self.n, self.d = A.shape
        z = [math.fsum(float(A[i, j]) * float(x[j]) for j in range(self.d)) for i in range(self.n)]
        spread = max(z) - min(z)
        # digits for the cancellation of size 1 terms against e^{-spread}, and, for nearly uniform
        # logits, against the spread itself (f_i − f_j ≈ (z_i − z_j)/n)
        fine = -math.log10(spread) if 0.0 < spread < 1.0 else 0.0
        self.dps = 40 + int(2 * spread / math.log(10)) + int(2 * fine)
        with mpmath.workdps(self.dps):
            self.A = [[mpmath.mpf(float(a)) for a in row] for row in A]
            self.z = [mpmath.fsum(self.A[i][j] * mpmath.mpf(float(x[j])) for j in range(self.d))
                      for i in range(self.n)]
            e = [mpmath.exp(zi) for zi in self.z]
            s = mpmath.fsum(e)
            self.alpha = s
            self.f = [ei / s for ei in e]
            self.b = [mpmath.mpf(float(bi)) for bi in b]
            self.c = [fi - bi for fi, bi in zip(self.f, self.b, strict=True)]
            self.u = self.J(self.c)

    def dot(self, p, q):
        return mpmath.fsum(pi * qi for pi, qi in zip(p, q, strict=True))

    def J(self, q):
        fq = self.dot(self.f, q)
        return [fi * qi - fq * fi for fi, qi in zip(self.f, q, strict=True)]

    def W(self, q):
        """``(J² + K) q`` with ``K q = u∘q − ⟨f,q⟩u − ⟨u,q⟩f``."""
        with mpmath.workdps(self.dps):
            JJq = self.J(self.J(q))
            fq, uq = self.dot(self.f, q), self.dot(self.u, q)
            return [a + ui * qi - fq * ui - uq * fi
                    for a, ui, qi, fi in zip(JJq, self.u, q, self.f, strict=True)]

    def Av(self, v):
        return [mpmath.fsum(self.A[i][j] * mpmath.mpf(float(v[j])) for j in range(self.d)) for i in range(self.n)]

    def At(self, r):
        return [mpmath.fsum(self.A[i][j] * r[i] for i in range(self.n)) for j in range(self.d)]

    def gradient(self):
        with mpmath.workdps(self.dps):
            return self.At(self.u)

    def hvp(self, v):
        with mpmath.workdps(self.dps):
            return self.At(self.W(self.Av(v)))

    def hessian(self):
        return [self.hvp(np.eye(self.d)[j]) for j in range(self.d)]

    def jacobian(self):
        with mpmath.workdps(self.dps):
            cols = [self.J([self.A[i][j] for i in range(self.n)]) for j in range(self.d)]
            return [[cols[j][i] for j in range(self.d)] for i in range(self.n)]

    def weights(self):
        with mpmath.workdps(self.dps):
            return [self.W([mpmath.mpf(int(i == j)) for i in range(self.n)]) for j in range(self.n)]

    def second_derivative(self, u, v):
        with mpmath.workdps(self.dps):
            p, q = self.Av(u), self.Av(v)
            pb = [pi - self.dot(self.f, p) for pi in p]
            qb = [qi - self.dot(self.f, q) for qi in q]
            return self.J([a * b for a, b in zip(pb, qb, strict=True)])


def rel_error(actual: np.ndarray, expected) -> float:
    """``max|a − e| / max(max|e|, TINY)`` with ``e`` in high precision."""
    a = np.asarray(actual, dtype=np.float64).ravel()
    e = np.asarray(expected, dtype=object).ravel()
    with mpmath.workdps(60):
        diff = max(abs(mpmath.mpf(float(ai)) - ei) for ai, ei in zip(a, e, strict=True))
        scale = max(max(abs(ei) for ei in e), mpmath.mpf(TINY))
        return float(diff / scale)


def residual_floor(A: np.ndarray, x: np.ndarray, b: np.ndarray) -> float:
    """``16 ε (1 + ‖Ax‖_∞) ‖f‖_∞ / ‖c‖_∞``: rounding ``Ax`` and ``exp`` once leaves ``f`` with a relative
    error of a few ``ε (1 + ‖Ax‖_∞)``, which ``c = f − b`` magnifies by ``‖f‖/‖c‖`` when ``b ≈ f``; no
    float64 evaluation of ``f`` does better. It is below 1e-11 unless ``b`` is within 1e-4 of ``f``."""
    f = sr.softmax_prediction(A, x)
    c = np.max(np.abs(f - b))
    eps = np.finfo(float).eps
    return float(16 * eps * (1 + np.max(np.abs(A @ x))) * np.max(f) / max(c, TINY))


# ---- the reproducer -------------------------------------------------------------------------

def test_reproducer_gap_40() -> None:
    A, x, b = np.array([[40.0], [0.0], [-1.0]]), np.array([1.0]), np.array([0.2, 0.3, 0.5])
    ref = Reference(A, x, b)
    g = sr.normalized_gradient(A, x, b)
    H = sr.normalized_hessian(A, x, b)
    assert float(ref.gradient()[0]) == pytest.approx(2.70e-16, rel=5e-3)
    assert float(ref.hessian()[0][0]) == pytest.approx(-1.09e-14, rel=5e-3)
    assert rel_error(g, ref.gradient()) <= RTOL
    assert rel_error(H, ref.hessian()) <= RTOL
    assert rel_error(sr.normalized_hvp(A, x, b, np.array([1.0])), ref.hvp([1.0])) <= RTOL
    assert rel_error(sr.normalized_hessian_weights(A, x, b).dense(), ref.weights()) <= RTOL


def test_extreme_logits_at_1000() -> None:
    rng = np.random.default_rng(7)
    A = rng.standard_normal((60, 4))
    x = rng.standard_normal(4)
    z = A @ x
    x *= 1000.0 / np.max(np.abs(z))
    b = rng.dirichlet(np.ones(60))
    v = rng.standard_normal(4)
    ref = Reference(A, x, b)
    assert rel_error(sr.normalized_gradient(A, x, b), ref.gradient()) <= RTOL
    assert rel_error(sr.normalized_hvp(A, x, b, v), ref.hvp(v)) <= RTOL
    assert rel_error(sr.normalized_hessian(A, x, b), ref.hessian()) <= RTOL
    assert rel_error(sr.softmax_jacobian(A, x), ref.jacobian()) <= RTOL


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
    ref = Reference(A, x, b)
    tol = RTOL + residual_floor(A, x, b)
    assert rel_error(sr.normalized_gradient(A, x, b), ref.gradient()) <= tol
    assert rel_error(sr.normalized_hvp(A, x, b, v), ref.hvp(v)) <= tol
    assert rel_error(sr.normalized_hessian(A, x, b), ref.hessian()) <= tol
    assert rel_error(sr.normalized_hessian_weights(A, x, b).dense(), ref.weights()) <= tol
    assert rel_error(sr.normalized_hessian_weights(A, x, b).matvec(A @ v), ref.W(ref.Av(v))) <= tol
    assert rel_error(sr.softmax_jacobian(A, x), ref.jacobian()) <= RTOL
    # ∂²f vanishes at an inflection (uniform logits): there it is exact up to the round-off of the
    # size of its terms f∘p̄∘q̄, elsewhere to RTOL
    second, expected = sr.softmax_prediction_second_derivative(A, x, u, v), ref.second_derivative(u, v)
    f = sr.softmax_prediction(A, x)
    p, q = A @ u, A @ v
    terms = float(np.max(f * np.abs(p - f @ p) * np.abs(q - f @ q)))
    size = max(float(max(abs(e) for e in expected)), TINY)
    assert rel_error(second, expected) * size <= RTOL * size + 1e-14 * terms


@settings(max_examples=60, deadline=None)
@given(saturated_problems())
def test_gap_sweep_weight_objects_from_f(problem) -> None:
    A, x, b, v, u, w = problem
    ref = Reference(A, x, b)
    f = sr.softmax_prediction(A, x)
    # the reference of the f-input helpers is the formula at the float64 f (and c = f − b) given
    ref_f = Reference.__new__(Reference)
    ref_f.n, ref_f.d, ref_f.dps = ref.n, ref.d, ref.dps
    with mpmath.workdps(ref.dps):
        ref_f.f = [mpmath.mpf(float(fi)) for fi in f]
        total = mpmath.fsum(ref_f.f)
        ref_f.f = [fi / total for fi in ref_f.f]
        c = [mpmath.mpf(float(ci)) for ci in f - b]
        ref_f.u = ref_f.J(c)
        q = [mpmath.mpf(float(qi)) for qi in A @ v]
        Jq = ref_f.J(q)
        fq, uq = ref_f.dot(ref_f.f, q), ref_f.dot(ref_f.u, q)
        Kq = [ui * qi - fq * ui - uq * fi for ui, qi, fi in zip(ref_f.u, q, ref_f.f, strict=True)]
    assert rel_error(sr.softmax_jacobian_weights(f).matvec(A @ v), Jq) <= RTOL
    assert rel_error(sr.softmax_jacobian_product(f, A @ v), Jq) <= RTOL
    # K = Σ_k u_k (e_k − f)(e_k − f)ᵀ, u = J c, is much smaller than u only where f is uniform on two
    # points (K_00 = u_0 (f_1 − f_0) (f_0 + f_1) at n = 2): there its diagonal and rank-2 parts cancel
    # to the round-off of u, elsewhere it is exact to RTOL
    Kv = sr.softmax_curvature_weights(f, f - b).matvec(A @ v)
    size = max(float(max(abs(e) for e in Kq)), TINY)
    u_size = float(max(abs(e) for e in ref_f.u)) * float(np.max(np.abs(A @ v)))
    assert rel_error(Kv, Kq) * size <= RTOL * size + 16 * np.finfo(float).eps * u_size


@settings(max_examples=60, deadline=None)
@given(saturated_problems())
def test_gap_sweep_regularized(problem) -> None:
    A, x, b, v, u, w = problem
    ref = Reference(A, x, b)
    with mpmath.workdps(ref.dps):
        w2 = [mpmath.mpf(float(wi)) ** 2 for wi in w]
        grad = [g + r for g, r in zip(ref.gradient(), ref.At([a * zi for a, zi in zip(w2, ref.z, strict=True)]),
                                      strict=True)]
        q = ref.Av(v)
        hv = [h + r for h, r in zip(ref.hvp(v), ref.At([a * qi for a, qi in zip(w2, q, strict=True)]), strict=True)]
    assert rel_error(sr.regularized_gradient(A, x, b, w), grad) <= RTOL
    assert rel_error(sr.regularized_hvp(A, x, b, w, v), hv) <= RTOL
    with mpmath.workdps(ref.dps):
        H = []
        for j in range(ref.d):
            e = np.eye(ref.d)[j]
            qe = ref.Av(e)
            H.append([h + r for h, r in zip(ref.hvp(e), ref.At([a * qi for a, qi in zip(w2, qe, strict=True)]),
                                            strict=True)])
    assert rel_error(sr.regularized_hessian(A, x, b, w), H) <= RTOL
    assert rel_error(sr.regularized_hessian_weights(A, x, b, w).sandwich(A, v), hv) <= RTOL
