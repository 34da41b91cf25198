"""Streaming (row-blocked) evaluation of the tensor-trick losses, gradients and HVPs: block sizes, agreement
with independent dense and explicit-Kronecker evaluations, accuracy at saturation against mpmath, bad block
sizes, and the benchmark script in its smoke mode."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mpmath as mp
import numpy as np
import pytest
from softmax_icl import multiple_softmax_regression as msr
from test_multiple_softmax_regression import LOSSES, functions, random_instance

ROOT = Path(__file__).resolve().parents[1]


# ---- an independent dense evaluation of the closed forms (n×n arrays, textbook formulas) ---------------------

def dense(A1: np.ndarray, A2: np.ndarray, X: np.ndarray, B: np.ndarray, V: np.ndarray,
          loss: str) -> tuple[float, np.ndarray, np.ndarray]:
    Z, T = A1 @ X @ A2.T, A1 @ V @ A2.T
    U = np.exp(Z)
    s = U.sum(axis=1, keepdims=True)
    if loss == "normalized":
        F = U / s
        C = F - B
        mu = (F * C).sum(axis=1, keepdims=True)
        P = F * C - mu * F
        Fd = F * T - (F * T).sum(axis=1, keepdims=True) * F
        Q = Fd * C + F * Fd - (Fd * (F + C)).sum(axis=1, keepdims=True) * F - mu * Fd
        return 0.5 * float((C * C).sum()), A1.T @ P @ A2, A1.T @ Q @ A2
    C2 = U - s * B
    beta = (B * C2).sum(axis=1, keepdims=True)
    P2 = U * C2 - beta * U
    Ud = U * T
    Cd = Ud - Ud.sum(axis=1, keepdims=True) * B
    Q2 = Ud * C2 + U * Cd - (B * Cd).sum(axis=1, keepdims=True) * U - beta * Ud
    return 0.5 * float((C2 * C2).sum()), A1.T @ P2 @ A2, A1.T @ Q2 @ A2


def relative(a: np.ndarray | float, b: np.ndarray | float) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


# ---- block sizes ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("loss", LOSSES)
def test_every_block_size_gives_the_one_block_result(loss: str) -> None:
    n, d = 50, 5
    A1, A2, X, B, V = random_instance(n, d, 3)
    value, grad, hvp = functions(loss)
    whole = (value(A1, A2, X, B, block_rows=n), grad(A1, A2, X, B, block_rows=n),
             hvp(A1, A2, X, B, V, block_rows=n))
    for rows in (1, 3, 7, 16, 49, 64, None, np.int64(8)):   # 3, 7, 16, 49 do not divide 50; 64 > n
        got = (value(A1, A2, X, B, block_rows=rows), grad(A1, A2, X, B, block_rows=rows),
               hvp(A1, A2, X, B, V, block_rows=rows))
        for g, w in zip(got, whole, strict=True):
            assert relative(g, w) <= 1e-14, (loss, rows)
        np.testing.assert_array_equal(msr.normalized_loss_and_gradient(A1, A2, X, B, block_rows=rows)[1],
                                      msr.normalized_gradient(A1, A2, X, B, block_rows=rows))


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("rows", [1, 7, 32, None])
def test_streaming_matches_the_dense_closed_forms(loss: str, rows: int | None) -> None:
    A1, A2, X, B, V = random_instance(200, 6, 1)
    value, grad, hvp = functions(loss)
    ref = dense(A1, A2, X, B, V, loss)
    got = (value(A1, A2, X, B, block_rows=rows), grad(A1, A2, X, B, block_rows=rows),
           hvp(A1, A2, X, B, V, block_rows=rows))
    for g, r in zip(got, ref, strict=True):
        assert relative(g, r) <= 1e-12


@pytest.mark.parametrize("loss", LOSSES)
def test_streaming_matches_the_explicit_kronecker_route(loss: str) -> None:
    A1, A2, X, B, V = random_instance(9, 3, 4)
    value, grad, hvp = functions(loss)
    for rows in (2, 4, 9):
        assert relative(value(A1, A2, X, B, block_rows=rows), msr.kronecker_loss(A1, A2, X, B, loss)) <= 1e-12
        assert relative(grad(A1, A2, X, B, block_rows=rows), msr.kronecker_gradient(A1, A2, X, B, loss)) <= 1e-10
        assert relative(hvp(A1, A2, X, B, V, block_rows=rows), msr.kronecker_hvp(A1, A2, X, B, V, loss)) <= 1e-10


@pytest.mark.parametrize("loss", LOSSES)
def test_blocks_shared_out_over_threads_give_the_serial_result(loss: str, monkeypatch) -> None:
    A1, A2, X, B, V = random_instance(600, 4, 2)
    value, grad, hvp = functions(loss)
    ref = dense(A1, A2, X, B, V, loss)
    results = {}
    for threshold in (0, 10**12):          # every problem threaded / never threaded
        monkeypatch.setattr(msr, "THREAD_MIN_ENTRIES", threshold)
        for rows in (7, 64, None):
            got = (value(A1, A2, X, B, block_rows=rows), grad(A1, A2, X, B, block_rows=rows),
                   hvp(A1, A2, X, B, V, block_rows=rows))
            for g, r in zip(got, ref, strict=True):
                assert relative(g, r) <= 1e-12
            results[threshold, rows] = got
    for rows in (7, 64, None):
        for g, s in zip(results[0, rows], results[10**12, rows], strict=True):
            assert relative(g, s) <= 1e-15


def test_the_automatic_block_never_holds_an_n_by_n_buffer() -> None:
    assert msr._block_size(32768, None) == msr.MIN_BLOCK_ROWS
    assert msr._block_size(4096, None) == msr.BLOCK_BYTES // (8 * 4096)
    assert msr._block_size(10, None) == 10 and msr._block_size(10, 64) == 10


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-3, ValueError), (2.5, TypeError), (4.0, TypeError),
                                        (True, TypeError), ("8", TypeError), (np.float64(4), TypeError),
                                        ([4], TypeError)])
def test_bad_block_sizes_are_refused_by_name(bad: object, error: type) -> None:
    A1, A2, X, B, V = random_instance(6, 2, 0)
    for loss in LOSSES:
        value, grad, hvp = functions(loss)
        for call in (lambda: value(A1, A2, X, B, block_rows=bad), lambda: grad(A1, A2, X, B, block_rows=bad),
                     lambda: hvp(A1, A2, X, B, V, block_rows=bad)):
            with pytest.raises(error, match="block_rows"):
                call()


def test_bad_arrays_are_still_refused_before_streaming() -> None:
    A1, A2, X, B, V = random_instance(6, 2, 0)
    with pytest.raises(ValueError, match="B"):
        msr.normalized_gradient(A1, A2, X, B[:5], block_rows=2)
    with pytest.raises(ValueError, match="V"):
        msr.rescaled_hvp(A1, A2, X, B, V[:1], block_rows=2)
    with pytest.raises(TypeError, match="A1"):
        msr.normalized_loss(A1.astype(int), A2, X, B, block_rows=2)


def test_rescaled_overflow_is_reported_in_any_block(monkeypatch) -> None:
    monkeypatch.setattr(msr, "THREAD_MIN_ENTRIES", 0)      # raised inside a worker thread, too
    A1, A2, X, B, _ = random_instance(20, 3, 0)
    Z = msr.logits(A1, A2, X)
    Xbig = X * (800.0 / np.abs(Z).max())
    for rows in (1, 6, None):
        with pytest.raises(OverflowError, match="normalized"):
            msr.rescaled_gradient(A1, A2, Xbig, B, block_rows=rows)
        assert np.all(np.isfinite(msr.normalized_hvp(A1, A2, Xbig, B, Xbig, block_rows=rows)))


# ---- accuracy at saturation, against a 1000-digit mpmath evaluation of the textbook formulas ---------------

mp.mp.dps = 1000


def mp_reference(A1: np.ndarray, A2: np.ndarray, X: np.ndarray, B: np.ndarray, V: np.ndarray,
                 loss: str) -> tuple[mp.mpf, mp.matrix, mp.matrix]:
    """Loss, gradient and HVP from the unsplit formulas, in 1000-digit arithmetic (no shift needed)."""
    M = [mp.matrix(a.tolist()) for a in (A1, A2, X, B, V)]
    A1m, A2m, Xm, Bm, Vm = M
    Z, T = A1m * Xm * A2m.T, A1m * Vm * A2m.T
    n = A1.shape[0]
    P, Q, value = mp.matrix(n, n), mp.matrix(n, n), mp.mpf(0)
    for j in range(n):
        u = [mp.exp(Z[j, k]) for k in range(n)]
        t, b = [T[j, k] for k in range(n)], [Bm[j, k] for k in range(n)]
        s = mp.fsum(u)
        if loss == "normalized":
            f = [x / s for x in u]
            c = [f[k] - b[k] for k in range(n)]
            mu = mp.fsum(f[k] * c[k] for k in range(n))
            ft = mp.fsum(f[k] * t[k] for k in range(n))
            fd = [f[k] * (t[k] - ft) for k in range(n)]
            nu = mp.fsum(fd[k] * (f[k] + c[k]) for k in range(n))
            for k in range(n):
                P[j, k] = f[k] * (c[k] - mu)
                Q[j, k] = fd[k] * (c[k] - mu) + f[k] * (fd[k] - nu)
        else:
            c = [u[k] - s * b[k] for k in range(n)]
            beta = mp.fsum(b[k] * c[k] for k in range(n))
            ud = [u[k] * t[k] for k in range(n)]
            sd = mp.fsum(ud)
            cd = [ud[k] - sd * b[k] for k in range(n)]
            betad = mp.fsum(b[k] * cd[k] for k in range(n))
            for k in range(n):
                P[j, k] = u[k] * (c[k] - beta)
                Q[j, k] = ud[k] * (c[k] - beta) + u[k] * (cd[k] - betad)
        value += mp.fsum(x * x for x in c) / 2
    return value, A1m.T * P * A2m, A1m.T * Q * A2m


def mp_error(got: np.ndarray | float, ref: mp.matrix | mp.mpf) -> tuple[float, float]:
    """(relative Frobenius error, Frobenius norm of the reference), both in high precision."""
    got = np.atleast_2d(got)
    ref = ref if isinstance(ref, mp.matrix) else mp.matrix([[ref]])
    diff = mp.sqrt(mp.fsum((mp.mpf(float(got[i, k])) - ref[i, k]) ** 2 for i in range(ref.rows)
                           for k in range(ref.cols)))
    norm = mp.sqrt(mp.fsum(ref[i, k] ** 2 for i in range(ref.rows) for k in range(ref.cols)))
    return float(diff / norm), float(norm)


#: below this norm a result is not representable with full float64 precision (it underflows)
TINY = 1e-290


def saturated_instance(gap: float, one_hot: bool, seed: int = 0) -> tuple[np.ndarray, ...]:
    """n = 4, d = 2: in every row the logit of column 0 is O(1) and the others lie about ``gap`` below it."""
    rng = np.random.default_rng(seed)
    n = 4
    A1 = np.column_stack([np.ones(n), rng.uniform(-1, 1, n)])
    A2 = np.vstack([[0.0, 0.7], np.column_stack([np.full(n - 1, -gap), rng.uniform(-1, 1, n - 1)])])
    X = np.array([[1.0, 0.0], [0.0, 1.0]]) + rng.uniform(-0.3, 0.3, (2, 2))
    V = rng.standard_normal((2, 2))
    if one_hot:
        B = np.zeros((n, n))
        B[:, 0] = 1.0
    else:
        B = rng.dirichlet(np.ones(n), size=n)
    return A1, A2, X, B, V


GAPS = (0.5, 5.0, 20.0, 37.0, 45.0, 80.0, 200.0, 400.0, 700.0, 1000.0)


def accuracy_failures(loss: str, gradient=None, hvp=None) -> list[str]:
    """Every (gap, target, quantity) at which a result misses the mpmath reference by more than 1e-10
    relative (or, where the reference underflows, is not itself below TINY)."""
    value_fn, grad_fn, hvp_fn = functions(loss)
    gradient, hvp = gradient or grad_fn, hvp or hvp_fn
    bad = []
    for gap in GAPS:
        for one_hot in (False, True):
            A1, A2, X, B, V = saturated_instance(gap, one_hot)
            ref = mp_reference(A1, A2, X, B, V, loss)
            for what, got, r in (("loss", value_fn(A1, A2, X, B), ref[0]), ("gradient", gradient(A1, A2, X, B), ref[1]),
                                 ("hvp", hvp(A1, A2, X, B, V), ref[2])):
                err, norm = mp_error(got, r)
                ok = err <= 1e-10 if norm > TINY else float(np.linalg.norm(got)) <= TINY
                if not ok:
                    bad.append(f"{what} at gap {gap}, one-hot={one_hot}: relative error {err:.2e} (|ref| {norm:.1e})")
    return bad


@pytest.mark.parametrize("loss", LOSSES)
def test_gap_sweep_meets_1e_10_against_mpmath(loss: str) -> None:
    assert accuracy_failures(loss) == []


def test_the_unsplit_formulas_fail_the_same_sweep() -> None:
    def unsplit_gradient(A1, A2, X, B):
        F = msr.softmax_prediction(A1, A2, X)
        FC = F * (F - B)
        return A1.T @ (FC - FC.sum(axis=1, keepdims=True) * F) @ A2

    failures = accuracy_failures("normalized", gradient=unsplit_gradient)
    assert any("gradient at gap 45.0" in f for f in failures), failures


def test_dense_hessians_are_accurate_at_saturation() -> None:
    for gap in (45.0, 200.0):
        A1, A2, X, B, _ = saturated_instance(gap, one_hot=False)
        for loss in LOSSES:
            H = getattr(msr, f"{loss}_hessian")(A1, A2, X, B)
            for col in range(4):
                E = np.zeros(4)
                E[col] = 1.0
                ref = mp_reference(A1, A2, X, B, E.reshape(2, 2), loss)[2]
                err, _ = mp_error(H[:, col].reshape(2, 2), ref)
                assert err <= 1e-10, (loss, gap, col, err)


def test_the_mpmath_reference_is_the_derivative_of_the_loss() -> None:
    A1, A2, X, B, V = saturated_instance(3.0, one_hot=False)
    for loss in LOSSES:
        value, grad, hv = mp_reference(A1, A2, X, B, V, loss)
        for i in range(2):
            for k in range(2):
                def along(h, i=i, k=k):
                    Y = [[mp.mpf(float(x)) for x in row] for row in X]
                    Y[i][k] += h
                    return mp_reference(A1, A2, np.array(Y, dtype=object), B, V, loss)[0]
                assert abs(mp.diff(along, 0) - grad[i, k]) <= mp.mpf(10) ** -100 * abs(grad[i, k])
        # the HVP: directional derivative of the gradient along V
        G = lambda h: mp_reference(A1, A2, np.array(X + 0, dtype=object) + h * V, B, V, loss)[1]  # noqa: E731
        dG = mp.diff(lambda h: G(h)[0, 1], 0)
        assert abs(dG - hv[0, 1]) <= mp.mpf(10) ** -100 * abs(hv[0, 1])


# ---- the benchmark script -----------------------------------------------------------------------------------

def test_benchmark_smoke_run(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_tensor_trick.py"), "--smoke", "--json",
                           str(out)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "JAX/stream" in proc.stdout and "added/inputs" in proc.stdout
    result = json.loads(out.read_text())
    for key in ("small", "large", "scaling", "routes", "interleaved", "machine", "command"):
        assert key in result
    first, second = result["routes"]
    assert all(r["status"] == "ok" for r in first["results"].values())
    assert second["results"]["streaming"]["status"] == "ok"
    assert second["results"]["full-matrix"]["status"] == "out of memory"
    assert second["results"]["streaming"]["peak_rss_bytes"] < second["budget_bytes"] + 2**30
    diffs = result["interleaved"]["max_relative_difference_to_streaming"]
    assert max(v for r in diffs.values() for v in r.values()) <= 1e-10
