"""Training multi-head transformers on in-context sparse regression; head masking, pruning, probes.

Derived in :doc:`/book/multihead_experiment`. The model is :mod:`softmax_icl.transformer` (GPT-2
style: softmax attention, GELU MLP, LayerNorm, residual stream; or the linear-attention-only variant
of the theory); the tasks are those of :mod:`softmax_icl.sparse_regression` (``w*`` ``s``-sparse
with N(0, 1) non-zeros, ``x ~ N(0, I_d)``, ``y = ⟨w*, x⟩ + ξ``). One training step draws fresh
prompts, each with a context length from ``n_values`` (see :func:`sample_prompts`), and minimizes
the mean squared error of the prediction of the query's (noisy) label. Everything is float32 and
deterministic for a seed.

Command line (writes ``<name>.npz`` and ``<name>.json`` next to the config file)::

    python -m softmax_icl.multihead_training --config book/data/multihead/sweep.json \\
        [--only NAME ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import os
import pathlib
import platform
import re
import tempfile
import time
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import __version__
from . import sparse_regression as sreg
from . import transformer as tf
from ._validate import as_array, as_bool, as_nonnegative_float, as_nonnegative_int, as_positive_int, check_size

__all__ = [
    "Config",
    "CheckpointError",
    "TrainingDiverged",
    "load_configs",
    "sample_prompts",
    "init_model",
    "train",
    "recreate_command",
    "finished",
    "head_dimension",
    "loss_scale",
    "save_checkpoint",
    "load_checkpoint",
    "eval_tasks",
    "predict",
    "excess_risk_per_task",
    "evaluate",
    "query_states",
    "head_masks",
    "head_importance",
    "pruning_mask",
    "fit_probe",
    "probe_risks",
    "risk_by_steps",
    "baseline_risks",
    "summary_tasks",
    "summarize",
    "model_groups",
    "write_summary",
    "steps_limit",
    "preprocessing_probe",
    "main",
]

DTYPE = jnp.float32
MODULE = "softmax_icl.multihead_training"
MAX_PARAMETERS = 10**8
MAX_PROMPT_ELEMENTS = 2**28
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")
_POSITIVE_INTS = ("d", "s", "n_layers", "n_heads", "width", "mlp_width", "steps", "batch", "chunk", "eval_n",
                  "eval_tasks", "queries")


# ---- configuration ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """One training run (all fields JSON-serializable).
    Derived in :doc:`/book/multihead_experiment`."""

    name: str
    d: int = 10  # input dimension
    s: int = 2  # sparsity of w*
    sigma: float = 0.1  # label noise standard deviation
    n_values: tuple[int, ...] = (2, 4, 5, 10, 20)  # context lengths, each dividing the largest
    queries: int = 1  # query tokens per training prompt, each attending to the context only
    relative_loss: bool = False  # each context length's squared error divided by tuned ridge's risk there
    n_layers: int = 3
    n_heads: int = 4
    width: int = 64
    d_head: int = 0  # dimension of each head's queries, keys and values; 0: width // n_heads
    mlp_width: int = 128
    attention: str = "softmax"  # 'softmax' (GPT-2 style) or 'linear'
    use_mlp: bool = True
    use_layer_norm: bool = True
    steps: int = 3000
    batch: int = 64  # prompts per step
    lr: float = 1e-3  # peak learning rate of Adam (warm-up, then cosine decay)
    warmup: int = 200
    clip: float = 1.0  # global gradient-norm clipping
    init_std: float = 0.02  # standard deviation of the initial weights
    chunk: int = 50  # steps per compiled scan (and per progress-bar update)
    seed: int = 0
    eval_n: int = 20  # context length of the recorded evaluation metric
    eval_tasks: int = 2000
    eval_seed: int = 12345
    init_from: str = ""  # an earlier run of the same file whose final parameters start this one

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _SAFE_NAME.fullmatch(self.name):
            raise ValueError(
                f"name must be a safe file name (letters, digits, '.', '_', '-', at most 100, not "
                f"starting with '.'), got {self.name!r}"
            )
        if not isinstance(self.init_from, str) or (self.init_from and not _SAFE_NAME.fullmatch(self.init_from)):
            raise ValueError(f"init_from must be '' or the name of a run, got {self.init_from!r}")
        if self.init_from == self.name:
            raise ValueError(f"run {self.name!r} cannot start from itself (init_from)")
        for k in _POSITIVE_INTS:
            as_positive_int(getattr(self, k), k)
        for k in ("warmup", "seed", "eval_seed", "d_head"):
            as_nonnegative_int(getattr(self, k), k)
            if getattr(self, k) >= 2**32:
                raise ValueError(f"{k} must be < 2**32, got {getattr(self, k)}")
        for k in ("sigma", "lr", "clip", "init_std"):
            as_nonnegative_float(getattr(self, k), k)
        for k in ("lr", "clip"):
            if getattr(self, k) == 0:
                raise ValueError(f"{k} must be > 0, got {getattr(self, k)!r}")
        for k in ("use_mlp", "use_layer_norm", "relative_loss"):
            as_bool(getattr(self, k), k)
        if self.s > self.d:
            raise ValueError(f"s must be <= d, got s={self.s}, d={self.d}")
        if not isinstance(self.attention, str) or self.attention not in ("softmax", "linear"):
            raise ValueError(f"attention must be 'softmax' or 'linear', got {self.attention!r}")
        if not isinstance(self.n_values, list | tuple) or not self.n_values:
            raise TypeError(f"n_values must be a non-empty list of positive integers, got {self.n_values!r}")
        n_values = tuple(as_positive_int(n, "n_values entry") for n in self.n_values)
        if any(max(n_values) % n for n in n_values):
            raise ValueError(f"every n in n_values must divide max(n_values), got {n_values}")
        if self.steps % self.chunk:
            raise ValueError(f"steps ({self.steps}) must be a multiple of chunk ({self.chunk})")
        if not self.d_head and self.width % self.n_heads:
            raise ValueError(f"width ({self.width}) must be divisible by n_heads ({self.n_heads}) unless d_head "
                             "is given")
        object.__setattr__(self, "n_values", n_values)
        check_size(_parameter_count(self), MAX_PARAMETERS, "the model's parameters")
        check_size(self.width * self.mlp_width, MAX_PARAMETERS, "an MLP of this width (even if unused)")
        check_size(self.batch * (max(n_values) + self.queries) * (self.d + 1), MAX_PROMPT_ELEMENTS,
                   "a batch of prompts")
        check_size(self.eval_tasks * (self.eval_n + 1) * (self.d + 1), MAX_PROMPT_ELEMENTS,
                   "the evaluation prompts")
        check_size(self.steps * 2, MAX_PROMPT_ELEMENTS, "the step keys")

    def to_dict(self) -> dict[str, Any]:
        """The configuration as a JSON-ready dictionary.
        Derived in :doc:`/book/multihead_experiment`."""
        out = dataclasses.asdict(self)
        out["n_values"] = list(self.n_values)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """Inverse of :meth:`to_dict`; unknown keys raise.
        Derived in :doc:`/book/multihead_experiment`."""
        if not isinstance(data, dict):
            raise TypeError(f"a configuration must be a JSON object, got {type(data).__name__}")
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown configuration keys: {sorted(map(str, unknown))}")
        if "name" not in data:
            raise ValueError("name is missing")
        return cls(**data)


def load_configs(path: str | os.PathLike[str]) -> list[Config]:
    """The runs of a file ``{"defaults": {...}, "runs": [{"name": ..., ...}, ...]}`` (each run
    overrides the defaults); every problem raises ``ValueError`` naming the file, the run and the
    field. Derived in :doc:`/book/multihead_experiment`."""
    data = _read_json(pathlib.Path(path), "configuration")
    if not isinstance(data, dict) or "runs" not in data:
        raise ValueError(f"{path}: expected a JSON object with a key 'runs'")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise ValueError(f"{path}: 'defaults' must be a JSON object, got {type(defaults).__name__}")
    runs = data["runs"]
    if not isinstance(runs, list) or not runs:
        raise ValueError(f"{path}: 'runs' must be a non-empty list of JSON objects")
    configs = []
    for i, run in enumerate(runs):
        if not isinstance(run, dict):
            raise ValueError(f"{path}: runs[{i}] must be a JSON object, got {type(run).__name__}")
        try:
            configs.append(Config.from_dict({**defaults, **run}))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: runs[{i}] ({run.get('name', 'no name')!r}): {exc}") from exc
    names = [c.name for c in configs]
    duplicate = sorted({n for n in names if names.count(n) > 1})
    if duplicate:
        raise ValueError(f"{path}: run names must be unique, repeated: {duplicate}")
    for i, c in enumerate(configs):
        if c.init_from and c.init_from not in names[:i]:
            raise ValueError(f"{path}: runs[{i}] ({c.name!r}): init_from must name an earlier run of the file, "
                             f"got {c.init_from!r}")
        if c.init_from:
            parent = configs[names.index(c.init_from)]
            if _expected_shapes(parent) != _expected_shapes(c) or parent.attention != c.attention:
                raise ValueError(f"{path}: runs[{i}] ({c.name!r}): init_from {c.init_from!r} has another "
                                 "architecture")
    return configs


def _read_json(path: pathlib.Path, what: str) -> Any:
    """Parse a JSON file; a missing, unreadable or malformed file raises ``ValueError`` naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the {what} file ({type(exc).__name__}: {exc})") from exc
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{path}: the {what} file is not valid JSON ({exc})") from exc


