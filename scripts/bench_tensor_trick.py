"""Benchmark of the tensor trick: streaming Kronecker-free vs full-matrix vs explicit Kronecker vs JAX autodiff.

usage:  .venv/bin/python scripts/bench_tensor_trick.py [--json book/data/tensor_trick_bench.json] [--quick | --smoke]

Prints, measured side by side in this run (best of several repeats, wall clock, float64):
1. at (n, d) = (64, 16) and (128, 32): the library's (streaming) gradient of the normalized loss, the
   explicit 𝖠 = A₁⊗A₂ (precomputed, vectorized: 𝖠 vec(X), then 𝖠ᵀ vec(P)), the per-block reference
   route (forms 𝖠, one single-regression gradient per block) and jit-compiled JAX autodiff; and the ratios;
2. at (n, d) = (4096, 128), where 𝖠 would need 2 TiB: the library's gradient and HVP in this process;
3. time against n (d = 64) and against d (n = 1024), with least-squares exponents of log t on log n / log d;
4. routes, each in its own process under a hard address-space limit (RLIMIT_AS, set in the child after its
   imports: the limit is its size then plus a budget), at (4096, 128) and at (32768, 128), where B alone
   is 8 GiB and is generated inside the child: the streaming library route, the full-matrix evaluation of
   the same closed forms (n×n intermediates Z, F, C, P, Q, as the library did before streaming), and
   jitted JAX (jax.grad; the HVP as jax.jvp of jax.grad) on device arrays. Wall and CPU time, peak RSS
   (ru_maxrss of the child) and the memory the route added over the interpreter, relative to the inputs.
   A route that does not fit fails inside its own process and is reported as out of memory;
5. at (4096, 128), the three routes timed again interleaved in one process (round-robin, best of 5), and
   the ratios JAX / streaming and full-matrix / streaming, with the largest difference of their results;
6. the work of each route: the processes of 4. at (4096, 128) again, pinned to one core with one BLAS and
   one XLA thread, CPU time (least disturbed by other load on the machine).
With --json it writes everything, the command and the machine to the JSON file the chapter
book/tensor_trick reads. --smoke runs tiny sizes (a few seconds) to test the script itself.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np
from softmax_icl import multiple_softmax_regression as msr
from softmax_icl import notation

ROUTES = ("streaming", "full-matrix", "jax")
GIB = 2**30


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
    """Gaussian A₁, A₂; X scaled so that Z = A₁XA₂ᵀ has entries of size about 2; Dirichlet(1) rows B.

    B is filled in place, a block of rows at a time (normalized exponentials), so that generating it
    needs no temporary of its size."""
    rng = np.random.default_rng(seed)
    A1, A2 = rng.standard_normal((n, d)), rng.standard_normal((n, d))
    X = rng.standard_normal((d, d)) * 2.0 / d
    V = rng.standard_normal((d, d))
    B = np.empty((n, n))
    step = max(1, 2**22 // n)
    for i in range(0, n, step):
        rows = B[i:i + step]
        rng.standard_exponential(out=rows)
        rows /= rows.sum(axis=1, keepdims=True)
    return A1, A2, X, B, V / np.linalg.norm(V)


# ---- the full-matrix evaluation (n×n intermediates), as the library computed it before streaming ----------

def full_softmax(A1: np.ndarray, A2: np.ndarray, X: np.ndarray) -> np.ndarray:
    F = (A1 @ X) @ A2.T
    F -= F.max(axis=1, keepdims=True)
    np.exp(F, out=F)
    F /= F.sum(axis=1, keepdims=True)
    return F


def full_jacobian_rows(F: np.ndarray, T: np.ndarray) -> np.ndarray:
    out = F * T
    out -= out.sum(axis=1, keepdims=True) * F
    return out


def full_gradient(A1: np.ndarray, A2: np.ndarray, X: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``A₁ᵀ P A₂`` with ``P = F∘C − diag(rowsum(F∘C)) F`` formed as a whole n×n matrix."""
    F = full_softmax(A1, A2, X)
    return A1.T @ (full_jacobian_rows(F, F - B) @ A2)


