"""Benchmark of the tensor trick: Kronecker-free vs explicit Kronecker vs JAX autodiff, in one run.

usage:  .venv/bin/python scripts/bench_tensor_trick.py [--json book/data/tensor_trick_bench.json] [--quick]

Prints, measured side by side in this run (best of several repeats, wall clock, float64):
1. at (n, d) = (64, 16) and (128, 32): the gradient of the normalized loss by the Kronecker-free
   formula A₁ᵀPA₂, by the explicit 𝖠 = A₁⊗A₂ (precomputed, vectorized: 𝖠 vec(X), then 𝖠ᵀ vec(P)),
   by the per-block reference route (forms 𝖠, one single-regression gradient per block) and by
   jit-compiled JAX autodiff of the definition; and the ratios;
2. at (n, d) = (4096, 128), where 𝖠 would need 2 TiB: the Kronecker-free gradient and HVP, wall
   clock and CPU time of the process (the machine may be shared), and the reference route's refusal;
3. time against n (d = 64) and against d (n = 1024) with least-squares exponents of log t on log n / log d.
With --json it writes the numbers, the command and the machine to a small JSON file that the
chapter book/tensor_trick plots.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable

import numpy as np
from softmax_icl import multiple_softmax_regression as msr
from softmax_icl import notation


def best_time(fn: Callable[[], object], repeats: int = 5, min_total: float = 0.2) -> float:
    """Best per-call time over ``repeats`` batches; a batch runs ``fn`` enough times to last ~min_total/repeats."""
    fn()
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-7)
    inner = max(1, int(min_total / repeats / once))
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - t0) / inner)
    return float(best)


def instance(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Gaussian A₁, A₂; X scaled so that Z = A₁XA₂ᵀ has entries of size about 2; Dirichlet rows B."""
    rng = np.random.default_rng(seed)
    A1, A2 = rng.standard_normal((n, d)), rng.standard_normal((n, d))
    X = rng.standard_normal((d, d)) * 2.0 / d
    B = rng.dirichlet(np.ones(n), size=n)
    V = rng.standard_normal((d, d))
    return A1, A2, X, B, V / np.linalg.norm(V)


def explicit_gradient(K: np.ndarray, x: np.ndarray, B: np.ndarray) -> np.ndarray:
    """The explicit route at its best: 𝖠 given, ∇ = 𝖠ᵀ vec(P) with P from Z = unvec(𝖠 x)."""
    n = B.shape[0]
    Z = (K @ x).reshape(n, n)
    E = np.exp(Z - Z.max(axis=1, keepdims=True))
    F = E / E.sum(axis=1, keepdims=True)
    FC = F * (F - B)
    P = FC - FC.sum(axis=1, keepdims=True) * F
    return K.T @ P.reshape(-1)


def jax_gradient():
    import jax
    import jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)

    def loss(A1, A2, X, B):
        U = jnp.exp(A1 @ X @ A2.T)
        return 0.5 * jnp.sum((U / jnp.sum(U, axis=1, keepdims=True) - B) ** 2)

    grad = jax.jit(jax.grad(loss, argnums=2))
    return lambda *args: grad(*args).block_until_ready()


