"""The multi-head training command line on bad files, fields and arguments: one line naming the
file and the field, exit status 2, no traceback, nothing trained and nothing written; a diverging run
writes nothing; run names cannot leave ``--out``; checkpoints refuse tampering."""

from __future__ import annotations

import hashlib
import io
import json
import pathlib

import jax
import numpy as np
import pytest
from softmax_icl import multihead_training as mt

PROG = "python -m softmax_icl.multihead_training"
TINY = dict(d=2, s=1, n_values=[2, 4], n_layers=1, n_heads=1, width=4, mlp_width=4, steps=1, chunk=1, batch=2,
            eval_n=3, eval_tasks=4)


def _write(path: pathlib.Path, content: object) -> pathlib.Path:
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return path


def _fails(argv: list[str], capsys: pytest.CaptureFixture, *needles: str) -> str:
    with pytest.raises(SystemExit) as exc:
        mt.main(argv)
    err = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()
    assert exc.value.code == 2
    assert not any("Traceback" in line for line in err)
    line = err[-1]
    assert line.startswith(f"{PROG}: error:"), line
    for needle in needles:
        assert needle in line, (needle, line)
    return line


BAD_FILES = {
    "not JSON": (b"{not json", ["not valid JSON"]),
    "binary": (bytes(range(256)), ["cannot read"]),
    "a list": ([1, 2], ["expected a JSON object"]),
    "no runs": ({"defaults": TINY}, ["'runs'"]),
    "empty runs": ({"runs": []}, ["'runs' must be a non-empty list"]),
    "run not an object": ({"runs": [3]}, ["runs[0]"]),
    "no name": ({"defaults": TINY, "runs": [{}]}, ["runs[0]", "name is missing"]),
    "truthy string": ({"defaults": TINY, "runs": [{"name": "a", "use_mlp": "false"}]}, ["use_mlp"]),
    "string n_values": ({"defaults": TINY, "runs": [{"name": "a", "n_values": "24"}]}, ["n_values"]),
    "float n_values": ({"defaults": TINY, "runs": [{"name": "a", "n_values": [2.7, 4]}]}, ["n_values"]),
    "negative warmup": ({"defaults": TINY, "runs": [{"name": "a", "warmup": -1}]}, ["warmup"]),
    "negative seed": ({"defaults": TINY, "runs": [{"name": "a", "seed": -1}]}, ["seed"]),
    "string eval_seed": ({"defaults": TINY, "runs": [{"name": "a", "eval_seed": "x"}]}, ["eval_seed"]),
    "unknown key": ({"defaults": TINY, "runs": [{"name": "a", "heads": 3}]}, ["heads"]),
    "duplicate names": ({"defaults": TINY, "runs": [{"name": "a"}, {"name": "a"}]}, ["unique"]),
    "path traversal": ({"defaults": TINY, "runs": [{"name": "../escaped"}]}, ["name"]),
    "NaN": (b'{"defaults": {"sigma": NaN}, "runs": [{"name": "a"}]}', ["NaN"]),
    "huge model": ({"defaults": TINY, "runs": [{"name": "a", "width": 1048576}]}, ["limit"]),
    "defaults not an object": ({"defaults": [1], "runs": [{"name": "a"}]}, ["defaults"]),
    "init_from unknown": ({"defaults": TINY, "runs": [{"name": "a", "init_from": "z"}]}, ["init_from", "earlier"]),
    "init_from later": ({"defaults": TINY, "runs": [{"name": "a", "init_from": "b"}, {"name": "b"}]},
                        ["init_from", "earlier"]),
    "init_from itself": ({"defaults": TINY, "runs": [{"name": "a", "init_from": "a"}]}, ["itself"]),
    "init_from path": ({"defaults": TINY, "runs": [{"name": "a", "init_from": "../a"}]}, ["init_from"]),
    "init_from other width": ({"defaults": TINY, "runs": [{"name": "a"}, {"name": "b", "init_from": "a",
                                                                          "width": 8}]}, ["architecture"]),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_config_file_is_one_line_naming_file_and_field(case: str, tmp_path: pathlib.Path, capsys) -> None:
    content, needles = BAD_FILES[case]
    config = _write(tmp_path / "sweep.json", content)
    out = tmp_path / "out"
    _fails(["--config", str(config), "--out", str(out)], capsys, str(config), *needles)
    assert not out.exists() or not any(out.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "out") == ["sweep.json"]


def test_argument_problems_are_caught_before_training(tmp_path: pathlib.Path, capsys) -> None:
    config = _write(tmp_path / "sweep.json", {"defaults": TINY, "runs": [{"name": "a"}]})
    _fails(["--config", str(tmp_path / "missing.json")], capsys, "missing.json")
    (tmp_path / "file").write_text("x")
    _fails(["--config", str(config), "--out", str(tmp_path / "file")], capsys, "--out", "not a directory")
    _fails(["--config", str(config), "--out", str(tmp_path / "o"), "--only", "typo"], capsys, "typo")
    with pytest.raises(SystemExit) as exc:                    # --only without names: argparse's own error
        mt.main(["--config", str(config), "--only"])
    assert exc.value.code == 2
    assert not (tmp_path / "a.json").exists() and not (tmp_path / "o" / "a.json").exists()


def test_a_diverging_run_is_reported_and_writes_nothing(tmp_path: pathlib.Path, capsys) -> None:
    config = _write(tmp_path / "sweep.json", {"defaults": {**TINY, "steps": 4, "lr": 1e30, "clip": 1e30},
                                              "runs": [{"name": "a"}]})
    out = tmp_path / "out"
    _fails(["--config", str(config), "--out", str(out)], capsys, "diverged", "'a'")
    assert not any(out.iterdir())


def test_a_good_run_writes_only_into_out(tmp_path: pathlib.Path, capsys) -> None:
    config = _write(tmp_path / "sweep.json", {"defaults": TINY, "runs": [{"name": "a"}, {"name": "b"}]})
    out = tmp_path / "out"
    mt.main(["--config", str(config), "--out", str(out), "--only", "a"])
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "a.npz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "sweep.json"]
    meta = json.loads((out / "a.json").read_text())
    assert np.isfinite(meta["eval"]["excess_risk"]) and meta["format"] == 2
    config_, params, _ = mt.load_checkpoint(out, "a")
    assert config_.name == "a"


def test_a_finished_run_is_kept_and_skipped(tmp_path: pathlib.Path, capsys) -> None:
    """The sweep is resumable: a run with a valid checkpoint of the same configuration is not retrained,
    an edited configuration or a corrupt checkpoint is, and --retrain forces it."""
    runs = {"defaults": {**TINY, "queries": 3, "relative_loss": True}, "runs": [{"name": "a"}, {"name": "b"}]}
    config = _write(tmp_path / "sweep.json", runs)
    out = tmp_path / "out"
    mt.main(["--config", str(config), "--out", str(out)])
    stamp = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    capsys.readouterr()
    mt.main(["--config", str(config), "--out", str(out)])
    assert capsys.readouterr().out.count("kept") == 2
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamp
    runs["runs"][1]["seed"] = 5  # b's configuration changed: retrained
    (out / "a.npz").write_bytes(b"corrupt")  # a's checkpoint broken: retrained
    _write(config, runs)
    mt.main(["--config", str(config), "--out", str(out)])
    assert "kept" not in capsys.readouterr().out
    assert mt.load_checkpoint(out, "b")[0].seed == 5 and mt.load_checkpoint(out, "a")[0].name == "a"
    mt.main(["--config", str(config), "--out", str(out), "--only", "a", "--retrain"])
    assert "kept" not in capsys.readouterr().out


def test_a_run_named_like_the_configuration_file_is_refused(tmp_path: pathlib.Path, capsys) -> None:
    config = _write(tmp_path / "sweep.json", {"defaults": TINY, "runs": [{"name": "sweep"}]})
    _fails(["--config", str(config)], capsys, "overwrite the configuration file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.json"]


# ---- checkpoints ------------------------------------------------------------------------------

@pytest.fixture()
def checkpoint(tmp_path: pathlib.Path) -> pathlib.Path:
    config = mt.Config(name="tiny", **TINY)
    mt.save_checkpoint(tmp_path, config, mt.init_model(config, jax.random.PRNGKey(0)), {"eval": {"excess_risk": 0.5}})
    return tmp_path


def _edit(directory: pathlib.Path, change) -> None:
    js = directory / "tiny.json"
    meta = json.loads(js.read_text())
    change(meta)
    js.write_text(json.dumps(meta))


def _rehashed(directory: pathlib.Path, change) -> None:
    """Change the parameters and recompute both digests: only the content checks can catch it."""
    npz = directory / "tiny.npz"
    with np.load(npz) as f:
        flat = {k: f[k] for k in f.files}
    change(flat)
    buf = io.BytesIO()
    np.savez_compressed(buf, **flat)
    npz.write_bytes(buf.getvalue())

    def rehash(meta: dict) -> None:
        meta["sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()
        meta["digest"] = mt._digest(buf.getvalue(), meta)
    _edit(directory, rehash)


def test_switching_the_attention_in_the_metadata_is_detected(checkpoint: pathlib.Path) -> None:
    _edit(checkpoint, lambda m: m["config"].update(attention="linear"))
    with pytest.raises(mt.CheckpointError, match="digest"):
        mt.load_checkpoint(checkpoint, "tiny")


def test_editing_the_recorded_risk_is_detected(checkpoint: pathlib.Path) -> None:
    _edit(checkpoint, lambda m: m["eval"].update(excess_risk=0.1))
    with pytest.raises(mt.CheckpointError, match="digest"):
        mt.load_checkpoint(checkpoint, "tiny")


def test_a_huge_width_is_refused_before_any_model_is_built(checkpoint: pathlib.Path) -> None:
    _edit(checkpoint, lambda m: m["config"].update(width=1048576))
    with pytest.raises(mt.CheckpointError, match="limit"):
        mt.load_checkpoint(checkpoint, "tiny")


@pytest.mark.parametrize("change, message", [
    (lambda f: f["readout/w"].__setitem__(0, np.nan), "non-finite"),
    (lambda f: f.update({"readout/w": f["readout/w"].astype(np.int32)}), "dtype"),
    (lambda f: f.update({"readout/w": np.zeros(3, np.float32)}), "shape"),
    (lambda f: f.pop("readout/b"), "missing"),
])
def test_parameters_are_checked_even_with_matching_digests(checkpoint: pathlib.Path, change, message) -> None:
    _rehashed(checkpoint, change)
    with pytest.raises(mt.CheckpointError, match=message):
        mt.load_checkpoint(checkpoint, "tiny")


def test_save_checkpoint_checks_everything_before_writing(tmp_path: pathlib.Path) -> None:
    config = mt.Config(name="tiny", **TINY)
    params = mt.init_model(config, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="reserved"):
        mt.save_checkpoint(tmp_path, config, params, {"config": {"name": "other"}})
    with pytest.raises(ValueError, match="JSON"):
        mt.save_checkpoint(tmp_path, config, params, {"x": object()})
    with pytest.raises(ValueError, match="JSON"):
        mt.save_checkpoint(tmp_path, config, params, {"x": float("nan")})
    bad = jax.tree_util.tree_map(np.array, params)
    bad["readout"]["w"][0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        mt.save_checkpoint(tmp_path, config, bad, {})
    assert list(tmp_path.iterdir()) == []                      # no orphan .npz, no temporary file
    with pytest.raises(ValueError, match="safe file name"):
        mt.load_checkpoint(tmp_path, "../tiny")


def test_the_summary_is_written_once_every_run_has_a_checkpoint(tmp_path: pathlib.Path, capsys) -> None:
    runs = {"defaults": {**TINY, "eval_tasks": 8}, "runs": [{"name": "m_seed0"}, {"name": "m_seed1", "seed": 1}]}
    config = _write(tmp_path / "sweep.json", runs)
    out = tmp_path / "out"
    mt.main(["--config", str(config), "--out", str(out), "--only", "m_seed0", "--summary"])
    assert not (out / "summary.json").exists()  # runs are missing
    mt.main(["--config", str(config), "--out", str(out), "--summary"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["main"] == "m" and summary["seeds"] == {"m": 2}
    assert set(summary["excess_risk"]) == {"m", *mt.BASELINES}
    assert set(summary["excess_risk"]["m"]) == {"2", "4"}  # the trained context lengths


def test_runs_group_into_models_by_their_seed_suffix() -> None:
    configs = [mt.Config(name=n, **TINY) for n in ("h4_seed0", "h4_seed2", "h1_seed0", "solo", "x_seedy")]
    groups = mt.model_groups(configs)
    assert {k: [c.name for c in v] for k, v in groups.items()} == {
        "h4": ["h4_seed0", "h4_seed2"], "h1": ["h1_seed0"], "solo": ["solo"], "x_seedy": ["x_seedy"]}


def test_a_continuation_starts_from_its_parent(tmp_path: pathlib.Path, capsys) -> None:
    runs = {"defaults": TINY, "runs": [{"name": "a"}, {"name": "b", "init_from": "a", "lr": 1e-9}]}
    config = _write(tmp_path / "sweep.json", runs)
    out = tmp_path / "out"
    _fails(["--config", str(config), "--out", str(out), "--only", "b"], capsys, "missing", "--only a")
    mt.main(["--config", str(config), "--out", str(out), "--summary"])
    assert json.loads((out / "summary.json").read_text())["main"] == "b"  # the model trained longest
    _, parent, parent_meta = mt.load_checkpoint(out, "a")
    _, child, meta = mt.load_checkpoint(out, "b")
    assert meta["init_from"] == {"name": "a", "digest": parent_meta["digest"]} and meta["total_steps"] == 2
    for x, y in zip(jax.tree_util.tree_leaves(parent), jax.tree_util.tree_leaves(child), strict=True):
        np.testing.assert_allclose(x, y, atol=1e-6)  # one step at lr 1e-9 from the parent
