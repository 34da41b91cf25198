"""Symbolic toolkit of the chapters: symbolic matrices, exact-zero tests, rendering, random exact points.

A chapter builds a *definition* from these pieces, lets SymPy differentiate it, shows the result
with :func:`show`, and proves the difference to the stated closed form zero with
:func:`assert_zero`. Used from :doc:`/book/notation` on.

Exact zeros through exponentials: SymPy does not always cancel sums of ``exp`` terms. In
:func:`exp_free` every ``exp(u)`` is written as a product of ``exp`` of the symbols in ``u``
(``u`` must be a polynomial in them) and each ``exp(s)`` becomes a new positive symbol ``E_s``.
A rational function of independent symbols that cancels to zero is zero at every substitution,
so :func:`is_zero` is *sound*: if it says zero, the expression is identically zero.
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction

import numpy as np
import sympy as sp

__all__ = ["matrix", "vector", "row_vec", "softmax", "exp_free", "is_zero", "nonzero_entries",
           "assert_zero", "show", "random_rationals", "schwartz_zippel"]

Expr = sp.Expr | sp.MatrixBase


def matrix(name: str, rows: int, cols: int, **assumptions: bool) -> sp.Matrix:
    """A ``rows × cols`` matrix of independent symbols ``name_{ij}`` (real unless told otherwise).

    Derived in :doc:`/book/notation`.
    """
    _check_size(rows, "rows")
    _check_size(cols, "cols")
    assumptions = {"real": True, **assumptions}
    return sp.Matrix(rows, cols, lambda i, j: sp.Symbol(f"{name}_{{{i + 1}{j + 1}}}", **assumptions))


def vector(name: str, n: int, **assumptions: bool) -> sp.Matrix:
    """A column of ``n`` independent symbols ``name_i`` (real unless told otherwise).

    Derived in :doc:`/book/notation`.
    """
    _check_size(n, "n")
    assumptions = {"real": True, **assumptions}
    return sp.Matrix(n, 1, lambda i, _: sp.Symbol(f"{name}_{i + 1}", **assumptions))


def row_vec(M: sp.MatrixBase) -> sp.Matrix:
    """Row-major ``vec`` of a SymPy matrix (SymPy's own ``Matrix.vec()`` is column-major).

    Derived in :doc:`/book/notation`.
    """
    if not isinstance(M, sp.MatrixBase):
        raise TypeError(f"M must be a SymPy matrix, got {type(M).__name__}")
    return M.T.vec()


def softmax(z: sp.MatrixBase) -> sp.Matrix:
    """The definition ``exp(z) / ⟨exp(z), 1⟩`` of a symbolic column vector.

    Derived in :doc:`/book/notation`.
    """
    if not isinstance(z, sp.MatrixBase) or z.shape[1] != 1:
        raise TypeError(f"z must be a SymPy column vector, got {z!r}")
    e = z.applyfunc(sp.exp)
    return e / sum(e)


def exp_free(expr: Expr) -> Expr:
    """Replace every ``exp(s)``, after splitting ``exp(Σ c_k m_k)`` into ``Π exp(m_k)^{c_k}``, by a
    positive symbol ``E_{m_k}``: the result is a rational function when ``expr`` is one in ``exp``.

    Derived in :doc:`/book/notation`.
    """
    if isinstance(expr, sp.MatrixBase):
        return expr.applyfunc(exp_free)
    expr = sp.sympify(expr)
    names: dict[sp.Expr, sp.Symbol] = {}

    def atom(monomial: sp.Expr) -> sp.Expr:
        coeff, rest = monomial.as_coeff_Mul()
        if rest == 1:
            return sp.exp(coeff)
        if rest not in names:
            names[rest] = sp.Symbol(f"E_{{{sp.latex(rest)}}}", positive=True)
        return names[rest] ** coeff

    def split(arg: sp.Expr) -> sp.Expr:
        return sp.Mul(*(atom(m) for m in sp.Add.make_args(sp.expand(arg))))

    return expr.replace(lambda e: isinstance(e, sp.exp), lambda e: split(e.args[0]))


def is_zero(expr: Expr) -> bool:
    """Whether ``expr`` (a scalar or every entry of a matrix) cancels to exactly zero after
    :func:`exp_free`. Sound: ``True`` proves the identity.

    Derived in :doc:`/book/notation`.
    """
    return nonzero_entries(expr) == 0


def nonzero_entries(expr: Expr) -> int:
    """How many entries of ``expr`` do not cancel to zero after :func:`exp_free` (0 proves it zero).

    Derived in :doc:`/book/notation`.
    """
    entries = list(expr) if isinstance(expr, sp.MatrixBase) else [expr]
    return sum(sp.cancel(sp.together(exp_free(e))) != 0 for e in entries)


def assert_zero(expr: Expr, what: str) -> int:
    """Raise ``AssertionError`` naming ``what`` unless ``expr`` cancels to exactly zero; return the
    number of nonzero entries (0), the figure a symbolic ledger record takes.

    Derived in :doc:`/book/notation`.
    """
    bad = nonzero_entries(expr)
    if bad:
        raise AssertionError(f"{what}: {bad} entries of the residual do not cancel to zero")
    return bad


def show(lhs: Expr | str, rhs: Expr | str | None = None, *, relation: str = "=") -> None:
    """Display ``lhs = rhs`` (or ``lhs`` alone) as rendered mathematics; a string is LaTeX.

    Derived in :doc:`/book/notation`.
    """
    from IPython.display import Math, display

    def tex(e: Expr | str) -> str:
        return e if isinstance(e, str) else sp.latex(e)

    display(Math(tex(lhs) if rhs is None else f"{tex(lhs)} {relation} {tex(rhs)}"))


def random_rationals(symbols: Iterable[sp.Symbol], rng: np.random.Generator, *,
                     size: int = 10**6) -> dict[sp.Symbol, sp.Rational]:
    """Exact random rationals ``k / size`` with ``k`` uniform in ``[-size, size]``, one per symbol.

    Derived in :doc:`/book/notation`.
    """
    _check_size(size, "size")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    symbols = list(symbols)
    draws = rng.integers(-size, size + 1, len(symbols))
    return {s: sp.Rational(int(k), size) for s, k in zip(symbols, draws, strict=True)}


def schwartz_zippel(degree: int, size: int, points: int = 1) -> Fraction:
    """Probability bound ``(degree / (2·size + 1))^points`` that a nonzero polynomial of total degree
    ``degree`` vanishes at ``points`` independent points drawn by :func:`random_rationals`.

    Derived in :doc:`/book/notation`.
    """
    for value, name in ((degree, "degree"), (size, "size"), (points, "points")):
        _check_size(value, name)
    return Fraction(degree, 2 * size + 1) ** points


def _check_size(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
