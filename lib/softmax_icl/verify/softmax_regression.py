"""Checks of the chapter *Softmax regression: gradient, Hessian, convexity*.

Symbolic checks differentiate the definitions (``α``, ``f``, ``L``, ``L_res``, ``L_reg``) entry by entry
on fully symbolic ``A`` (3×2), ``x``, ``b``, ``w`` and prove that the difference to the closed form
is exactly zero: after differentiation ``x`` survives only inside ``exp(z_k)``, each ``exp(m z_k)``
is replaced by ``E_k^m`` with independent positive symbols ``E_k`` (a stronger statement), and the
numerator of the difference expands to 0. The gradient and the Jacobian are also derived for
symbolic ``n`` and ``d`` (indexed sums with ``KroneckerDelta``).

Numeric checks compare the library at n = 200, d = 20 (three seeds) with fourth-order central
finite differences (rtol 1e-6) and with JAX autodiff of the definitions in float64 (rtol 1e-10).
Every check takes the implementation under test as a parameter so that a test can show a wrong
closed form is caught.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np
import sympy as sp

from .. import softmax_regression as sr
from ..checks import assert_close, numerical_gradient, numerical_jacobian
from .legacy_ledger import Claim, Evidence

SEEDS: tuple[int, ...] = (0, 1, 2)
N, D = 200, 20
RTOL_AUTODIFF = 1e-10
RTOL_FD = 1e-6


# ---- symbolic machinery ------------------------------------------------------------------------

def symbolic_matrix(name: str, rows: int, cols: int, **assumptions: bool) -> sp.Matrix:
    """A matrix of independent real symbols ``name_{i,j}`` (a column vector when ``cols = 1``)."""
    if cols == 1:
        return sp.Matrix(rows, 1, lambda i, j: sp.Symbol(f"{name}_{i}", real=True, **assumptions))
    return sp.Matrix(rows, cols, lambda i, j: sp.Symbol(f"{name}_{i}{j}", real=True, **assumptions))


class SymbolicProblem:
    """Fully symbolic ``A`` (n×d), ``x``, ``b``, ``w`` and the definitions built from them."""

    def __init__(self, n: int = 3, d: int = 2) -> None:
        self.n, self.d = n, d
        self.A = symbolic_matrix("a", n, d)
        self.x = symbolic_matrix("x", d, 1)
        self.b = symbolic_matrix("b", n, 1)
        self.w = symbolic_matrix("w", n, 1)
        self.z = self.A * self.x
        self.u = self.z.applyfunc(sp.exp)                  # exp(Ax)
        self.alpha = sum(self.u)                           # ⟨exp(Ax), 1⟩
        self.f = self.u / self.alpha                       # softmax
        self.c = self.f - self.b
        self.L = (self.c.T * self.c)[0] / 2
        self.L_res = sum((self.u - self.alpha * self.b).applyfunc(lambda e: e**2)) / 2
        wAx = sp.diag(*self.w) * self.A * self.x
        self.L_reg = self.L + (wAx.T * wAx)[0] / 2
        self.E = sp.Matrix(n, 1, lambda k, _: sp.Symbol(f"E_{k}", positive=True))
        self.S = sp.Symbol("S", positive=True)
        # exp(m z_k) as SymPy writes it (products of exponentials combine), for a fast xreplace
        self._powers = {sp.exp(sp.expand(m * self.z[k])): self.E[k] ** m
                        for k in range(n) for m in (-4, -3, -2, -1, 1, 2, 3, 4)}

    def grad(self, expr: sp.Expr) -> sp.Matrix:
        return sp.Matrix(self.d, 1, lambda i, _: sp.diff(expr, self.x[i]))

    def hessian(self, expr: sp.Expr) -> sp.Matrix:
        g = self.grad(expr)
        return sp.Matrix(self.d, self.d, lambda i, j: sp.diff(g[i], self.x[j]))

    def jacobian(self, vector: sp.Matrix) -> sp.Matrix:
        return sp.Matrix(len(vector), self.d, lambda k, i: sp.diff(vector[k], self.x[i]))

    def abstract(self, expr: sp.Expr) -> sp.Expr:
        """Replace every ``exp(m z_k)`` by ``E_k^m`` (``m`` a rational number)."""
        expr = expr.xreplace(self._powers)
        if not expr.has(sp.exp):
            return expr

        def to_power(arg: sp.Expr) -> sp.Expr:
            for k in range(self.n):
                ratio = sp.cancel(arg / self.z[k])
                if ratio.is_Rational:
                    return self.E[k] ** ratio
            raise ValueError(f"unexpected exponential exp({arg})")
        return expr.replace(lambda e: e.func == sp.exp, lambda e: to_power(e.args[0]))

    def is_zero(self, difference: sp.Matrix | sp.Expr) -> bool:
        """Whether every entry is identically zero as a rational function of A, b, w, x and E."""
        entries = difference if isinstance(difference, sp.MatrixBase) else [difference]
        # With S = E_0 + … + E_{n−1} as a symbol (E_{n−1} = S − Σ_{k<n−1} E_k), every denominator
        # is a power of S: the difference is a Laurent polynomial, zero iff its expansion is 0.
        last = {self.E[self.n - 1]: self.S - sum(self.E[: self.n - 1])}
        return all(sp.expand(self.abstract(e).xreplace(last)) == 0 for e in entries)

    # closed forms of the lemmas, in SymPy
    def J(self) -> sp.Matrix:
        return sp.diag(*self.f) - self.f * self.f.T

    def K(self) -> sp.Matrix:
        f, c = self.f, self.c
        fc = f.multiply_elementwise(c)
        s = (f.T * c)[0]
        return sp.diag(*fc) - fc * f.T - f * fc.T + 2 * s * f * f.T - s * sp.diag(*f)


# ---- Lemma 1: ∇α ---------------------------------------------------------------------------------

def check_alpha_gradient_symbolic(n: int = 3, d: int = 2) -> Evidence:
    P = SymbolicProblem(n, d)
    assert P.is_zero(P.grad(P.alpha) - P.A.T * P.u), "∇α != Aᵀ exp(Ax)"
    return Evidence("symbolic", f"n={n}, d={d}, from the definition", 0.0)


# ---- Lemma 2: ∂f/∂x = (diag f − f fᵀ) A --------------------------------------------------------------

def check_jacobian_symbolic(n: int = 3, d: int = 2) -> Evidence:
    P = SymbolicProblem(n, d)
    assert P.is_zero(P.jacobian(P.f) - P.J() * P.A), "∂f/∂x != (diag f − f fᵀ)A"
    return Evidence("symbolic", f"n={n}, d={d}, from the definition", 0.0)


# ---- symbolic n: indexed sums --------------------------------------------------------------------

_n, _d = sp.symbols("n d", integer=True, positive=True)
_i, _k, _m, _l = sp.symbols("i k m l", integer=True, nonnegative=True)
_KAPPA = sp.Symbol("kappa", integer=True, nonnegative=True)
_IA, _IX, _IB, _IU = (sp.IndexedBase(s) for s in ("A", "x", "b", "u"))
_S = sp.Symbol("S", positive=True)   # stands for α = Σ_m u_m


def _indexed_definitions() -> tuple[Callable[[sp.Expr], sp.Expr], sp.Expr]:
    """``f_r = exp(Σ_l A_{r,l} x_l) / Σ_m exp(Σ_l A_{m,l} x_l)`` with symbolic ``n``, ``d``."""
    z = lambda r: sp.Sum(_IA[r, _l] * _IX[_l], (_l, 0, _d - 1))  # noqa: E731
    alpha = sp.Sum(sp.exp(z(_m)), (_m, 0, _n - 1))
    return (lambda r: sp.exp(z(r)) / alpha), alpha


def _abstract_indexed(expr: sp.Expr) -> sp.Expr:
    """``Σ_l δ_{i,l} g(l) → g(i)`` (valid: 0 ≤ i ≤ d−1), ``exp(z_r) → u_r``, ``Σ_m u_m → S``."""
    expr = expr.replace(lambda t: isinstance(t, sp.Sum) and t.function.has(sp.KroneckerDelta),
                        lambda t: t.function.subs(sp.KroneckerDelta(_i, t.limits[0][0]), 1).subs(t.limits[0][0], _i))

    def row_of(t: sp.Expr) -> sp.Expr:
        term = t.args[0].function                     # A[r, l] * x[l]
        (a,) = [f for f in sp.Mul.make_args(term) if isinstance(f, sp.Indexed) and f.base == _IA]
        return _IU[a.indices[0]]
    expr = expr.replace(lambda t: t.func == sp.exp and isinstance(t.args[0], sp.Sum), row_of)
    return expr.replace(lambda t: isinstance(t, sp.Sum) and t.function == _IU[t.limits[0][0]], lambda t: _S)


def linear_sum_normal_form(expr: sp.Expr) -> sp.Expr:
    """Distribute every sum over ``+``, pull out the factors free of its index and give all indices
    one name: two sums that are equal by linearity become the same expression."""
    if isinstance(expr, sp.Sum):
        ((idx, lo, hi),) = expr.limits
        out = sp.Integer(0)
        for term in sp.Add.make_args(sp.expand(linear_sum_normal_form(expr.function))):
            dep = [f for f in sp.Mul.make_args(term) if f.has(idx)]
            free = [f for f in sp.Mul.make_args(term) if not f.has(idx)]
            inner = sp.Mul(*dep).xreplace({idx: _KAPPA})
            out += sp.Mul(*free) * (sp.Sum(inner, (_KAPPA, lo, hi)) if dep else hi - lo + 1)
        return out
    if expr.args:
        return sp.expand(expr.func(*[linear_sum_normal_form(a) for a in expr.args]))
    return expr


def check_gradient_symbolic_n() -> Evidence:
    """``∂L/∂x_i = Σ_k A_{k,i}(f_k c_k − ⟨f,c⟩ f_k)`` for symbolic ``n`` and ``d``."""
    f, _ = _indexed_definitions()
    L = sp.Sum((f(_k) - _IB[_k]) ** 2, (_k, 0, _n - 1)) / 2
    derived = _abstract_indexed(sp.diff(L, _IX[_i]))
    fa = lambda r: _IU[r] / _S  # noqa: E731
    c = lambda r: fa(r) - _IB[r]  # noqa: E731
    closed = sp.Sum(_IA[_k, _i] * (fa(_k) * c(_k) - sp.Sum(fa(_m) * c(_m), (_m, 0, _n - 1)) * fa(_k)), (_k, 0, _n - 1))
    assert sp.expand(linear_sum_normal_form(derived - closed)) == 0, "∇L != Aᵀ(f∘c − ⟨f,c⟩f) for symbolic n"
    return Evidence("symbolic", "symbolic n, d (indexed sums, KroneckerDelta)", 0.0)


def check_jacobian_symbolic_n() -> Evidence:
    """``∂f_k/∂x_i = f_k A_{k,i} − f_k Σ_m f_m A_{m,i}`` for symbolic ``n`` and ``d``."""
    f, _ = _indexed_definitions()
    derived = _abstract_indexed(sp.diff(f(_k), _IX[_i]))
    fa = lambda r: _IU[r] / _S  # noqa: E731
    closed = fa(_k) * _IA[_k, _i] - fa(_k) * sp.Sum(fa(_m) * _IA[_m, _i], (_m, 0, _n - 1))
    assert sp.expand(linear_sum_normal_form(derived - closed)) == 0, "∂f/∂x != JA for symbolic n"
    return Evidence("symbolic", "symbolic n, d (indexed sums, KroneckerDelta)", 0.0)


# ---- Lemma 3: ∇L ---------------------------------------------------------------------------------

def check_gradient_symbolic(n: int = 3, d: int = 2) -> Evidence:
    P = SymbolicProblem(n, d)
    f, c = P.f, P.c
    closed = P.A.T * (f.multiply_elementwise(c) - (f.T * c)[0] * f)
    assert P.is_zero(P.grad(P.L) - closed), "∇L != Aᵀ(f∘c − ⟨f,c⟩f)"
    assert P.is_zero(closed - P.A.T * P.J() * c), "Aᵀ(f∘c − ⟨f,c⟩f) != Aᵀ J c"
    return Evidence("symbolic", f"n={n}, d={d}, from the definition", 0.0)


# ---- Lemma 4: second derivative of f ---------------------------------------------------------------

def second_derivative_closed_form(P: SymbolicProblem, i: int, j: int) -> sp.Matrix:
    f, ai, aj = P.f, P.A[:, i], P.A[:, j]
    had = lambda p, q: p.multiply_elementwise(q)  # noqa: E731
    dot = lambda p, q: (p.T * q)[0]  # noqa: E731
    return (had(had(ai, aj), f) - dot(f, ai) * had(f, aj) - dot(f, aj) * had(f, ai)
            - dot(f, had(ai, aj)) * f + 2 * dot(f, ai) * dot(f, aj) * f)


def check_second_derivative_symbolic(n: int = 3, d: int = 2) -> Evidence:
    P = SymbolicProblem(n, d)
    for i in range(d):
        for j in range(i, d):
            derived = P.f.applyfunc(lambda e: sp.diff(e, P.x[i], P.x[j]))  # noqa: B023
            assert P.is_zero(derived - second_derivative_closed_form(P, i, j)), f"∂²f/∂x_{i}∂x_{j} is wrong"
    return Evidence("symbolic", f"n={n}, d={d}, every (i, j)", 0.0)


# ---- Lemma 5: ∇²L = Aᵀ(J² + K)A, and the diagonal-plus-rank-2 form -----------------------------------

def check_hessian_symbolic(n: int = 3, d: int = 2) -> Evidence:
    P = SymbolicProblem(n, d)
    J = P.J()
    assert P.is_zero(P.hessian(P.L) - P.A.T * (J * J + P.K()) * P.A), "∇²L != Aᵀ(J² + K)A"
    return Evidence("symbolic", f"n={n}, d={d}, from the definition", 0.0)


def check_hessian_weights_symbolic(n: int = 4, weights: Callable | None = None) -> Evidence:
    """The library's diagonal-plus-rank-2 representation, run on SymPy object arrays, equals ``J² + K``."""
    weights = weights or sr._normalized_weights
    f = symbolic_matrix("f", n, 1)
    c = symbolic_matrix("c", n, 1)
    J = sp.diag(*f) - f * f.T
    fc = f.multiply_elementwise(c)
    s = (f.T * c)[0]
    K = sp.diag(*fc) - fc * f.T - f * fc.T + 2 * s * f * f.T - s * sp.diag(*f)
    W = sp.Matrix(weights(np.array(list(f), dtype=object), np.array(list(c), dtype=object)).dense())
    assert all(sp.expand(e) == 0 for e in W - (J * J + K)), "weight representation != J² + K"
    return Evidence("symbolic", f"n={n}, f and c symbolic (library code on SymPy arrays)", 0.0)


