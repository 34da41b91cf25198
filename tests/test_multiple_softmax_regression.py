"""Multiple softmax regression through the tensor trick: the library's closed forms against explicit
constructions, finite differences and the statements of the chapter; wrong versions caught, validation,
the memory guard, properties, overflow behaviour and the solvers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from softmax_icl import multiple_softmax_regression as msr
from softmax_icl import notation
from softmax_icl.checks import check_gradient, check_hessian_vector, numerical_jacobian

LOSSES = ("normalized", "rescaled")


def random_instance(n: int, d: int, seed: int = 0, scale: float = 2.0) -> tuple[np.ndarray, ...]:
    """``A₁, A₂`` standard Gaussian (n×d), ``X`` Gaussian scaled by ``scale/d`` (logits of size about
    ``scale``), ``B`` with Dirichlet(1) rows, ``V`` a unit direction."""
    rng = np.random.default_rng(seed)
    A1, A2 = rng.standard_normal((n, d)), rng.standard_normal((n, d))
    X = rng.standard_normal((d, d)) * scale / d
    B = rng.dirichlet(np.ones(n), size=n)
    V = rng.standard_normal((d, d))
    return A1, A2, X, B, V / np.linalg.norm(V)


def functions(loss: str) -> tuple:
    return getattr(msr, f"{loss}_loss"), getattr(msr, f"{loss}_gradient"), getattr(msr, f"{loss}_hvp")


# ---- the tensor trick and the sum of single regressions -------------------------------------------------

def test_tensor_trick_in_both_orders_and_its_blocks() -> None:
    A1, A2, X, *_ = random_instance(30, 4, 0)
    K = msr.kronecker_data(A1, A2)
    np.testing.assert_array_equal(K, np.kron(A1, A2))
    Z = msr.logits(A1, A2, X)
    np.testing.assert_allclose(K @ notation.vec(X), notation.vec(Z), rtol=1e-12)
    np.testing.assert_allclose(notation.kron(A2, A1) @ notation.vec(X, "column"), notation.vec(Z, "column"),
                               rtol=1e-12)
    for j in (0, 17, 29):
        block = msr.kronecker_block(A1, A2, j)
        np.testing.assert_array_equal(block, K[j * 30:(j + 1) * 30])
        np.testing.assert_allclose(block @ notation.vec(X), Z[j], rtol=1e-12)


def test_swapped_kronecker_order_does_not_give_the_logits() -> None:
    A1, A2, X, *_ = random_instance(6, 3, 1)
    wrong = notation.kron(A2, A1) @ notation.vec(X)  # the column-major factor order with row-major vec
    assert np.abs(wrong - notation.vec(msr.logits(A1, A2, X))).max() > 1e-3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_loss_is_the_sum_of_n_single_regressions(seed: int) -> None:
    A1, A2, X, B, _ = random_instance(50, 6, seed)
    for loss in LOSSES:
        value = getattr(msr, f"{loss}_loss")(A1, A2, X, B)
        np.testing.assert_allclose(value, msr.kronecker_loss(A1, A2, X, B, loss), rtol=1e-12)
    transposed = msr.normalized_loss(A1, A2, X, B.T)
    assert abs(transposed - msr.kronecker_loss(A1, A2, X, B)) > 1e-6


# ---- derivatives ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("loss", LOSSES)
def test_gradient_and_hvp_against_finite_differences(loss: str) -> None:
    A1, A2, X, B, _ = random_instance(80, 6, 0)
    value, grad, hvp = functions(loss)
    rng = np.random.default_rng(10)
    check_gradient(lambda Y: value(A1, A2, Y, B), lambda Y: grad(A1, A2, Y, B), X, rng, rtol=1e-6)
    check_hessian_vector(lambda Y: grad(A1, A2, Y, B), lambda Y, W: hvp(A1, A2, Y, B, W), X, rng,
                         rtol=1e-6, n_directions=3)


@pytest.mark.parametrize("loss", LOSSES)
def test_kronecker_sum_hessian_equals_per_block_and_finite_differences(loss: str) -> None:
    A1, A2, X, B, _ = random_instance(30, 4, 0)
    _, grad, _ = functions(loss)
    H = getattr(msr, f"{loss}_hessian")(A1, A2, X, B)
    np.testing.assert_allclose(H, msr.kronecker_hessian(A1, A2, X, B, loss), rtol=1e-11,
                               atol=1e-13 * np.abs(H).max())
    H_fd = numerical_jacobian(lambda y: notation.vec(grad(A1, A2, y.reshape(4, 4), B)), notation.vec(X))
    np.testing.assert_allclose(H, 0.5 * (H_fd + H_fd.T), rtol=1e-6, atol=1e-8 * np.abs(H).max())


def test_a_wrong_gradient_and_a_transposed_hvp_are_caught() -> None:
    A1, A2, X, B, _ = random_instance(40, 4, 0)

    def wrong_gradient(Y: np.ndarray) -> np.ndarray:  # normalizes with rowsum(C), not rowsum(F∘C)
        F = msr.softmax_prediction(A1, A2, Y)
        C = F - B
        return A1.T @ (F * C - C.sum(axis=1, keepdims=True) * F) @ A2

    rng = np.random.default_rng(0)
    with pytest.raises(AssertionError):
        check_gradient(lambda Y: msr.normalized_loss(A1, A2, Y, B), wrong_gradient, X, rng, rtol=1e-6)
    with pytest.raises(AssertionError):
        check_hessian_vector(lambda Y: msr.normalized_gradient(A1, A2, Y, B),
                             lambda Y, W: msr.normalized_hvp(A1, A2, Y, B, W).T, X, rng, rtol=1e-6)


# ---- spectra and curvature -------------------------------------------------------------------------------

def test_singular_values_of_the_kronecker_product() -> None:
    A1, A2, *_ = random_instance(40, 5, 0)
    A2 = A2 * np.linspace(0.2, 3.0, 5)
    exact = np.linalg.svd(notation.kron(A1, A2), compute_uv=False)
    sv = msr.kronecker_singular_values(A1, A2)
    np.testing.assert_allclose(sv, exact, rtol=1e-12)
    np.testing.assert_allclose([sv[0], sv[-1]], [np.linalg.norm(A1, 2) * np.linalg.norm(A2, 2),
                                                 np.linalg.svd(A1, compute_uv=False)[-1]
                                                 * np.linalg.svd(A2, compute_uv=False)[-1]], rtol=1e-12)


@pytest.mark.parametrize("mu", [-1.5, 0.7])
def test_curvature_transfer_depends_on_the_sign_of_mu(mu: float) -> None:
    """Blocks μI give H = μ𝖠ᵀ𝖠: λ_min = μσ_min² for μ ≥ 0 but μσ_max² for μ < 0."""
    A1, A2, *_ = random_instance(12, 3, 5)
    K = notation.kron(A1, A2)
    lmin = np.linalg.eigvalsh(mu * K.T @ K)[0]
    sv = msr.kronecker_singular_values(A1, A2)
    np.testing.assert_allclose(lmin, mu * (sv[-1] if mu >= 0 else sv[0]) ** 2, rtol=1e-10)
    if mu < 0:
        assert lmin < mu * sv[-1] ** 2  # the bound without its sign condition fails


def test_flat_directions_need_no_rank_condition_on_A1() -> None:
    A1, A2, X, B, _ = random_instance(40, 4, 3)
    rng = np.random.default_rng(3)
    A1 = np.outer(A1[:, 0], rng.standard_normal(4))  # rank one
    w = rng.standard_normal(4)
    A2 = A2 - np.outer(A2 @ w - 1.0, w) / (w @ w)  # A₂ w = 1
    V = np.outer(rng.standard_normal(4), w)
    L0 = msr.normalized_loss(A1, A2, X, B)
    for t in (-2.0, 5.0):
        np.testing.assert_allclose(msr.normalized_loss(A1, A2, X + t * V, B), L0, rtol=1e-12)
    H = msr.normalized_hessian(A1, A2, X, B)
    assert np.abs(msr.normalized_hvp(A1, A2, X, B, V)).max() < 1e-12 * np.abs(H).max() * np.abs(V).max()


def test_hessian_at_a_realizable_minimizer() -> None:
    """Positive definite for generic factors; d zero eigenvalues when 1 ∈ range(A₂) or rank A₁ = d − 1."""
    A1, A2, Xstar, _, _ = random_instance(60, 4, 0)
    w = np.random.default_rng(1).standard_normal(4)
    cases = {"generic": (A1, A2, 0), "ones in range": (A1, A2 - np.outer(A2 @ w - 1.0, w) / (w @ w), 4),
             "rank-deficient A1": (A1 @ np.diag([1.0, 1.0, 1.0, 0.0]), A2, 4)}
    for name, (P1, P2, zeros) in cases.items():
        B = msr.softmax_prediction(P1, P2, Xstar)
        eig = np.linalg.eigvalsh(msr.normalized_hessian(P1, P2, Xstar, B))
        assert int(np.sum(np.abs(eig) < 1e-12 * eig[-1])) == zeros, name
        assert eig[0] > -1e-12 * eig[-1], name


def test_the_loss_is_not_convex_far_from_the_minimizer() -> None:
    A1, A2, Xstar, _, _ = random_instance(60, 4, 0)
    B = msr.softmax_prediction(A1, A2, Xstar)
    V = np.random.default_rng(2).standard_normal((4, 4))
    V /= np.linalg.norm(V)
    lowest = min(np.linalg.eigvalsh(msr.normalized_hessian(A1, A2, Xstar + s * V, B))[0]
                 for s in np.linspace(0.0, 30.0, 11))
    assert lowest < 0


# ---- Lipschitz bounds and in-context learning ------------------------------------------------------------

def ratios(A1: np.ndarray, A2: np.ndarray, X: np.ndarray, B: np.ndarray, rng: np.random.Generator,
           step: float) -> list[float]:
    """The four left/right ratios of the chapter's Lipschitz lemma for random perturbations of size step."""
    F = msr.softmax_prediction(A1, A2, X)
    dX, dA1, dA2 = (step * rng.standard_normal(s) for s in (X.shape, A1.shape, A2.shape))
    dB = step * rng.standard_normal(B.shape)
    gap = lambda G: float(np.linalg.norm(G - F))  # noqa: E731
    grad_gap = np.linalg.norm(msr.normalized_gradient(A1, A2, X, B + dB) - msr.normalized_gradient(A1, A2, X, B))
    return [gap(msr.softmax_prediction(A1, A2, X + dX)) / (msr.weight_lipschitz_constant(A1, A2)
                                                             * np.linalg.norm(dX)),
            gap(msr.softmax_prediction(A1 + dA1, A2, X)) / (msr.first_factor_shift_constant(A2, X)
                                                              * np.linalg.norm(dA1)),
            gap(msr.softmax_prediction(A1, A2 + dA2, X)) / (msr.second_factor_shift_constant(A1, X)
                                                              * np.linalg.norm(dA2)),
            grad_gap / (msr.weight_lipschitz_constant(A1, A2) * np.linalg.norm(dB))]


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 12), st.integers(1, 5), st.integers(0, 10**6), st.floats(0.1, 10.0), st.floats(1e-6, 1.0))
def test_lipschitz_bounds_hold_on_random_instances(n: int, d: int, seed: int, scale: float, step: float) -> None:
    A1, A2, X, B, _ = random_instance(n, d, seed, scale)
    assert max(ratios(A1, A2, X, B, np.random.default_rng(seed), step)) <= 1 + 1e-9


