"""The verification helpers: known derivatives pass, wrong ones are caught, errors are located."""

from __future__ import annotations

import numpy as np
import pytest
from softmax_icl import checks


def cubic(x: np.ndarray) -> float:
    return float(np.sum(x**3) + x[0] * x[-1])


def cubic_grad(x: np.ndarray) -> np.ndarray:
    g = 3 * x**2
    g[0] += x[-1]
    g[-1] += x[0]
    return g


def cubic_hessian(x: np.ndarray) -> np.ndarray:
    H = np.diag(6 * x)
    H[0, -1] += 1.0
    H[-1, 0] += 1.0
    return H


@pytest.fixture
def x() -> np.ndarray:
    return np.random.default_rng(1).standard_normal(6)


def test_numerical_gradient_of_known_function(x: np.ndarray) -> None:
    checks.assert_close(checks.numerical_gradient(cubic, x), cubic_grad(x), rtol=1e-9, name="gradient")


def test_numerical_hessian_with_and_without_gradient(x: np.ndarray) -> None:
    checks.assert_close(checks.numerical_hessian(cubic, x, grad=cubic_grad), cubic_hessian(x), rtol=1e-9)
    checks.assert_close(checks.numerical_hessian(cubic, x), cubic_hessian(x), rtol=1e-6)


def test_numerical_jacobian_of_matrix_function() -> None:
    M = np.random.default_rng(2).standard_normal((3, 4))
    X = np.random.default_rng(3).standard_normal((4, 2))
    J = checks.numerical_jacobian(lambda Y: M @ Y, X)
    assert J.shape == (3, 2, 4, 2)
    expected = np.einsum("ik,jl->ijkl", M, np.eye(2))
    checks.assert_close(J, expected, rtol=1e-10)


def test_gradient_of_matrix_argument() -> None:
    X = np.random.default_rng(4).standard_normal((3, 5))
    checks.assert_close(checks.numerical_gradient(lambda Y: float(np.sum(np.sin(Y))), X), np.cos(X), rtol=1e-9)


def test_directional_checks_pass_for_correct_derivatives(x: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    r = checks.check_gradient(cubic, cubic_grad, x, rng, rtol=1e-8)
    assert r.passed and r.worst_relative_error < 1e-8
    r2 = checks.check_hessian_vector(cubic_grad, lambda y, v: cubic_hessian(y) @ v, x, rng, rtol=1e-8)
    assert r2.passed


def test_wrong_gradient_is_caught(x: np.ndarray) -> None:
    wrong = lambda y: cubic_grad(y) - np.eye(len(y))[0] * y[-1]  # noqa: E731  drops the coupling term
    with pytest.raises(AssertionError, match="directional derivative"):
        checks.check_gradient(cubic, wrong, x, np.random.default_rng(0), rtol=1e-6)


def test_wrong_hessian_vector_product_is_caught(x: np.ndarray) -> None:
    wrong = lambda y, v: np.diag(6 * y) @ v  # noqa: E731  forgets the off-diagonal entries
    with pytest.raises(AssertionError, match="Hessian-vector product"):
        checks.check_hessian_vector(cubic_grad, wrong, x, np.random.default_rng(0), rtol=1e-6)


def test_assert_close_reports_worst_entry() -> None:
    expected = np.zeros((3, 4))
    expected[0, 0] = 10.0
    actual = expected.copy()
    actual[2, 1] = 0.5
    with pytest.raises(AssertionError, match=r"5\.000e-02 exceeds rtol 1\.0e-03 at index \(2, 1\)"):
        checks.assert_close(actual, expected, rtol=1e-3, name="demo")
    result = checks.relative_error(actual, expected)
    assert result.index == (2, 1) and result.worst_relative_error == pytest.approx(0.05)


def test_assert_close_rejects_shape_mismatch_and_nan() -> None:
    with pytest.raises(ValueError, match="shape"):
        checks.assert_close(np.zeros(3), np.zeros(4), rtol=1.0)
    with pytest.raises(AssertionError):
        checks.assert_close(np.array([np.nan, 1.0]), np.array([1.0, 1.0]), rtol=1.0)


def test_gradient_of_nonscalar_function_is_rejected(x: np.ndarray) -> None:
    with pytest.raises(ValueError, match="scalar"):
        checks.numerical_gradient(lambda y: y, x)
