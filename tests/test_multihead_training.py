"""Tests of ``softmax_icl.multihead_training``: config validation, the repeated-context trick, a
tiny training run that beats the zero predictor, determinism, checkpoints (round trip, committed
ones reproduce their recorded metric, missing/corrupt files give errors naming the recreating
command), head masks, pruning and probes."""

from __future__ import annotations

import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from softmax_icl import multihead_training as mt
from softmax_icl import sparse_regression as sreg
from softmax_icl import transformer as tf

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT / "book" / "data" / "multihead"


@pytest.fixture(scope="module")
def tiny() -> tuple[mt.Config, dict]:
    (config,) = mt.load_configs(DATA / "tiny.json")
    return config, mt.train(config)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="unknown configuration keys"):
        mt.Config.from_dict({"name": "x", "heads": 3})
    with pytest.raises(ValueError, match="divide"):
        mt.Config(name="x", n_values=(3, 4))
    with pytest.raises(ValueError, match="attention"):
        mt.Config(name="x", attention="cosine")
    with pytest.raises(ValueError, match="s must be <= d"):
        mt.Config(name="x", d=2, s=3)
    with pytest.raises(ValueError, match="multiple of chunk"):
        mt.Config(name="x", steps=120, chunk=50)
    with pytest.raises(ValueError, match="divisible by n_heads"):
        mt.Config(name="x", width=30, n_heads=4)
    c = mt.Config(name="x", n_values=[2, 4])
    assert mt.Config.from_dict(json.loads(json.dumps(c.to_dict()))) == c


def test_committed_configs_parse() -> None:
    configs = mt.load_configs(DATA / "sweep.json")
    assert len({c.name for c in configs}) == len(configs) >= 6
    main = [c for c in configs if c.n_heads == 4]
    assert len({c.seed for c in main}) >= 3  # the main setting has at least three seeds
    assert len({mt.head_dimension(c) for c in configs}) == 1  # head count varies at a fixed head size


