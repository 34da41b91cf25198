"""The verification ledger: the evidence each chapter records for its labelled statements.

A chapter derives and checks each statement in visible cells, then records what the check
established with :func:`record` (and the statement's source with :func:`claim`). Both store
their result in the executed notebook as MyST-NB glue, so the record travels with the chapter's
outputs: nbval checks it against a fresh execution, and the ledger page (:doc:`/book/ledger`)
gathers it with :func:`collect` and pastes each figure from the chapter that produced it. No
check runs twice: the ledger reads, it does not re-run.
"""

from __future__ import annotations

import json
import math
import pathlib
import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["KINDS", "Evidence", "claim", "record", "Statement", "Row", "toc_chapters", "collect",
           "render_markdown", "summary"]

Kind = Literal["symbolic", "numeric", "autodiff", "bound"]
# The kinds of evidence. symbolic — SymPy reduced a residual to an exact zero; numeric — worst
# relative error against an independent route (finite differences, an explicit construction);
# autodiff — worst relative error against JAX; bound — worst ratio left side / right side found
# (at most 1 if the bound holds).
KINDS: tuple[str, ...] = ("symbolic", "numeric", "autodiff", "bound")
LABEL = re.compile(r"^[a-z][a-z0-9-]*$")
BOUND_SLACK = 1e-9  # a ratio may exceed 1 by round-off only
MAX_DETAIL = 56  # the chapter prints one line per record; keep it on the page


class _Plain(str):
    """A string whose notebook display is the bare text (no quotes), for glue."""

    def _repr_pretty_(self, p: object, cycle: bool) -> None:
        p.text(str(self))  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Evidence:
    """What one executed check established about one statement."""

    label: str
    kind: Kind
    value: float
    detail: str

    @property
    def figure(self) -> str:
        """The measured figure as the ledger shows it."""
        if self.kind == "symbolic":
            return "exact"
        if self.kind == "bound":
            return f"{self.value:.4f}"
        return f"{self.value:.1e}"

    def __str__(self) -> str:
        # Printed next to its statement, so the label is implied; at most 77 characters.
        return f"✓ {self.kind:<8} {self.figure:>8}  {self.detail}"


def _glue_key(prefix: str, label: str, kind: str = "") -> str:
    return f"{prefix}.{label}" + (f".{kind}" if kind else "")


def _glue(key: str, text: str) -> None:
    from myst_nb import glue

    glue(key, _Plain(text), display=False)


def _check_label(label: object) -> str:
    if not isinstance(label, str) or not LABEL.match(label):
        raise ValueError(f"label must be a statement label like 'lem-vec-row', got {label!r}")
    return label


def claim(label: str, source: str) -> None:
    """Record where a statement comes from: ``"ours"`` or the paper and, where known, its numbering."""
    _check_label(label)
    if not isinstance(source, str) or not source.strip() or "|" in source or "\n" in source:
        raise ValueError(f"source must be a non-empty one-line string without '|', got {source!r}")
    _glue(_glue_key("claim", label), source.strip())


def record(label: str, kind: Kind, value: float, detail: str, *,
           tolerance: float | None = None) -> None:
    """Record the evidence of a check that has just passed and print it as one line.

    ``value``: the number of nonzero residual entries (symbolic: must be 0), the worst relative
    error (numeric, autodiff: must be ≤ ``tolerance``, which is then required) or the worst ratio
    (bound: must be ≤ 1). A value that does not meet its criterion raises ``AssertionError``, so a
    record can never claim more than the check showed.
    """
    _check_label(label)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"value must be a finite number >= 0, got {value!r}")
    if not isinstance(detail, str) or "\n" in detail or len(detail) > MAX_DETAIL:
        raise ValueError(f"detail must be one line of at most {MAX_DETAIL} characters, got {detail!r}")
    needs_tolerance = kind in ("numeric", "autodiff")
    if needs_tolerance != (tolerance is not None):
        raise ValueError(f"a {kind} record {'needs' if needs_tolerance else 'takes no'} tolerance")
    if kind == "symbolic" and value != 0:
        raise AssertionError(f"{label}: symbolic residual has {value} nonzero entries")
    if needs_tolerance and not value <= tolerance:  # type: ignore[operator]
        raise AssertionError(f"{label}: {kind} error {value:.3e} exceeds the tolerance {tolerance:.1e}")
    if kind == "bound" and value > 1 + BOUND_SLACK:
        raise AssertionError(f"{label}: the bound is violated, worst ratio {value!r} > 1")
    evidence = Evidence(label, kind, float(value), detail)
    _glue(_glue_key("ev", label, kind), evidence.figure)
    print(evidence)


# ---- gathering the record from the executed chapters ----------------------------------------

STATEMENT = re.compile(r"^\s*(:{3,}|`{3,})\{prf:(lemma|theorem|proposition|corollary)\}\s*(.*)$")
OPTION_LABEL = re.compile(r"^\s*:label:\s*(\S+)")


@dataclass(frozen=True)
class Statement:
    """A labelled ``prf:`` statement of a chapter."""

    label: str
    kind: str
    title: str
    chapter: str  # docname, e.g. "book/notation"


