"""The attention-vs-GD experiment: the JAX models against the NumPy library, the hand-set layer and the
metrics, validation at the public boundary, the command line, a reduced run, the committed result files."""

from __future__ import annotations

import json
import math
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from softmax_icl import __version__, lipschitz
from softmax_icl import attention_vs_gd as ag
from softmax_icl import softmax_regression as sr
from softmax_icl.checks import assert_close, numerical_gradient

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT / "book" / "data" / "attention_vs_gd"
REDUCED = ag.Config(
    name="reduced",
    n=25,
    d=20,
    score_labels=False,
    mask_self=True,
    steps=300,
    eval_every=50,
    eval_tasks=500,
    tune_tasks=2048,
    seeds=(0, 1),
)


@pytest.fixture(autouse=True)
def x64():
    """The tests compare with the float64 NumPy library; the module itself never sets the global flag."""
    with jax.enable_x64(True):
        yield


def tasks(n: int = 200, d: int = 20, count: int = 4, seed: int = 0) -> ag.Tasks:
    return ag.sample_tasks(jax.random.PRNGKey(seed), count, n, d)


# ---- the GD model is one step of the library's gradient on the library's loss ---------------------


def check_gd_model(
    gd_weights=ag.gd_weights, gd_prediction=ag.gd_prediction, n: int = 200, eta: float = 3000.0
) -> float:
    """``x₁`` and ``ŷ_GD`` against ``lipschitz.gradient_step`` and ``softmax_regression.softmax_prediction``."""
    t = tasks(n=n)
    worst = 0.0
    for i in range(t.A.shape[0]):
        A, b = np.asarray(t.A[i]), np.asarray(t.b[i])
        x1 = lipschitz.gradient_step(A[:n], np.zeros(A.shape[1]), b / n, eta)
        np.testing.assert_allclose(
            x1, -eta * sr.normalized_gradient(A[:n], np.zeros(A.shape[1]), b / n), rtol=1e-13
        )
        r1 = assert_close(np.asarray(gd_weights(eta, t.A[i], t.b[i])), x1, rtol=1e-12, name="x1")
        y_lib = (n + 1) * sr.softmax_prediction(A, x1)[-1]
        r2 = assert_close(
            float(gd_prediction(eta, t.A[i], t.b[i])), y_lib, rtol=1e-12, name="GD prediction"
        )
        worst = max(worst, r1.worst_relative_error, r2.worst_relative_error)
    return worst


def test_gd_model_is_one_library_gradient_step() -> None:
    assert check_gd_model() <= 1e-12


def test_a_gd_step_without_the_centering_term_is_caught() -> None:
    def wrong_weights(eta, A, b):  # forgets the −⟨f, c⟩ f part of Aᵀ J c
        n = b.shape[-1]
        return eta * jnp.einsum("k,kd->d", b / n, A[:n]) / n

    with pytest.raises(AssertionError):
        check_gd_model(gd_weights=wrong_weights)


def test_a_gd_prediction_normalized_over_the_context_only_is_caught() -> None:
    def wrong_prediction(eta, A, b):
        n = b.shape[-1]
        u = A @ ag.gd_weights(eta, A, b)
        return (n + 1) * jnp.exp(u[n]) / jnp.sum(jnp.exp(u[:n]))

    with pytest.raises(AssertionError):
        check_gd_model(gd_prediction=wrong_prediction)


# ---- the attention layer is the library's layer ------------------------------------------------------


@pytest.mark.parametrize("centered", [True, False])
def test_attention_prediction_is_the_library_layer(centered: bool) -> None:
    t = tasks(n=30, d=6)
    for i in range(t.A.shape[0]):
        params = ag.init_params(jax.random.PRNGKey(i), 6, init_scale=0.7)
        E = np.asarray(ag.tokens(t.A[i], t.b[i], centered))
        H = lipschitz.attention_layer(E, np.asarray(params["W"]), np.asarray(params["W_V"]))
        expected = H[-1, -1] + (1.0 if centered else 0.0)
        assert_close(
            float(ag.attention_prediction(params, t.A[i], t.b[i], centered)),
            expected,
            rtol=1e-12,
            name="attention prediction",
        )


