"""A trained softmax self-attention layer against one step of gradient descent on softmax regression.

Derived in :doc:`/book/attention_vs_gd`. The protocol is ours (the code of Li, Song, Xia, Yu, Zhou,
2304.13276, is not public). A *task* draws ``x* ∈ R^d`` and a document ``Ā = [A; a_q] ∈ R^{(n+1)×d}``
(rows ``a_1 … a_n`` are the context, ``a_q`` the query)::

    context labels   b = softmax(A x*)                          (the paper's b = f(Ax*), n tokens)
    query label      y = softmax(Ā x*)_{n+1}                    (the weight of the query appended as row n+1)

Both are reported on the *relative-weight* scale, ``n b`` and ``(n+1) y`` (1 = uniform weight), so that
labels are O(1) at every ``n``. The in-context learners::

    GD model         x₁ = −η ∇L(0),  L(x) = ½‖softmax(Ax) − b‖²;  ŷ_GD = (n+1) softmax(Ā x₁)_{n+1}
    linearized GD    ŷ_GD to first order in η
    attention layer  E = [[a_i, n b_i − 1]; [a_q, 0]],  ŷ_SA = 1 + [E + softmax_row(E W Eᵀ) E W_V]_{q, d+1}
    hand-set layer   the layer with W = c·diag(I_d, 0), W_V = p·e_{d+1}e_{d+1}ᵀ, (c, p) fitted

``η`` and the hand-set ``(c, p)`` are fitted on one set of training tasks shared by all seeds; ``(W, W_V)``
are trained with Adam (or SGD) on fresh tasks; every seed is evaluated on the same held-out tasks, so
per-seed differences are differences of training only.

The module never changes JAX's global configuration: every public function computes in float64 inside
``jax.enable_x64(True)`` and validates its arguments (shapes, dtypes, finiteness, sizes) before any
array is allocated.

Command line: ``python -m softmax_icl.attention_vs_gd --config book/data/attention_vs_gd/config.json``
runs every experiment of the configuration that has no result file yet, writes one small JSON result
file per experiment and ``summary.json`` (per-seed final numbers of every experiment).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import pathlib
import platform
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import __version__
from . import transformer as tf

__all__ = [
    "Config",
    "ConfigError",
    "TrainingDiverged",
    "Tasks",
    "Baselines",
    "sample_tasks",
    "document",
    "gd_direction",
    "gd_weights",
    "gd_prediction",
    "gd_sensitivity",
    "linearized_gd_prediction",
    "tune_step_size",
    "tokens",
    "attention_prediction",
    "handset_params",
    "fit_handset_layer",
    "first_order_product",
    "init_params",
    "layer_weights",
    "sensitivities",
    "baselines",
    "evaluate",
    "train",
    "run_experiment",
    "load_config",
    "save_result",
    "load_result",
    "summarize",
    "main",
    "METRICS",
    "REFERENCES",
]

#: The references the trained layer is compared with (nonlinear GD, linearized GD, the hand-set layer).
REFERENCES = ("gd", "lin", "hand")
#: The metrics recorded at every evaluation, in this order (the layer's loss, then each of Preds Diff
#: (normalized), Model Diff (normalized) and Model Cos against each reference).
METRICS = ("loss_sa",) + tuple(f"{m}_{r}" for m in ("preds_diff", "model_diff", "model_cos") for r in REFERENCES)

#: Largest number of float64 entries one array of tasks may hold (about 1.6 GB).
MAX_ENTRIES = 200_000_000
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_OPTIMIZERS = ("adam", "sgd")
_HANDSET_TEMPERATURES = (-4.0, -3.0, -2.0, -1.0, -0.5, -0.1, 0.1, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)


class ConfigError(ValueError):
    """A configuration file or field is invalid; the message names the file and the field.

    Derived in :doc:`/book/attention_vs_gd`.
    """


class TrainingDiverged(ArithmeticError):
    """Training produced a non-finite (or exploding) loss or parameter. Derived in :doc:`/book/attention_vs_gd`."""


# ---- validation at the public boundary ---------------------------------------------------------------


def _x64(fn: Callable) -> Callable:
    """Run ``fn`` with JAX's 64-bit mode on, without touching the global setting."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with jax.enable_x64(True):
            return fn(*args, **kwargs)

    return wrapper


def _is_tracer(value: object) -> bool:
    return isinstance(value, jax.core.Tracer)


def _int(value: object, name: str, lo: int = 1, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        bound = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be an integer {bound}, got {value}")
    return value


def _real(value: object, name: str, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {out}")
    if (lo is not None and out < lo) or (hi is not None and out > hi):
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {out}")
    return out


def _scalar(value: object, name: str) -> Any:
    """A finite real scalar, or a scalar float tracer (so the functions stay differentiable)."""
    if _is_tracer(value):
        if value.shape != () or not jnp.issubdtype(value.dtype, jnp.floating):
            raise TypeError(f"{name} must be a real scalar, got a traced {value.dtype} of shape {value.shape}")
        return value
    if isinstance(value, np.ndarray | jax.Array) and value.shape == ():
        if not np.issubdtype(value.dtype, np.floating):
            raise TypeError(f"{name} must be a real floating-point scalar, got dtype {value.dtype}")
        value = float(value)
    return jnp.float64(_real(value, name))


def _array(value: object, name: str, min_ndim: int) -> jax.Array:
    """A finite float64 array with at least ``min_ndim`` axes and no empty axis (tracers: dtype and shape only)."""
    if _is_tracer(value):
        arr = value
    else:
        try:
            arr = np.asarray(value)
        except Exception as exc:  # ragged nested lists and the like
            raise ValueError(f"{name} must be an array; could not convert it: {exc}") from exc
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        raise TypeError(f"{name} must be a real floating-point array, got dtype {arr.dtype}")
    if arr.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} axes, got shape {arr.shape}")
    if 0 in arr.shape:
        raise ValueError(f"{name} must be non-empty, got shape {arr.shape}")
    if _is_tracer(arr):
        return arr
    if arr.size > MAX_ENTRIES:
        raise ValueError(f"{name} has {arr.size} entries, more than the limit {MAX_ENTRIES}")
    arr = np.asarray(arr, dtype=np.float64)
    if not np.isfinite(arr).all():
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        raise ValueError(f"{name} must be finite; entry {bad} is {arr[bad]}")
    return jnp.asarray(arr)


def _document_pair(A: object, b: object) -> tuple[jax.Array, jax.Array]:
    """``A`` (…, n+1, d) and ``b`` (…, n) with the same leading axes: the query is the last row of ``A``."""
    A, b = _array(A, "A", 2), _array(b, "b", 1)
    if A.shape[:-2] != b.shape[:-1]:
        raise ValueError(f"A (…, n+1, d) and b (…, n) need the same leading axes, got A {A.shape}, b {b.shape}")
    if A.shape[-2] != b.shape[-1] + 1:
        raise ValueError(
            f"A must have n+1 = {b.shape[-1] + 1} rows (the n context tokens of b and the query), "
            f"got A {A.shape}, b {b.shape}"
        )
    return A, b


def _key(key: object, name: str = "key") -> jax.Array:
    if _is_tracer(key):
        return key
    if not isinstance(key, jax.Array | np.ndarray):
        raise TypeError(f"{name} must be a JAX PRNG key (jax.random.PRNGKey(seed)), got {type(key).__name__}")
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"{name} must be a single PRNG key, got a key array of shape {key.shape}")
        return key
    if key.dtype != np.uint32 or key.shape != (2,):
        raise TypeError(f"{name} must be a JAX PRNG key: uint32 of shape (2,), got {key.dtype} {key.shape}")
    return jnp.asarray(key)