def _reject_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not a number", name, 0)


def head_dimension(config: Config) -> int:
    """Dimension of each head's queries, keys and values: ``d_head``, or ``width // n_heads`` if 0.
    Derived in :doc:`/book/multihead_experiment`."""
    return config.d_head or max(1, config.width // config.n_heads)


def _parameter_count(config: Config) -> int:
    """The number of parameters of the configured model, computed without building it."""
    D, h, L, F = config.width, config.n_heads, config.n_layers, config.mlp_width
    k = head_dimension(config)
    per_layer = 4 * h * D * k + (2 * D * F + F + D if config.use_mlp else 0)
    per_layer += (2 * D if config.use_layer_norm else 0) * (2 if config.use_mlp else 1)
    return (config.d + 1) * D + D + L * per_layer + D + 1 + (2 * D if config.use_layer_norm else 0)


# ---- data and model -----------------------------------------------------------------------------


def sample_prompts(
    key: jax.Array, batch: int, n_values: Sequence[int], d: int, s: int, sigma: float, queries: int = 1
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``batch`` prompts of fresh tasks, each with ``N = max(n_values)`` context slots holding
    ``n`` distinct examples (``n`` uniform over ``n_values``, each dividing ``N``) repeated ``N/n``
    times, then ``queries`` query tokens; returns ``E`` (batch, N+queries, d+1), the queries'
    noisy labels ``y_q`` (batch,) for one query or (batch, queries), and ``n`` (batch,).
    Without positions, attention sees only the empirical distribution of the context tokens, so a
    context repeated ``N/n`` times is the same prompt as its ``n`` distinct tokens (checked in the
    chapter): one compiled shape trains every context length. Task distribution as in
    :func:`softmax_icl.sparse_regression.sample_tasks`.
    Derived in :doc:`/book/multihead_experiment`."""
    batch = as_positive_int(batch, "batch")
    d = as_positive_int(d, "d")
    s = as_positive_int(s, "s")
    if s > d:
        raise ValueError(f"s must be <= d, got s={s}, d={d}")
    sigma = as_nonnegative_float(sigma, "sigma")
    if isinstance(n_values, str | bytes) or not isinstance(n_values, Sequence) or not n_values:
        raise TypeError(f"n_values must be a non-empty sequence of positive integers, got {n_values!r}")
    n_values = tuple(as_positive_int(n, "n_values entry") for n in n_values)
    if any(max(n_values) % n for n in n_values):
        raise ValueError(f"every n in n_values must divide max(n_values), got {n_values}")
    queries = as_positive_int(queries, "queries")
    check_size(batch * (max(n_values) + queries) * (d + 1), MAX_PROMPT_ELEMENTS, "the prompts")
    tf.check_key(key)
    N = max(n_values)
    k_n, k_supp, k_val, k_x, k_noise = jax.random.split(key, 5)
    n = jnp.asarray(n_values)[jax.random.randint(k_n, (batch,), 0, len(n_values))]
    support = jnp.argsort(jax.random.uniform(k_supp, (batch, d)), axis=1)[:, :s]
    values = jax.random.normal(k_val, (batch, s), DTYPE)
    w = jnp.zeros((batch, d), DTYPE).at[jnp.arange(batch)[:, None], support].set(values)
    X = jax.random.normal(k_x, (batch, N + queries, d), DTYPE)
    y = jnp.einsum("bnd,bd->bn", X, w) + sigma * jax.random.normal(k_noise, (batch, N + queries), DTYPE)
    idx = (jnp.arange(N)[None, :] * n[:, None]) // N  # slot j holds example ⌊j n / N⌋
    Xc = jnp.take_along_axis(X[:, :N], idx[:, :, None], axis=1)
    yc = jnp.take_along_axis(y[:, :N], idx, axis=1)
    if queries == 1:
        return tf.make_prompt(Xc, yc, X[:, N]), y[:, N], n
    return tf.make_prompt(Xc, yc, X[:, N:]), y[:, N:], n


def init_model(config: Config, key: jax.Array) -> tf.Params:
    """float32 parameters of the configured architecture (``transformer.init_params``).
    Derived in :doc:`/book/multihead_experiment`."""
    if not isinstance(config, Config):
        raise TypeError(f"config must be a Config, got {type(config).__name__}")
    return tf.init_params(
        key,
        config.d + 1,
        config.width,
        config.n_layers,
        config.n_heads,
        d_head=head_dimension(config),
        mlp_width=config.mlp_width,
        use_mlp=config.use_mlp,
        use_layer_norm=config.use_layer_norm,
        std=config.init_std,
        dtype=DTYPE,
    )


def _schedule(config: Config) -> optax.Schedule:
    if config.steps < 2:
        return optax.constant_schedule(config.lr)
    warmup = min(config.warmup, config.steps - 1)
    return optax.warmup_cosine_decay_schedule(
        0.0, config.lr, max(warmup, 1), config.steps, config.lr * 0.05
    )


def _optimizer(config: Config) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(config.clip), optax.adam(_schedule(config)))


def _loss(params: tf.Params, key: jax.Array, config: Config, scale: jax.Array) -> jax.Array:
    """Mean squared error over prompts and queries; prompt ``b`` divided by ``scale[n_b]``."""
    E, y, n = sample_prompts(key, config.batch, config.n_values, config.d, config.s, config.sigma, config.queries)
    pred = tf.predict(params, E, attention=config.attention, queries=config.queries)
    err = (pred - y) ** 2
    per_prompt = err if config.queries == 1 else err.mean(axis=-1)
    return jnp.mean(per_prompt / scale[n])


def loss_scale(config: Config) -> np.ndarray:
    """Divisor of the squared error of a prompt with ``n`` examples, indexed by ``n``: 1, or with
    ``relative_loss`` the risk of tuned ridge at ``n`` plus σ² (the noise of the label), estimated on
    2000 tasks per ``n`` drawn from ``default_rng([config.seed, n, 7])``.
    Derived in :doc:`/book/multihead_experiment`."""
    scale = np.ones(max(config.n_values) + 1, np.float32)
    if config.relative_loss:
        for n in config.n_values:
            rng = np.random.default_rng([config.seed, n, 7])
            train = sreg.sample_tasks(2000, n, config.d, config.s, config.sigma, rng)
            tuning = sreg.tune_ridge(train)
            scale[n] = float(np.min(tuning.risk)) + config.sigma**2
    return scale


@partial(jax.jit, static_argnames=("config",))
def _chunk(params: tf.Params, opt_state: Any, keys: jax.Array, config: Config, scale: jax.Array):
    opt = _optimizer(config)

    def one(carry, key):
        p, s = carry
        loss, g = jax.value_and_grad(_loss)(p, key, config, scale)
        updates, s = opt.update(g, s, p)
        return (optax.apply_updates(p, updates), s), loss

    (params, opt_state), losses = jax.lax.scan(one, (params, opt_state), keys)
    return params, opt_state, losses


def train(config: Config, progress: Any = None, start: tf.Params | None = None) -> dict[str, Any]:
    """Train one model: Adam with warm-up and cosine decay, fresh tasks every step, from a random
    initialization or from the parameters ``start`` (a continuation: its tasks are a stream of
    their own); returns ``{"params", "losses" (mean per chunk), "wall_seconds",
    "steps_per_second", "final_loss"}``. Deterministic for ``config.seed``; a non-finite loss
    raises :class:`TrainingDiverged`. Derived in :doc:`/book/multihead_experiment`."""
    if not isinstance(config, Config):
        raise TypeError(f"config must be a Config, got {type(config).__name__}")
    key_init, key_data = jax.random.split(jax.random.PRNGKey(config.seed))
    if start is None:
        params = init_model(config, key_init)
    else:
        _check_flat(_flatten(start), config)
        params = _cast(start)
        key_data = jax.random.fold_in(key_data, 1)
    opt_state = _optimizer(config).init(params)
    scale = jnp.asarray(loss_scale(config))
    step_keys = jax.random.split(key_data, config.steps).reshape(-1, config.chunk, 2)
    losses: list[float] = []
    start = time.perf_counter()
    first_chunk_end = None
    for keys in step_keys:
        params, opt_state, chunk_losses = _chunk(params, opt_state, keys, config, scale)
        losses.append(float(jnp.mean(chunk_losses)))
        if not np.isfinite(losses[-1]):
            raise TrainingDiverged(
                f"run {config.name!r} diverged: the training loss is {losses[-1]} after "
                f"{len(losses) * config.chunk} steps (lr={config.lr}); lower lr or clip"
            )
        if first_chunk_end is None:
            first_chunk_end = time.perf_counter()  # includes compilation
        if progress is not None:
            progress.update(config.chunk)
            progress.set_postfix(loss=f"{losses[-1]:.3f}")
    wall = time.perf_counter() - start
    timed_steps = config.steps - config.chunk
    sps = (
        timed_steps / (time.perf_counter() - first_chunk_end)
        if timed_steps
        else config.chunk / wall
    )
    return {
        "params": jax.device_get(params),
        "losses": losses,
        "wall_seconds": wall,
        "steps_per_second": sps,
        "final_loss": float(np.mean(losses[-max(1, len(losses) // 10) :])),
    }


# ---- checkpoints --------------------------------------------------------------------------------


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt or inconsistent with its metadata.
    Derived in :doc:`/book/multihead_experiment`."""


class TrainingDiverged(RuntimeError):
    """The training loss became non-finite (NaN or inf): nothing is written.
    Derived in :doc:`/book/multihead_experiment`."""


def recreate_command(config_path: str | os.PathLike[str], name: str) -> str:
    """The shell command that (re)creates the checkpoint ``name``.
    Derived in :doc:`/book/multihead_experiment`."""
    return f"python -m {MODULE} --config {config_path} --only {name}"


def _flatten(tree: Any, prefix: str = "") -> dict[str, np.ndarray]:
    if isinstance(tree, dict):
        out: dict[str, np.ndarray] = {}
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}{k}/"))
        return out
    if isinstance(tree, list | tuple):
        out = {}
        for i, v in enumerate(tree):
            out.update(_flatten(v, f"{prefix}{i}/"))
        return out
    leaf = np.asarray(tree) if hasattr(tree, "dtype") else None
    if leaf is None or not np.issubdtype(leaf.dtype, np.floating):
        raise TypeError(f"params leaf {prefix[:-1]!r} must be a floating-point array, got {type(tree).__name__}")
    leaf = leaf.astype(np.float32)
    if not np.all(np.isfinite(leaf)):
        raise ValueError(f"params leaf {prefix[:-1]!r} has non-finite entries")
    return {prefix[:-1]: leaf}


def _unflatten(flat: dict[str, np.ndarray]) -> Any:
    root: dict[str, Any] = {}
    for path, value in flat.items():
        node = root
        parts = path.split("/")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value

    def fix(node: Any) -> Any:
        if not isinstance(node, dict):
            return jnp.asarray(node)
        if node and all(k.isdigit() for k in node):
            return [fix(node[str(i)]) for i in range(len(node))]
        return {k: fix(v) for k, v in node.items()}

    return fix(root)


def _expected_shapes(config: Config) -> dict[str, tuple[int, ...]]:
    """The flattened parameter shapes of :func:`init_model`, computed without building the model."""
    D, h, F = config.width, config.n_heads, config.mlp_width
    k = head_dimension(config)
    out: dict[str, tuple[int, ...]] = {"embed/W": (config.d + 1, D), "embed/b": (D,)}
    for l in range(config.n_layers):
        p = f"layers/{l}/"
        out.update({p + "attn/W_Q": (h, D, k), p + "attn/W_K": (h, D, k), p + "attn/W_V": (h, D, k),
                    p + "attn/W_O": (h, k, D)})
        if config.use_layer_norm:
            out.update({p + "ln1/scale": (D,), p + "ln1/bias": (D,)})
        if config.use_mlp:
            out.update({p + "mlp/W1": (D, F), p + "mlp/b1": (F,), p + "mlp/W2": (F, D), p + "mlp/b2": (D,)})
            if config.use_layer_norm:
                out.update({p + "ln2/scale": (D,), p + "ln2/bias": (D,)})
    if config.use_layer_norm:
        out.update({"ln_f/scale": (D,), "ln_f/bias": (D,)})
    out.update({"readout/w": (D,), "readout/b": ()})
    return out


def _check_flat(flat: dict[str, np.ndarray], config: Config) -> None:
    want = _expected_shapes(config)
    if set(flat) != set(want):
        missing, extra = sorted(set(want) - set(flat)), sorted(set(flat) - set(want))
        raise ValueError(f"parameters do not match the configuration (missing {missing[:3]}, extra {extra[:3]})")
    for key, shape in want.items():
        a = flat[key]
        if a.shape != shape:
            raise ValueError(f"parameter {key} has shape {a.shape}, the configuration needs {shape}")
        if a.dtype != np.float32:
            raise ValueError(f"parameter {key} has dtype {a.dtype}, checkpoints hold float32")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"parameter {key} has non-finite entries")


