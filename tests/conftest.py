"""Shared fixtures: the repository root and one build of the website per test session."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
JUPYTER_BOOK = pathlib.Path(sys.executable).parent / "jupyter-book"


@pytest.fixture(scope="session")
def root() -> pathlib.Path:
    return ROOT


@pytest.fixture(scope="session")
def built_site(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, str]:
    """Build the book once with ``-n -W --keep-going`` and return (html directory, build log).

    The build renders the committed notebook outputs (``execute_notebooks: off``): that those
    outputs are what a clean execution produces is what nbval checks, notebook by notebook, in
    the same test run. ``make book`` executes every notebook from scratch instead.
    """
    out = tmp_path_factory.mktemp("site")
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = "off"
    config_file = out / "_config.yml"
    config_file.write_text(yaml.safe_dump(config))
    proc = subprocess.run(
        [str(JUPYTER_BOOK), "build", str(ROOT), "--config", str(config_file), "--path-output", str(out),
         "-n", "-W", "--keep-going"],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}, timeout=1800,
    )
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        pytest.fail(f"jupyter-book build failed (exit {proc.returncode}):\n{log[-6000:]}")
    return out / "_build" / "html", log
