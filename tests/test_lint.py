"""The notebooks' code passes ruff at 88 columns, the check ``make lint`` runs on ``book/``.

Notebook code is read on a page, so its lines are held to 88 columns (the library's limit is
120); the rest of the project's ruff rules apply unchanged. The Makefile and this test name the
same limit; a first test checks that the check does catch a line one column too long.
"""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys

import pytest

RUFF = pathlib.Path(sys.executable).parent / "ruff"


def notebook_line_length(root: pathlib.Path) -> int:
    """The limit ``make lint`` passes to ruff for the notebooks (``NOTEBOOK_LINE_LENGTH``)."""
    match = re.search(r"^NOTEBOOK_LINE_LENGTH\s*:?=\s*(\d+)\s*$", (root / "Makefile").read_text(), re.MULTILINE)
    assert match, "the Makefile defines no NOTEBOOK_LINE_LENGTH"
    return int(match.group(1))


def ruff_notebooks(root: pathlib.Path, *paths: str) -> subprocess.CompletedProcess[str]:
    """Run ``make lint``'s notebook check (the project's ruff configuration) on ``paths``."""
    return subprocess.run(
        [str(RUFF), "check", "--config", str(root / "pyproject.toml"), "--no-cache", "--output-format", "concise",
         "--line-length", str(notebook_line_length(root)), *paths],
        cwd=root, capture_output=True, text=True, timeout=120,
    )


def code_cell_notebook(path: pathlib.Path, source: str) -> None:
    cell = {"cell_type": "code", "execution_count": None, "id": "c0", "metadata": {}, "outputs": [],
            "source": source.splitlines(keepends=True)}
    nb = {"cells": [cell], "metadata": {"language_info": {"name": "python"}}, "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb))


def test_the_notebook_check_catches_a_line_one_column_too_long(root: pathlib.Path, tmp_path: pathlib.Path) -> None:
    assert notebook_line_length(root) == 88
    fits, too_long = tmp_path / "fits.ipynb", tmp_path / "too_long.ipynb"
    code_cell_notebook(fits, "x = " + repr("a" * 82) + "\n")  # 88 columns
    code_cell_notebook(too_long, "x = " + repr("a" * 83) + "\n")  # 89 columns
    proc = ruff_notebooks(root, str(fits))
    assert proc.returncode == 0, f"an 88-column line was flagged:\n{proc.stdout}{proc.stderr}"
    proc = ruff_notebooks(root, str(too_long))
    assert proc.returncode == 1 and "E501" in proc.stdout and "89 > 88" in proc.stdout, (
        f"an 89-column line was not flagged as E501:\n{proc.stdout}{proc.stderr}")


def test_every_notebook_passes_ruff_at_88_columns(root: pathlib.Path) -> None:
    assert list((root / "book").glob("*.ipynb")), "book/ holds no notebook"
    proc = ruff_notebooks(root, "book")
    assert proc.returncode in (0, 1), f"ruff failed to run (exit {proc.returncode}):\n{proc.stderr}"
    findings = [line for line in proc.stdout.splitlines() if re.match(r"book/\S+\.ipynb:cell \d+:", line)]
    per_notebook: dict[str, int] = {}
    for line in findings:
        name = line.split(":", 1)[0]
        per_notebook[name] = per_notebook.get(name, 0) + 1
    summary = ", ".join(f"{name} {count}" for name, count in sorted(per_notebook.items()))
    if proc.returncode != 0:
        pytest.fail(f"ruff (line length {notebook_line_length(root)}) reports {len(findings)} problems in the "
                    f"notebooks ({summary}):\n" + "\n".join(findings), pytrace=False)