def test_tokens_layout() -> None:
    t = tasks(n=5, d=3, count=1)
    E = np.asarray(ag.tokens(t.A[0], t.b[0]))
    assert E.shape == (6, 4)
    np.testing.assert_array_equal(E[:, :3], np.asarray(t.A[0]))
    np.testing.assert_allclose(E[:5, 3], np.asarray(t.b[0]) - 1.0)
    assert E[5, 3] == 0.0


# ---- sensitivities -------------------------------------------------------------------------------------


def check_gd_sensitivity(closed_form=ag.gd_sensitivity, eta: float = 3000.0) -> float:
    """The closed form ``(n+1)σ(1−σ)x₁`` against JAX autodiff and against central finite differences."""
    t = tasks(n=200, d=20, count=5)
    closed = np.asarray(closed_form(eta, t.A, t.b))
    auto = np.asarray(ag.sensitivities(lambda A, b: ag.gd_prediction(eta, A, b), t.A, t.b))
    worst = assert_close(
        closed, auto, rtol=1e-11, name="∂ŷ_GD/∂a_q closed form vs autodiff"
    ).worst_relative_error
    for i in range(2):
        A, b = np.asarray(t.A[i]), np.asarray(t.b[i])
        fd = numerical_gradient(
            lambda q, A=A, b=b: float(
                ag.gd_prediction(eta, jnp.asarray(np.vstack([A[:-1], q])), b)
            ),
            A[-1],
        )
        worst = max(
            worst,
            assert_close(
                closed[i], fd, rtol=1e-7, name="∂ŷ_GD/∂a_q vs finite differences"
            ).worst_relative_error,
        )
    return worst


def test_gd_sensitivity_closed_form_against_autodiff_and_finite_differences() -> None:
    assert check_gd_sensitivity() <= 1e-7


def test_a_sensitivity_without_the_softmax_derivative_is_caught() -> None:
    def wrong(eta, A, b):  # (n+1)σ x₁: forgets the factor (1 − σ)
        n = b.shape[-1]
        x1 = ag.gd_weights(eta, A, b)
        s = jax.nn.softmax(jnp.einsum("...kd,...d->...k", A, x1), axis=-1)[..., n]
        return ((n + 1) * s)[..., None] * x1

    with pytest.raises(AssertionError):
        check_gd_sensitivity(closed_form=wrong)


def test_attention_sensitivity_against_finite_differences() -> None:
    t = tasks(n=40, d=7, count=2)
    params = ag.init_params(jax.random.PRNGKey(3), 7, init_scale=0.5)
    auto = np.asarray(
        ag.sensitivities(lambda A, b: ag.attention_prediction(params, A, b), t.A, t.b)
    )
    for i in range(2):
        A, b = np.asarray(t.A[i]), np.asarray(t.b[i])
        fd = numerical_gradient(
            lambda q, A=A, b=b: float(
                ag.attention_prediction(params, jnp.asarray(np.vstack([A[:-1], q])), b)
            ),
            A[-1],
        )
        assert_close(auto[i], fd, rtol=1e-7, name="∂ŷ_SA/∂a_q")


def test_linearized_gd_is_the_first_order_term() -> None:
    t = tasks(n=60, d=10, count=6)
    slope = jax.vmap(jax.grad(lambda e, A, b: ag.gd_prediction(e, A, b)), in_axes=(None, 0, 0))(
        0.0, t.A, t.b
    )
    np.testing.assert_allclose(np.asarray(ag.gd_prediction(0.0, t.A, t.b)), 1.0, rtol=1e-14)
    np.testing.assert_allclose(
        np.asarray(ag.linearized_gd_prediction(1.0, t.A, t.b)) - 1.0, np.asarray(slope), rtol=1e-12
    )


