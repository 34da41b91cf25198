"""Every chapter keeps the book's promises: public library names only, no hidden derivations,
rendered mathematics for each labelled statement, and wrong closed forms caught when it runs."""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys

import nbformat
import pytest
from softmax_icl import ledger

PRIVATE = re.compile(r"\b(?:softmax_icl|[a-z_][a-z0-9_]*)\.(_[a-zA-Z]\w*)")
DIFFERENTIATION = re.compile(r"\bsp\.diff\(|\.diff\(|\.jacobian\(|\bsp\.hessian\(|\.hessian\(")
STATEMENT = re.compile(r"\{prf:(?:lemma|theorem|proposition|corollary)\}")
# Chapters whose every statement is a differentiation identity or rests on one.
DERIVING = ("book/notation", "book/softmax_regression")


def chapters(root: pathlib.Path) -> list[str]:
    return [c for c in ledger.toc_chapters(root) if c != "book/ledger"]


def cells(root: pathlib.Path, chapter: str, kind: str) -> list[dict]:
    notebook = json.loads((root / f"{chapter}.ipynb").read_text(encoding="utf-8"))
    return [c for c in notebook["cells"] if c["cell_type"] == kind]


def test_no_chapter_uses_a_private_library_name_or_the_retired_check_modules(root: pathlib.Path) -> None:
    for chapter in chapters(root):
        code = "\n".join("".join(c["source"]) for c in cells(root, chapter, "code"))
        private = sorted(set(PRIVATE.findall(code)) - {"__version__", "__name__", "__file__", "__doc__"})
        assert not private, f"{chapter} uses private names {private}"
        assert "softmax_icl.verify" not in code, f"{chapter} imports softmax_icl.verify"


def test_each_labelled_statement_has_a_rendered_formula(root: pathlib.Path) -> None:
    for chapter in chapters(root):
        statements = sum(len(STATEMENT.findall("".join(c["source"]))) for c in cells(root, chapter, "markdown"))
        latex = sum("text/latex" in o.get("data", {}) for c in cells(root, chapter, "code") for o in c["outputs"])
        assert latex >= statements, f"{chapter}: {statements} statements but {latex} rendered formulas"


@pytest.mark.parametrize("chapter", DERIVING)
def test_deriving_chapters_differentiate_in_visible_cells(root: pathlib.Path, chapter: str) -> None:
    code = "\n".join("".join(c["source"]) for c in cells(root, chapter, "code"))
    statements = sum(len(STATEMENT.findall("".join(c["source"]))) for c in cells(root, chapter, "markdown"))
    assert "import sympy as sp" in code
    assert len(DIFFERENTIATION.findall(code)) >= statements, f"{chapter}: fewer derivatives than statements"


def run_with_patch(root: pathlib.Path, tmp: pathlib.Path, chapter: str, patch: str) -> tuple[int, str]:
    """Run a copy of a chapter under nbval without output comparison (``--nbval-lax``), with
    ``patch`` executed right after its first code cell (the imports) and the kernel working in
    ``book/`` as for the real chapter; return pytest's exit status and output."""
    nb = nbformat.read(root / f"{chapter}.ipynb", as_version=4)
    first = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    nb.cells.insert(first + 1, nbformat.v4.new_code_cell(patch))
    nb.cells.insert(0, nbformat.v4.new_code_cell(f"import os\nos.chdir({str(root / 'book')!r})"))
    copy = tmp / f"patched_{chapter.rsplit('/', 1)[-1]}.ipynb"
    nbformat.write(nb, copy)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                           "--nbval-lax", "--nbval-current-env", "-x", str(copy)],
                          cwd=tmp, capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


WRONG_FORMS = {
    "book/notation": "notation.kron = lambda A, B: np.kron(B, A)",
    # the gradient A₁ᵀPA₂ with the normalizing term −diag(rowsum(F∘C))F of P dropped
    "book/tensor_trick": ("msr.normalized_gradient = lambda A1, A2, X, B, **kw: "
                          "A1.T @ ((F := msr.softmax_prediction(A1, A2, X)) * (F - B)) @ A2"),
    # the largest softmax entry under ‖z‖ ≤ R² with the factor √(n/(n−1)) dropped
    "book/lipschitz": "lz.largest_softmax_entry = lambda n, R: 1 / (1 + (n - 1) * math.exp(-R * R))",
    # the Hessian of the normalized loss without its curvature term K: the Gauss–Newton AᵀJ²A
    "book/softmax_regression": ("sr.normalized_hessian = lambda A, x, b: A.T @ (J := sr.softmax_jacobian_weights("
                                "sr.softmax_prediction(A, x)).dense()) @ J @ A"),
    # r̂ = (1/n) Σ y_i x_i normalized by n − 1 instead of n (a sample-covariance habit)
    "book/sparse_regression": ("sr.empirical_correlation = lambda X, y: "
                               "np.einsum('tni,tn->ti', X, y) / (X.shape[1] - 1)"),
    # attention averaged over the n + 1 prompt tokens instead of the n context tokens
    "book/multihead_experiment": ("attend = tf.attention_layer\n"
                                  "tf.attention_layer = lambda p, Z, attention='linear', head_mask=None, queries=1: "
                                  "attend(p, Z, attention, head_mask, queries) * (Z.shape[0] - queries) / Z.shape[0]"),
}


@pytest.mark.slow
@pytest.mark.parametrize("chapter", sorted(WRONG_FORMS))
def test_a_wrong_closed_form_in_the_library_fails_the_chapter(root: pathlib.Path, tmp_path: pathlib.Path,
                                                             chapter: str) -> None:
    status, output = run_with_patch(root, tmp_path, chapter, WRONG_FORMS[chapter])
    assert status == 1 and "AssertionError" in output, output[-3000:]
