"""Print the held-out excess risk of every estimator for sparse linear regression in context.

    .venv/bin/python scripts/sparse_risk_table.py                 # σ = 0.1, n ∈ {5, 10, 20, 40}
    .venv/bin/python scripts/sparse_risk_table.py --sigma 0.5 --n 10 20

Defaults of the chapter *Sparse linear regression in context* (book/sparse_regression.ipynb):
d = 20, s = 3, hyper-parameters tuned on 300 training tasks, risks averaged over 2000 held-out
tasks (± the half-width of a 95% normal confidence interval); each (n, σ) setting draws its
tasks from sparse_regression.setting_rng(n, σ, seed), as the chapter does.
"""

from __future__ import annotations

import argparse

import numpy as np
from softmax_icl import sparse_regression as sr


def table(ns: list[int], sigma: float, seed: int, n_test: int) -> str:
    rows = [
        sr.compare_estimators(n, sigma, sr.setting_rng(n, sigma, seed), n_test=n_test) for n in ns
    ]
    names = list(rows[0].risks)
    out = [
        f"d=20, s=3, sigma={sigma}, {n_test} held-out tasks, seed {seed}",
        "| n | " + " | ".join(names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    for c in rows:
        cells = []
        for k in names:
            r = c.risks[k]
            if np.all(np.isfinite(r)) and r.mean() < 1e6:
                m, hw = sr.mean_and_halfwidth(r)
                cells.append(f"{m:.3g} ± {hw:.2g}")
            else:
                cells.append(f"diverged ({int(np.sum(~np.isfinite(r) | (r > 1e6)))} tasks)")
        out.append(f"| {c.n} | " + " | ".join(cells) + " |")
    out.append("")
    out.append("tuned hyper-parameters:")
    for c in rows:
        out.append(
            f"  n={c.n}: "
            + "; ".join(
                f"{k} " + ", ".join(f"{p}={v:.3g}" if p != "K" else f"K={v}" for p, v in ps.items())
                for k, ps in c.params.items()
                if ps
            )
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sigma", type=float, default=0.1)
    parser.add_argument("--n", type=int, nargs="+", default=[5, 10, 20, 40])
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--n-test", type=int, default=2000)
    args = parser.parse_args()
    print(table(args.n, args.sigma, args.seed, args.n_test))


if __name__ == "__main__":
    main()
