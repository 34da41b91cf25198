"""Multiple softmax regression through the tensor trick, without forming ``A₁ ⊗ A₂``.

Derived in :doc:`/book/tensor_trick`. For ``A₁, A₂ ∈ R^{n×d}``, ``X ∈ R^{d×d}``, ``B ∈ R^{n×n}``::

    Z = A₁ X A₂ᵀ,   U = exp(Z),   D(X) = diag(U 1_n),   F = D⁻¹ U  (row-wise softmax of Z)
    normalized   L(X)     = ½‖F − B‖_F²                         C  = F − B
    rescaled     L_res(X) = ½‖U − D(X) B‖_F²                    C₂ = U − D(X) B

``vec`` is row-major (NumPy's C order): ``vec(A₁XA₂ᵀ) = (A₁⊗A₂) vec(X)``, and row block ``j`` of
``𝖠 = A₁⊗A₂`` is ``(A₁)_{j,*} ⊗ A₂``. Each loss is a sum of ``n`` single softmax regressions in
dimension ``d²`` sharing ``x = vec(X)``; its gradient is ``A₁ᵀ P A₂`` and its Hessian-vector
product ``A₁ᵀ Q A₂`` with ``n×n`` matrices ``P`` and ``Q``: cost ``O(n²d + nd²)`` instead of the
``O(n²d²)`` of the explicit route. The explicit route (the ``kronecker_*`` reference functions,
one single-regression call per block) refuses to form ``𝖠`` beyond :data:`KRONECKER_MEMORY_LIMIT`.

The losses, gradients and Hessian-vector products stream over blocks of rows of ``Z``: per block
they form ``Z_blk = (A₁X)_blk A₂ᵀ`` and its softmax in a few ``block × n`` buffers and keep only the
block's rows of ``P A₂`` (or ``Q A₂``), so no ``n × n`` array besides ``B`` is ever formed: memory is
the inputs plus ``O(block·n + nd)``; ``block_rows`` overrides the automatic block size. Each softmax
row is split at its largest entry (see ``_split_exp``), which keeps every derivative accurate in
relative terms when the softmax saturates.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import numpy as np

from . import notation
from . import softmax_regression as sr
from ._validate import as_matrix, as_nonnegative_float, as_positive_int

__all__ = [
    "KRONECKER_MEMORY_LIMIT", "MAX_ITERATIONS", "BLOCK_BYTES", "MIN_BLOCK_ROWS", "THREAD_MIN_ENTRIES",
    "KroneckerTooLargeError", "Loss",
    "kronecker_bytes", "kronecker_data", "kronecker_block", "kronecker_singular_values",
    "logits", "softmax_prediction",
    "normalized_loss", "normalized_gradient", "normalized_loss_and_gradient", "normalized_hvp",
    "normalized_hessian",
    "rescaled_loss", "rescaled_gradient", "rescaled_loss_and_gradient", "rescaled_hvp", "rescaled_hessian",
    "kronecker_loss", "kronecker_gradient", "kronecker_hessian", "kronecker_hvp",
    "weight_lipschitz_constant", "first_factor_shift_constant", "second_factor_shift_constant",
    "equivalent_target", "gradient_descent", "newton_cg", "OptimizationTrace",
]

#: The explicit-Kronecker reference routines refuse to allocate more than this (1 GiB).
KRONECKER_MEMORY_LIMIT: int = 2**30

#: With ``block_rows=None`` a block of rows of ``Z`` is sized so that one ``block × n`` float64 buffer
#: takes about this many bytes (a few such buffers live at once), but never fewer than
#: ``MIN_BLOCK_ROWS`` rows.
BLOCK_BYTES: int = 2**22
MIN_BLOCK_ROWS: int = 64
#: From this many entries of ``Z`` (n²) on, the row blocks run in one thread per CPU core.
THREAD_MIN_ENTRIES: int = 2**18

Loss = Literal["normalized", "rescaled"]
_LOG_MAX = float(np.log(np.finfo(np.float64).max))


class KroneckerTooLargeError(MemoryError):
    """Raised instead of forming an explicit ``A₁⊗A₂`` above the memory limit.

    Derived in :doc:`/book/tensor_trick`.
    """


def _gib(nbytes: float) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= size:
            return f"{nbytes / size:.3g} {unit}"
    return f"{nbytes:.0f} B"


# ---- validation --------------------------------------------------------------------------------

def _factors(A1: object, A2: object) -> tuple[np.ndarray, np.ndarray]:
    A1 = as_matrix(A1, "A1")
    A2 = as_matrix(A2, "A2", rows=A1.shape[0], cols=A1.shape[1])
    return A1, A2


def _problem(A1: object, A2: object, X: object, B: object | None = None,
             x_name: str = "X") -> tuple[np.ndarray, ...]:
    A1, A2 = _factors(A1, A2)
    n, d = A1.shape
    X = as_matrix(X, x_name, rows=d, cols=d)
    if B is None:
        return A1, A2, X
    return A1, A2, X, as_matrix(B, "B", rows=n, cols=n)


def _direction(V: object, d: int) -> np.ndarray:
    return as_matrix(V, "V", rows=d, cols=d)


# ---- the tensor trick -----------------------------------------------------------------------------

def kronecker_bytes(n: int, d: int) -> int:
    """Memory of an explicit float64 ``A₁⊗A₂ ∈ R^{n²×d²}``: ``8 n² d²`` bytes.

    Derived in :doc:`/book/tensor_trick`.
    """
    n, d = as_positive_int(n, "n"), as_positive_int(d, "d")
    return 8 * n * n * d * d


def _guard(n: int, d: int, max_bytes: int, what: str = "A1⊗A2") -> None:
    need = kronecker_bytes(n, d)
    if need > max_bytes:
        raise KroneckerTooLargeError(
            f"refusing to form {what} explicitly: at n={n}, d={d} it is a {n * n}×{d * d} float64 matrix "
            f"needing {_gib(need)} ({need} bytes), above the limit of {_gib(max_bytes)} (max_bytes); "
            "use the Kronecker-free functions of softmax_icl.multiple_softmax_regression instead")


def kronecker_data(A1: np.ndarray, A2: np.ndarray, max_bytes: int = KRONECKER_MEMORY_LIMIT) -> np.ndarray:
    """The explicit ``𝖠 = A₁⊗A₂ ∈ R^{n²×d²}`` (reference only; refused above ``max_bytes``, 1 GiB by default).

    Derived in :doc:`/book/tensor_trick`.
    """
    A1, A2 = _factors(A1, A2)
    _guard(*A1.shape, max_bytes)
    return notation.kron(A1, A2)


def kronecker_block(A1: np.ndarray, A2: np.ndarray, j: int) -> np.ndarray:
    """Row block ``𝖠_j = (A₁)_{j,*} ⊗ A₂ ∈ R^{n×d²}`` of ``A₁⊗A₂`` (rows ``jn … jn+n−1``), formed alone.

    Derived in :doc:`/book/tensor_trick`.
    """
    A1, A2 = _factors(A1, A2)
    if isinstance(j, bool) or not isinstance(j, int | np.integer) or not 0 <= j < A1.shape[0]:
        raise ValueError(f"j must be a row index in [0, {A1.shape[0]}), got {j!r}")
    return notation.kron(A1[j:j + 1, :], A2)


def kronecker_singular_values(A1: np.ndarray, A2: np.ndarray) -> np.ndarray:
    """Singular values of ``A₁⊗A₂`` without forming it: all products ``σ_i(A₁) σ_k(A₂)``, descending.

    Derived in :doc:`/book/tensor_trick`.
    """
    A1 = as_matrix(A1, "A1")
    A2 = as_matrix(A2, "A2")
    s = np.outer(np.linalg.svd(A1, compute_uv=False), np.linalg.svd(A2, compute_uv=False)).reshape(-1)
    return np.sort(s)[::-1]


def logits(A1: np.ndarray, A2: np.ndarray, X: np.ndarray) -> np.ndarray:
    """``Z = A₁ X A₂ᵀ ∈ R^{n×n}``; ``vec(Z) = (A₁⊗A₂) vec(X)`` (row-major). Derived in :doc:`/book/tensor_trick`."""
    A1, A2, X = _problem(A1, A2, X)
    return (A1 @ X) @ A2.T


# ---- shared state: the row-wise shifted exponential ------------------------------------------------

def _shifted_exp(A1: np.ndarray, A2: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(E, s, m)`` with ``m`` the row maxima of ``Z``, ``E = exp(Z − m 1ᵀ)``, ``s = E 1`` (in place)."""
    E = (A1 @ X) @ A2.T
    m = E.max(axis=1)
    E -= m[:, None]
    np.exp(E, out=E)
    return E, E.sum(axis=1), m