# ---- Lemma 6: the rescaled loss ---------------------------------------------------------------------

def check_rescaled_symbolic(n: int = 3, d: int = 2) -> Evidence:
    P = SymbolicProblem(n, d)
    u, b = P.u, P.b
    cr = u - P.alpha * b
    M = sp.diag(*u) - b * u.T
    assert P.is_zero(P.L_res - P.alpha**2 * P.L), "L_res != α² L"
    assert P.is_zero(P.grad(P.L_res) - P.A.T * M.T * cr), "∇L_res != Aᵀ(diag u − u bᵀ)c"
    bc = (b.T * cr)[0]
    W = M.T * M + sp.diag(*u.multiply_elementwise(cr - bc * sp.ones(n, 1)))
    assert P.is_zero(P.hessian(P.L_res) - P.A.T * W * P.A), "∇²L_res != Aᵀ(MᵀM + diag(u∘(c − ⟨b,c⟩1)))A"
    return Evidence("symbolic", f"n={n}, d={d}, from the definition", 0.0)


def check_rescaled_weights_symbolic(n: int = 4, weights: Callable | None = None) -> Evidence:
    """The library's rescaled weights, run on SymPy arrays with ``u = α f``, equal ``α⁻²(MᵀM + diag(u∘(c − ⟨b,c⟩1)))``."""
    weights = weights or sr._rescaled_weights_unscaled
    f, b = symbolic_matrix("f", n, 1, positive=True), symbolic_matrix("b", n, 1)
    a = sp.Symbol("alpha", positive=True)
    u = a * f
    cr = u - a * (sum(f)) * b            # α = ⟨u, 1⟩ = a Σ f, with Σ f = 1 substituted below
    M = sp.diag(*u) - b * u.T
    W = M.T * M + sp.diag(*u.multiply_elementwise(cr - (b.T * cr)[0] * sp.ones(n, 1)))
    lib = sp.Matrix(weights(np.array(list(f), dtype=object), np.array(list(b), dtype=object)).dense())
    last = {f[n - 1]: 1 - sum(f[:n - 1])}
    assert all(sp.expand((e).xreplace(last)) == 0 for e in W - a**2 * lib), "rescaled weights are wrong"
    return Evidence("symbolic", f"n={n}, f and b symbolic, Σf = 1 (library code on SymPy arrays)", 0.0)


