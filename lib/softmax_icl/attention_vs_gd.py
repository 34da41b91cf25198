"""A trained softmax self-attention layer against one step of gradient descent on softmax regression.

Derived in :doc:`/book/attention_vs_gd`. The protocol is ours (the code of Li, Song, Xia, Yu, Zhou,
2304.13276, is not public). A *task* draws ``x* ∈ R^d`` and a document ``Ā = [A; a_q] ∈ R^{(n+1)×d}``
(rows ``a_1 … a_n`` are the context, ``a_q`` the query)::

    context labels   b = softmax(A x*)                          (the paper's b = f(Ax*), n tokens)
    query label      y = softmax(Ā x*)_{n+1}                    (the weight of the query appended as row n+1)

Both are reported on the *relative-weight* scale, ``n b`` and ``(n+1) y`` (1 = uniform weight), so that
labels are O(1) at every ``n``. The two in-context learners::

    GD model         x₁ = −η ∇L(0),  L(x) = ½‖softmax(Ax) − b‖²;  ŷ_GD = (n+1) softmax(Ā x₁)_{n+1}
    attention layer  E = [[a_i, n b_i]; [a_q, 0]],  H = E + softmax_row(E W Eᵀ) E W_V;  ŷ_SA = H_{q, d+1}

``η`` is tuned on training tasks; ``(W, W_V)`` are trained with Adam on fresh tasks. Metrics on
held-out tasks: losses ``½(ŷ − (n+1)y)²``, Preds Diff (root mean square of ``ŷ_GD − ŷ_SA``), Model Diff
and Model Cos (mean distance and cosine of the sensitivities ``∂ŷ/∂a_q``).

Command line: ``python -m softmax_icl.attention_vs_gd --config book/data/attention_vs_gd/config.json``
runs every experiment of the configuration and writes one small JSON result file per experiment.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import pathlib
import platform
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import __version__
from ._validate import as_array, as_nonnegative_float, as_positive_int

jax.config.update("jax_enable_x64", True)

__all__ = [
    "Config",
    "Tasks",
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
    "init_params",
    "sensitivities",
    "evaluate",
    "train",
    "run_experiment",
    "load_config",
    "save_result",
    "load_result",
    "main",
    "METRICS",
]

#: The metrics recorded at every evaluation, in this order.
METRICS = ("loss_sa", "loss_gd", "preds_diff", "model_diff", "model_cos")


# ---- configuration ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """One experiment: sizes, task distribution, optimizer, evaluation and seeds.

    Derived in :doc:`/book/attention_vs_gd`.
    """

    name: str = "n25_d20"
    n: int = 25  # context tokens
    d: int = 20  # token dimension
    task_scale: float = (
        1.0  # x* ~ N(0, task_scale² I_d), a_i ~ N(0, I_d/d): logits ~ N(0, ≈ task_scale²)
    )
    noise: float = 0.0  # std of Gaussian noise added to the relative context labels n b_i
    centered: bool = True  # tokens carry n b_i − 1 and the layer predicts the deviation from 1
    steps: int = 2000  # Adam steps
    batch: int = 256  # fresh tasks per step
    lr: float = 1e-2  # peak learning rate (cosine decay to lr_final)
    lr_final: float = 1e-3
    init_scale: float = 0.01  # entries of W, W_V ~ N(0, init_scale²)
    eval_every: int = 50
    eval_tasks: int = 1000
    tune_tasks: int = 4096  # training tasks on which η is tuned
    seeds: tuple[int, ...] = field(default_factory=lambda: tuple(range(10)))

    def __post_init__(self) -> None:
        for name in ("n", "d", "steps", "batch", "eval_every", "eval_tasks", "tune_tasks"):
            as_positive_int(getattr(self, name), name)
        for name in ("task_scale", "noise", "lr", "lr_final", "init_scale"):
            as_nonnegative_float(getattr(self, name), name)
        if not self.seeds or any(
            isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.seeds
        ):
            raise ValueError(
                f"seeds must be a non-empty sequence of non-negative ints, got {self.seeds!r}"
            )
        object.__setattr__(self, "seeds", tuple(self.seeds))

    def to_dict(self) -> dict[str, Any]:
        """The configuration as a JSON-ready dictionary. Derived in :doc:`/book/attention_vs_gd`."""
        out = dataclasses.asdict(self)
        out["seeds"] = list(self.seeds)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """Inverse of :meth:`to_dict`; unknown keys raise. Derived in :doc:`/book/attention_vs_gd`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown configuration keys: {sorted(unknown)}")
        return cls(**{**data, "seeds": tuple(data.get("seeds", tuple(range(10))))})


