"""Sparse-regression library: estimators against scikit-learn and closed forms, validation,
properties, and the statistics the chapter derives (the library's r̂ and excess risk against
their closed forms, preprocess-then-optimize against preconditioned gradient descent)."""

from __future__ import annotations

import warnings

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Lasso, Ridge
from softmax_icl import sparse_regression as sr
from softmax_icl.checks import assert_close

jax.config.update("jax_enable_x64", True)


@pytest.fixture(scope="module")
def tasks() -> sr.Tasks:
    return sr.sample_tasks(6, 12, 8, 3, 0.3, np.random.default_rng(0))


# ---- data ------------------------------------------------------------------------------------


def test_sample_tasks_shapes_and_sparsity() -> None:
    t = sr.sample_tasks(50, 7, 20, 3, 0.0, np.random.default_rng(1))
    assert t.X.shape == (50, 7, 20) and t.y.shape == (50, 7) and t.w_star.shape == (50, 20)
    assert np.all(np.count_nonzero(t.w_star, axis=1) == 3)
    np.testing.assert_allclose(t.y, np.einsum("tnd,td->tn", t.X, t.w_star), rtol=0, atol=1e-12)


def test_sample_tasks_support_is_uniform() -> None:
    t = sr.sample_tasks(20000, 1, 10, 2, 0.0, np.random.default_rng(2))
    freq = np.mean(t.w_star != 0, axis=0)
    np.testing.assert_allclose(freq, 0.2, atol=0.02)


@pytest.mark.parametrize(
    "kwargs, err",
    [
        ({"s": 21}, ValueError),
        ({"sigma": -1.0}, ValueError),
        ({"n": 0}, ValueError),
        ({"rng": 3}, TypeError),
    ],
)
def test_sample_tasks_validation(kwargs, err) -> None:
    args = {
        "n_tasks": 2,
        "n": 3,
        "d": 20,
        "s": 3,
        "sigma": 0.1,
        "rng": np.random.default_rng(0),
    } | kwargs
    with pytest.raises(err):
        sr.sample_tasks(**args)


def test_estimators_validate_inputs(tasks: sr.Tasks) -> None:
    with pytest.raises(ValueError, match="y must have shape"):
        sr.ridge(tasks.X, tasks.y[:, :-1], 0.1)
    with pytest.raises(TypeError, match="float"):
        sr.min_norm_least_squares(tasks.X.astype(int), tasks.y)
    with pytest.raises(ValueError, match="3-D"):
        sr.gradient_descent(tasks.X[0], tasks.y[0], 0.1, 3)
    with pytest.raises(ValueError, match="K must be"):
        sr.gradient_descent(tasks.X, tasks.y, 0.1, -1)
    with pytest.raises(ValueError, match="normalize"):
        sr.preprocess_then_optimize(tasks.X, tasks.y, 0.1, 2, normalize="max")
    with pytest.raises(ValueError, match="lam must be"):
        sr.lasso(tasks.X, tasks.y, -0.1)
    with pytest.raises(ValueError, match="finite"):
        bad = tasks.X.copy()
        bad[0, 0, 0] = np.nan
        sr.lasso(bad, tasks.y, 0.1)


# ---- estimators against scikit-learn and closed forms -------------------------------------------


@pytest.mark.parametrize("n", [5, 30])
def test_ridge_matches_sklearn(n: int) -> None:
    t = sr.sample_tasks(4, n, 10, 3, 0.5, np.random.default_rng(n))
    lam = 0.07
    ours = sr.ridge(t.X, t.y, lam)
    for k in range(4):
        ref = Ridge(alpha=n * lam, fit_intercept=False, solver="cholesky").fit(t.X[k], t.y[k]).coef_
        np.testing.assert_allclose(ours[k], ref, rtol=1e-10, atol=1e-12)