# ---- Lemma 7 (part): spectrum of J, quadratic form of K ---------------------------------------------

def check_quadratic_forms_symbolic(n: int = 4) -> Evidence:
    """With ``Σ f = 1``: ``vᵀJv = Σ f_i (v_i − ⟨f,v⟩)²`` and ``vᵀKv = Σ f_i (c_i − ⟨f,c⟩)(v_i − ⟨f,v⟩)²``."""
    f, c, v = (symbolic_matrix(s, n, 1) for s in "fcv")
    J = sp.diag(*f) - f * f.T
    fc = f.multiply_elementwise(c)
    s = (f.T * c)[0]
    K = sp.diag(*fc) - fc * f.T - f * fc.T + 2 * s * f * f.T - s * sp.diag(*f)
    mv = (f.T * v)[0]
    var = sum(f[i] * (v[i] - mv) ** 2 for i in range(n))
    cov = sum(f[i] * (c[i] - s) * (v[i] - mv) ** 2 for i in range(n))
    last = {f[n - 1]: 1 - sum(f[:n - 1])}
    assert sp.expand(((v.T * J * v)[0] - var).xreplace(last)) == 0, "vᵀJv != Var_f(v)"
    assert sp.expand(((v.T * K * v)[0] - cov).xreplace(last)) == 0, "vᵀKv != Cov_f(c, (v − E_f v)²)"
    return Evidence("symbolic", f"n={n}, f, c, v symbolic, Σf = 1", 0.0)