def test_tightness_witnesses_start_where_the_softmax_is_flat() -> None:
    a, e, one, zero = np.array([[1.0], [1.0]]), np.array([[1.0], [-1.0]]), np.ones((1, 1)), np.zeros((2, 1))
    eps = 1e-3
    gap = lambda P, Q: np.linalg.norm(msr.softmax_prediction(*P) - msr.softmax_prediction(*Q))  # noqa: E731
    weights = gap((a, e, eps * one), (a, e, 0 * one)) / (msr.weight_lipschitz_constant(a, e) * eps)
    first = gap((eps * a, e, one), (zero, e, one)) / (msr.first_factor_shift_constant(e, one) * eps * np.sqrt(2))
    second = gap((a, eps * e, one), (a, zero, one)) / (msr.second_factor_shift_constant(a, one) * eps * np.sqrt(2))
    for r in (weights, first, second):
        np.testing.assert_allclose(r, np.tanh(eps) / eps, rtol=1e-9)
    old = gap(((1 + eps) * a, e, one), (a, e, one)) / (msr.first_factor_shift_constant(e, one) * eps * np.sqrt(2))
    assert 0.41 < old < 0.43  # starting at A₁ = a the softmax is saturated: not a witness


def test_the_weight_constant_is_wrong_for_a_data_shift() -> None:
    A1 = np.array([[0.1, 0.0], [0.0, 0.1], [0.0, 0.0]])
    A2 = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 0.0]])
    X = np.diag([5.0, 5.0])
    A1p = A1 + 1e-3 * np.random.default_rng(0).standard_normal(A1.shape)
    gap = np.linalg.norm(msr.softmax_prediction(A1p, A2, X) - msr.softmax_prediction(A1, A2, X))
    assert gap > msr.weight_lipschitz_constant(A1, A2) * np.linalg.norm(A1p - A1)
    assert gap <= msr.first_factor_shift_constant(A2, X) * np.linalg.norm(A1p - A1)


