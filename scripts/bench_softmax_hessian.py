"""Benchmark: the normalized softmax-regression Hessian against one weighted Gram product and JAX.

usage: .venv/bin/python scripts/bench_softmax_hessian.py [--n 2000] [--d 200] [--repeats 50]

Prints, measured side by side in one run (the candidates are timed in interleaved rounds; a ratio
is the median over rounds of the per-round ratio, and also the ratio of the fastest runs):
  * ratio of ``normalized_hessian(A, x, b)`` to one ``A.T @ (w[:, None] * A)`` (goal ≤ 1.5);
  * ratio of ``normalized_hessian`` to ``jax.jit(jax.hessian(L))`` in float64 (goal < 1: faster);
  * ratio of ``normalized_hvp`` to one ``A @ v`` plus one ``A.T @ u`` (goal < 3; the floor is about 1.5:
    the product needs ``A x``, ``A v`` and ``Aᵀ r``). These two are timed in rounds of their own, in
    alternating order, so that both find ``A`` in the same cache state (as in the iterations of a
    Newton-CG solve); after the dense Hessians, which sweep the caches, the first one would pay for
    reloading ``A`` and the second would not.
The Hessian is derived in chapter *Softmax regression: gradient, Hessian, convexity*
(book/softmax_regression.ipynb).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable

import numpy as np


def interleaved_times(candidates: dict[str, Callable[[], object]], rounds: int,
                      alternate: bool = False) -> dict[str, np.ndarray]:
    """Wall times of every candidate in each of ``rounds`` rounds (one call each per round, after two
    warm-up calls): a slowdown of a shared machine hits all candidates of a round alike. With
    ``alternate``, every other round runs the candidates in reverse order."""
    for fn in candidates.values():
        fn()
        fn()
    times: dict[str, list[float]] = {k: [] for k in candidates}
    for r in range(rounds):
        order = list(candidates.items())
        for name, fn in (order[::-1] if alternate and r % 2 else order):
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {k: np.array(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--d", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    from softmax_icl import softmax_regression as sr

    rng = np.random.default_rng(args.seed)
    n, d = args.n, args.d
    A = rng.standard_normal((n, d))
    x = rng.standard_normal(d) * 2.0 / np.sqrt(d)
    b = rng.dirichlet(np.ones(n))
    w = rng.standard_normal(n)
    v = rng.standard_normal(d)
    u = rng.standard_normal(n)

    def loss(y, A, b):
        e = jnp.exp(A @ y)
        return 0.5 * jnp.sum((e / jnp.sum(e) - b) ** 2)

    jax_hessian = jax.jit(jax.hessian(loss))
    Aj, xj, bj = jnp.asarray(A), jnp.asarray(x), jnp.asarray(b)
    H_lib = sr.normalized_hessian(A, x, b)
    H_jax = np.asarray(jax_hessian(xj, Aj, bj))
    err = float(np.max(np.abs(H_lib - H_jax)) / np.max(np.abs(H_jax)))
    assert err < 1e-10, f"library and JAX Hessians disagree (relative error {err:.1e})"

    candidates = {
        "gram": lambda: A.T @ (w[:, None] * A),
        "library Hessian": lambda: sr.normalized_hessian(A, x, b),
        "JAX Hessian": lambda: jax_hessian(xj, Aj, bj).block_until_ready(),
    }
    times = interleaved_times(candidates, args.repeats)
    products = {
        "library hvp": lambda: sr.normalized_hvp(A, x, b, v),
        "matvecs": lambda: A.T @ (A @ v + u),
    }
    times.update(interleaved_times(products, 20 * args.repeats, alternate=True))
    med = {k: float(np.median(t)) for k, t in times.items()}
    best = {k: float(np.min(t)) for k, t in times.items()}

    def ratio(a: str, b: str) -> str:
        per_round = float(np.median(times[a] / times[b]))
        return f"{per_round:6.3f} (median over rounds; ratio of fastest runs {best[a] / best[b]:6.3f})"

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {load:.2f}, "
          f"numpy {np.__version__}, jax {jax.__version__}")
    print(f"(n, d) = ({n}, {d}); {args.repeats} interleaved rounds; library vs JAX Hessian rel. error {err:.1e}")
    print(f"one weighted Gram A.T @ (w[:,None]*A): median {1e3 * med['gram']:8.3f} ms, "
          f"fastest {1e3 * best['gram']:8.3f} ms")
    print(f"library normalized_hessian:             median {1e3 * med['library Hessian']:8.3f} ms, "
          f"fastest {1e3 * best['library Hessian']:8.3f} ms")
    print(f"jax.jit(jax.hessian(L)):                median {1e3 * med['JAX Hessian']:8.3f} ms, "
          f"fastest {1e3 * best['JAX Hessian']:8.3f} ms")
    print(f"library normalized_hvp:                 median {1e3 * med['library hvp']:8.3f} ms")
    print(f"A.T @ (A @ v + u):                      median {1e3 * med['matvecs']:8.3f} ms")
    print(f"ratio library Hessian / weighted Gram:  {ratio('library Hessian', 'gram')}   goal <= 1.5")
    print(f"ratio library Hessian / JAX Hessian:    {ratio('library Hessian', 'JAX Hessian')}   goal < 1")
    print(f"ratio library hvp / (A v, Aᵀ u):        {ratio('library hvp', 'matvecs')}   goal < 3")


if __name__ == "__main__":
    main()