def test_ridge_grid_and_zero_limit(tasks: sr.Tasks) -> None:
    grid = sr.ridge(tasks.X, tasks.y, [0.0, 0.1, 1.0])
    assert grid.shape == (3,) + tasks.w_star.shape
    np.testing.assert_allclose(grid[1], sr.ridge(tasks.X, tasks.y, 0.1), rtol=1e-13)
    np.testing.assert_allclose(
        grid[0], sr.min_norm_least_squares(tasks.X, tasks.y), rtol=1e-9, atol=1e-12
    )


def test_min_norm_interpolates_when_n_below_d() -> None:
    t = sr.sample_tasks(5, 6, 20, 3, 0.5, np.random.default_rng(3))
    w = sr.min_norm_least_squares(t.X, t.y)
    np.testing.assert_allclose(np.einsum("tnd,td->tn", t.X, w), t.y, rtol=1e-10, atol=1e-12)
    # minimum norm: orthogonal to the null space of X, i.e. in the row space
    for k in range(5):
        coef = np.linalg.lstsq(t.X[k].T, w[k], rcond=None)[0]
        np.testing.assert_allclose(t.X[k].T @ coef, w[k], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("n, lam", [(6, 0.05), (12, 0.01), (40, 0.1), (40, 1e-4)])
def test_lasso_matches_sklearn(n: int, lam: float) -> None:
    t = sr.sample_tasks(5, n, 20, 3, 0.1, np.random.default_rng(10 + n))
    ours = sr.lasso(t.X, t.y, lam, tol=1e-12)
    assert np.all(sr.lasso_kkt_violation(t.X, t.y, ours, lam) <= 1e-10)
    for k in range(5):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            ref = (
                Lasso(alpha=lam, fit_intercept=False, tol=1e-14, max_iter=1_000_000)
                .fit(t.X[k], t.y[k])
                .coef_
            )
        # sklearn minimizes (1/2n)‖y − Xw‖² + α‖w‖₁, the same objective; it stops on a duality gap
        np.testing.assert_allclose(ours[k], ref, rtol=1e-6, atol=1e-8)
        np.testing.assert_array_equal(ours[k] != 0, np.abs(ref) > 1e-9)


def test_lasso_path_equals_single_solves(tasks: sr.Tasks) -> None:
    lams = np.array([0.01, 0.3, 0.05])
    path = sr.lasso_path(tasks.X, tasks.y, lams, tol=1e-12)
    for k, lam in enumerate(lams):
        np.testing.assert_allclose(
            path[k], sr.lasso(tasks.X, tasks.y, lam, tol=1e-12), rtol=1e-8, atol=1e-10
        )


def test_lasso_large_lambda_is_zero(tasks: sr.Tasks) -> None:
    G, c = sr.gram(tasks.X, tasks.y)
    lam_max = float(np.max(np.abs(c)))
    assert np.all(sr.lasso(tasks.X, tasks.y, lam_max * 1.001) == 0)


def test_kkt_detects_a_wrong_solution(tasks: sr.Tasks) -> None:
    w = sr.lasso(tasks.X, tasks.y, 0.05, tol=1e-12)
    assert np.all(sr.lasso_kkt_violation(tasks.X, tasks.y, w, 0.05) <= 1e-10)
    assert np.all(sr.lasso_kkt_violation(tasks.X, tasks.y, 0.9 * w, 0.05) > 1e-6)


def test_gd_matches_explicit_loop(tasks: sr.Tasks) -> None:
    eta, K = 0.1, 7
    w = np.zeros(tasks.X.shape[2])
    X, y = tasks.X[2], tasks.y[2]
    for _ in range(K):
        w = w + eta * X.T @ (y - X @ w) / X.shape[0]
    np.testing.assert_allclose(sr.gradient_descent(tasks.X, tasks.y, eta, K)[2], w, rtol=1e-13)


def test_gd_converges_to_least_squares() -> None:
    t = sr.sample_tasks(3, 60, 10, 3, 0.5, np.random.default_rng(4))
    w = sr.gradient_descent(t.X, t.y, 0.3, 2000)
    np.testing.assert_allclose(w, sr.min_norm_least_squares(t.X, t.y), rtol=1e-9)


def test_pto_variants() -> None:
    t = sr.sample_tasks(4, 10, 20, 3, 0.1, np.random.default_rng(5))
    r = sr.empirical_correlation(t.X, t.y)
    # l2 normalization = the raw algorithm with the step η/‖r̂‖² (a per-prompt rescaling)
    norm2 = np.sum(r**2, axis=1)
    for k in range(4):
        a = sr.preprocess_then_optimize(t.X[k : k + 1], t.y[k : k + 1], 0.3, 5, normalize="l2")
        b = sr.preprocess_then_optimize(t.X[k : k + 1], t.y[k : k + 1], 0.3 / norm2[k], 5)
        np.testing.assert_allclose(a, b, rtol=1e-11)
    # split: r̂ from the first half, gradient steps on the second half
    r_half = sr.empirical_correlation(t.X[:, :5], t.y[:, :5])
    P = r_half**2
    got = sr.preprocess_then_optimize(t.X, t.y, 0.2, 4, split=True)
    np.testing.assert_allclose(
        got, sr.preconditioned_gradient_descent(t.X[:, 5:], t.y[:, 5:], P, 0.2, 4), rtol=1e-12
    )
    assert np.all(sr.preprocess_then_optimize(t.X, t.y, 0.2, 0) == 0)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(2, 25), d=st.integers(2, 12), seed=st.integers(0, 10_000))