# ---- Lemma 8: the regularized loss ------------------------------------------------------------------

def check_regularized_symbolic(n: int = 3, d: int = 2) -> Evidence:
    P = SymbolicProblem(n, d)
    c, J = P.c, P.J()
    W2 = sp.diag(*P.w.multiply_elementwise(P.w))
    assert P.is_zero(P.grad(P.L_reg) - P.A.T * (J * c + W2 * P.A * P.x)), "∇L_reg is wrong"
    assert P.is_zero(P.hessian(P.L_reg) - P.A.T * (J * J + P.K() + W2) * P.A), "∇²L_reg is wrong"
    return Evidence("symbolic", f"n={n}, d={d}, from the definition", 0.0)


# ---- numeric machinery -------------------------------------------------------------------------------

def random_problem(n: int = N, d: int = D, seed: int = 0, scale: float = 2.0) -> tuple[np.ndarray, ...]:
    """``A`` Gaussian (n×d), ``x`` with ``‖x‖ ≈ scale`` (so ``Ax`` has entries of size ~scale),
    ``b`` a Dirichlet(1) probability vector, ``w`` uniform in [0.5, 1.5]."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, d))
    x = rng.standard_normal(d) * scale / np.sqrt(d)
    b = rng.dirichlet(np.ones(n))
    w = rng.uniform(0.5, 1.5, n)
    return A, x, b, w


def _jax():
    import jax
    import jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)
    return jax, jnp


@functools.cache
def autodiff(loss: str, order: str) -> Callable:
    """``jax.jit`` of ``jax.grad`` / ``jax.hessian`` / ``jax.jacfwd`` (order) of a definition (argument 1)."""
    jax, _ = _jax()
    transform = {"grad": jax.grad, "hessian": jax.hessian, "jacobian": jax.jacfwd}[order]
    return jax.jit(transform(jax_definitions()[loss], argnums=1))


def jax_definitions() -> dict[str, Callable]:
    """The definitions, written directly in JAX (no closed form): autodiff differentiates them."""
    _, jnp = _jax()

    def f(A, x):
        u = jnp.exp(A @ x)
        return u / jnp.sum(u)

    return {
        "alpha": lambda A, x: jnp.sum(jnp.exp(A @ x)),
        "f": f,
        "L": lambda A, x, b: 0.5 * jnp.sum((f(A, x) - b) ** 2),
        "L_res": lambda A, x, b: 0.5 * jnp.sum((jnp.exp(A @ x) - jnp.sum(jnp.exp(A @ x)) * b) ** 2),
        "L_reg": lambda A, x, b, w: 0.5 * jnp.sum((f(A, x) - b) ** 2) + 0.5 * jnp.sum((w * (A @ x)) ** 2),
    }


def _worst(results: Sequence) -> float:
    return max(r.worst_relative_error for r in results)


def _compare(name: str, closed: Callable, fd: Callable, autodiff: Callable, seeds: Sequence[int],
             n: int, d: int) -> tuple[Evidence, Evidence]:
    """Closed form vs finite differences and vs autodiff, for each seed."""
    fd_res, ad_res = [], []
    for seed in seeds:
        A, x, b, w = random_problem(n, d, seed)
        value = closed(A, x, b, w)
        fd_res.append(assert_close(value, fd(A, x, b, w), rtol=RTOL_FD, name=f"{name} vs finite differences (seed {seed})"))
        ad_res.append(assert_close(value, autodiff(A, x, b, w), rtol=RTOL_AUTODIFF, name=f"{name} vs JAX (seed {seed})"))
    where = f"n={n}, d={d}, seeds {tuple(seeds)}"
    return (Evidence("numeric", f"{name} vs 4th-order central differences, {where}", _worst(fd_res)),
            Evidence("autodiff", f"{name} vs JAX float64, {where}", _worst(ad_res)))


def numeric_alpha_gradient(seeds: Sequence[int] = SEEDS, n: int = N, d: int = D,
                           alpha_gradient: Callable = sr.alpha_gradient) -> tuple[Evidence, Evidence]:
    return _compare("∇α", lambda A, x, b, w: alpha_gradient(A, x),
                    lambda A, x, b, w: numerical_gradient(lambda y: sr.alpha(A, y), x),
                    lambda A, x, b, w: np.asarray(autodiff("alpha", "grad")(A, x)), seeds, n, d)


def numeric_jacobian(seeds: Sequence[int] = SEEDS, n: int = N, d: int = D,
                     jacobian: Callable = sr.softmax_jacobian) -> tuple[Evidence, Evidence]:
    return _compare("∂f/∂x", lambda A, x, b, w: jacobian(A, x),
                    lambda A, x, b, w: numerical_jacobian(lambda y: sr.softmax_prediction(A, y), x),
                    lambda A, x, b, w: np.asarray(autodiff("f", "jacobian")(A, x)), seeds, n, d)


def numeric_gradient(seeds: Sequence[int] = SEEDS, n: int = N, d: int = D,
                     gradient: Callable = sr.normalized_gradient) -> tuple[Evidence, Evidence]:
    return _compare("∇L", lambda A, x, b, w: gradient(A, x, b),
                    lambda A, x, b, w: numerical_gradient(lambda y: sr.normalized_loss(A, y, b), x),
                    lambda A, x, b, w: np.asarray(autodiff("L", "grad")(A, x, b)), seeds, n, d)


def numeric_second_derivative(seeds: Sequence[int] = SEEDS, n: int = N, d: int = D,
                              second: Callable = sr.softmax_prediction_hessian) -> tuple[Evidence, Evidence]:
    """The (n, d, d) tensor ``∂²f/∂x_i∂x_j`` against differences of the Jacobian and ``jax.hessian(f)``."""
    return _compare("∂²f/∂x∂x", lambda A, x, b, w: second(A, x),
                    lambda A, x, b, w: numerical_jacobian(lambda y: sr.softmax_jacobian(A, y), x),
                    lambda A, x, b, w: np.asarray(autodiff("f", "hessian")(A, x)), seeds, n, d)


def numeric_second_derivative_bilinear(seeds: Sequence[int] = SEEDS, n: int = N, d: int = D,
                                       bilinear: Callable = sr.softmax_prediction_second_derivative) -> Evidence:
    """The O(nd) bilinear form ``Σ u_i v_j ∂²f/∂x_i∂x_j`` against the contracted JAX tensor."""
    res = []
    for seed in seeds:
        A, x, _, _ = random_problem(n, d, seed)
        rng = np.random.default_rng(100 + seed)
        u, v = rng.standard_normal((2, d))
        T = np.asarray(autodiff("f", "hessian")(A, x))
        res.append(assert_close(bilinear(A, x, u, v), np.einsum("kij,i,j->k", T, u, v), rtol=RTOL_AUTODIFF,
                                name=f"bilinear second derivative (seed {seed})"))
    return Evidence("autodiff", f"Σ u_i v_j ∂²f/∂x_i∂x_j vs JAX, n={n}, d={d}, seeds {tuple(seeds)}", _worst(res))


def numeric_hessian(seeds: Sequence[int] = SEEDS, n: int = N, d: int = D,
                    hessian: Callable = sr.normalized_hessian) -> tuple[Evidence, Evidence]:
    return _compare("∇²L", lambda A, x, b, w: hessian(A, x, b),
                    lambda A, x, b, w: numerical_jacobian(lambda y: sr.normalized_gradient(A, y, b), x),
                    lambda A, x, b, w: np.asarray(autodiff("L", "hessian")(A, x, b)), seeds, n, d)


def numeric_hvp(seeds: Sequence[int] = SEEDS, n: int = N, d: int = D, loss: str = "L",
                hvp: Callable | None = None) -> Evidence:
    """Hessian-vector products against ``jax.jvp`` of ``jax.grad`` (forward over reverse)."""
    jax, _ = _jax()
    J = jax_definitions()
    hvp = hvp or {"L": sr.normalized_hvp, "L_res": sr.rescaled_hvp, "L_reg": sr.regularized_hvp}[loss]
    res = []
    for seed in seeds:
        A, x, b, w = random_problem(n, d, seed)
        v = np.random.default_rng(200 + seed).standard_normal(d)
        extra = (w,) if loss == "L_reg" else ()
        grad = jax.grad(lambda y: J[loss](A, y, b, *extra))  # noqa: B023
        expected = np.asarray(jax.jvp(grad, (x,), (v,))[1])
        res.append(assert_close(hvp(A, x, b, *extra, v), expected, rtol=RTOL_AUTODIFF, name=f"{loss} hvp (seed {seed})"))
    return Evidence("autodiff", f"{loss} Hessian-vector product vs JAX jvp∘grad, n={n}, d={d}, seeds {tuple(seeds)}", _worst(res))


def numeric_rescaled(seeds: Sequence[int] = SEEDS, n: int = N, d: int = D,
                     gradient: Callable = sr.rescaled_gradient,
                     hessian: Callable = sr.rescaled_hessian) -> tuple[Evidence, ...]:
    g = _compare("∇L_res", lambda A, x, b, w: gradient(A, x, b),
                 lambda A, x, b, w: numerical_gradient(lambda y: sr.rescaled_loss(A, y, b), x),
                 lambda A, x, b, w: np.asarray(autodiff("L_res", "grad")(A, x, b)), seeds, n, d)
    h = _compare("∇²L_res", lambda A, x, b, w: hessian(A, x, b),
                 lambda A, x, b, w: numerical_jacobian(lambda y: sr.rescaled_gradient(A, y, b), x),
                 lambda A, x, b, w: np.asarray(autodiff("L_res", "hessian")(A, x, b)), seeds, n, d)
    return g + h


def numeric_rescaled_is_alpha_squared_times_normalized(seeds: Sequence[int] = SEEDS, n: int = N, d: int = D,
                                                       rescaled_loss: Callable = sr.rescaled_loss) -> Evidence:
    """``L_res = α² L`` against the definition of ``L_res`` evaluated directly (moderate ``Ax``)."""
    res = []
    for seed in seeds:
        A, x, b, _ = random_problem(n, d, seed)
        u = np.exp(A @ x)
        direct = 0.5 * float(np.sum((u - u.sum() * b) ** 2))
        res.append(assert_close(rescaled_loss(A, x, b), direct, rtol=1e-12, name=f"L_res (seed {seed})"))
        res.append(assert_close(sr.alpha(A, x) ** 2 * sr.normalized_loss(A, x, b), direct, rtol=1e-12,
                                name=f"α² L (seed {seed})"))
    return Evidence("numeric", f"L_res = α² L vs the definition, n={n}, d={d}, seeds {tuple(seeds)}", _worst(res))


def numeric_regularized(seeds: Sequence[int] = SEEDS, n: int = N, d: int = D,
                        gradient: Callable = sr.regularized_gradient,
                        hessian: Callable = sr.regularized_hessian) -> tuple[Evidence, ...]:
    g = _compare("∇L_reg", lambda A, x, b, w: gradient(A, x, b, w),
                 lambda A, x, b, w: numerical_gradient(lambda y: sr.regularized_loss(A, y, b, w), x),
                 lambda A, x, b, w: np.asarray(autodiff("L_reg", "grad")(A, x, b, w)), seeds, n, d)
    h = _compare("∇²L_reg", lambda A, x, b, w: hessian(A, x, b, w),
                 lambda A, x, b, w: numerical_jacobian(lambda y: sr.regularized_gradient(A, y, b, w), x),
                 lambda A, x, b, w: np.asarray(autodiff("L_reg", "hessian")(A, x, b, w)), seeds, n, d)
    return g + h


# ---- bounds: spectrum of J, norm of K, positive definiteness -----------------------------------------

def random_probability_and_residual(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A softmax ``f`` of logits with a random spread (from flat to nearly one-hot) and ``c = f − b``
    for a target ``b`` that is either a probability vector or arbitrary."""
    f = sr.softmax_prediction(np.eye(n), rng.standard_normal(n) * rng.uniform(0.0, 8.0))
    b = rng.dirichlet(np.ones(n)) if rng.random() < 0.5 else rng.standard_normal(n) * rng.uniform(0.1, 3.0)
    return f, f - b


