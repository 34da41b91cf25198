"""A small transformer for in-context regression, as plain JAX functions over a params pytree.

Derived in :doc:`/book/sparse_regression`, which
builds exact constructions with it; the chapter on trained transformers trains the same code.

Prompt. Tokens are rows: ``E ∈ R^{(n+K)×D_in}`` holds the context tokens ``(x_i, y_i)``,
``i = 1..n``, then ``K ≥ 1`` query tokens ``(x_q, 0)`` (see :func:`make_prompt`; ``K = queries``,
1 unless given). In every layer the keys and values are the ``n`` context tokens only (a query
attends but is never attended to), so no query's label slot can leak into the context and the
``K`` queries of one prompt are ``K`` independent one-query prompts sharing their context.
:func:`attention_layer` is the one attention implementation of the library: with
``keys_include_queries`` the keys are every token (the query attends to itself too), which is
the single layer of :mod:`softmax_icl.attention_vs_gd`.

Attention. Head ``h`` maps the stream ``Z`` (rows ``z_t``) to ``o_t = Σ_i a_{ti} (z_i W_V[h])
W_O[h]``
with scores ``s_{ti} = ⟨z_t W_Q[h], z_i W_K[h]⟩``:

* ``linear``: ``a_{ti} = s_{ti} / n``. In the column notation of the theory this is
  ``o_t = W^{PV} Ĝ W^{KQ} z_t`` with ``Ĝ = (1/n) Σ_{i≤n} z_i z_iᵀ``, ``W^{PV} = (W_V W_O)ᵀ`` and
  ``W^{KQ} = W_K W_Qᵀ``;
* ``softmax``: ``a_{t·} = softmax(s_{t·} / √d_k)`` over the context tokens.

A layer is GPT-2 style, each part optional: ``Z ← Z + Attn(LN₁(Z))``, ``Z ← Z + MLP(LN₂(Z))``, where
the layer norms are used only if the layer has ``ln1``/``ln2`` entries and the MLP only if it has
``mlp``. ``head_mask`` (one vector per layer, one entry per head) multiplies each head's output:
0 switches a head off at evaluation.

Params pytree (all leaves float arrays; the number of heads may differ between layers)::

    {"embed":   {"W": (D_in, D), "b": (D,)},                         # optional read-in
     "layers":  [{"attn": {"W_Q": (h, D, k), "W_K": (h, D, k), "W_V": (h, D, v), "W_O": (h, v, D)},
                  "ln1": {"scale": (D,), "bias": (D,)},              # optional
                  "mlp": {"W1": (D, F), "b1": (F,), "W2": (F, D), "b2": (D,)},   # optional
                  "ln2": {"scale": (D,), "bias": (D,)}}, ...],      # optional
     "ln_f":    {"scale": (D,), "bias": (D,)},                       # optional
     "readout": {"w": (D,), "b": ()}}                                # prediction = ⟨w, z_q⟩ + b

All functions are jit-able (``attention`` is a static string) and :func:`forward`/:func:`predict`
accept a single prompt ``(N, D_in)`` or a batch ``(B, N, D_in)`` (vmapped).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from ._validate import as_bool, as_nonnegative_float, as_nonnegative_int, as_positive_int, check_size

__all__ = [
    "Attention",
    "check_key",
    "layer_norm",
    "attention_layer",
    "mlp",
    "block",
    "forward",
    "predict",
    "make_prompt",
    "init_params",
    "check_params",
    "linear_head_params",
    "construction_embedding",
    "preprocess_layer",
    "gd_layer",
    "construct_pto_transformer",
    "fit_preprocess_heads",
    "preprocess_head_outputs",
]

Attention = Literal["linear", "softmax"]
Params = dict[str, Any]
LN_EPS = 1e-5
MAX_ELEMENTS = 2**28  # parameters of one model (and prompts): 1 GiB of float32, checked before allocation


# ---- validation (shape-only, so it also works on tracers inside jit) ------------------------


def _check_float(x: Any, name: str, ndim: int) -> None:
    dtype = getattr(x, "dtype", None)
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{name} must be a floating-point array, got {type(x).__name__} of dtype {dtype}"
        )
    if x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(x.shape)}")


def _finite_or_traced(x: Any) -> bool:
    """Whether every entry of ``x`` is finite; True for an abstract value inside ``jit`` (not checkable)."""
    try:
        return bool(jnp.all(jnp.isfinite(x)))
    except jax.errors.ConcretizationTypeError:
        return True


def _stream(x: Any, name: str, shape: tuple[int | None, ...] | None = None) -> jax.Array:
    """A floating JAX array (lists and NumPy arrays converted), of ``shape`` if given, finite where concrete."""
    if not hasattr(x, "dtype"):
        try:
            x = np.asarray(x)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{name} must be a real array; could not convert it ({exc})") from exc
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating-point array, got dtype {x.dtype}")
    x = jnp.asarray(x)
    if x.ndim < 1 or x.size == 0:
        raise ValueError(f"{name} must be a non-empty array, got shape {tuple(x.shape)}")
    if shape is not None and (x.ndim != len(shape) or any(w is not None and g != w
                                                          for g, w in zip(x.shape, shape, strict=True))):
        raise ValueError(f"{name} must have shape {tuple('any' if w is None else w for w in shape)}, "
                         f"got {tuple(x.shape)}")
    if not _finite_or_traced(x):
        raise ValueError(f"{name} must be finite")
    return x


def _check_attention(kind: str) -> None:
    if kind not in ("linear", "softmax"):
        raise ValueError(f"attention must be 'linear' or 'softmax', got {kind!r}")


def check_params(params: Params) -> tuple[int, int]:
    """Validate the params pytree; return ``(D_in, D)`` (input token width, stream width).

    Derived in :doc:`/book/sparse_regression`.
    """
    try:
        return _check_params(params)
    except (KeyError, TypeError, AttributeError, IndexError) as exc:
        if isinstance(exc, TypeError) and "must be" in str(exc):
            raise
        raise ValueError(f"params do not have the structure of the module docstring ({type(exc).__name__}: "
                         f"{exc})") from exc


def _check_params(params: Params) -> tuple[int, int]:
    if not isinstance(params, dict) or "layers" not in params or "readout" not in params:
        raise ValueError(
            "params must be a dict with keys 'layers' and 'readout' (and optionally "
            "'embed', 'ln_f')"
        )
    if "embed" in params:
        _check_float(params["embed"]["W"], "embed.W", 2)
        D_in, D = params["embed"]["W"].shape
        _check_float(params["embed"]["b"], "embed.b", 1)
        if params["embed"]["b"].shape != (D,):
            raise ValueError(
                f"embed.b must have shape ({D},), got {tuple(params['embed']['b'].shape)}"
            )
    else:
        D = D_in = int(params["readout"]["w"].shape[0])
    if not isinstance(params["layers"], list | tuple):
        raise ValueError("params['layers'] must be a list of layers")
    _check_float(params["readout"]["w"], "readout.w", 1)
    _check_float(params["readout"]["b"], "readout.b", 0)
    for l, layer in enumerate(params["layers"]):
        a = layer["attn"]
        for key in ("W_Q", "W_K", "W_V", "W_O"):
            _check_float(a[key], f"layers[{l}].attn.{key}", 3)
        h, D_q, k = a["W_Q"].shape
        want = {
            "W_Q": (h, D, k),
            "W_K": (h, D, k),
            "W_V": (h, D, a["W_V"].shape[2]),
            "W_O": (h, a["W_V"].shape[2], D),
        }
        for key, shape in want.items():
            if tuple(a[key].shape) != shape:
                raise ValueError(
                    f"layers[{l}].attn.{key} must have shape {shape}, got {tuple(a[key].shape)}"
                )
        for ln in ("ln1", "ln2"):
            if ln in layer:
                for part in ("scale", "bias"):
                    _check_float(layer[ln][part], f"layers[{l}].{ln}.{part}", 1)
                    if tuple(layer[ln][part].shape) != (D,):
                        raise ValueError(f"layers[{l}].{ln}.{part} must have shape ({D},)")
        if "mlp" in layer:
            m = layer["mlp"]
            for key, nd in (("W1", 2), ("b1", 1), ("W2", 2), ("b2", 1)):
                _check_float(m[key], f"layers[{l}].mlp.{key}", nd)
            F = m["W1"].shape[1]
            for key, shape in {"W1": (D, F), "b1": (F,), "W2": (F, D), "b2": (D,)}.items():
                if tuple(m[key].shape) != shape:
                    raise ValueError(
                        f"layers[{l}].mlp.{key} must have shape {shape}, got {tuple(m[key].shape)}"
                    )
    if tuple(params["readout"]["w"].shape) != (D,):
        raise ValueError(
            f"readout.w must have shape ({D},), got {tuple(params['readout']['w'].shape)}"
        )
    if "ln_f" in params:
        for part in ("scale", "bias"):
            _check_float(params["ln_f"][part], f"ln_f.{part}", 1)
            if tuple(params["ln_f"][part].shape) != (D,):
                raise ValueError(f"ln_f.{part} must have shape ({D},)")
    return D_in, D


def _check_head_mask(params: Params, head_mask: Sequence[Any] | None) -> None:
    if head_mask is None:
        return
    layers = params["layers"]
    if isinstance(head_mask, str | bytes) or not isinstance(head_mask, Sequence):
        raise TypeError(f"head_mask must be a list with one vector per layer, got {type(head_mask).__name__}")
    if len(head_mask) != len(layers):
        raise ValueError(
            f"head_mask must have one vector per layer ({len(layers)}), got {len(head_mask)}"
        )
    for l, (m, layer) in enumerate(zip(head_mask, layers, strict=True)):
        h = layer["attn"]["W_Q"].shape[0]
        try:
            shape = tuple(jnp.shape(m))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"head_mask[{l}] must be an array of {h} numbers") from exc
        if shape != (h,):
            raise ValueError(
                f"head_mask[{l}] must have shape ({h},) (one entry per head), "
                f"got {shape}"
            )
        dtype = np.dtype(getattr(m, "dtype", None) or np.asarray(m).dtype)
        if dtype.kind not in "biuf" or not _finite_or_traced(jnp.asarray(m, dtype=jnp.float32)):
            raise ValueError(f"head_mask[{l}] must hold finite real numbers")


# ---- the layers ------------------------------------------------------------------------------


def layer_norm(Z: jax.Array, scale: jax.Array, bias: jax.Array, eps: float = LN_EPS) -> jax.Array:
    """``(z − mean z)/√(var z + ε) ∘ scale + bias`` over the last axis (each token separately).

    Derived in :doc:`/book/sparse_regression`.
    """
    Z = _stream(Z, "Z")
    D = Z.shape[-1]
    scale, bias = _stream(scale, "scale", (D,)), _stream(bias, "bias", (D,))
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not 0 < eps < np.inf:
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
    mu = jnp.mean(Z, axis=-1, keepdims=True)
    var = jnp.mean((Z - mu) ** 2, axis=-1, keepdims=True)
    return (Z - mu) / jnp.sqrt(var + eps) * scale + bias


def attention_layer(
    p: Params, Z: jax.Array, attention: Attention = "linear", head_mask: jax.Array | None = None,
    queries: int = 1, *, keys_include_queries: bool = False, score_scale: float | None = None,
    queries_only: bool = False,
) -> jax.Array:
    """Multi-head attention of every token of ``Z`` (N, D) over the context tokens
    ``Z[:-queries]`` (over all of ``Z`` with ``keys_include_queries``); returns the sum over heads
    (N, D), each head scaled by ``head_mask`` if given. Softmax scores are multiplied by
    ``score_scale`` (default ``1/√k``, ``k`` the key dimension); linear weights are the scores
    divided by the number of keys. ``queries_only`` returns the outputs of the query tokens
    only (queries, D), computing nothing for the others.

    Derived in :doc:`/book/sparse_regression`.
    """
    _check_attention(attention)
    if not isinstance(p, dict) or any(k not in p for k in ("W_Q", "W_K", "W_V", "W_O")):
        raise ValueError("p must be a dict with the attention weights W_Q, W_K, W_V, W_O")
    for key in ("W_Q", "W_K", "W_V", "W_O"):
        _check_float(p[key], key, 3)
    h, D, k = p["W_Q"].shape
    v_dim = p["W_V"].shape[2]
    for key, shape in {"W_K": (h, D, k), "W_V": (h, D, v_dim), "W_O": (h, v_dim, D)}.items():
        if tuple(p[key].shape) != shape:
            raise ValueError(f"{key} must have shape {shape}, got {tuple(p[key].shape)}")
    Z = _stream(Z, "Z", (None, D))
    queries = _queries(queries, Z.shape[0])
    keys_include_queries = as_bool(keys_include_queries, "keys_include_queries")
    queries_only = as_bool(queries_only, "queries_only")
    if score_scale is not None and (isinstance(score_scale, bool) or not isinstance(score_scale, int | float)
                                    or not np.isfinite(score_scale)):
        raise ValueError(f"score_scale must be None or a finite number, got {score_scale!r}")
    if head_mask is not None:
        mask_shape = tuple(jnp.shape(head_mask))
        if mask_shape != (h,):
            raise ValueError(f"head_mask must have shape ({h},), got {mask_shape}")
    ctx = Z if keys_include_queries else Z[:-queries]
    n = ctx.shape[0]
    q = jnp.einsum("tD,hDk->htk", Z[-queries:] if queries_only else Z, p["W_Q"])
    k = jnp.einsum("iD,hDk->hik", ctx, p["W_K"])
    v = jnp.einsum("iD,hDv->hiv", ctx, p["W_V"])
    scores = jnp.einsum("htk,hik->hti", q, k)
    if attention == "linear":
        weights = scores / n
    else:
        scale = 1 / np.sqrt(p["W_Q"].shape[2]) if score_scale is None else score_scale
        weights = jax.nn.softmax(scores * scale, axis=-1)
    heads = jnp.einsum("hti,hiv->htv", weights, v)
    if head_mask is not None:
        heads = heads * jnp.asarray(head_mask, dtype=heads.dtype)[:, None, None]
    return jnp.einsum("htv,hvD->tD", heads, p["W_O"])


def mlp(p: Params, Z: jax.Array) -> jax.Array:
    """``GELU(Z W1 + b1) W2 + b2`` token by token.

    Derived in :doc:`/book/sparse_regression`.
    """
    if not isinstance(p, dict) or any(k not in p for k in ("W1", "b1", "W2", "b2")):
        raise ValueError("p must be a dict with the MLP weights W1, b1, W2, b2")
    for key, nd in (("W1", 2), ("b1", 1), ("W2", 2), ("b2", 1)):
        _check_float(p[key], key, nd)
    D, F = p["W1"].shape
    for key, shape in {"b1": (F,), "W2": (F, D), "b2": (D,)}.items():
        if tuple(p[key].shape) != shape:
            raise ValueError(f"{key} must have shape {shape}, got {tuple(p[key].shape)}")
    Z = _stream(Z, "Z", (None, D))
    return jax.nn.gelu(Z @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]


def block(
    p: Params, Z: jax.Array, attention: Attention = "linear", head_mask: jax.Array | None = None,
    queries: int = 1,
) -> jax.Array:
    """One residual layer: ``Z + Attn(LN₁ Z)``, then ``+ MLP(LN₂ ·)`` if the layer has an MLP.

    Derived in :doc:`/book/sparse_regression`.
    """
    if not isinstance(p, dict) or "attn" not in p:
        raise ValueError("p must be a layer: a dict with 'attn' (and optionally 'ln1', 'mlp', 'ln2')")
    Z = _stream(Z, "Z")
    H = layer_norm(Z, **p["ln1"]) if "ln1" in p else Z
    Z = Z + attention_layer(p["attn"], H, attention, head_mask, queries)
    if "mlp" in p:
        H = layer_norm(Z, **p["ln2"]) if "ln2" in p else Z
        Z = Z + mlp(p["mlp"], H)
    return Z


def _forward_single(
    params: Params, E: jax.Array, head_mask: Sequence[jax.Array] | None, attention: Attention,
    queries: int = 1,
) -> jax.Array:
    Z = E @ params["embed"]["W"] + params["embed"]["b"] if "embed" in params else E
    for l, p in enumerate(params["layers"]):
        Z = block(p, Z, attention, None if head_mask is None else head_mask[l], queries)
    if "ln_f" in params:
        Z = layer_norm(Z, **params["ln_f"])
    return Z


def _predict_single(
    params: Params, E: jax.Array, head_mask: Sequence[jax.Array] | None, attention: Attention,
    queries: int = 1,
) -> jax.Array:
    """Scalar for one query, (queries,) for several."""
    Z = _forward_single(params, E, head_mask, attention, queries)
    out = Z[-queries:] @ params["readout"]["w"] + params["readout"]["b"]
    return out[0] if queries == 1 else out


@partial(jax.jit, static_argnames=("attention", "queries"))
def _forward_batch(params, E, head_mask, attention, queries=1):
    return jax.vmap(_forward_single, in_axes=(None, 0, None, None, None))(params, E, head_mask, attention, queries)


@partial(jax.jit, static_argnames=("attention", "queries"))
def _predict_batch(params, E, head_mask, attention, queries=1):
    return jax.vmap(_predict_single, in_axes=(None, 0, None, None, None))(params, E, head_mask, attention, queries)


def _queries(queries: Any, n_tokens: int) -> int:
    """``queries`` as an int in ``[1, n_tokens − 1]``: at least one context token stays."""
    queries = as_positive_int(queries, "queries")
    if queries >= n_tokens:
        raise ValueError(f"the prompt needs at least one context token and {queries} quer"
                         f"{'y' if queries == 1 else 'ies'}, got {n_tokens} token(s)")
    return queries


def _prepare(params: Params, E: Any, attention: str, head_mask: Sequence[Any] | None, queries: Any = 1):
    _check_attention(attention)
    D_in, _ = check_params(params)
    if not hasattr(E, "dtype"):
        try:
            E = np.asarray(E)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"E must be a real array; could not convert it ({exc})") from exc
    if not jnp.issubdtype(E.dtype, jnp.floating):
        raise TypeError(f"E must be a floating-point array, got dtype {E.dtype}")
    E = jnp.asarray(E) if isinstance(E, np.ndarray) else E
    if getattr(E, "ndim", None) not in (2, 3):
        raise ValueError(
            f"E must be a prompt (N, {D_in}) or a batch (B, N, {D_in}), got shape {jnp.shape(E)}"
        )
    _check_float(E, "E", E.ndim)
    if E.shape[-1] != D_in:
        raise ValueError(
            f"E must have {D_in} columns (token width of the params), got shape {tuple(E.shape)}"
        )
    queries = _queries(queries, E.shape[-2])
    if E.size == 0:
        raise ValueError(f"E must be non-empty, got shape {tuple(E.shape)}")
    if not _finite_or_traced(E):
        raise ValueError("E must be finite (it has NaN or inf entries)")
    _check_head_mask(params, head_mask)
    mask = None if head_mask is None else [jnp.asarray(m, dtype=E.dtype) for m in head_mask]
    return E, mask, queries


def forward(
    params: Params,
    E: Any,
    *,
    attention: Attention = "linear",
    head_mask: Sequence[Any] | None = None,
    queries: int = 1,
) -> jax.Array:
    """The residual stream after the last layer (and ``ln_f``): (N, D), or (B, N, D) for a batch;
    the last ``queries`` tokens are queries.

    Derived in :doc:`/book/sparse_regression`.
    """
    E, mask, queries = _prepare(params, E, attention, head_mask, queries)
    if E.ndim == 2:
        return _forward_single(params, E, mask, attention, queries)
    return _forward_batch(params, E, mask, attention, queries)


def predict(
    params: Params,
    E: Any,
    *,
    attention: Attention = "linear",
    head_mask: Sequence[Any] | None = None,
    queries: int = 1,
) -> jax.Array:
    """The prediction ``⟨readout.w, z_q⟩ + readout.b`` read from each query token: scalar or (B,)
    for one query; (queries,) or (B, queries) for several.

    Derived in :doc:`/book/sparse_regression`.
    """
    E, mask, queries = _prepare(params, E, attention, head_mask, queries)
    if E.ndim == 2:
        return _predict_single(params, E, mask, attention, queries)
    return _predict_batch(params, E, mask, attention, queries)


def make_prompt(X: Any, y: Any, x_query: Any) -> jax.Array:
    """Tokens as rows: ``(x_i, y_i)`` for ``i ≤ n``, then ``(x_q, 0)``; shapes ``X`` (…, n, d),
    ``y`` (…, n), and ``x_query`` (…, d) for one query → ``E`` (…, n+1, d+1), or ``x_query``
    (…, K, d) for ``K`` queries (pass ``queries=K`` to the model) → ``E`` (…, n+K, d+1).

    Derived in :doc:`/book/sparse_regression`.
    """
    arrays = []
    for a, name in ((X, "X"), (y, "y"), (x_query, "x_query")):
        if not hasattr(a, "dtype"):
            try:
                a = np.asarray(a)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{name} must be a real array; could not convert it ({exc})") from exc
        if not jnp.issubdtype(a.dtype, jnp.floating):
            raise TypeError(f"{name} must be a floating-point array, got dtype {a.dtype}")
        arrays.append(jnp.asarray(a))
    X, y, xq = arrays
    for a, name in ((X, "X"), (y, "y"), (xq, "x_query")):
        if a.size == 0 or not _finite_or_traced(a):
            raise ValueError(f"{name} must be non-empty and finite")
    one_query = X.ndim >= 2 and xq.shape == X.shape[:-2] + X.shape[-1:]
    many = X.ndim >= 2 and xq.ndim == X.ndim and xq.shape[:-2] + xq.shape[-1:] == X.shape[:-2] + X.shape[-1:]
    if X.ndim < 2 or y.shape != X.shape[:-1] or not (one_query or many):
        raise ValueError(
            f"need X (..., n, d), y (..., n), x_query (..., d) or (..., K, d); got "
            f"{X.shape}, {y.shape}, {xq.shape}"
        )
    context = jnp.concatenate([X, y[..., None]], axis=-1)
    query = jnp.concatenate([xq, jnp.zeros_like(xq[..., :1])], axis=-1)
    return jnp.concatenate([context, query if many else query[..., None, :]], axis=-2)


def check_key(key: Any) -> None:
    """Raise ``TypeError`` unless ``key`` is a JAX PRNG key (typed, or the raw ``uint32[2]`` form).

    Derived in :doc:`/book/sparse_regression`.
    """
    shape, dtype = getattr(key, "shape", None), getattr(key, "dtype", None)
    typed = dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key)
    if not (typed and shape == ()) and not (shape == (2,) and dtype == jnp.uint32):
        raise TypeError(f"key must be a JAX PRNG key (jax.random.PRNGKey(seed)), got {type(key).__name__} "
                        f"of shape {shape} and dtype {dtype}")


def init_params(
    key: jax.Array,
    d_in: int,
    width: int,
    n_layers: int,
    n_heads: int | Sequence[int],
    *,
    d_head: int | None = None,
    mlp_width: int | None = None,
    use_mlp: bool = True,
    use_layer_norm: bool = True,
    std: float = 0.02,
    dtype: Any = None,
) -> Params:
    """Random GPT-2-style parameters (normal(0, std) weights, zero biases, unit LN scales);
    ``use_mlp=False, use_layer_norm=False`` gives the linear-attention-only architecture.

    Derived in :doc:`/book/sparse_regression`.
    """
    check_key(key)
    d_in, width = as_positive_int(d_in, "d_in"), as_positive_int(width, "width")
    n_layers = as_nonnegative_int(n_layers, "n_layers")
    check_size(n_layers, 10**4, "the list of layers")
    if isinstance(n_heads, int | np.integer) and not isinstance(n_heads, bool):
        check_size(as_positive_int(n_heads, "n_heads"), 2**16, "the heads of one layer")
        heads = [int(n_heads)] * n_layers
    elif isinstance(n_heads, Sequence) and not isinstance(n_heads, str | bytes):
        heads = [as_positive_int(h, "n_heads entry") for h in n_heads]
        if len(heads) != n_layers:
            raise ValueError(f"n_heads must give one head count per layer ({n_layers}), got {len(heads)}")
    else:
        raise TypeError(f"n_heads must be a positive integer or one per layer, got {n_heads!r}")
    check_size(max(heads, default=1), 2**16, "the heads of one layer")
    d_head = None if d_head is None else as_positive_int(d_head, "d_head")
    mlp_width = None if mlp_width is None else as_positive_int(mlp_width, "mlp_width")
    use_mlp, use_layer_norm = as_bool(use_mlp, "use_mlp"), as_bool(use_layer_norm, "use_layer_norm")
    std = as_nonnegative_float(std, "std")
    if dtype is not None and not np.issubdtype(np.dtype(dtype), np.floating):
        raise TypeError(f"dtype must be a floating-point dtype, got {dtype!r}")
    dtype = dtype or (jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
    k_dim = d_head or max(1, width // max(heads, default=1))
    F = mlp_width or 4 * width
    shapes: list[tuple[int, ...]] = [(d_in, width), (width,)]
    for h in heads:
        shapes += (
            [(h, width, k_dim)] * 3
            + [(h, k_dim, width)]
            + ([(width, F), (F, width)] if use_mlp else [])
        )
    check_size(sum(int(np.prod(sh, dtype=object)) for sh in shapes), MAX_ELEMENTS, "the parameters")
    # one draw for all weights (eager per-shape draws would compile once per shape)
    flat = np.asarray(jax.random.normal(key, (sum(int(np.prod(sh)) for sh in shapes),), dtype))
    offsets = iter(np.cumsum([0] + [int(np.prod(sh)) for sh in shapes]))
    start = next(offsets)
    draws = []
    for sh in shapes:
        stop = next(offsets)
        draws.append(std * flat[start:stop].reshape(sh))
        start = stop
    draws_iter = iter(draws)

    def normal(shape: tuple[int, ...]) -> jax.Array:
        w = next(draws_iter)
        assert w.shape == shape
        return jnp.asarray(w, dtype)

    def ln() -> Params:
        return {"scale": jnp.ones(width, dtype), "bias": jnp.zeros(width, dtype)}

    embed_W, readout_w = normal((d_in, width)), normal((width,))
    layers = []
    for h in heads:
        layer: Params = {
            "attn": {
                "W_Q": normal((h, width, k_dim)),
                "W_K": normal((h, width, k_dim)),
                "W_V": normal((h, width, k_dim)),
                "W_O": normal((h, k_dim, width)),
            }
        }
        if use_layer_norm:
            layer["ln1"] = ln()
        if use_mlp:
            layer["mlp"] = {
                "W1": normal((width, F)),
                "b1": jnp.zeros(F, dtype),
                "W2": normal((F, width)),
                "b2": jnp.zeros(width, dtype),
            }
            if use_layer_norm:
                layer["ln2"] = ln()
        layers.append(layer)
    params: Params = {
        "embed": {"W": embed_W, "b": jnp.zeros(width, dtype)},
        "layers": layers,
        "readout": {"w": readout_w, "b": jnp.zeros((), dtype)},
    }
    if use_layer_norm:
        params["ln_f"] = ln()
    return params


# ---- constructions for sparse regression (our construction, see the chapter) -----------------
# Stream layout of width D = 2d + 1: x in slots 0..d-1, the reweighted x̃ = r̂∘x in slots d..2d-1,
# the label y in slot 2d. Column notation: W^{PV} Ĝ W^{KQ} z.


def _float_array(value: Any, name: str) -> np.ndarray:
    """A finite float64 copy of a real array (ragged lists, strings, complex, NaN/inf rejected)."""
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name} must be a real array, could not convert it ({exc})") from exc
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real array, got dtype {arr.dtype}")
    arr = arr.astype(float)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    return arr


def _stream_width(d: Any) -> int:
    d = as_positive_int(d, "d")
    check_size((2 * d + 1) ** 2, MAX_ELEMENTS, "a layer of the construction")
    return d


def linear_head_params(W_PV: Sequence[np.ndarray], W_KQ: Sequence[np.ndarray]) -> Params:
    """Attention params of ``h`` linear heads given in the theory's form ``W^{PV}_j Ĝ W^{KQ}_j z``
    (each D×D): ``W_Q = (W^{KQ})ᵀ``, ``W_K = W_V = I``, ``W_O = (W^{PV})ᵀ``.

    Derived in :doc:`/book/sparse_regression`.
    """
    PV, KQ = _float_array(W_PV, "W_PV"), _float_array(W_KQ, "W_KQ")
    if PV.ndim != 3 or PV.shape != KQ.shape or PV.shape[1] != PV.shape[2] or PV.size == 0:
        raise ValueError(f"W_PV and W_KQ must both be (h, D, D), got {PV.shape} and {KQ.shape}")
    h, D, _ = PV.shape
    eye = np.broadcast_to(np.eye(D), (h, D, D))
    return {
        k: jnp.asarray(v)
        for k, v in {
            "W_Q": KQ.transpose(0, 2, 1),
            "W_K": eye,
            "W_V": eye,
            "W_O": PV.transpose(0, 2, 1),
        }.items()
    }


def construction_embedding(d: int) -> Params:
    """Read-in ``(x, y) ↦ (x, 0_d, y)`` into the stream of width ``2d + 1``.

    Derived in :doc:`/book/sparse_regression`.
    """
    d = _stream_width(d)
    W = np.zeros((d + 1, 2 * d + 1))
    W[np.arange(d), np.arange(d)] = 1.0
    W[d, 2 * d] = 1.0
    return {"W": jnp.asarray(W), "b": jnp.zeros(2 * d + 1)}


def preprocess_layer(d: int, heads: Sequence[int] | None = None) -> Params:
    """``d`` linear heads (or only those in ``heads``): head ``j`` has ``W^{KQ}_j = e_y e_jᵀ``,
    ``W^{PV}_j = e_{x̃_j} e_jᵀ`` and adds ``r̂_j x_j`` to slot ``x̃_j`` of every token.

    Derived in :doc:`/book/sparse_regression`.
    """
    d = _stream_width(d)
    D = 2 * d + 1
    if heads is not None and (isinstance(heads, str | bytes) or not isinstance(heads, Sequence)):
        raise TypeError(f"heads must be None or a list of coordinates, got {heads!r}")
    heads = list(range(d)) if heads is None else list(heads)
    for j in heads:
        if isinstance(j, bool) or not isinstance(j, int | np.integer) or not 0 <= j < d:
            raise ValueError(f"heads must be coordinates in [0, {d}), got {j!r}")
    if not heads or len(set(heads)) != len(heads):
        raise ValueError(f"heads must be a non-empty list of distinct coordinates, got {heads!r}")
    PV, KQ = np.zeros((len(heads), D, D)), np.zeros((len(heads), D, D))
    for m, j in enumerate(heads):
        KQ[m, 2 * d, j] = 1.0
        PV[m, d + j, j] = 1.0
    return {"attn": linear_head_params(PV, KQ)}


def gd_layer(d: int, eta: float) -> Params:
    """One linear head with ``W^{KQ} = Σ_j e_{x̃_j} e_{x̃_j}ᵀ``, ``W^{PV} = −η e_y e_yᵀ``: every
    label
    slot moves by ``−η (1/n) Σ_i y_i ⟨x̃_i, x̃_t⟩``, one gradient step (von Oswald et al.).

    Derived in :doc:`/book/sparse_regression`.
    """
    d = _stream_width(d)
    eta = _finite_float(eta, "eta")
    D = 2 * d + 1
    KQ = np.zeros((1, D, D))
    KQ[0, np.arange(d, 2 * d), np.arange(d, 2 * d)] = 1.0
    PV = np.zeros((1, D, D))
    PV[0, 2 * d, 2 * d] = -float(eta)
    return {"attn": linear_head_params(PV, KQ)}


def _finite_float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not np.isfinite(float(value)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def construct_pto_transformer(d: int, eta: float, K: int) -> Params:
    """The linear-attention transformer of the chapter: read-in, one ``d``-head preprocessing layer,
    ``K`` single-head gradient layers; the prediction is minus the query's label slot.

    Derived in :doc:`/book/sparse_regression`.
    """
    d = _stream_width(d)
    K = as_nonnegative_int(K, "K")
    eta = _finite_float(eta, "eta")
    D = 2 * d + 1
    check_size(4 * (K + 1) * d * D * D, MAX_ELEMENTS, f"the construction with K={K} layers")
    readout = np.zeros(D)
    readout[2 * d] = -1.0
    return {
        "embed": construction_embedding(d),
        "layers": [preprocess_layer(d)] + [gd_layer(d, eta) for _ in range(K)],
        "readout": {"w": jnp.asarray(readout), "b": jnp.zeros(())},
    }


# ---- least-squares fit of h < d heads to the preprocessing map ---------------------------------


def _prompts(X: Any, y: Any, x_query: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X, y, x_query = _float_array(X, "X"), _float_array(y, "y"), _float_array(x_query, "x_query")
    if X.ndim != 3 or X.size == 0 or y.shape != X.shape[:2] or x_query.shape != (X.shape[0], X.shape[2]):
        raise ValueError(f"need X (T, n, d), y (T, n), x_query (T, d), non-empty; got {X.shape}, {y.shape}, "
                         f"{x_query.shape}")
    return X, y, x_query


def _heads(U: Any, V: Any, d: int) -> tuple[np.ndarray, np.ndarray]:
    U, V = _float_array(U, "U"), _float_array(V, "V")
    if U.ndim != 3 or U.shape[1:] != (d, d + 1) or V.shape != (U.shape[0], d + 1, d) or U.shape[0] < 1:
        raise ValueError(f"need U (h, {d}, {d + 1}) and V (h, {d + 1}, {d}), got {U.shape} and {V.shape}")
    return U, V


def preprocess_head_outputs(
    U: np.ndarray, V: np.ndarray, X: np.ndarray, y: np.ndarray, x_query: np.ndarray
) -> np.ndarray:
    """``Σ_j U_j Ĝ V_j x_q`` for heads ``U`` (h, d, d+1), ``V`` (h, d+1, d) and tokens ``(x_i,
    y_i)``;
    returns (T, d).

    Derived in :doc:`/book/sparse_regression`.
    """
    X, y, x_query = _prompts(X, y, x_query)
    U, V = _heads(U, V, X.shape[2])
    n = X.shape[1]
    Z = np.concatenate([X, y[..., None]], axis=-1)
    G = np.einsum("tib,tic->tbc", Z, Z) / n
    return np.einsum("jab,tjb->ta", U, np.einsum("tbc,jce,te->tjb", G, V, x_query, optimize=True))


def fit_preprocess_heads(
    h: int,
    X: np.ndarray,
    y: np.ndarray,
    x_query: np.ndarray,
    rng: np.random.Generator,
    *,
    n_iter: int = 200,
    restarts: int = 3,
    ridge: float = 1e-12,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Alternating least squares for ``h`` linear heads ``Σ_j U_j Ĝ V_j x_q ≈ r̂∘x_q`` on the given
    prompts (each half-step is an exact linear least-squares solve). The first start is ``h`` of
    the construction's heads when ``h < d`` (exact on those coordinates), the others are
    random (for ``h >= d`` all starts are random, so finding an exact fit is not handed to it).
    Returns the best ``(U, V)`` and its relative error ``Σ‖out − r̂∘x_q‖² / Σ‖r̂∘x_q‖²``.

    Derived in :doc:`/book/sparse_regression`.
    """
    h = as_positive_int(h, "h")
    X, y, x_query = _prompts(X, y, x_query)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    n_iter, restarts = as_positive_int(n_iter, "n_iter"), as_positive_int(restarts, "restarts")
    check_size(n_iter * restarts, 10**6, "the alternating least-squares iterations (n_iter × restarts)")
    ridge = as_nonnegative_float(ridge, "ridge")
    T, n, d = X.shape
    check_size(T * d * h * (d + 1) * d, MAX_ELEMENTS, "the least-squares system")
    Z = np.concatenate([X, y[..., None]], axis=-1)
    G = np.einsum("tib,tic->tbc", Z, Z) / n  # (T, d+1, d+1)
    target = (np.einsum("tni,tn->ti", X, y) / n) * x_query  # r̂ ∘ x_q
    scale = float(np.sum(target**2))

    def lstsq(A: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.linalg.solve(A.T @ A + ridge * scale * np.eye(A.shape[1]), A.T @ b)

    best: tuple[np.ndarray, np.ndarray, float] | None = None
    for start in range(restarts):
        V = rng.standard_normal((h, d + 1, d))
        if start == 0 and h < d:
            V = 1e-3 * V
            for j in range(min(h, d)):  # head j of the construction: e_y e_jᵀ
                V[j, d, j] = 1.0
        U = np.zeros((h, d, d + 1))
        for _ in range(n_iter):
            Vx = np.einsum("jce,te->tjc", V, x_query)
            F = np.einsum("tbc,tjc->tjb", G, Vx).reshape(T, h * (d + 1))
            U = lstsq(F, target).T.reshape(d, h, d + 1).transpose(1, 0, 2)
            UG = np.einsum("jab,tbc->tajc", U, G)
            Phi = (UG[..., None] * x_query[:, None, None, None, :]).reshape(T * d, h * (d + 1) * d)
            V = lstsq(Phi, target.reshape(-1)).reshape(h, d + 1, d)
        err = float(np.sum((preprocess_head_outputs(U, V, X, y, x_query) - target) ** 2) / scale)
        if best is None or err < best[2]:
            best = (U, V, err)
    assert best is not None
    return best


def fitted_heads_layer(U: np.ndarray, V: np.ndarray) -> Params:
    """The layer (stream of width ``2d + 1``) whose heads are ``U_j Ĝ V_j x``: ``W^{PV}_j`` writes
    ``U_j`` into the ``x̃`` slots, ``W^{KQ}_j`` reads ``x`` from the token; ``Ĝ`` over ``(x,
    y)``."""
    U = _float_array(U, "U")
    if U.ndim != 3 or U.size == 0:
        raise ValueError(f"U must be (h, d, d+1), got shape {U.shape}")
    U, V = _heads(U, V, U.shape[1])
    h, d, _ = U.shape
    D = 2 * d + 1
    xy = np.r_[np.arange(d), 2 * d]  # stream slots of (x, y)
    PV, KQ = np.zeros((h, D, D)), np.zeros((h, D, D))
    PV[np.ix_(np.arange(h), np.arange(d, 2 * d), xy)] = U
    KQ[np.ix_(np.arange(h), xy, np.arange(d))] = V
    return {"attn": linear_head_params(PV, KQ)}
