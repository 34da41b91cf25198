"""Fuzz every public function of the library with valid and invalid arguments; count the outcomes.

usage: .venv/bin/python scripts/fuzz_public_api.py [--cases 1000] [--only PATTERN ...] [--timeout 60]

Each case draws sizes, builds valid arguments and, in most cases, replaces one argument by an invalid
one of a known class (wrong or mismatched shape, empty, NaN/inf, integer, bool, complex, object and
string dtypes, scalars for arrays, lists, zero/negative/huge sizes, wrong types, unknown choices,
corrupt or truncated files). Valid variants (float32, lists of floats, non-contiguous views) must be
accepted. Every function runs in a worker process with a per-case time limit, so an interpreter
abort or a hang is counted, not fatal. Outcome classes:

  clear error        invalid input, a ValueError/TypeError/OverflowError (or the library's own error
                     classes) raised by the library's own code
  correct answer     valid input, a result that passes the function's check (finite numbers, shapes)
  raw error          any other exception (IndexError, a numpy/JAX error, an assertion), or a library
                     exception raised from inside numpy/JAX
  silent acceptance  invalid input, returned normally
  wrong answer       valid input, a result that fails its check (non-finite, wrong shape)
  refused valid      valid input, a clear error (a documented limit)
  abort / hang       the worker died (signal) or ran past the time limit

Prints one table per module; the modules whose validation lives elsewhere are listed separately.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import select
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

OUTCOMES = ("clear error", "correct answer", "raw error", "silent acceptance", "wrong answer", "refused valid",
            "abort", "hang")
OWNED = ("notation", "softmax_regression", "checks", "lipschitz", "sparse_regression", "transformer",
         "multihead_training")
OTHERS = ("attention_vs_gd", "multiple_softmax_regression")
LIB = os.sep + "softmax_icl" + os.sep


# ---- argument kinds: a valid value and the invalid variants ------------------------------------

@dataclass
class Arg:
    """An argument: ``valid(rng, dims)`` builds a valid value; ``bad`` maps a label to a builder of an
    invalid one; ``good`` maps a label to a builder of another valid one (a variant that must pass)."""

    valid: Callable[[np.random.Generator, dict], Any]
    bad: dict[str, Callable[[np.random.Generator, dict, Any], Any]] = field(default_factory=dict)
    good: dict[str, Callable[[np.random.Generator, dict, Any], Any]] = field(default_factory=dict)
    uses: tuple = ()        # the names of the sizes this argument's shape is tied to (None: not a size)


def _shape(spec: tuple, dims: dict) -> tuple[int, ...]:
    return tuple(s(dims) if callable(s) else dims[s] if isinstance(s, str) else s for s in spec)


def _with(x: np.ndarray, value: Any) -> np.ndarray:
    y = np.array(x, dtype=float, copy=True)
    y.flat[0] = value
    return y


def arr(*spec: Any, kind: str = "normal", ints_ok: bool = False, nonfinite_ok: bool = False,
        scale: float = 1.0) -> Arg:
    """A float array of shape ``spec`` (names of sizes, ints or callables of the sizes)."""

    def valid(rng: np.random.Generator, dims: dict) -> np.ndarray:
        shape = _shape(spec, dims)
        if kind == "prob":
            return rng.dirichlet(np.ones(shape[-1]), size=shape[:-1] or None)
        x = scale * rng.standard_normal(shape)
        return np.abs(x) + 0.1 if kind == "positive" else x

    bad: dict[str, Callable] = {
        "extra axis": lambda r, D, x: np.asarray(x)[None],
        "scalar": lambda r, D, x: 0.5,
        "None": lambda r, D, x: None,
        "complex": lambda r, D, x: np.asarray(x) + 1j,
        "object": lambda r, D, x: np.asarray(x).astype(object),
        "string": lambda r, D, x: np.asarray(x).astype(str),
        "bool": lambda r, D, x: np.asarray(x) > 0,
        "ragged": lambda r, D, x: [[1.0, 2.0], [1.0]],
    }
    if len(spec) > 0:
        def wrong_length(r: np.random.Generator, D: dict, x: Any) -> np.ndarray:
            shape = list(np.shape(x))
            axes = [i for i, name in enumerate(spec) if callable(name) or name in D.get("_shared", ())]
            shape[axes[int(r.integers(len(axes)))]] += 1
            return r.standard_normal(shape)
        bad["wrong length"] = wrong_length
        bad["empty"] = lambda r, D, x: np.zeros(np.shape(x)[:-1] + (0,))
        bad["missing axis"] = lambda r, D, x: np.asarray(x).reshape(-1)[0] if np.ndim(x) == 1 else np.asarray(x)[0]
    if not nonfinite_ok:
        bad["nan"] = lambda r, D, x: _with(x, np.nan)
        bad["inf"] = lambda r, D, x: _with(x, np.inf)
    if not ints_ok:
        bad["integer dtype"] = lambda r, D, x: np.round(np.asarray(x)).astype(np.int64)
    if kind == "prob":
        bad["negative entry"] = lambda r, D, x: _with(x, -0.5)
        bad["sum != 1"] = lambda r, D, x: np.asarray(x) * 1.5
    if kind == "positive":
        bad["negative entry"] = lambda r, D, x: _with(x, -0.5)
    good = {
        "float32": lambda r, D, x: np.asarray(x, dtype=np.float32).astype(np.float64).astype(np.float32),
        "list": lambda r, D, x: np.asarray(x).tolist(),
        "non-contiguous": lambda r, D, x: np.repeat(np.asarray(x)[..., None], 2, axis=-1)[..., 0],
    }
    if kind == "prob":
        good.pop("float32")   # a float32 probability vector sums to 1 only within 1e-7
    uses = tuple(name if isinstance(name, str) else "_tied" for name in spec if not isinstance(name, int))
    return Arg(valid, bad, good, uses)


def integer(lo: int | str, hi: int | str, *, huge_ok: bool = False) -> Arg:
    def bound(b: int | str, dims: dict) -> int:
        return dims[b] if isinstance(b, str) else b

    def valid(rng: np.random.Generator, dims: dict) -> int:
        return int(rng.integers(bound(lo, dims), bound(hi, dims) + 1))

    bad: dict[str, Callable] = {
        "below range": lambda r, D, x: bound(lo, D) - 1,
        "very negative": lambda r, D, x: -10**9,
        "float": lambda r, D, x: float(x) + 0.5,
        "integral float": lambda r, D, x: float(x),
        "bool": lambda r, D, x: True,
        "string": lambda r, D, x: str(x),
        "None": lambda r, D, x: None,
        "array": lambda r, D, x: np.array([x, x]),
    }
    if not huge_ok:
        bad["huge"] = lambda r, D, x: 10**12
    return Arg(valid, bad, {"numpy int": lambda r, D, x: np.int64(x)})


def real(lo: float, hi: float, *, lo_ok: bool = True, bound: float | None = None) -> Arg:
    """A real number drawn from [lo, hi]; ``bound`` (default ``lo``) is the smallest valid value,
    included if ``lo_ok``."""
    def valid(rng: np.random.Generator, dims: dict) -> float:
        return float(rng.uniform(lo if lo_ok else lo + 1e-3 * (hi - lo), hi))

    bad: dict[str, Callable] = {
        "nan": lambda r, D, x: float("nan"),
        "inf": lambda r, D, x: float("inf"),
        "string": lambda r, D, x: "0.1",
        "bool": lambda r, D, x: True,
        "None": lambda r, D, x: None,
        "complex": lambda r, D, x: 1j,
        "list": lambda r, D, x: [x],
    }
    edge = lo if bound is None else bound
    if np.isfinite(edge):
        bad["below range"] = (lambda r, D, x: edge - 1.0) if lo_ok else (lambda r, D, x: edge)
    return Arg(valid, bad, {"numpy float": lambda r, D, x: np.float64(x)})


def choice(*options: Any) -> Arg:
    return Arg(lambda r, D: options[int(r.integers(len(options)))],
               {"unknown": lambda r, D, x: "no-such-choice", "list": lambda r, D, x: [x],
                "None": lambda r, D, x: None, "int": lambda r, D, x: 3})


def flag() -> Arg:
    return Arg(lambda r, D: bool(r.integers(2)),
               {"string": lambda r, D, x: "false", "int": lambda r, D, x: 1, "None": lambda r, D, x: None})


def generator() -> Arg:
    return Arg(lambda r, D: np.random.default_rng(int(r.integers(2**31))),
               {"int": lambda r, D, x: 3, "None": lambda r, D, x: None,
                "RandomState": lambda r, D, x: np.random.RandomState(0)})


def const(value: Any, **bad: Callable) -> Arg:
    return Arg(lambda r, D: value, dict(bad))


def fixed(build: Callable[[np.random.Generator, dict], Any], uses: tuple = (), **bad: Callable) -> Arg:
    return Arg(build, dict(bad), {}, uses)


# ---- the cases ---------------------------------------------------------------------------------

@dataclass
class Spec:
    name: str                                   # module.function
    call: Callable[..., Any]
    args: dict[str, Arg]
    dims: dict[str, tuple[int, int]] = field(default_factory=dict)
    check: Callable[[Any, dict, dict], bool] | None = None
    expected: tuple[type, ...] = ()             # exceptions that are a correct answer (assert_close)
    derived: Callable[[dict], dict] | None = None   # extra sizes computed from the drawn ones
    valid_rate: float = 0.25                    # the share of cases with valid arguments


def _numeric_leaves(x: Any) -> list[np.ndarray]:
    if isinstance(x, dict):
        return [leaf for v in x.values() for leaf in _numeric_leaves(v)]
    if isinstance(x, list | tuple):
        return [leaf for v in x for leaf in _numeric_leaves(v)]
    if hasattr(x, "__dataclass_fields__"):
        return [leaf for k in x.__dataclass_fields__ for leaf in _numeric_leaves(getattr(x, k))]
    if isinstance(x, bool | str | type(None) | pathlib.Path | np.random.Generator):
        return []
    try:
        a = np.asarray(x)
    except Exception:  # noqa: BLE001 - opaque objects carry no numbers to check
        return []
    return [a] if a.dtype.kind in "biuf" else []


def finite(result: Any, args: dict, dims: dict) -> bool:
    return all(np.all(np.isfinite(a)) for a in _numeric_leaves(result))


def run_case(spec: Spec, seed: int, index: int) -> tuple[str, str]:
    """One case: (outcome, detail)."""
    rng = np.random.default_rng([seed, index, sum(map(ord, spec.name))])
    dims = {k: int(rng.integers(lo, hi + 1)) for k, (lo, hi) in spec.dims.items()}
    if spec.derived is not None:
        dims.update(spec.derived(dims))
    args = {k: a.valid(rng, dims) for k, a in spec.args.items()}
    # a size shared by two arguments (or fixed by another argument) makes a wrong length invalid
    counts = Counter(u for a in spec.args.values() for u in set(a.uses))
    dims["_shared"] = {u for u, c in counts.items() if c > 1}
    mutable = [k for k, a in spec.args.items() if a.bad]
    valid = not mutable or rng.random() < spec.valid_rate
    label = "valid"
    if valid:
        variants = [(k, g) for k, a in spec.args.items() for g in a.good.items()]
        if variants and rng.random() < 0.5:
            k, (g, build) = variants[int(rng.integers(len(variants)))]
            args[k] = build(rng, dims, args[k])
            label = f"valid ({k}: {g})"
    else:
        k = mutable[int(rng.integers(len(mutable)))]
        tied = any(u in dims["_shared"] or u == "_tied" for u in spec.args[k].uses)
        options = [(g, f) for g, f in spec.args[k].bad.items() if g != "wrong length" or tied]
        g, build = options[int(rng.integers(len(options)))]
        args[k] = build(rng, dims, args[k])
        label = f"{k}: {g}"
    try:
        result = spec.call(**args)
    except spec.expected if spec.expected else () as exc:  # noqa: B030 - an empty tuple catches nothing
        return ("correct answer" if valid else "silent acceptance"), f"{label} -> {type(exc).__name__}"
    except BaseException as exc:  # noqa: BLE001 - every exception is classified
        if isinstance(exc, KeyboardInterrupt):
            raise
        return _classify(exc, valid), f"{label} -> {type(exc).__name__}: {str(exc)[:160]}"
    if not valid:
        return "silent acceptance", label
    ok = (spec.check or finite)(result, args, dims)
    return ("correct answer" if ok else "wrong answer"), label


def _clear_types() -> tuple[type, ...]:
    from softmax_icl import multihead_training as mt

    types: list[type] = [ValueError, TypeError, OverflowError, RuntimeError, mt.CheckpointError,
                         mt.TrainingDiverged]
    try:
        from softmax_icl import attention_vs_gd as ag
        types += [getattr(ag, n) for n in ("ConfigError", "TrainingDiverged") if hasattr(ag, n)]
    except Exception:  # noqa: BLE001
        pass
    return tuple(types)


def _classify(exc: BaseException, valid: bool) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    own = bool(frames) and LIB in frames[-1].filename and "/verify/" not in frames[-1].filename
    if isinstance(exc, SystemExit):
        return "raw error"
    if isinstance(exc, CleanExit):
        return "refused valid" if valid else "clear error"
    if isinstance(exc, _clear_types()) and not isinstance(exc, AssertionError) and own:
        return "refused valid" if valid else "clear error"
    return "raw error"



# ---- the specs: every public function ---------------------------------------------------------

class CleanExit(Exception):
    """A command line that exited with status 2 and one line of explanation."""


def _no(*labels: str) -> Callable[[Arg], Arg]:
    def drop(a: Arg) -> Arg:
        for label in labels:
            a.bad.pop(label, None)
            a.good.pop(label, None)
        return a
    return drop


def dim(name: str, lo: int = 1) -> Arg:
    """An integer argument equal to the drawn size ``name``."""
    a = integer(lo, lo)
    return Arg(lambda r, D: D[name], a.bad, a.good, (name,))


def sumsq(x: np.ndarray) -> float:
    return float(np.sum(np.asarray(x) ** 3) / 3.0)


def sumsq_grad(x: np.ndarray) -> np.ndarray:
    return np.asarray(x) ** 2


def sumsq_hvp(x: np.ndarray, v: np.ndarray) -> np.ndarray:
    return 2.0 * np.asarray(x) * np.asarray(v)


def build_specs() -> list[Spec]:
    import jax
    from softmax_icl import checks as ck
    from softmax_icl import lipschitz as lz
    from softmax_icl import multihead_training as mt
    from softmax_icl import notation as nt
    from softmax_icl import softmax_regression as sr
    from softmax_icl import sparse_regression as sreg
    from softmax_icl import transformer as tf

    specs: list[Spec] = []
    nd = {"n": (1, 6), "d": (1, 4)}

    def add(name: str, call: Callable, dims: dict | None = None, check: Callable | None = None,
            **args: Arg) -> None:
        specs.append(Spec(name, call, args, dims if dims is not None else nd, check))

    # notation
    add("notation.log_sum_exp", nt.log_sum_exp, z=arr("n"))
    add("notation.softmax", nt.softmax, z=_no("extra axis")(arr("n")))
    add("notation.softmax_last_axis", nt.softmax_last_axis, z=_no("list", "extra axis")(arr("n")))
    add("notation.vec", nt.vec, X=arr("n", "d"), order=choice("row", "column"))
    shape = fixed(lambda r, D: (D["n"], D["d"]), ("n", "d"), floats=lambda r, D, x: (float(x[0]) + 0.5, x[1]),
                  three=lambda r, D, x: (1, 1, 1), zero=lambda r, D, x: (0, x[0] * x[1]),
                  integer=lambda r, D, x: 5, none=lambda r, D, x: None, bools=lambda r, D, x: (True, x[1]))
    add("notation.unvec", nt.unvec, v=arr(lambda D: D["n"] * D["d"]), shape=shape, order=choice("row", "column"))
    add("notation.kron", nt.kron, {"n": (1, 4), "d": (1, 3), "m": (1, 3), "k": (1, 3)}, A=arr("n", "d"),
        B=arr("m", "k"))

    # softmax regression
    A, x, b, w, v = arr("n", "d"), arr("d"), arr("n"), arr("n"), arr("d")
    for f in ("log_alpha", "alpha", "alpha_gradient", "softmax_prediction", "softmax_jacobian",
              "softmax_prediction_hessian"):
        add(f"softmax_regression.{f}", getattr(sr, f), A=A, x=x)
    add("softmax_regression.softmax_prediction_second_derivative", sr.softmax_prediction_second_derivative,
        A=A, x=x, u=v, v=v)
    for f in ("normalized_residual", "normalized_loss", "normalized_gradient", "normalized_hessian_weights",
              "normalized_hessian", "rescaled_loss", "log_rescaled_loss", "rescaled_gradient",
              "rescaled_hessian_weights", "rescaled_hessian", "regularization_threshold"):
        add(f"softmax_regression.{f}", getattr(sr, f), A=A, x=x, b=b)
    for f in ("normalized_hvp", "rescaled_hvp"):
        add(f"softmax_regression.{f}", getattr(sr, f), A=A, x=x, b=b, v=v)
    for f in ("regularized_loss", "regularized_gradient", "regularized_hessian_weights", "regularized_hessian"):
        add(f"softmax_regression.{f}", getattr(sr, f), A=A, x=x, b=b, w=w)
    add("softmax_regression.regularized_hvp", sr.regularized_hvp, A=A, x=x, b=b, w=w, v=v)
    prob = arr("n", kind="prob")
    add("softmax_regression.softmax_jacobian_product", sr.softmax_jacobian_product, f=prob, v=arr("n"))
    add("softmax_regression.softmax_jacobian_weights", sr.softmax_jacobian_weights, f=prob)
    add("softmax_regression.softmax_curvature_weights", sr.softmax_curvature_weights, f=prob, c=arr("n"))
    core = arr("k", "k")
    core.valid = lambda r, D: (lambda M: M + M.T)(r.standard_normal((D["k"], D["k"])))
    core.bad["asymmetric"] = lambda r, D, x: np.arange(max(D["k"], 2) ** 2, dtype=float).reshape(
        max(D["k"], 2), max(D["k"], 2))
    pivot = _no("None")(integer(0, "n1"))
    dk = {"n": (1, 6), "k": (1, 3), "d": (1, 3)}
    specs.append(Spec("softmax_regression.DiagonalPlusLowRank", sr.DiagonalPlusLowRank,
                      {"diagonal": arr("n"), "factors": arr("n", "k"), "core": core, "pivot": pivot,
                       "offset": _no("None")(arr("n"))}, dk, derived=lambda D: {"n1": D["n"] - 1}))

    def weights(r: np.random.Generator, D: dict) -> Any:
        Aw = r.standard_normal((D["n"], 2))
        return sr.normalized_hessian_weights(Aw, r.standard_normal(2), r.dirichlet(np.ones(D["n"])))

    W = fixed(weights, ("n",))
    add("softmax_regression.DiagonalPlusLowRank.matvec", lambda W, v: W.matvec(v), dk, W=W, v=arr("n"))
    add("softmax_regression.DiagonalPlusLowRank.gram", lambda W, A: W.gram(A), dk, W=W, A=arr("n", "d"))
    add("softmax_regression.DiagonalPlusLowRank.sandwich", lambda W, A, v: W.sandwich(A, v), dk, W=W,
        A=arr("n", "d"), v=arr("d"))
    add("softmax_regression.DiagonalPlusLowRank.plus_diagonal", lambda W, extra: W.plus_diagonal(extra), dk,
        W=W, extra=arr("n"))
    add("softmax_regression.DiagonalPlusLowRank.dense", lambda W, max_size: W.dense(max_size), dk, W=W,
        max_size=integer("n", 5000, huge_ok=True))

    # checks
    loose = {"ints_ok": True}
    vec_any = _no("bool")(arr("n", nonfinite_ok=True, **loose))
    add("checks.relative_error", ck.relative_error, check=lambda res, a, D: res.worst_relative_error >= 0,
        actual=vec_any, expected=vec_any)
    specs.append(Spec("checks.assert_close", lambda actual, expected, rtol: ck.assert_close(actual, expected,
                      rtol=rtol), {"actual": vec_any, "expected": vec_any, "rtol": real(0.0, 1.0)}, nd,
                      expected=(AssertionError,)))
    fun = const(sumsq, **{"not callable": lambda r, D, x: 3})
    grad = const(sumsq_grad, **{"not callable": lambda r, D, x: "grad"})
    hvp = const(sumsq_hvp, **{"not callable": lambda r, D, x: None})
    xd = _no("bool")(arr("d", **loose))
    h = real(1e-4, 1e-3, lo_ok=False, bound=0.0)
    h.bad["negative"] = lambda r, D, x: -1e-4
    dirs = integer(1, 4)
    rt = real(1e-4, 1e-2, bound=0.0)
    x_any = _no("scalar", "missing axis", "extra axis")(arr("d", ints_ok=True))
    x_any = _no("bool")(x_any)
    add("checks.directional_derivative", ck.directional_derivative, fun=fun, x=xd, v=xd, h=h)
    add("checks.numerical_jacobian", ck.numerical_jacobian, fun=const(sumsq_grad, **{"not callable":
        lambda r, D, x: 3}), x=x_any, h=h)
    add("checks.numerical_gradient", ck.numerical_gradient, fun=fun, x=x_any, h=h)
    add("checks.numerical_hessian", ck.numerical_hessian, fun=fun, x=_no("extra axis", "missing axis")(xd),
        h=real(1e-3, 1e-2, bound=0.0, lo_ok=False))
    add("checks.check_gradient", ck.check_gradient, fun=fun, grad=grad, x=x_any, rng=generator(), rtol=rt,
        n_directions=dirs, h=h)
    add("checks.check_hessian_vector", ck.check_hessian_vector, grad=grad, hvp=hvp, x=x_any, rng=generator(),
        rtol=rt, n_directions=dirs, h=h)

    # Lipschitz bounds
    R = real(0.0, 5.0)
    add("lipschitz.exp_entry_bounds", lz.exp_entry_bounds, R=R)
    add("lipschitz.alpha_bounds", lz.alpha_bounds, n=integer(1, 100, huge_ok=True), R=R)
    add("lipschitz.softmax_jacobian_norm", lz.softmax_jacobian_norm, p=prob, max_size=integer("n", 4000,
        huge_ok=True))
    add("lipschitz.lipschitz_constant", lz.lipschitz_constant, R=R)
    add("lipschitz.log_paper_factor", lz.log_paper_factor, n=integer(1, 100, huge_ok=True), R=R)
    add("lipschitz.paper_factor", lz.paper_factor, n=integer(1, 100, huge_ok=True), R=R)
    eta = real(0.0, 1.0)
    add("lipschitz.gradient_step", lz.gradient_step, A=A, x=x, b=b, eta=eta)
    add("lipschitz.gradient_descent", lz.gradient_descent, A=A, x0=x, b=b, eta=eta, steps=integer(1, 4))
    add("lipschitz.weight_shift_target", lz.weight_shift_target, A=A, x_t=x, x_next=x, b=b)
    add("lipschitz.data_shift_target", lz.data_shift_target, A_t=A, A_next=A, x=x, b=b)
    add("lipschitz.weight_step_as_data_step", lz.weight_step_as_data_step, A=A, x_t=x, x_next=x)
    Xa, Wa = arr("n", "d"), arr("d", "d")
    for f in ("self_attention", "attention_layer", "attention_step_bound"):
        add(f"lipschitz.{f}", getattr(lz, f), X=Xa, W=Wa, W_V=Wa)
    add("lipschitz.attention_as_regression_weights", lz.attention_as_regression_weights, X=Xa, W=Wa)
    add("lipschitz.attention_step_row_bound", lz.attention_step_row_bound, X=Xa, W_V=Wa)

    # sparse regression
    tnd = {"T": (1, 4), "n": (1, 6), "d": (1, 5)}
    X3, y2, wt = arr("T", "n", "d"), arr("T", "n"), arr("T", "d")
    specs.append(Spec("sparse_regression.sample_tasks", sreg.sample_tasks,
                      {"n_tasks": integer(1, 5), "n": integer(1, 6), "d": dim("d"), "s": integer(1, "d"),
                       "sigma": real(0.0, 1.0), "rng": generator()}, tnd))
    add("sparse_regression.Tasks", sreg.Tasks, tnd, X=X3, y=y2, w_star=wt, sigma=real(0.0, 1.0))
    add("sparse_regression.excess_risk", sreg.excess_risk, tnd,
        w_hat=_no("extra axis", "missing axis")(arr("T", "d")), w_star=_no("missing axis", "extra axis")(arr("T", "d")))
    for f in ("gram", "empirical_correlation", "min_norm_least_squares"):
        add(f"sparse_regression.{f}", getattr(sreg, f), tnd, X=X3, y=y2)
    add("sparse_regression.ridge", sreg.ridge, tnd, X=X3, y=y2, lam=_no("list")(real(0.0, 1.0)))
    K = integer(0, 20)
    add("sparse_regression.gradient_descent", sreg.gradient_descent, tnd, X=X3, y=y2, eta=real(0.0, 0.1), K=K)
    add("sparse_regression.preconditioned_gradient_descent", sreg.preconditioned_gradient_descent, tnd, X=X3,
        y=y2, P_diag=arr("T", "d"), eta=real(0.0, 0.1), K=K)
    tn2 = {"T": (1, 4), "n": (2, 6), "d": (1, 5)}
    add("sparse_regression.preprocessing_weights", sreg.preprocessing_weights, tnd, X=X3, y=y2,
        normalize=choice("none", "l2"))
    add("sparse_regression.preprocess_then_optimize", sreg.preprocess_then_optimize, tn2, X=X3, y=y2,
        eta=real(0.0, 0.1), K=K, normalize=choice("none", "l2"), split=flag())
    tol = real(1e-10, 1e-6, bound=1e-15)
    sweeps = integer(20000, 30000, huge_ok=True)
    sweeps.bad["below range"] = lambda r, D, x: 0
    add("sparse_regression.lasso", sreg.lasso, tnd, X=X3, y=y2, lam=real(0.01, 1.0, bound=0.0), tol=tol,
        max_sweeps=sweeps)
    add("sparse_regression.lasso_path", sreg.lasso_path, {**tnd, "L": (1, 4)}, X=X3, y=y2,
        lams=arr("L", kind="positive", ints_ok=True), tol=tol)
    add("sparse_regression.lasso_kkt_violation", sreg.lasso_kkt_violation, tnd, X=X3, y=y2, w=wt,
        lam=real(0.0, 1.0))
    tasks = fixed(lambda r, D: sreg.sample_tasks(D["T"], D["n"], D["d"], 1, 0.1, r), ("T", "n", "d"),
                  **{"not Tasks": lambda r, D, t: (t.X, t.y), "None": lambda r, D, t: None})
    grid, fr = arr("L", kind="positive", ints_ok=True), arr("L", kind="positive", scale=0.3, ints_ok=True)
    kmax = integer(1, 5)
    tl = {"T": (1, 4), "n": (2, 6), "d": (1, 4), "L": (1, 4)}
    add("sparse_regression.tune_ridge", sreg.tune_ridge, tl, train=tasks, lams=grid)
    add("sparse_regression.tune_gd", sreg.tune_gd, tl, train=tasks, fractions=fr, K_max=kmax)
    add("sparse_regression.tune_pto", sreg.tune_pto, tl, train=tasks, fractions=fr, K_max=kmax,
        normalize=choice("none", "l2"), split=flag())
    add("sparse_regression.tune_lasso", sreg.tune_lasso, tl, train=tasks, lams=grid, tol=tol)
    add("sparse_regression.bayes_posterior_mean", sreg.bayes_posterior_mean, tnd, X=X3, y=y2, s=integer(1, "d"),
        sigma=real(0.05, 1.0, lo_ok=False, bound=0.0))
    add("sparse_regression.mean_and_halfwidth", sreg.mean_and_halfwidth, {"T": (2, 8)}, risks=arr("T"),
        z=real(0.0, 3.0))
    add("sparse_regression.setting_rng", sreg.setting_rng, {}, n=integer(1, 100, huge_ok=True),
        sigma=real(0.0, 1.0), seed=integer(0, 10**6, huge_ok=True))
    variants = fixed(lambda r, D: ["raw"], string=lambda r, D, x: "raw", unknown=lambda r, D, x: ["nope"],
                     integer=lambda r, D, x: [3])
    specs.append(Spec("sparse_regression.compare_estimators",
                      lambda **k: sreg.compare_estimators(**k), {
                          "n": integer(1, 4), "sigma": real(0.0, 0.5), "rng": generator(), "d": dim("d"),
                          "s": integer(1, "d"), "n_train": integer(1, 3), "n_test": integer(1, 3),
                          "K_max": integer(1, 2), "pto_variants": variants, "lasso_tol": real(1e-8, 1e-6, bound=1e-15)},
                      {"d": (1, 3)}))

    # transformer
    key = fixed(lambda r, D: jax.random.PRNGKey(int(r.integers(100))), integer=lambda r, D, k: 3,
                floats=lambda r, D, k: np.zeros(2), none=lambda r, D, k: None)
    small = {"din": (1, 3), "N": (2, 4), "B": (1, 3), "w8": (8, 8)}

    def model(r: np.random.Generator, D: dict) -> dict:
        return tf.init_params(jax.random.PRNGKey(0), D["din"], 8, 1, 2, mlp_width=8)

    def broken(kind: str) -> Callable:
        def make(r: np.random.Generator, D: dict, p: dict) -> Any:
            p = jax.tree_util.tree_map(lambda a: a, p)
            if kind == "not a dict":
                return [p]
            if kind == "no readout":
                return {k: v for k, v in p.items() if k != "readout"}
            if kind == "wrong readout":
                p["readout"]["w"] = np.zeros(3)
            elif kind == "integer leaf":
                p["layers"][0]["attn"]["W_Q"] = np.zeros(p["layers"][0]["attn"]["W_Q"].shape, dtype=int)
            elif kind == "layers not a list":
                p["layers"] = 5
            elif kind == "missing attn":
                p["layers"][0] = {}
            return p
        return make

    params = fixed(model, ("din",), **{k: broken(k) for k in (
        "not a dict", "no readout", "wrong readout", "integer leaf",
                                                   "layers not a list", "missing attn")})
    E = _no("extra axis")(arr("N", "din"))
    mask = fixed(lambda r, D: None, wrong=lambda r, D, m: [np.ones(5)], string=lambda r, D, m: "all",
                 nan=lambda r, D, m: [np.array([np.nan, 1.0])], layers=lambda r, D, m: [np.ones(2)] * 3)
    attention = choice("linear", "softmax")
    for f in ("forward", "predict"):
        add(f"transformer.{f}", (lambda g: lambda params, E, attention, head_mask: g(
            params, E, attention=attention, head_mask=head_mask))(getattr(tf, f)), small, params=params, E=E,
            attention=attention, head_mask=mask)
    add("transformer.check_params", tf.check_params, small, params=params)
    add("transformer.make_prompt", tf.make_prompt, tnd, X=X3, y=y2, x_query=wt)
    layer = fixed(lambda r, D: model(r, D)["layers"][0], ("w8",), **{"not a dict": lambda r, D, p: 3,
                                                           "missing W_Q": lambda r, D, p: {"attn": {}}})
    Z = arr("N", "w8")
    vec8 = arr("w8")
    add("transformer.layer_norm", tf.layer_norm, small, Z=_no("missing axis", "extra axis")(arr("N", "w8")),
        scale=vec8,
        bias=vec8)
    part = {k: fixed(lambda r, D, k=k: model(r, D)["layers"][0][k], ("w8",), **{
        "not a dict": lambda r, D, p: 3, "empty": lambda r, D, p: {}}) for k in ("attn", "mlp")}
    add("transformer.attention_layer", tf.attention_layer, small, p=part["attn"], Z=Z, attention=attention)
    add("transformer.mlp", tf.mlp, small, p=part["mlp"], Z=Z)
    add("transformer.block", lambda p, Z, attention: tf.block(p, Z, attention), small, p=layer, Z=Z,
        attention=attention)
    specs.append(Spec("transformer.init_params", lambda **k: tf.init_params(**k), {
        "key": key, "d_in": integer(1, 3), "width": integer(1, 8), "n_layers": integer(0, 2),
        "n_heads": integer(1, 2), "mlp_width": _no("None")(integer(1, 8, huge_ok=True)), "use_mlp": flag(),
        "use_layer_norm": flag(),
        "std": real(0.0, 0.1)}, {}))
    add("transformer.linear_head_params", tf.linear_head_params, {"h": (1, 3), "D": (1, 4)},
        W_PV=_no("bool")(arr("h", "D", "D", ints_ok=True)), W_KQ=_no("bool")(arr("h", "D", "D", ints_ok=True)))
    add("transformer.construction_embedding", tf.construction_embedding, {}, d=integer(1, 5))
    heads = fixed(lambda r, D: list(range(D["d"]))[: max(1, D["d"] - 1)], ("d",), outside=lambda r, D, x: [D["d"]],
                  negative=lambda r, D, x: [-1], repeated=lambda r, D, x: [0, 0], string=lambda r, D, x: "0",
                  empty=lambda r, D, x: [])
    add("transformer.preprocess_layer", tf.preprocess_layer, {"d": (1, 5)}, d=dim("d"), heads=heads)
    unb = real(-1.0, 1.0)
    unb.bad.pop("below range")
    add("transformer.gd_layer", tf.gd_layer, {}, d=integer(1, 5), eta=unb)
    add("transformer.construct_pto_transformer", tf.construct_pto_transformer, {}, d=integer(1, 4), eta=unb,
        K=integer(0, 3))
    hd = {"h": (1, 2), "d": (1, 3), "T": (1, 4), "n": (1, 5)}
    U, V = arr("h", "d", lambda D: D["d"] + 1, ints_ok=True), arr("h", lambda D: D["d"] + 1, "d", ints_ok=True)
    U, V = _no("bool")(U), _no("bool")(V)
    Xf, yf, xq = (_no("bool")(a) for a in (arr("T", "n", "d", ints_ok=True), arr("T", "n", ints_ok=True),
                                            arr("T", "d", ints_ok=True)))
    add("transformer.preprocess_head_outputs", tf.preprocess_head_outputs, hd, U=U, V=V, X=Xf, y=yf, x_query=xq)
    add("transformer.fit_preprocess_heads", tf.fit_preprocess_heads, hd, h=dim("h"), X=Xf, y=yf, x_query=xq,
        rng=generator(), n_iter=integer(1, 3), restarts=integer(1, 2), ridge=real(1e-9, 1e-6))
    add("transformer.fitted_heads_layer", tf.fitted_heads_layer, hd, U=U, V=V)

    _multihead_specs(specs, mt, sreg, jax)
    _other_specs(specs, jax)
    heavy = ("multihead_training.train", "multihead_training.main", "multihead_training.head_importance",
             "multihead_training.evaluate", "multihead_training.risk_by_steps", "multihead_training.query_states",
             "multihead_training.predict", "multihead_training.save_checkpoint", "multihead_training.load_checkpoint",
             "sparse_regression.compare_estimators", "sparse_regression.tune_", "sparse_regression.lasso_path",
             "transformer.fit_preprocess_heads", "transformer.forward", "transformer.predict")
    for spec in specs:
        if spec.name.startswith(heavy):
            spec.valid_rate = 0.08      # a valid call trains, tunes or compiles: fewer of them, still dozens
    return specs


def _multihead_specs(specs: list[Spec], mt: Any, sreg: Any, jax: Any) -> None:
    import io
    from contextlib import redirect_stderr, redirect_stdout

    tiny = dict(d=2, s=1, n_values=[2, 4], n_layers=1, n_heads=1, width=4, mlp_width=4, steps=1, chunk=1,
                batch=2, eval_n=3, eval_tasks=4)
    config = mt.Config(name="tiny", **tiny)
    model = mt.init_model(config, jax.random.PRNGKey(0))
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="fuzz-"))

    def fresh() -> pathlib.Path:
        return pathlib.Path(tempfile.mkdtemp(dir=tmp))

    def integer_field(lo: int, hi: int, **kw: Any) -> Arg:
        return integer(lo, hi, **kw)

    fields: dict[str, Arg] = {
        "name": _no("unknown")(choice("run", "run-1", "a.b_c")),
        "d": dim("d"), "s": integer(1, "d"), "sigma": real(0.0, 1.0),
        "n_values": fixed(lambda r, D: [D["nv"], 2 * D["nv"]], string=lambda r, D, x: "24",
                          floats=lambda r, D, x: [2.7, 4], empty=lambda r, D, x: [],
                          dividing=lambda r, D, x: [3, 4], bools=lambda r, D, x: [True, 2],
                          none=lambda r, D, x: None, zero=lambda r, D, x: [0, 2]),
        "n_layers": integer(1, 2), "n_heads": dim("h"),
        "width": fixed(lambda r, D: D["h"] * D["wm"], **integer(1, 1).bad),
        "mlp_width": integer(1, 8), "attention": choice("softmax", "linear"), "use_mlp": flag(),
        "use_layer_norm": flag(),
        "steps": fixed(lambda r, D: D["c"] * D["sc"], **integer(1, 1).bad), "chunk": dim("c"),
        "batch": integer(1, 4), "lr": real(1e-4, 1e-2, lo_ok=False, bound=0.0), "warmup": integer(0, 5, huge_ok=True),
        "clip": real(0.1, 1.0, lo_ok=False, bound=0.0), "seed": integer(0, 100), "eval_n": integer(1, 5),
        "eval_tasks": integer(1, 5), "eval_seed": integer(0, 100),
    }
    fields["name"].bad.update({"traversal": lambda r, D, x: "../escaped", "empty": lambda r, D, x: "",
                               "hidden": lambda r, D, x: ".x", "slash": lambda r, D, x: "a/b"})
    cdims = {"d": (1, 3), "nv": (1, 3), "h": (1, 2), "wm": (1, 4), "c": (1, 3), "sc": (1, 3)}
    specs.append(Spec("multihead_training.Config", lambda **k: mt.Config(**k), fields, cdims))

    def write(obj: Any, raw: bytes | None = None) -> pathlib.Path:
        path = fresh() / "sweep.json"
        path.write_bytes(raw if raw is not None else json.dumps(obj).encode())
        return path

    good_file = {"defaults": tiny, "runs": [{"name": "a"}, {"name": "b", "seed": 1}]}
    files = fixed(lambda r, D: write(good_file), **{
        "missing": lambda r, D, p: p.parent / "nope.json",
        "not JSON": lambda r, D, p: write(None, b"{not json"),
        "binary": lambda r, D, p: write(None, bytes(range(256))),
        "a list": lambda r, D, p: write([1, 2]),
        "no runs": lambda r, D, p: write({"defaults": tiny}),
        "runs empty": lambda r, D, p: write({"runs": []}),
        "run not an object": lambda r, D, p: write({"runs": [3]}),
        "no name": lambda r, D, p: write({"defaults": tiny, "runs": [{}]}),
        "bad field": lambda r, D, p: write({"defaults": tiny, "runs": [{"name": "a", "use_mlp": "false"}]}),
        "unknown key": lambda r, D, p: write({"defaults": tiny, "runs": [{"name": "a", "heads": 3}]}),
        "duplicate": lambda r, D, p: write({"defaults": tiny, "runs": [{"name": "a"}, {"name": "a"}]}),
        "directory": lambda r, D, p: p.parent,
        "NaN": lambda r, D, p: write(None, b'{"defaults": {"sigma": NaN}, "runs": [{"name": "a"}]}'),
        "defaults a list": lambda r, D, p: write({"defaults": [1], "runs": [{"name": "a"}]}),
        "deep": lambda r, D, p: write(None, b"[" * 100000 + b"]" * 100000),
        "traversal": lambda r, D, p: write({"defaults": tiny, "runs": [{"name": "../x"}]}),
    })
    specs.append(Spec("multihead_training.load_configs", mt.load_configs, {"path": files}, {}))
    key = fixed(lambda r, D: jax.random.PRNGKey(int(r.integers(100))), integer=lambda r, D, k: 3,
                floats=lambda r, D, k: np.zeros(2), none=lambda r, D, k: None)
    nvals = fields["n_values"]
    specs.append(Spec("multihead_training.sample_prompts", mt.sample_prompts, {
        "key": key, "batch": integer(1, 4), "n_values": nvals, "d": dim("d"), "s": integer(1, "d"),
        "sigma": real(0.0, 1.0)}, {"d": (1, 3), "nv": (1, 3)}))
    cfg = fixed(lambda r, D: config, dict=lambda r, D, c: c.to_dict(), none=lambda r, D, c: None)
    specs.append(Spec("multihead_training.init_model", mt.init_model, {"config": cfg, "key": key}, {}))
    diverging = mt.Config(name="diverging", **{**tiny, "steps": 4, "lr": 1e30, "clip": 1e30})
    tcfg = fixed(lambda r, D: config, dict=lambda r, D, c: c.to_dict(), none=lambda r, D, c: None,
                 diverging=lambda r, D, c: diverging)

    def trained_ok(result: Any, args: dict, dims: dict) -> bool:
        return finite(result["params"], args, dims) and np.isfinite(result["final_loss"])

    specs.append(Spec("multihead_training.train", mt.train, {"config": tcfg}, {}, check=trained_ok))

    def params_bad(kind: str) -> Callable:
        def make(r: np.random.Generator, D: dict, p: Any) -> Any:
            p = jax.tree_util.tree_map(np.array, p)
            if kind == "nan":
                p["readout"]["w"][0] = np.nan
            elif kind == "wrong shape":
                p["readout"]["w"] = np.zeros(3, np.float32)
            elif kind == "string leaf":
                p["readout"]["b"] = "zero"
            elif kind == "missing leaf":
                del p["readout"]["b"]
            return p
        return make

    prm = fixed(lambda r, D: model, **{k: params_bad(k) for k in ("nan", "wrong shape", "string leaf",
                                                               "missing leaf")})
    meta = fixed(lambda r, D: {"note": "x", "value": 1.5}, **{
        "config key": lambda r, D, m: {"config": {"name": "other"}},
        "digest key": lambda r, D, m: {"digest": "0"},
        "nan": lambda r, D, m: {"value": float("nan")},
        "object": lambda r, D, m: {"value": object()},
        "not a dict": lambda r, D, m: [1],
        "int key": lambda r, D, m: {1: 2},
    })

    def out_dir(r: np.random.Generator, D: dict) -> pathlib.Path:
        return fresh()

    def file_instead(r: np.random.Generator, D: dict, p: pathlib.Path) -> pathlib.Path:
        f = p / "file"
        f.write_text("x")
        return f

    directory = fixed(out_dir, **{"a file": file_instead})

    def saved_and_written(result: Any, args: dict, dims: dict) -> bool:
        npz, js = result
        leftovers = [q for q in npz.parent.iterdir() if q.name.endswith(".tmp")]
        return npz.is_file() and js.is_file() and not leftovers

    def orphan_free(call: Callable) -> Callable:
        def run(**k: Any) -> Any:
            try:
                return call(**k)
            except Exception:
                d = pathlib.Path(k["directory"])
                if d.is_dir() and any(d.iterdir()):
                    raise AssertionError(f"files left behind in {d}: {sorted(q.name for q in d.iterdir())}") from None
                raise
        return run

    specs.append(Spec("multihead_training.save_checkpoint", orphan_free(mt.save_checkpoint),
                      {"directory": directory, "config": cfg, "params": prm, "metadata": meta}, {},
                      check=saved_and_written))

    def checkpoint(r: np.random.Generator, D: dict) -> pathlib.Path:
        d = fresh()
        mt.save_checkpoint(d, config, model, {"eval": {"excess_risk": 0.5}})
        return d

    def tamper(kind: str) -> Callable:
        def make(r: np.random.Generator, D: dict, d: pathlib.Path) -> pathlib.Path:
            js, npz = d / "tiny.json", d / "tiny.npz"
            meta = json.loads(js.read_text())
            if kind == "attention switched":
                meta["config"]["attention"] = "linear"
            elif kind == "risk changed":
                meta["eval"]["excess_risk"] = 0.1
            elif kind == "width 1048576":
                meta["config"]["width"] = 1048576
            elif kind == "digest removed":
                del meta["digest"]
                meta["config"]["attention"] = "linear"
            elif kind == "json garbage":
                js.write_bytes(b"\x00\xff garbage")
                return d
            elif kind == "npz truncated":
                npz.write_bytes(npz.read_bytes()[:100])
                return d
            elif kind == "npz missing":
                npz.unlink()
                return d
            elif kind == "nan parameters (rehashed)" or kind == "int32 parameters (rehashed)":
                import hashlib
                with np.load(npz) as f:
                    flat = {k: f[k] for k in f.files}
                key0 = sorted(flat)[0]
                if kind.startswith("nan"):
                    flat[key0] = flat[key0].copy()
                    flat[key0].flat[0] = np.nan
                else:
                    flat[key0] = flat[key0].astype(np.int32)
                buf = io.BytesIO()
                np.savez_compressed(buf, **flat)
                npz.write_bytes(buf.getvalue())
                meta["sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()
                meta["digest"] = mt._digest(buf.getvalue(), meta)
            js.write_text(json.dumps(meta))
            return d
        return make

    kinds = ("attention switched", "risk changed", "width 1048576", "digest removed", "json garbage",
             "npz truncated", "npz missing", "nan parameters (rehashed)", "int32 parameters (rehashed)")
    ckpt = fixed(checkpoint, **{k: tamper(k) for k in kinds})
    name = choice("tiny")
    name.bad = {"traversal": lambda r, D, x: "../tiny", "None": lambda r, D, x: None, "other": lambda r, D, x: "zz"}
    specs.append(Spec("multihead_training.load_checkpoint",
                      lambda directory, name: mt.load_checkpoint(directory, name),
                      {"directory": ckpt, "name": name}, {}))
    specs.append(Spec("multihead_training.eval_tasks", mt.eval_tasks, {
        "n_tasks": integer(1, 4), "n": integer(1, 4), "d": dim("d"), "s": integer(1, "d"), "sigma": real(0.0, 1.0),
        "rng": generator()}, {"d": (1, 3)}))
    tasks = fixed(lambda r, D: sreg.sample_tasks(D["T"], 3, 2, 1, 0.1, r), ("T",),
                  **{"not Tasks": lambda r, D, t: (t.X, t.y), "wrong d": lambda r, D, t: sreg.sample_tasks(
                      D["T"], 3, 3, 1, 0.1, r)})
    xq = arr("T", 2)
    cfg_model = {"config": cfg, "params": fixed(lambda r, D: model, **{k: params_bad(k) for k in (
        "nan", "wrong shape", "string leaf")})}
    cfg_model["params"].bad.pop("nan")     # a model with NaN weights is a valid input (its prediction is NaN)
    td = {"T": (2, 4)}
    hmask = fixed(lambda r, D: None, wrong=lambda r, D, m: [np.ones(3)], string=lambda r, D, m: "x")

    def finite_or_nan_model(result: Any, args: dict, dims: dict) -> bool:
        return finite(result, args, dims)

    specs.append(Spec("multihead_training.predict", mt.predict, {**cfg_model, "tasks": tasks, "x_query": xq,
                                                                  "head_mask": hmask}, td))
    specs.append(Spec("multihead_training.excess_risk_per_task", mt.excess_risk_per_task, {
        "prediction": arr("T"), "tasks": tasks, "x_query": xq}, td))
    specs.append(Spec("multihead_training.evaluate", mt.evaluate, {**cfg_model, "n": _no("None")(integer(1, 4)),
                      "n_tasks": _no("None")(integer(1, 4)), "seed": _no("None")(integer(0, 100, huge_ok=True)),
                      "head_mask": hmask}, {}))
    specs.append(Spec("multihead_training.query_states", mt.query_states, {**cfg_model, "tasks": tasks,
                      "x_query": xq, "head_mask": hmask}, td))
    keep = fixed(lambda r, D: {0: [0]}, outside=lambda r, D, k: {5: [0]}, negative=lambda r, D, k: {-1: [0]},
                 head=lambda r, D, k: {0: [7]}, string=lambda r, D, k: "all", heads_int=lambda r, D, k: {0: 0})
    drop = fixed(lambda r, D: (0, 0), outside=lambda r, D, k: (0, 9), short=lambda r, D, k: (0,),
                 string=lambda r, D, k: "0,0", negative=lambda r, D, k: (-1, 0))
    specs.append(Spec("multihead_training.head_masks", mt.head_masks, {"config": cfg, "keep": keep,
                                                                        "drop": drop}, {}))
    specs.append(Spec("multihead_training.head_importance", mt.head_importance, {**cfg_model, "tasks": tasks,
                                                                                  "x_query": xq}, td))
    specs.append(Spec("multihead_training.pruning_mask", mt.pruning_mask, {"importance": arr("L", "h")},
                      {"L": (1, 3), "h": (1, 3)}))
    specs.append(Spec("multihead_training.fit_probe", mt.fit_probe, {
        "features": arr("T", "p"), "target": arr("T"), "lam": real(1e-3, 1.0, bound=0.0)},
        {"T": (2, 6), "p": (1, 3)}))
    specs.append(Spec("multihead_training.probe_risks", mt.probe_risks, {
        "states_train": arr("T", "L", "w"), "target_train": arr("T"), "states_test": arr("S", "L", "w"),
        "target_test": arr("S"), "lam": real(1e-3, 1.0, bound=0.0)},
        {"T": (2, 5), "S": (1, 4), "L": (1, 3), "w": (1, 3)}))
    tr = fixed(lambda r, D: sreg.sample_tasks(3, 4, 2, 1, 0.1, r), **{"not Tasks": lambda r, D, t: 3,
               "wrong d": lambda r, D, t: sreg.sample_tasks(3, 4, 3, 1, 0.1, r)})
    specs.append(Spec("multihead_training.steps_limit", mt.steps_limit, {
        "X": arr("T", "n", "d"), "y": arr("T", "n"), "method": choice("gd", "pto")},
        {"T": (1, 4), "n": (1, 6), "d": (1, 5)}))
    specs.append(Spec("multihead_training.risk_by_steps", mt.risk_by_steps, {
        "train": tr, "test": fixed(lambda r, D: sreg.sample_tasks(3, 4, 2, 1, 0.1, r)), "K_max": integer(1, 3),
        "method": choice("GD", "PtO"), "normalize": choice("none", "l2")}, {}))

    def cli(argv: list[str]) -> Any:
        err, out = io.StringIO(), io.StringIO()
        try:
            with redirect_stderr(err), redirect_stdout(out):
                mt.main(argv)
        except SystemExit as exc:
            text = err.getvalue().replace("\r", "\n").strip().splitlines()
            prog = "python -m softmax_icl.multihead_training"
            errors = [t for t in text if t.startswith(f"{prog}: error:")]
            if exc.code == 2 and len(errors) == 1 and text[-1] == errors[0] and "Traceback" not in err.getvalue():
                raise CleanExit(errors[0]) from None
            raise
        return out.getvalue()

    def argv_ok(r: np.random.Generator, D: dict) -> list[str]:
        f = write({"defaults": tiny, "runs": [{"name": "a"}, {"name": "b"}]})
        return ["--config", str(f), "--out", str(f.parent / "out"), "--only", "a"]

    def replace(flag_: str, value: Callable) -> Callable:
        def make(r: np.random.Generator, D: dict, argv: list[str]) -> list[str]:
            argv = list(argv)
            argv[argv.index(flag_) + 1] = value(pathlib.Path(argv[argv.index("--config") + 1]))
            return argv
        return make

    def out_is_file(p: pathlib.Path) -> str:
        (p.parent / "f").write_text("x")
        return str(p.parent / "f")

    argv = fixed(argv_ok, **{
        "--only typo": replace("--only", lambda p: "c"),
        "--out a file": replace("--out", out_is_file),
        "--config missing": replace("--config", lambda p: str(p.parent / "nope.json")),
        "runs empty": replace("--config", lambda p: str(write({"runs": []}))),
        "bad field": replace("--config", lambda p: str(write({"defaults": tiny, "runs": [{"name": "a",
                                                                                             "seed": -1}]}))),
        "not JSON": replace("--config", lambda p: str(write(None, b"{"))),
        "traversal": replace("--config", lambda p: str(write({"defaults": tiny, "runs": [{"name": "../a"}]}))),
        "diverging": replace("--config", lambda p: str(write({"defaults": {**tiny, "steps": 4, "lr": 1e30,
                                                                             "clip": 1e30}, "runs": [{"name": "a"}]}))),
        "no arguments": lambda r, D, a: [],
        "--only empty": lambda r, D, a: a[:-1],
    })

    def cli_ok(result: Any, args: dict, dims: dict) -> bool:
        a = args["argv"]
        out = pathlib.Path(a[a.index("--out") + 1])
        return (out / "a.json").is_file() and "nan" not in (out / "a.json").read_text().lower()

    def confined(call: Callable) -> Callable:
        def run(argv: list[str]) -> Any:
            root = pathlib.Path(argv[argv.index("--out") + 1]) if "--out" in argv else None
            before = set(root.parent.rglob("*")) if root else set()
            try:
                return call(argv)
            finally:
                if root is not None:
                    escaped = [q for q in set(root.parent.rglob("*")) - before if root not in q.parents and q != root]
                    if escaped:
                        raise AssertionError(f"written outside the run directory: {escaped[:3]}")
        return run

    specs.append(Spec("multihead_training.main", confined(cli), {"argv": argv}, {}, check=cli_ok))


def _other_specs(specs: list[Spec], jax: Any) -> None:
    """The public numeric functions of the two modules validated elsewhere (coverage only)."""
    from softmax_icl import attention_vs_gd as ag
    from softmax_icl import multiple_softmax_regression as msr

    key = fixed(lambda r, D: jax.random.PRNGKey(int(r.integers(100))), integer=lambda r, D, k: 3,
                none=lambda r, D, k: None)
    doc = {"n": (1, 5), "d": (1, 3)}
    A1 = arr(lambda D: D["n"] + 1, "d")
    b1 = arr("n")
    eta = _no("below range")(real(0.0, 1.0))
    specs.append(Spec("attention_vs_gd.sample_tasks", ag.sample_tasks, {
        "key": key, "count": integer(1, 4), "n": integer(1, 5), "d": integer(1, 3)}, {}))
    for f in ("gd_direction",):
        specs.append(Spec(f"attention_vs_gd.{f}", getattr(ag, f), {"A": A1, "b": b1}, doc))
    for f in ("gd_weights", "gd_prediction", "gd_sensitivity", "linearized_gd_prediction"):
        specs.append(Spec(f"attention_vs_gd.{f}", getattr(ag, f), {"eta": eta, "A": A1, "b": b1}, doc))
    specs.append(Spec("attention_vs_gd.tokens", ag.tokens, {"A": A1, "b": b1, "centered": flag()}, doc))
    specs.append(Spec("attention_vs_gd.init_params", ag.init_params, {
        "key": key, "d": integer(1, 4), "init_scale": real(0.0, 1.0)}, {}))
    specs.append(Spec("attention_vs_gd.handset_params", ag.handset_params, {
        "temperature": _no("below range")(real(0.0, 2.0)), "label_weight": _no("below range")(real(0.0, 2.0)),
        "d": integer(1, 4)}, {}))
    specs.append(Spec("attention_vs_gd.first_order_product", ag.first_order_product, {
        "eta_linearized": _no("below range")(real(0.0, 1.0)), "n": integer(1, 10, huge_ok=True),
        "mask_self": flag()}, {}))
    prm = fixed(lambda r, D: ag.init_params(jax.random.PRNGKey(0), D["d"], 0.1),
                **{"not a dict": lambda r, D, p: 3, "wrong d": lambda r, D, p: ag.init_params(
                    jax.random.PRNGKey(0), D["d"] + 1, 0.1)})
    specs.append(Spec("attention_vs_gd.attention_prediction", ag.attention_prediction, {
        "params": prm, "A": A1, "b": b1}, doc))
    specs.append(Spec("attention_vs_gd.layer_weights", ag.layer_weights, {"params": _no("wrong d")(prm)}, doc))
    specs.append(Spec("attention_vs_gd.document", ag.document, {"A_ctx": arr("n", "d"), "a_q": arr("d"),
                                                                  "b": arr("n")}, doc))

    mdims = {"n": (1, 3), "d": (1, 3)}
    M = arr("n", "d")
    Xm = arr("d", "d")
    Bm = arr("n", "n")
    for f in ("logits", "softmax_prediction"):
        specs.append(Spec(f"multiple_softmax_regression.{f}", getattr(msr, f), {"A1": M, "A2": M, "X": Xm}, mdims))
    for f in ("normalized_loss", "normalized_gradient", "normalized_hessian", "rescaled_loss", "rescaled_gradient",
              "rescaled_hessian", "kronecker_loss", "kronecker_gradient", "kronecker_hessian"):
        specs.append(Spec(f"multiple_softmax_regression.{f}", getattr(msr, f), {"A1": M, "A2": M, "X": Xm, "B": Bm},
                          mdims))
    for f in ("normalized_hvp", "rescaled_hvp", "kronecker_hvp"):
        specs.append(Spec(f"multiple_softmax_regression.{f}", getattr(msr, f), {
            "A1": M, "A2": M, "X": Xm, "B": Bm, "V": Xm}, mdims))
    specs.append(Spec("multiple_softmax_regression.kronecker_singular_values", msr.kronecker_singular_values,
                      {"A1": arr("n", "d"), "A2": arr("m", "k")}, {**mdims, "m": (1, 3), "k": (1, 3)}))
    for f in ("weight_lipschitz_constant", "kronecker_data"):
        specs.append(Spec(f"multiple_softmax_regression.{f}", getattr(msr, f), {"A1": M, "A2": M}, mdims))
    specs.append(Spec("multiple_softmax_regression.first_factor_shift_constant", msr.first_factor_shift_constant,
                      {"A2": M, "X": Xm}, mdims))
    specs.append(Spec("multiple_softmax_regression.second_factor_shift_constant",
                      msr.second_factor_shift_constant, {"A1": M, "X": Xm}, mdims))
    specs.append(Spec("multiple_softmax_regression.equivalent_target",
                      lambda A1, A2, X, B, X_new: msr.equivalent_target(A1, A2, X, B, X_new=X_new),
                      {"A1": M, "A2": M, "X": Xm, "B": Bm, "X_new": _no("None")(arr("d", "d"))}, mdims))
    specs.append(Spec("multiple_softmax_regression.gradient_descent", msr.gradient_descent, {
        "A1": M, "A2": M, "B": Bm, "X0": Xm, "step": real(0.0, 0.5), "iterations": integer(1, 3)}, mdims))
    specs.append(Spec("multiple_softmax_regression.newton_cg", msr.newton_cg, {
        "A1": M, "A2": M, "B": Bm, "X0": Xm, "iterations": integer(1, 3)}, mdims))


# ---- the worker and the driver ------------------------------------------------------------------

def worker(plan: list[tuple[str, int]], seed: int, cases: int) -> None:
    table = {spec.name: spec for spec in build_specs()}
    for name, start in plan:
        spec = table[name]
        for i in range(start, cases):
            print(json.dumps({"start": [name, i]}), flush=True)
            outcome, detail = run_case(spec, seed, i)
            print(json.dumps({"done": [name, i, outcome, detail]}), flush=True)


def drive(names: list[str], seed: int, cases: int, timeout: float) -> tuple[dict[str, Counter], dict]:
    """Run every case in worker processes; an abort or a hang is counted and the worker restarted
    at the next case."""
    counts: dict[str, Counter] = {n: Counter() for n in names}
    examples: dict[tuple[str, str], str] = {}
    plan = [(n, 0) for n in names]
    env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
           "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    while plan:
        errors = tempfile.TemporaryFile(mode="w+")
        proc = subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(plan), "--seed", str(seed),
                                 "--cases", str(cases)], stdout=subprocess.PIPE, stderr=errors,
                                env=env, text=True, bufsize=1)
        assert proc.stdout is not None
        current: tuple[str, int] | None = None
        last: tuple[str, int] | None = None
        deadline = time.monotonic() + max(timeout, 120.0)      # the first case imports the library
        while True:
            ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            line = proc.stdout.readline() if ready else None
            if not line:
                if line is None:
                    proc.kill()
                outcome = "hang" if line is None else "abort"
                proc.wait()
                if current is not None:
                    counts[current[0]][outcome] += 1
                    errors.seek(0)
                    tail = (errors.read().strip().splitlines() or [""])[-1][:160]
                    examples.setdefault((current[0], outcome), f"case {current[1]} (status {proc.returncode}) {tail}")
                    last = current
                break
            msg = json.loads(line)
            if "start" in msg:
                current = (msg["start"][0], int(msg["start"][1]))
                deadline = time.monotonic() + timeout
            else:
                name, i, outcome, detail = msg["done"]
                counts[name][outcome] += 1
                if outcome not in ("clear error", "correct answer"):
                    examples.setdefault((name, outcome), detail)
                last, current = (name, int(i)), None
        if last is None:
            break                                              # the worker died before its first case
        order = [n for n, _ in plan]
        k = order.index(last[0])
        plan = ([(last[0], last[1] + 1)] if last[1] + 1 < cases else []) + [(n, 0) for n in order[k + 1:]]
    return counts, examples


def table(title: str, counts: dict[str, Counter]) -> str:
    short = {"clear error": "clear", "correct answer": "correct", "raw error": "raw", "silent acceptance": "silent",
             "wrong answer": "wrong", "refused valid": "refused", "abort": "abort", "hang": "hang"}
    width = max([len(n) for n in counts] + [8])
    lines = [title, f"{'function':<{width}} " + " ".join(f"{short[o]:>8}" for o in OUTCOMES) + "    cases"]
    total: Counter = Counter()
    for name, c in sorted(counts.items()):
        total.update(c)
        lines.append(f"{name:<{width}} " + " ".join(f"{c[o]:>8}" for o in OUTCOMES) + f" {sum(c.values()):>8}")
    lines.append(f"{'total':<{width}} " + " ".join(f"{total[o]:>8}" for o in OUTCOMES) + f" {sum(total.values()):>8}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000, help="cases per function")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per case before it counts as a hang")
    parser.add_argument("--only", nargs="+", default=None, help="prefixes of the function names to fuzz")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes running side by side")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker([tuple(p) for p in json.loads(args.worker)], args.seed, args.cases)
        return
    names = [s.name for s in build_specs() if not args.only or any(s.name.startswith(p) for p in args.only)]
    t0 = time.perf_counter()
    from concurrent.futures import ThreadPoolExecutor

    groups = [names[k::args.jobs] for k in range(max(1, args.jobs))]
    with ThreadPoolExecutor(len(groups)) as pool:
        parts = list(pool.map(lambda g: drive(g, args.seed, args.cases, args.timeout), groups))
    counts = {k: v for part in parts for k, v in part[0].items()}
    examples = {k: v for part in parts for k, v in part[1].items()}
    print(f"{args.cases} cases per function, seed {args.seed}, {time.perf_counter() - t0:.0f} s")
    own = {n: c for n, c in counts.items() if n.split(".")[0] in OWNED}
    other = {n: c for n, c in counts.items() if n.split(".")[0] in OTHERS}
    if own:
        print(table("modules validated here", own))
    if other:
        print(table("attention_vs_gd and multiple_softmax_regression (validated in their own modules)", other))
    if examples:
        print("first example of every problem class:")
        for (name, outcome), detail in sorted(examples.items()):
            print(f"  {name}: {outcome}: {detail}")


if __name__ == "__main__":
    main()
