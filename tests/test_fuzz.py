"""Fuzzing of the public API in the suite: a couple of dozen cases per function of the modules that
validate their input here (scripts/fuzz_public_api.py runs thousands, in worker processes). Every
invalid argument must give a clear error (ValueError/TypeError/… raised by the library itself), every
valid one a correct answer: no raw error, no silent acceptance."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "scripts" / "fuzz_public_api.py"
_spec = importlib.util.spec_from_file_location("fuzz_public_api", SCRIPT)
fuzz = importlib.util.module_from_spec(_spec)
sys.modules["fuzz_public_api"] = fuzz        # dataclasses look their module up there
_spec.loader.exec_module(fuzz)  # type: ignore[union-attr]

SPECS = {s.name: s for s in fuzz.build_specs() if s.name.split(".")[0] in fuzz.OWNED}
# the functions that train, tune or compile (JAX, once per shape) take ~0.1 s a case: fewer cases
SLOW = ("multihead_training.train", "multihead_training.main", "multihead_training.head_importance",
        "sparse_regression.compare_estimators", "transformer.fit_preprocess_heads", "multihead_training.evaluate",
        "sparse_regression.tune_", "multihead_training.risk_by_steps", "multihead_training.load_checkpoint",
        "multihead_training.save_checkpoint", "multihead_training.sample_prompts", "multihead_training.init_model",
        "multihead_training.predict", "multihead_training.query_states", "transformer.")


def _cases(name: str) -> int:
    return 6 if any(name.startswith(s) for s in SLOW) else 24


@pytest.mark.parametrize("name", sorted(SPECS))
def test_fuzz_public_function(name: str) -> None:
    spec = SPECS[name]

    @settings(max_examples=_cases(name), deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(st.integers(0, 2**31 - 1))
    def case(index: int) -> None:
        outcome, detail = fuzz.run_case(spec, 0, index)
        assert outcome in ("clear error", "correct answer"), f"{name}: {outcome}: {detail}"

    case()


def test_the_classifier_tells_raw_from_clear_errors() -> None:
    """The outcome classes can fail: a raw numpy error and a silent acceptance are reported as such."""
    import numpy as np

    raw = fuzz.Spec("demo.raw", lambda x: np.ones(2) @ np.ones(3), {"x": fuzz.arr("n")}, {"n": (1, 3)})
    silent = fuzz.Spec("demo.silent", lambda x: 0.0, {"x": fuzz.arr("n")}, {"n": (1, 3)})
    outcomes = {fuzz.run_case(raw, 0, i)[0] for i in range(20)}
    assert outcomes == {"raw error"}
    outcomes = {fuzz.run_case(silent, 0, i)[0] for i in range(40)}
    assert "silent acceptance" in outcomes and "correct answer" in outcomes
