"""Verification helpers: finite differences, directional-derivative checks, error reports.

Modelled on autograd's ``check_grads``: derivatives are compared along random directions with a
fourth-order central stencil, recursively for second order. Everything is float64. Used from
:doc:`/book/notation` on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "CheckResult",
    "relative_error",
    "assert_close",
    "numerical_gradient",
    "numerical_jacobian",
    "numerical_hessian",
    "directional_derivative",
    "check_gradient",
    "check_hessian_vector",
]

ArrayFn = Callable[[np.ndarray], np.ndarray | float]


def _real(value: object, name: str, *, finite: bool = True) -> np.ndarray:
    """``value`` as a float64 array: real (bool, integer or floating) entries only, finite if asked."""
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name} must be a real array; could not convert it ({exc})") from exc
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real array, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if finite and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    if finite and arr.size == 0:
        raise ValueError(f"{name} must be non-empty, got shape {arr.shape}")
    return arr


def _step(h: object, name: str = "h") -> float:
    if isinstance(h, bool) or not isinstance(h, int | float | np.integer | np.floating) or not 0 < h < np.inf:
        raise ValueError(f"{name} must be a finite number > 0, got {h!r}")
    return float(h)


def _rtol(rtol: object) -> None:
    if isinstance(rtol, bool) or not isinstance(rtol, int | float | np.integer | np.floating) \
            or not 0 <= rtol < np.inf:
        raise ValueError(f"rtol must be a finite number >= 0, got {rtol!r}")


def _function(fun: object, name: str) -> None:
    if not callable(fun):
        raise TypeError(f"{name} must be callable, got {type(fun).__name__}")


def _settings(rng: object, rtol: object, n_directions: object) -> None:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    _rtol(rtol)
    if isinstance(n_directions, bool) or not isinstance(n_directions, int | np.integer) \
            or not 1 <= n_directions <= 10**4:
        raise ValueError(f"n_directions must be an integer in [1, 10000], got {n_directions!r}")


@dataclass(frozen=True)
class CheckResult:
    """Outcome of a comparison: the worst relative error and where it occurred."""

    name: str
    worst_relative_error: float
    index: tuple[int, ...]
    actual: float
    expected: float
    rtol: float

    @property
    def passed(self) -> bool:
        return bool(self.worst_relative_error <= self.rtol)

    def __str__(self) -> str:
        status = "ok" if self.passed else "FAILED"
        return (
            f"{self.name}: worst relative error {self.worst_relative_error:.2e} "
            f"(rtol {self.rtol:.0e}) at index {self.index} — {status}"
        )


def relative_error(actual: np.ndarray | float, expected: np.ndarray | float) -> CheckResult:
    """Normwise relative error ``max|a - e| / max(max|e|, tiny)`` and the index of the worst entry."""
    a = _real(actual, "actual", finite=False)
    e = _real(expected, "expected", finite=False)
    if a.shape != e.shape:
        raise ValueError(f"actual has shape {a.shape} but expected has shape {e.shape}")
    diff = np.abs(a - e)
    if diff.size == 0:
        raise ValueError("cannot compare empty arrays")
    if not np.all(np.isfinite(diff)):
        diff = np.where(np.isfinite(diff), diff, np.inf)
    flat = int(np.argmax(diff))
    index = tuple(int(i) for i in np.unravel_index(flat, a.shape)) if a.ndim else ()
    scale = max(float(np.max(np.abs(e))), np.finfo(np.float64).tiny)
    return CheckResult("", float(diff.reshape(-1)[flat] / scale), index,
                       float(a.reshape(-1)[flat]), float(e.reshape(-1)[flat]), np.inf)


def assert_close(actual: np.ndarray | float, expected: np.ndarray | float, *, rtol: float,
                 name: str = "comparison") -> CheckResult:
    """Assert ``relative_error(actual, expected) <= rtol``; the error message names the worst entry."""
    _rtol(rtol)
    r = relative_error(actual, expected)
    result = CheckResult(name, r.worst_relative_error, r.index, r.actual, r.expected, rtol)
    if not result.passed:
        raise AssertionError(
            f"{name}: worst relative error {result.worst_relative_error:.3e} exceeds rtol {rtol:.1e} "
            f"at index {result.index} (actual {result.actual!r}, expected {result.expected!r})"
        )
    return result


def _stencil(fun: ArrayFn, x: np.ndarray, v: np.ndarray, h: float) -> np.ndarray:
    """Fourth-order central difference of ``fun`` at ``x`` along ``v``: error O(h^4)."""
    f = lambda t: np.asarray(fun(x + t * v), dtype=np.float64)  # noqa: E731
    return (8.0 * (f(h) - f(-h)) - (f(2 * h) - f(-2 * h))) / (12.0 * h)


def directional_derivative(fun: ArrayFn, x: np.ndarray, v: np.ndarray, h: float = 1e-4) -> np.ndarray:
    """Numerical ``d/dt fun(x + t v)`` at ``t = 0`` (any output shape)."""
    _function(fun, "fun")
    x, v, h = _real(x, "x"), _real(v, "v"), _step(h)
    if x.shape != v.shape:
        raise ValueError(f"direction v must have the shape of x {x.shape}, got {v.shape}")
    return _stencil(fun, x, v, h)


def numerical_jacobian(fun: ArrayFn, x: np.ndarray, h: float = 1e-4) -> np.ndarray:
    """Jacobian of ``fun`` at ``x``, shape ``fun(x).shape + x.shape`` (``x`` a vector or matrix)."""
    _function(fun, "fun")
    x, h = _real(x, "x"), _step(h)
    if x.size == 0 or x.size > 10**5:
        raise ValueError(f"x must have between 1 and 1e5 entries, got shape {x.shape}")
    columns = []
    for k in range(x.size):
        e = np.zeros(x.size)
        e[k] = 1.0
        columns.append(_stencil(fun, x, e.reshape(x.shape), h))
    out = np.stack(columns, axis=-1)
    return out.reshape(out.shape[:-1] + x.shape)


def numerical_gradient(fun: ArrayFn, x: np.ndarray, h: float = 1e-4) -> np.ndarray:
    """Gradient of a scalar function, same shape as ``x``."""
    g = numerical_jacobian(fun, x, h)
    if g.shape != np.shape(x):
        raise ValueError(f"fun must return a scalar; got output of shape {g.shape[: g.ndim - np.ndim(x)]}")
    return g


def numerical_hessian(fun: ArrayFn, x: np.ndarray, h: float = 1e-3, grad: ArrayFn | None = None) -> np.ndarray:
    """Hessian of a scalar function of a vector: the Jacobian of ``grad`` if given, else of the
    numerical gradient (nested stencils). Symmetrized; shape ``(x.size, x.size)``."""
    _function(fun, "fun")
    if grad is not None:
        _function(grad, "grad")
    x, h = _real(x, "x"), _step(h)
    if x.ndim != 1:
        raise ValueError(f"numerical_hessian needs a vector x, got shape {x.shape}")
    g = grad if grad is not None else (lambda y: numerical_gradient(fun, y, h))
    H = numerical_jacobian(g, x, h)
    return 0.5 * (H + H.T)


def check_gradient(fun: ArrayFn, grad: ArrayFn, x: np.ndarray, rng: np.random.Generator, *,
                   rtol: float = 1e-6, n_directions: int = 5, h: float = 1e-4,
                   name: str = "gradient") -> CheckResult:
    """First-order check: ``<grad(x), v>`` against the numerical derivative of ``fun`` along random
    unit directions ``v``; raises ``AssertionError`` on failure, returns the worst result."""
    _function(fun, "fun")
    _function(grad, "grad")
    _settings(rng, rtol, n_directions)
    x, h = _real(x, "x"), _step(h)
    g = _real(grad(x), "grad(x)", finite=False)
    if g.shape != x.shape:
        raise ValueError(f"grad(x) has shape {g.shape}, expected the shape of x {x.shape}")
    V = rng.standard_normal((n_directions,) + x.shape)
    V /= np.linalg.norm(V.reshape(n_directions, -1), axis=1).reshape((-1,) + (1,) * x.ndim)
    analytic = np.array([np.sum(g * v) for v in V])
    numeric = np.array([float(directional_derivative(fun, x, v, h)) for v in V])
    # Relative to the gradient's norm: the directional derivative may be near zero by chance.
    scale = max(float(np.linalg.norm(g)), np.finfo(np.float64).tiny)
    errors = np.abs(analytic - numeric) / scale
    k = int(np.argmax(errors))
    result = CheckResult(name, float(errors[k]), (k,), float(analytic[k]), float(numeric[k]), rtol)
    if not result.passed:
        raise AssertionError(f"{name}: directional derivative along direction {k} is {analytic[k]!r} "
                             f"from the gradient but {numeric[k]!r} numerically "
                             f"(relative error {errors[k]:.3e} > rtol {rtol:.1e})")
    return result


def check_hessian_vector(grad: ArrayFn, hvp: Callable[[np.ndarray, np.ndarray], np.ndarray],
                         x: np.ndarray, rng: np.random.Generator, *, rtol: float = 1e-6,
                         n_directions: int = 5, h: float = 1e-4, name: str = "Hessian-vector product") -> CheckResult:
    """Second-order check: ``hvp(x, v)`` against the numerical derivative of ``grad`` along ``v``."""
    _function(grad, "grad")
    _function(hvp, "hvp")
    _settings(rng, rtol, n_directions)
    x, h = _real(x, "x"), _step(h)
    worst: CheckResult | None = None
    for k in range(n_directions):
        v = rng.standard_normal(x.shape)
        v /= np.linalg.norm(v)
        r = relative_error(_real(hvp(x, v), "hvp(x, v)", finite=False), directional_derivative(grad, x, v, h))
        if worst is None or r.worst_relative_error > worst.worst_relative_error:
            worst = CheckResult(name, r.worst_relative_error, (k,) + r.index, r.actual, r.expected, rtol)
    assert worst is not None
    if not worst.passed:
        raise AssertionError(f"{name}: direction {worst.index[0]}, entry {worst.index[1:]}: "
                             f"{worst.actual!r} analytic vs {worst.expected!r} numerical "
                             f"(relative error {worst.worst_relative_error:.3e} > rtol {rtol:.1e})")
    return worst
