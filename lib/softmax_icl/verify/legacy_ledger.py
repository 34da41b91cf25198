"""The verification ledger: every labelled statement of the book and the checks that verify it.

Each chapter's claims are declared in ``softmax_icl.verify.<chapter>`` as a list ``CLAIMS`` of
:class:`Claim`; the chapter calls the same check functions it shows, the appendix page
*Verification ledger* executes all of them at build time, and a test matches the registry against
the ``prf:`` labels of the book. Rendered in :doc:`/book/ledger`.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Evidence", "Claim", "CHAPTER_MODULES", "all_claims", "run_claim", "LedgerRow", "run_ledger",
           "render_markdown", "status_counts"]

Kind = Literal["symbolic", "numeric", "autodiff", "bound"]


@dataclass(frozen=True)
class Evidence:
    """What one executed check established.

    ``kind``: symbolic (exact SymPy zero), numeric (closed form vs finite differences or an
    independent route), autodiff (vs JAX), bound (an inequality; ``value`` is the worst ratio
    left/right found, which must be <= 1). ``value`` is the worst relative error, or the ratio.
    """

    kind: Kind
    detail: str
    value: float

    def __str__(self) -> str:
        if self.kind == "symbolic":
            return f"symbolic ✓ ({self.detail})"
        if self.kind == "bound":
            return f"bound ✓ worst ratio {self.value:.4f} ({self.detail})"
        return f"{self.kind} ✓ {self.value:.1e} ({self.detail})"


@dataclass(frozen=True)
class Claim:
    """A labelled statement (``prf:lemma``/``prf:theorem``/``prf:proposition``) and its checks."""

    label: str
    chapter: str
    title: str
    source: str
    checks: tuple[Callable[[], Evidence], ...] = field(default_factory=tuple)


# One module per chapter under softmax_icl.verify, each with a list CLAIMS.
CHAPTER_MODULES: tuple[str, ...] = ()


def all_claims() -> list[Claim]:
    """Every registered claim, in chapter order."""
    claims: list[Claim] = []
    for name in CHAPTER_MODULES:
        module = importlib.import_module(f"softmax_icl.verify.{name}")
        claims.extend(module.CLAIMS)
    labels = [c.label for c in claims]
    duplicates = {x for x in labels if labels.count(x) > 1}
    if duplicates:
        raise ValueError(f"labels registered twice: {sorted(duplicates)}")
    return claims


def run_claim(claim: Claim) -> list[Evidence]:
    """Execute every check of a claim (each raises ``AssertionError`` on failure)."""
    if not claim.checks:
        raise ValueError(f"claim {claim.label!r} has no checks")
    return [check() for check in claim.checks]


@dataclass(frozen=True)
class LedgerRow:
    """A claim with the evidence its checks produced (or the failure message) and the time taken."""

    claim: Claim
    evidence: tuple[Evidence, ...]
    error: str | None
    seconds: float


def run_ledger(claims: list[Claim] | None = None) -> list[LedgerRow]:
    """Execute every claim's checks; a failing check is recorded, not swallowed (see ``error``)."""
    rows = []
    for claim in claims if claims is not None else all_claims():
        start = time.perf_counter()
        try:
            evidence, error = tuple(run_claim(claim)), None
        except AssertionError as exc:
            evidence, error = (), f"{type(exc).__name__}: {exc}"
        rows.append(LedgerRow(claim, evidence, error, time.perf_counter() - start))
    return rows


def _cell(evidence: tuple[Evidence, ...], kind: Kind) -> str:
    found = [e for e in evidence if e.kind == kind]
    if not found:
        return "—"
    if kind == "symbolic":
        return "✓ " + "; ".join(e.detail for e in found)
    if kind == "bound":
        return "✓ worst ratio " + ", ".join(f"{e.value:.4f}" for e in found)
    return "✓ " + f"{max(e.value for e in found):.1e}"


def render_markdown(rows: list[LedgerRow]) -> str:
    """The ledger as a MyST table: each claim links to its statement and its chapter."""
    header = ("| claim | chapter | source | symbolic | numeric (worst rel. error) | autodiff (worst rel. error) "
              "| bound tightness |\n|---|---|---|---|---|---|---|")
    lines = [header]
    for row in rows:
        c = row.claim
        status = [_cell(row.evidence, k) for k in ("symbolic", "numeric", "autodiff", "bound")]
        if row.error is not None:
            status = ["**FAILED**: " + row.error.replace("|", "\\|").splitlines()[0]] + [""] * 3
        lines.append(f"| {{prf:ref}}`{c.label}` | {{doc}}`/{c.chapter}` | {c.source} | " + " | ".join(status) + " |")
    return "\n".join(lines)


def status_counts(rows: list[LedgerRow]) -> dict[str, int]:
    """How many claims carry each kind of evidence, and how many failed."""
    counts = {"claims": len(rows), "failed": sum(r.error is not None for r in rows)}
    for kind in ("symbolic", "numeric", "autodiff", "bound"):
        counts[kind] = sum(any(e.kind == kind for e in r.evidence) for r in rows)
    return counts