def _params(params: object, d: int) -> dict[str, jax.Array]:
    if not isinstance(params, dict) or set(params) != {"W", "W_V"}:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise TypeError(f"params must be a dict with keys 'W' and 'W_V', got {got}")
    out = {}
    for k in ("W", "W_V"):
        arr = _array(params[k], f"params[{k!r}]", 2)
        if arr.shape != (d + 1, d + 1):
            raise ValueError(f"params[{k!r}] must have shape (d+1, d+1) = {(d + 1, d + 1)}, got {arr.shape}")
        out[k] = arr
    return out


def _flag(value: object, name: str) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


def _check_size(name: str, *factors: int) -> None:
    if math.prod(factors) > MAX_ENTRIES:
        raise ValueError(
            f"{name}: {' × '.join(map(str, factors))} = {math.prod(factors)} entries exceed the limit {MAX_ENTRIES}"
        )


# ---- configuration ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """One experiment: sizes, task distribution, layer parametrization, optimizer, evaluation and seeds.

    Derived in :doc:`/book/attention_vs_gd`.
    """

    name: str = "n25_d20"
    n: int = 25  # context tokens
    d: int = 20  # token dimension
    task_scale: float = 1.0  # x* ~ N(0, task_scale² I_d), a_i ~ N(0, I_d/d): logits ~ N(0, ≈ task_scale²)
    noise: float = 0.0  # std of Gaussian noise added to the relative context labels n b_i
    centered: bool = True  # tokens carry n b_i − 1 and the layer predicts the deviation from 1
    score_labels: bool = True  # the attention scores see the keys' label slot (False: W's last column is 0)
    mask_self: bool = False  # the query does not attend to itself
    init_scale: float = 0.01  # entries of W, W_V ~ N(0, init_scale²)
    init_temperature: float = 0.0  # added to the diagonal of W's feature block at initialization
    init_label_weight: float = 0.0  # added to W_V[d, d] at initialization
    optimizer: str = "adam"  # "adam" or "sgd" (momentum 0.9)
    steps: int = 3000
    batch: int = 128  # fresh tasks per step
    lr: float = 1e-2  # peak learning rate (cosine decay to lr_final)
    lr_final: float = 1e-3
    weight_decay: float = 0.0  # decoupled, on every entry outside W[:d, :d] and W_V[d, d]
    eval_every: int = 100
    eval_tasks: int = 1000  # held-out tasks, shared by all seeds
    tune_tasks: int = 4096  # training tasks on which η and the hand-set layer are fitted, shared by all seeds
    data_seed: int = 1_000_000  # seed of the shared tuning and held-out tasks
    seeds: tuple[int, ...] = field(default_factory=lambda: tuple(range(10)))

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _SAFE_NAME.fullmatch(self.name) or ".." in self.name:
            raise ValueError(
                f"name must be a safe file name (letters, digits, '_', '-', '.', at most 100 characters, "
                f"no '..'), got {self.name!r}"
            )
        limits = {"n": 100_000, "d": 10_000, "steps": 10_000_000, "batch": 1_000_000, "eval_every": 10_000_000,
                  "eval_tasks": 1_000_000, "tune_tasks": 1_000_000}
        for name, hi in limits.items():
            _int(getattr(self, name), name, 1, hi)
        _int(self.data_seed, "data_seed", 0, 2**31 - 1)
        for name in ("task_scale", "noise", "init_scale", "weight_decay"):
            _real(getattr(self, name), name, 0.0, 1e6)
        for name in ("init_temperature", "init_label_weight"):
            _real(getattr(self, name), name, -1e6, 1e6)
        _real(self.lr, "lr", 0.0, 1e300)
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        _real(self.lr_final, "lr_final", 0.0, self.lr)
        for name in ("centered", "score_labels", "mask_self"):
            _flag(getattr(self, name), name)
        if self.optimizer not in _OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, got {self.optimizer!r}")
        seeds = self.seeds
        if isinstance(seeds, str | bytes) or not isinstance(seeds, tuple | list) or not seeds:
            raise TypeError(f"seeds must be a non-empty list of integers, got {seeds!r}")
        for s in seeds:
            _int(s, "seeds[…]", 0, 2**31 - 1)
        if len(set(seeds)) != len(seeds) or len(seeds) > 1000:
            raise ValueError(f"seeds must be at most 1000 distinct integers, got {seeds!r}")
        object.__setattr__(self, "seeds", tuple(int(s) for s in seeds))
        object.__setattr__(self, "task_scale", float(self.task_scale))
        for name in ("noise", "init_scale", "weight_decay", "init_temperature", "init_label_weight", "lr",
                     "lr_final"):
            object.__setattr__(self, name, float(getattr(self, name)))
        for name, factors in (("batch", (self.batch, self.n + 1, self.d)),
                              ("eval_tasks", (self.eval_tasks, self.n + 1, self.d)),
                              ("tune_tasks", (self.tune_tasks, self.n + 1, self.d))):
            _check_size(name, *factors)

    def to_dict(self) -> dict[str, Any]:
        """The configuration as a JSON-ready dictionary. Derived in :doc:`/book/attention_vs_gd`."""
        out = dataclasses.asdict(self)
        out["seeds"] = list(self.seeds)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """Inverse of :meth:`to_dict`; unknown keys raise. Derived in :doc:`/book/attention_vs_gd`."""
        if not isinstance(data, dict):
            raise TypeError(f"an experiment must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown configuration keys: {sorted(unknown)}")
        if "name" not in data:
            raise ValueError("field 'name' is missing")
        seeds = data.get("seeds", list(range(10)))
        if not isinstance(seeds, list | tuple):
            raise TypeError(f"seeds must be a list of integers, got {seeds!r}")
        return cls(**{**data, "seeds": tuple(seeds)})


# ---- tasks -------------------------------------------------------------------------------------------


class Tasks(NamedTuple):
    """A batch of tasks: ``A`` (T, n+1, d) with the query as last row, relative context labels
    ``b = n·softmax(A_ctx x*)`` (T, n), relative query labels ``y = (n+1)·softmax(Ā x*)_{n+1}`` (T,), and
    ``x_star`` (T, d).

    Derived in :doc:`/book/attention_vs_gd`.
    """

    A: jax.Array
    b: jax.Array
    y: jax.Array
    x_star: jax.Array


def _sample_tasks(key: jax.Array, count: int, n: int, d: int, task_scale: float, noise: float) -> Tasks:
    k_a, k_x, k_e = jax.random.split(key, 3)
    A = jax.random.normal(k_a, (count, n + 1, d), jnp.float64) / jnp.sqrt(d)
    x_star = task_scale * jax.random.normal(k_x, (count, d), jnp.float64)
    z = jnp.einsum("tkd,td->tk", A, x_star)
    b = n * jax.nn.softmax(z[:, :n], axis=-1)
    b = b + noise * jax.random.normal(k_e, b.shape, jnp.float64)
    y = (n + 1) * jax.nn.softmax(z, axis=-1)[:, n]
    return Tasks(A, b, y, x_star)


@_x64
def sample_tasks(
    key: jax.Array, count: int, n: int, d: int, task_scale: float = 1.0, noise: float = 0.0
) -> Tasks:
    """``count`` tasks: ``a_i ~ N(0, I/d)``, ``x* ~ N(0, task_scale² I)``, ``b = n softmax(A x*)`` (+ noise),
    ``y = (n+1) softmax(Ā x*)_{n+1}``. Derived in :doc:`/book/attention_vs_gd`."""
    key = _key(key)
    count, n, d = _int(count, "count"), _int(n, "n"), _int(d, "d")
    _check_size("count × (n+1) × d", count, n + 1, d)
    return _sample_tasks(key, count, n, d, _real(task_scale, "task_scale", 0.0), _real(noise, "noise", 0.0))


def document(A_ctx: np.ndarray, a_q: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate one task given as context ``A_ctx`` (n×d), query ``a_q`` (d,), relative labels ``b`` (n,);
    return ``(Ā, b)`` with ``Ā = [A_ctx; a_q]`` ((n+1)×d). Derived in :doc:`/book/attention_vs_gd`."""
    with jax.enable_x64(True):
        A_ctx = np.asarray(_array(A_ctx, "A_ctx", 2))
        a_q, b = np.asarray(_array(a_q, "a_q", 1)), np.asarray(_array(b, "b", 1))
    if A_ctx.ndim != 2:
        raise ValueError(f"A_ctx must be an n×d matrix, got shape {A_ctx.shape}")
    n, d = A_ctx.shape
    if a_q.shape != (d,):
        raise ValueError(f"a_q must have shape (d,) = ({d},), got {a_q.shape}")
    if b.shape != (n,):
        raise ValueError(f"b must have shape (n,) = ({n},), got {b.shape}")
    return np.vstack([A_ctx, a_q]), b