# Few distinct shapes: every new shape costs JAX a compilation; the values are what hypothesis varies.
SHAPES = st.sampled_from([(2, 1), (9, 3), (40, 8)])


@settings(max_examples=12, deadline=None)
@given(shape=SHAPES, seed=st.integers(0, 10_000), eta=st.floats(0.0, 500.0))
def test_both_models_ignore_the_order_of_the_context(
    shape: tuple[int, int], seed: int, eta: float
) -> None:
    n, d = shape
    t = ag.sample_tasks(jax.random.PRNGKey(seed), 1, n, d)
    perm = np.random.default_rng(seed).permutation(n)
    A2 = t.A.at[0, :n].set(t.A[0, perm])
    b2 = t.b[:, perm]
    params = ag.init_params(jax.random.PRNGKey(seed + 1), d, init_scale=0.5)
    np.testing.assert_allclose(
        ag.gd_prediction(eta, A2, b2), ag.gd_prediction(eta, t.A, t.b), rtol=1e-11
    )
    np.testing.assert_allclose(
        ag.attention_prediction(params, A2, b2),
        ag.attention_prediction(params, t.A, t.b),
        rtol=1e-11,
    )
    assert (
        0.0 <= float(ag.gd_prediction(eta, t.A, t.b)[0]) <= n + 1
    )  # a relative weight (may underflow to 0)


@settings(max_examples=12, deadline=None)
@given(shape=SHAPES, seed=st.integers(0, 10_000), scale=st.floats(0.1, 3.0))
def test_task_labels_are_relative_softmax_weights(
    shape: tuple[int, int], seed: int, scale: float
) -> None:
    n, d = shape
    t = ag.sample_tasks(jax.random.PRNGKey(seed), 2, n, d, task_scale=scale)
    np.testing.assert_allclose(np.asarray(jnp.mean(t.b, axis=-1)), 1.0, rtol=1e-12)
    for i in range(2):
        A, x = np.asarray(t.A[i]), np.asarray(t.x_star[i])
        np.testing.assert_allclose(
            np.asarray(t.b[i]), n * sr.softmax_prediction(A[:n], x), rtol=1e-12
        )
        np.testing.assert_allclose(
            float(t.y[i]), (n + 1) * sr.softmax_prediction(A, x)[-1], rtol=1e-12
        )


def test_step_size_tuning_finds_the_minimum() -> None:
    t = tasks(n=25, d=20, count=2048, seed=4)

    def loss(e: float, predict=ag.gd_prediction) -> float:
        return float(0.5 * jnp.mean((predict(e, t.A, t.b) - t.y) ** 2))

    eta = ag.tune_step_size(t)
    assert loss(eta) <= min(loss(eta * 1.05), loss(eta / 1.05), loss(0.0))
    eta_lin = ag.tune_step_size(t, linearized=True)
    lin = lambda e: loss(e, ag.linearized_gd_prediction)  # noqa: E731
    assert lin(eta_lin) <= min(lin(eta_lin * 1.01), lin(eta_lin / 1.01))


# ---- the layer's parametrizations: masked self-score, labels as values only -------------------------


def test_masked_self_score_and_label_free_scores_against_a_direct_computation() -> None:
    t = tasks(n=12, d=4, count=3)
    params = ag.init_params(jax.random.PRNGKey(7), 4, init_scale=0.8)
    W, W_V = np.asarray(params["W"]), np.asarray(params["W_V"])
    for i in range(3):
        E = np.asarray(ag.tokens(t.A[i], t.b[i]))
        for score_labels in (True, False):
            W_s = W.copy()
            if not score_labels:
                W_s[:, -1] = 0.0
            scores = E @ W_s.T @ E[-1]
            for mask_self in (True, False):
                s = scores[:-1] if mask_self else scores
                w = np.exp(s - s.max())
                w /= w.sum()
                expected = 1.0 + np.dot(w, (E[: len(s)] @ W_V)[:, -1])
                got = float(ag.attention_prediction(params, t.A[i], t.b[i], True, score_labels, mask_self))
                assert_close(got, expected, rtol=1e-12, name=f"layer {score_labels=} {mask_self=}")