_RESERVED = ("config", "format", "sha256", "digest")


def _digest(raw: bytes, meta: dict[str, Any]) -> str:
    """SHA-256 over the parameters (the .npz bytes) and every metadata entry but the digest itself."""
    body = json.dumps({k: v for k, v in meta.items() if k != "digest"}, sort_keys=True, separators=(",", ":"),
                      allow_nan=False)
    return hashlib.sha256(raw + b"\0" + body.encode()).hexdigest()


def _atomic_write(path: pathlib.Path, data: bytes) -> None:
    """Write through a temporary file in the same directory and rename it: never a partial file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(
    directory: str | os.PathLike[str], config: Config, params: tf.Params, metadata: dict[str, Any]
) -> tuple[pathlib.Path, pathlib.Path]:
    """Write ``<name>.npz`` (float32 params, flattened keys) and ``<name>.json`` (config, metadata,
    SHA-256 of the npz and a digest over the parameters and the metadata), each atomically; everything
    is checked before anything is written. Derived in :doc:`/book/multihead_experiment`."""
    if not isinstance(config, Config):
        raise TypeError(f"config must be a Config, got {type(config).__name__}")
    if not isinstance(metadata, dict) or not all(isinstance(k, str) for k in metadata):
        raise TypeError("metadata must be a dict with string keys")
    clash = sorted(set(metadata) & set(_RESERVED))
    if clash:
        raise ValueError(f"metadata must not set the reserved keys {clash} (the checkpoint writes them)")
    flat = _flatten(params)
    _check_flat(flat, config)
    buf = io.BytesIO()
    np.savez_compressed(buf, **flat)
    raw = buf.getvalue()
    meta = {"config": config.to_dict(), **metadata, "format": 2, "sha256": hashlib.sha256(raw).hexdigest()}
    try:
        meta = json.loads(json.dumps(meta, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata must be JSON with finite numbers only ({exc})") from exc
    meta["digest"] = _digest(raw, meta)
    directory = pathlib.Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"directory {directory} exists and is not a directory")
    directory.mkdir(parents=True, exist_ok=True)
    npz, js = directory / f"{config.name}.npz", directory / f"{config.name}.json"
    root = directory.resolve()
    if npz.resolve().parent != root or js.resolve().parent != root:
        raise ValueError(f"checkpoint {config.name!r} would be written outside {directory}")
    _atomic_write(npz, raw)
    _atomic_write(js, (json.dumps(meta, indent=1, allow_nan=False) + "\n").encode())
    return npz, js


def load_checkpoint(
    directory: str | os.PathLike[str], name: str, config_path: str | os.PathLike[str] | None = None
) -> tuple[Config, tf.Params, dict[str, Any]]:
    """Load ``(config, params, metadata)`` of run ``name``; a missing, corrupt or tampered file raises
    :class:`CheckpointError` naming the command that recreates it. The metadata and the configuration
    are checked before any array is built. Derived in :doc:`/book/multihead_experiment`."""
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name):
        raise ValueError(f"name must be a safe file name, got {name!r}")
    directory = pathlib.Path(directory)
    cfg_path = config_path or directory / "sweep.json"
    fix = f"recreate it with: {recreate_command(cfg_path, name)}"
    npz, js = directory / f"{name}.npz", directory / f"{name}.json"
    for f in (js, npz):
        if not f.is_file():
            raise CheckpointError(f"checkpoint file {f} is missing; {fix}")
    try:
        meta = _read_json(js, "checkpoint metadata")
        if not isinstance(meta, dict) or "config" not in meta:
            raise ValueError("expected a JSON object with a key 'config'")
        config = Config.from_dict(meta["config"])
        if config.name != name:
            raise ValueError(f"it records the run {config.name!r}")
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"checkpoint metadata {js} is unreadable ({exc}); {fix}") from exc
    raw = npz.read_bytes()
    if hashlib.sha256(raw).hexdigest() != meta.get("sha256"):
        raise CheckpointError(
            f"checkpoint {npz} does not match the SHA-256 recorded in {js} (corrupt or "
            f"stale); {fix}"
        )
    if "digest" in meta or meta.get("format", 1) != 1:
        try:
            ok = _digest(raw, meta) == meta.get("digest")
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise CheckpointError(f"checkpoint {js} does not match its digest (parameters and metadata "
                                  f"were changed after it was written); {fix}")
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as f:
            flat = {k: f[k] for k in f.files}
        _check_flat(flat, config)
        params = _unflatten(flat)
    except (ValueError, OSError, zipfile.BadZipFile, KeyError, EOFError) as exc:
        raise CheckpointError(f"checkpoint {npz} is corrupt ({exc}); {fix}") from exc
    return config, params, meta


# ---- evaluation ---------------------------------------------------------------------------------


def eval_tasks(
    n_tasks: int, n: int, d: int, s: int, sigma: float, rng: np.random.Generator
) -> tuple[sreg.Tasks, np.ndarray]:
    """Held-out tasks (:func:`softmax_icl.sparse_regression.sample_tasks`) and one query
    ``x_q ~ N(0, I_d)`` per task. Derived in :doc:`/book/multihead_experiment`."""
    tasks = sreg.sample_tasks(n_tasks, n, d, s, sigma, rng)
    return tasks, rng.standard_normal((n_tasks, d))


def _task_queries(tasks: Any, x_query: Any) -> tuple[sreg.Tasks, np.ndarray]:
    if not isinstance(tasks, sreg.Tasks):
        raise TypeError(f"tasks must be sparse_regression.Tasks, got {type(tasks).__name__}")
    T, _, d = tasks.X.shape
    return tasks, as_array(x_query, "x_query", ndim=2, shape=(T, d))


def _check_model(config: Any, params: Any) -> None:
    if not isinstance(config, Config):
        raise TypeError(f"config must be a Config, got {type(config).__name__}")
    d_in, width = tf.check_params(params)
    if d_in != config.d + 1:
        raise ValueError(f"params read tokens of width {d_in}, the configuration has d + 1 = {config.d + 1}")


def _prompts(tasks: sreg.Tasks, x_query: np.ndarray) -> jax.Array:
    return tf.make_prompt(
        jnp.asarray(tasks.X, DTYPE), jnp.asarray(tasks.y, DTYPE), jnp.asarray(x_query, DTYPE)
    )


def _cast(params: tf.Params) -> tf.Params:
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, DTYPE), params)


def predict(
    config: Config,
    params: tf.Params,
    tasks: sreg.Tasks,
    x_query: np.ndarray,
    head_mask: Sequence[Any] | None = None,
) -> np.ndarray:
    """The model's prediction of ``⟨w*, x_q⟩`` for each task (float32 throughout), optionally with
    heads switched off by ``head_mask``. Derived in :doc:`/book/multihead_experiment`."""
    _check_model(config, params)
    tasks, x_query = _task_queries(tasks, x_query)
    if head_mask is not None:
        tf._check_head_mask(params, head_mask)
    mask = None if head_mask is None else [jnp.asarray(m, DTYPE) for m in head_mask]
    out = tf.predict(
        _cast(params), _prompts(tasks, x_query), attention=config.attention, head_mask=mask
    )
    return np.asarray(out, dtype=np.float64)


def excess_risk_per_task(
    prediction: np.ndarray, tasks: sreg.Tasks, x_query: np.ndarray
) -> np.ndarray:
    """``(ŷ_q − ⟨w*, x_q⟩)²`` per task: an unbiased one-query estimate of the excess risk
    ``E_x(ŷ(x) − ⟨w*, x⟩)²`` (for a linear ``ŷ = ⟨ŵ, x⟩`` its mean is ``‖ŵ − w*‖²``).
    Derived in :doc:`/book/multihead_experiment`."""
    tasks, x_query = _task_queries(tasks, x_query)
    prediction = as_array(prediction, "prediction", ndim=1, shape=(tasks.X.shape[0],))
    return (prediction - np.einsum("td,td->t", tasks.w_star, x_query)) ** 2


def evaluate(
    config: Config,
    params: tf.Params,
    n: int | None = None,
    n_tasks: int | None = None,
    seed: int | None = None,
    head_mask: Sequence[Any] | None = None,
) -> np.ndarray:
    """Per-task excess risks (T,) on held-out tasks drawn from ``default_rng([seed, n])``; the
    defaults (``eval_n``, ``eval_tasks``, ``eval_seed``) give the metric recorded with a checkpoint.
    Derived in :doc:`/book/multihead_experiment`."""
    _check_model(config, params)
    n = config.eval_n if n is None else as_positive_int(n, "n")
    T = config.eval_tasks if n_tasks is None else as_positive_int(n_tasks, "n_tasks")
    if seed is not None:
        as_nonnegative_int(seed, "seed")
    rng = np.random.default_rng([config.eval_seed if seed is None else seed, n])
    tasks, xq = eval_tasks(T, n, config.d, config.s, config.sigma, rng)
    return excess_risk_per_task(predict(config, params, tasks, xq, head_mask), tasks, xq)


def _hidden_single(params: tf.Params, E: jax.Array, attention: str, head_mask: Any) -> jax.Array:
    Z = E @ params["embed"]["W"] + params["embed"]["b"]
    states = [Z[-1]]
    for l, p in enumerate(params["layers"]):
        Z = tf.block(p, Z, attention, None if head_mask is None else head_mask[l])
        states.append(Z[-1])
    return jnp.stack(states)


_hidden_batch = jax.jit(jax.vmap(_hidden_single, in_axes=(None, 0, None, None)), static_argnums=2)


def query_states(
    config: Config,
    params: tf.Params,
    tasks: sreg.Tasks,
    x_query: np.ndarray,
    head_mask: Sequence[Any] | None = None,
) -> np.ndarray:
    """The query token's residual stream after the read-in and after each layer: (T, L+1, width),
    composed from :func:`softmax_icl.transformer.block`.
    Derived in :doc:`/book/multihead_experiment`."""
    _check_model(config, params)
    tasks, x_query = _task_queries(tasks, x_query)
    if head_mask is not None:
        tf._check_head_mask(params, head_mask)
    mask = None if head_mask is None else [jnp.asarray(m, DTYPE) for m in head_mask]
    return np.asarray(
        _hidden_batch(_cast(params), _prompts(tasks, x_query), config.attention, mask),
        dtype=np.float64,
    )


def head_masks(
    config: Config,
    keep: dict[int, Sequence[int]] | None = None,
    drop: tuple[int, int] | None = None,
) -> list[np.ndarray]:
    """Per-layer 0/1 vectors: all ones, or (``keep``) only the listed heads of the listed layers
    (other layers untouched), with head ``drop = (layer, head)`` switched off.
    Derived in :doc:`/book/multihead_experiment`."""
    if not isinstance(config, Config):
        raise TypeError(f"config must be a Config, got {type(config).__name__}")
    L, h = config.n_layers, config.n_heads

    def index(value: Any, size: int, what: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 0 <= value < size:
            raise ValueError(f"{what} must be an integer in [0, {size}), got {value!r}")
        return int(value)

    masks = [np.ones(h) for _ in range(L)]
    if keep is not None and not isinstance(keep, dict):
        raise TypeError(f"keep must be a dict {{layer: [heads]}}, got {type(keep).__name__}")
    for layer, heads in (keep or {}).items():
        layer = index(layer, L, "a layer of keep")
        if isinstance(heads, str | bytes) or not isinstance(heads, Sequence):
            raise TypeError(f"keep[{layer}] must be a list of head indices, got {heads!r}")
        masks[layer] = np.zeros(h)
        masks[layer][[index(j, h, f"a head of keep[{layer}]") for j in heads]] = 1.0
    if drop is not None:
        if not isinstance(drop, tuple | list) or len(drop) != 2:
            raise TypeError(f"drop must be a pair (layer, head), got {drop!r}")
        masks[index(drop[0], L, "drop's layer")][index(drop[1], h, "drop's head")] = 0.0
    return masks


def head_importance(
    config: Config, params: tf.Params, tasks: sreg.Tasks, x_query: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Importance of each head: the increase of the mean excess risk when that head alone is masked.
    Returns ``(importance (L, h), standard error (L, h), full-model risks (T,))``; the standard
    error
    is that of the paired per-task differences. Derived in :doc:`/book/multihead_experiment`."""
    _check_model(config, params)
    tasks, x_query = _task_queries(tasks, x_query)
    if tasks.X.shape[0] < 2:
        raise ValueError("tasks must hold at least 2 tasks (for a standard error)")
    base = excess_risk_per_task(predict(config, params, tasks, x_query), tasks, x_query)
    imp = np.empty((config.n_layers, config.n_heads))
    se = np.empty_like(imp)
    for l in range(config.n_layers):
        for h in range(config.n_heads):
            r = excess_risk_per_task(
                predict(config, params, tasks, x_query, head_masks(config, drop=(l, h))),
                tasks,
                x_query,
            )
            diff = r - base
            imp[l, h], se[l, h] = diff.mean(), diff.std(ddof=1) / np.sqrt(diff.size)
    return imp, se, base