# ---- the GD model ---------------------------------------------------------------------------------------


@jax.jit
def _gd_direction(A: jax.Array, b: jax.Array) -> jax.Array:
    n = b.shape[-1]
    w = b / n
    return jnp.einsum("...k,...kd->...d", w - jnp.mean(w, axis=-1, keepdims=True), A[..., :n, :]) / n


@jax.jit
def _gd_prediction(eta: jax.Array, A: jax.Array, b: jax.Array) -> jax.Array:
    n = b.shape[-1]
    u = jnp.einsum("...kd,...d->...k", A, eta * _gd_direction(A, b))
    return (n + 1) * jax.nn.softmax(u, axis=-1)[..., n]


@jax.jit
def _linearized_gd_prediction(eta: jax.Array, A: jax.Array, b: jax.Array) -> jax.Array:
    n = b.shape[-1]
    a_bar = jnp.mean(A[..., :n, :], axis=-2)
    return 1.0 + eta * n / (n + 1) * jnp.sum((A[..., n, :] - a_bar) * _gd_direction(A, b), axis=-1)


@_x64
def gd_direction(A: jax.Array, b: jax.Array) -> jax.Array:
    """``−∇L(0) = (1/n) A_ctxᵀ(b/n − mean(b/n))`` for ``L(x) = ½‖softmax(A_ctx x) − b/n‖²``; batched over leading axes.

    Derived in :doc:`/book/attention_vs_gd`.
    """
    return _gd_direction(*_document_pair(A, b))


@_x64
def gd_weights(eta: float, A: jax.Array, b: jax.Array) -> jax.Array:
    """``x₁ = x₀ − η∇L(x₀)`` from ``x₀ = 0``, i.e. ``η · gd_direction(A, b)``.

    Derived in :doc:`/book/attention_vs_gd`.
    """
    eta = _scalar(eta, "eta")
    return eta * _gd_direction(*_document_pair(A, b))


@_x64
def gd_prediction(eta: float, A: jax.Array, b: jax.Array) -> jax.Array:
    """``ŷ_GD = (n+1) softmax(Ā x₁)_{n+1}``: the query's relative weight under one GD step.

    Derived in :doc:`/book/attention_vs_gd`.
    """
    return _gd_prediction(_scalar(eta, "eta"), *_document_pair(A, b))


@_x64
def gd_sensitivity(eta: float, A: jax.Array, b: jax.Array) -> jax.Array:
    """``∂ŷ_GD/∂a_q = (n+1) σ_q (1 − σ_q) x₁`` with ``σ_q = softmax(Ā x₁)_{n+1}`` (``x₁`` does not depend on ``a_q``).

    Derived in :doc:`/book/attention_vs_gd`.
    """
    eta = _scalar(eta, "eta")
    A, b = _document_pair(A, b)
    n = b.shape[-1]
    x1 = eta * _gd_direction(A, b)
    s = jax.nn.softmax(jnp.einsum("...kd,...d->...k", A, x1), axis=-1)[..., n]
    return ((n + 1) * s * (1 - s))[..., None] * x1


@_x64
def linearized_gd_prediction(eta: float, A: jax.Array, b: jax.Array) -> jax.Array:
    """``1 + η (n/(n+1)) ⟨a_q − ā, −∇L(0)⟩``: ``ŷ_GD`` to first order in ``η`` (``ā`` the mean context token).

    Derived in :doc:`/book/attention_vs_gd`.
    """
    return _linearized_gd_prediction(_scalar(eta, "eta"), *_document_pair(A, b))