def test_equivalent_target_gives_the_same_residual_within_the_bound() -> None:
    A1, A2, X, B, _ = random_instance(60, 5, 0)
    rng = np.random.default_rng(7)
    F = msr.softmax_prediction(A1, A2, X)
    Xn = X - 0.5 * msr.normalized_gradient(A1, A2, X, B)
    A1n = A1 + 0.05 * rng.standard_normal(A1.shape)
    steps = [(dict(X_new=Xn), msr.softmax_prediction(A1, A2, Xn),
              msr.weight_lipschitz_constant(A1, A2) * np.linalg.norm(Xn - X)),
             (dict(A1_new=A1n), msr.softmax_prediction(A1n, A2, X),
              msr.first_factor_shift_constant(A2, X) * np.linalg.norm(A1n - A1))]
    for kw, F_new, bound in steps:
        Bt = msr.equivalent_target(A1, A2, X, B, **kw)
        np.testing.assert_allclose(F - Bt, F_new - B, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(Bt.sum(axis=1), 1.0, rtol=1e-12)
        assert np.linalg.norm(Bt - B) <= bound
    assert not np.allclose(msr.equivalent_target(A1, A2, X, B, X_new=Xn), B)


# ---- the memory guard ------------------------------------------------------------------------------

def test_explicit_kronecker_is_refused_with_the_memory_it_would_need() -> None:
    A = np.zeros((4096, 128))
    with pytest.raises(msr.KroneckerTooLargeError, match=r"2 TiB"):
        msr.kronecker_data(A, A)
    with pytest.raises(MemoryError, match="limit of 1 GiB"):
        msr.kronecker_gradient(np.zeros((256, 64)), np.zeros((256, 64)), np.zeros((64, 64)), np.zeros((256, 256)))
    assert msr.kronecker_bytes(64, 16) == 8 * 2**20
    assert msr.kronecker_bytes(256, 64) == 2 * 2**30
    assert msr.kronecker_data(np.ones((3, 2)), np.ones((3, 2)), max_bytes=288).shape == (9, 4)
    with pytest.raises(MemoryError):
        msr.kronecker_data(np.ones((3, 2)), np.ones((3, 2)), max_bytes=287)


def test_dense_hessian_is_guarded() -> None:
    A1, A2, X, B, _ = random_instance(10, 6, 0)
    with pytest.raises(MemoryError, match="Hessian-vector product"):
        msr.normalized_hessian(A1, A2, X, B, max_bytes=1000)


# ---- validation ----------------------------------------------------------------------------------------

def test_validation_errors_name_the_argument() -> None:
    A1, A2, X, B, V = random_instance(5, 3, 0)
    with pytest.raises(ValueError, match="A2"):
        msr.normalized_loss(A1, A2[:, :2], X, B)
    with pytest.raises(ValueError, match="X"):
        msr.normalized_gradient(A1, A2, X[:2], B)
    with pytest.raises(ValueError, match="B"):
        msr.rescaled_loss(A1, A2, X, B[:4])
    with pytest.raises(ValueError, match="V"):
        msr.normalized_hvp(A1, A2, X, B, V[:, :1])
    with pytest.raises(TypeError, match="A1"):
        msr.logits(A1.astype(int), A2, X)
    with pytest.raises(ValueError, match="finite"):
        msr.softmax_prediction(A1, A2, np.full_like(X, np.nan))
    with pytest.raises(ValueError, match="row index"):
        msr.kronecker_block(A1, A2, 5)
    with pytest.raises(ValueError, match="loss"):
        msr.kronecker_loss(A1, A2, X, B, loss="other")
    with pytest.raises(ValueError, match="loss"):
        msr.gradient_descent(A1, A2, B, X, 0.1, 3, loss="other")


# ---- properties ------------------------------------------------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(st.integers(2, 9), st.integers(1, 4), st.integers(0, 10**6), st.floats(0.1, 5.0))
def test_kronecker_free_equals_per_block_route(n: int, d: int, seed: int, scale: float) -> None:
    A1, A2, X, B, V = random_instance(n, d, seed, scale)
    for loss in ("normalized", "rescaled"):
        value = getattr(msr, f"{loss}_loss")(A1, A2, X, B)
        np.testing.assert_allclose(value, msr.kronecker_loss(A1, A2, X, B, loss), rtol=1e-11)
        np.testing.assert_allclose(getattr(msr, f"{loss}_gradient")(A1, A2, X, B),
                                   msr.kronecker_gradient(A1, A2, X, B, loss), rtol=1e-9, atol=1e-12 * (1 + value))
        np.testing.assert_allclose(getattr(msr, f"{loss}_hvp")(A1, A2, X, B, V),
                                   msr.kronecker_hvp(A1, A2, X, B, V, loss), rtol=1e-9, atol=1e-11 * (1 + value))


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 9), st.integers(1, 4), st.integers(0, 10**6))
def test_hessians_are_symmetric_and_match_the_hvp(n: int, d: int, seed: int) -> None:
    A1, A2, X, B, V = random_instance(n, d, seed)
    for loss in ("normalized", "rescaled"):
        H = getattr(msr, f"{loss}_hessian")(A1, A2, X, B)
        np.testing.assert_array_equal(H, H.T)
        hv = getattr(msr, f"{loss}_hvp")(A1, A2, X, B, V)
        np.testing.assert_allclose(H @ notation.vec(V), notation.vec(hv), rtol=1e-9, atol=1e-12 * np.abs(H).max())