def pruning_mask(importance: np.ndarray) -> list[np.ndarray]:
    """Keep every head of layer 1 and, in each later layer, only its most important head.
    Derived in :doc:`/book/multihead_experiment`."""
    try:
        shape = np.shape(importance)
    except ValueError as exc:
        raise ValueError(f"importance must be a (layers, heads) array ({exc})") from exc
    if len(shape) != 2:
        raise ValueError(f"importance must be (layers, heads), got shape {shape}")
    imp = as_array(importance, "importance", ndim=2)
    masks = [np.ones(imp.shape[1])]
    for row in imp[1:]:
        m = np.zeros(imp.shape[1])
        m[int(np.argmax(row))] = 1.0
        masks.append(m)
    return masks


def fit_probe(features: np.ndarray, target: np.ndarray, lam: float = 1e-3) -> np.ndarray:
    """Linear probe ``target ≈ Fβ + b``: ridge (penalty ``λ‖β‖²``, mean loss) on standardized
    features (T, p); returns ``[β; b]`` (p + 1,) in the original units.
    Derived in :doc:`/book/multihead_experiment`."""
    F = as_array(features, "features", ndim=2)
    t = as_array(target, "target", ndim=1, shape=(F.shape[0],))
    lam = as_nonnegative_float(lam, "lam")
    if lam == 0 and F.shape[0] <= F.shape[1]:
        raise ValueError(f"lam = 0 needs more samples than features, got features of shape {F.shape}")
    mu, sd = F.mean(axis=0), F.std(axis=0) + 1e-8
    Fs = (F - mu) / sd
    T, p = Fs.shape
    beta = np.linalg.solve(Fs.T @ Fs / T + lam * np.eye(p), Fs.T @ (t - t.mean()) / T)
    w = beta / sd
    return np.concatenate([w, [t.mean() - mu @ w]])