def _softmax_rows(A1: np.ndarray, A2: np.ndarray, X: np.ndarray) -> np.ndarray:
    E, s, _ = _shifted_exp(A1, A2, X)
    E /= s[:, None]
    return E


def softmax_prediction(A1: np.ndarray, A2: np.ndarray, X: np.ndarray) -> np.ndarray:
    """``F(X) = D(X)⁻¹ exp(A₁XA₂ᵀ)``, the row-wise softmax of ``Z`` (max-shifted, no overflow).

    Derived in :doc:`/book/tensor_trick`.
    """
    return _softmax_rows(*_problem(A1, A2, X))


# ---- rows split at their largest entry ---------------------------------------------------------------
# A softmax row f is kept as (f⁰, f_ℓ, q): ℓ its largest entry, f⁰ = f with entry ℓ set to 0, and the tail
# mass q = Σ_{i≠ℓ} f_i = 1 − f_ℓ summed from the small entries, so 1 − f_ℓ is never formed by cancellation.
# Entry ℓ of a Jacobian product is evaluated from the tail, (J y)_ℓ = f_ℓ (y_ℓ q − ⟨f⁰, y⟩): the same
# algebra (exact whenever Σ f = 1), accurate in relative terms at any logit gap, where f_ℓ y_ℓ − ⟨f, y⟩ f_ℓ
# would lose everything above a gap of about 36. The same holds for c_ℓ = f_ℓ − b_ℓ = (1 − b_ℓ) − q.
# The kernels work in place on row blocks (any dtype, sympy objects included) and never see more rows
# than they are given.

