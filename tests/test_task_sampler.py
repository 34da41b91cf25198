"""The training sampler (JAX, inside the compiled step) and the evaluation sampler (NumPy) draw the
same task distribution: two-sample Kolmogorov–Smirnov tests on the quantities that define a task."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
from scipy import stats
from softmax_icl import multihead_training as mt
from softmax_icl import sparse_regression as sreg

D, S, SIGMA, N, T = 6, 2, 0.3, 5, 4000


@functools.cache
def _training_draw() -> dict[str, np.ndarray]:
    E, y_q, n = mt.sample_prompts(jax.random.PRNGKey(3), T, (N,), D, S, SIGMA, queries=2)
    E, y_q = np.asarray(E, np.float64), np.asarray(y_q, np.float64)
    X, y = E[:, :N, :D], E[:, :N, D]
    return {"x": X.ravel(), "y": y.ravel(), "y_query": y_q.ravel(), "corr": np.einsum("tnd,tn->td", X, y).ravel(),
            "n": np.asarray(n)}


@functools.cache
def _evaluation_draw() -> dict[str, np.ndarray]:
    tasks = sreg.sample_tasks(T, N + 2, D, S, SIGMA, np.random.default_rng(3))
    X, y = tasks.X[:, :N], tasks.y[:, :N]
    return {"x": X.ravel(), "y": y.ravel(), "y_query": tasks.y[:, N:].ravel(),
            "corr": np.einsum("tnd,tn->td", X, y).ravel()}


@pytest.mark.parametrize("quantity", ["x", "y", "y_query", "corr"])
def test_training_and_evaluation_samplers_agree(quantity: str) -> None:
    a, b = _training_draw()[quantity], _evaluation_draw()[quantity]
    assert stats.ks_2samp(a, b).pvalue > 1e-3, f"{quantity}: the two samplers differ"


def test_the_comparison_detects_a_different_distribution() -> None:
    """The same test rejects a sampler with a denser w* (s + 1 non-zeros)."""
    denser = sreg.sample_tasks(T, N, D, S + 1, SIGMA, np.random.default_rng(4))
    assert stats.ks_2samp(_training_draw()["y"], denser.y.ravel()).pvalue < 1e-6


def _recovered_w(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """w* itself, from a noiseless context with more examples than dimensions (least squares)."""
    G, c = np.einsum("tnd,tne->tde", X, X), np.einsum("tnd,tn->td", X, y)
    return np.linalg.solve(G, c[..., None])[..., 0]


def test_both_samplers_draw_w_star_with_s_uniform_gaussian_non_zeros() -> None:
    E, _, _ = mt.sample_prompts(jax.random.PRNGKey(0), 2000, (40,), D, S, 0.0)
    trained = _recovered_w(np.asarray(E[:, :40, :D], np.float64), np.asarray(E[:, :40, D], np.float64))
    evaluated = sreg.sample_tasks(2000, 40, D, S, 0.0, np.random.default_rng(0)).w_star
    values = []
    for w in (trained, evaluated):
        top = np.argsort(-np.abs(w), axis=1)[:, :S]  # the support (a value may be ~0 by chance)
        rest = np.ones_like(w, dtype=bool)
        np.put_along_axis(rest, top, False, axis=1)
        assert np.abs(w[rest]).max() < 1e-4  # s non-zeros at most
        assert stats.chisquare(np.bincount(top.ravel(), minlength=D)).pvalue > 1e-3  # uniform support
        values.append(np.take_along_axis(w, top, axis=1).ravel())
        assert stats.kstest(values[-1], "norm").pvalue > 1e-3  # N(0, 1) values
    assert stats.ks_2samp(*values).pvalue > 1e-3