def _tasks(tasks: object, name: str = "tasks") -> Tasks:
    if not isinstance(tasks, Tasks):
        raise TypeError(f"{name} must be a Tasks tuple from sample_tasks, got {type(tasks).__name__}")
    A, b = _document_pair(tasks.A, tasks.b)
    if A.ndim != 3:
        raise ValueError(f"{name}.A must have shape (T, n+1, d), got {A.shape}")
    y = _array(tasks.y, f"{name}.y", 1)
    if y.shape != A.shape[:1]:
        raise ValueError(f"{name}.y must have shape (T,) = ({A.shape[0]},), got {y.shape}")
    return Tasks(A, b, y, tasks.x_star)


@_x64
def tune_step_size(
    tasks: Tasks,
    linearized: bool = False,
    lo: float = 1e-2,
    hi: float = 1e8,
    grid: int = 161,
    rounds: int = 3,
) -> float:
    """``argmin_η mean ½(ŷ_GD(η) − y)²`` over ``tasks``: a log-spaced grid refined ``rounds`` times around the best
    (the logits ``Ā x₁ = η Ā(−∇L(0))`` are computed once); for the linearized model the least-squares
    ``η = Σ s (y − 1) / Σ s²``, ``s = (n/(n+1))⟨a_q − ā, −∇L(0)⟩``. Derived in :doc:`/book/attention_vs_gd`."""
    tasks = _tasks(tasks)
    _flag(linearized, "linearized")
    lo, hi = _real(lo, "lo", 0.0), _real(hi, "hi", 0.0)
    grid, rounds = _int(grid, "grid", 3, 100_000), _int(rounds, "rounds", 0, 100)
    if not 0 < lo < hi:
        raise ValueError(f"need 0 < lo < hi, got lo={lo}, hi={hi}")
    if linearized:
        s = _linearized_gd_prediction(1.0, tasks.A, tasks.b) - 1.0
        denom = float(jnp.sum(s * s))
        if denom == 0.0:
            raise ValueError("tasks: the first-order term vanishes on every task; η is not determined")
        return float(jnp.sum(s * (tasks.y - 1.0)) / denom)
    n = tasks.b.shape[-1]
    u = jnp.einsum("tkd,td->tk", tasks.A, _gd_direction(tasks.A, tasks.b))
    losses = jax.jit(
        jax.vmap(lambda e: 0.5 * jnp.mean(((n + 1) * jax.nn.softmax(e * u, axis=-1)[:, n] - tasks.y) ** 2))
    )
    log_lo, log_hi = np.log(lo), np.log(hi)
    best = lo
    for r in range(rounds + 1):
        etas = np.exp(np.linspace(log_lo, log_hi, grid))
        i = int(np.argmin(np.asarray(losses(jnp.asarray(etas)))))
        if i in (0, grid - 1) and r == 0:
            raise ValueError(f"the best step size is at the edge of the grid [{lo:g}, {hi:g}]")
        best = float(etas[i])
        step = (log_hi - log_lo) / (grid - 1)
        log_lo, log_hi = np.log(best) - 2 * step, np.log(best) + 2 * step
    return best


# ---- the softmax self-attention layer -----------------------------------------------------------------------

Params = dict[str, jax.Array]


@functools.partial(jax.jit, static_argnames="centered")
def _tokens(A: jax.Array, b: jax.Array, centered: bool = True) -> jax.Array:
    labels = jnp.concatenate([b - 1.0 if centered else b, jnp.zeros_like(b[..., :1])], axis=-1)
    return jnp.concatenate([A, labels[..., None]], axis=-1)


@functools.partial(jax.jit, static_argnames=("centered", "score_labels", "mask_self"))
def _attention_prediction(
    params: Params, A: jax.Array, b: jax.Array, centered: bool = True, score_labels: bool = True,
    mask_self: bool = False,
) -> jax.Array:
    E = _tokens(A, b, centered)
    N, D = E.shape[-2:]
    W = params["W"] if score_labels else params["W"].at[:, -1].set(0.0)
    # one head of the library's layer: scores e_t W e_iᵀ (W_Q = W, W_K = I), values e_i W_V[:, -1] written
    # to the label slot; keys over the whole prompt unless the query's own score is masked
    head = {"W_Q": W[None], "W_K": jnp.eye(D, dtype=W.dtype)[None], "W_V": params["W_V"][None, :, -1:],
            "W_O": jnp.eye(D, dtype=W.dtype)[None, -1:]}
    layer = jax.vmap(lambda Z: tf.attention_layer(head, Z, "softmax", keys_include_queries=not mask_self,
                                                  score_scale=1.0, queries_only=True)[0, -1])
    out = layer(E.reshape(-1, N, D)).reshape(E.shape[:-2])
    return (1.0 if centered else 0.0) + E[..., -1, -1] + out


@_x64
def tokens(A: jax.Array, b: jax.Array, centered: bool = True) -> jax.Array:
    """``E = [[a_i, ℓ_i]; [a_q, 0]]`` ((…, n+1, d+1)) with ``ℓ_i = b_i − 1`` (``centered``, the deviation from the
    uniform weight) or ``ℓ_i = b_i``: context tokens carry their relative label, the query 0.

    Derived in :doc:`/book/attention_vs_gd`.
    """
    A, b = _document_pair(A, b)
    return _tokens(A, b, _flag(centered, "centered"))


@_x64
def attention_prediction(
    params: Params, A: jax.Array, b: jax.Array, centered: bool = True, score_labels: bool = True,
    mask_self: bool = False,
) -> jax.Array:
    """``ŷ_SA = c + [E + softmax_row(E W Eᵀ) E W_V]_{q, d+1} = c + ⟨softmax(E Wᵀ e_q), E W_V[:, d+1]⟩`` (the query
    row only) with ``c = 1`` for centered labels (the layer predicts the deviation from uniform), else 0.
    ``score_labels=False`` zeroes the last column of ``W`` (the keys' labels do not enter the scores);
    ``mask_self=True`` removes the query's own score. Derived in :doc:`/book/attention_vs_gd`.
    """
    A, b = _document_pair(A, b)
    params = _params(params, A.shape[-1])
    flags = {k: _flag(v, k) for k, v in (("centered", centered), ("score_labels", score_labels),
                                          ("mask_self", mask_self))}
    return _attention_prediction(params, A, b, **flags)


def _handset(c: Any, p: Any, d: int) -> Params:
    W = jnp.zeros((d + 1, d + 1), jnp.float64).at[jnp.arange(d), jnp.arange(d)].set(c)
    return {"W": W, "W_V": jnp.zeros((d + 1, d + 1), jnp.float64).at[d, d].set(p)}


