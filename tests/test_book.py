"""The book as a whole: table of contents, notebook collection by nbval, a zero-warning build."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import yaml


def toc_files(root: pathlib.Path) -> list[str]:
    """Every ``file:`` entry of ``_toc.yml`` (plus the root), without extension."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc.get("parts", toc.get("chapters", [])))
    return files


def toc_notebooks(root: pathlib.Path) -> set[str]:
    return {f + ".ipynb" for f in toc_files(root) if (root / (f + ".ipynb")).exists()}


def test_every_toc_entry_exists(root: pathlib.Path) -> None:
    missing = [f for f in toc_files(root) if not any((root / (f + ext)).exists() for ext in (".ipynb", ".md"))]
    assert not missing, f"_toc.yml lists files that do not exist: {missing}"


def test_every_notebook_is_in_the_toc(root: pathlib.Path) -> None:
    on_disk = {str(p.relative_to(root)) for p in (root / "book").rglob("*.ipynb")
               if ".ipynb_checkpoints" not in p.parts}
    listed = toc_notebooks(root)
    assert on_disk - listed == set(), f"notebooks not in _toc.yml (never built or tested): {sorted(on_disk - listed)}"
    assert listed, "the table of contents lists no notebook"


def test_nbval_collects_every_toc_notebook(root: pathlib.Path) -> None:
    """Collect with the project's pytest options and check every notebook of the toc yields cells."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "book"],
                          cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"collection failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    collected = {m.group(1) for m in re.finditer(r"^(book/\S+\.ipynb)::", proc.stdout, re.MULTILINE)}
    missing = toc_notebooks(root) - collected
    assert not missing, f"notebooks of the table of contents not collected by nbval: {sorted(missing)}"
    stray = collected - toc_notebooks(root)
    assert not stray, f"nbval collects notebooks that are not in the table of contents: {sorted(stray)}"


def test_book_builds_without_warnings(built_site: tuple[pathlib.Path, str]) -> None:
    html, log = built_site
    warnings = [line for line in log.splitlines() if "WARNING" in line or "ERROR" in line]
    assert not warnings, "build warnings:\n" + "\n".join(warnings)
    assert "build succeeded" in log
    for page in ("book/intro.html", "book/notation.html", "book/bibliography.html", "search.html"):
        assert (html / page).is_file(), f"{page} missing from the built site"
    notation = (html / "book" / "notation.html").read_text()
    assert 'id="lem-vec-row"' in notation, "the lemma label lem-vec-row is not an anchor on its page"
    bibliography = (html / "book" / "bibliography.html").read_text()
    for arxiv in ("2304.13276", "2307.02419", "2408.04532"):
        assert arxiv in bibliography, f"arXiv:{arxiv} missing from the bibliography page"