def probe_risks(
    states_train: np.ndarray,
    target_train: np.ndarray,
    states_test: np.ndarray,
    target_test: np.ndarray,
    lam: float = 1e-3,
) -> np.ndarray:
    """Per-layer linear probes of the query's hidden state for ``⟨w*, x_q⟩``: fit on the training
    states (T, L+1, width), return the held-out squared errors (L+1, T_test).
    Derived in :doc:`/book/multihead_experiment`."""
    states_train = as_array(states_train, "states_train", ndim=3)
    _, L, width = states_train.shape
    target_train = as_array(target_train, "target_train", ndim=1, shape=(states_train.shape[0],))
    states_test = as_array(states_test, "states_test", ndim=3, shape=(None, L, width))
    target_test = as_array(target_test, "target_test", ndim=1, shape=(states_test.shape[0],))
    out = []
    for l in range(states_train.shape[1]):
        coef = fit_probe(states_train[:, l], target_train, lam)
        pred = states_test[:, l] @ coef[:-1] + coef[-1]
        out.append((pred - target_test) ** 2)
    return np.array(out)


def risk_by_steps(
    train: sreg.Tasks,
    test: sreg.Tasks,
    K_max: int,
    method: str = "PtO",
    normalize: sreg.Normalize = "l2",
) -> np.ndarray:
    """Held-out excess risks (K_max+1, T_test) of ``k = 0..K_max`` gradient steps, ``method``
    'GD' or 'PtO' (preprocess-then-optimize), the step size tuned for each ``k`` on ``train``
    (:func:`softmax_icl.sparse_regression.tune_gd` / ``tune_pto``): the yardstick of the layer-wise
    probes. Derived in :doc:`/book/multihead_experiment`."""
    K_max = as_positive_int(K_max, "K_max")
    for name, t in (("train", train), ("test", test)):
        if not isinstance(t, sreg.Tasks):
            raise TypeError(f"{name} must be sparse_regression.Tasks, got {type(t).__name__}")
    if train.X.shape[2] != test.X.shape[2]:
        raise ValueError(f"train and test tasks have dimensions {train.X.shape[2]} and {test.X.shape[2]}")
    if not isinstance(normalize, str) or normalize not in ("none", "l2"):
        raise ValueError(f"normalize must be 'none' or 'l2', got {normalize!r}")
    if not isinstance(method, str) or method not in ("GD", "PtO"):
        raise ValueError(f"method must be 'GD' or 'PtO', got {method!r}")

    def run(eta: float, k: int) -> np.ndarray:
        if method == "GD":
            return sreg.gradient_descent(test.X, test.y, eta, k)
        return sreg.preprocess_then_optimize(test.X, test.y, eta, k, normalize=normalize)

    if method == "GD":
        tuning = sreg.tune_gd(train, K_max=K_max)
    else:
        tuning = sreg.tune_pto(train, K_max=K_max, normalize=normalize)
    etas = tuning.axes["eta"]
    return np.array(
        [
            sreg.excess_risk(run(float(etas[np.argmin(tuning.risk[:, k])]), k), test.w_star)
            for k in range(K_max + 1)
        ]
    )