def compare_small(sizes: list[tuple[int, int]]) -> list[dict]:
    jgrad = jax_gradient()
    rows = []
    for n, d in sizes:
        A1, A2, X, B, _ = instance(n, d)
        x = notation.vec(X)
        t_form = best_time(lambda: msr.kronecker_data(A1, A2), repeats=3, min_total=0.3)
        K = msr.kronecker_data(A1, A2)
        g = msr.normalized_gradient(A1, A2, X, B)
        np.testing.assert_allclose(notation.unvec(explicit_gradient(K, x, B), (d, d)), g, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(np.asarray(jgrad(A1, A2, X, B)), g, rtol=1e-9, atol=1e-12)
        row = {
            "n": n, "d": d, "kron_MiB": msr.kronecker_bytes(n, d) / 2**20,
            "free_gradient_s": best_time(lambda: msr.normalized_gradient(A1, A2, X, B)),
            "free_hvp_s": best_time(lambda: msr.normalized_hvp(A1, A2, X, B, X)),
            "explicit_given_s": best_time(lambda: explicit_gradient(K, x, B), repeats=3),
            "explicit_formation_s": t_form,
            "per_block_reference_s": best_time(lambda: msr.kronecker_gradient(A1, A2, X, B), repeats=3, min_total=0.5),
            "jax_autodiff_s": best_time(lambda: jgrad(A1, A2, X, B)),
        }
        row["speedup_vs_explicit"] = row["explicit_given_s"] / row["free_gradient_s"]
        row["speedup_vs_explicit_with_formation"] = (row["explicit_given_s"] + t_form) / row["free_gradient_s"]
        row["speedup_vs_per_block"] = row["per_block_reference_s"] / row["free_gradient_s"]
        row["speedup_vs_jax"] = row["jax_autodiff_s"] / row["free_gradient_s"]
        rows.append(row)
    return rows


def large(n: int, d: int, repeats: int) -> dict:
    A1, A2, X, B, V = instance(n, d)
    grads, hvps, grads_cpu, hvps_cpu = [], [], [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        msr.normalized_gradient(A1, A2, X, B)
        grads.append(time.perf_counter() - t0)
        grads_cpu.append(time.process_time() - c0)
        t0, c0 = time.perf_counter(), time.process_time()
        msr.normalized_hvp(A1, A2, X, B, V)
        hvps.append(time.perf_counter() - t0)
        hvps_cpu.append(time.process_time() - c0)
    try:
        msr.kronecker_gradient(A1, A2, X, B)
        refusal = "not refused"
    except msr.KroneckerTooLargeError as exc:
        refusal = str(exc)
    return {"n": n, "d": d, "kron_bytes": msr.kronecker_bytes(n, d),
            "gradient_s": grads, "hvp_s": hvps, "gradient_best_s": min(grads), "hvp_best_s": min(hvps),
            "gradient_median_s": float(np.median(grads)), "hvp_median_s": float(np.median(hvps)),
            "gradient_cpu_best_s": min(grads_cpu), "hvp_cpu_best_s": min(hvps_cpu),
            "reference_refusal": refusal}


def exponent(x: list[int], t: list[float]) -> float:
    return float(np.polyfit(np.log(x), np.log(t), 1)[0])


def scaling(ns: list[int], d_fixed: int, ds: list[int], n_fixed: int) -> dict:
    out: dict = {"d_fixed": d_fixed, "n_fixed": n_fixed, "n": ns, "d": ds}
    for label, sizes in (("vs_n", [(n, d_fixed) for n in ns]), ("vs_d", [(n_fixed, d) for d in ds])):
        tg, th = [], []
        for n, d in sizes:
            A1, A2, X, B, V = instance(n, d)
            tg.append(best_time(lambda: msr.normalized_gradient(A1, A2, X, B), repeats=3))
            th.append(best_time(lambda: msr.normalized_hvp(A1, A2, X, B, V), repeats=3))
        xs = [s[0] if label == "vs_n" else s[1] for s in sizes]
        out[label] = {"gradient_s": tg, "hvp_s": th, "gradient_exponent": exponent(xs, tg),
                      "hvp_exponent": exponent(xs, th)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results to this JSON file")
    parser.add_argument("--quick", action="store_true", help="smaller scaling sweep")
    args = parser.parse_args()
    command = " ".join([".venv/bin/python", os.path.relpath(__file__, os.getcwd())] + sys.argv[1:])
    load = os.getloadavg()[0]
    print(f"command: {command}\nmachine: {platform.machine()}, {os.cpu_count()} CPU cores, numpy {np.__version__}, "
          f"load average at start {load:.2f}\n")

    small = compare_small([(64, 16), (128, 32)])
    print("1. normalized-loss gradient, best wall-clock time per call")
    print(f"{'(n, d)':>10} {'𝖠 size':>9} {'free':>10} {'free HVP':>10} {'explicit 𝖠':>11} {'+forming 𝖠':>11} "
          f"{'per block':>10} {'JAX':>10} | {'×explicit':>9} {'×(+form)':>9} {'×per-block':>10} {'×JAX':>6}")
    for r in small:
        print(f"{str((r['n'], r['d'])):>10} {r['kron_MiB']:>6.0f}MiB {r['free_gradient_s'] * 1e3:>8.3f}ms "
              f"{r['free_hvp_s'] * 1e3:>8.3f}ms {r['explicit_given_s'] * 1e3:>9.2f}ms "
              f"{r['explicit_formation_s'] * 1e3:>9.1f}ms {r['per_block_reference_s'] * 1e3:>8.1f}ms "
              f"{r['jax_autodiff_s'] * 1e3:>8.3f}ms | {r['speedup_vs_explicit']:>9.0f} "
              f"{r['speedup_vs_explicit_with_formation']:>9.0f} {r['speedup_vs_per_block']:>10.0f} "
              f"{r['speedup_vs_jax']:>6.1f}")

    big = large(4096, 128, repeats=5)
    print(f"\n2. (n, d) = (4096, 128): explicit 𝖠 would need {big['kron_bytes'] / 2**40:.0f} TiB")
    print(f"   Kronecker-free gradient: best {big['gradient_best_s']:.3f} s, median {big['gradient_median_s']:.3f} s "
          f"over {len(big['gradient_s'])} calls")
    print(f"   Kronecker-free HVP:      best {big['hvp_best_s']:.3f} s, median {big['hvp_median_s']:.3f} s")
    print(f"   CPU time of this process (all threads): gradient {big['gradient_cpu_best_s']:.3f} s, "
          f"HVP {big['hvp_cpu_best_s']:.3f} s (on an idle machine the wall-clock time is at most about this)")
    print(f"   reference route: {big['reference_refusal']}")

    if args.quick:
        sc = scaling([256, 512, 1024, 2048], 64, [16, 32, 64, 128], 1024)
    else:
        sc = scaling([256, 512, 1024, 2048, 4096], 64, [16, 32, 64, 128, 256], 1024)
    print("\n3. scaling of the Kronecker-free gradient / HVP (best time per call)")
    for label, xs, fixed in (("vs_n", sc["n"], f"d = {sc['d_fixed']}"), ("vs_d", sc["d"], f"n = {sc['n_fixed']}")):
        var = "n" if label == "vs_n" else "d"
        print(f"   against {var} at {fixed}: " + ", ".join(
            f"{x}: {g * 1e3:.1f}/{h * 1e3:.1f} ms" for x, g, h in zip(xs, sc[label]["gradient_s"], sc[label]["hvp_s"],
                                                                   strict=True)))
        print(f"   fitted exponent of {var}: gradient {sc[label]['gradient_exponent']:.2f}, "
              f"HVP {sc[label]['hvp_exponent']:.2f}")

    if args.json:
        result = {"command": command, "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                                                  "numpy": np.__version__, "load_average_at_start": load},
                  "date": time.strftime("%Y-%m-%d"), "small": small, "large": big, "scaling": sc}
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
