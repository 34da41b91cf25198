"""JAX cross-checks of the closed forms: gradient, Hessian and Hessian-vector product of a
definition written with ``jax.numpy``, always in float64 (x64 enabled only inside each call).

Used from :doc:`/book/softmax_regression` on.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

from ._validate import as_array

__all__ = ["gradient", "hessian", "hessian_vector_product"]

Definition = Callable[[jax.Array], jax.Array]


def _point(x: np.ndarray, name: str = "x") -> np.ndarray:
    arr = np.asarray(x)
    return as_array(x, name, ndim=arr.ndim if arr.ndim in (1, 2) else 1)


def gradient(fun: Definition, x: np.ndarray) -> np.ndarray:
    """``∇fun(x)`` by reverse-mode autodiff in float64.

    Derived in :doc:`/book/softmax_regression`.
    """
    x = _point(x)
    with jax.enable_x64(True):
        return np.asarray(jax.grad(fun)(jax.numpy.asarray(x, dtype=jax.numpy.float64)))


def hessian(fun: Definition, x: np.ndarray) -> np.ndarray:
    """``∇²fun(x)`` by forward-over-reverse autodiff in float64, shape ``x.shape + x.shape``.

    Derived in :doc:`/book/softmax_regression`.
    """
    x = _point(x)
    with jax.enable_x64(True):
        return np.asarray(jax.hessian(fun)(jax.numpy.asarray(x, dtype=jax.numpy.float64)))


def hessian_vector_product(fun: Definition, x: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``∇²fun(x) v`` as the forward derivative of the gradient along ``v``, in float64.

    Derived in :doc:`/book/softmax_regression`.
    """
    x = _point(x)
    v = _point(v, "v")
    if v.shape != x.shape:
        raise ValueError(f"v must have the shape of x {x.shape}, got {v.shape}")
    with jax.enable_x64(True):
        f64 = jax.numpy.float64
        _, tangent = jax.jvp(jax.grad(fun), (jax.numpy.asarray(x, dtype=f64),),
                             (jax.numpy.asarray(v, dtype=f64),))
        return np.asarray(tangent)