def test_softmax_rows_and_stability_at_large_logits() -> None:
    A1, A2, X, B, V = random_instance(50, 5, 0)
    Z = msr.logits(A1, A2, X)
    Xbig = X * (1000.0 / np.abs(Z).max())
    F = msr.softmax_prediction(A1, A2, Xbig)
    np.testing.assert_allclose(F.sum(axis=1), 1.0, rtol=1e-14)
    for fn in (msr.normalized_gradient, msr.normalized_hessian):
        assert np.all(np.isfinite(fn(A1, A2, Xbig, B)))
    assert np.all(np.isfinite(msr.normalized_hvp(A1, A2, Xbig, B, V)))
    with pytest.raises(OverflowError, match="normalized"):
        msr.rescaled_gradient(A1, A2, Xbig, B)


def test_rescaled_is_the_row_weighted_normalized_loss() -> None:
    A1, A2, X, B, _ = random_instance(30, 4, 3)
    alpha = np.exp(msr.logits(A1, A2, X)).sum(axis=1)
    F = msr.softmax_prediction(A1, A2, X)
    np.testing.assert_allclose(msr.rescaled_loss(A1, A2, X, B), 0.5 * np.sum(alpha[:, None] ** 2 * (F - B) ** 2),
                               rtol=1e-12)