def test_excess_risk_and_ridge_properties(n: int, d: int, seed: int) -> None:
    t = sr.sample_tasks(3, n, d, min(3, d), 0.2, np.random.default_rng(seed))
    assert np.all(sr.excess_risk(t.w_star, t.w_star) == 0)
    # ridge shrinks: the norm of the solution decreases with λ
    norms = np.linalg.norm(sr.ridge(t.X, t.y, [1e-3, 1e-1, 10.0]), axis=2)
    assert np.all(np.diff(norms, axis=0) <= 1e-12)
    # the Lasso solution satisfies its optimality conditions
    w = sr.lasso(t.X, t.y, 0.05)
    assert np.all(
        sr.lasso_kkt_violation(t.X, t.y, w, 0.05) <= 1e-9 * (1 + np.abs(sr.gram(t.X, t.y)[1]).max())
    )


def test_tuning_picks_the_grid_minimum() -> None:
    train = sr.sample_tasks(100, 10, 20, 3, 0.1, np.random.default_rng(6))
    tu = sr.tune_ridge(train, np.array([1e-3, 1e-1, 10.0]))
    assert tu.risk.shape == (3,) and tu.best["lam"] == tu.axes["lam"][np.argmin(tu.risk)]
    tg = sr.tune_gd(train, K_max=20)
    assert tg.risk.shape == (sr.DEFAULT_STEP_FRACTIONS.size, 21)
    i, k = np.unravel_index(np.argmin(tg.risk), tg.risk.shape)
    assert tg.best == {"eta": tg.axes["eta"][i], "K": k}
    # the tabulated risk at the best (η, K) is the risk of running GD with them
    w = sr.gradient_descent(train.X, train.y, tg.best["eta"], tg.best["K"])
    np.testing.assert_allclose(sr.excess_risk(w, train.w_star).mean(), tg.risk.min(), rtol=1e-10)
    tp = sr.tune_pto(train, K_max=20, normalize="l2")
    w = sr.preprocess_then_optimize(train.X, train.y, tp.best["eta"], tp.best["K"], normalize="l2")
    np.testing.assert_allclose(sr.excess_risk(w, train.w_star).mean(), tp.risk.min(), rtol=1e-10)