# ---- baselines and the summary ------------------------------------------------------------------

RIDGE_GRID = np.r_[0.0, np.geomspace(1e-5, 10.0, 31)]  # λ = 0 is least squares (X⁺y)
LASSO_GRID = np.geomspace(1e-4, 1.0, 25)
STEPS_MAX = 3000  # the largest K of GD and PtO tuned (the K → ∞ limit is a further candidate)
BASELINES = ("ridge", "lasso", "bayes", "gd", "pto")
SUMMARY_TASKS = 2000
SUMMARY_SEED = 7


def baseline_risks(train: sreg.Tasks, test: sreg.Tasks, s: int) -> dict[str, tuple[np.ndarray, dict[str, float]]]:
    """Held-out excess risks ``‖ŵ − w*‖²`` (T_test,) and tuned hyper-parameters of ridge (λ grid from
    0), the Lasso, gradient descent and preprocess-then-optimize (``ℓ₂``-normalized; step size and
    ``K ≤ STEPS_MAX`` tuned on ``train``), and the Bayes posterior mean (nothing to tune).
    Derived in :doc:`/book/multihead_experiment`."""
    for name, t in (("train", train), ("test", test)):
        if not isinstance(t, sreg.Tasks):
            raise TypeError(f"{name} must be sparse_regression.Tasks, got {type(t).__name__}")
    if train.X.shape[2] != test.X.shape[2] or train.sigma != test.sigma:
        raise ValueError("train and test tasks must share the dimension and the noise level")
    s = as_positive_int(s, "s")
    X, y = test.X, test.y
    ridge, lasso = sreg.tune_ridge(train, RIDGE_GRID), sreg.tune_lasso(train, LASSO_GRID)
    estimates = {
        "ridge": (sreg.ridge(X, y, ridge.best["lam"]), ridge.best),
        "lasso": (sreg.lasso(X, y, lasso.best["lam"]), lasso.best),
        "bayes": (sreg.bayes_posterior_mean(X, y, s, test.sigma), {}),
    }
    for method, tune in (("gd", sreg.tune_gd), ("pto", partial(sreg.tune_pto, normalize="l2"))):
        tuning = tune(train, K_max=STEPS_MAX)
        best = {**tuning.best}
        if sreg.excess_risk(steps_limit(train.X, train.y, method), train.w_star).mean() < np.min(tuning.risk):
            best = {"K": "inf"}  # the limit beats every finite K (it does not depend on η)
        estimates[method] = (_steps(X, y, method, best), best)
    return {k: (sreg.excess_risk(w, test.w_star), best) for k, (w, best) in estimates.items()}


