"""The verification ledger matches the book: every labelled statement is registered, and back."""

from __future__ import annotations

import importlib
import inspect
import json
import pathlib
import pkgutil
import re

from softmax_icl import ledger

STATEMENT = re.compile(r"^\s*(:{3,}|`{3,})\{prf:(lemma|theorem|proposition|corollary)\}")
LABEL = re.compile(r"^\s*:label:\s*(\S+)")


def markdown_sources(root: pathlib.Path) -> dict[str, str]:
    """Markdown text of every page of the book, keyed by docname (``book/notation``)."""
    sources = {}
    for path in sorted((root / "book").rglob("*")):
        if ".ipynb_checkpoints" in path.parts or "_build" in path.parts:
            continue
        if path.suffix == ".ipynb":
            cells = json.loads(path.read_text())["cells"]
            text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
        elif path.suffix == ".md":
            text = path.read_text()
        else:
            continue
        sources[str(path.relative_to(root).with_suffix(""))] = text
    return sources


def labelled_statements(root: pathlib.Path) -> dict[str, str]:
    """Map label -> docname for every lemma/theorem/proposition/corollary; unlabelled ones fail."""
    found: dict[str, str] = {}
    for doc, text in markdown_sources(root).items():
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if not STATEMENT.match(line):
                continue
            label = None
            for option in lines[i + 1:]:
                if not option.strip().startswith(":"):
                    break
                if m := LABEL.match(option):
                    label = m.group(1)
            assert label is not None, f"{doc}: statement without a :label: — {line.strip()}"
            assert label not in found, f"label {label} used twice ({found[label]} and {doc})"
            found[label] = doc
    return found


def test_every_statement_is_registered_and_every_entry_has_a_statement(root: pathlib.Path) -> None:
    in_book = labelled_statements(root)
    registered = {c.label: c.chapter for c in ledger.all_claims()}
    assert sorted(set(in_book) - set(registered)) == [], "statements with no ledger entry"
    assert sorted(set(registered) - set(in_book)) == [], "ledger entries with no statement in the book"
    wrong_chapter = {k: (registered[k], in_book[k]) for k in in_book if registered[k] != in_book[k]}
    assert not wrong_chapter, f"ledger entries naming the wrong chapter (registered, actual): {wrong_chapter}"


def test_every_claim_has_checks_and_a_source() -> None:
    for claim in ledger.all_claims():
        assert claim.checks, f"{claim.label} has no check"
        assert claim.source.strip(), f"{claim.label} names no source ('ours' or a paper)"


def test_the_registry_scanner_sees_statements(root: pathlib.Path) -> None:
    """Guard against a scanner that finds nothing and therefore never fails."""
    assert "lem-vec-row" in labelled_statements(root)


def test_a_failing_check_is_reported_as_failed() -> None:
    def broken() -> ledger.Evidence:
        raise AssertionError("deliberately wrong closed form")

    claim = ledger.Claim("lem-demo", "book/notation", "demo", "ours", (broken,))
    rows = ledger.run_ledger([claim])
    assert rows[0].error is not None and "deliberately wrong" in rows[0].error
    assert "**FAILED**" in ledger.render_markdown(rows)
    assert ledger.status_counts(rows)["failed"] == 1


def test_every_public_function_links_back_to_its_chapter(root: pathlib.Path) -> None:
    """The API reference shows each function's docstring; each names the chapter deriving it."""
    import softmax_icl

    infrastructure = {"checks", "ledger"}
    modules = [f"softmax_icl.{m.name}" for m in pkgutil.iter_modules(softmax_icl.__path__)
               if not m.name.startswith("_") and not m.ispkg and m.name not in infrastructure]
    assert "softmax_icl.notation" in modules
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
