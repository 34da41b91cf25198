"""Softmax regression library: closed forms against finite differences and against JAX autodiff
of the definitions, wrong closed forms caught by the same comparison, the bounds, validation,
stability, property tests (hypothesis)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from softmax_icl import autodiff
from softmax_icl import softmax_regression as sr
from softmax_icl.checks import assert_close, directional_derivative, numerical_jacobian

RTOL_FD, RTOL_AUTODIFF = 1e-6, 1e-10
KAPPA = 1 / (3 * np.sqrt(3))  # the sharp constant of ‖K‖₂ ≤ κ osc(c)


def random_problem(n: int = 60, d: int = 8, seed: int = 0, scale: float = 2.0) -> tuple[np.ndarray, ...]:
    """``A`` Gaussian, ``‖x‖ ≈ scale``, ``b`` a Dirichlet(1) probability vector, ``w`` in [0.5, 1.5]."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, d))
    x = rng.standard_normal(d) * scale / np.sqrt(d)
    return A, x, rng.dirichlet(np.ones(n)), rng.uniform(0.5, 1.5, n)


def _f(A, x):
    return sr.softmax_prediction(A, x)


# ---- the definitions in JAX (no closed form, no shift), differentiated by autodiff -------------------

def f_def(A, y):
    e = jnp.exp(A @ y)
    return e / jnp.sum(e)


def L_def(A, y, b):
    return 0.5 * jnp.sum((f_def(A, y) - b) ** 2)


def L_res_def(A, y, b):
    e = jnp.exp(A @ y)
    return 0.5 * jnp.sum((e - jnp.sum(e) * b) ** 2)


def L_reg_def(A, y, b, w):
    return L_def(A, y, b) + 0.5 * jnp.sum((w * (A @ y)) ** 2)


def jax_jacobian(fun, y):
    with jax.enable_x64(True):
        return np.asarray(jax.jacfwd(fun)(jnp.asarray(y, dtype=jnp.float64)))


# name → (closed form, finite-difference reference, JAX reference), each a function of (A, x, b, w)
REFERENCES = {
    "alpha_gradient": (
        lambda A, x, b, w: sr.alpha_gradient(A, x),
        lambda A, x, b, w: numerical_jacobian(lambda y: sr.alpha(A, y), x),
        lambda A, x, b, w: autodiff.gradient(lambda y: jnp.sum(jnp.exp(A @ y)), x)),
    "softmax_jacobian": (
        lambda A, x, b, w: sr.softmax_jacobian(A, x),
        lambda A, x, b, w: numerical_jacobian(lambda y: sr.softmax_prediction(A, y), x),
        lambda A, x, b, w: jax_jacobian(lambda y: f_def(A, y), x)),
    "softmax_prediction_hessian": (
        lambda A, x, b, w: sr.softmax_prediction_hessian(A, x),
        lambda A, x, b, w: numerical_jacobian(lambda y: sr.softmax_jacobian(A, y), x),
        lambda A, x, b, w: autodiff.hessian(lambda y: f_def(A, y), x)),
    "normalized_gradient": (
        lambda A, x, b, w: sr.normalized_gradient(A, x, b),
        lambda A, x, b, w: numerical_jacobian(lambda y: sr.normalized_loss(A, y, b), x),
        lambda A, x, b, w: autodiff.gradient(lambda y: L_def(A, y, b), x)),
    "normalized_hessian": (
        lambda A, x, b, w: sr.normalized_hessian(A, x, b),
        lambda A, x, b, w: numerical_jacobian(lambda y: sr.normalized_gradient(A, y, b), x),
        lambda A, x, b, w: autodiff.hessian(lambda y: L_def(A, y, b), x)),
    "rescaled_gradient": (
        lambda A, x, b, w: sr.rescaled_gradient(A, x, b),
        lambda A, x, b, w: numerical_jacobian(lambda y: sr.rescaled_loss(A, y, b), x),
        lambda A, x, b, w: autodiff.gradient(lambda y: L_res_def(A, y, b), x)),
    "rescaled_hessian": (
        lambda A, x, b, w: sr.rescaled_hessian(A, x, b),
        lambda A, x, b, w: numerical_jacobian(lambda y: sr.rescaled_gradient(A, y, b), x),
        lambda A, x, b, w: autodiff.hessian(lambda y: L_res_def(A, y, b), x)),
    "regularized_gradient": (
        lambda A, x, b, w: sr.regularized_gradient(A, x, b, w),
        lambda A, x, b, w: numerical_jacobian(lambda y: sr.regularized_loss(A, y, b, w), x),
        lambda A, x, b, w: autodiff.gradient(lambda y: L_reg_def(A, y, b, w), x)),
    "regularized_hessian": (
        lambda A, x, b, w: sr.regularized_hessian(A, x, b, w),
        lambda A, x, b, w: numerical_jacobian(lambda y: sr.regularized_gradient(A, y, b, w), x),
        lambda A, x, b, w: autodiff.hessian(lambda y: L_reg_def(A, y, b, w), x)),
}