def _steps(X: np.ndarray, y: np.ndarray, method: str, best: dict[str, Any]) -> np.ndarray:
    if best["K"] == "inf":
        return steps_limit(X, y, method)
    if method == "gd":
        return sreg.gradient_descent(X, y, best["eta"], best["K"])
    return sreg.preprocess_then_optimize(X, y, best["eta"], best["K"], normalize="l2")


def steps_limit(X: np.ndarray, y: np.ndarray, method: str) -> np.ndarray:
    """The ``K → ∞`` limit of GD (``method='gd'``) or ``ℓ₂``-normalized preprocess-then-optimize
    (``'pto'``) from 0 at any stable step size: the minimum-norm least-squares solution in the
    (reweighted) coordinates, ``X⁺y`` or ``r ∘ (X diag r)⁺ y`` with ``r = r̂/‖r̂‖``.
    Derived in :doc:`/book/multihead_experiment`."""
    if not isinstance(method, str) or method not in ("gd", "pto"):
        raise ValueError(f"method must be 'gd' or 'pto', got {method!r}")
    if method == "gd":
        return sreg.min_norm_least_squares(X, y)
    r = sreg.preprocessing_weights(X, y, "l2")
    return r * sreg.min_norm_least_squares(np.asarray(X) * r[:, None, :], y)


def summary_tasks(config: Config, n: int) -> tuple[sreg.Tasks, sreg.Tasks, np.ndarray]:
    """The training tasks of the baselines (400), the held-out tasks (``SUMMARY_TASKS``) and their
    queries at context length ``n``, from ``default_rng([SUMMARY_SEED, n])``.
    Derived in :doc:`/book/multihead_experiment`."""
    if not isinstance(config, Config):
        raise TypeError(f"config must be a Config, got {type(config).__name__}")
    rng = np.random.default_rng([SUMMARY_SEED, as_positive_int(n, "n")])
    train = sreg.sample_tasks(400, n, config.d, config.s, config.sigma, rng)
    test, x_query = eval_tasks(SUMMARY_TASKS, n, config.d, config.s, config.sigma, rng)
    return train, test, x_query


def _interval(per_seed: list[np.ndarray]) -> list[float]:
    """[mean, 95% half-width]: over the tasks for one seed; over seeds (Student t) for several."""
    from scipy import stats

    if len(per_seed) == 1:
        return [float(v) for v in sreg.mean_and_halfwidth(per_seed[0])]
    means = np.array([r.mean() for r in per_seed])
    half = stats.t.ppf(0.975, means.size - 1) * means.std(ddof=1) / np.sqrt(means.size)
    return [float(means.mean()), float(half)]


def summarize(
    models: dict[str, list[tuple[Config, tf.Params]]], n_values: Sequence[int]
) -> dict[str, Any]:
    """``{"setting", "excess_risk": {model or baseline: {n: [mean, halfwidth_95]}}, "seeds",
    "runs": {run: {n: mean}}, "tuned"}`` at each ``n``, every model and baseline on the same
    held-out tasks (:func:`summary_tasks`); a model is a list of seeds (runs, each with its own
    name) of one architecture and setting.
    Derived in :doc:`/book/multihead_experiment`."""
    if not isinstance(models, dict) or not models or not all(isinstance(v, list) and v for v in models.values()):
        raise ValueError("models must map names to non-empty lists of (config, params)")
    configs = [c for runs in models.values() for c, _ in runs]
    first = configs[0]
    if any((c.d, c.s, c.sigma) != (first.d, first.s, first.sigma) for c in configs):
        raise ValueError("every model of a summary must share d, s and sigma")
    n_values = [as_positive_int(n, "n_values entry") for n in n_values]
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise ValueError(f"every run of a summary needs its own name, got {names}")
    risks: dict[str, dict[str, list[float]]] = {k: {} for k in [*models, *BASELINES]}
    tuned: dict[str, dict[str, dict[str, float]]] = {k: {} for k in BASELINES}
    per_run: dict[str, dict[str, float]] = {name: {} for name in names}
    for n in n_values:
        train, test, x_query = summary_tasks(first, n)
        for name, runs in models.items():
            per_seed = [excess_risk_per_task(predict(c, p, test, x_query), test, x_query) for c, p in runs]
            risks[name][str(n)] = _interval(per_seed)
            for (c, _), r in zip(runs, per_seed, strict=True):
                per_run[c.name][str(n)] = float(r.mean())
        for name, (r, best) in baseline_risks(train, test, first.s).items():
            risks[name][str(n)] = _interval([r])
            tuned[name][str(n)] = best
    return {
        "setting": {"d": first.d, "s": first.s, "sigma": first.sigma},
        "excess_risk": risks,
        "seeds": {name: len(runs) for name, runs in models.items()},
        "runs": per_run,
        "tuned": tuned,
        "halfwidth": "95% interval of the mean: over held-out tasks for one seed (baselines: ‖ŵ − w*‖²; "
                     "models: one query per task), over training seeds (Student t) for several",
        "tasks": {"held_out": SUMMARY_TASKS, "tuning": 400, "seed": SUMMARY_SEED},
    }


def model_groups(configs: Sequence[Config]) -> dict[str, list[Config]]:
    """Runs grouped into models: ``<model>_seed<k>`` is seed ``k`` of ``<model>`` (other names are
    models of one run). Derived in :doc:`/book/multihead_experiment`."""
    groups: dict[str, list[Config]] = {}
    for c in configs:
        base, sep, seed = c.name.rpartition("_seed")
        groups.setdefault(base if sep and seed.isdigit() else c.name, []).append(c)
    return groups


def _total_steps(meta: dict[str, Any]) -> int:
    """Steps of a checkpoint counted through ``init_from`` (first stages written before
    ``total_steps`` was recorded have only ``steps``)."""
    return int(meta.get("total_steps", meta["steps"]))


def write_summary(directory: str | os.PathLike[str], configs: Sequence[Config]) -> pathlib.Path:
    """Load every run's checkpoint and write :func:`summarize` of the models, at every context
    length they were trained on, to ``directory/summary.json``; ``"main"`` is the model trained
    longest (steps counted through ``init_from``; the first of equals).
    Derived in :doc:`/book/multihead_experiment`."""
    directory = pathlib.Path(directory)
    groups = model_groups(configs)
    loaded = {name: [load_checkpoint(directory, c.name) for c in runs] for name, runs in groups.items()}
    n_values = sorted({n for c in configs for n in c.n_values})
    steps = {name: min(_total_steps(meta) for _, _, meta in runs) for name, runs in loaded.items()}
    main = max(groups, key=steps.__getitem__)
    models = {name: [(c, p) for c, p, _ in runs] for name, runs in loaded.items()}
    summary = {"main": main, **summarize(models, n_values)}
    path = directory / "summary.json"
    _atomic_write(path, (json.dumps(summary, indent=1, allow_nan=False) + "\n").encode())
    return path