def full_hvp(A1: np.ndarray, A2: np.ndarray, X: np.ndarray, B: np.ndarray, V: np.ndarray) -> np.ndarray:
    """``A₁ᵀ Q A₂``, ``Q = G − diag(rowsum G) F − diag(rowsum(F∘C)) Ḟ``, ``G = Ḟ∘(F + C)``, all n×n."""
    F = full_softmax(A1, A2, X)
    Fdot = full_jacobian_rows(F, (A1 @ V) @ A2.T)
    G = F + F
    G -= B
    G *= Fdot
    r = np.einsum("jk,jk->j", F, F) - np.einsum("jk,jk->j", F, B)
    tmp = np.multiply(F, G.sum(axis=1, keepdims=True))
    G -= tmp
    np.multiply(Fdot, r[:, None], out=tmp)
    G -= tmp
    return A1.T @ (G @ A2)


def explicit_gradient(K: np.ndarray, x: np.ndarray, B: np.ndarray) -> np.ndarray:
    """The explicit route at its best: 𝖠 given, ∇ = 𝖠ᵀ vec(P) with P from Z = unvec(𝖠 x)."""
    n = B.shape[0]
    Z = (K @ x).reshape(n, n)
    E = np.exp(Z - Z.max(axis=1, keepdims=True))
    F = E / E.sum(axis=1, keepdims=True)
    FC = F * (F - B)
    P = FC - FC.sum(axis=1, keepdims=True) * F
    return K.T @ P.reshape(-1)


def jax_routes() -> tuple[Callable, Callable, Callable]:
    """``(to_device, gradient, hvp)``: jitted ``jax.grad`` of the plain definition and ``jax.jvp`` of it."""
    import jax
    import jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)

    def loss(A1, A2, X, B):
        U = jnp.exp(A1 @ X @ A2.T)
        return 0.5 * jnp.sum((U / jnp.sum(U, axis=1, keepdims=True) - B) ** 2)

    grad = jax.grad(loss, argnums=2)
    jgrad = jax.jit(grad)
    jhvp = jax.jit(lambda A1, A2, X, B, V: jax.jvp(lambda Y: grad(A1, A2, Y, B), (X,), (V,))[1])
    return ((lambda *a: [jnp.asarray(x) for x in a]), (lambda *a: jgrad(*a).block_until_ready()),
            (lambda *a: jhvp(*a).block_until_ready()))


# ---- 1.-3. in this process ------------------------------------------------------------------------------

def compare_small(sizes: list[tuple[int, int]]) -> list[dict]:
    _, jgrad, _ = jax_routes()
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


# ---- 4.-5. one process per route ---------------------------------------------------------------------------