@_x64
def handset_params(temperature: float, label_weight: float, d: int) -> Params:
    """The constructed layer ``W = c·diag(I_d, 0)``, ``W_V = p·e_{d+1}e_{d+1}ᵀ`` (``c`` the temperature, ``p`` the
    label weight): ``ŷ_SA = 1 + p Σ_j s_j ℓ_j``, ``s = softmax_j(c⟨a_j, a_q⟩)``.

    Derived in :doc:`/book/attention_vs_gd`.
    """
    d = _int(d, "d", 1, 10_000)
    return _handset(_scalar(temperature, "temperature"), _scalar(label_weight, "label_weight"), d)


@_x64
def fit_handset_layer(
    tasks: Tasks, centered: bool = True, mask_self: bool = False,
    temperatures: Iterable[float] = _HANDSET_TEMPERATURES,
) -> tuple[float, float]:
    """The best hand-set layer on ``tasks``: for each temperature ``c`` the label weight ``p`` by least squares
    (the prediction is affine in ``p``), then the ``(c, p)`` of least mean squared error.

    Derived in :doc:`/book/attention_vs_gd`.
    """
    tasks = _tasks(tasks)
    flags = {"centered": _flag(centered, "centered"), "mask_self": _flag(mask_self, "mask_self")}
    if isinstance(temperatures, str | bytes):
        raise TypeError("temperatures must be a sequence of real numbers, got a string")
    temps = [_real(c, "temperatures[…]", -1e3, 1e3) for c in temperatures]
    if not temps:
        raise ValueError("temperatures must not be empty")
    d = tasks.A.shape[-1]
    base = 1.0 if flags["centered"] else 0.0
    best = (math.inf, 0.0, 0.0)
    for c in temps:
        u = _attention_prediction(_handset(c, 1.0, d), tasks.A, tasks.b, **flags) - base
        denom = float(jnp.sum(u * u))
        if denom == 0.0:
            continue
        p = float(jnp.sum(u * (tasks.y - base)) / denom)
        loss = float(0.5 * jnp.mean((base + p * u - tasks.y) ** 2))
        if loss < best[0]:
            best = (loss, c, p)
    if not math.isfinite(best[0]):
        raise ValueError("tasks: no temperature gives a non-constant hand-set layer")
    return best[1], best[2]


def first_order_product(eta_linearized: float, n: int, mask_self: bool = False) -> float:
    """The product ``p·c`` at which the hand-set layer equals linearized GD to first order: ``η/n``, or
    ``η/(n+1)`` when the query's self-score is masked. Derived in :doc:`/book/attention_vs_gd`."""
    eta, n = _real(eta_linearized, "eta_linearized"), _int(n, "n")
    return eta / (n + 1) if _flag(mask_self, "mask_self") else eta / n


def _init_params(key: jax.Array, d: int, init_scale: float, temperature: float = 0.0,
                 label_weight: float = 0.0) -> Params:
    k_w, k_v = jax.random.split(key)
    W = init_scale * jax.random.normal(k_w, (d + 1, d + 1), jnp.float64)
    W_V = init_scale * jax.random.normal(k_v, (d + 1, d + 1), jnp.float64)
    W = W.at[jnp.arange(d), jnp.arange(d)].add(temperature)
    return {"W": W, "W_V": W_V.at[d, d].add(label_weight)}


@_x64
def init_params(key: jax.Array, d: int, init_scale: float = 0.01, temperature: float = 0.0,
                label_weight: float = 0.0) -> Params:
    """``W, W_V ∈ R^{(d+1)×(d+1)}`` with i.i.d. ``N(0, init_scale²)`` entries, plus ``temperature`` on the diagonal
    of ``W``'s feature block and ``label_weight`` on ``W_V[d, d]`` (an initialization off the saddle at 0).

    Derived in :doc:`/book/attention_vs_gd`.
    """
    key = _key(key)
    d = _int(d, "d", 1, 10_000)
    return _init_params(key, d, _real(init_scale, "init_scale", 0.0, 1e6), _real(temperature, "temperature"),
                        _real(label_weight, "label_weight"))


def layer_weights(params: Params) -> dict[str, float]:
    """Summary of a layer: temperature ``c`` (mean diagonal of ``W[:d, :d]``), the RMS of its off-diagonal,
    label weight ``p = W_V[d, d]``, ``‖W[:d, d]‖`` (scores from the keys' labels), ``‖W_V[:d, d]‖`` (values from
    features). Derived in :doc:`/book/attention_vs_gd`."""
    if not isinstance(params, dict) or "W" not in params:
        raise TypeError("params must be a dict with keys 'W' and 'W_V'")
    with jax.enable_x64(True):
        W0 = _array(params["W"], "params['W']", 2)
        d = W0.shape[0] - 1
        if d < 1:
            raise ValueError(f"params['W'] must be at least 2×2, got {W0.shape}")
        p = _params(params, d)
    W, V = np.asarray(p["W"]), np.asarray(p["W_V"])
    block = W[:d, :d]
    off = block - np.diag(np.diag(block))
    return {
        "temperature": float(np.mean(np.diag(block))),
        "off_diagonal_rms": float(np.sqrt(np.sum(off**2) / max(d * d - d, 1))),
        "label_weight": float(V[d, d]),
        "label_score_norm": float(np.linalg.norm(W[:d, d])),
        "feature_value_norm": float(np.linalg.norm(V[:d, d])),
    }


# ---- metrics ------------------------------------------------------------------------------------------------


def _sensitivities(predict: Callable, A: jax.Array, b: jax.Array) -> jax.Array:
    def one(A1: jax.Array, b1: jax.Array) -> jax.Array:
        return jax.grad(lambda a_q: predict(A1.at[-1].set(a_q), b1))(A1[-1])

    return jax.vmap(one)(A, b)


@_x64
def sensitivities(
    predict: Callable[[jax.Array, jax.Array], jax.Array], A: jax.Array, b: jax.Array
) -> jax.Array:
    """``∂ŷ/∂a_q`` per task (T, d) by JAX autodiff of ``predict(A, b)`` (one task at a time, vmapped).

    Derived in :doc:`/book/attention_vs_gd`.
    """
    if not callable(predict):
        raise TypeError(f"predict must be a function predict(A, b) -> scalar, got {type(predict).__name__}")
    A, b = _document_pair(A, b)
    if A.ndim != 3:
        raise ValueError(f"A must have shape (T, n+1, d), got {A.shape}")
    try:
        return _sensitivities(predict, A, b)
    except TypeError as exc:
        if "scalar" in str(exc):
            raise TypeError(f"predict must return a scalar per task (A (n+1, d), b (n,)): {exc}") from None
        raise