def bound_jacobian_spectrum(trials: int = 400, seed: int = 0, weights: Callable = sr.softmax_jacobian_weights) -> Evidence:
    """``0 ⪯ J ⪯ ½ I``: worst ``λ_max(J)/½`` over random ``f`` (and ``λ_min(J) ≥ −1e-15``)."""
    rng = np.random.default_rng(seed)
    worst = 0.0
    for _ in range(trials):
        n = int(rng.integers(2, 30))
        f, _ = random_probability_and_residual(rng, n)
        eig = np.linalg.eigvalsh(weights(f).dense())
        assert eig[0] >= -1e-15, f"J has a negative eigenvalue {eig[0]}"
        worst = max(worst, eig[-1] / 0.5)
    assert worst <= 1.0 + 1e-12, f"‖J‖₂ exceeds ½ (ratio {worst})"
    return Evidence("bound", f"λ_max(J) / ½ over {trials} random f, 2 ≤ n < 30", worst)


def bound_curvature(trials: int = 400, seed: int = 0, weights: Callable = sr.softmax_curvature_weights) -> Evidence:
    """``‖K‖₂ ≤ ½(max c − min c)``: the worst ratio over random ``(f, c)``."""
    rng = np.random.default_rng(seed)
    worst = 0.0
    for _ in range(trials):
        n = int(rng.integers(2, 30))
        f, c = random_probability_and_residual(rng, n)
        norm = float(np.max(np.abs(np.linalg.eigvalsh(weights(f, c).dense()))))
        worst = max(worst, norm / (0.5 * float(np.max(c) - np.min(c))))
    assert worst <= 1.0 + 1e-12, f"‖K‖₂ exceeds ½ osc(c) (ratio {worst})"
    return Evidence("bound", f"‖K‖₂ / (½ osc c) over {trials} random (f, c), 2 ≤ n < 30", worst)


