"""The Lipschitz library: closed forms, validation, property tests of the bounds, the sweep script."""

from __future__ import annotations

import importlib.util
import json
import math
import pathlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from softmax_icl import lipschitz as lz
from softmax_icl import notation
from softmax_icl import softmax_regression as sr

ROOT = pathlib.Path(__file__).resolve().parents[1]

# ---- constants -----------------------------------------------------------------------------------------


def test_constants() -> None:
    assert lz.lipschitz_constant(3.0) == 1.5
    assert lz.exp_entry_bounds(1.0) == (math.exp(-1.0), math.exp(1.0))
    assert lz.alpha_bounds(7, 0.5) == pytest.approx((7 * math.exp(-0.25), 7 * math.exp(0.25)))
    assert lz.paper_factor(200, 2.0) == pytest.approx(200**1.5 * math.exp(40.0))
    assert lz.log_paper_factor(200, 10.0) == pytest.approx(1.5 * math.log(200) + 1000.0)
    with pytest.raises(OverflowError):
        lz.paper_factor(200, 10.0)


def test_extreme_entries_closed_forms() -> None:
    n, R = 8, 1.3
    c = R * R * math.sqrt(n / (n - 1))
    assert lz.largest_softmax_entry(n, R) == pytest.approx(1 / (1 + (n - 1) * math.exp(-c)), rel=1e-15)
    low, attained = lz.smallest_softmax_entry_bounds(n, R)
    assert low == pytest.approx(1 / (1 + (n - 1) * math.exp(math.sqrt(2) * R * R)), rel=1e-15)
    assert attained == pytest.approx(1 / (1 + (n - 1) * math.exp(c)), rel=1e-15)
    # n = 2: the two bounds on the smallest entry coincide, and the largest is their complement
    low2, attained2 = lz.smallest_softmax_entry_bounds(2, R)
    assert low2 == pytest.approx(attained2, rel=1e-14)
    assert lz.largest_softmax_entry(2, R) == pytest.approx(1 - attained2, rel=1e-14)
    assert lz.largest_softmax_entry(1, R) == 1.0 and lz.smallest_softmax_entry_bounds(1, R) == (1.0, 1.0)
    # no overflow at large R, no division by zero at R = 0
    assert lz.largest_softmax_entry(5, 40.0) == 1.0
    assert lz.smallest_softmax_entry_bounds(5, 40.0) == (0.0, 0.0)
    assert lz.largest_softmax_entry(5, 0.0) == pytest.approx(0.2)


def test_largest_entry_is_attained_at_the_stated_point() -> None:
    for n, R in ((3, 0.5), (50, 1.0), (400, 2.0)):
        z = R * R * np.r_[n - 1, -np.ones(n - 1)] / math.sqrt(n * (n - 1))
        assert np.linalg.norm(z) == pytest.approx(R * R)
        p = notation.softmax(z)
        assert p.max() == pytest.approx(lz.largest_softmax_entry(n, R), rel=1e-13)
        assert notation.softmax(-z).min() == pytest.approx(lz.smallest_softmax_entry_bounds(n, R)[1], rel=1e-12)


def test_ball_constants() -> None:
    assert lz.ball_lipschitz_constant(2, 1.7) == pytest.approx(0.85)
    assert lz.ball_lipschitz_lower_bound(2, 1.7) == pytest.approx(0.85)
    n, R = 512, 1.0
    P = lz.largest_softmax_entry(n, R)
    assert lz.ball_lipschitz_constant(n, R) == pytest.approx(R * P)
    assert lz.ball_lipschitz_lower_bound(n, R) == pytest.approx(R * P * (1 - P + (1 - P) / (n - 1)))
    # n ≥ 3: the lower bound is below R/2 for every R and tends to it as R grows
    for n in (3, 8, 100):
        for R in (0.1, 1.0, 2.0, 5.0):
            assert lz.ball_lipschitz_lower_bound(n, R) <= lz.ball_lipschitz_constant(n, R) + 1e-15
            assert lz.ball_lipschitz_lower_bound(n, R) < R / 2
        assert lz.ball_lipschitz_lower_bound(n, 8.0) / 4.0 > 0.999
    # κ shrinks like R e^{R²} / n
    assert 1000 * lz.ball_lipschitz_constant(1000, 1.0) / math.e == pytest.approx(1.0, rel=1e-2)