def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def predicted_bytes(route: str, n: int, d: int) -> int:
    """Largest simultaneous float64 data of a route (our count of its arrays): the inputs plus
    the n×n intermediates of the HVP (full-matrix: F, T→Ḟ, G, tmp; JAX: its device copy of B and at
    least Z, U, F and the cotangent), or the streaming buffers (3 of block × n per core) and O(d²) arrays."""
    inputs = 8 * (n * n + 2 * n * d + 2 * d * d)
    if route == "streaming":
        block = min(n, max(msr.MIN_BLOCK_ROWS, msr.BLOCK_BYTES // (8 * n)))
        return inputs + 8 * (3 * (os.cpu_count() or 1) * block * n + 4 * d * d)
    return inputs + 8 * n * n * (4 if route == "full-matrix" else 5)


def _route_functions(route: str) -> tuple[Callable, Callable, Callable]:
    if route == "streaming":
        return (lambda *a: a), msr.normalized_gradient, msr.normalized_hvp
    if route == "full-matrix":
        return (lambda *a: a), full_gradient, full_hvp
    return jax_routes()


def _limit_address_space(budget: int) -> int:
    """RLIMIT_AS := current virtual size + budget, after the imports and after BLAS has allocated its
    per-thread buffers (a first product), so that the budget is for the route's data and work."""
    np.ones((512, 512)) @ np.ones((512, 512))
    limit = _status_kib("VmSize") * 1024 + budget
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return limit


def child_route(route: str, n: int, d: int, repeats: int, budget: int) -> dict:
    """Runs one route in this (child) process under the address-space limit and returns its numbers."""
    prepare, grad, hvp = _route_functions(route)
    out = {"route": route, "n": n, "d": d, "limit_bytes": _limit_address_space(budget)}
    out["baseline_rss_bytes"] = _status_kib("VmRSS") * 1024
    try:
        A1, A2, X, B, V = instance(n, d)
        args = prepare(A1, A2, X, B, V)
        del A1, A2, X, B, V
        for name, fn, fn_args in (("gradient", grad, args[:4]), ("hvp", hvp, args)):
            wall, cpu = [], []
            for _ in range(repeats):
                t0, c0 = time.perf_counter(), time.process_time()
                fn(*fn_args)
                wall.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            out[f"{name}_s"], out[f"{name}_cpu_s"], out[f"{name}_all_s"] = min(wall), min(cpu), wall
        out["status"] = "ok"
    except MemoryError as exc:
        out["status"], out["error"] = "out of memory", f"MemoryError: {exc}"
    except Exception as exc:  # XLA reports a failed allocation as its own runtime error
        text = f"{type(exc).__name__}: {exc}"
        oom = any(s in text for s in ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory", "allocat",
                                      "can't start new thread"))
        out["status"], out["error"] = ("out of memory" if oom else "error"), text[:500]
    out["peak_rss_self_bytes"] = _status_kib("VmHWM") * 1024
    return out


def child_interleaved(n: int, d: int, rounds: int, budget: int) -> dict:
    """The three routes timed round-robin in one process (best of ``rounds``), with their largest differences."""
    funcs = {route: _route_functions(route) for route in ROUTES}
    _limit_address_space(budget)
    data = instance(n, d)
    args = {route: f[0](*data) for route, f in funcs.items()}
    results = {route: (np.asarray(f[1](*args[route][:4])), np.asarray(f[2](*args[route])))
               for route, f in funcs.items()}
    best = {kind: {route: np.inf for route in ROUTES} for kind in ("gradient", "hvp")}
    for _ in range(rounds):
        for kind, index in (("gradient", 1), ("hvp", 2)):
            for route, f in funcs.items():
                fn_args = args[route][:4] if kind == "gradient" else args[route]
                t0 = time.perf_counter()
                f[index](*fn_args)
                best[kind][route] = min(best[kind][route], time.perf_counter() - t0)
    ref = results["streaming"]
    diff = {route: [float(np.abs(r - s).max() / np.abs(s).max()) for r, s in zip(results[route], ref, strict=True)]
            for route in ROUTES if route != "streaming"}
    return {"n": n, "d": d, "rounds": rounds, "gradient_s": best["gradient"], "hvp_s": best["hvp"],
            "ratios": {f"{kind}_{route}_over_streaming": best[kind][route] / best[kind]["streaming"]
                       for kind in ("gradient", "hvp") for route in ROUTES if route != "streaming"},
            "max_relative_difference_to_streaming": {r: {"gradient": v[0], "hvp": v[1]} for r, v in diff.items()}}


ONE_CORE_ENV = {"OPENBLAS_NUM_THREADS": "1",
                "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"}


def run_child(args: list[str], hard_cap: int, timeout: float, one_core: bool = False) -> tuple[dict, int]:
    """Runs this script with ``args`` in a child process (hard RLIMIT_AS cap from the start; with ``one_core``
    pinned to one CPU with one BLAS/XLA thread), returns its JSON line and its peak RSS (ru_maxrss, bytes)."""
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (hard_cap, hard_cap))
        if one_core:
            os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})

    cmd = [sys.executable, os.path.abspath(__file__), *args]
    env = {**os.environ, **ONE_CORE_ENV} if one_core else None
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=cap, env=env)
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    stdout, stderr = proc.stdout.read(), proc.stderr.read()
    peak = usage.ru_maxrss * 1024
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1]), peak
    tail = " | ".join(stderr.strip().splitlines()[-3:])[:400]
    what = (f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit status {proc.returncode}")
    oom = any(s in stderr for s in ("pthread_create", "MemoryError", "RESOURCE_EXHAUSTED", "bad_alloc",
                                    "Memory allocation"))
    return {"status": "out of memory" if oom else "error",
            "error": f"the process ended ({what}) under its address-space limit: {tail}"}, peak


def routes_case(n: int, d: int, repeats: int, budget: int, timeout: float,
                routes: tuple[str, ...] = ROUTES, one_core: bool = False) -> dict:
    input_bytes = 8 * (n * n + 2 * n * d + 2 * d * d)
    results = {}
    for route in routes:
        res, peak = run_child(["--child", route, "--n", str(n), "--d", str(d), "--repeats", str(repeats),
                               "--budget", str(budget)], hard_cap=budget + 2 * GIB, timeout=timeout, one_core=one_core)
        res["peak_rss_bytes"] = peak
        res["predicted_bytes"] = predicted_bytes(route, n, d)
        if res["status"] == "ok":
            res["memory_over_inputs"] = (peak - res["baseline_rss_bytes"]) / input_bytes
        results[route] = res
    return {"n": n, "d": d, "input_bytes": input_bytes, "budget_bytes": budget, "one_core": one_core,
            "results": results}


def _size(nbytes: float) -> str:
    return f"{nbytes / GIB:.3g} GiB" if nbytes >= GIB else f"{nbytes / 2**20:.3g} MiB"


def _fmt_s(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f} s"


def print_one_core(case: dict) -> None:
    r = case["results"]
    print(f"\n6. work: the same routes on one core (one BLAS/XLA thread, pinned), at (n, d) = ({case['n']}, "
          f"{case['d']}), best of 3, CPU time of the process")
    print(f"{'':>12} {'streaming':>10} {'full-matrix':>12} {'JAX':>10} | {'full/stream':>11} {'JAX/stream':>10}")
    for kind in ("gradient", "hvp"):
        t = {route: r[route].get(f"{kind}_cpu_s") for route in ROUTES}
        if None in t.values():
            print(f"{kind:>12} " + ", ".join(f"{k}: {v['status']}" for k, v in r.items()))
            continue
        print(f"{kind:>12} {t['streaming']:>8.3f} s {t['full-matrix']:>10.3f} s {t['jax']:>8.3f} s | "
              f"{t['full-matrix'] / t['streaming']:>10.2f}× {t['jax'] / t['streaming']:>9.2f}×")


def print_routes(cases: list[dict], inter: dict) -> None:
    print("\n4. routes, each in its own process (budget = address space allowed beyond the interpreter)")
    print(f"{'route':>12} {'(n, d)':>12} {'inputs':>9} {'gradient':>10} {'HVP':>10} {'peak RSS':>10} "
          f"{'added/inputs':>12}  status")
    for case in cases:
        for route, r in case["results"].items():
            added = r.get("memory_over_inputs")
            status = r["status"] if r["status"] == "ok" else (
                f"{r['status']} (budget {_size(case['budget_bytes'])}; predicted need {_size(r['predicted_bytes'])})")
            print(f"{route:>12} {str((case['n'], case['d'])):>12} {case['input_bytes'] / 2**20:>6.0f}MiB "
                  f"{_fmt_s(r.get('gradient_s')):>10} {_fmt_s(r.get('hvp_s')):>10} "
                  f"{r['peak_rss_bytes'] / 2**20:>7.0f}MiB {'—' if added is None else f'{added:.2f}':>12}  {status}")
    print(f"\n5. interleaved in one process at (n, d) = ({inter['n']}, {inter['d']}), best of {inter['rounds']} rounds")
    print(f"{'':>12} {'streaming':>10} {'full-matrix':>12} {'JAX':>10} | {'full/stream':>11} {'JAX/stream':>10}")
    for kind in ("gradient", "hvp"):
        t = inter[f"{kind}_s"]
        print(f"{kind:>12} {t['streaming']:>8.3f} s {t['full-matrix']:>10.3f} s {t['jax']:>8.3f} s | "
              f"{inter['ratios'][f'{kind}_full-matrix_over_streaming']:>10.2f}× "
              f"{inter['ratios'][f'{kind}_jax_over_streaming']:>9.2f}×")
    diffs = ", ".join(f"{r}: gradient {v['gradient']:.1e}, HVP {v['hvp']:.1e}"
                      for r, v in inter["max_relative_difference_to_streaming"].items())
    print(f"   largest difference to the streaming result (max-norm, relative): {diffs}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results to this JSON file")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller scaling sweep")
    size.add_argument("--smoke", action="store_true", help="tiny sizes, to test the script (seconds)")
    parser.add_argument("--child", choices=[*ROUTES, "interleaved"], help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--d", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=3, help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "interleaved":
        print(json.dumps(child_interleaved(args.n, args.d, args.repeats, args.budget)))
        return
    if args.child:
        print(json.dumps(child_route(args.child, args.n, args.d, args.repeats, args.budget)))
        return

    command = " ".join([".venv/bin/python", os.path.relpath(__file__, os.getcwd())] + sys.argv[1:])
    load = os.getloadavg()[0]
    print(f"command: {command}\nmachine: {platform.machine()}, {os.cpu_count()} CPU cores, numpy {np.__version__}, "
          f"load average at start {load:.2f}\n")
    smoke = args.smoke
    # the processes of 4.-5. first, before this process imports JAX (which must not be forked)
    if smoke:  # the second case does not fit its budget except for the streaming route
        plan = [(256, 16, 2, 3 * GIB, ROUTES), (4096, 16, 1, 384 * 2**20, ROUTES[:2])]
        inter_args = (256, 16, 2, 3 * GIB)
    else:
        plan = [(4096, 128, 3, 4 * GIB, ROUTES), (32768, 128, 1, 12 * GIB, ROUTES)]
        inter_args = (4096, 128, 5, 6 * GIB)
    cases = [routes_case(n, d, repeats, budget, 600, routes) for n, d, repeats, budget, routes in plan]
    one_core = routes_case(*plan[0][:4], 600, ROUTES, one_core=True)
    res, _ = run_child(["--child", "interleaved", "--n", str(inter_args[0]), "--d", str(inter_args[1]),
                        "--repeats", str(inter_args[2]), "--budget", str(inter_args[3])],
                       hard_cap=inter_args[3] + 2 * GIB, timeout=600)
    if "ratios" not in res:
        raise SystemExit(f"the interleaved timing failed: {res}")
    inter = res
    small = compare_small([(16, 4), (32, 4)] if smoke else [(64, 16), (128, 32)])
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

    n_big, d_big = (256, 16) if smoke else (4096, 128)
    big = large(n_big, d_big, repeats=2 if smoke else 5)
    print(f"\n2. (n, d) = ({n_big}, {d_big}): explicit 𝖠 would need {big['kron_bytes'] / 2**30:.3g} GiB")
    print(f"   streaming gradient: best {big['gradient_best_s']:.3f} s, median {big['gradient_median_s']:.3f} s "
          f"over {len(big['gradient_s'])} calls")
    print(f"   streaming HVP:      best {big['hvp_best_s']:.3f} s, median {big['hvp_median_s']:.3f} s")
    print(f"   CPU time of this process (all threads): gradient {big['gradient_cpu_best_s']:.3f} s, "
          f"HVP {big['hvp_cpu_best_s']:.3f} s")
    print(f"   reference route: {big['reference_refusal']}")

    if smoke:
        sc = scaling([64, 128], 8, [4, 8], 64)
    elif args.quick:
        sc = scaling([256, 512, 1024, 2048], 64, [16, 32, 64, 128], 1024)
    else:
        sc = scaling([256, 512, 1024, 2048, 4096], 64, [16, 32, 64, 128, 256], 1024)
    print("\n3. scaling of the streaming gradient / HVP (best time per call)")
    for label, xs, fixed in (("vs_n", sc["n"], f"d = {sc['d_fixed']}"), ("vs_d", sc["d"], f"n = {sc['n_fixed']}")):
        var = "n" if label == "vs_n" else "d"
        print(f"   against {var} at {fixed}: " + ", ".join(
            f"{x}: {g * 1e3:.1f}/{h * 1e3:.1f} ms" for x, g, h in zip(xs, sc[label]["gradient_s"], sc[label]["hvp_s"],
                                                                   strict=True)))
        print(f"   fitted exponent of {var}: gradient {sc[label]['gradient_exponent']:.2f}, "
              f"HVP {sc[label]['hvp_exponent']:.2f}")

    print_routes(cases, inter)
    print_one_core(one_core)
    big_cases = [c for c in cases if c["results"]["streaming"]["status"] == "ok"]
    exps = {}
    if len(big_cases) >= 2:
        (a, b) = big_cases[0], big_cases[-1]
        for kind in ("gradient", "hvp"):
            exps[f"{kind}_n_{a['n']}_to_{b['n']}"] = float(
                np.log(b["results"]["streaming"][f"{kind}_s"] / a["results"]["streaming"][f"{kind}_s"])
                / np.log(b["n"] / a["n"]))
        print(f"   exponent of n for the streaming route between n = {a['n']} and {b['n']} (d = {a['d']}): "
              + ", ".join(f"{k.split('_')[0]} {v:.2f}" for k, v in exps.items()))

    if args.json:
        result = {"command": command, "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                                                  "numpy": np.__version__, "load_average_at_start": load},
                  "date": time.strftime("%Y-%m-%d"), "small": small, "large": big, "scaling": sc,
                  "routes": cases, "interleaved": inter, "one_core": one_core,
                  "streaming_exponents_between_cases": exps, "block_bytes": msr.BLOCK_BYTES,
                  "min_block_rows": msr.MIN_BLOCK_ROWS, "thread_min_entries": msr.THREAD_MIN_ENTRIES}
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