# ---- tasks -------------------------------------------------------------------------------------------


class Tasks(NamedTuple):
    """A batch of tasks: ``A`` (T, n+1, d) with the query as last row, relative context labels ``b = n·softmax(A_ctx x*)``
    (T, n), relative query labels ``y = (n+1)·softmax(Ā x*)_{n+1}`` (T,), and ``x_star`` (T, d).

    Derived in :doc:`/book/attention_vs_gd`.
    """

    A: jax.Array
    b: jax.Array
    y: jax.Array
    x_star: jax.Array


def sample_tasks(
    key: jax.Array, count: int, n: int, d: int, task_scale: float = 1.0, noise: float = 0.0
) -> Tasks:
    """``count`` tasks: ``a_i ~ N(0, I/d)``, ``x* ~ N(0, task_scale² I)``, ``b = n softmax(A x*)`` (+ noise),
    ``y = (n+1) softmax(Ā x*)_{n+1}``. Derived in :doc:`/book/attention_vs_gd`."""
    k_a, k_x, k_e = jax.random.split(key, 3)
    A = jax.random.normal(k_a, (count, n + 1, d), jnp.float64) / jnp.sqrt(d)
    x_star = task_scale * jax.random.normal(k_x, (count, d), jnp.float64)
    z = jnp.einsum("tkd,td->tk", A, x_star)
    b = n * jax.nn.softmax(z[:, :n], axis=-1)
    b = b + noise * jax.random.normal(k_e, b.shape, jnp.float64)
    y = (n + 1) * jax.nn.softmax(z, axis=-1)[:, n]
    return Tasks(A, b, y, x_star)


