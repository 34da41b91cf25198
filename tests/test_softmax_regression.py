"""Softmax regression library: the chapter's claims, wrong closed forms caught, validation, stability,
property tests (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from softmax_icl.verify import legacy_ledger as ledger
from softmax_icl import softmax_regression as sr
from softmax_icl.checks import directional_derivative
from softmax_icl.verify.legacy_ledger import run_claim
from softmax_icl.verify import softmax_regression as checks

CLAIMS = checks.CLAIMS


def test_every_lemma_of_the_chapter_is_registered() -> None:
    assert "softmax_regression" in ledger.CHAPTER_MODULES
    assert all(c.chapter == "book/softmax_regression" for c in CLAIMS)
    labels = {c.label for c in CLAIMS}
    assert labels == {
        "lem-softreg-alpha-gradient", "lem-softreg-jacobian", "lem-softreg-gradient",
        "lem-softreg-second-derivative", "lem-softreg-hessian", "lem-softreg-rescaled",
        "lem-softreg-jacobian-spectrum", "lem-softreg-curvature-bound", "lem-softreg-regularized",
    }


@pytest.mark.parametrize("claim", CLAIMS, ids=lambda c: c.label)
def test_claim_verifies(claim) -> None:
    for evidence in run_claim(claim):
        if evidence.kind == "bound":
            assert evidence.value <= 1.0
        elif evidence.kind == "autodiff":
            assert evidence.value <= checks.RTOL_AUTODIFF
        else:
            assert evidence.value <= checks.RTOL_FD


# ---- a wrong closed form is caught -----------------------------------------------------------------

def _f(A, x):
    return sr.softmax_prediction(A, x)


def test_jacobian_without_the_rank_one_term_is_caught() -> None:
    with pytest.raises(AssertionError, match="∂f/∂x"):
        checks.numeric_jacobian(seeds=(0,), jacobian=lambda A, x: _f(A, x)[:, None] * A)


def test_gradient_without_the_mean_term_is_caught() -> None:
    def wrong(A, x, b):
        f = _f(A, x)
        return A.T @ (f * (f - b))
    with pytest.raises(AssertionError, match="∇L"):
        checks.numeric_gradient(seeds=(0,), gradient=wrong)


def test_alpha_gradient_with_f_instead_of_exp_is_caught() -> None:
    with pytest.raises(AssertionError, match="∇α"):
        checks.numeric_alpha_gradient(seeds=(0,), alpha_gradient=lambda A, x: A.T @ _f(A, x))


def test_second_derivative_without_the_double_mean_term_is_caught() -> None:
    def wrong(A, x):
        f = _f(A, x)
        m = f @ A
        return sr.softmax_prediction_hessian(A, x) - 2.0 * f[:, None, None] * np.outer(m, m)[None]
    with pytest.raises(AssertionError, match="∂²f"):
        checks.numeric_second_derivative(seeds=(0,), second=wrong)


def test_hessian_without_the_curvature_term_is_caught() -> None:
    def gauss_newton(A, x, b):
        J = sr.softmax_jacobian_weights(_f(A, x)).dense()
        return A.T @ J @ J @ A
    with pytest.raises(AssertionError, match="∇²L"):
        checks.numeric_hessian(seeds=(0,), hessian=gauss_newton)


@pytest.mark.parametrize("entry", [(0, 0), (0, 1), (1, 1)])
def test_wrong_rank_two_core_is_caught_symbolically(entry) -> None:
    def wrong(f, c):
        W = sr._normalized_weights(f, c)
        core = W.core.copy()
        core[entry] = core[entry] + 1 if entry != (0, 0) else core[entry] * 2
        return sr.DiagonalPlusLowRank(W.diagonal, W.factors, core)
    with pytest.raises(AssertionError, match="J² \\+ K"):
        checks.check_hessian_weights_symbolic(weights=wrong)


def test_wrong_rescaled_weights_are_caught_symbolically() -> None:
    def wrong(f, b):
        W = sr._rescaled_weights_unscaled(f, b)
        return sr.DiagonalPlusLowRank(W.diagonal - f * f, W.factors, W.core)
    with pytest.raises(AssertionError, match="rescaled weights"):
        checks.check_rescaled_weights_symbolic(weights=wrong)


def test_symbolic_machinery_rejects_a_wrong_hessian() -> None:
    P = checks.SymbolicProblem(3, 2)
    J = P.J()
    assert not P.is_zero(P.hessian(P.L) - P.A.T * (J * J - P.K()) * P.A)
    assert not P.is_zero(P.grad(P.L) - P.A.T * P.f.multiply_elementwise(P.c))


def test_symbolic_n_machinery_rejects_a_wrong_gradient() -> None:
    expr = sp.Sum(checks._IA[checks._k, checks._i] * checks._IU[checks._k], (checks._k, 0, checks._n - 1))
    assert sp.expand(checks.linear_sum_normal_form(expr - 2 * expr)) != 0


def test_rescaled_hessian_without_the_diagonal_term_is_caught() -> None:
    def wrong(A, x, b):
        u = np.exp(A @ x)
        M = np.diag(u) - np.outer(b, u)
        return A.T @ M.T @ M @ A
    with pytest.raises(AssertionError, match="∇²L_res"):
        checks.numeric_rescaled(seeds=(0,), hessian=wrong)


def test_regularized_hessian_without_the_regularizer_is_caught() -> None:
    with pytest.raises(AssertionError, match="∇²L_reg"):
        checks.numeric_regularized(seeds=(0,), hessian=lambda A, x, b, w: sr.normalized_hessian(A, x, b))


def test_hvp_with_the_wrong_sign_of_k_is_caught() -> None:
    def wrong(A, x, b, v):
        f = _f(A, x)
        J = sr.softmax_jacobian_weights(f)
        K = sr.softmax_curvature_weights(f, f - b)
        Av = A @ v
        return A.T @ (J.matvec(J.matvec(Av)) - K.matvec(Av))
    with pytest.raises(AssertionError, match="hvp"):
        checks.numeric_hvp(seeds=(0,), loss="L", hvp=wrong)


def test_an_inflated_curvature_bound_is_caught() -> None:
    def inflated(f, c):
        K = sr.softmax_curvature_weights(f, c)
        return sr.DiagonalPlusLowRank(3 * K.diagonal, K.factors, 3 * K.core)
    with pytest.raises(AssertionError, match="‖K‖₂"):
        checks.bound_curvature(weights=inflated)


def test_unregularized_hessian_fails_the_positive_definiteness_check() -> None:
    with pytest.raises(AssertionError, match="not positive definite"):
        checks.bound_positive_definite(hessian=lambda A, x, b, w: sr.normalized_hessian(A, x, b))


# ---- the weight representation ---------------------------------------------------------------------

def test_weights_agree_with_dense_matrices() -> None:
    rng = np.random.default_rng(0)
    A, x, b, w = checks.random_problem(30, 5, seed=1)
    f = _f(A, x)
    c = f - b
    Jd = np.diag(f) - np.outer(f, f)
    fc = f * c
    s = f @ c
    Kd = np.diag(fc) - np.outer(fc, f) - np.outer(f, fc) + 2 * s * np.outer(f, f) - s * np.diag(f)
    np.testing.assert_allclose(sr.softmax_jacobian_weights(f).dense(), Jd, rtol=0, atol=1e-16)
    np.testing.assert_allclose(sr.softmax_curvature_weights(f, c).dense(), Kd, rtol=0, atol=1e-16)
    W = sr.normalized_hessian_weights(A, x, b)
    np.testing.assert_allclose(W.dense(), Jd @ Jd + Kd, rtol=0, atol=1e-15)
    np.testing.assert_allclose(W.gram(A), A.T @ (Jd @ Jd + Kd) @ A, rtol=1e-12, atol=1e-15)
    v = rng.standard_normal(30)
    np.testing.assert_allclose(W.matvec(v), (Jd @ Jd + Kd) @ v, rtol=1e-12, atol=1e-16)
    np.testing.assert_allclose(sr.softmax_jacobian_product(f, v), Jd @ v, rtol=1e-12, atol=1e-16)
    Wr = sr.regularized_hessian_weights(A, x, b, w)
    np.testing.assert_allclose(Wr.dense(), Jd @ Jd + Kd + np.diag(w * w), rtol=1e-14, atol=1e-16)
    with pytest.raises(ValueError, match="refusing"):
        W.dense(max_size=10)


def test_gram_of_mixed_sign_weights_matches_the_general_product() -> None:
    rng = np.random.default_rng(3)
    A = rng.standard_normal((500, 40))
    for delta in (rng.standard_normal(500), np.abs(rng.standard_normal(500)), -np.abs(rng.standard_normal(500)),
                  np.zeros(500)):
        W = sr.DiagonalPlusLowRank(delta, rng.standard_normal((500, 2)), np.array([[1.0, -1.0], [-1.0, 0.0]]))
        expected = A.T @ (delta[:, None] * A) + (A.T @ W.factors) @ W.core @ (A.T @ W.factors).T
        G = W.gram(A)
        np.testing.assert_allclose(G, expected, rtol=0, atol=1e-11 * np.max(np.abs(expected)))
        assert np.array_equal(G, G.T)


# ---- validation ---------------------------------------------------------------------------------

A0 = np.ones((4, 3))
X0 = np.zeros(3)
B0 = np.full(4, 0.25)
W0 = np.ones(4)
V0 = np.ones(3)


@pytest.mark.parametrize("fn, args", [
    (sr.normalized_loss, (A0, X0, B0)), (sr.normalized_gradient, (A0, X0, B0)),
    (sr.normalized_hessian, (A0, X0, B0)), (sr.normalized_hvp, (A0, X0, B0, V0)),
    (sr.rescaled_loss, (A0, X0, B0)), (sr.rescaled_gradient, (A0, X0, B0)),
    (sr.rescaled_hessian, (A0, X0, B0)), (sr.rescaled_hvp, (A0, X0, B0, V0)),
    (sr.regularized_loss, (A0, X0, B0, W0)), (sr.regularized_gradient, (A0, X0, B0, W0)),
    (sr.regularized_hessian, (A0, X0, B0, W0)), (sr.regularized_hvp, (A0, X0, B0, W0, V0)),
])
def test_bad_input_is_rejected_with_the_argument_named(fn, args) -> None:
    fn(*args)  # the good arguments pass
    bad = list(args)
    bad[0] = np.ones(4)
    with pytest.raises(ValueError, match=r"A must be 2-D with shape \(any, any\), got shape \(4,\)"):
        fn(*bad)
    bad = list(args)
    bad[1] = np.zeros(4)
    with pytest.raises(ValueError, match=r"x must have shape \(3,\), got \(4,\)"):
        fn(*bad)
    bad = list(args)
    bad[2] = np.full(3, 1 / 3)
    with pytest.raises(ValueError, match=r"b must have shape \(4,\), got \(3,\)"):
        fn(*bad)
    if len(args) >= 4 and args[3] is W0:
        bad = list(args)
        bad[3] = np.ones(3)
        with pytest.raises(ValueError, match=r"w must have shape \(4,\), got \(3,\)"):
            fn(*bad)
    if args[-1] is V0:
        bad = list(args)
        bad[-1] = np.ones(5)
        with pytest.raises(ValueError, match=r"v must have shape \(3,\), got \(5,\)"):
            fn(*bad)
    for k, name in ((0, "A"), (1, "x"), (2, "b")):
        bad = list(args)
        bad[k] = np.array(args[k], dtype=float)
        bad[k].flat[0] = np.nan
        with pytest.raises(ValueError, match=f"{name} must be finite"):
            fn(*bad)
        bad[k].flat[0] = np.inf
        with pytest.raises(ValueError, match=f"{name} must be finite"):
            fn(*bad)
        bad[k] = np.asarray(args[k]).astype(np.int64)
        with pytest.raises(TypeError, match=f"{name} must be a real floating-point array"):
            fn(*bad)


def test_weight_helpers_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="f must be a probability vector"):
        sr.softmax_jacobian_weights(np.array([0.5, 0.6]))
    with pytest.raises(ValueError, match=r"c must have shape \(2,\)"):
        sr.softmax_curvature_weights(np.array([0.5, 0.5]), np.ones(3))
    with pytest.raises(TypeError, match="f must be a real floating-point array"):
        sr.softmax_jacobian_product(np.array([1, 0]), np.ones(2))
    W = sr.softmax_jacobian_weights(np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match=r"A must have shape \(2, any\)"):
        W.gram(np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"v must have shape \(2,\)"):
        W.matvec(np.ones(3))


# ---- stability at ‖Ax‖_∞ = 1000 -------------------------------------------------------------------

def _extreme_problem(low: float, high: float) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(7)
    A = rng.standard_normal((300, 10))
    x = rng.standard_normal(10)
    z = A @ x
    # an affine map of Ax into [low, high]: add a column of ones to carry the offset
    scale = (high - low) / (z.max() - z.min())
    A = np.column_stack([np.ones(300), A])
    x = np.concatenate([[low - scale * z.min()], scale * x])
    return A, x, rng.dirichlet(np.ones(300))


@pytest.mark.parametrize("low, high", [(-1000.0, 1000.0), (-1000.0, -990.0), (990.0, 1000.0), (-2.0, 1000.0)])
def test_normalized_functions_are_finite_at_extreme_logits(low, high) -> None:
    A, x, b = _extreme_problem(low, high)
    assert np.max(np.abs(A @ x)) == pytest.approx(max(abs(low), abs(high)))
    v = np.ones(A.shape[1])
    f = sr.softmax_prediction(A, x)
    assert np.all(np.isfinite(f)) and abs(f.sum() - 1) < 1e-12
    for value in (sr.normalized_loss(A, x, b), sr.normalized_gradient(A, x, b), sr.normalized_hessian(A, x, b),
                  sr.normalized_hvp(A, x, b, v), sr.softmax_jacobian(A, x), sr.log_alpha(A, x),
                  sr.regularized_hessian(A, x, b, np.ones(300)), sr.log_rescaled_loss(A, x, b),
                  sr.softmax_prediction_hessian(A, x)):
        assert np.all(np.isfinite(value))
    np.testing.assert_allclose(sr.normalized_hessian(A, x, b) @ v, sr.normalized_hvp(A, x, b, v), rtol=1e-10, atol=1e-14)


def test_rescaled_loss_overflow_is_an_error_not_inf() -> None:
    A, x, b = _extreme_problem(-1000.0, 1000.0)
    for fn in (sr.rescaled_loss, sr.rescaled_gradient, sr.rescaled_hessian, sr.alpha):
        with pytest.raises(OverflowError, match="beyond float64"):
            fn(*(A, x, b)[: 2 if fn is sr.alpha else 3])
    expected = 2 * sr.log_alpha(A, x) + np.log(sr.normalized_loss(A, x, b))
    assert sr.log_rescaled_loss(A, x, b) == pytest.approx(expected, rel=1e-14)
    assert sr.log_alpha(A, x) == pytest.approx(1000.0, abs=1.0)


def test_rescaled_loss_is_exact_where_representable() -> None:
    # max Ax = 300: α² ≈ e^600 is representable although exp(Ax)² overflows nowhere… but exp(2·300)
    # is; the direct formula needs the shift only beyond e^709.
    A, x, b = _extreme_problem(-1000.0, 300.0)
    value = sr.rescaled_loss(A, x, b)
    assert np.isfinite(value)
    assert np.log(value) == pytest.approx(sr.log_rescaled_loss(A, x, b), rel=1e-13)
    assert np.all(np.isfinite(sr.rescaled_hessian(A, x, b)))
    A, x, b = _extreme_problem(-1000.0, -990.0)
    assert sr.rescaled_loss(A, x, b) == 0.0 and np.all(sr.rescaled_gradient(A, x, b) == 0.0)


# ---- positive definiteness ---------------------------------------------------------------------------

def test_regularized_hessian_is_positive_definite_above_the_threshold() -> None:
    rng = np.random.default_rng(11)
    for _ in range(50):
        A = rng.standard_normal((30, 6))
        x = rng.standard_normal(6) * 2
        b = rng.standard_normal(30)
        c = sr.normalized_residual(A, x, b)
        t = sr.regularization_threshold(A, x, b)
        assert t <= np.max(np.abs(c)) <= 6 * np.max(np.abs(c))  # ours is implied by the 6‖c‖_∞ condition
        w = np.full(30, np.sqrt(1.001 * t))
        assert np.linalg.eigvalsh(sr.regularized_hessian(A, x, b, w))[0] > 0


# ---- property tests -------------------------------------------------------------------------------

@st.composite
def problems(draw):
    n = draw(st.integers(1, 40))
    d = draw(st.integers(1, 10))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    scale = draw(st.floats(0.01, 3.0))
    A = rng.uniform(-3, 3, (n, d))
    x = rng.uniform(-1, 1, d) * scale
    b = rng.standard_normal(n) if draw(st.booleans()) else rng.dirichlet(np.ones(n))
    w = rng.uniform(0, 2, n)
    return A, x, b, w, rng


@settings(max_examples=60, deadline=None)
@given(problems())
def test_gradients_match_finite_differences(problem) -> None:
    A, x, b, w, rng = problem
    v = rng.standard_normal(x.shape[0])
    for loss, grad in ((sr.normalized_loss, sr.normalized_gradient), (sr.rescaled_loss, sr.rescaled_gradient),
                       (lambda A, y, b: sr.regularized_loss(A, y, b, w), lambda A, y, b: sr.regularized_gradient(A, y, b, w))):
        g = grad(A, x, b)
        numeric = float(directional_derivative(lambda y: loss(A, y, b), x, v, h=1e-4))  # noqa: B023
        scale = np.linalg.norm(g) * np.linalg.norm(v) + abs(loss(A, x, b)) + 1e-12
        assert abs(g @ v - numeric) <= 1e-6 * scale


@settings(max_examples=60, deadline=None)
@given(problems())
def test_hessians_are_symmetric_and_match_their_hvp(problem) -> None:
    A, x, b, w, rng = problem
    v = rng.standard_normal(x.shape[0])
    for H, hv, W in ((sr.normalized_hessian(A, x, b), sr.normalized_hvp(A, x, b, v), sr.normalized_hessian_weights(A, x, b)),
                     (sr.rescaled_hessian(A, x, b), sr.rescaled_hvp(A, x, b, v), sr.rescaled_hessian_weights(A, x, b)),
                     (sr.regularized_hessian(A, x, b, w), sr.regularized_hvp(A, x, b, w, v),
                      sr.regularized_hessian_weights(A, x, b, w))):
        assert np.array_equal(H, H.T)
        # round-off scale: the size of the terms that cancel in Aᵀ W A v
        size = np.max(np.abs(W.diagonal)) + np.linalg.norm(W.factors) ** 2 * np.max(np.abs(W.core))
        np.testing.assert_allclose(H @ v, hv, rtol=1e-9, atol=1e-12 * size * np.linalg.norm(A) ** 2 * np.linalg.norm(v))


@settings(max_examples=60, deadline=None)
@given(problems())
def test_prediction_is_a_positive_probability_vector(problem) -> None:
    A, x, *_ = problem
    f = sr.softmax_prediction(A, x)
    assert np.all(f > 0) and abs(f.sum() - 1) < 1e-12


@settings(max_examples=60, deadline=None)
@given(problems())
def test_rescaled_and_normalized_losses_agree(problem) -> None:
    A, x, b, *_ = problem
    # L_res = α² L everywhere, and both vanish (with their gradients) at a realizable target
    assert sr.rescaled_loss(A, x, b) == pytest.approx(sr.alpha(A, x) ** 2 * sr.normalized_loss(A, x, b), rel=1e-12)
    target = sr.softmax_prediction(A, x)
    assert sr.normalized_loss(A, x, target) == 0.0 and sr.rescaled_loss(A, x, target) == 0.0
    assert np.all(sr.rescaled_gradient(A, x, target) == 0.0)
    # b = f rounded to float64 leaves c = f − b of round-off size, which the normalized gradient keeps
    eps = np.finfo(float).eps
    assert np.max(np.abs(sr.normalized_gradient(A, x, target))) <= 8 * eps * np.max(np.abs(A))