def test_repeated_context_is_the_same_prompt() -> None:
    """A context of n distinct tokens repeated N/n times gives the prediction of the n tokens."""
    config = mt.Config(name="x", d=4, s=2, n_values=(2, 3, 6), width=16, mlp_width=16, n_heads=2)
    params = mt.init_model(config, jax.random.PRNGKey(1))
    params = jax.tree_util.tree_map(
        lambda a: a * 10 if a.ndim > 1 else a, params
    )  # non-trivial attention
    E, _, n = mt.sample_prompts(jax.random.PRNGKey(2), 32, config.n_values, config.d, config.s, 0.1)
    n = np.asarray(n)
    assert set(n) == set(config.n_values)
    for attention in ("softmax", "linear"):
        full = tf.predict(params, E, attention=attention)
        for m in config.n_values:  # the prompts with m distinct tokens, each shortened to them
            b = np.flatnonzero(n == m)
            short = jnp.concatenate([E[b, :-1:6 // m], E[b, -1:]], axis=1)
            np.testing.assert_allclose(
                tf.predict(params, short, attention=attention), full[b], rtol=2e-4, atol=2e-5
            )
    # and the repetition really is a repetition of n distinct tokens
    for b in range(len(n)):
        assert len({tuple(np.round(np.asarray(t), 6)) for t in E[b, :-1]}) == n[b]


def test_tiny_training_beats_the_zero_predictor(tiny) -> None:
    config, result = tiny
    risks = mt.evaluate(config, result["params"])
    zero = mt.evaluate(config, jax.tree_util.tree_map(jnp.zeros_like, result["params"]))
    assert np.isclose(zero.mean(), np.mean([config.s]), rtol=0.2)  # E<w*,x>² = s
    assert risks.mean() + 3 * risks.std(ddof=1) / np.sqrt(risks.size) < zero.mean(), (
        risks.mean(),
        zero.mean(),
    )
    assert result["losses"][-1] < result["losses"][0]


def test_training_is_deterministic(tiny) -> None:
    config, result = tiny
    again = mt.train(config)  # same seed (the compiled step is reused)
    assert again["losses"] == result["losses"]
    for x, y in zip(
        jax.tree_util.tree_leaves(again["params"]),
        jax.tree_util.tree_leaves(result["params"]),
        strict=True,
    ):
        np.testing.assert_array_equal(x, y)
    other = mt.train(mt.Config.from_dict({**config.to_dict(), "seed": 1, "steps": 50}))
    assert other["losses"][0] != result["losses"][0]


def test_checkpoint_round_trip_and_errors(tiny, tmp_path: pathlib.Path) -> None:
    config, result = tiny
    cfg_path = DATA / "tiny.json"
    risks = mt.evaluate(config, result["params"])
    mt.save_checkpoint(
        tmp_path, config, result["params"], {"eval": {"excess_risk": float(risks.mean())}}
    )
    loaded_config, params, meta = mt.load_checkpoint(tmp_path, "tiny", cfg_path)
    assert loaded_config == config
    np.testing.assert_allclose(
        mt.evaluate(config, params).mean(), meta["eval"]["excess_risk"], rtol=1e-6
    )
    command = mt.recreate_command(cfg_path, "tiny")
    with pytest.raises(mt.CheckpointError, match="missing") as err:
        mt.load_checkpoint(tmp_path, "nope", cfg_path)
    assert mt.recreate_command(cfg_path, "nope") in str(err.value)
    npz = tmp_path / "tiny.npz"
    raw = bytearray(npz.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    npz.write_bytes(bytes(raw))
    with pytest.raises(mt.CheckpointError, match="SHA-256") as err:
        mt.load_checkpoint(tmp_path, "tiny", cfg_path)
    assert command in str(err.value)
    (tmp_path / "tiny.json").write_text("{not json")
    with pytest.raises(mt.CheckpointError, match="unreadable") as err:
        mt.load_checkpoint(tmp_path, "tiny", cfg_path)
    assert command in str(err.value)


def test_checkpoint_with_wrong_shapes_is_rejected(tiny, tmp_path: pathlib.Path) -> None:
    config, result = tiny
    other = mt.Config.from_dict({**config.to_dict(), "width": 8})
    mt.save_checkpoint(tmp_path, config, result["params"], {})
    meta = json.loads((tmp_path / "tiny.json").read_text())
    meta["config"] = other.to_dict()
    (tmp_path / "tiny.json").write_text(json.dumps(meta))
    with pytest.raises(mt.CheckpointError, match="digest"):
        mt.load_checkpoint(tmp_path, "tiny")
    # a file of the first format (no digest) is still checked against its configuration's shapes
    del meta["digest"], meta["format"]
    (tmp_path / "tiny.json").write_text(json.dumps(meta))
    with pytest.raises(mt.CheckpointError, match="corrupt"):
        mt.load_checkpoint(tmp_path, "tiny")


def _committed() -> list[str]:
    return [c.name for c in mt.load_configs(DATA / "sweep.json")]


@pytest.mark.parametrize("name", _committed())
def test_committed_checkpoint_loads_with_its_metadata(name: str) -> None:
    """Every run of the sweep has a valid checkpoint (the chapter re-evaluates its recorded metric)."""
    config, params, meta = mt.load_checkpoint(DATA, name, "book/data/multihead/sweep.json")
    assert meta["version"] and meta["steps"] == config.steps and meta["wall_seconds"] > 0
    assert meta["eval"]["tasks"] == config.eval_tasks and np.isfinite(meta["eval"]["excess_risk"])


def test_committed_checkpoints_are_small() -> None:
    total = sum(p.stat().st_size for p in DATA.glob("*.npz"))
    assert total < 10 * 2**20, f"committed checkpoints take {total / 2**20:.1f} MiB"


def test_head_masks_and_pruning() -> None:
    config = mt.Config(name="x", n_layers=3, n_heads=4, width=16)
    masks = mt.head_masks(config, keep={1: [2]}, drop=(0, 3))
    np.testing.assert_array_equal(np.array(masks), [[1, 1, 1, 0], [0, 0, 1, 0], [1, 1, 1, 1]])
    imp = np.array([[0.1, 0.0, 0.2, 0.3], [0.5, 0.1, 0.0, 0.0], [0.0, 0.0, 0.0, 0.7]])
    np.testing.assert_array_equal(
        np.array(mt.pruning_mask(imp)), [[1, 1, 1, 1], [1, 0, 0, 0], [0, 0, 0, 1]]
    )
    with pytest.raises(ValueError, match="layers, heads"):
        mt.pruning_mask(np.ones(3))


def test_masking_every_head_of_a_layer_skips_its_attention(tiny) -> None:
    config, result = tiny
    rng = np.random.default_rng(0)
    tasks, xq = mt.eval_tasks(16, 8, config.d, config.s, config.sigma, rng)
    states = mt.query_states(
        config, result["params"], tasks, xq, head_mask=[np.zeros(2), np.ones(2)]
    )
    assert states.shape == (16, config.n_layers + 1, config.width)
    # the final state read out equals the model's prediction
    p = result["params"]
    ln = tf.layer_norm(jnp.asarray(states[:, -1], jnp.float32), **p["ln_f"])
    pred = np.asarray(ln @ p["readout"]["w"] + p["readout"]["b"])
    np.testing.assert_allclose(
        pred, mt.predict(config, p, tasks, xq, [np.zeros(2), np.ones(2)]), rtol=1e-4, atol=1e-5
    )
    importance, se, base = mt.head_importance(config, p, tasks, xq)
    assert importance.shape == se.shape == (config.n_layers, config.n_heads) and base.shape == (16,)


def test_probes_recover_a_linear_target() -> None:
    rng = np.random.default_rng(0)
    F = rng.standard_normal((400, 1 + 1, 5))
    beta = rng.standard_normal(5)
    target = F[:, 1] @ beta + 2.0
    errs = mt.probe_risks(F[:300], target[:300], F[300:], target[300:], lam=1e-10)
    assert errs.shape == (2, 100)
    assert errs[1].mean() < 1e-12 * target.var() + 1e-12 and errs[0].mean() > 0.5 * target.var()
    with pytest.raises(ValueError, match="features"):
        mt.fit_probe(np.ones(3), np.ones(3))


def test_excess_risk_of_a_linear_predictor_is_unbiased() -> None:
    rng = np.random.default_rng(1)
    tasks, xq = mt.eval_tasks(20000, 5, 6, 2, 0.1, rng)
    w_hat = tasks.w_star + 0.3 * rng.standard_normal(tasks.w_star.shape)
    one_query = mt.excess_risk_per_task(np.einsum("td,td->t", w_hat, xq), tasks, xq)
    exact = sreg.excess_risk(w_hat, tasks.w_star)
    assert abs(one_query.mean() - exact.mean()) < 4 * one_query.std() / np.sqrt(one_query.size)


def test_missing_checkpoint_error_names_the_command(tmp_path: pathlib.Path) -> None:
    shutil.copy(DATA / "sweep.json", tmp_path / "sweep.json")
    with pytest.raises(mt.CheckpointError) as err:
        mt.load_checkpoint(tmp_path, "h4_seed0")
    assert "python -m softmax_icl.multihead_training --config" in str(err.value)
    assert "--only h4_seed0" in str(err.value)


def repeated_context_gap(predict, attention: str, N: int = 6, d: int = 5) -> float:
    """Worst relative gap between a context of n tokens repeated N/n times and the n tokens."""
    full = attention == "softmax"
    rng = np.random.default_rng(0)
    worst = 0.0
    with jax.enable_x64(True):
        params = tf.init_params(jax.random.PRNGKey(0), d + 1, 16, 3, 4, mlp_width=32,
                                use_mlp=full, use_layer_norm=full, std=0.5, dtype=jnp.float64)
        for n in (m for m in range(1, N + 1) if N % m == 0):
            X, y, xq = (rng.standard_normal(sh) for sh in ((8, n, d), (8, n), (8, d)))
            short = tf.make_prompt(X, y, xq)
            long = tf.make_prompt(np.repeat(X, N // n, axis=1), np.repeat(y, N // n, axis=1), xq)
            got, want = (np.asarray(predict(params, E, attention)) for E in (long, short))
            worst = max(worst, float(np.max(np.abs(got - want)) / np.max(np.abs(want))))
    return worst


@pytest.mark.parametrize("attention", ["softmax", "linear"])
def test_repeated_context_in_float64_and_a_positional_model_breaks_it(attention: str) -> None:
    def plain(params, E, attention):
        return tf.predict(params, E, attention=attention)

    def with_positions(params, E, attention):  # a position-dependent model breaks the lemma
        pos = jnp.linspace(0.0, 1.0, E.shape[-2])[:, None]
        return tf.predict(params, E + pos, attention=attention)

    assert repeated_context_gap(plain, attention) < 1e-10
    assert repeated_context_gap(with_positions, attention) > 1e-3


def test_sampler_repeats_n_distinct_tokens() -> None:
    n_values = (2, 4, 5, 10, 20)
    E, _, n = mt.sample_prompts(jax.random.PRNGKey(0), 64, n_values, 6, 2, 0.1)
    for prompt, n_b in zip(np.asarray(E), np.asarray(n), strict=True):
        tokens, counts = np.unique(prompt[:-1], axis=0, return_counts=True)
        assert len(tokens) == n_b and np.all(counts == max(n_values) // n_b)
    assert set(np.asarray(n).tolist()) == set(n_values)


def test_many_queries_are_independent_one_query_prompts() -> None:
    """K query tokens attend to the context only: each prediction equals that of its own one-query prompt."""
    config = mt.Config(name="x", d=4, s=2, n_values=(3, 6), width=16, d_head=8, n_heads=3, mlp_width=16, queries=5)
    params = jax.tree_util.tree_map(lambda a: a * 10 if a.ndim > 1 else a, mt.init_model(config, jax.random.PRNGKey(1)))
    E, y_q, _ = mt.sample_prompts(jax.random.PRNGKey(2), 8, config.n_values, config.d, config.s, 0.1, queries=5)
    assert E.shape == (8, 6 + 5, 5) and y_q.shape == (8, 5)
    for attention in ("softmax", "linear"):
        many = tf.predict(params, E, attention=attention, queries=5)
        for k in range(5):
            one = tf.predict(params, jnp.concatenate([E[:, :6], E[:, 6 + k:7 + k]], axis=1), attention=attention)
            np.testing.assert_allclose(many[:, k], one, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="at least one context token"):
        tf.predict(params, E, attention="softmax", queries=11)


def test_relative_loss_divides_by_tuned_ridge_plus_noise() -> None:
    config = mt.Config(name="x", d=4, s=1, n_values=(2, 8), relative_loss=True)
    scale = mt.loss_scale(config)
    assert scale.shape == (9,) and scale[0] == scale[3] == 1.0
    assert scale[2] > scale[8] > config.sigma**2  # fewer examples, larger ridge risk
    assert np.all(mt.loss_scale(mt.Config(name="x", n_values=(2, 8))) == 1.0)


def test_steps_limit_is_the_end_of_gradient_descent() -> None:
    tasks = sreg.sample_tasks(20, 12, 5, 2, 0.1, np.random.default_rng(0))
    np.testing.assert_allclose(mt.steps_limit(tasks.X, tasks.y, "gd"),
                               sreg.gradient_descent(tasks.X, tasks.y, 0.2, 5000), atol=1e-10)
    # PtO: r ∘ u with u the minimum-norm solution of the reweighted normal equations
    w = mt.steps_limit(tasks.X, tasks.y, "pto")
    r = sreg.empirical_correlation(tasks.X, tasks.y)
    r /= np.linalg.norm(r, axis=1, keepdims=True)  # written out: the test checks the library's weights
    np.testing.assert_allclose(sreg.preprocessing_weights(tasks.X, tasks.y, "l2"), r, rtol=1e-12)
    u = w / r
    Xt = tasks.X * r[:, None, :]
    np.testing.assert_allclose(np.einsum("tnd,tn->td", Xt, np.einsum("tnd,td->tn", Xt, u) - tasks.y), 0,
                               atol=1e-9)
    with pytest.raises(ValueError, match="method"):
        mt.steps_limit(tasks.X, tasks.y, "lasso")


def test_summary_has_the_documented_schema(tiny) -> None:
    config, result = tiny
    summary = mt.summarize({"tiny": [(config, result["params"])]}, [4, 8])
    assert summary["setting"] == {"d": config.d, "s": config.s, "sigma": config.sigma}
    assert set(summary["excess_risk"]) == {"tiny", *mt.BASELINES} and summary["seeds"] == {"tiny": 1}
    for curve in summary["excess_risk"].values():
        assert set(curve) == {"4", "8"} and all(len(v) == 2 and v[1] > 0 for v in curve.values())
    bayes, ridge = summary["excess_risk"]["bayes"], summary["excess_risk"]["ridge"]
    assert bayes["8"][0] < ridge["8"][0]
    assert summary["runs"] == {config.name: {n: summary["excess_risk"]["tiny"][n][0] for n in ("4", "8")}}
    json.dumps(summary, allow_nan=False)
    twin = mt.Config.from_dict({**config.to_dict(), "name": "twin"})
    two = mt.summarize({"tiny": [(config, result["params"]), (twin, result["params"])]}, [8])
    assert two["seeds"] == {"tiny": 2} and two["excess_risk"]["tiny"]["8"][1] == 0.0  # identical seeds
    assert two["runs"]["twin"] == two["runs"][config.name] == {"8": two["excess_risk"]["tiny"]["8"][0]}
    with pytest.raises(ValueError, match="own name"):
        mt.summarize({"tiny": [(config, result["params"])] * 2}, [8])
    with pytest.raises(ValueError, match="share"):
        mt.summarize({"a": [(config, result["params"])],
                      "b": [(mt.Config.from_dict({**config.to_dict(), "sigma": 0.5}), result["params"])]}, [8])


def test_preprocessing_probe_finds_a_planted_feature() -> None:
    rng = np.random.default_rng(3)
    (tr, xq_tr), (te, xq_te) = (mt.eval_tasks(600, 8, 3, 1, 0.1, rng) for _ in range(2))

    def states(tasks, xq, planted):
        target = sreg.empirical_correlation(tasks.X, tasks.y) * xq
        noise = rng.standard_normal((xq.shape[0], 2, 6))
        if planted:
            noise[:, 1, :3] = target
        return noise

    r2 = mt.preprocessing_probe(states(tr, xq_tr, True), tr, xq_tr, states(te, xq_te, True), te, xq_te, lam=1e-8)
    assert r2[1] > 0.999 and abs(r2[0]) < 0.05
