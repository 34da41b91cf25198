"""Worst-case search for an inequality: how close can ``lhs / rhs`` get to 1?

A chapter writes the ratio of its bound as a function of one parameter vector; :func:`worst_ratio`
samples it at random (entries of random scale, so both small and large instances are hit), then
climbs from the best samples with L-BFGS-B and polishes with Nelder–Mead. A ratio above 1 is a
counterexample; the largest ratio found measures how tight the bound is. Used from
:doc:`/book/lipschitz` on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.optimize

from ._validate import as_positive_int

__all__ = ["WorstCase", "worst_ratio"]

Ratio = Callable[[np.ndarray], float]


@dataclass(frozen=True)
class WorstCase:
    """The largest ratio found, the parameters attaining it, and what each phase reached."""

    ratio: float
    params: np.ndarray
    random_ratio: float
    search_ratio: float
    evaluations: int


def worst_ratio(ratio: Ratio, dim: int, rng: np.random.Generator, *, samples: int = 2000,
                restarts: int = 4, maxiter: int = 200, log_scale: float = 2.0) -> WorstCase:
    """Maximize ``ratio(p)`` over ``p ∈ R^dim``: ``samples`` random points ``e^s·N(0, I)`` with ``s``
    uniform in ``[-log_scale, log_scale]``, then L-BFGS-B from the ``restarts`` best of them, each
    polished by Nelder–Mead. Non-finite ratios count as −∞ (outside the bound's domain).

    Derived in :doc:`/book/lipschitz`.
    """
    dim = as_positive_int(dim, "dim")
    samples = as_positive_int(samples, "samples")
    restarts = as_positive_int(restarts, "restarts")
    maxiter = as_positive_int(maxiter, "maxiter")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if not callable(ratio):
        raise TypeError("ratio must be a function of one parameter vector")
    if isinstance(log_scale, bool) or not np.isfinite(log_scale) or log_scale < 0:
        raise ValueError(f"log_scale must be a finite number >= 0, got {log_scale!r}")
    evaluations = 0

    def value(p: np.ndarray) -> float:
        nonlocal evaluations
        evaluations += 1
        r = float(ratio(np.asarray(p, dtype=np.float64)))
        return r if np.isfinite(r) else -np.inf

    points = rng.standard_normal((samples, dim)) * np.exp(rng.uniform(-log_scale, log_scale, (samples, 1)))
    values = np.array([value(p) for p in points])
    if not np.any(np.isfinite(values)):
        raise ValueError("ratio is not finite at any random sample: check its domain")
    order = np.argsort(values)[::-1][:restarts]
    best, best_p = float(values[order[0]]), points[order[0]]
    search_best = -np.inf

    def negative(p: np.ndarray) -> float:
        r = value(p)
        return -r if np.isfinite(r) else 1e300

    for start in points[order]:
        x = scipy.optimize.minimize(negative, start, method="L-BFGS-B", options={"maxiter": maxiter}).x
        x = scipy.optimize.minimize(negative, x, method="Nelder-Mead",
                                    options={"maxiter": maxiter * dim, "xatol": 1e-10, "fatol": 1e-14}).x
        r = value(x)
        search_best = max(search_best, r)
        if r > best:
            best, best_p = r, x
    return WorstCase(float(best), np.asarray(best_p), float(values[order[0]]), float(search_best), evaluations)
