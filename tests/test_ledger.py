"""The verification ledger: records are checked when made, and the ledger page's collection finds
every labelled statement of the book with the evidence its chapter recorded."""

from __future__ import annotations

import importlib
import inspect
import pathlib
import pkgutil
import re

import nbformat
import pytest
from softmax_icl import ledger


def executed(tmp_path: pathlib.Path, markdown: str, code: str) -> pathlib.Path:
    """Execute a two-cell notebook in a fresh kernel and write it to ``tmp_path/book/ch.ipynb``."""
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(markdown),
                                         nbformat.v4.new_code_cell(code)])
    NotebookClient(nb, timeout=60, kernel_name="python3", allow_errors=True).execute()
    (tmp_path / "book").mkdir(exist_ok=True)
    path = tmp_path / "book" / "ch.ipynb"
    nbformat.write(nb, path)
    return path


LEMMA = ":::{prf:lemma} A demo identity\n:label: lem-demo\n\n$1 = 1$.\n:::\n"


def test_a_recorded_statement_is_collected_with_its_title_source_and_figures(tmp_path: pathlib.Path) -> None:
    executed(tmp_path, LEMMA, "from softmax_icl import ledger\n"
                              "ledger.claim('lem-demo', 'ours')\n"
                              "ledger.record('lem-demo', 'symbolic', 0, 'n = 3')\n"
                              "ledger.record('lem-demo', 'numeric', 2.5e-16, 'n = 500', tolerance=1e-12)\n")
    rows, problems = ledger.collect(tmp_path, ["book/ch"])
    assert problems == []
    (row,) = rows
    assert (row.statement.label, row.statement.title, row.source) == ("lem-demo", "A demo identity", "ours")
    assert row.figures == {"symbolic": "exact", "numeric": "2.5e-16"}
    table = ledger.render_markdown(rows)
    assert "{prf:ref}`A demo identity <lem-demo>`" in table
    assert "numeric {glue:text}`/book/ch.ipynb::ev.lem-demo.numeric:s`" in table and "autodiff" not in table
    assert ledger.summary(rows) == {"statements": 1, "chapters": 1, "ours": 1, "symbolic": 1, "numeric": 1,
                                    "autodiff": 0, "bound": 0}


def test_a_statement_without_evidence_is_a_problem(tmp_path: pathlib.Path) -> None:
    executed(tmp_path, LEMMA, "print('no record')")
    _, problems = ledger.collect(tmp_path, ["book/ch"])
    assert any("no recorded evidence" in p for p in problems)
    assert any("no recorded source" in p for p in problems)


def test_evidence_for_an_unstated_label_and_error_outputs_are_problems(tmp_path: pathlib.Path) -> None:
    executed(tmp_path, LEMMA, "from softmax_icl import ledger\n"
                              "ledger.claim('lem-demo', 'ours')\n"
                              "ledger.record('lem-other', 'bound', 0.5, 'random search')\n"
                              "raise AssertionError('a failing check')\n")
    _, problems = ledger.collect(tmp_path, ["book/ch"])
    assert any("'lem-other', which the chapter does not state" in p for p in problems)
    assert any("AssertionError: a failing check" in p for p in problems)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        (("lem-x", "symbolic", 2, "n = 3"), {}, AssertionError, "2 nonzero entries"),
        (("lem-x", "numeric", 1e-6, "n = 3"), {"tolerance": 1e-9}, AssertionError, "exceeds the tolerance"),
        (("lem-x", "bound", 1.01, "search"), {}, AssertionError, "bound is violated"),
        (("lem-x", "numeric", 1e-16, "n = 3"), {}, ValueError, "needs tolerance"),
        (("lem-x", "bound", 0.5, "search"), {"tolerance": 1.0}, ValueError, "takes no tolerance"),
        (("Lemma 3", "symbolic", 0, "n = 3"), {}, ValueError, "label must be"),
        (("lem-x", "proof", 0, "n = 3"), {}, ValueError, "kind must be one of"),
        (("lem-x", "numeric", float("nan"), "n"), {"tolerance": 1.0}, ValueError, "finite number"),
        (("lem-x", "symbolic", 0, "x" * 80), {}, ValueError, "at most"),
    ],
)
def test_a_record_can_claim_no_more_than_the_check_showed(args, kwargs, error, message) -> None:
    with pytest.raises(error, match=message):
        ledger.record(*args, **kwargs)


def test_the_book_ledger_covers_every_labelled_statement_of_the_toc(root: pathlib.Path) -> None:
    """The committed chapters carry a source and evidence for each statement (nbval checks that
    those outputs are what a fresh execution produces)."""
    chapters = [c for c in ledger.toc_chapters(root) if c != "book/ledger"]
    assert "book/notation" in chapters and "book/softmax_regression" in chapters
    rows, problems = ledger.collect(root, chapters)
    assert problems == []
    assert "lem-vec-row" in {r.statement.label for r in rows}


def test_every_public_function_links_back_to_its_chapter(root: pathlib.Path) -> None:
    """The API reference shows each function's docstring; each names the chapter deriving it."""
    import softmax_icl

    infrastructure = {"checks", "ledger"}
    modules = [f"softmax_icl.{m.name}" for m in pkgutil.iter_modules(softmax_icl.__path__)
               if not m.name.startswith("_") and not m.ispkg and m.name not in infrastructure]
    assert "softmax_icl.notation" in modules and "softmax_icl.symbolic" in modules
    for name in modules:
        module = importlib.import_module(name)
        for fname in getattr(module, "__all__", []):
            obj = getattr(module, fname)
            if not inspect.isfunction(obj):
                continue
            doc = inspect.getdoc(obj) or ""
            links = re.findall(r":doc:`/(book/[\w/-]+)`", doc)
            assert links, f"{name}.{fname}: docstring has no ':doc:`/book/...`' link to its chapter"
            for link in links:
                assert (root / f"{link}.ipynb").exists() or (root / f"{link}.md").exists(), f"{name}.{fname}: {link}"