@pytest.mark.parametrize("mask_self", [False, True])
def test_the_first_order_product_matches_linearized_gd(mask_self: bool) -> None:
    """At a small temperature c with p·c = first_order_product, the hand-set layer's sensitivity to the
    query is linearized GD's (up to O(c)); a product off by the factor n/(n+1) is caught."""
    n, d, eta, c = 30, 6, 40.0, 1e-5
    t = tasks(n=n, d=d, count=4, seed=2)
    g_lin = np.asarray(ag.sensitivities(lambda A, b: ag.linearized_gd_prediction(eta, A, b), t.A, t.b))
    for product, ok in ((ag.first_order_product(eta, n, mask_self), True),
                        (ag.first_order_product(eta, n, not mask_self), False)):
        layer = ag.handset_params(c, product / c, d)
        g_sa = np.asarray(ag.sensitivities(
            lambda A, b, layer=layer: ag.attention_prediction(layer, A, b, mask_self=mask_self), t.A, t.b))
        if ok:
            assert_close(g_sa, g_lin, rtol=1e-3, name="hand-set layer vs linearized GD")
        else:
            with pytest.raises(AssertionError):
                assert_close(g_sa, g_lin, rtol=1e-3, name="wrong product")


def test_fit_handset_layer_is_a_least_squares_optimum() -> None:
    t = tasks(n=25, d=20, count=2048, seed=3)
    c, p = ag.fit_handset_layer(t, mask_self=True)

    def loss(c_: float, p_: float) -> float:
        pred = ag.attention_prediction(ag.handset_params(c_, p_, 20), t.A, t.b, mask_self=True)
        return float(0.5 * jnp.mean((pred - t.y) ** 2))

    best = loss(c, p)
    assert best <= min(loss(c, 1.01 * p), loss(c, 0.99 * p))
    assert best <= min(loss(c_, p * c / c_) for c_ in (0.1, 0.5, 1.0, 1.5, 2.0, 3.0) if c_ != c)
    assert best < 0.8 * float(0.5 * jnp.mean((1.0 - t.y) ** 2))


def test_metrics_are_exact_at_the_references() -> None:
    """The hand-set layer is at distance 0 (cosine 1) from itself; the zero layer predicts the uniform
    weight, so its normalized Preds Diff and Model Diff are 1 against every reference."""
    config = ag.Config(name="m", n=15, d=5, eval_tasks=200, tune_tasks=1024, seeds=(0,), mask_self=True)
    base = ag.baselines(config)
    hand = ag.evaluate(ag.handset_params(base.temperature, base.label_weight, 5), config, base)
    assert hand["preds_diff_hand"] < 1e-12 and hand["model_diff_hand"] < 1e-12
    assert abs(hand["model_cos_hand"] - 1.0) < 1e-12
    assert abs(hand["loss_sa"] - base.losses["hand"]) < 1e-12 * base.losses["hand"]
    zero = ag.evaluate({"W": jnp.zeros((6, 6)), "W_V": jnp.zeros((6, 6))}, config, base)
    assert abs(zero["loss_sa"] - base.losses["uniform"]) < 1e-12
    for r in ag.REFERENCES:
        assert abs(zero[f"preds_diff_{r}"] - 1.0) < 1e-12 and abs(zero[f"model_diff_{r}"] - 1.0) < 1e-12
    assert base.losses["hand"] < base.losses["uniform"] and base.losses["gd"] < base.losses["uniform"]


