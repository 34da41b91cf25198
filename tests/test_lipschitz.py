"""Lipschitz bounds, target shifts and the attention layer: identities, bounds, validation, mutations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from softmax_icl import lipschitz as lz
from softmax_icl import notation
from softmax_icl import softmax_regression as sr
from softmax_icl.verify.legacy_ledger import all_claims, run_claim
from softmax_icl.verify import lipschitz as checks


def test_every_lipschitz_claim_verifies() -> None:
    claims = [c for c in all_claims() if c.chapter == "book/lipschitz"]
    assert {c.label for c in claims} >= {
        "lem-lip-weights",
        "thm-lip-weight-shift",
        "thm-lip-data-shift",
    }
    for claim in claims:
        for evidence in run_claim(claim):
            if evidence.kind == "bound":
                assert evidence.value <= 1.0 + checks.RATIO_TOL, claim.label
            else:
                assert evidence.value <= 1e-12, claim.label


# ---- constants -----------------------------------------------------------------------------------------


def test_constants() -> None:
    assert lz.lipschitz_constant(3.0) == 1.5
    assert lz.exp_entry_bounds(1.0) == (math.exp(-1.0), math.exp(1.0))
    assert lz.alpha_bounds(7, 0.5) == pytest.approx((7 * math.exp(-0.25), 7 * math.exp(0.25)))
    assert lz.paper_factor(200, 2.0) == pytest.approx(200**1.5 * math.exp(40.0))
    assert lz.log_paper_factor(200, 10.0) == pytest.approx(1.5 * math.log(200) + 1000.0)
    with pytest.raises(OverflowError):
        lz.paper_factor(200, 10.0)


@pytest.mark.parametrize(
    "call",
    [
        lambda: lz.lipschitz_constant(-1.0),
        lambda: lz.alpha_bounds(0, 1.0),
        lambda: lz.softmax_jacobian_norm(np.array([0.5, 0.6])),
        lambda: lz.weight_shift_target(np.ones((3, 2)), np.ones(3), np.ones(2), np.ones(3)),
        lambda: lz.data_shift_target(np.ones((3, 2)), np.ones((2, 3)), np.ones(2), np.ones(3)),
        lambda: lz.attention_layer(np.ones((3, 2)), np.ones((3, 3)), np.ones((2, 2))),
        lambda: lz.weight_step_as_data_step(np.ones((3, 2)), np.zeros(2), np.ones(2)),
        lambda: lz.gradient_step(np.ones((3, 2)), np.ones(2), np.ones(3), -1.0),
        lambda: lz.attention_step_bound(np.ones((3, 2)), np.ones((2, 2)), np.full((2, 2), np.nan)),
    ],
)
def test_bad_input_raises_value_error(call) -> None:
    with pytest.raises(ValueError):
        call()


def test_integer_input_raises_type_error() -> None:
    with pytest.raises(TypeError, match="X"):
        lz.self_attention(np.ones((3, 2), dtype=int), np.ones((2, 2)), np.ones((2, 2)))
    with pytest.raises(TypeError):
        lz.lipschitz_constant("1")


# ---- the batched kernels agree with the validated library -----------------------------------------------


def test_batched_gradient_equals_library_gradient() -> None:
    rng = np.random.default_rng(0)
    A, x, b = (
        rng.standard_normal((2, 30, 4)),
        rng.standard_normal((2, 4)),
        rng.standard_normal((2, 30)),
    )
    batched = checks.batched_gradient(A, x, b)
    for k in range(2):
        np.testing.assert_allclose(batched[k], sr.normalized_gradient(A[k], x[k], b[k]), rtol=1e-12)
        np.testing.assert_allclose(
            lz._predict(A, x)[k], sr.softmax_prediction(A[k], x[k]), rtol=1e-13
        )


def test_batched_and_scalar_ratios_agree() -> None:
    bound = checks.bound_data_shift()
    p = np.random.default_rng(1).standard_normal((5, bound.dim(6, 3, None)))
    batched = bound.ratios(p, 6, 3, 1.5, None)
    for k in range(5):
        np.testing.assert_allclose(bound.ratios(p[k], 6, 3, 1.5, None), batched[k], rtol=1e-12)


# ---- property tests ----------------------------------------------------------------------------------------


def _spectral(rng: np.random.Generator, n: int, d: int, R: float) -> np.ndarray:
    A = rng.standard_normal((n, d))
    return A * (R / np.linalg.norm(A, 2))


@settings(max_examples=40, deadline=None)
@given(
    st.integers(2, 40),
    st.integers(1, 6),
    st.floats(0.05, 4.0),
    st.floats(1e-3, 1e3),
    st.integers(0, 10**6),
)
def test_weight_shift_identity_and_bound(n: int, d: int, R: float, eta: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    A, x, b = _spectral(rng, n, d, R), rng.standard_normal(d) * R, rng.standard_normal(n)
    x_next = lz.gradient_step(A, x, b, eta)
    b_tilde = lz.weight_shift_target(A, x, x_next, b)
    np.testing.assert_allclose(
        sr.normalized_residual(A, x, b_tilde),
        sr.normalized_residual(A, x_next, b),
        rtol=1e-10,
        atol=1e-14,
    )
    slack = 1e-12 * (1 + np.linalg.norm(b))
    assert (
        np.linalg.norm(b_tilde - b)
        <= lz.lipschitz_constant(R) * np.linalg.norm(x_next - x) * (1 + 1e-9) + slack
    )


@settings(max_examples=40, deadline=None)
@given(
    st.integers(2, 40),
    st.integers(1, 6),
    st.floats(0.05, 4.0),
    st.floats(0.0, 3.0),
    st.integers(0, 10**6),
)
def test_data_shift_identity_and_bounds(n: int, d: int, R: float, scale: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, d))
    W, W_V = rng.standard_normal((2, d, d)) * scale
    x = rng.standard_normal(d)
    x *= R / np.linalg.norm(x)
    b = rng.dirichlet(np.ones(n))
    A_next = lz.attention_layer(A, W, W_V)
    step = A_next - A
    b_tilde = lz.data_shift_target(A, A_next, x, b)
    np.testing.assert_allclose(
        sr.normalized_loss(A, x, b_tilde), sr.normalized_loss(A_next, x, b), rtol=1e-9, atol=1e-15
    )
    tol = 1 + 1e-9
    assert (
        np.linalg.norm(b_tilde - b)
        <= lz.lipschitz_constant(R) * np.linalg.norm(step, 2) * tol + 1e-13
    )
    assert np.max(np.linalg.norm(step, axis=1)) <= lz.attention_step_row_bound(A, W_V) * tol
    assert np.linalg.norm(step, 2) <= lz.attention_step_bound(A, W, W_V) * tol


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 50), st.floats(0.01, 10.0), st.integers(0, 10**6))
def test_jacobian_norm_at_most_half(n: int, concentration: float, seed: int) -> None:
    p = np.random.default_rng(seed).dirichlet(np.full(n, concentration))
    p = p / p.sum()
    assert 0.0 <= lz.softmax_jacobian_norm(p) <= 0.5 + 1e-15
    assert lz.softmax_jacobian_norm(p) <= np.max(p) + 1e-15


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 30), st.integers(1, 6), st.integers(0, 10**6))
def test_attention_rows_are_regressions(n: int, d: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    X, W = rng.standard_normal((n, d)), rng.standard_normal((d, d))
    xs = lz.attention_as_regression_weights(X, W)
    np.testing.assert_allclose(
        notation.softmax(X @ W @ X.T),
        np.stack([sr.softmax_prediction(X, xj) for xj in xs]),
        rtol=1e-12,
        atol=1e-300,
    )


# ---- a wrong constant or construction is caught -------------------------------------------------------------


def test_too_small_lipschitz_constant_is_caught() -> None:
    with pytest.raises(AssertionError):
        checks.check_lipschitz_x(constant=lambda R: 0.45 * R)
    with pytest.raises(AssertionError):
        checks.check_lipschitz_data(constant=lambda R: 0.45 * R)
    with pytest.raises(AssertionError):
        checks.check_lipschitz_x_tight(constant=lambda R: 0.49 * R)


def test_overly_tight_jacobian_bound_is_caught() -> None:
    with pytest.raises(AssertionError):
        checks.check_jacobian_norm_bound(norm=lambda p: 1.05 * lz._jacobian_norm(p))


def test_wrong_exp_bounds_are_caught() -> None:
    with pytest.raises(AssertionError):
        checks.check_exp_bounds(entry_bounds=lambda R: (math.exp(-R * R), math.exp(0.9 * R * R)))


def test_wrong_target_shift_is_caught() -> None:
    def wrong(A, x_t, x_next, b):
        return b + (sr.softmax_prediction(A, x_next) - sr.softmax_prediction(A, x_t))  # noqa: E731

    with pytest.raises(AssertionError):
        checks.check_weight_shift_identity(target=wrong)

    def wrong_data(A_t, A_next, x, b):
        return b - (sr.softmax_prediction(A_next, x) - sr.softmax_prediction(A_t, x)) / 2  # noqa: E731

    with pytest.raises(AssertionError):
        checks.check_data_shift_identity(target=wrong_data)


def test_attention_step_bound_without_the_sqrt_n_cap_is_caught() -> None:
    def no_cap(X, W, W_V):
        return np.linalg.norm(
            X @ W_V, 2, axis=(-2, -1)
        )  # forgets the factor ‖S‖₂ ≤ min(√n, e^{ρ²‖W‖})

    with pytest.raises(AssertionError):
        checks.check_attention_step_bounds(step_bound=no_cap)


def test_wrong_attention_regression_weights_are_caught() -> None:
    with pytest.raises(AssertionError):
        checks.check_attention_regression_numeric(weights=lambda X, W: X @ W.T)


def test_wrong_rank_one_data_step_is_caught() -> None:
    wrong = lambda A, x_t, x_next: A + np.outer(A @ (x_next - x_t), x_t) / np.linalg.norm(x_t)  # noqa: E731
    with pytest.raises(AssertionError):
        checks.check_correspondence(as_data_step=wrong)


def test_paper_factor_check_catches_a_smaller_factor() -> None:
    with pytest.raises(AssertionError):
        checks.check_paper_factor_bound(log_factor=lambda n, R: 1.5 * math.log(n) + R * R - 3.0)


def test_search_finds_a_planted_violation() -> None:
    """The adversarial search must climb above 1 when the bound is false only in a small region."""

    def ratios(p, n, d, R, k):
        return np.exp(-np.sum((p - 2.0) ** 2, axis=-1))[..., None] * 1.2

    bound = checks.Bound("planted", ("planted",), lambda n, d, k: 3, ratios)
    assert checks.adversarial_search(bound, 1, 1, 1.0, restarts=2).worst > 1.0
