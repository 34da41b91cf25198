"""Notation helpers: the library's vec, unvec, kron and softmax against independent routes, and
bad input. The chapter derives the identities; these tests hold the library to them."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from softmax_icl import notation

dims = st.integers(1, 5)


@settings(max_examples=40, deadline=None)
@given(dims, dims, dims, dims, st.integers(0, 2**32 - 1))
def test_row_and_column_vec_identities(m: int, p: int, q: int, k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    A, X, B = rng.standard_normal((m, p)), rng.standard_normal((p, q)), rng.standard_normal((k, q))
    np.testing.assert_allclose(notation.kron(A, B) @ notation.vec(X), notation.vec(A @ X @ B.T),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(notation.kron(B, A) @ notation.vec(X, "column"),
                               notation.vec(A @ X @ B.T, "column"), rtol=1e-12, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(dims, dims, dims, dims, st.integers(0, 2**32 - 1))
def test_kron_matches_numpy_entry_by_entry(m: int, p: int, k: int, q: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    A, B = rng.standard_normal((m, p)), rng.standard_normal((k, q))
    np.testing.assert_array_equal(notation.kron(A, B), np.kron(A, B))


def test_softmax_survives_logits_of_size_1000() -> None:
    z = np.array([1000.0, 999.0, -1000.0])
    e = np.exp(-1.0)
    np.testing.assert_allclose(notation.softmax(z), [1 / (1 + e), e / (1 + e), 0.0], rtol=1e-15, atol=1e-300)
    assert notation.log_sum_exp(z) == pytest.approx(1000.0 + np.log1p(e), rel=1e-15)


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
