"""Multiple softmax regression through the tensor trick: the chapter's checks, wrong versions caught,
validation, the memory guard, properties, overflow behaviour and the solvers."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from softmax_icl import multiple_softmax_regression as msr
from softmax_icl import notation
from softmax_icl.verify import multiple_softmax_regression as checks

FAST_CHECKS = [
    checks.check_tensor_trick_symbolic, checks.check_tensor_trick_numeric,
    checks.check_sum_of_regressions_symbolic, checks.check_sum_of_regressions_numeric,
    checks.check_kronecker_derivatives_numeric, checks.check_kronecker_free_numeric,
    checks.check_kronecker_spectrum_symbolic, checks.check_kronecker_spectrum_numeric, checks.bound_curvature_transfer,
    checks.check_flat_directions_symbolic, checks.check_flat_directions_numeric,
    checks.check_icl_symbolic, checks.check_icl_numeric,
]


@pytest.mark.parametrize("check", FAST_CHECKS, ids=lambda c: c.__name__)
def test_fast_checks_pass(check) -> None:
    evidence = check()
    if evidence.kind == "bound":
        assert evidence.value <= 1 + 1e-10
    else:
        assert evidence.value <= 1e-6


def test_symbolic_derivative_checks_pass() -> None:
    assert checks.check_kronecker_derivatives_symbolic().kind == "symbolic"
    assert checks.check_kronecker_free_symbolic().kind == "symbolic"
    assert checks.check_lipschitz_symbolic().kind == "symbolic"


def test_autodiff_checks_pass() -> None:
    assert checks.check_kronecker_free_autodiff().value <= 1e-10
    assert checks.check_kronecker_derivatives_autodiff().value <= 1e-10


@pytest.mark.parametrize("bound", [checks.bound_weights, checks.bound_first_factor, checks.bound_second_factor,
                                   checks.bound_target], ids=lambda c: c.__name__)
def test_lipschitz_bounds_hold_and_are_tight(bound) -> None:
    evidence = bound()
    assert 0.9 < evidence.value <= 1 + 1e-9


def test_extremal_family_approaches_one() -> None:
    ratios = [checks.extremal_ratio(eps) for eps in (1e-1, 1e-2, 1e-3)]
    assert all(r <= 1 for r in ratios) and ratios == sorted(ratios) and ratios[-1] > 1 - 1e-6


def test_the_weight_constant_is_wrong_for_a_data_shift() -> None:
    assert checks.wrong_first_factor_constant_counterexample() > 1


# ---- a wrong implementation is caught ----------------------------------------------------------------

def swapped_kronecker_data(A1: np.ndarray, A2: np.ndarray, max_bytes: int = msr.KRONECKER_MEMORY_LIMIT) -> np.ndarray:
    return notation.kron(A2, A1)


def swapped_block(A1: np.ndarray, A2: np.ndarray, j: int) -> np.ndarray:
    return notation.kron(A2[j:j + 1, :], A1)


def test_swapped_kronecker_order_is_caught() -> None:
    with pytest.raises(AssertionError):
        checks.check_tensor_trick_numeric(kronecker_data=swapped_kronecker_data)
    with pytest.raises(AssertionError):
        checks.check_tensor_trick_numeric(kronecker_block=swapped_block)
    with pytest.raises(AssertionError):
        checks.check_tensor_trick_symbolic(kron=lambda P, Q: sp.kronecker_product(Q, P))
    with pytest.raises(AssertionError):
        checks.check_kronecker_derivatives_symbolic(kron=lambda P, Q: sp.kronecker_product(Q, P))


def wrong_P(F: np.ndarray, C: np.ndarray) -> np.ndarray:
    """A plausible slip: the normalizing term uses rowsum(C) instead of rowsum(F∘C)."""
    return F * C - C.sum(axis=1, keepdims=True) * F


def transposed_P(F: np.ndarray, C: np.ndarray) -> np.ndarray:
    """Another: the Jacobian applied along columns instead of rows."""
    return (F * C - (F * C).sum(axis=0, keepdims=True) * F)


@pytest.mark.parametrize("P", [wrong_P, transposed_P])
def test_wrong_P_formula_is_caught_symbolically(P) -> None:
    with pytest.raises(AssertionError, match="A₁ᵀ P A₂"):
        checks.check_kronecker_free_symbolic(normalized_P=P)


def test_wrong_Q_formula_is_caught_symbolically() -> None:
    def wrong_Q(F, B, T):
        return msr._normalized_Q(F, B, T) - msr._jacobian_rows(F, T) * (F - B)   # drops the Ḟ∘C term
    with pytest.raises(AssertionError, match="A₁ᵀ Q A₂"):
        checks.check_kronecker_free_symbolic(normalized_Q=wrong_Q)


def test_wrong_gradient_and_hvp_are_caught_numerically() -> None:
    def wrong_gradient(A1, A2, X, B):
        F = msr.softmax_prediction(A1, A2, X)
        return A1.T @ wrong_P(F, F - B) @ A2

    def transposed_hvp(A1, A2, X, B, V):
        return msr.normalized_hvp(A1, A2, X, B, V).T

    functions = {"normalized": (msr.normalized_loss, wrong_gradient, msr.normalized_hvp)}
    with pytest.raises(AssertionError):
        checks.check_kronecker_free_numeric(functions=functions, seeds=(0,))
    functions = {"normalized": (msr.normalized_loss, msr.normalized_gradient, transposed_hvp)}
    with pytest.raises(AssertionError):
        checks.check_kronecker_free_numeric(functions=functions, seeds=(0,))


def test_wrong_hessian_and_loss_are_caught() -> None:
    wrong_hessian = lambda A1, A2, X, B: msr.normalized_hessian(A2, A1, X, B)  # noqa: E731
    with pytest.raises(AssertionError):
        checks.check_kronecker_derivatives_numeric(hessians={"normalized": wrong_hessian})
    transposed_loss = lambda A1, A2, X, B: msr.normalized_loss(A1, A2, X, B.T)  # noqa: E731
    with pytest.raises(AssertionError):
        checks.check_sum_of_regressions_numeric(loss_fns={"normalized": transposed_loss})


def test_wrong_singular_values_and_target_are_caught() -> None:
    with pytest.raises(AssertionError):
        checks.check_kronecker_spectrum_numeric(
            singular_values=lambda A1, A2: np.sort(np.add.outer(np.linalg.svd(A1, compute_uv=False),
                                                                np.linalg.svd(A2, compute_uv=False)).ravel())[::-1])
    with pytest.raises(AssertionError):
        checks.check_icl_numeric(equivalent_target=lambda A1, A2, X, B, **kw: B)


def test_a_symbolic_zero_test_that_would_pass_anything_is_not_used() -> None:
    x = sp.Symbol("x")
    assert not checks.is_zero_rational(x / (1 + x) - 1)
    assert not checks.vanishes_at_rational_points(sp.Matrix([x / (1 + x) - 1]))
    assert checks.vanishes_at_rational_points(sp.Matrix([x / (1 + x) + 1 / (1 + x) - 1]))


# ---- the memory guard ------------------------------------------------------------------------------

def test_explicit_kronecker_is_refused_with_the_memory_it_would_need() -> None:
    A = np.zeros((4096, 128))
    with pytest.raises(msr.KroneckerTooLargeError, match=r"2 TiB"):
        msr.kronecker_data(A, A)
    with pytest.raises(MemoryError, match="limit of 1 GiB"):
        msr.kronecker_gradient(np.zeros((256, 64)), np.zeros((256, 64)), np.zeros((64, 64)), np.zeros((256, 256)))
    assert msr.kronecker_bytes(64, 16) == 8 * 2**20
    assert msr.kronecker_bytes(256, 64) == 2 * 2**30
    assert msr.kronecker_data(np.ones((3, 2)), np.ones((3, 2)), max_bytes=288).shape == (9, 4)
    with pytest.raises(MemoryError):
        msr.kronecker_data(np.ones((3, 2)), np.ones((3, 2)), max_bytes=287)


def test_dense_hessian_is_guarded() -> None:
    A1, A2, X, B, _ = checks.random_instance(10, 6, 0)
    with pytest.raises(MemoryError, match="Hessian-vector product"):
        msr.normalized_hessian(A1, A2, X, B, max_bytes=1000)


# ---- validation ----------------------------------------------------------------------------------------

def test_validation_errors_name_the_argument() -> None:
    A1, A2, X, B, V = checks.random_instance(5, 3, 0)
    with pytest.raises(ValueError, match="A2"):
        msr.normalized_loss(A1, A2[:, :2], X, B)
    with pytest.raises(ValueError, match="X"):
        msr.normalized_gradient(A1, A2, X[:2], B)
    with pytest.raises(ValueError, match="B"):
        msr.rescaled_loss(A1, A2, X, B[:4])
    with pytest.raises(ValueError, match="V"):
        msr.normalized_hvp(A1, A2, X, B, V[:, :1])
    with pytest.raises(TypeError, match="A1"):
        msr.logits(A1.astype(int), A2, X)
    with pytest.raises(ValueError, match="finite"):
        msr.softmax_prediction(A1, A2, np.full_like(X, np.nan))
    with pytest.raises(ValueError, match="row index"):
        msr.kronecker_block(A1, A2, 5)
    with pytest.raises(ValueError, match="loss"):
        msr.kronecker_loss(A1, A2, X, B, loss="other")
    with pytest.raises(ValueError, match="loss"):
        msr.gradient_descent(A1, A2, B, X, 0.1, 3, loss="other")


# ---- properties ------------------------------------------------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(st.integers(2, 9), st.integers(1, 4), st.integers(0, 10**6), st.floats(0.1, 5.0))
def test_kronecker_free_equals_per_block_route(n: int, d: int, seed: int, scale: float) -> None:
    A1, A2, X, B, V = checks.random_instance(n, d, seed, scale)
    for loss in ("normalized", "rescaled"):
        value = getattr(msr, f"{loss}_loss")(A1, A2, X, B)
        np.testing.assert_allclose(value, msr.kronecker_loss(A1, A2, X, B, loss), rtol=1e-11)
        np.testing.assert_allclose(getattr(msr, f"{loss}_gradient")(A1, A2, X, B),
                                   msr.kronecker_gradient(A1, A2, X, B, loss), rtol=1e-9, atol=1e-12 * (1 + value))
        np.testing.assert_allclose(getattr(msr, f"{loss}_hvp")(A1, A2, X, B, V),
                                   msr.kronecker_hvp(A1, A2, X, B, V, loss), rtol=1e-9, atol=1e-11 * (1 + value))


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 9), st.integers(1, 4), st.integers(0, 10**6))
def test_hessians_are_symmetric_and_match_the_hvp(n: int, d: int, seed: int) -> None:
    A1, A2, X, B, V = checks.random_instance(n, d, seed)
    for loss in ("normalized", "rescaled"):
        H = getattr(msr, f"{loss}_hessian")(A1, A2, X, B)
        np.testing.assert_array_equal(H, H.T)
        hv = getattr(msr, f"{loss}_hvp")(A1, A2, X, B, V)
        np.testing.assert_allclose(H @ notation.vec(V), notation.vec(hv), rtol=1e-9, atol=1e-12 * np.abs(H).max())


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 12), st.integers(1, 5), st.integers(0, 10**6), st.floats(0.1, 10.0), st.floats(1e-6, 1.0))
def test_lipschitz_bounds_hold_on_random_instances(n: int, d: int, seed: int, scale: float, step: float) -> None:
    rng = np.random.default_rng(seed)
    A1, A2, X, B, _ = checks.random_instance(n, d, seed, scale)
    for name, (_, shape) in checks.RATIOS.items():
        Bref = B if name.startswith("gradient") else None
        assert checks._perturbed(name, A1, A2, X, step * rng.standard_normal(shape(n, d)), Bref) <= 1 + 1e-9


def test_softmax_rows_and_stability_at_large_logits() -> None:
    A1, A2, X, B, V = checks.random_instance(50, 5, 0)
    Z = msr.logits(A1, A2, X)
    Xbig = X * (1000.0 / np.abs(Z).max())
    F = msr.softmax_prediction(A1, A2, Xbig)
    np.testing.assert_allclose(F.sum(axis=1), 1.0, rtol=1e-14)
    for fn in (msr.normalized_gradient, msr.normalized_hessian):
        assert np.all(np.isfinite(fn(A1, A2, Xbig, B)))
    assert np.all(np.isfinite(msr.normalized_hvp(A1, A2, Xbig, B, V)))
    with pytest.raises(OverflowError, match="normalized"):
        msr.rescaled_gradient(A1, A2, Xbig, B)


def test_rescaled_is_the_row_weighted_normalized_loss() -> None:
    A1, A2, X, B, _ = checks.random_instance(30, 4, 3)
    alpha = np.exp(msr.logits(A1, A2, X)).sum(axis=1)
    F = msr.softmax_prediction(A1, A2, X)
    np.testing.assert_allclose(msr.rescaled_loss(A1, A2, X, B), 0.5 * np.sum(alpha[:, None] ** 2 * (F - B) ** 2),
                               rtol=1e-12)


def test_solvers_reach_a_realizable_minimum() -> None:
    A1, A2, Xstar, _, _ = checks.random_instance(40, 4, 0)
    B = msr.softmax_prediction(A1, A2, Xstar)
    X0 = np.zeros((4, 4))
    newton = msr.newton_cg(A1, A2, B, X0, iterations=30)
    assert newton.losses[-1] < 1e-15 and newton.losses[-1] <= newton.losses[0] * 1e-15
    np.testing.assert_allclose(newton.X, Xstar, atol=1e-6)
    step = 1.0 / np.linalg.eigvalsh(msr.normalized_hessian(A1, A2, Xstar, B))[-1]
    gd = msr.gradient_descent(A1, A2, B, X0, step=step, iterations=50)
    assert gd.losses.shape == (51,) and np.all(np.diff(gd.losses) <= 0) and gd.losses[-1] < 1e-3 * gd.losses[0]