def test_layer_weights_summary() -> None:
    layer = ag.handset_params(1.5, -2.0, 3)
    w = ag.layer_weights(layer)
    assert w == {"temperature": 1.5, "off_diagonal_rms": 0.0, "label_weight": -2.0, "label_score_norm": 0.0,
                 "feature_value_norm": 0.0}


# ---- no global state, and float64 whatever the caller's mode ------------------------------------------


def test_import_leaves_the_x64_flag_alone_and_results_do_not_depend_on_it() -> None:
    code = (
        "import jax\n{pre}from softmax_icl import attention_vs_gd as ag\n"
        "flag = jax.config.jax_enable_x64\n"
        "t = ag.sample_tasks(jax.random.PRNGKey(3), 2, 6, 3)\n"
        "y = ag.gd_prediction(5.0, t.A, t.b)\n"
        "print(flag, t.A.dtype, y.dtype, [float(v).hex() for v in y])\n"
    )
    out = {}
    for pre in ("", "jax.config.update('jax_enable_x64', True)\n"):
        run = subprocess.run([sys.executable, "-c", code.format(pre=pre)], capture_output=True, text=True,
                             timeout=120)
        assert run.returncode == 0, run.stderr
        out[bool(pre)] = run.stdout.split(maxsplit=1)
    assert out[False][0] == "False" and out[True][0] == "True"  # the import changed nothing
    assert out[False][1] == out[True][1] and "float64 float64" in out[False][1]


def test_functions_compute_in_float64_when_the_caller_is_in_32_bit_mode() -> None:
    with jax.enable_x64(False):
        t = ag.sample_tasks(jax.random.PRNGKey(0), 2, 9, 3)
        y32 = ag.gd_prediction(7.0, t.A, t.b)
    y64 = ag.gd_prediction(7.0, t.A, t.b)
    assert t.A.dtype == jnp.float64 and y32.dtype == jnp.float64
    np.testing.assert_array_equal(np.asarray(y32), np.asarray(y64))


# ---- validation at the public boundary -------------------------------------------------------------------

KEY = jax.random.PRNGKey(0)
T = ag.sample_tasks(KEY, 3, 5, 2)
P = ag.init_params(KEY, 2)
BAD_CALLS = {
    "huge sample": (lambda: ag.sample_tasks(KEY, 10**10, 3, 2), ValueError, "exceed the limit"),
    "bool size": (lambda: ag.sample_tasks(KEY, 3, True, 2), TypeError, "n must be an integer"),
    "zero size": (lambda: ag.sample_tasks(KEY, 0, 3, 2), ValueError, "count"),
    "int key": (lambda: ag.sample_tasks(0, 3, 3, 2), TypeError, "key"),
    "n+1 labels": (lambda: ag.gd_direction(T.A, jnp.ones((3, 6))), ValueError, "n\\+1 = 7 rows"),
    "NaN token": (lambda: ag.gd_prediction(1.0, T.A.at[0, 0, 0].set(jnp.nan), T.b), ValueError, "A must be finite"),
    "NaN label": (lambda: ag.gd_weights(1.0, T.A, T.b.at[1, 2].set(jnp.inf)), ValueError, "b must be finite"),
    "NaN eta": (lambda: ag.gd_prediction(math.nan, T.A, T.b), ValueError, "eta must be finite"),
    "string eta": (lambda: ag.linearized_gd_prediction("1", T.A, T.b), TypeError, "eta"),
    "int array": (lambda: ag.gd_sensitivity(1.0, np.ones((4, 2), int), np.ones(3)), TypeError, "A must be"),
    "complex array": (lambda: ag.tokens(np.ones((4, 2), complex), np.ones(3)), TypeError, "A must be"),
    "empty array": (lambda: ag.gd_direction(np.ones((0, 4, 2)), np.ones((0, 3))), ValueError, "non-empty"),
    "negative d": (lambda: ag.init_params(KEY, -1), ValueError, "d must be"),
    "huge d": (lambda: ag.init_params(KEY, 10**12), ValueError, "d must be"),
    "params shape": (lambda: ag.attention_prediction({"W": np.ones((4, 4)), "W_V": np.ones((4, 4))}, T.A, T.b),
                     ValueError, "params\\['W'\\]"),
    "params keys": (lambda: ag.attention_prediction({"W": np.ones((3, 3))}, T.A, T.b), TypeError, "params"),
    "string flag": (lambda: ag.attention_prediction(P, T.A, T.b, centered="false"), TypeError, "centered"),
    "tasks type": (lambda: ag.tune_step_size("x"), TypeError, "tasks"),
    "bad interval": (lambda: ag.tune_step_size(T, lo=10.0, hi=1.0), ValueError, "lo < hi"),
    "handset d": (lambda: ag.handset_params(1.0, 1.0, 0), ValueError, "d must be"),
    "temperatures": (lambda: ag.fit_handset_layer(T, temperatures=[]), ValueError, "temperatures"),
    "predict": (lambda: ag.sensitivities(3, T.A, T.b), TypeError, "predict"),
    "config type": (lambda: ag.evaluate(P, {"n": 5}), TypeError, "config"),
    "seed": (lambda: ag.train(REDUCED, -1), ValueError, "seed"),
    "result": (lambda: ag.save_result({"config": REDUCED.to_dict()}, "/tmp"), TypeError, "result"),
}


