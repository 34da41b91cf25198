"""Notation helpers and the checks of the notation chapter, including that wrong versions fail."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from softmax_icl import notation
from softmax_icl.verify.legacy_ledger import all_claims, run_claim
from softmax_icl.verify import notation as checks


def test_every_notation_claim_verifies() -> None:
    for claim in all_claims():
        if claim.chapter == "book/notation":
            assert all(e.value <= 1e-12 for e in run_claim(claim)), claim.label


def swapped_numeric_kron(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    return notation.kron(B, A)


def test_wrong_kronecker_order_is_detected_symbolically() -> None:
    swapped = lambda A, B: sp.kronecker_product(B, A)  # noqa: E731
    # Square factors keep the shapes compatible, so only the values can reveal the swap.
    with pytest.raises(AssertionError, match="vec_r"):
        assert checks.is_zero_matrix(checks.vec_kron_row_residual(2, 2, 2, 2, kron=swapped)), "vec_r"
    with pytest.raises(AssertionError):
        checks.check_vec_column_symbolic(kron=lambda P, Q: sp.kronecker_product(Q, P))


@pytest.mark.parametrize("check", [checks.check_vec_row_numeric, checks.check_vec_column_numeric])
def test_wrong_kronecker_order_is_detected_numerically(check) -> None:
    with pytest.raises(AssertionError):
        check(kron=swapped_numeric_kron)


def misindexed_kron(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """A plausible bug: the four axes flattened in the order (i, j, l, s) instead of (i, l, j, s)."""
    return (A[:, :, None, None] * B[None, None, :, :]).reshape(A.shape[0] * B.shape[0], A.shape[1] * B.shape[1])


@pytest.mark.parametrize("check", [checks.check_vec_row_numeric, checks.check_vec_column_numeric,
                                   checks.check_kron_mixed_product_numeric, checks.check_kron_transpose_numeric])
def test_misindexed_kronecker_product_is_detected(check) -> None:
    with pytest.raises(AssertionError):
        check(kron=misindexed_kron)


def test_naive_softmax_fails_the_stability_check() -> None:
    naive = lambda z: np.exp(z) / np.exp(z).sum()  # noqa: E731
    with np.errstate(over="ignore", invalid="ignore"), pytest.raises(AssertionError):
        checks.check_softmax_numeric(softmax=naive)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.integers(1, 30), elements=st.floats(-1000, 1000)))
def test_softmax_is_a_probability_vector(z: np.ndarray) -> None:
    p = notation.softmax(z)
    assert np.all(p >= 0) and abs(p.sum() - 1) < 1e-12
    assert notation.log_sum_exp(z) == pytest.approx(np.max(z) + np.log(np.sum(np.exp(z - np.max(z)))))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.sampled_from(["row", "column"]))
def test_unvec_inverts_vec(rows: int, cols: int, order: str) -> None:
    X = np.arange(rows * cols, dtype=float).reshape(rows, cols)
    np.testing.assert_array_equal(notation.unvec(notation.vec(X, order), (rows, cols), order), X)


def test_softmax_of_matrix_acts_on_rows() -> None:
    Z = np.random.default_rng(0).standard_normal((4, 7))
    np.testing.assert_allclose(notation.softmax(Z), np.stack([notation.softmax(z) for z in Z]), rtol=1e-15)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: notation.vec(np.ones(3)), ValueError, r"X must be 2-D with shape \(any, any\), got shape \(3,\)"),
        (lambda: notation.vec(np.ones((2, 2)), "diagonal"), ValueError, "order must be 'row'"),
        (lambda: notation.unvec(np.ones(5), (2, 3)), ValueError, r"v must have shape \(6,\), got \(5,\)"),
        (lambda: notation.kron(np.ones((2, 2), dtype=int), np.ones((2, 2))), TypeError, "A must be a real floating"),
        (lambda: notation.softmax(np.array([1.0, np.nan])), ValueError, r"z must be finite; entry \(1,\) is nan"),
        (lambda: notation.log_sum_exp(np.array([])), ValueError, "z must be non-empty"),
        (lambda: notation.kron(np.ones((2, 2)), np.ones((2, 2, 2))), ValueError, "B must be 2-D"),
    ],
)
def test_bad_input_gets_a_clear_error(call, error, message) -> None:
    with pytest.raises(error, match=message):
        call()