def document(A_ctx: np.ndarray, a_q: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate one task given as context ``A_ctx`` (n×d), query ``a_q`` (d,), relative labels ``b`` (n,);
    return ``(Ā, b)`` with ``Ā = [A_ctx; a_q]`` ((n+1)×d). Derived in :doc:`/book/attention_vs_gd`."""
    A_ctx = as_array(A_ctx, "A_ctx", ndim=2)
    n, d = A_ctx.shape
    a_q = as_array(a_q, "a_q", ndim=1, shape=(d,))
    b = as_array(b, "b", ndim=1, shape=(n,))
    return np.vstack([A_ctx, a_q]), b


# ---- the GD model ---------------------------------------------------------------------------------------


@jax.jit
def gd_direction(A: jax.Array, b: jax.Array) -> jax.Array:
    """``−∇L(0) = (1/n) A_ctxᵀ(b/n − mean(b/n))`` for ``L(x) = ½‖softmax(A_ctx x) − b/n‖²``; batched over leading axes.

    Derived in :doc:`/book/attention_vs_gd`.
    """
    n = b.shape[-1]
    w = b / n
    return (
        jnp.einsum("...k,...kd->...d", w - jnp.mean(w, axis=-1, keepdims=True), A[..., :n, :]) / n
    )


@jax.jit
def gd_weights(eta: float, A: jax.Array, b: jax.Array) -> jax.Array:
    """``x₁ = x₀ − η∇L(x₀)`` from ``x₀ = 0``, i.e. ``η · gd_direction(A, b)``. Derived in :doc:`/book/attention_vs_gd`."""
    return eta * gd_direction(A, b)


@jax.jit
def gd_prediction(eta: float, A: jax.Array, b: jax.Array) -> jax.Array:
    """``ŷ_GD = (n+1) softmax(Ā x₁)_{n+1}``: the query's relative weight under one GD step. Derived in :doc:`/book/attention_vs_gd`."""
    n = b.shape[-1]
    u = jnp.einsum("...kd,...d->...k", A, gd_weights(eta, A, b))
    return (n + 1) * jax.nn.softmax(u, axis=-1)[..., n]


@jax.jit
def gd_sensitivity(eta: float, A: jax.Array, b: jax.Array) -> jax.Array:
    """``∂ŷ_GD/∂a_q = (n+1) σ_q (1 − σ_q) x₁`` with ``σ_q = softmax(Ā x₁)_{n+1}`` (``x₁`` does not depend on ``a_q``).

    Derived in :doc:`/book/attention_vs_gd`.
    """
    n = b.shape[-1]
    x1 = gd_weights(eta, A, b)
    s = jax.nn.softmax(jnp.einsum("...kd,...d->...k", A, x1), axis=-1)[..., n]
    return ((n + 1) * s * (1 - s))[..., None] * x1


@jax.jit
def linearized_gd_prediction(eta: float, A: jax.Array, b: jax.Array) -> jax.Array:
    """``1 + η (n/(n+1)) ⟨a_q − ā, −∇L(0)⟩``: ``ŷ_GD`` to first order in ``η`` (``ā`` the mean context token).

    Derived in :doc:`/book/attention_vs_gd`.
    """
    n = b.shape[-1]
    a_bar = jnp.mean(A[..., :n, :], axis=-2)
    return 1.0 + eta * n / (n + 1) * jnp.sum((A[..., n, :] - a_bar) * gd_direction(A, b), axis=-1)


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
    lo, hi = as_nonnegative_float(lo, "lo"), as_nonnegative_float(hi, "hi")
    if not 0 < lo < hi:
        raise ValueError(f"need 0 < lo < hi, got lo={lo}, hi={hi}")
    if linearized:
        s = linearized_gd_prediction(1.0, tasks.A, tasks.b) - 1.0
        return float(jnp.sum(s * (tasks.y - 1.0)) / jnp.sum(s * s))
    n = tasks.b.shape[-1]
    u = jnp.einsum("tkd,td->tk", tasks.A, gd_direction(tasks.A, tasks.b))
    losses = jax.jit(
        jax.vmap(
            lambda e: (
                0.5 * jnp.mean(((n + 1) * jax.nn.softmax(e * u, axis=-1)[:, n] - tasks.y) ** 2)
            )
        )
    )
    log_lo, log_hi = np.log(lo), np.log(hi)
    best = lo
    for _ in range(rounds + 1):
        etas = np.exp(np.linspace(log_lo, log_hi, grid))
        i = int(np.argmin(np.asarray(losses(jnp.asarray(etas)))))
        if i in (0, grid - 1) and _ == 0:
            raise ValueError(f"the best step size is at the edge of the grid [{lo:g}, {hi:g}]")
        best = float(etas[i])
        step = (log_hi - log_lo) / (grid - 1)
        log_lo, log_hi = np.log(best) - 2 * step, np.log(best) + 2 * step
    return best


# ---- the softmax self-attention layer -----------------------------------------------------------------------

Params = dict[str, jax.Array]


@functools.partial(jax.jit, static_argnames="centered")
def tokens(A: jax.Array, b: jax.Array, centered: bool = True) -> jax.Array:
    """``E = [[a_i, ℓ_i]; [a_q, 0]]`` ((…, n+1, d+1)) with ``ℓ_i = b_i − 1`` (``centered``, the deviation from the
    uniform weight) or ``ℓ_i = b_i``: context tokens carry their relative label, the query 0.

    Derived in :doc:`/book/attention_vs_gd`.
    """
    labels = jnp.concatenate([b - 1.0 if centered else b, jnp.zeros_like(b[..., :1])], axis=-1)
    return jnp.concatenate([A, labels[..., None]], axis=-1)


@functools.partial(jax.jit, static_argnames="centered")
def attention_prediction(
    params: Params, A: jax.Array, b: jax.Array, centered: bool = True
) -> jax.Array:
    """``ŷ_SA = c + [E + softmax_row(E W Eᵀ) E W_V]_{q, d+1} = c + ⟨softmax(E Wᵀ e_q), E W_V[:, d+1]⟩`` (the query
    row only) with ``c = 1`` for centered labels (the layer predicts the deviation from uniform), else 0.

    Derived in :doc:`/book/attention_vs_gd`.
    """
    E = tokens(A, b, centered)
    e_q = E[..., -1, :]
    scores = jnp.einsum("...i,ij,...kj->...k", e_q, params["W"], E)  # row q of E W Eᵀ
    weights = jax.nn.softmax(scores, axis=-1)
    values = E @ params["W_V"][:, -1]
    return (1.0 if centered else 0.0) + e_q[..., -1] + jnp.sum(weights * values, axis=-1)


def init_params(key: jax.Array, d: int, init_scale: float = 0.01) -> Params:
    """``W, W_V ∈ R^{(d+1)×(d+1)}`` with i.i.d. ``N(0, init_scale²)`` entries. Derived in :doc:`/book/attention_vs_gd`."""
    k_w, k_v = jax.random.split(key)
    return {
        "W": init_scale * jax.random.normal(k_w, (d + 1, d + 1), jnp.float64),
        "W_V": init_scale * jax.random.normal(k_v, (d + 1, d + 1), jnp.float64),
    }


# ---- metrics ------------------------------------------------------------------------------------------------


def sensitivities(
    predict: Callable[[jax.Array, jax.Array], jax.Array], A: jax.Array, b: jax.Array
) -> jax.Array:
    """``∂ŷ/∂a_q`` per task (T, d) by JAX autodiff of ``predict(A, b)`` (one task at a time, vmapped).

    Derived in :doc:`/book/attention_vs_gd`.
    """

    def one(A1: jax.Array, b1: jax.Array) -> jax.Array:
        return jax.grad(lambda a_q: predict(A1.at[-1].set(a_q), b1))(A1[-1])

    return jax.vmap(one)(A, b)


@functools.partial(jax.jit, static_argnames="centered")
def _evaluate(
    params: Params, eta: jax.Array, A: jax.Array, b: jax.Array, y: jax.Array, centered: bool
) -> jax.Array:
    p_sa = attention_prediction(params, A, b, centered)
    p_gd = gd_prediction(eta, A, b)
    g_sa = sensitivities(lambda A1, b1: attention_prediction(params, A1, b1, centered), A, b)
    g_gd = sensitivities(lambda A1, b1: gd_prediction(eta, A1, b1), A, b)
    norms = jnp.linalg.norm(g_sa, axis=-1) * jnp.linalg.norm(g_gd, axis=-1)
    cos = jnp.sum(g_sa * g_gd, axis=-1) / jnp.maximum(norms, 1e-300)
    return jnp.stack(
        [
            0.5 * jnp.mean((p_sa - y) ** 2),
            0.5 * jnp.mean((p_gd - y) ** 2),
            jnp.sqrt(jnp.mean((p_gd - p_sa) ** 2)),
            jnp.mean(jnp.linalg.norm(g_gd - g_sa, axis=-1)),
            jnp.mean(cos),
        ]
    )


def evaluate(params: Params, eta: float, tasks: Tasks, centered: bool = True) -> dict[str, float]:
    """The metrics :data:`METRICS` of the layer ``params`` and the GD model ``η`` on ``tasks``.

    Derived in :doc:`/book/attention_vs_gd`.
    """
    values = np.asarray(
        _evaluate(params, jnp.float64(eta), tasks.A, tasks.b, tasks.y, bool(centered))
    )
    return dict(zip(METRICS, (float(v) for v in values), strict=True))


# ---- training ---------------------------------------------------------------------------------------------


def _keys(seed: int) -> dict[str, jax.Array]:
    k_init, k_train, k_tune, k_eval = jax.random.split(jax.random.PRNGKey(seed), 4)
    return {"init": k_init, "train": k_train, "tune": k_tune, "eval": k_eval}


@functools.lru_cache(maxsize=16)
def _trainer(
    n: int,
    d: int,
    batch: int,
    task_scale: float,
    noise: float,
    steps: int,
    lr: float,
    lr_final: float,
    centered: bool,
) -> tuple[optax.GradientTransformation, Callable]:
    """Adam with a cosine-decayed learning rate and a jitted ``lax.scan`` over a chunk of steps (cached per shape)."""
    schedule = optax.cosine_decay_schedule(lr, steps, alpha=lr_final / lr if lr > 0 else 0.0)
    optimizer = optax.adam(schedule)

    def loss(p: Params, key: jax.Array) -> jax.Array:
        tasks = sample_tasks(key, batch, n, d, task_scale, noise)
        return 0.5 * jnp.mean((attention_prediction(p, tasks.A, tasks.b, centered) - tasks.y) ** 2)

    def one(carry: tuple[Params, Any], key: jax.Array) -> tuple[tuple[Params, Any], None]:
        p, s = carry
        updates, s = optimizer.update(jax.grad(loss)(p, key), s, p)
        return (optax.apply_updates(p, updates), s), None

    @jax.jit
    def chunk(p: Params, s: Any, keys: jax.Array) -> tuple[Params, Any]:
        return jax.lax.scan(one, (p, s), keys)[0]

    return optimizer, chunk


def train(config: Config, seed: int, progress: Any = None) -> dict[str, Any]:
    """Tune η and train one layer for one seed; evaluate every ``eval_every`` steps on held-out tasks.

    Returns the metric curves (``steps`` and one list per metric), η, and the reference losses of the
    uniform predictor (η = 0) and of linearized GD. Derived in :doc:`/book/attention_vs_gd`.
    """
    c = config
    keys = _keys(seed)
    tune = sample_tasks(keys["tune"], c.tune_tasks, c.n, c.d, c.task_scale, c.noise)
    held_out = sample_tasks(keys["eval"], c.eval_tasks, c.n, c.d, c.task_scale, c.noise)
    eta = tune_step_size(tune)
    eta_lin = tune_step_size(tune, linearized=True)
    y = held_out.y
    ref = {
        "eta": eta,
        "eta_linearized": eta_lin,
        "loss_uniform": float(0.5 * jnp.mean((1.0 - y) ** 2)),
        "loss_linearized_gd": float(
            0.5 * jnp.mean((linearized_gd_prediction(eta_lin, held_out.A, held_out.b) - y) ** 2)
        ),
    }

    optimizer, chunk = _trainer(
        c.n, c.d, c.batch, c.task_scale, c.noise, c.steps, c.lr, c.lr_final, c.centered
    )
    params = init_params(keys["init"], c.d, c.init_scale)
    state = optimizer.init(params)

    curves: dict[str, list[float]] = {"steps": [], **{m: [] for m in METRICS}}

    def record(t: int) -> None:
        curves["steps"].append(t)
        for name, value in evaluate(params, eta, held_out, c.centered).items():
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
    return {"seed": seed, **ref, "curves": curves, "params": params}


def run_experiment(
    config: Config, progress: bool = False, keep_params: bool = False
) -> dict[str, Any]:
    """All seeds of one experiment: the config, the library version, per-seed curves and the wall time.

    Derived in :doc:`/book/attention_vs_gd`.
    """
    start = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=config.steps * len(config.seeds), desc=config.name, unit="step")
    runs = []
    for seed in config.seeds:
        run = train(config, seed, bar)
        if not keep_params:
            run.pop("params")
        runs.append(run)
    if bar is not None:
        bar.close()
    return {
        "config": config.to_dict(),
        "version": __version__,
        "jax": jax.__version__,
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} cores",
        "wall_seconds": time.perf_counter() - start,
        "runs": runs,
    }