@pytest.mark.parametrize("case", sorted(BAD_CALLS))
def test_bad_input_gets_a_clear_error(case: str) -> None:
    call, error, message = BAD_CALLS[case]
    with pytest.raises(error, match=message):
        call()


def test_lists_are_accepted_as_arrays() -> None:
    got = ag.gd_prediction(2.0, np.asarray(T.A[0]).tolist(), np.asarray(T.b[0]).tolist())
    np.testing.assert_allclose(float(got), float(ag.gd_prediction(2.0, T.A[0], T.b[0])), rtol=1e-15)


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"n": 0}, "n"),
        ({"d": -1}, "d"),
        ({"steps": 1.5}, "steps"),
        ({"steps": True}, "steps"),
        ({"lr": -1.0}, "lr"),
        ({"lr": 0.0}, "lr"),
        ({"lr_final": 1.0}, "lr_final"),
        ({"seeds": ()}, "seeds"),
        ({"seeds": (0, -1)}, "seeds"),
        ({"seeds": (1, 1)}, "seeds"),
        ({"seeds": "12"}, "seeds"),
        ({"task_scale": float("nan")}, "task_scale"),
        ({"centered": "false"}, "centered"),
        ({"mask_self": 1}, "mask_self"),
        ({"optimizer": "adamw"}, "optimizer"),
        ({"name": "../escaped"}, "name"),
        ({"name": "a/b"}, "name"),
        ({"name": ""}, "name"),
        ({"batch": 10**6, "n": 10**4}, "batch"),
    ],
)
def test_config_rejects_bad_values(bad: dict, field: str) -> None:
    with pytest.raises((ValueError, TypeError), match=field):
        ag.Config(**bad)


def test_config_round_trip_and_unknown_keys() -> None:
    c = ag.Config(n=7, seeds=(3, 4), mask_self=True)
    assert ag.Config.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    with pytest.raises(ValueError, match="unknown"):
        ag.Config.from_dict({**c.to_dict(), "stepz": 3})
    with pytest.raises(ValueError, match="name"):
        ag.Config.from_dict({"n": 3})


def test_document_validation() -> None:
    A, b = ag.document(np.ones((4, 3)), np.zeros(3), np.ones(4))
    assert A.shape == (5, 3) and b.shape == (4,)
    with pytest.raises(ValueError, match="a_q"):
        ag.document(np.ones((4, 3)), np.zeros(2), np.ones(4))
    with pytest.raises(ValueError, match="b"):
        ag.document(np.ones((4, 3)), np.zeros(3), np.ones(5))
    with pytest.raises(TypeError):
        ag.document(np.ones((4, 3), dtype=int), np.zeros(3), np.ones(4))