def bound_positive_definite(trials: int = 200, seed: int = 0, n: int = 40, d: int = 8,
                            hessian: Callable = sr.regularized_hessian) -> Evidence:
    """With ``min w² = (1 + t)·½ osc(c)``: ``λ_min(∇²L_reg) ≥ σ_min(A)² (min w² − ½ osc c) > 0``.
    The worst ratio ``σ_min(A)²(min w² − ½ osc c) / λ_min`` must be ≤ 1."""
    rng = np.random.default_rng(seed)
    worst = 0.0
    for _ in range(trials):
        A = rng.standard_normal((n, d))
        x = rng.standard_normal(d) * rng.uniform(0.5, 4.0) / np.sqrt(d)
        b = rng.dirichlet(np.ones(n)) if rng.random() < 0.5 else rng.standard_normal(n)
        threshold = sr.regularization_threshold(A, x, b)
        w2min = threshold * (1.0 + rng.uniform(0.01, 1.0))
        w = np.sqrt(w2min + rng.uniform(0.0, 1.0, n) * rng.integers(0, 2))
        w[rng.integers(n)] = np.sqrt(w2min)
        lam = float(np.linalg.eigvalsh(hessian(A, x, b, w))[0])
        sigma2 = float(np.linalg.svd(A, compute_uv=False)[-1]) ** 2
        guaranteed = sigma2 * (w2min - threshold)
        assert lam > 0, f"∇²L_reg is not positive definite although min w² > ½ osc(c): λ_min = {lam}"
        worst = max(worst, guaranteed / lam)
    assert worst <= 1.0 + 1e-10, f"λ_min below the guaranteed σ_min(A)²(min w² − ½ osc c) (ratio {worst})"
    return Evidence("bound", f"σ_min(A)²(min w² − ½ osc c) / λ_min(∇²L_reg), {trials} random points, n={n}, d={d}", worst)