# ---- files -----------------------------------------------------------------------------------------------


def _round(value: Any, digits: int = 7) -> Any:
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: _round(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_round(v, digits) for v in value]
    return value


def load_config(path: str | pathlib.Path) -> list[Config]:
    """The experiments of a configuration file ``{"experiments": [{...}, ...]}``. Derived in :doc:`/book/attention_vs_gd`."""
    data = json.loads(pathlib.Path(path).read_text())
    if "experiments" not in data:
        raise ValueError(f"{path}: expected a JSON object with a key 'experiments'")
    return [Config.from_dict(e) for e in data["experiments"]]


def save_result(result: dict[str, Any], directory: str | pathlib.Path) -> pathlib.Path:
    """Write ``<directory>/<name>.json`` (metrics rounded to 7 significant digits, no weights). Derived in :doc:`/book/attention_vs_gd`."""
    result = {
        **result,
        "runs": [{k: v for k, v in r.items() if k != "params"} for r in result["runs"]],
    }
    path = pathlib.Path(directory) / f"{result['config']['name']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_round(result), separators=(",", ":")) + "\n")
    return path


def load_result(path: str | pathlib.Path) -> dict[str, Any]:
    """Read a result file written by :func:`save_result`; curves come back as arrays (seeds × evaluations).

    Derived in :doc:`/book/attention_vs_gd`.
    """
    data = json.loads(pathlib.Path(path).read_text())
    data["config"] = Config.from_dict(data["config"])
    data["curves"] = {
        k: np.array([r["curves"][k] for r in data["runs"]], dtype=np.float64)
        for k in ("steps", *METRICS)
    }
    return data


def main(argv: Iterable[str] | None = None) -> None:
    """Command line: run the experiments of ``--config`` (or those named by ``--only``) and write their results.

    Derived in :doc:`/book/attention_vs_gd`.
    """
    parser = argparse.ArgumentParser(
        prog="python -m softmax_icl.attention_vs_gd", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--config", required=True, help="JSON file {'experiments': [...]}")
    parser.add_argument(
        "--out", default=None, help="output directory (default: the config's directory)"
    )
    parser.add_argument("--only", nargs="*", default=None, help="names of the experiments to run")
    args = parser.parse_args(None if argv is None else list(argv))
    out = pathlib.Path(args.out) if args.out else pathlib.Path(args.config).parent
    total = time.perf_counter()
    for config in load_config(args.config):
        if args.only and config.name not in args.only:
            continue
        result = run_experiment(config, progress=True)
        path = save_result(result, out)
        print(f"{config.name}: {result['wall_seconds']:.1f} s -> {path}")
    print(f"total wall time {time.perf_counter() - total:.1f} s")


if __name__ == "__main__":
    main()