@dataclass(frozen=True)
class Row:
    """A statement, its recorded source and evidence (figure text by kind)."""

    statement: Statement
    source: str | None
    figures: dict[str, str]


def _statements(chapter: str, markdown: str) -> list[Statement]:
    found = []
    lines = markdown.splitlines()
    for i, line in enumerate(lines):
        m = STATEMENT.match(line)
        if not m:
            continue
        label = None
        for option in lines[i + 1:]:
            if not option.strip().startswith(":") or option.strip().startswith(":::"):
                break
            if o := OPTION_LABEL.match(option):
                label = o.group(1)
        if label is None:
            raise ValueError(f"{chapter}: statement without a :label: — {line.strip()}")
        found.append(Statement(label, m.group(2), m.group(3).strip(), chapter))
    return found


def _glued(notebook: dict) -> tuple[dict[str, str], list[str]]:
    """Glue key → text of every glued output of an executed notebook, and the error outputs."""
    glued, errors = {}, []
    for cell in notebook.get("cells", []):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                errors.append(f"{output.get('ename')}: {output.get('evalue')}")
            name = output.get("metadata", {}).get("scrapbook", {}).get("name")
            if name is None:
                continue
            data = output.get("data", {})
            text = next((v for k, v in data.items() if k.endswith("text/plain")), None)
            if name in glued:
                errors.append(f"glue key {name!r} recorded twice")
            glued[name] = "".join(text) if isinstance(text, list) else str(text)
    return glued, errors


def toc_chapters(root: str | pathlib.Path) -> list[str]:
    """The notebooks of ``_toc.yml`` in reading order, as docnames (``book/notation``).

    Derived in :doc:`/book/ledger`.
    """
    import yaml

    root = pathlib.Path(root)
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            file = node.get("file")
            if isinstance(file, str) and (root / f"{file}.ipynb").is_file():
                found.append(file)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8")))
    return found


def collect(root: str | pathlib.Path, chapters: list[str]) -> tuple[list[Row], list[str]]:
    """Read the executed chapters (docnames, ``book/notation``) and pair every labelled statement
    with its recorded source and evidence. Returns the rows and a list of problems: a statement
    with no source or no evidence, evidence for a label the chapter does not state, a record in
    an unknown kind, an error output, a statement labelled twice."""
    root = pathlib.Path(root)
    rows, problems, seen = [], [], {}
    for chapter in chapters:
        path = root / f"{chapter}.ipynb"
        notebook = json.loads(path.read_text(encoding="utf-8"))
        markdown = "\n".join("".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "markdown")
        statements = _statements(chapter, markdown)
        glued, errors = _glued(notebook)
        problems += [f"{chapter}: {e}" for e in errors]
        labels = {s.label for s in statements}
        for key in glued:
            prefix, _, rest = key.partition(".")
            if prefix not in ("claim", "ev"):
                continue
            label, _, kind = rest.partition(".")
            if label not in labels:
                problems.append(f"{chapter}: evidence recorded for {label!r}, which the chapter does not state")
            if prefix == "ev" and kind not in KINDS:
                problems.append(f"{chapter}: evidence of unknown kind {kind!r} for {label!r}")
        for s in statements:
            if s.label in seen:
                problems.append(f"{s.label} stated twice ({seen[s.label]} and {chapter})")
            seen[s.label] = chapter
            source = glued.get(_glue_key("claim", s.label))
            figures = {k: glued[_glue_key("ev", s.label, k)] for k in KINDS if _glue_key("ev", s.label, k) in glued}
            if source is None:
                problems.append(f"{chapter}: {s.label} has no recorded source (ledger.claim)")
            if not figures:
                problems.append(f"{chapter}: {s.label} has no recorded evidence (ledger.record)")
            rows.append(Row(s, source, figures))
    return rows, problems


def _short_name(chapter: str) -> str:
    return chapter.rsplit("/", 1)[-1].replace("_", " ")


def render_markdown(rows: list[Row]) -> str:
    """The ledger as a MyST table. Each figure is pasted (glue) from the chapter that recorded it,
    so the built page shows what that chapter's execution produced."""
    lines = ["| statement | chapter | source | evidence |", "|---|---|---|---|"]
    for row in rows:
        s = row.statement
        title = s.title or s.label
        glue = f"{{glue:text}}`/{s.chapter}.ipynb::"
        evidence = "<br>".join(f"{kind} {glue}ev.{s.label}.{kind}:s`" for kind in KINDS if kind in row.figures)
        cells = [f"{{prf:ref}}`{title} <{s.label}>`", f"{{doc}}`{_short_name(s.chapter)} </{s.chapter}>`",
                 f"{glue}claim.{s.label}:s`", evidence]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary(rows: list[Row]) -> dict[str, int]:
    """How many statements there are, how many carry each kind of evidence, and how many are ours."""
    counts = {"statements": len(rows), "chapters": len({r.statement.chapter for r in rows}),
              "ours": sum(1 for r in rows if (r.source or "").lower().startswith("ours"))}
    for kind in KINDS:
        counts[kind] = sum(kind in r.figures for r in rows)
    return counts