def test_solvers_reach_a_realizable_minimum() -> None:
    A1, A2, Xstar, _, _ = random_instance(40, 4, 0)
    B = msr.softmax_prediction(A1, A2, Xstar)
    X0 = np.zeros((4, 4))
    newton = msr.newton_cg(A1, A2, B, X0, iterations=30)
    assert newton.losses[-1] < 1e-15 and newton.losses[-1] <= newton.losses[0] * 1e-15
    np.testing.assert_allclose(newton.X, Xstar, atol=1e-6)
    step = 1.0 / np.linalg.eigvalsh(msr.normalized_hessian(A1, A2, Xstar, B))[-1]
    gd = msr.gradient_descent(A1, A2, B, X0, step=step, iterations=50)
    assert gd.losses.shape == (51,) and np.all(np.diff(gd.losses) <= 0) and gd.losses[-1] < 1e-3 * gd.losses[0]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda a1, a2, b, x: msr.gradient_descent(a1, a2, b, x, 0.1, 10**7), "iterations must be at most"),
        (lambda a1, a2, b, x: msr.newton_cg(a1, a2, b, x, 10**12), "iterations must be at most"),
        (lambda a1, a2, b, x: msr.gradient_descent(a1, a2, b, np.full_like(x, np.nan), 0.1, 3), "X0 must be finite"),
        (lambda a1, a2, b, x: msr.newton_cg(a1, a2, b, np.full_like(x, np.nan), 3), "X0 must be finite"),
        (lambda a1, a2, b, x: msr.equivalent_target(a1, a2, x, b, X_new=np.full_like(x, np.nan)),
         "X_new must be finite"),
        (lambda a1, a2, b, x: msr.equivalent_target(a1, a2, x, b, A1_new=np.ones((3, 2))), "A1_new must have shape"),
    ],
)
def test_solvers_and_targets_name_the_bad_argument(call, message) -> None:
    rng = np.random.default_rng(0)
    A1, A2 = rng.standard_normal((5, 2)), rng.standard_normal((5, 2))
    B = rng.dirichlet(np.ones(5), size=5)
    with pytest.raises(ValueError, match=message):
        call(A1, A2, B, np.zeros((2, 2)))