def _rowdot(P: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """``rowsum(P∘Q)`` in one pass, without the temporary ``P∘Q``."""
    if P.dtype == object or Q.dtype == object:
        return np.einsum("jk,jk->j", P, Q)
    return np.vecdot(P, Q)


def _split_exp(W: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """In place, logits ``W`` → ``E⁰ = exp(W − m 1ᵀ)`` with the leading entry (``E_ℓ = 1``) set to 0;
    returns ``(ℓ, m, t = Σ_{i≠ℓ} E_i)``."""
    lead = W.argmax(axis=1)
    m = W[rows, lead]
    W -= m[:, None]
    np.exp(W, out=W)
    W[rows, lead] = 0.0
    return lead, m, W.sum(axis=1)


def _split_rows(F: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(F⁰, f_ℓ, tail sums, ℓ, rows)`` of full rows ``F`` (a copy). ``ℓ`` is the row argmax; for symbolic
    rows, where any index gives the same algebra, it is index 0."""
    rows = np.arange(F.shape[0])
    lead = np.zeros(F.shape[0], dtype=np.intp) if F.dtype == object else F.argmax(axis=1)
    F0 = np.array(F, copy=True)
    fl = F0[rows, lead].copy()
    F0[rows, lead] = 0
    return F0, fl, F0.sum(axis=1), lead, rows


def _jacobian_split(F0: np.ndarray, fl: np.ndarray, q: np.ndarray, lead: np.ndarray, rows: np.ndarray,
                    T: np.ndarray) -> np.ndarray:
    """In place ``T`` → ``Ḟ⁰``, the rows ``J_j t_j = f_j∘t_j − ⟨f_j, t_j⟩ f_j`` with entry ℓ set to 0;
    returns that entry, ``ḟ_ℓ = f_ℓ (t_ℓ q − ⟨f⁰, t⟩)``."""
    tl = T[rows, lead]
    tail = _rowdot(F0, T)
    T -= (fl * tl + tail)[:, None]
    T *= F0
    return fl * (tl * q - tail)




# ---- the normalized loss: P = F∘C − diag(rowsum(F∘C)) F ---------------------------------------------

def _normalized_residual(F0: np.ndarray, q: np.ndarray, lead: np.ndarray, rows: np.ndarray, B: np.ndarray,
                         out: np.ndarray) -> np.ndarray:
    """In place ``out`` → ``C = F − B``; returns ``c_ℓ = (1 − b_ℓ) − q``, which is also stored."""
    np.subtract(F0, B, out=out)
    cl = (1 - B[rows, lead]) - q
    out[rows, lead] = cl
    return cl


def _normalized_P_split(F0: np.ndarray, fl: np.ndarray, q: np.ndarray, lead: np.ndarray, rows: np.ndarray,
                        C: np.ndarray, cl: np.ndarray) -> np.ndarray:
    """In place ``C`` → ``P``, row ``j`` = ``J_j c_j = f∘(c − ⟨f, c⟩)``; entry ℓ ``f_ℓ (c_ℓ q − ⟨f⁰, c⟩)``."""
    tail = _rowdot(F0, C)
    C -= (fl * cl + tail)[:, None]
    C *= F0
    C[rows, lead] = fl * (cl * q - tail)
    return C


def _normalized_Q_split(F0: np.ndarray, fl: np.ndarray, q: np.ndarray, lead: np.ndarray, rows: np.ndarray,
                        C: np.ndarray, cl: np.ndarray, T: np.ndarray) -> np.ndarray:
    """In place ``C`` → ``Q = Ḟ∘(C − μ) + F∘(Ḟ − ν)``, ``Ḟ = J T``, ``μ = rowsum(F∘C)``, ``ν = rowsum(Ḟ∘(F + C))``
    (``T`` is overwritten); entry ℓ uses ``ḟ_ℓ − ν = ḟ_ℓ (q − c_ℓ) − ⟨ḟ⁰, f⁰ + c⟩``."""
    tail = _rowdot(F0, C)
    mu, rl = fl * cl + tail, cl * q - tail             # ⟨f, c⟩ and c_ℓ − ⟨f, c⟩
    fdl = _jacobian_split(F0, fl, q, lead, rows, T)    # T → Ḟ⁰, fdl = ḟ_ℓ
    C += F0                                            # f + c (entry ℓ is not used)
    g = _rowdot(T, C)                                  # ⟨ḟ⁰, f⁰ + c⟩
    nu = fdl * (fl + cl) + g
    C -= mu[:, None]
    C *= T                                             # Ḟ∘(F + C − μ) = Ḟ∘(C − μ) + F∘Ḟ
    np.multiply(F0, nu[:, None], out=T)
    C -= T
    C[rows, lead] = fdl * rl + fl * (fdl * (q - cl) - g)
    return C




def _normalized_Q(F: np.ndarray, B: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Directional derivative of ``P`` along ``Ż = T``: ``Ḟ = J T`` row-wise,
    ``Q = G − diag(rowsum G) F − diag(rowsum(F∘C)) Ḟ`` with ``G = Ḟ∘(F + C)``, ``C = F − B``."""
    F0, fl, q, lead, rows = _split_rows(F)
    dtype = np.result_type(F, B, T)
    C = np.empty(F.shape, dtype=dtype)
    cl = _normalized_residual(F0, q, lead, rows, B, C)
    return _normalized_Q_split(F0, fl, q, lead, rows, C, cl, np.array(T, dtype=dtype, copy=True))


def _block_size(n: int, block_rows: object) -> int:
    """Rows per block: ``block_rows``, or (``None``) about ``BLOCK_BYTES`` per ``block × n`` buffer."""
    if block_rows is None:
        return max(1, min(n, max(MIN_BLOCK_ROWS, BLOCK_BYTES // (8 * n))))
    if isinstance(block_rows, bool) or not isinstance(block_rows, int | np.integer):
        raise TypeError(f"block_rows must be a positive integer (rows per block) or None, "
                        f"got {type(block_rows).__name__} {block_rows!r}")
    if block_rows < 1:
        raise ValueError(f"block_rows must be a positive integer (rows per block) or None, got {block_rows}")
    return int(min(block_rows, n))


_BLAS: list = []   # the threadpoolctl controller of the loaded BLAS, created on first use


@contextmanager
def _blas_single_threaded() -> Iterator[None]:
    """BLAS limited to one thread (process-wide, restored on exit): the parallelism is over row blocks."""
    if not _BLAS:
        from threadpoolctl import ThreadpoolController
        _BLAS.append(ThreadpoolController())
    with _BLAS[0].limit(limits=1, user_api="blas"):
        yield


def _over_blocks(n: int, d: int, b: int, n_buffers: int,
                 block: Callable[[slice, list[np.ndarray], np.ndarray], float]) -> tuple[float, np.ndarray]:
    """``(Σ values, Σ G)`` of ``value = block(rows, buffers, G)`` over the blocks of ``b`` rows, where ``block``
    adds its block's share of a ``d×d`` result into ``G``. BLAS runs single-threaded meanwhile; from
    :data:`THREAD_MIN_ENTRIES` entries of ``Z`` on, the blocks are shared out over one thread per CPU core
    (each with its own ``n_buffers`` buffers of ``b × n`` and ``G``), so the elementwise work runs in parallel too."""
    starts = list(range(0, n, b))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = min(cores, len(starts)) if n * n >= THREAD_MIN_ENTRIES else 1

    # the buffers are allocated here, not in the threads, and one b × n array each, so that the memory
    # the allocator keeps from earlier calls (in one arena, in pieces of one size) is reused
    buffers = [[np.empty((b, n)) for _ in range(n_buffers)] for _ in range(workers)]

    def run(w: int) -> tuple[list[tuple[int, float]], np.ndarray]:
        G = np.zeros((d, d))
        return [(i, block(slice(i, min(i + b, n)), buffers[w], G)) for i in starts[w::workers]], G

    with _blas_single_threaded():
        if workers == 1:
            parts = [run(0)]
        else:
            with ThreadPoolExecutor(workers) as pool:
                parts = list(pool.map(run, range(workers)))
    values = sorted(v for part, _ in parts for v in part)
    return float(sum(v for _, v in values)), sum(G for _, G in parts)


def _normalized_stream(A1: np.ndarray, A2: np.ndarray, X: np.ndarray, B: np.ndarray, V: np.ndarray | None,
                       block_rows: object, mode: str) -> tuple[float, np.ndarray | None]:
    """``(L, A₁ᵀ M A₂)`` with ``M = P`` (mode "gradient"), ``Q`` along ``V`` ("hvp") or nothing ("loss"),
    one block of rows of ``Z`` at a time: memory ``O(block·n + d²)`` per thread besides the inputs."""
    n, d = A1.shape
    b = _block_size(n, block_rows)

    def block(blk: slice, buffers: list[np.ndarray], G: np.ndarray) -> float:
        k = blk.stop - blk.start
        rows, F0, C = np.arange(k), buffers[0][:k], buffers[1][:k]
        np.matmul(A1[blk] @ X, A2.T, out=F0)
        lead, _, t = _split_exp(F0, rows)
        fl = 1.0 / (1.0 + t)
        q = t * fl
        F0 *= fl[:, None]
        cl = _normalized_residual(F0, q, lead, rows, B[blk], C)
        if mode == "hvp":
            T = buffers[2][:k]
            np.matmul(A1[blk] @ V, A2.T, out=T)
            G += A1[blk].T @ (_normalized_Q_split(F0, fl, q, lead, rows, C, cl, T) @ A2)
            return 0.0
        value = 0.5 * float(np.vdot(C, C))
        if mode == "gradient":
            G += A1[blk].T @ (_normalized_P_split(F0, fl, q, lead, rows, C, cl) @ A2)
        return value

    loss, G = _over_blocks(n, d, b, 3 if mode == "hvp" else 2, block)
    return loss, None if mode == "loss" else G


def normalized_loss(A1: np.ndarray, A2: np.ndarray, X: np.ndarray, B: np.ndarray, *,
                    block_rows: int | None = None) -> float:
    """``L(X) = ½‖D(X)⁻¹exp(A₁XA₂ᵀ) − B‖_F²``, streamed over blocks of rows. Derived in :doc:`/book/tensor_trick`."""
    A1, A2, X, B = _problem(A1, A2, X, B)
    return _normalized_stream(A1, A2, X, B, None, block_rows, "loss")[0]


def normalized_loss_and_gradient(A1: np.ndarray, A2: np.ndarray, X: np.ndarray, B: np.ndarray, *,
                                 block_rows: int | None = None) -> tuple[float, np.ndarray]:
    """``(L(X), ∇_X L = A₁ᵀ P A₂)`` with ``P = F∘C − diag(rowsum(F∘C)) F``, ``C = F − B``, in O(n²d + nd²).

    Derived in :doc:`/book/tensor_trick`.
    """
    A1, A2, X, B = _problem(A1, A2, X, B)
    return _normalized_stream(A1, A2, X, B, None, block_rows, "gradient")


def normalized_gradient(A1: np.ndarray, A2: np.ndarray, X: np.ndarray, B: np.ndarray, *,
                        block_rows: int | None = None) -> np.ndarray:
    """``∇_X L = A₁ᵀ P A₂``, ``P = F∘C − diag(rowsum(F∘C)) F``: O(n²d + nd²), no ``A₁⊗A₂``, no n×n array.

    Derived in :doc:`/book/tensor_trick`.
    """
    return normalized_loss_and_gradient(A1, A2, X, B, block_rows=block_rows)[1]


def normalized_hvp(A1: np.ndarray, A2: np.ndarray, X: np.ndarray, B: np.ndarray, V: np.ndarray, *,
                   block_rows: int | None = None) -> np.ndarray:
    """``∇²L[V] = A₁ᵀ Q A₂`` (``H vec(V) = vec(A₁ᵀQA₂)``), ``Q`` the derivative of ``P`` along ``T = A₁VA₂ᵀ``.

    Derived in :doc:`/book/tensor_trick`.
    """
    A1, A2, X, B = _problem(A1, A2, X, B)
    V = _direction(V, X.shape[0])
    return _normalized_stream(A1, A2, X, B, V, block_rows, "hvp")[1]


def _hessian_from_rows(A1: np.ndarray, A2: np.ndarray, row_operator: Callable[[np.ndarray], np.ndarray],
                       max_bytes: int) -> np.ndarray:
    """``Σ_j (a_j a_jᵀ) ⊗ (A₂ᵀ W_j A₂)`` where ``row_operator(T)`` returns the rows ``W_j t_j``."""
    n, d = A1.shape
    need = 8 * (d**4 + n * d * d)
    if need > max_bytes:
        raise KroneckerTooLargeError(f"refusing to form the dense {d * d}×{d * d} Hessian: it needs {_gib(need)}, "
                                     f"above {_gib(max_bytes)} (max_bytes); use the Hessian-vector product")
    G = np.empty((n, d, d))                     # G[j] = A₂ᵀ W_j A₂, one column s at a time
    for s in range(d):                          # loop over the d columns of A₂, not over data rows
        T = np.broadcast_to(A2[:, s], (n, n))   # every row t_j = A₂[:, s]
        G[:, :, s] = row_operator(T) @ A2
    H = np.einsum("ji,jk,jst->iskt", A1, A1, G, optimize=True).reshape(d * d, d * d)
    return 0.5 * (H + H.T)


def normalized_hessian(A1: np.ndarray, A2: np.ndarray, X: np.ndarray, B: np.ndarray,
                       max_bytes: int = KRONECKER_MEMORY_LIMIT) -> np.ndarray:
    """``∇²L = Σ_j ((A₁)_{j,*}(A₁)_{j,*}ᵀ) ⊗ (A₂ᵀ (J_j² + K_j) A₂)`` as a dense ``d²×d²`` matrix (row-major vec).

    Derived in :doc:`/book/tensor_trick`.
    """
    A1, A2, X, B = _problem(A1, A2, X, B)
    F = _softmax_rows(A1, A2, X)
    return _hessian_from_rows(A1, A2, lambda T: _normalized_Q(F, B, T), max_bytes)


# ---- the rescaled loss: P₂ = U∘C₂ − diag(rowsum(B∘C₂)) U ---------------------------------------------
# Row j of U is e^{m_j} E_j; every quantity below is computed from E and scaled by e^{2 m_j} at the end.
# E is split like f: E⁰, e_ℓ (= 1 after the max shift) and t = Σ_{i≠ℓ} E_i, so that entry ℓ of
# C̃ = E − diag(E1) B, c̃_ℓ = e_ℓ (1 − b_ℓ) − t b_ℓ, and of every b-weighted row sum stays accurate
# when the softmax saturates and the target row is (nearly) one-hot at ℓ.

def _row_scale(m: np.ndarray, what: str) -> np.ndarray:
    if float(np.max(2.0 * m)) > _LOG_MAX:
        raise OverflowError(f"{what}: a row of exp(A1 X A2ᵀ) reaches e^{float(np.max(m)):.0f}, so the rescaled loss "
                            "(quadratic in exp) is beyond float64; use the normalized loss")
    return np.exp(2.0 * m)


def _finite(value: np.ndarray | float, what: str) -> np.ndarray | float:
    if not np.all(np.isfinite(value)):
        raise OverflowError(f"{what} overflows float64; use the normalized loss")
    return value


def _rescaled_residual(E0: np.ndarray, el: np.ndarray | float, t: np.ndarray, lead: np.ndarray, rows: np.ndarray,
                       B: np.ndarray, out: np.ndarray) -> np.ndarray:
    """In place ``out`` → ``C̃ = E − diag(E1) B`` with entry ℓ set to 0; returns ``c̃_ℓ = e_ℓ (1 − b_ℓ) − t b_ℓ``."""
    np.multiply(B, (el + t)[:, None], out=out)
    np.subtract(E0, out, out=out)
    bl = B[rows, lead]
    out[rows, lead] = 0
    return el * (1 - bl) - t * bl


def _rescaled_P_split(E0: np.ndarray, el: np.ndarray | float, lead: np.ndarray, rows: np.ndarray, B: np.ndarray,
                      C: np.ndarray, ctl: np.ndarray) -> np.ndarray:
    """In place ``C`` (``C̃`` off ℓ) → unscaled ``P₂ = E∘(C̃ − β)``, ``β = rowsum(B∘C̃)``; entry ℓ
    ``e_ℓ (c̃_ℓ (1 − b_ℓ) − β⁰)`` with ``β⁰`` the row sum off ℓ."""
    bl = B[rows, lead]
    beta0 = _rowdot(B, C)
    C -= (beta0 + bl * ctl)[:, None]
    C *= E0
    C[rows, lead] = el * (ctl * (1 - bl) - beta0)
    return C


def _rescaled_Q_split(E0: np.ndarray, el: np.ndarray | float, lead: np.ndarray, rows: np.ndarray, B: np.ndarray,
                      C: np.ndarray, ctl: np.ndarray, T: np.ndarray, D: np.ndarray) -> np.ndarray:
    """In place ``C`` → unscaled ``Q₂ = Ė∘(C̃ − β) + E∘(C̃' − β')`` along ``T`` (``T``, ``D`` overwritten):
    ``Ė = E∘T``, ``C̃' = Ė − diag(rowsum Ė) B``, ``β' = rowsum(B∘C̃')``; entry ℓ from the sums off ℓ."""
    bl = B[rows, lead]
    beta0 = _rowdot(B, C)
    edl = el * T[rows, lead]                           # ė_ℓ
    T *= E0                                            # Ė⁰
    rs = T.sum(axis=1)
    np.multiply(B, (edl + rs)[:, None], out=D)
    np.subtract(T, D, out=D)                           # C̃' off ℓ
    D[rows, lead] = 0
    cdl = edl * (1 - bl) - bl * rs                     # c̃'_ℓ
    bdot0 = _rowdot(B, D)
    C -= (beta0 + bl * ctl)[:, None]
    C *= T
    D -= (bdot0 + bl * cdl)[:, None]
    D *= E0
    C += D
    C[rows, lead] = edl * (ctl * (1 - bl) - beta0) + el * (cdl * (1 - bl) - bdot0)
    return C


def _split_rescaled(E: np.ndarray, Ct: np.ndarray) -> tuple[np.ndarray, ...]:
    E0, el, t, lead, rows = _split_rows(E)
    C = np.array(Ct, dtype=np.result_type(E, Ct), copy=True)
    ctl = C[rows, lead].copy()
    C[rows, lead] = 0
    return E0, el, lead, rows, C, ctl




def _rescaled_Q(E: np.ndarray, Ct: np.ndarray, B: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Unscaled derivative of ``P₂`` along ``T``: ``Ė = E∘T``, ``C̃' = Ė − diag(rowsum Ė) B``,
    ``Q₂ = Ė∘C̃ + E∘C̃' − diag(rowsum(B∘C̃')) E − diag(rowsum(B∘C̃)) Ė``."""
    E0, el, lead, rows, C, ctl = _split_rescaled(E, Ct)
    T = np.array(T, dtype=C.dtype, copy=True)
    return _rescaled_Q_split(E0, el, lead, rows, B, C, ctl, T, np.empty_like(C))


def _rescaled_state(A1: np.ndarray, A2: np.ndarray, X: np.ndarray, B: np.ndarray,
                    what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(E, C̃, w)``: ``U = diag(e^m) E``, ``C₂ = diag(e^m) C̃`` with ``C̃ = E − diag(E1) B``, ``w = e^{2m}``."""
    E, _, m = _shifted_exp(A1, A2, X)
    w = _row_scale(m, what)
    E0, el, t, lead, rows = _split_rows(E)
    Ct = np.empty_like(E)
    Ct[rows, lead] = _rescaled_residual(E0, el, t, lead, rows, B, Ct)
    return E, Ct, w


def _rescaled_stream(A1: np.ndarray, A2: np.ndarray, X: np.ndarray, B: np.ndarray, V: np.ndarray | None,
                     block_rows: object, mode: str, what: str) -> tuple[float, np.ndarray | None]:
    """``(L_res, A₁ᵀ diag(w) M A₂)`` with ``M`` the unscaled ``P₂`` ("gradient"), ``Q₂`` ("hvp") or nothing
    ("loss"), one block of rows at a time (OverflowError where ``w = e^{2m}`` or the result leaves float64)."""
    n, d = A1.shape
    b = _block_size(n, block_rows)

    def block(blk: slice, buffers: list[np.ndarray], G: np.ndarray) -> float:
        k = blk.stop - blk.start
        rows, E0, C, Bb = np.arange(k), buffers[0][:k], buffers[1][:k], B[blk]
        np.matmul(A1[blk] @ X, A2.T, out=E0)
        lead, m, t = _split_exp(E0, rows)
        w = _row_scale(m, what)
        ctl = _rescaled_residual(E0, 1.0, t, lead, rows, Bb, C)
        if mode == "hvp":
            T = buffers[2][:k]
            np.matmul(A1[blk] @ V, A2.T, out=T)
            M = _rescaled_Q_split(E0, 1.0, lead, rows, Bb, C, ctl, T, buffers[3][:k]) @ A2
        else:
            value = 0.5 * float(np.dot(w, _rowdot(C, C) + ctl * ctl))
            if mode == "loss":
                return value
            M = _rescaled_P_split(E0, 1.0, lead, rows, Bb, C, ctl) @ A2
        M *= w[:, None]
        G += A1[blk].T @ M
        return 0.0 if mode == "hvp" else value

    loss, G = _over_blocks(n, d, b, 4 if mode == "hvp" else 2, block)
    return loss, None if mode == "loss" else G


def rescaled_loss(A1: np.ndarray, A2: np.ndarray, X: np.ndarray, B: np.ndarray, *,
                  block_rows: int | None = None) -> float:
    """``L_res(X) = ½‖exp(A₁XA₂ᵀ) − D(X) B‖_F²`` (OverflowError beyond float64).

    Derived in :doc:`/book/tensor_trick`.
    """
    A1, A2, X, B = _problem(A1, A2, X, B)
    loss, _ = _rescaled_stream(A1, A2, X, B, None, block_rows, "loss", "rescaled_loss")
    return float(_finite(loss, "the rescaled loss"))


def rescaled_loss_and_gradient(A1: np.ndarray, A2: np.ndarray, X: np.ndarray, B: np.ndarray, *,
                               block_rows: int | None = None) -> tuple[float, np.ndarray]:
    """``(L_res, ∇_X L_res = A₁ᵀ P₂ A₂)``, ``P₂ = U∘C₂ − diag(rowsum(B∘C₂)) U``, ``C₂ = U − D(X)B``.

    Derived in :doc:`/book/tensor_trick`.
    """
    A1, A2, X, B = _problem(A1, A2, X, B)
    loss, grad = _rescaled_stream(A1, A2, X, B, None, block_rows, "gradient", "rescaled_loss_and_gradient")
    return float(_finite(loss, "the rescaled loss")), _finite(grad, "the rescaled gradient")


def rescaled_gradient(A1: np.ndarray, A2: np.ndarray, X: np.ndarray, B: np.ndarray, *,
                      block_rows: int | None = None) -> np.ndarray:
    """``∇_X L_res = A₁ᵀ P₂ A₂``, ``P₂ = U∘C₂ − diag(rowsum(B∘C₂)) U``: O(n²d + nd²), no ``A₁⊗A₂``.

    Derived in :doc:`/book/tensor_trick`.
    """
    return rescaled_loss_and_gradient(A1, A2, X, B, block_rows=block_rows)[1]


def rescaled_hvp(A1: np.ndarray, A2: np.ndarray, X: np.ndarray, B: np.ndarray, V: np.ndarray, *,
                 block_rows: int | None = None) -> np.ndarray:
    """``∇²L_res[V] = A₁ᵀ Q₂ A₂``, ``Q₂`` the derivative of ``P₂`` along ``T = A₁VA₂ᵀ``.

    Derived in :doc:`/book/tensor_trick`.
    """
    A1, A2, X, B = _problem(A1, A2, X, B)
    V = _direction(V, X.shape[0])
    _, hv = _rescaled_stream(A1, A2, X, B, V, block_rows, "hvp", "rescaled_hvp")
    return _finite(hv, "the rescaled Hessian-vector product")


def rescaled_hessian(A1: np.ndarray, A2: np.ndarray, X: np.ndarray, B: np.ndarray,
                     max_bytes: int = KRONECKER_MEMORY_LIMIT) -> np.ndarray:
    """``∇²L_res = Σ_j ((A₁)_{j,*}(A₁)_{j,*}ᵀ) ⊗ (A₂ᵀ W_j^res A₂)`` as a dense ``d²×d²`` matrix.

    Derived in :doc:`/book/tensor_trick`.
    """
    A1, A2, X, B = _problem(A1, A2, X, B)
    E, Ct, w = _rescaled_state(A1, A2, X, B, "rescaled_hessian")
    H = _hessian_from_rows(A1, A2, lambda T: w[:, None] * _rescaled_Q(E, Ct, B, T), max_bytes)
    return _finite(H, "the rescaled Hessian")


# ---- the explicit-Kronecker reference route: n single regressions, one per block -----------------------

_SINGLE = {
    "normalized": (sr.normalized_loss, sr.normalized_gradient, sr.normalized_hessian, sr.normalized_hvp),
    "rescaled": (sr.rescaled_loss, sr.rescaled_gradient, sr.rescaled_hessian, sr.rescaled_hvp),
}


def _blocks(A1: np.ndarray, A2: np.ndarray, X: np.ndarray, B: np.ndarray, loss: str,
            max_bytes: int) -> tuple[np.ndarray, np.ndarray, int, tuple[Callable, ...]]:
    if loss not in _SINGLE:
        raise ValueError(f"loss must be 'normalized' or 'rescaled', got {loss!r}")
    A1, A2, X, B = _problem(A1, A2, X, B)
    n = A1.shape[0]
    return kronecker_data(A1, A2, max_bytes), notation.vec(X), n, _SINGLE[loss]


def kronecker_loss(A1: np.ndarray, A2: np.ndarray, X: np.ndarray, B: np.ndarray, loss: Loss = "normalized",
                   max_bytes: int = KRONECKER_MEMORY_LIMIT) -> float:
    """Reference: ``Σ_j L_single(𝖠_j, vec(X), B_{j,*})`` with the explicit ``𝖠 = A₁⊗A₂`` (refused above ``max_bytes``).

    Derived in :doc:`/book/tensor_trick`.
    """
    K, x, n, (value, *_) = _blocks(A1, A2, X, B, loss, max_bytes)
    B = np.asarray(B, dtype=np.float64)
    return float(sum(value(K[j * n:(j + 1) * n], x, B[j]) for j in range(n)))


def kronecker_gradient(A1: np.ndarray, A2: np.ndarray, X: np.ndarray, B: np.ndarray, loss: Loss = "normalized",
                       max_bytes: int = KRONECKER_MEMORY_LIMIT) -> np.ndarray:
    """Reference: ``unvec(Σ_j ∇L_single(𝖠_j, vec(X), B_{j,*}))`` (d×d), one single-regression gradient per block.

    Derived in :doc:`/book/tensor_trick`.
    """
    K, x, n, (_, grad, _, _) = _blocks(A1, A2, X, B, loss, max_bytes)
    B = np.asarray(B, dtype=np.float64)
    d = int(round(np.sqrt(x.size)))
    return notation.unvec(sum(grad(K[j * n:(j + 1) * n], x, B[j]) for j in range(n)), (d, d))


def kronecker_hessian(A1: np.ndarray, A2: np.ndarray, X: np.ndarray, B: np.ndarray, loss: Loss = "normalized",
                      max_bytes: int = KRONECKER_MEMORY_LIMIT) -> np.ndarray:
    """Reference: ``Σ_j 𝖠_jᵀ 𝔅_j 𝖠_j`` (d²×d²), one single-regression Hessian per block.

    Derived in :doc:`/book/tensor_trick`.
    """
    K, x, n, (_, _, hess, _) = _blocks(A1, A2, X, B, loss, max_bytes)
    B = np.asarray(B, dtype=np.float64)
    return sum(hess(K[j * n:(j + 1) * n], x, B[j]) for j in range(n))


def kronecker_hvp(A1: np.ndarray, A2: np.ndarray, X: np.ndarray, B: np.ndarray, V: np.ndarray,
                  loss: Loss = "normalized", max_bytes: int = KRONECKER_MEMORY_LIMIT) -> np.ndarray:
    """Reference: ``unvec(Σ_j 𝖠_jᵀ 𝔅_j 𝖠_j vec(V))`` (d×d), one single-regression HVP per block.

    Derived in :doc:`/book/tensor_trick`.
    """
    K, x, n, (_, _, _, hvp) = _blocks(A1, A2, X, B, loss, max_bytes)
    B = np.asarray(B, dtype=np.float64)
    d = int(round(np.sqrt(x.size)))
    v = notation.vec(_direction(V, d))
    return notation.unvec(sum(hvp(K[j * n:(j + 1) * n], x, B[j], v) for j in range(n)), (d, d))


# ---- Lipschitz constants and the in-context-learning construction --------------------------------------

def weight_lipschitz_constant(A1: np.ndarray, A2: np.ndarray) -> float:
    """``½‖A₁‖₂‖A₂‖₂``: ``‖F(X) − F(Y)‖_F ≤`` it ``· ‖X − Y‖_F``, and the same for ``∇L`` under a shift of ``B``.

    Derived in :doc:`/book/tensor_trick`.
    """
    A1, A2 = _factors(A1, A2)
    return 0.5 * float(np.linalg.norm(A1, 2) * np.linalg.norm(A2, 2))


def first_factor_shift_constant(A2: np.ndarray, X: np.ndarray) -> float:
    """``½‖X‖₂‖A₂‖₂``: ``‖F_{A₁'}(X) − F_{A₁}(X)‖_F ≤`` it ``· ‖A₁' − A₁‖_F`` (not ``½‖A₁‖₂‖A₂‖₂``).

    Derived in :doc:`/book/tensor_trick`.
    """
    A2 = as_matrix(A2, "A2")
    X = as_matrix(X, "X", rows=A2.shape[1], cols=A2.shape[1])
    return 0.5 * float(np.linalg.norm(X, 2) * np.linalg.norm(A2, 2))


def second_factor_shift_constant(A1: np.ndarray, X: np.ndarray) -> float:
    """``½‖A₁‖₂‖X‖₂``: ``‖F_{A₂'}(X) − F_{A₂}(X)‖_F ≤`` it ``· ‖A₂' − A₂‖_F``.

    Derived in :doc:`/book/tensor_trick`.
    """
    A1 = as_matrix(A1, "A1")
    X = as_matrix(X, "X", rows=A1.shape[1], cols=A1.shape[1])
    return 0.5 * float(np.linalg.norm(A1, 2) * np.linalg.norm(X, 2))


def equivalent_target(A1: np.ndarray, A2: np.ndarray, X: np.ndarray, B: np.ndarray, *,
                      A1_new: np.ndarray | None = None, A2_new: np.ndarray | None = None,
                      X_new: np.ndarray | None = None) -> np.ndarray:
    """``B̃ = B − (F_new − F)``: the step to ``(A₁', A₂', X')`` at target ``B`` equals target ``B̃`` at ``(A₁, A₂, X)``.

    Derived in :doc:`/book/tensor_trick`.
    """
    A1, A2, X, B = _problem(A1, A2, X, B)
    A1_new = A1 if A1_new is None else as_matrix(A1_new, "A1_new", rows=A1.shape[0], cols=A1.shape[1])
    A2_new = A2 if A2_new is None else as_matrix(A2_new, "A2_new", rows=A2.shape[0], cols=A2.shape[1])
    new = _problem(A1_new, A2_new, X if X_new is None else X_new, x_name="X_new")
    return B - (_softmax_rows(*new) - _softmax_rows(A1, A2, X))


# ---- solving the problem -----------------------------------------------------------------------------

@dataclass(frozen=True)
class OptimizationTrace:
    """The final iterate and the loss (and gradient norm) after each iteration, starting at ``X0``.

    Derived in :doc:`/book/tensor_trick`.
    """

    X: np.ndarray
    losses: np.ndarray
    gradient_norms: np.ndarray


_VALUE_AND_GRADIENT = {"normalized": normalized_loss_and_gradient, "rescaled": rescaled_loss_and_gradient}
_HVP = {"normalized": normalized_hvp, "rescaled": rescaled_hvp}


def _loss_functions(loss: str) -> tuple[Callable, Callable]:
    if loss not in _VALUE_AND_GRADIENT:
        raise ValueError(f"loss must be 'normalized' or 'rescaled', got {loss!r}")
    return _VALUE_AND_GRADIENT[loss], _HVP[loss]


MAX_ITERATIONS = 10**6  # an iteration count beyond this is a mistake, not a request


def _iterations(value: object) -> int:
    iterations = as_positive_int(value, "iterations")
    if iterations > MAX_ITERATIONS:
        raise ValueError(f"iterations must be at most {MAX_ITERATIONS}, got {iterations}")
    return iterations


def gradient_descent(A1: np.ndarray, A2: np.ndarray, B: np.ndarray, X0: np.ndarray, step: float,
                     iterations: int, loss: Loss = "normalized") -> OptimizationTrace:
    """``X ← X − η A₁ᵀ P A₂`` for ``iterations`` steps (Kronecker-free gradient).

    Derived in :doc:`/book/tensor_trick`.
    """
    value_and_grad, _ = _loss_functions(loss)
    A1, A2, X, B = _problem(A1, A2, X0, B, x_name="X0")
    step = as_nonnegative_float(step, "step")
    iterations = _iterations(iterations)
    X = X.copy()
    losses, norms = [], []
    for _ in range(iterations + 1):
        value, G = value_and_grad(A1, A2, X, B)
        losses.append(value)
        norms.append(float(np.linalg.norm(G)))
        X -= step * G
    X += step * G  # the last update was not counted
    return OptimizationTrace(X, np.array(losses), np.array(norms))


def newton_cg(A1: np.ndarray, A2: np.ndarray, B: np.ndarray, X0: np.ndarray, iterations: int,
              loss: Loss = "normalized", tol: float = 1e-14) -> OptimizationTrace:
    """Newton–CG (SciPy ``Newton-CG``) driven by the Kronecker-free gradient and Hessian-vector product.

    Derived in :doc:`/book/tensor_trick`.
    """
    from scipy.optimize import minimize

    value_and_grad, hvp = _loss_functions(loss)
    A1, A2, X0, B = _problem(A1, A2, X0, B, x_name="X0")
    iterations = _iterations(iterations)
    d = X0.shape[0]

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        value, G = value_and_grad(A1, A2, x.reshape(d, d), B)
        return value, G.reshape(-1)

    def hessp(x: np.ndarray, v: np.ndarray) -> np.ndarray:
        return hvp(A1, A2, x.reshape(d, d), B, v.reshape(d, d)).reshape(-1)

    iterates = [X0.reshape(-1).copy()]
    result = minimize(fun, X0.reshape(-1), jac=True, hessp=hessp, method="Newton-CG",
                      callback=lambda xk: iterates.append(np.array(xk, copy=True)),
                      options={"maxiter": iterations, "xtol": tol})
    stats = [fun(x) for x in iterates]
    return OptimizationTrace(result.x.reshape(d, d), np.array([s[0] for s in stats]),
                             np.array([float(np.linalg.norm(s[1])) for s in stats]))