# ---- divergence and the command line --------------------------------------------------------------------

TINY = {"n": 6, "d": 3, "steps": 20, "eval_every": 10, "eval_tasks": 64, "tune_tasks": 256, "seeds": [0]}


def test_a_diverging_run_raises_and_save_result_refuses_nan(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ag.TrainingDiverged, match="diverged"):
        ag.train(ag.Config(name="boom", **{**TINY, "lr": 1e30, "lr_final": 0.0}), 0)
    result = ag.run_experiment(ag.Config(name="ok", **TINY))
    result["runs"][0]["curves"]["loss_sa"][-1] = math.nan
    with pytest.raises(ValueError, match="not finite"):
        ag.save_result(result, tmp_path)
    assert list(tmp_path.iterdir()) == []


def cli(tmp_path: pathlib.Path, experiments: object, *args: str, raw: str | None = None):
    config = tmp_path / "config.json"
    config.write_text(raw if raw is not None else json.dumps({"experiments": experiments}))
    return subprocess.run([sys.executable, "-m", "softmax_icl.attention_vs_gd", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)


@pytest.mark.parametrize(
    "experiments, raw, args, message",
    [
        ([{"name": "../escaped", **TINY}], None, (), "name must be a safe file name"),
        ([{"name": "a", **TINY, "steps": "20"}], None, (), "steps"),
        ([{"name": "a", **TINY, "centered": "false"}], None, (), "centered"),
        ([{"name": "a", **TINY, "stepz": 3}], None, (), "unknown configuration keys"),
        ([{**TINY}], None, (), "name"),
        ([{"name": "a", **TINY}, {"name": "a", **TINY}], None, (), "duplicate"),
        ([], None, (), "non-empty list"),
        (None, "{not json", (), "not valid JSON"),
        (None, "\udcff", (), "UTF-8"),
        (None, "[1, 2]", (), "experiments"),
        ([5], None, (), "experiments\\[0\\]"),
        ([{"name": "a", **TINY}], None, ("--only", "typo"), "--only"),
        ([{"name": "a", **TINY}], None, ("--out", "config.json"), "not a directory"),
    ],
)
def test_cli_bad_files_and_fields_exit_2_with_one_line(tmp_path, experiments, raw, args, message) -> None:
    if raw == "\udcff":
        (tmp_path / "config.json").write_bytes(b"\xff\xfe{")
        raw = None
        run = subprocess.run([sys.executable, "-m", "softmax_icl.attention_vs_gd", "--config",
                              str(tmp_path / "config.json")], capture_output=True, text=True, timeout=300)
    else:
        run = cli(tmp_path, experiments, *args, raw=raw)
    assert run.returncode == 2, (run.returncode, run.stderr)
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert re.search(message, lines[0]) and ("config.json" in lines[0] or "--" in lines[0]), lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]  # nothing written, no training
    assert not (tmp_path.parent / "escaped.json").exists()


def test_cli_runs_keeps_finished_files_and_reports_divergence(tmp_path: pathlib.Path) -> None:
    experiments = [{"name": "ok", **TINY}, {"name": "boom", **TINY, "lr": 1e30, "lr_final": 0.0}]
    run = cli(tmp_path, experiments, "--out", "out")
    assert run.returncode == 1, run.stderr
    assert "boom, seed 0: training diverged" in run.stderr and "Traceback" not in run.stderr
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["ok.json", "summary.json"]
    for path in out.iterdir():
        assert "NaN" not in path.read_text() and "Infinity" not in path.read_text()
    stamp = (out / "ok.json").stat().st_mtime_ns
    run = cli(tmp_path, experiments[:1], "--out", "out")
    assert run.returncode == 0 and "ok: kept" in run.stdout, run.stdout + run.stderr
    assert (out / "ok.json").stat().st_mtime_ns == stamp
    summary = json.loads((out / "summary.json").read_text())["experiments"]["ok"]
    assert len(summary["final"]["loss_sa"]) == 1 and summary["final"]["loss_gd"][0] > 0


