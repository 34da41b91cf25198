"""The JAX transformer: shapes, jit/vmap, head masks, attention kinds, validation, and the
constructions of the sparse-regression chapter against the algorithm they implement (and wrong
weights told apart)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from softmax_icl import sparse_regression as sr
from softmax_icl import transformer as tf
from softmax_icl.checks import assert_close

jax.config.update("jax_enable_x64", True)


@pytest.fixture(scope="module")
def prompts():
    rng = np.random.default_rng(0)
    t = sr.sample_tasks(8, 13, 5, 2, 0.1, rng)
    return tf.make_prompt(t.X[:, :12], t.y[:, :12], t.X[:, 12]), t


def theory_matrices(attn) -> tuple[np.ndarray, np.ndarray]:
    """``(W^{PV}_j, W^{KQ}_j) = ((W_V W_O)ᵀ, W_K W_Qᵀ)`` of every head of a layer."""
    PV = np.einsum("hDv,hvE->hED", np.asarray(attn["W_V"]), np.asarray(attn["W_O"]))
    KQ = np.einsum("hDk,hEk->hDE", np.asarray(attn["W_K"]), np.asarray(attn["W_Q"]))
    return PV, KQ


def random_prompts(n_prompts: int, n: int, d: int, seed: int):
    t = sr.sample_tasks(n_prompts, n + 1, d, 3, 0.1, np.random.default_rng(seed))
    X, y, xq = t.X[:, :n], t.y[:, :n], t.X[:, n]
    return X, y, xq, tf.make_prompt(X, y, xq)


def safe_step(X: np.ndarray, y: np.ndarray) -> float:
    """Half the inverse of the largest curvature of the reweighted problems."""
    r = sr.empirical_correlation(X, y)
    return 0.5 / float(np.max(np.linalg.eigvalsh(sr.gram(X * r[:, None, :], y)[0])))


def test_make_prompt_layout(prompts) -> None:
    E, t = prompts
    assert E.shape == (8, 13, 6)
    np.testing.assert_array_equal(np.asarray(E[:, :12, :5]), t.X[:, :12])
    np.testing.assert_array_equal(np.asarray(E[:, :12, 5]), t.y[:, :12])
    np.testing.assert_array_equal(np.asarray(E[:, 12]), np.c_[t.X[:, 12], np.zeros(8)])


@pytest.mark.parametrize("attention", ["linear", "softmax"])
@pytest.mark.parametrize("mlp_ln", [True, False])
def test_forward_batched_equals_single_and_jits(prompts, attention, mlp_ln) -> None:
    E, _ = prompts
    params = tf.init_params(
        jax.random.PRNGKey(0), 6, 16, 2, [3, 1], use_mlp=mlp_ln, use_layer_norm=mlp_ln, std=0.3
    )
    batch = tf.predict(params, E, attention=attention)  # vmapped and jitted
    single = jax.jit(tf.predict, static_argnames="attention")
    for b in (0, 5):
        np.testing.assert_allclose(
            float(single(params, E[b], attention=attention)), float(batch[b]), rtol=1e-12
        )
    assert batch.shape == (8,) and tf.forward(params, E, attention=attention).shape == (8, 13, 16)
    if mlp_ln and attention == "softmax":  # gradients flow through every part (as training needs)
        loss = jax.jit(jax.grad(lambda p: jnp.sum(tf.predict(p, E, attention=attention) ** 2)))
        g = loss(params)
        assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(g))
        assert float(jnp.abs(g["layers"][0]["attn"]["W_Q"]).max()) > 0


def test_linear_attention_is_the_theory_form(prompts) -> None:
    """o_t = W^{PV} Ĝ W^{KQ} z_t with Ĝ over the context tokens only (query excluded)."""
    E, _ = prompts
    params = tf.init_params(
        jax.random.PRNGKey(1), 6, 6, 1, 3, use_mlp=False, use_layer_norm=False, std=0.5
    )
    attn = params["layers"][0]["attn"]
    Z = np.asarray(E[0])
    out = np.asarray(tf.attention_layer(attn, jnp.asarray(Z), "linear"))
    PV, KQ = theory_matrices(attn)
    G = Z[:-1].T @ Z[:-1] / (Z.shape[0] - 1)
    want = sum(Z @ (PV[h] @ G @ KQ[h]).T for h in range(3))
    np.testing.assert_allclose(out, want, rtol=1e-12)


def test_softmax_attention_rows_are_convex_combinations(prompts) -> None:
    E, _ = prompts
    D = 6
    eye = jnp.eye(D)[None]
    attn = {"W_Q": 3.0 * eye, "W_K": eye, "W_V": eye, "W_O": eye}
    out = np.asarray(tf.attention_layer(attn, E[0], "softmax"))
    ctx = np.asarray(E[0, :-1])
    # every output row is a convex combination of the context tokens: inside their bounding box
    assert np.all(out <= ctx.max(axis=0) + 1e-12) and np.all(out >= ctx.min(axis=0) - 1e-12)
    scores = np.asarray(E[0]) @ (3.0 * ctx.T) / np.sqrt(D)
    A = np.exp(scores - scores.max(axis=1, keepdims=True))
    A /= A.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(out, A @ ctx, rtol=1e-12)


def test_query_does_not_influence_context_tokens(prompts) -> None:
    E, _ = prompts
    params = tf.init_params(jax.random.PRNGKey(2), 6, 8, 1, 2, std=0.3)
    E2 = E.at[:, -1, :].set(7.0)
    for attention in ("linear", "softmax"):
        Z1, Z2 = (
            tf.forward(params, E, attention=attention),
            tf.forward(params, E2, attention=attention),
        )
        np.testing.assert_allclose(np.asarray(Z1[:, :-1]), np.asarray(Z2[:, :-1]), rtol=1e-13)


def test_head_mask(prompts) -> None:
    E, _ = prompts
    d = 5
    params = tf.construct_pto_transformer(d, 0.0, 0)
    ones = [jnp.ones(d)]
    np.testing.assert_allclose(
        np.asarray(tf.forward(params, E, head_mask=ones)), np.asarray(tf.forward(params, E))
    )
    off = np.ones(d)
    off[2] = 0.0
    Z = np.asarray(tf.forward(params, E, head_mask=[off]))
    assert np.all(Z[:, :, d + 2] == 0) and np.any(Z[:, :, d + 1] != 0)
    # the mask is a traced argument: jit with a mask compiles once for all masks
    f = jax.jit(lambda m: tf.forward(params, E, head_mask=[m]))
    np.testing.assert_allclose(np.asarray(f(jnp.asarray(off))), Z)
    with pytest.raises(ValueError, match="one entry per head"):
        tf.forward(params, E, head_mask=[jnp.ones(d + 1)])
    with pytest.raises(ValueError, match="one vector per layer"):
        tf.forward(params, E, head_mask=[])


def test_validation(prompts) -> None:
    E, _ = prompts
    params = tf.construct_pto_transformer(5, 0.1, 1)
    with pytest.raises(ValueError, match="attention"):
        tf.predict(params, E, attention="cosine")
    with pytest.raises(ValueError, match="columns"):
        tf.predict(params, E[..., :-1])
    with pytest.raises(TypeError, match="floating"):
        tf.predict(params, np.ones((13, 6), dtype=int))
    with pytest.raises(ValueError, match="at least one context token"):
        tf.predict(params, E[:, -1:])
    bad = {
        **params,
        "layers": [{"attn": {**params["layers"][0]["attn"], "W_O": jnp.ones((5, 1, 3))}}],
    }
    with pytest.raises(ValueError, match="W_O"):
        tf.predict(bad, E)
    with pytest.raises(ValueError, match="X"):
        tf.make_prompt(np.ones((3, 4)), np.ones(2), np.ones(4))


def test_layer_norm() -> None:
    Z = jnp.asarray(np.random.default_rng(3).standard_normal((4, 9)))
    out = np.asarray(tf.layer_norm(Z, jnp.ones(9), jnp.zeros(9)))
    np.testing.assert_allclose(out.mean(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(
        out.var(axis=1), 1 / (1 + tf.LN_EPS / np.asarray(Z).var(axis=1)), rtol=1e-12
    )


# ---- the constructions -----------------------------------------------------------------------


def test_construction_agrees_with_algorithm_to_1e_10() -> None:
    X, y, xq, E = random_prompts(128, 30, 20, seed=7)
    eta = safe_step(X, y)
    got = np.asarray(tf.predict(tf.construct_pto_transformer(20, eta, 10), E))
    want = np.einsum("td,td->t", sr.preprocess_then_optimize(X, y, eta, 10), xq)
    assert_close(got, want, rtol=1e-10, name="transformer vs preprocess-then-optimize")


def test_construction_small_case_every_K(prompts) -> None:
    E, t = prompts
    X, y, xq = t.X[:, :12], t.y[:, :12], t.X[:, 12]
    for K in range(4):
        got = np.asarray(tf.predict(tf.construct_pto_transformer(5, 0.2, K), E))
        want = np.einsum("td,td->t", sr.preprocess_then_optimize(X, y, 0.2, K), xq)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def first_layer_stream(layer, E: jax.Array) -> np.ndarray:
    params = tf.construct_pto_transformer(E.shape[-1] - 1, 0.0, 0)
    params["layers"] = [layer]
    return np.asarray(tf.forward(params, E))


def preprocessed(E: jax.Array, X: np.ndarray, y: np.ndarray, heads=None) -> np.ndarray:
    """The stream (x, r̂∘x, y) the d-head layer must produce (only the slots of ``heads``)."""
    E = np.asarray(E)
    d = X.shape[2]
    weights = sr.empirical_correlation(X, y)
    if heads is not None:
        weights = weights * np.isin(np.arange(d), list(heads))
    return np.concatenate([E[..., :d], weights[:, None, :] * E[..., :d], E[..., d:]], axis=2)


def test_preprocess_layer_is_the_stated_heads_and_adds_rhat_x() -> None:
    d = 4
    PV, KQ = theory_matrices(tf.preprocess_layer(d)["attn"])
    e = np.eye(2 * d + 1)
    for j in range(d):
        np.testing.assert_array_equal(KQ[j], np.outer(e[2 * d], e[j]))
        np.testing.assert_array_equal(PV[j], np.outer(e[d + j], e[j]))
    X, y, _, E = random_prompts(64, 15, d, seed=3)
    assert_close(first_layer_stream(tf.preprocess_layer(d), E), preprocessed(E, X, y),
                 rtol=1e-13, name="d heads add r̂∘x")
    assert_close(first_layer_stream(tf.preprocess_layer(d, heads=[0, 2]), E),
                 preprocessed(E, X, y, heads=[0, 2]), rtol=1e-13, name="heads 0 and 2")


def test_gd_layers_are_gradient_steps_on_the_labels() -> None:
    d = 5
    X, y, xq, E = random_prompts(32, 20, d, seed=6)
    r = sr.empirical_correlation(X, y)
    X_t, xq_t = X * r[:, None, :], xq * r
    eta = safe_step(X, y)
    for k in (1, 3):
        labels = np.asarray(tf.forward(tf.construct_pto_transformer(d, eta, k), E))[..., 2 * d]
        u_k = sr.gradient_descent(X_t, y, eta, k)
        want = np.concatenate([y - np.einsum("tnd,td->tn", X_t, u_k),
                               -np.einsum("td,td->t", xq_t, u_k)[:, None]], axis=1)
        assert_close(labels, want, rtol=1e-12, name=f"labels after {k} gradient layers")


def test_wrong_preprocess_weights_are_told_apart() -> None:
    d = 4
    X, y, _, E = random_prompts(32, 15, d, seed=3)
    shifted = tf.preprocess_layer(d)  # head j writes into slot x̃_{j+1}: a permutation bug
    shifted["attn"]["W_O"] = jnp.roll(shifted["attn"]["W_O"], 1, axis=2)
    for layer in (shifted, tf.preprocess_layer(d, heads=range(d - 1))):
        with pytest.raises(AssertionError):
            assert_close(first_layer_stream(layer, E), preprocessed(E, X, y), rtol=1e-6)


def test_wrong_gd_head_and_missing_preprocessing_are_told_apart() -> None:
    d = 5
    X, y, xq, E = random_prompts(32, 20, d, seed=7)
    eta = safe_step(X, y)
    want = np.einsum("td,td->t", sr.preprocess_then_optimize(X, y, eta, 3), xq)
    ascent = tf.construct_pto_transformer(d, eta, 3)
    D = 2 * d + 1
    PV, KQ = np.zeros((1, D, D)), np.zeros((1, D, D))
    PV[0, 2 * d, 2 * d] = eta  # +η e_y e_yᵀ: a gradient ascent step
    KQ[0, range(d, 2 * d), range(d, 2 * d)] = 1.0
    ascent["layers"][1:] = [{"attn": tf.linear_head_params(PV, KQ)}] * 3
    params = tf.construct_pto_transformer(d, eta, 3)
    no_preprocessing = {**params, "layers": params["layers"][1:]}
    for wrong in (ascent, no_preprocessing):
        with pytest.raises(AssertionError):
            assert_close(np.asarray(tf.predict(wrong, E)), want, rtol=1e-6)


def test_fitted_heads_need_d_heads() -> None:
    d, n = 3, 10
    t = sr.sample_tasks(300, n + 1, d, 2, 0.1, np.random.default_rng(5))
    X, y, xq = t.X[:, :n], t.y[:, :n], t.X[:, n]
    rng = np.random.default_rng(0)
    errors = {}
    for h in range(1, d + 1):
        U, V, errors[h] = tf.fit_preprocess_heads(h, X, y, xq, rng, n_iter=50, restarts=1)
        params = tf.construct_pto_transformer(d, 0.0, 0)
        params["layers"] = [tf.fitted_heads_layer(U, V)]
        out = np.asarray(tf.forward(params, tf.make_prompt(X, y, xq)))[:, -1, d:2 * d]
        assert_close(out, tf.preprocess_head_outputs(U, V, X, y, xq), rtol=1e-10,
                     name=f"fitted layer, h = {h}")
    assert errors[d] <= 1e-10
    assert min(errors[h] for h in range(1, d)) >= 1e-2


def test_attention_over_the_whole_prompt_and_a_score_scale() -> None:
    """keys_include_queries: the keys and values are every token (the query attends to itself too);
    score_scale replaces 1/√k. Compared with the formula written out for one head."""
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        p = {k: jnp.asarray(rng.standard_normal(sh)) for k, sh in
             {"W_Q": (1, 3, 2), "W_K": (1, 3, 2), "W_V": (1, 3, 2), "W_O": (1, 2, 3)}.items()}
        Z = jnp.asarray(rng.standard_normal((5, 3)))
        for keys, include in ((Z, True), (Z[:-1], False)):
            scores = (Z @ p["W_Q"][0]) @ (keys @ p["W_K"][0]).T * 0.7
            want = jax.nn.softmax(scores, axis=-1) @ (keys @ p["W_V"][0]) @ p["W_O"][0]
            got = tf.attention_layer(p, Z, "softmax", keys_include_queries=include, score_scale=0.7)
            np.testing.assert_allclose(got, want, rtol=1e-12)
        linear = tf.attention_layer(p, Z, "linear", keys_include_queries=True)
        np.testing.assert_allclose(linear, (Z @ p["W_Q"][0]) @ (Z @ p["W_K"][0]).T / 5 @ (Z @ p["W_V"][0])
                                   @ p["W_O"][0], rtol=1e-12)
        only = tf.attention_layer(p, Z, "softmax", queries=2, keys_include_queries=True, queries_only=True)
        np.testing.assert_allclose(only, tf.attention_layer(p, Z, "softmax", queries=2,
                                                            keys_include_queries=True)[-2:], rtol=1e-12)
        for bad in (float("nan"), "1", True):
            with pytest.raises(ValueError, match="score_scale"):
                tf.attention_layer(p, Z, "softmax", score_scale=bad)
        with pytest.raises((TypeError, ValueError), match="keys_include_queries"):
            tf.attention_layer(p, Z, "softmax", keys_include_queries="yes")