class Baselines(NamedTuple):
    """The references of one experiment on its shared held-out tasks: step sizes, the hand-set layer, their
    predictions (T,), sensitivities (T, d) and losses. Derived in :doc:`/book/attention_vs_gd`."""

    held_out: Tasks
    eta: float
    eta_linearized: float
    temperature: float
    label_weight: float
    predictions: dict[str, jax.Array]
    sensitivities: dict[str, jax.Array]
    losses: dict[str, float]


def _data_keys(config: Config) -> tuple[jax.Array, jax.Array]:
    k_tune, k_eval = jax.random.split(jax.random.PRNGKey(config.data_seed))
    return k_tune, k_eval


def _flags(config: Config) -> dict[str, bool]:
    return {"centered": config.centered, "score_labels": config.score_labels, "mask_self": config.mask_self}


@functools.lru_cache(maxsize=4)
def _baselines(config: Config) -> Baselines:
    c = config
    k_tune, k_eval = _data_keys(c)
    tune = _sample_tasks(k_tune, c.tune_tasks, c.n, c.d, c.task_scale, c.noise)
    held = _sample_tasks(k_eval, c.eval_tasks, c.n, c.d, c.task_scale, c.noise)
    eta, eta_lin = tune_step_size(tune), tune_step_size(tune, linearized=True)
    temp, weight = fit_handset_layer(tune, c.centered, c.mask_self)
    hand = _handset(temp, weight, c.d)
    models = {
        "gd": lambda A, b: _gd_prediction(eta, A, b),
        "lin": lambda A, b: _linearized_gd_prediction(eta_lin, A, b),
        "hand": lambda A, b: _attention_prediction(hand, A, b, c.centered, True, c.mask_self),
    }
    preds = {k: m(held.A, held.b) for k, m in models.items()}
    sens = {k: _sensitivities(m, held.A, held.b) for k, m in models.items()}
    losses = {k: float(0.5 * jnp.mean((v - held.y) ** 2)) for k, v in preds.items()}
    losses["uniform"] = float(0.5 * jnp.mean((1.0 - held.y) ** 2))
    return Baselines(held, eta, eta_lin, temp, weight, preds, sens, losses)


def baselines(config: Config) -> Baselines:
    """The shared tuning and held-out tasks of ``config`` (from ``config.data_seed``), the tuned ``η`` of GD and
    of linearized GD, the fitted hand-set layer, and their predictions, sensitivities and losses.

    Derived in :doc:`/book/attention_vs_gd`.
    """
    if not isinstance(config, Config):
        raise TypeError(f"config must be a Config, got {type(config).__name__}")
    with jax.enable_x64(True):
        return _baselines(config)


@functools.partial(jax.jit, static_argnames=("centered", "score_labels", "mask_self"))
def _evaluate(params: Params, A: jax.Array, b: jax.Array, y: jax.Array, preds: dict, sens: dict,
              centered: bool, score_labels: bool, mask_self: bool) -> jax.Array:
    flags = {"centered": centered, "score_labels": score_labels, "mask_self": mask_self}
    p_sa = _attention_prediction(params, A, b, **flags)
    g_sa = _sensitivities(lambda A1, b1: _attention_prediction(params, A1, b1, **flags), A, b)
    out = [0.5 * jnp.mean((p_sa - y) ** 2)]
    diff, mdiff, cos = [], [], []
    for r in REFERENCES:
        p_r, g_r = preds[r], sens[r]
        diff.append(jnp.sqrt(jnp.mean((p_r - p_sa) ** 2) / jnp.maximum(jnp.mean((p_r - 1.0) ** 2), 1e-300)))
        n_sa, n_r = jnp.linalg.norm(g_sa, axis=-1), jnp.linalg.norm(g_r, axis=-1)
        mdiff.append(jnp.mean(jnp.linalg.norm(g_r - g_sa, axis=-1)) / jnp.maximum(jnp.mean(n_r), 1e-300))
        cos.append(jnp.mean(jnp.sum(g_sa * g_r, axis=-1) / jnp.maximum(n_sa * n_r, 1e-300)))
    return jnp.stack(out + diff + mdiff + cos)


def evaluate(params: Params, config: Config, base: Baselines | None = None) -> dict[str, float]:
    """The metrics :data:`METRICS` of the layer ``params`` on the held-out tasks of ``config``: its loss and,
    against each reference, Preds Diff ``‖ŷ_R − ŷ_SA‖/‖ŷ_R − 1‖``, Model Diff ``mean‖g_R − g_SA‖ / mean‖g_R‖`` and
    Model Cos ``mean cos(g_R, g_SA)`` (``g = ∂ŷ/∂a_q``). Derived in :doc:`/book/attention_vs_gd`."""
    if not isinstance(config, Config):
        raise TypeError(f"config must be a Config, got {type(config).__name__}")
    if base is not None and not isinstance(base, Baselines):
        raise TypeError(f"base must be the Baselines of config, got {type(base).__name__}")
    with jax.enable_x64(True):
        params = _params(params, config.d)
        base = _baselines(config) if base is None else base
        if base.held_out.A.shape[1:] != (config.n + 1, config.d):
            raise ValueError(f"base holds tasks of shape {base.held_out.A.shape[1:]}, config needs "
                             f"{(config.n + 1, config.d)}: pass baselines(config)")
        h = base.held_out
        values = np.asarray(_evaluate(params, h.A, h.b, h.y, base.predictions, base.sensitivities,
                                      **_flags(config)))
    return dict(zip(METRICS, (float(v) for v in values), strict=True))


# ---- training ---------------------------------------------------------------------------------------------


def _keys(seed: int) -> dict[str, jax.Array]:
    k_init, k_train = jax.random.split(jax.random.PRNGKey(seed), 2)
    return {"init": k_init, "train": k_train}


def _decay_mask(d: int) -> Params:
    """1 on the entries that do not enter the hand-set construction: all but ``W[:d, :d]`` and ``W_V[d, d]``."""
    return {"W": jnp.ones((d + 1, d + 1)).at[:d, :d].set(0.0), "W_V": jnp.ones((d + 1, d + 1)).at[d, d].set(0.0)}