@pytest.mark.parametrize(
    "call",
    [
        lambda: lz.lipschitz_constant(-1.0),
        lambda: lz.alpha_bounds(0, 1.0),
        lambda: lz.largest_softmax_entry(0, 1.0),
        lambda: lz.smallest_softmax_entry_bounds(3, float("nan")),
        lambda: lz.ball_lipschitz_constant(3, -0.5),
        lambda: lz.ball_lipschitz_lower_bound(2.5, 1.0),
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
    with pytest.raises(TypeError, match="R"):
        lz.ball_lipschitz_constant(3, "1")


# ---- property tests ----------------------------------------------------------------------------------------


def _spectral(rng: np.random.Generator, n: int, d: int, R: float) -> np.ndarray:
    A = rng.standard_normal((n, d))
    return A * (R / np.linalg.norm(A, 2))


def _ball(rng: np.random.Generator, d: int, R: float) -> np.ndarray:
    x = rng.standard_normal(d)
    return x * (R * rng.uniform() ** (1 / d) / np.linalg.norm(x))


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 300), st.floats(0.05, 3.0), st.floats(0.01, 30.0), st.integers(0, 10**6))
def test_softmax_entries_stay_within_the_extremes(n: int, R: float, scale: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(n) * scale
    z *= min(1.0, R * R / np.linalg.norm(z))
    p = notation.softmax(z)
    assert p.max() <= lz.largest_softmax_entry(n, R) * (1 + 1e-12)
    assert p.min() >= lz.smallest_softmax_entry_bounds(n, R)[0] * (1 - 1e-12)
    assert lz.largest_softmax_entry(n, R) <= math.exp(2 * R * R) / n


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 60), st.integers(1, 5), st.floats(0.05, 3.0), st.integers(0, 10**6))
def test_ball_lipschitz_constant_bounds_weights_and_data(n: int, d: int, R: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    A, B = _spectral(rng, n, d, R * rng.uniform()), _spectral(rng, n, d, R * rng.uniform())
    x, y = _ball(rng, d, R), _ball(rng, d, R)
    kappa = lz.ball_lipschitz_constant(n, R)
    fx, fy = sr.softmax_prediction(A, x), sr.softmax_prediction(A, y)
    slack = 1e-14 * (1 + n)
    assert np.linalg.norm(fx - fy) <= kappa * np.linalg.norm(x - y) * (1 + 1e-9) + slack
    fb = sr.softmax_prediction(B, x)
    assert np.linalg.norm(fx - fb) <= kappa * np.linalg.norm(A - B, 2) * (1 + 1e-9) + slack


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


def test_jacobian_norm_equality_case() -> None:
    p = np.zeros(200)
    p[[3, 117]] = 0.5
    assert lz.softmax_jacobian_norm(p) == pytest.approx(0.5, rel=1e-15)
    q = 0.99 * p + 0.01 / 200
    assert lz.softmax_jacobian_norm(q) < 0.5 - 1e-6


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


def test_rank_one_data_step_reproduces_the_weight_step() -> None:
    rng = np.random.default_rng(0)
    A, x, b = _spectral(rng, 200, 20, 2.0), rng.standard_normal(20), rng.dirichlet(np.ones(200))
    x_next = lz.gradient_step(A, x, b, 5.0)
    A_next = lz.weight_step_as_data_step(A, x, x_next)
    np.testing.assert_allclose(A_next @ x, A @ x_next, rtol=1e-13)
    np.testing.assert_allclose(
        np.linalg.norm(A_next - A, 2), np.linalg.norm(A @ (x_next - x)) / np.linalg.norm(x), rtol=1e-13
    )


# ---- the sweep script, in its quick version ------------------------------------------------------------------


def _load_script():
    spec = importlib.util.spec_from_file_location("lipschitz_sweep", ROOT / "scripts" / "lipschitz_sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sweep_script_quick_run(tmp_path: pathlib.Path) -> None:
    script = _load_script()
    out = tmp_path / "sweep.json"
    data = script.main(["--quick", "--out", str(out)])
    stored = json.loads(out.read_text(encoding="utf-8"))
    assert stored["worst"] == data["worst"] and set(stored["worst"]) == set(script.BOUNDS)
    points = [tuple(p) for p in stored["points"]]
    assert points == script.points()
    for name, ratios in stored["worst"].items():
        assert len(ratios) == len(points) and all(0.0 < r <= 1.0 + 1e-9 for r in ratios), name
    for (n, R), r in zip(points, stored["worst"]["lipschitz-x"], strict=True):
        assert r <= lz.ball_lipschitz_constant(n, R) / (R / 2) * (1 + 1e-9)
    assert stored["worst"]["lipschitz-x"][0] > 0.99  # n = 2: R/2 is reached


def test_committed_sweep_is_consistent_with_the_script() -> None:
    script = _load_script()
    stored = json.loads((ROOT / "book" / "data" / "lipschitz_sweep.json").read_text(encoding="utf-8"))
    assert [tuple(p) for p in stored["points"]] == script.points()
    assert stored["settings"] == script.SETTINGS
    n, R = 8, 1.0
    ratio, dim = script.BOUNDS["lipschitz-x"](n, R)
    assert 0.0 < ratio(np.random.default_rng(0).standard_normal(dim)) <= 1.0


def test_sweep_ratio_catches_a_too_small_constant() -> None:
    """At n = 2 the search reaches R/2; a constant 0.45·R would be exceeded."""
    from softmax_icl.worst_case import worst_ratio

    script = _load_script()
    ratio, dim = script.BOUNDS["lipschitz-x"](2, 1.0)
    found = worst_ratio(ratio, dim, np.random.default_rng(0), samples=100, restarts=1, maxiter=30)
    assert found.ratio * 0.5 / 0.45 > 1.0
