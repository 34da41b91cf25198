"""The verification ledger: every labelled statement of the book and the checks that verify it.

Each chapter's claims are declared in ``softmax_icl.verify.<chapter>`` as a list ``CLAIMS`` of
:class:`Claim`; the chapter calls the same check functions it shows, the appendix page
*Verification ledger* executes all of them at build time, and a test matches the registry against
the ``prf:`` labels of the book. Built in the appendix *Verification ledger*.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Evidence", "Claim", "CHAPTER_MODULES", "all_claims", "run_claim"]

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
CHAPTER_MODULES: tuple[str, ...] = ("notation",)


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
