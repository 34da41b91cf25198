"""Worst-case Lipschitz ratios of the softmax prediction against n and R, in the paper's setting.

    .venv/bin/python scripts/lipschitz_sweep.py                       # writes book/data/lipschitz_sweep.json
    .venv/bin/python scripts/lipschitz_sweep.py --quick --out /tmp/s.json

For each point (n, R) and each bound of the chapter *Lipschitz bounds and the closeness of
in-context learning and weight shifting* (book/lipschitz.ipynb), under ‖A‖₂ ≤ R and ‖x‖₂ ≤ R
(also ‖y‖₂ ≤ R, ‖B‖₂ ≤ R where they occur), softmax_icl.worst_case.worst_ratio maximizes

    lipschitz-x      ‖f_A(x) − f_A(y)‖ / ((R/2)‖x − y‖)
    lipschitz-data   ‖f_A(x) − f_B(x)‖ / ((R/2)‖A − B‖₂)
    weight-shift     ‖b̃ − b‖ / ((R/2)‖x_{t+1} − x_t‖),  x_{t+1} = x_t − η∇L(x_t; b), any η > 0, b

over documents with FREE free tokens and n − FREE copies of one more (d = 2), so that the cost
does not grow with n; every such document is a valid instance, so each value is a lower bound on
the true worst case. Where the left side is a difference of two nearly equal vectors, an a-priori
bound on its round-off is subtracted first, so a ratio above 1 can only come from a wrong bound.
"""

from __future__ import annotations

import argparse
import json
import pathlib
from collections.abc import Callable

import numpy as np
from softmax_icl import softmax_regression as sr
from softmax_icl.notation import softmax
from softmax_icl.worst_case import worst_ratio
from tqdm import tqdm

NS = (2, 4, 8, 32, 128, 512)
RADII = (0.25, 0.5, 1.0, 2.0, 3.0, 4.0)
D, FREE = 2, 3
SETTINGS = {"d": D, "free_rows": FREE, "samples": 400, "restarts": 4, "maxiter": 150, "seed": 0}
QUICK = {"samples": 30, "restarts": 1, "maxiter": 10}
EPS = float(np.finfo(np.float64).eps)
OUT = pathlib.Path(__file__).resolve().parents[1] / "book" / "data" / "lipschitz_sweep.json"


def points(n_fixed: int = 8, R_fixed: float = 1.0) -> list[tuple[int, float]]:
    """Every n of NS at R = R_fixed, then every R of RADII at n = n_fixed."""
    return [(n, R_fixed) for n in NS] + [(n_fixed, R) for R in RADII]


def document(P: np.ndarray, n: int) -> np.ndarray:
    """The rows of P, the last one repeated until there are n (or the first n rows)."""
    if P.shape[0] >= n:
        return P[:n]
    return np.vstack([P[:-1], np.repeat(P[-1:], n - P.shape[0] + 1, axis=0)])


def ball(v: np.ndarray, R: float) -> np.ndarray:
    """Radial projection onto ‖v‖ ≤ R (Euclidean for a vector, spectral for a matrix)."""
    size = np.linalg.norm(v, 2) if v.ndim == 2 else np.linalg.norm(v)
    return v if size <= R else v * (R / size)


def difference(u: np.ndarray, v: np.ndarray, logits: float) -> float:
    """‖u − v‖ minus an a-priori bound on its round-off (never negative)."""
    delta = 16 * EPS * (u.size + D + logits) * (np.linalg.norm(u) + np.linalg.norm(v))
    return max(float(np.linalg.norm(u - v)) - delta, 0.0)


def lipschitz_x(n: int, R: float) -> tuple[Callable[[np.ndarray], float], int]:
    """‖f_A(x) − f_A(y)‖ / ((R/2)‖x − y‖) with ‖A‖₂, ‖x‖, ‖y‖ ≤ R."""
    k = min(n, FREE + 1)

    def ratio(p: np.ndarray) -> float:
        A = ball(document(p[: k * D].reshape(k, D), n), R)
        x, y = ball(p[k * D : k * D + D], R), ball(p[k * D + D :], R)
        gap = difference(softmax(A @ x), softmax(A @ y), 2 * R * R)
        return gap / (0.5 * R * float(np.linalg.norm(x - y)))

    return ratio, k * D + 2 * D


def lipschitz_data(n: int, R: float) -> tuple[Callable[[np.ndarray], float], int]:
    """‖f_A(x) − f_B(x)‖ / ((R/2)‖A − B‖₂) with ‖A‖₂, ‖B‖₂, ‖x‖ ≤ R."""
    k = min(n, FREE + 1)

    def ratio(p: np.ndarray) -> float:
        A = ball(document(p[: k * D].reshape(k, D), n), R)
        B = ball(document(p[k * D : 2 * k * D].reshape(k, D), n), R)
        x = ball(p[2 * k * D :], R)
        gap = difference(softmax(A @ x), softmax(B @ x), 2 * R * R)
        return gap / (0.5 * R * float(np.linalg.norm(A - B, 2)))

    return ratio, 2 * k * D + D


def weight_shift(n: int, R: float) -> tuple[Callable[[np.ndarray], float], int]:
    """‖b̃ − b‖ / ((R/2)‖x_{t+1} − x_t‖) with ‖A‖₂, ‖x_t‖ ≤ R, any b and η = e^q."""
    k = min(n, FREE + 1)

    def ratio(p: np.ndarray) -> float:
        A = ball(document(p[: k * D].reshape(k, D), n), R)
        x = ball(p[k * D : k * D + D], R)
        b = document(p[k * D + D : k * D + D + k, None], n)[:, 0]
        eta = float(np.exp(np.clip(p[-1], -30.0, 30.0)))
        x_next = x - eta * sr.normalized_gradient(A, x, b)
        logits = R * (float(np.linalg.norm(x)) + float(np.linalg.norm(x_next)))
        gap = difference(softmax(A @ x_next), softmax(A @ x), logits)
        return gap / (0.5 * R * float(np.linalg.norm(x_next - x)))

    return ratio, k * D + D + k + 1


BOUNDS = {"lipschitz-x": lipschitz_x, "lipschitz-data": lipschitz_data,
          "weight-shift": weight_shift}


def sweep(grid: list[tuple[int, float]], settings: dict) -> dict[str, list[float]]:
    """The worst ratio worst_ratio finds for every bound at every (n, R) of grid."""
    search = {k: settings[k] for k in ("samples", "restarts", "maxiter")}
    worst: dict[str, list[float]] = {name: [] for name in BOUNDS}
    jobs = [(name, n, R) for name in BOUNDS for n, R in grid]
    for name, n, R in tqdm(jobs, desc="worst-case searches", unit="point"):
        ratio, dim = BOUNDS[name](n, R)
        rng = np.random.default_rng(settings["seed"])
        found = worst_ratio(ratio, dim, rng, **search).ratio
        if found > 1 + 1e-9:
            raise AssertionError(f"{name} exceeds R/2 at n={n}, R={R}: ratio {found!r}")
        worst[name].append(found)
    return worst


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=OUT)
    parser.add_argument("--quick", action="store_true",
                        help="tiny searches (for the test): seconds, not minutes")
    args = parser.parse_args(argv)
    settings = {**SETTINGS, **(QUICK if args.quick else {})}
    grid = points()
    data = {"points": grid, "settings": settings, "worst": sweep(grid, settings)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return data


if __name__ == "__main__":
    main()