def test_compare_estimators_small() -> None:
    c = sr.compare_estimators(10, 0.1, sr.setting_rng(10, 0.1), n_train=60, n_test=100, K_max=20)
    assert set(c.risks) == {
        "min-norm LS",
        "ridge",
        "GD",
        "PtO (l2-normalized)",
        "PtO (raw)",
        "Lasso",
    }
    assert all(r.shape == (100,) for r in c.risks.values())
    m, hw = sr.mean_and_halfwidth(c.risks["Lasso"])
    assert hw > 0 and m > 0
    with pytest.raises(ValueError, match="variant"):
        sr.compare_estimators(10, 0.1, sr.setting_rng(10, 0.1), pto_variants=("cubic",))


# ---- the statistics the chapter derives -----------------------------------------------------


def test_excess_risk_matches_a_monte_carlo_estimate() -> None:
    rng = np.random.default_rng(0)
    d, m, sigma = 20, 200_000, 0.5
    w_star, w_hat = rng.standard_normal((2, d))
    x = rng.standard_normal((m, d))
    y = x @ w_star + sigma * rng.standard_normal(m)
    diff = (y - x @ w_hat) ** 2 - (y - x @ w_star) ** 2
    assert abs(diff.mean() - sr.excess_risk(w_hat, w_star)) <= 5 * diff.std() / np.sqrt(m)


def test_empirical_correlation_is_unbiased_with_the_stated_error() -> None:
    """E r̂ = w* and E‖r̂ − w*‖² = ((d + 1)‖w*‖² + dσ²)/n, within 5 standard errors."""
    rng = np.random.default_rng(1)
    d, n, sigma, T = 20, 10, 0.5, 40_000
    w_star = np.zeros(d)
    w_star[:3] = [1.0, -0.5, 2.0]
    X = rng.standard_normal((T, n, d))
    y = X @ w_star + sigma * rng.standard_normal((T, n))
    r = sr.empirical_correlation(X, y)
    assert np.all(np.abs(r.mean(axis=0) - w_star) <= 5 * r.std(axis=0) / np.sqrt(T))
    err = np.sum((r - w_star) ** 2, axis=1)
    closed = ((d + 1) * w_star @ w_star + d * sigma**2) / n
    forgot_fourth_moment = (d * w_star @ w_star + d * sigma**2) / n
    se = err.std() / np.sqrt(T)
    assert abs(err.mean() - closed) <= 5 * se
    assert abs(err.mean() - forgot_fourth_moment) > 5 * se


def test_pto_is_preconditioned_gradient_descent() -> None:
    t = sr.sample_tasks(200, 15, 20, 3, 0.1, np.random.default_rng(2))
    r = sr.empirical_correlation(t.X, t.y)
    eta = 0.5 / float(np.max(np.linalg.eigvalsh(sr.gram(t.X * r[:, None, :], t.y)[0])))
    raw = sr.preprocess_then_optimize(t.X, t.y, eta, 30)
    assert_close(raw, sr.preconditioned_gradient_descent(t.X, t.y, r**2, eta, 30), rtol=1e-12)
    l2 = sr.preprocess_then_optimize(t.X, t.y, eta, 30, normalize="l2")
    P = r**2 / np.sum(r**2, axis=1, keepdims=True)  # r̂/‖r̂‖: the step becomes η/‖r̂‖²
    assert_close(l2, sr.preconditioned_gradient_descent(t.X, t.y, P, eta, 30), rtol=1e-12)
    with pytest.raises(AssertionError):  # weights instead of squared weights
        assert_close(raw, sr.preconditioned_gradient_descent(t.X, t.y, np.abs(r), eta, 30),
                     rtol=1e-6)