def compare(closed, fd, ad, seeds=(0, 1)) -> float:
    """Assert ``closed`` agrees with both references at n = 60, d = 8; return the worst error."""
    worst = 0.0
    for seed in seeds:
        A, x, b, w = random_problem(seed=seed)
        value = closed(A, x, b, w)
        r = assert_close(value, fd(A, x, b, w), rtol=RTOL_FD, name=f"vs finite differences (seed {seed})")
        s = assert_close(value, ad(A, x, b, w), rtol=RTOL_AUTODIFF, name=f"vs JAX (seed {seed})")
        worst = max(worst, r.worst_relative_error, s.worst_relative_error)
    return worst


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_closed_form_matches_differences_and_autodiff(name) -> None:
    assert compare(*REFERENCES[name]) <= RTOL_FD


HVP = {
    "normalized": (lambda A, x, b, w, v: sr.normalized_hvp(A, x, b, v), lambda A, b, w: lambda y: L_def(A, y, b)),
    "rescaled": (lambda A, x, b, w, v: sr.rescaled_hvp(A, x, b, v), lambda A, b, w: lambda y: L_res_def(A, y, b)),
    "regularized": (lambda A, x, b, w, v: sr.regularized_hvp(A, x, b, w, v),
                    lambda A, b, w: lambda y: L_reg_def(A, y, b, w)),
}


def check_hvp(hvp, definition, seeds=(0, 1)) -> None:
    for seed in seeds:
        A, x, b, w = random_problem(seed=seed)
        v = np.random.default_rng(100 + seed).standard_normal(x.shape[0])
        expected = autodiff.hessian_vector_product(definition(A, b, w), x, v)
        assert_close(hvp(A, x, b, w, v), expected, rtol=RTOL_AUTODIFF, name=f"hvp vs JAX (seed {seed})")


@pytest.mark.parametrize("loss", sorted(HVP))
def test_hessian_vector_products_match_jax_forward_over_reverse(loss) -> None:
    check_hvp(*HVP[loss])


def test_bilinear_second_derivative_matches_the_contracted_jax_tensor() -> None:
    for seed in (0, 1):
        A, x, _, _ = random_problem(seed=seed)
        u, v = np.random.default_rng(seed).standard_normal((2, x.shape[0]))
        T = autodiff.hessian(lambda y: f_def(A, y), x)  # noqa: B023
        assert_close(sr.softmax_prediction_second_derivative(A, x, u, v), np.einsum("kij,i,j->k", T, u, v),
                     rtol=RTOL_AUTODIFF, name="bilinear form")


def test_rescaled_loss_matches_its_definition() -> None:
    for seed in (0, 1):
        A, x, b, _ = random_problem(seed=seed)
        u = np.exp(A @ x)
        direct = 0.5 * float(np.sum((u - u.sum() * b) ** 2))
        assert_close(sr.rescaled_loss(A, x, b), direct, rtol=1e-12, name="L_res")
        assert_close(sr.alpha(A, x) ** 2 * sr.normalized_loss(A, x, b), direct, rtol=1e-12, name="α² L")


# ---- a wrong closed form is caught by the same comparison --------------------------------------

def _gradient_without_mean(A, x, b, w):
    f = _f(A, x)
    return A.T @ (f * (f - b))


def _second_derivative_without_double_mean(A, x, b, w):
    f = _f(A, x)
    m = f @ A
    return sr.softmax_prediction_hessian(A, x) - 2.0 * f[:, None, None] * np.outer(m, m)[None]


def _gauss_newton(A, x, b, w):
    J = sr.softmax_jacobian_weights(_f(A, x)).dense()
    return A.T @ J @ J @ A


def _rescaled_hessian_without_diagonal(A, x, b, w):
    u = np.exp(A @ x)
    M = np.diag(u) - np.outer(b, u)
    return A.T @ M.T @ M @ A


WRONG = {
    "alpha_gradient": lambda A, x, b, w: A.T @ _f(A, x),                # f in place of exp(Ax)
    "softmax_jacobian": lambda A, x, b, w: _f(A, x)[:, None] * A,       # rank-one term dropped
    "normalized_gradient": _gradient_without_mean,
    "softmax_prediction_hessian": _second_derivative_without_double_mean,
    "normalized_hessian": _gauss_newton,                                # curvature term K dropped
    "rescaled_hessian": _rescaled_hessian_without_diagonal,
    "regularized_hessian": lambda A, x, b, w: sr.normalized_hessian(A, x, b),  # regularizer dropped
}