# ---- stability -----------------------------------------------------------------------------------

def check_stability(n: int = N, d: int = D, seed: int = 0, top: float = 1000.0) -> Evidence:
    """With a column of ones in ``A``, shifting ``x_0`` by ``t`` shifts ``Ax`` by ``t`` and leaves ``f``,
    ``L``, ``∇L``, ``∇²L`` unchanged: compare ``‖Ax‖_∞ ≈ 3`` with ``max Ax = 1000``."""
    A, x, b, w = random_problem(n, d, seed)
    A[:, 0] = 1.0
    x[0] = 0.0
    shifted = x.copy()
    shifted[0] = top - float(np.max(A @ x))
    v = np.random.default_rng(seed).standard_normal(d)
    res = []
    for fn in (sr.normalized_loss, sr.normalized_gradient, sr.normalized_hessian,
               lambda A, x, b: sr.normalized_hvp(A, x, b, v),
               lambda A, x, b: sr.softmax_jacobian(A, x)):
        far = np.asarray(fn(A, shifted, b))
        assert np.all(np.isfinite(far)), "non-finite value at ‖Ax‖_∞ = 1000"
        res.append(assert_close(far, fn(A, x, b), rtol=1e-9, name="shift invariance at ‖Ax‖_∞ = 1000"))
    return Evidence("numeric", f"loss, gradient, Hessian, hvp, Jacobian at max Ax = {top:.0f} vs max Ax ≈ 3", _worst(res))


