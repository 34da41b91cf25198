"""The JAX transformer: shapes, jit/vmap, head masks, attention kinds, validation, and the
constructions of the sparse-regression chapter (including that wrong weights are caught)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from softmax_icl import sparse_regression as sr
from softmax_icl import transformer as tf
from softmax_icl.verify import sparse_regression as checks

jax.config.update("jax_enable_x64", True)


@pytest.fixture(scope="module")
def prompts():
    rng = np.random.default_rng(0)
    t = sr.sample_tasks(8, 13, 5, 2, 0.1, rng)
    return tf.make_prompt(t.X[:, :12], t.y[:, :12], t.X[:, 12]), t


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
    PV, KQ = checks.theory_matrices(attn)
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
    ev = checks.check_construction()
    assert ev.value <= 1e-10


def test_construction_small_case_every_K(prompts) -> None:
    E, t = prompts
    X, y, xq = t.X[:, :12], t.y[:, :12], t.X[:, 12]
    for K in range(4):
        got = np.asarray(tf.predict(tf.construct_pto_transformer(5, 0.2, K), E))
        want = np.einsum("td,td->t", sr.preprocess_then_optimize(X, y, 0.2, K), xq)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    "check",
    [
        checks.check_preprocess_heads_symbolic,
        checks.check_preprocess_heads_numeric,
        checks.check_gd_head_symbolic,
        checks.check_gd_layers_numeric,
        checks.check_heads_necessary_reduction,
        checks.check_one_head_impossible_groebner,
    ],
)
def test_construction_checks_pass(check) -> None:
    assert check().value <= 1e-12


def test_wrong_preprocess_weights_are_caught() -> None:
    def shifted(d, heads=None):  # head j writes into slot x̃_{j+1}: a permutation bug
        layer = tf.preprocess_layer(d)
        layer["attn"]["W_O"] = jnp.roll(layer["attn"]["W_O"], 1, axis=2)
        return layer

    with pytest.raises(AssertionError):
        checks.check_preprocess_heads_symbolic(layer=shifted)
    with pytest.raises(AssertionError):
        checks.check_preprocess_heads_numeric(layer=shifted)
    with pytest.raises(AssertionError):
        checks.check_preprocess_heads_numeric(
            layer=lambda d: tf.preprocess_layer(d, heads=range(d - 1))
        )


def test_wrong_gd_head_is_caught() -> None:
    with pytest.raises(AssertionError):
        checks.check_gd_head_symbolic(layer=lambda d, eta: tf.gd_layer(d, -eta))


def test_wrong_transformer_is_caught() -> None:
    def no_preprocessing(params, E):  # skip the d-head layer: plain GD on x̃ = 0
        return tf.predict({**params, "layers": params["layers"][1:]}, E)

    with pytest.raises(AssertionError):
        checks.check_construction(n_prompts=32, predict=no_preprocessing)


def test_heads_fit_check() -> None:
    d = 3
    curve = checks.fit_heads_curve(d=d, n_fit=300, n_eval=300, n_iter=40, restarts=1)
    ev = checks.check_heads_fit(curve, d=d)
    assert ev.value <= 1e-10
    # a fabricated curve in which d-1 heads fit exactly contradicts the theorem and is rejected
    with pytest.raises(AssertionError):
        checks.check_heads_fit({1: 0.5, 2: 1e-12, 3: 1e-12}, d=d)
    with pytest.raises(AssertionError):
        checks.check_heads_fit({1: 0.5, 2: 0.2, 3: 1e-3}, d=d)