@pytest.mark.parametrize("name", sorted(WRONG))
def test_a_wrong_closed_form_fails_the_comparison(name) -> None:
    _, fd, ad = REFERENCES[name]
    with pytest.raises(AssertionError, match="vs finite differences"):
        compare(WRONG[name], fd, ad)


def test_hvp_with_the_wrong_sign_of_k_is_caught() -> None:
    def wrong(A, x, b, w, v):
        f = _f(A, x)
        J = sr.softmax_jacobian_weights(f)
        K = sr.softmax_curvature_weights(f, f - b)
        Av = A @ v
        return A.T @ (J.matvec(J.matvec(Av)) - K.matvec(Av))
    with pytest.raises(AssertionError, match="hvp vs JAX"):
        check_hvp(wrong, HVP["normalized"][1])


# ---- the bounds: spectrum of J, the sharp constant of K -------------------------------------------

def _random_f_and_c(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    f = sr.softmax_prediction(np.eye(n), rng.standard_normal(n) * rng.uniform(0.0, 8.0))
    b = rng.dirichlet(np.ones(n)) if rng.random() < 0.5 else rng.standard_normal(n) * rng.uniform(0.1, 3.0)
    return f, f - b


def test_jacobian_weights_are_a_covariance_below_half() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        f, _ = _random_f_and_c(rng, int(rng.integers(2, 40)))
        J = sr.softmax_jacobian_weights(f).dense()
        eig = np.linalg.eigvalsh(J)
        assert eig[0] >= -1e-15 and eig[-1] <= 0.5 + 1e-15
        assert np.linalg.eigvalsh(2 * J + np.outer(f, f))[-1] <= 1 + 1e-12  # 2J + ffᵀ ⪯ I
    J = sr.softmax_jacobian_weights(np.array([0.5, 0.5, 0.0])).dense()
    assert np.linalg.eigvalsh(J)[-1] == pytest.approx(0.5, rel=1e-15)


def test_curvature_weights_obey_the_sharp_bound_and_attain_it_at_n_2() -> None:
    rng = np.random.default_rng(1)
    worst = 0.0
    for _ in range(300):
        f, c = _random_f_and_c(rng, int(rng.integers(2, 40)))
        norm = np.max(np.abs(np.linalg.eigvalsh(sr.softmax_curvature_weights(f, c).dense())))
        worst = max(worst, norm / (KAPPA * np.ptp(c)))
    assert worst <= 1 + 1e-12
    s = 0.5 + 0.5 / np.sqrt(3)  # the logistic extremum σ(1−σ) = 1/6
    K = sr.softmax_curvature_weights(np.array([s, 1 - s]), np.array([1.0, 0.0])).dense()
    assert np.max(np.abs(np.linalg.eigvalsh(K))) == pytest.approx(KAPPA, rel=1e-12)


def test_regularized_hessian_is_positive_definite_above_the_sharp_level() -> None:
    rng = np.random.default_rng(12)
    for _ in range(50):
        A = rng.standard_normal((30, 6))
        x = rng.standard_normal(6) * 2
        b = rng.standard_normal(30) if rng.random() < 0.5 else rng.dirichlet(np.ones(30))
        level = KAPPA * np.ptp(sr.normalized_residual(A, x, b))
        assert level < sr.regularization_threshold(A, x, b)
        w = np.full(30, np.sqrt(1.001 * level))
        guaranteed = np.linalg.svd(A, compute_uv=False)[-1] ** 2 * 0.001 * level
        assert np.linalg.eigvalsh(sr.regularized_hessian(A, x, b, w))[0] >= guaranteed * (1 - 1e-9)


# ---- the weight representation ---------------------------------------------------------------------

def test_weights_agree_with_dense_matrices() -> None:
    rng = np.random.default_rng(0)
    A, x, b, w = random_problem(30, 5, seed=1)
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
    np.testing.assert_allclose(sr.normalized_hessian(A, x, b) @ v, sr.normalized_hvp(A, x, b, v),
                               rtol=1e-10, atol=1e-14)


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
                       (lambda A, y, b: sr.regularized_loss(A, y, b, w),
                        lambda A, y, b: sr.regularized_gradient(A, y, b, w))):
        g = grad(A, x, b)
        numeric = float(directional_derivative(lambda y: loss(A, y, b), x, v, h=1e-4))  # noqa: B023
        scale = np.linalg.norm(g) * np.linalg.norm(v) + abs(loss(A, x, b)) + 1e-12
        assert abs(g @ v - numeric) <= 1e-6 * scale


@settings(max_examples=60, deadline=None)
@given(problems())
def test_hessians_are_symmetric_and_match_their_hvp(problem) -> None:
    A, x, b, w, rng = problem
    v = rng.standard_normal(x.shape[0])
    for H, hv, W in ((sr.normalized_hessian(A, x, b), sr.normalized_hvp(A, x, b, v),
                      sr.normalized_hessian_weights(A, x, b)),
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