CHAPTER = "book/softmax_regression"
SOURCE = "ours (objects: LSXYZ23, Definition 1.3)"


def _pair(fn: Callable, k: int) -> Callable[[], Evidence]:
    def check() -> Evidence:
        return fn()[k]
    check.__name__ = f"{fn.__name__}_{k}"
    return check


def numeric_hvp_normalized() -> Evidence:
    return numeric_hvp(loss="L")


def numeric_hvp_rescaled() -> Evidence:
    return numeric_hvp(loss="L_res")


def numeric_hvp_regularized() -> Evidence:
    return numeric_hvp(loss="L_reg")


CLAIMS = [
    Claim("lem-softreg-alpha-gradient", CHAPTER, "Gradient of α", SOURCE,
          (check_alpha_gradient_symbolic, _pair(numeric_alpha_gradient, 0), _pair(numeric_alpha_gradient, 1))),
    Claim("lem-softreg-jacobian", CHAPTER, "Jacobian of the softmax prediction", SOURCE,
          (check_jacobian_symbolic, check_jacobian_symbolic_n, _pair(numeric_jacobian, 0), _pair(numeric_jacobian, 1))),
    Claim("lem-softreg-gradient", CHAPTER, "Gradient of the normalized loss", SOURCE,
          (check_gradient_symbolic, check_gradient_symbolic_n, _pair(numeric_gradient, 0), _pair(numeric_gradient, 1))),
    Claim("lem-softreg-second-derivative", CHAPTER, "Second derivative of the softmax prediction", SOURCE,
          (check_second_derivative_symbolic, _pair(numeric_second_derivative, 0), _pair(numeric_second_derivative, 1),
           numeric_second_derivative_bilinear)),
    Claim("lem-softreg-hessian", CHAPTER, "Hessian of the normalized loss", SOURCE,
          (check_hessian_symbolic, check_hessian_weights_symbolic, _pair(numeric_hessian, 0), _pair(numeric_hessian, 1),
           numeric_hvp_normalized, check_stability)),
    Claim("lem-softreg-rescaled", CHAPTER, "Gradient and Hessian of the rescaled loss", "ours (loss: GSY23, rescaled regression)",
          (check_rescaled_symbolic, check_rescaled_weights_symbolic, numeric_rescaled_is_alpha_squared_times_normalized,
           *(_pair(numeric_rescaled, k) for k in range(4)), numeric_hvp_rescaled)),
    Claim("lem-softreg-jacobian-spectrum", CHAPTER, "The softmax Jacobian is a covariance: 0 ⪯ J ⪯ ½I", "ours",
          (check_quadratic_forms_symbolic, bound_jacobian_spectrum)),
    Claim("lem-softreg-curvature-bound", CHAPTER, "‖K‖₂ ≤ ½(max c − min c) ≤ ‖c‖_∞", "ours (sharper than 6‖c‖_∞)",
          (check_quadratic_forms_symbolic, bound_curvature)),
    Claim("lem-softreg-regularized", CHAPTER, "Regularized loss: gradient, Hessian, positive definiteness",
          "ours (regularizer: DLS23)",
          (check_regularized_symbolic, *(_pair(numeric_regularized, k) for k in range(4)),
           numeric_hvp_regularized, bound_positive_definite)),
]