def _bayes_brute_force(X: np.ndarray, y: np.ndarray, s: int, sigma: float) -> np.ndarray:
    """The posterior mean from the n×n marginal covariance of every support (no Woodbury)."""
    from itertools import combinations

    n, d = X.shape
    log_evidence, means = [], []
    for S in combinations(range(d), s):
        XS = X[:, S]
        C = sigma**2 * np.eye(n) + XS @ XS.T
        log_evidence.append(-0.5 * np.linalg.slogdet(C)[1] - 0.5 * y @ np.linalg.solve(C, y))
        m = np.zeros(d)
        m[list(S)] = XS.T @ np.linalg.solve(C, y)
        means.append(m)
    p = np.exp(np.array(log_evidence) - max(log_evidence))
    return (p / p.sum()) @ np.array(means)


@pytest.mark.parametrize(("n", "d", "s", "sigma"), [(6, 5, 2, 0.3), (3, 6, 1, 0.1), (12, 4, 3, 1.0)])
def test_bayes_posterior_mean_matches_the_brute_force_mixture(n: int, d: int, s: int, sigma: float) -> None:
    t = sr.sample_tasks(6, n, d, s, sigma, np.random.default_rng(n + d))
    w = sr.bayes_posterior_mean(t.X, t.y, s, sigma)
    brute = np.array([_bayes_brute_force(t.X[k], t.y[k], s, sigma) for k in range(6)])
    assert_close(w, brute, rtol=1e-9)


def test_bayes_posterior_mean_with_one_support_is_ridge() -> None:
    """s = d: the prior is N(0, I_d), the posterior mean is ridge with nλ = σ²."""
    t = sr.sample_tasks(20, 7, 4, 4, 0.5, np.random.default_rng(3))
    assert_close(sr.bayes_posterior_mean(t.X, t.y, 4, 0.5), sr.ridge(t.X, t.y, 0.25 / 7), rtol=1e-9)


def test_bayes_posterior_mean_beats_ridge_and_lasso_on_fresh_tasks() -> None:
    rng = np.random.default_rng(11)
    train, test = (sr.sample_tasks(400, 10, 10, 2, 0.1, rng) for _ in range(2))
    bayes = sr.excess_risk(sr.bayes_posterior_mean(test.X, test.y, 2, 0.1), test.w_star)
    for tuning, fit in ((sr.tune_ridge(train), lambda lam: sr.ridge(test.X, test.y, lam)),
                        (sr.tune_lasso(train), lambda lam: sr.lasso(test.X, test.y, lam))):
        other = sr.excess_risk(fit(tuning.best["lam"]), test.w_star)
        diff = other - bayes
        assert diff.mean() > 3 * diff.std(ddof=1) / np.sqrt(diff.size), tuning.estimator


def test_bayes_posterior_mean_is_stable_for_large_evidence_gaps() -> None:
    """Tiny noise makes the log-evidences differ by thousands: the weights must stay finite."""
    t = sr.sample_tasks(10, 30, 8, 2, 1e-4, np.random.default_rng(5))
    w = sr.bayes_posterior_mean(t.X, t.y, 2, 1e-4)
    assert np.all(np.isfinite(w))
    assert np.abs(w - t.w_star).max() < 1e-3


@pytest.mark.parametrize(("kwargs", "err", "match"), [
    ({"s": 0}, ValueError, "s"), ({"s": 9}, ValueError, "sparsity"), ({"sigma": 0.0}, ValueError, "sigma"),
    ({"sigma": -1.0}, ValueError, "sigma"), ({"s": 2.5}, ValueError, "positive integer"),
])
def test_bayes_posterior_mean_validates(kwargs: dict, err: type, match: str) -> None:
    t = sr.sample_tasks(2, 5, 8, 2, 0.1, np.random.default_rng(0))
    with pytest.raises(err, match=match):
        sr.bayes_posterior_mean(t.X, t.y, **{"s": 2, "sigma": 0.1, **kwargs})


def test_bayes_posterior_mean_refuses_too_many_supports() -> None:
    X = np.random.default_rng(0).standard_normal((1, 3, 60))
    with pytest.raises(ValueError, match="supports"):
        sr.bayes_posterior_mean(X, X[:, :, 0], 10, 0.1)