# ---- the reduced configuration: the pipeline trains --------------------------------------------------


def test_reduced_run_trains_the_layer() -> None:
    result = ag.run_experiment(REDUCED)
    assert result["version"] == __version__ and len(result["runs"]) == 2
    losses = result["baselines"]["losses"]
    for run in result["runs"]:
        c = run["curves"]
        assert c["steps"] == list(range(0, 301, 50))
        assert all(np.isfinite(c[m]).all() for m in ag.METRICS)
        # the trained layer beats the untrained one, and the uniform predictor, by a clear margin
        assert c["loss_sa"][-1] < 0.9 * c["loss_sa"][0], (c["loss_sa"][0], c["loss_sa"][-1])
        assert c["loss_sa"][-1] < 0.9 * losses["uniform"]
        assert c["model_cos_lin"][-1] > c["model_cos_lin"][0] + 0.5
        assert run["weights"]["label_score_norm"] == 0.0  # labels do not enter the scores


# ---- the committed result files -------------------------------------------------------------------------


def experiments() -> list[dict]:
    return json.loads((DATA / "config.json").read_text())["experiments"]


@pytest.mark.parametrize("experiment", experiments(), ids=lambda e: e["name"])
def test_result_file_matches_its_config(experiment: dict) -> None:
    path = DATA / f"{experiment['name']}.json"
    assert path.is_file(), (
        f"{path} missing: run python -m softmax_icl.attention_vs_gd --config {DATA / 'config.json'}"
    )
    raw = json.loads(path.read_text())
    assert raw["config"] == ag.Config.from_dict(experiment).to_dict()
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", raw["version"]) and raw["wall_seconds"] > 0
    result = ag.load_result(path)
    config = result["config"]
    assert [r["seed"] for r in raw["runs"]] == list(config.seeds)
    evals = len(range(0, config.steps, config.eval_every)) + 1
    for name, curve in result["curves"].items():
        assert curve.shape == (len(config.seeds), evals), name
        assert np.isfinite(curve).all(), name
    assert (result["curves"]["steps"][:, -1] == config.steps).all()


def test_summary_is_the_summary_of_the_result_files() -> None:
    results = [ag.load_result(DATA / f"{e['name']}.json") for e in experiments()]
    committed = json.loads((DATA / "summary.json").read_text())
    assert committed == json.loads(json.dumps(ag.summarize(results)))


def test_result_files_are_small() -> None:
    total = sum(p.stat().st_size for p in DATA.glob("*.json"))
    assert total < 600_000, f"result files take {total} bytes"


def test_recorded_references_and_untrained_metrics_reproduce() -> None:
    """The n = 25 experiment: η, the hand-set layer, the reference losses and seed 0's step-0 metrics
    recomputed from scratch."""
    raw = json.loads((DATA / "n25_d20_lv.json").read_text())
    config = ag.Config.from_dict(raw["config"])
    base = ag.baselines(config)
    ref = raw["baselines"]
    np.testing.assert_allclose(base.eta, ref["eta"], rtol=1e-5)
    np.testing.assert_allclose(base.eta_linearized, ref["eta_linearized"], rtol=1e-5)
    assert (base.temperature, round(base.label_weight, 3)) == (ref["handset_temperature"],
                                                              round(ref["handset_label_weight"], 3))
    for k, v in ref["losses"].items():
        np.testing.assert_allclose(base.losses[k], v, rtol=1e-5, err_msg=k)
    run = raw["runs"][0]
    params = ag._initial_params(config, ag._keys(run["seed"])["init"])
    metrics = ag.evaluate(params, config, base)
    for name in ag.METRICS:
        np.testing.assert_allclose(metrics[name], run["curves"][name][0], rtol=1e-5, atol=1e-9, err_msg=name)