@functools.lru_cache(maxsize=16)
def _trainer(config: Config) -> tuple[optax.GradientTransformation, Callable]:
    """The optimizer and a jitted ``lax.scan`` over a chunk of steps (cached per configuration)."""
    c = config
    schedule = optax.cosine_decay_schedule(c.lr, c.steps, alpha=c.lr_final / c.lr)
    scale = optax.scale_by_adam() if c.optimizer == "adam" else optax.trace(decay=0.9)
    parts = [scale]
    if c.weight_decay > 0:
        mask = _decay_mask(c.d)
        parts.append(optax.stateless(
            lambda updates, params: jax.tree.map(lambda u, p, m: u + c.weight_decay * m * p, updates, params, mask)
        ))
    optimizer = optax.chain(*parts, optax.scale_by_learning_rate(schedule))
    flags = _flags(c)

    def loss(p: Params, key: jax.Array) -> jax.Array:
        tasks = _sample_tasks(key, c.batch, c.n, c.d, c.task_scale, c.noise)
        return 0.5 * jnp.mean((_attention_prediction(p, tasks.A, tasks.b, **flags) - tasks.y) ** 2)

    def one(carry: tuple[Params, Any], key: jax.Array) -> tuple[tuple[Params, Any], None]:
        p, s = carry
        updates, s = optimizer.update(jax.grad(loss)(p, key), s, p)
        return (optax.apply_updates(p, updates), s), None

    @jax.jit
    def chunk(p: Params, s: Any, keys: jax.Array) -> tuple[Params, Any]:
        return jax.lax.scan(one, (p, s), keys)[0]

    return optimizer, chunk


def _initial_params(config: Config, key: jax.Array) -> Params:
    c = config
    p = _init_params(key, c.d, c.init_scale, c.init_temperature, c.init_label_weight)
    if not c.score_labels:
        p["W"] = p["W"].at[:, -1].set(0.0)  # never used: keep the reported weights clean
    return p


def train(config: Config, seed: int, progress: Any = None) -> dict[str, Any]:
    """Train one layer for one seed (initialization and stream of training tasks); evaluate every
    ``eval_every`` steps on the experiment's shared held-out tasks. Raises :class:`TrainingDiverged` on a
    non-finite or exploding loss. Returns the metric curves, the final weights' summary and the parameters.

    Derived in :doc:`/book/attention_vs_gd`.
    """
    if not isinstance(config, Config):
        raise TypeError(f"config must be a Config, got {type(config).__name__}")
    seed = _int(seed, "seed", 0, 2**31 - 1)
    if progress is not None and not callable(getattr(progress, "update", None)):
        raise TypeError(f"progress must be None or have an update(steps) method, got {type(progress).__name__}")
    c = config
    with jax.enable_x64(True):
        base = _baselines(c)
        keys = _keys(seed)
        optimizer, chunk = _trainer(c)
        params = _initial_params(c, keys["init"])
        state = optimizer.init(params)
        curves: dict[str, list[float]] = {"steps": [], **{m: [] for m in METRICS}}

        def record(t: int) -> None:
            values = evaluate(params, c, base) if _finite(params) else {m: math.nan for m in METRICS}
            if not math.isfinite(values["loss_sa"]) or values["loss_sa"] > 1e8 * max(base.losses["uniform"], 1e-12):
                raise TrainingDiverged(
                    f"{c.name}, seed {seed}: training diverged by step {t} (held-out loss {values['loss_sa']:.3g}, "
                    f"uniform {base.losses['uniform']:.3g}); lower lr (now {c.lr:g})"
                )
            curves["steps"].append(t)
            for name, value in values.items():
                curves[name].append(value)

        record(0)
        train_keys = jax.random.split(keys["train"], c.steps)
        done = 0
        while done < c.steps:
            todo = min(c.eval_every - done % c.eval_every, c.steps - done)
            params, state = chunk(params, state, train_keys[done : done + todo])
            done += todo
            record(done)
            if progress is not None:
                progress.update(todo)
    return {"seed": seed, "curves": curves, "weights": layer_weights(params), "params": params}


def _finite(params: Params) -> bool:
    return all(bool(jnp.all(jnp.isfinite(v))) for v in params.values())


def _baseline_record(config: Config) -> dict[str, Any]:
    b = baselines(config)
    return {
        "eta": b.eta,
        "eta_linearized": b.eta_linearized,
        "handset_temperature": b.temperature,
        "handset_label_weight": b.label_weight,
        "first_order_product": first_order_product(b.eta_linearized, config.n, config.mask_self),
        "losses": dict(b.losses),
    }


def run_experiment(config: Config, progress: bool = False, keep_params: bool = False) -> dict[str, Any]:
    """All seeds of one experiment: the config, the library version, the references, per-seed curves and
    final weights, and the wall time. Derived in :doc:`/book/attention_vs_gd`."""
    if not isinstance(config, Config):
        raise TypeError(f"config must be a Config, got {type(config).__name__}")
    _flag(progress, "progress"), _flag(keep_params, "keep_params")
    start = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=config.steps * len(config.seeds), desc=config.name, unit="step")
    try:
        ref = _baseline_record(config)
        runs = []
        for seed in config.seeds:
            run = train(config, seed, bar)
            if not keep_params:
                run.pop("params")
            runs.append(run)
    finally:
        if bar is not None:
            bar.close()
    return {
        "config": config.to_dict(),
        "version": __version__,
        "jax": jax.__version__,
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} cores",
        "wall_seconds": time.perf_counter() - start,
        "baselines": ref,
        "runs": runs,
    }


# ---- files -----------------------------------------------------------------------------------------------


def _round(value: Any, digits: int = 6) -> Any:
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: _round(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_round(v, digits) for v in value]
    return value


def _non_finite(value: Any, where: str = "") -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return where or "value"
    if isinstance(value, dict):
        for k, v in value.items():
            bad = _non_finite(v, f"{where}.{k}" if where else str(k))
            if bad:
                return bad
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            bad = _non_finite(v, f"{where}[{i}]")
            if bad:
                return bad
    return None


