"""The attention-vs-GD experiment: the JAX models against the NumPy library, metrics, a reduced run, result files."""

from __future__ import annotations

import json
import pathlib
import re

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
    steps=300,
    batch=256,
    eval_every=50,
    eval_tasks=500,
    tune_tasks=2048,
    seeds=(0, 1),
)


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


# ---- validation ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"n": 0},
        {"d": -1},
        {"steps": 1.5},
        {"lr": -1.0},
        {"seeds": ()},
        {"seeds": (0, -1)},
        {"task_scale": float("nan")},
    ],
)
def test_config_rejects_bad_values(bad: dict) -> None:
    with pytest.raises((ValueError, TypeError)):
        ag.Config(**bad)


def test_config_round_trip_and_unknown_keys() -> None:
    c = ag.Config(n=7, seeds=(3, 4))
    assert ag.Config.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    with pytest.raises(ValueError, match="unknown"):
        ag.Config.from_dict({**c.to_dict(), "stepz": 3})


def test_document_validation() -> None:
    A, b = ag.document(np.ones((4, 3)), np.zeros(3), np.ones(4))
    assert A.shape == (5, 3) and b.shape == (4,)
    with pytest.raises(ValueError, match="a_q"):
        ag.document(np.ones((4, 3)), np.zeros(2), np.ones(4))
    with pytest.raises(ValueError, match="b"):
        ag.document(np.ones((4, 3)), np.zeros(3), np.ones(5))
    with pytest.raises(TypeError):
        ag.document(np.ones((4, 3), dtype=int), np.zeros(3), np.ones(4))


def test_tune_step_size_rejects_a_bad_interval() -> None:
    with pytest.raises(ValueError):
        ag.tune_step_size(tasks(n=5, d=2, count=8), lo=10.0, hi=1.0)


# ---- the reduced configuration: the pipeline trains --------------------------------------------------


def test_reduced_run_trains_the_layer() -> None:
    result = ag.run_experiment(REDUCED)
    assert result["version"] == __version__ and len(result["runs"]) == 2
    for run in result["runs"]:
        c = run["curves"]
        assert c["steps"] == list(range(0, 301, 50))
        assert all(np.isfinite(c[m]).all() for m in ag.METRICS)
        # the trained layer beats the untrained one, and the uniform predictor, by a clear margin
        assert c["loss_sa"][-1] < 0.95 * c["loss_sa"][0], (c["loss_sa"][0], c["loss_sa"][-1])
        assert c["loss_sa"][-1] < 0.95 * run["loss_uniform"]
        assert c["model_cos"][-1] > c["model_cos"][0] + 0.5
        assert len(set(c["loss_gd"])) == 1  # the GD model does not train


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


def test_result_files_are_small() -> None:
    total = sum(p.stat().st_size for p in DATA.glob("*.json"))
    assert total < 400_000, f"result files take {total} bytes"


def test_recorded_untrained_metrics_reproduce() -> None:
    """Seed 0 of the first experiment: η, the uniform loss and the step-0 metrics recomputed from scratch."""
    raw = json.loads((DATA / f"{experiments()[0]['name']}.json").read_text())
    config = ag.Config.from_dict(raw["config"])
    run = raw["runs"][0]
    keys = ag._keys(run["seed"])
    tune = ag.sample_tasks(
        keys["tune"], config.tune_tasks, config.n, config.d, config.task_scale, config.noise
    )
    held = ag.sample_tasks(
        keys["eval"], config.eval_tasks, config.n, config.d, config.task_scale, config.noise
    )
    eta = ag.tune_step_size(tune)
    np.testing.assert_allclose(eta, run["eta"], rtol=1e-6)
    metrics = ag.evaluate(
        ag.init_params(keys["init"], config.d, config.init_scale), eta, held, config.centered
    )
    for name in ag.METRICS:
        np.testing.assert_allclose(
            metrics[name], run["curves"][name][0], rtol=1e-5, atol=1e-9, err_msg=name
        )