def preprocessing_probe(
    states_train: np.ndarray, tasks_train: sreg.Tasks, xq_train: np.ndarray,
    states_test: np.ndarray, tasks_test: sreg.Tasks, xq_test: np.ndarray, lam: float = 1e-3,
) -> np.ndarray:
    """How much of ``r̂ ∘ x_q`` (``r̂ = (1/n) Σ y_i x_i``, the preprocessing of the construction) a
    linear probe reads from the query token after each layer: the held-out ``R²`` (L+1,) of ridge
    probes fitted on ``states_train`` (T, L+1, width), pooled over the ``d`` coordinates.
    Derived in :doc:`/book/multihead_experiment`."""
    def target(tasks: sreg.Tasks, xq: np.ndarray) -> np.ndarray:
        return sreg.empirical_correlation(tasks.X, tasks.y) * xq

    y_train, y_test = target(tasks_train, xq_train), target(tasks_test, xq_test)
    states_train = as_array(states_train, "states_train", ndim=3, shape=(y_train.shape[0], None, None))
    states_test = as_array(states_test, "states_test", ndim=3, shape=(y_test.shape[0], *states_train.shape[1:]))
    r2 = []
    for l in range(states_train.shape[1]):
        err = sum(probe_risks(states_train[:, l:l + 1], y_train[:, j], states_test[:, l:l + 1], y_test[:, j],
                              lam)[0].sum() for j in range(y_train.shape[1]))
        r2.append(1.0 - err / float(((y_test - y_train.mean(axis=0)) ** 2).sum()))
    return np.array(r2)


# ---- command line -------------------------------------------------------------------------------


def _run(config: Config, directory: pathlib.Path, config_path: str) -> dict[str, Any]:
    from tqdm import tqdm

    start, origin, total_steps = None, {}, config.steps
    if config.init_from:
        parent, start, parent_meta = load_checkpoint(directory, config.init_from, config_path)
        origin = {"init_from": {"name": parent.name, "digest": parent_meta.get("digest", parent_meta["sha256"])}}
        total_steps += _total_steps(parent_meta)
    with tqdm(total=config.steps, desc=config.name, unit="step") as bar:
        result = train(config, bar, start)
    risks = evaluate(config, result["params"])
    if not np.all(np.isfinite(risks)):
        raise TrainingDiverged(f"run {config.name!r}: the trained model's predictions are not finite")
    metadata = {
        "seed": config.seed,
        "steps": config.steps,
        "total_steps": total_steps,
        **origin,
        "final_loss": result["final_loss"],
        "loss_curve": [float(f"{x:.6g}") for x in result["losses"]],
        "wall_seconds": round(result["wall_seconds"], 2),
        "steps_per_second": round(result["steps_per_second"], 2),
        "eval": {
            "n": config.eval_n,
            "tasks": config.eval_tasks,
            "seed": config.eval_seed,
            "excess_risk": float(risks.mean()),
            "standard_error": float(risks.std(ddof=1) / np.sqrt(risks.size)),
        },
        "version": __version__,
        "jax": jax.__version__,
        "optax": optax.__version__,
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} cores",
        "command": recreate_command(config_path, config.name),
    }
    save_checkpoint(directory, config, result["params"], metadata)
    return metadata


def finished(directory: str | os.PathLike[str], config: Config) -> bool:
    """Whether ``directory`` holds a valid checkpoint of exactly this configuration (the sweep keeps
    and skips such runs). Derived in :doc:`/book/multihead_experiment`."""
    if not (pathlib.Path(directory) / f"{config.name}.json").is_file():
        return False
    try:
        saved, _, _ = load_checkpoint(directory, config.name)
    except CheckpointError:
        return False
    return saved == config


def _output_directory(out: pathlib.Path) -> pathlib.Path:
    """``--out``: an existing or creatable, writable directory (checked before any training)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"--out {out} cannot be created ({exc.strerror})") from exc
    if not os.access(out, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out} is not writable")
    return out


def main(argv: Iterable[str] | None = None) -> None:
    """Command line: train the runs of ``--config`` (or those named by ``--only``) and write their
    checkpoints and metadata into ``--out`` (default: next to the config). A bad file, field or
    argument prints one line and exits with status 2 before any training; so does a diverging run
    (nothing of it is written). Derived in :doc:`/book/multihead_experiment`."""
    parser = argparse.ArgumentParser(
        prog=f"python -m {MODULE}", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument(
        "--config", required=True, help="JSON file {'defaults': {...}, 'runs': [...]}"
    )
    parser.add_argument(
        "--out", default=None, help="output directory (default: the config's directory)"
    )
    parser.add_argument("--only", nargs="+", default=None, help="names of the runs to train")
    parser.add_argument("--summary", action="store_true",
                        help="once every run of --config has a checkpoint, write summary.json into --out")
    parser.add_argument("--retrain", action="store_true",
                        help="train runs that already have a valid checkpoint (default: keep and skip them)")
    args = parser.parse_args(None if argv is None else list(argv))
    try:
        configs = load_configs(args.config)
        if args.only:
            unknown = sorted(set(args.only) - {c.name for c in configs})
            if unknown:
                raise ValueError(f"{args.config}: --only names unknown run(s) {unknown}")
            configs = [c for c in configs if c.name in args.only]
        out = _output_directory(pathlib.Path(args.out) if args.out else pathlib.Path(args.config).parent)
        for c in configs:
            if (out / f"{c.name}.json").resolve() == pathlib.Path(args.config).resolve():
                raise ValueError(f"{args.config}: run {c.name!r} would overwrite the configuration file with its "
                                 "checkpoint; rename the run or pass --out")
    except ValueError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    total = time.perf_counter()
    for config in configs:
        if not args.retrain and finished(out, config):
            print(f"{config.name}: kept (its checkpoint exists and matches the configuration)", flush=True)
            continue
        try:
            meta = _run(config, out, args.config)
        except (TrainingDiverged, CheckpointError) as exc:
            parser.exit(2, f"{parser.prog}: error: {args.config}: {exc}\n")
        print(
            f"{config.name}: {meta['wall_seconds']:.1f} s, {meta['steps_per_second']:.1f} steps/s, "
            f"final loss {meta['final_loss']:.4f}, excess risk (n={config.eval_n}) "
            f"{meta['eval']['excess_risk']:.4f} ± {meta['eval']['standard_error']:.4f}",
            flush=True,
        )
    print(f"total wall time {time.perf_counter() - total:.1f} s")
    everything = load_configs(args.config)
    if args.summary and all(finished(out, c) for c in everything):
        path = write_summary(out, everything)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