def _write_json(path: pathlib.Path, data: Any) -> None:
    """Write atomically: a temporary file in the same directory, then a rename."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def _confined(directory: str | pathlib.Path, name: str) -> pathlib.Path:
    if not isinstance(directory, str | os.PathLike):
        raise TypeError(f"directory must be a path, got {type(directory).__name__}")
    directory = pathlib.Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"directory {directory} exists and is not a directory")
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"name {name!r} is not a safe file name")
    path = directory / f"{name}.json"
    if path.resolve().parent != directory.resolve():
        raise ValueError(f"{path} would be written outside {directory}")
    return path


def load_config(path: str | pathlib.Path) -> list[Config]:
    """The experiments of a configuration file ``{"experiments": [{...}, ...]}``; any problem raises
    :class:`ConfigError` naming the file and the field. Derived in :doc:`/book/attention_vs_gd`."""
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a file path, got {type(path).__name__}")
    try:
        data = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    if not isinstance(data, dict) or "experiments" not in data:
        raise ConfigError(f"{path}: expected a JSON object with a key 'experiments'")
    unknown = set(data) - {"experiments", "description"}
    if unknown:
        raise ConfigError(f"{path}: unknown top-level keys {sorted(unknown)}")
    experiments = data["experiments"]
    if not isinstance(experiments, list) or not experiments:
        raise ConfigError(f"{path}: 'experiments' must be a non-empty list of objects")
    configs = []
    for i, entry in enumerate(experiments):
        label = f"experiments[{i}]" + (f" ({entry['name']!r})" if isinstance(entry, dict) and "name" in entry else "")
        try:
            configs.append(Config.from_dict(entry))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: {label}: {exc}") from None
    names = [c.name for c in configs]
    duplicates = sorted({x for x in names if names.count(x) > 1})
    if duplicates:
        raise ConfigError(f"{path}: experiments: duplicate names {duplicates}")
    return configs


def save_result(result: dict[str, Any], directory: str | pathlib.Path) -> pathlib.Path:
    """Write ``<directory>/<name>.json`` atomically (numbers rounded to 6 significant digits, no parameters);
    refuses non-finite numbers and names that would leave ``directory``. Derived in :doc:`/book/attention_vs_gd`."""
    if not isinstance(result, dict) or "config" not in result or "runs" not in result:
        raise TypeError("result must be a dictionary from run_experiment")
    config = Config.from_dict(result["config"])
    path = _confined(directory, config.name)
    runs = result["runs"]
    seeds = [r.get("seed") if isinstance(r, dict) else None for r in runs] if isinstance(runs, list) else None
    if seeds != list(config.seeds):
        raise ValueError(f"result for {config.name!r}: 'runs' must hold one run per seed {list(config.seeds)}")
    result = {**result, "runs": [{k: v for k, v in r.items() if k != "params"} for r in result["runs"]]}
    bad = _non_finite(result)
    if bad:
        raise ValueError(f"result for {config.name!r}: {bad} is not finite; nothing written")
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_json(path, _round(result))
    return path


def load_result(path: str | pathlib.Path) -> dict[str, Any]:
    """Read a result file written by :func:`save_result`; curves come back as arrays (seeds × evaluations).

    Derived in :doc:`/book/attention_vs_gd`.
    """
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a file path, got {type(path).__name__}")
    try:
        data = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
        data["config"] = Config.from_dict(data["config"])
        data["curves"] = {
            k: np.array([r["curves"][k] for r in data["runs"]], dtype=np.float64) for k in ("steps", *METRICS)
        }
        data["weights"] = {
            k: np.array([r["weights"][k] for r in data["runs"]], dtype=np.float64) for k in data["runs"][0]["weights"]
        }
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the result file: {exc}") from None
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not a result file of this version: {type(exc).__name__}: {exc}") from None
    return data


def summarize(results: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Per experiment: the shared references and, per seed, the final losses of the trained layer, GD,
    linearized GD, the hand-set layer and uniform, the loss ratios, the final metrics and learned weights.

    Derived in :doc:`/book/attention_vs_gd`.
    """
    out: dict[str, Any] = {"version": __version__, "experiments": {}}
    for r in results:
        if not isinstance(r, dict) or "curves" not in r:
            raise TypeError("results must be dictionaries from load_result")
        c, base = r["config"], r["baselines"]
        losses = base["losses"]
        final = {m: r["curves"][m][:, -1] for m in METRICS}
        ratio_lin = final["loss_sa"] / losses["lin"]
        out["experiments"][c.name] = {
            "config": c.to_dict(),
            "references": base,
            "seeds": list(c.seeds),
            "final": {
                "loss_sa": final["loss_sa"].tolist(),
                "loss_gd": [losses["gd"]] * len(c.seeds),
                "loss_linearized_gd": [losses["lin"]] * len(c.seeds),
                "loss_handset": [losses["hand"]] * len(c.seeds),
                "loss_uniform": [losses["uniform"]] * len(c.seeds),
                "ratio_to_gd": (final["loss_sa"] / losses["gd"]).tolist(),
                "ratio_to_linearized_gd": ratio_lin.tolist(),
                **{m: final[m].tolist() for m in METRICS[1:]},
            },
            "weights": {k: v.tolist() for k, v in r["weights"].items()},
            "seeds_within_1.5x_of_linearized_gd": int(np.sum(ratio_lin <= 1.5)),
        }
    return _round(out)


def _fail(message: str, status: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(status)


def main(argv: Iterable[str] | None = None) -> None:
    """Command line: run the experiments of ``--config`` (or those named by ``--only``) that have no result
    file in ``--out`` yet (``--force`` reruns them), write their results and ``summary.json``. Bad files and
    fields exit with status 2 and one line; a diverging run exits with status 1 and writes nothing for it.

    Derived in :doc:`/book/attention_vs_gd`.
    """
    parser = argparse.ArgumentParser(prog="python -m softmax_icl.attention_vs_gd", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="JSON file {'experiments': [...]}")
    parser.add_argument("--out", default=None, help="output directory (default: the config's directory)")
    parser.add_argument("--only", nargs="+", default=None, help="names of the experiments to run")
    parser.add_argument("--force", action="store_true", help="rerun experiments whose result file exists")
    args = parser.parse_args(None if argv is None else list(argv))
    try:
        configs = load_config(args.config)
    except ConfigError as exc:
        _fail(str(exc))
    out = pathlib.Path(args.out) if args.out else pathlib.Path(args.config).parent
    if out.exists() and not out.is_dir():
        _fail(f"--out {out}: exists and is not a directory")
    if args.only:
        missing = sorted(set(args.only) - {c.name for c in configs})
        if missing:
            _fail(f"--only: {missing} not in {args.config} (it has {[c.name for c in configs]})")
        configs = [c for c in configs if c.name in args.only]
    try:
        out.mkdir(parents=True, exist_ok=True)
        paths = {c.name: _confined(out, c.name) for c in configs}
        probe = out / ".write-probe"
        probe.write_text("")
        probe.unlink()
    except (OSError, ValueError) as exc:
        _fail(f"--out {out}: {exc}")
    total, diverged = time.perf_counter(), []
    for config in configs:
        path = paths[config.name]
        if path.exists() and not args.force:
            try:
                if load_result(path)["config"] == config:
                    print(f"{config.name}: kept {path}")
                    continue
            except ValueError:
                pass
            print(f"{config.name}: {path} is stale or unreadable; rerunning")
        try:
            result = run_experiment(config, progress=True)
        except TrainingDiverged as exc:
            print(f"error: {exc}", file=sys.stderr)
            diverged.append(config.name)
            continue
        save_result(result, out)
        print(f"{config.name}: {result['wall_seconds']:.1f} s -> {path}")
    done = [load_result(paths[c.name]) for c in configs if paths[c.name].exists() and c.name not in diverged]
    if done and not args.only:
        _write_json(out / "summary.json", summarize(done))
        print(f"summary of {len(done)} experiments -> {out / 'summary.json'}")
    print(f"total wall time {time.perf_counter() - total:.1f} s")
    if diverged:
        _fail(f"training diverged in {diverged}; no result written for them", status=1)


if __name__ == "__main__":
    main()
