"""The chapters' generic tools: the symbolic toolkit, the JAX cross-checks, the worst-ratio search."""

from __future__ import annotations

from fractions import Fraction

import jax.numpy as jnp
import numpy as np
import pytest
import sympy as sp
from softmax_icl import autodiff, worst_case
from softmax_icl import symbolic as sy


def test_matrices_are_independent_real_symbols_of_the_requested_shape() -> None:
    A = sy.matrix("a", 2, 3)
    assert A.shape == (2, 3) and len(A.free_symbols) == 6 and all(s.is_real for s in A.free_symbols)
    assert sy.vector("x", 4).shape == (4, 1)
    assert sy.row_vec(sp.Matrix([[1, 2], [3, 4]])) == sp.Matrix([1, 2, 3, 4])


def test_exact_zero_through_exponentials() -> None:
    z = sy.vector("z", 3)
    t = sp.Symbol("t", real=True)
    f = sy.softmax(z)
    assert sy.is_zero(sy.softmax(z + t * sp.ones(3, 1)) - f)  # needs exp(z_i + t) = exp(z_i) exp(t)
    assert sy.is_zero(f.jacobian(z) - (sp.diag(*f) - f * f.T))
    assert sy.nonzero_entries(f.jacobian(z) - sp.diag(*f)) == 9  # a dropped term is caught
    assert not sy.is_zero(sp.exp(z[0]) - sp.exp(z[1]))
    assert sy.is_zero(sp.exp(2 * z[0]) - sp.exp(z[0]) ** 2)


def test_assert_zero_names_what_failed() -> None:
    x = sp.Symbol("x")
    assert sy.assert_zero(sp.Matrix([(x + 1) ** 2 - x**2 - 2 * x - 1]), "square") == 0
    with pytest.raises(AssertionError, match="square: 1 entries"):
        sy.assert_zero(sp.Matrix([(x + 1) ** 2 - x**2 - 1]), "square")


def test_show_renders_latex() -> None:
    from IPython.core.formatters import format_display_data
    from IPython.display import Math

    shown = []
    import IPython.display

    original = IPython.display.display
    IPython.display.display = lambda obj: shown.append(obj)
    try:
        sy.show(sp.Symbol("x"), sp.Integer(1))
    finally:
        IPython.display.display = original
    (obj,) = shown
    assert isinstance(obj, Math) and "x = 1" in format_display_data(obj)[0]["text/latex"]


def test_random_rationals_are_exact_and_the_degree_bound_is_right() -> None:
    x, y = sp.symbols("x y")
    point = sy.random_rationals([x, y], np.random.default_rng(0), size=100)
    assert all(isinstance(v, sp.Rational) and abs(v) <= 1 for v in point.values())
    assert sy.schwartz_zippel(3, 100, 2) == Fraction(3, 201) ** 2
    with pytest.raises(ValueError, match="degree must be a positive integer"):
        sy.schwartz_zippel(0, 100)


def test_autodiff_helpers_agree_with_known_derivatives() -> None:
    x = np.array([0.5, -1.0, 2.0])
    fun = lambda v: jnp.sum(v**3) + v[0] * v[1]  # noqa: E731
    np.testing.assert_allclose(autodiff.gradient(fun, x), 3 * x**2 + [x[1], x[0], 0], rtol=1e-15)
    H = np.diag(6 * x) + np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]])
    np.testing.assert_allclose(autodiff.hessian(fun, x), H, rtol=1e-15)
    v = np.array([1.0, 2.0, -1.0])
    np.testing.assert_allclose(autodiff.hessian_vector_product(fun, x, v), H @ v, rtol=1e-15)
    assert autodiff.gradient(fun, x).dtype == np.float64
    with pytest.raises(ValueError, match="v must have the shape of x"):
        autodiff.hessian_vector_product(fun, x, np.ones(2))


def test_worst_ratio_finds_the_maximum_of_a_known_ratio() -> None:
    # max of 2 p0 / (1 + p0²) is 1, at p0 = 1, far from the typical random sample at small scale.
    ratio = lambda p: 2 * p[0] / (1 + p[0] ** 2) - 0.1 * p[1] ** 2  # noqa: E731
    found = worst_case.worst_ratio(ratio, 2, np.random.default_rng(0), samples=50, restarts=2)
    assert found.ratio == pytest.approx(1.0, abs=1e-8)
    assert found.ratio >= found.random_ratio and found.evaluations > 50
    np.testing.assert_allclose(found.params, [1.0, 0.0], atol=1e-4)


def test_worst_ratio_rejects_bad_input() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        worst_case.worst_ratio(lambda p: 0.0, 0, rng)
    with pytest.raises(ValueError, match="not finite at any random sample"):
        worst_case.worst_ratio(lambda p: float("nan"), 2, rng, samples=5)
    with pytest.raises(TypeError, match="rng must be"):
        worst_case.worst_ratio(lambda p: 0.0, 2, 0)
