"""Tests for gans.dynamics: each method's step against its matrix, the closed-form spectral
radii against eigenvalues, the exact growth / decay / conservation laws, and bad input."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gans import (
    METHODS,
    alternating_gda,
    alternating_invariant,
    bilinear_game,
    bilinear_spectral_radius,
    bilinear_update_matrix,
    extragradient,
    optimistic_gda,
    simultaneous_gda,
)

RUNNERS = {"simultaneous": simultaneous_gda, "alternating": alternating_gda,
           "extragradient": extragradient, "optimistic": optimistic_gda}
F64 = dict(dtype=torch.float64)


def random_game(m=3, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(m, n, generator=g, **F64)
    return A, torch.randn(m, generator=g, **F64), torch.randn(n, generator=g, **F64)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", [(1, 1), (3, 3), (2, 4)])
def test_trajectory_follows_the_update_matrix(method, shape):
    A, x0, y0 = random_game(*shape)
    lr, steps, k = 0.3, 6, sum(shape)
    xs, ys = RUNNERS[method](*bilinear_game(A), x0, y0, lr, steps)
    assert xs.shape == (steps + 1, shape[0]) and ys.shape == (steps + 1, shape[1])
    M = bilinear_update_matrix(method, lr, A)
    z = torch.cat([x0, y0])
    if method == "optimistic":           # state (z_t, z_{t-1}), with z_{-1} = z_0
        z = torch.cat([z, z])
    for t in range(steps + 1):
        torch.testing.assert_close(torch.cat([xs[t], ys[t]]), z[:k], rtol=1e-12, atol=1e-12)
        z = M @ z


@pytest.mark.parametrize("method", METHODS)
def test_jacobian_of_the_trajectory_is_the_matrix_power(method):
    # The iterates are linear in the start, so d z_T / d z_0 is the T-th power of the step's
    # matrix (for optimistic GDA: the first rows of M^T applied to (z_0, z_{-1} = z_0)).
    A, x0, y0 = random_game(2, 3, seed=5)
    lr, T, k = 0.25, 5, 5

    def final(z0):
        xs, ys = RUNNERS[method](*bilinear_game(A), z0[:2], z0[2:], lr, T)
        return torch.cat([xs[-1], ys[-1]])

    z0 = torch.cat([x0, y0]).requires_grad_()
    J = torch.autograd.functional.jacobian(final, z0)
    MT = torch.linalg.matrix_power(bilinear_update_matrix(method, lr, A), T)
    expected = MT if method != "optimistic" else MT[:k, :k] + MT[:k, k:]
    torch.testing.assert_close(J, expected, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda z: final(z).square().sum(), (z0,))


@pytest.mark.parametrize("method", METHODS)
def test_closed_form_spectral_radius_matches_eigenvalues(method):
    A, _, _ = random_game(4, 4, seed=1)
    sigma = torch.linalg.svdvals(A)
    for lr in [0.05, 0.2, 0.45, 0.6, 1.1, 3.0]:
        rho = torch.linalg.eigvals(bilinear_update_matrix(method, lr, A)).abs().max()
        torch.testing.assert_close(bilinear_spectral_radius(method, lr, sigma).max(), rho,
                                   rtol=1e-9, atol=1e-9)


def test_scalar_game_rates_are_exact():
    # For f = x·y simultaneous and extragradient maps are scaled rotations, so the distance to
    # (0, 0) is multiplied by exactly |λ| every step.
    x0, y0, lr, steps = torch.tensor([1.0], **F64), torch.tensor([0.5], **F64), 0.2, 50
    grads = bilinear_game(torch.ones(1, 1, **F64))
    r0 = math.hypot(1.0, 0.5)
    for method, rate in [("simultaneous", math.sqrt(1 + lr**2)),
                         ("extragradient", math.sqrt((1 - lr**2) ** 2 + lr**2))]:
        xs, ys = RUNNERS[method](*grads, x0, y0, lr, steps)
        r = torch.cat([xs, ys], 1).norm(dim=1)
        expected = r0 * rate ** torch.arange(steps + 1, **F64)
        torch.testing.assert_close(r, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("lr", [0.1, 0.9, 1.9])
def test_alternating_conserves_its_invariant(lr):
    A, x0, y0 = random_game(3, 2, seed=2)
    xs, ys = alternating_gda(*bilinear_game(A), x0, y0, lr / float(torch.linalg.svdvals(A)[0]),
                             200)
    q = alternating_invariant(xs, ys, lr / float(torch.linalg.svdvals(A)[0]), A)
    torch.testing.assert_close(q, q[:1].expand_as(q), rtol=1e-10, atol=1e-10)
    # ... and x² + y² itself is not conserved (the invariant is not the trivial one)
    r2 = (xs**2).sum(1) + (ys**2).sum(1)
    assert (r2.max() - r2.min()) > 1e-3


def test_optimistic_and_extragradient_converge_simultaneous_diverges():
    # A = U diag(1, 0.8, 0.5) Vᵀ and η = 0.3, so a = ησ ∈ [0.15, 0.3]: the slowest rates are
    # √(1 − a² + a⁴) ≈ 0.989 (extragradient) and √((1 + √(1 − 4a²))/2) ≈ 0.994 (optimistic),
    # both below 0.995, and 0.995^2000 ≈ 4e-5; simultaneous grows at least by 1.011^2000 > 1e9.
    _, x0, y0 = random_game(3, 3, seed=3)
    g = torch.Generator().manual_seed(4)
    U, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, **F64))
    V, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, **F64))
    A = U @ torch.diag(torch.tensor([1.0, 0.8, 0.5], **F64)) @ V.T
    lr = 0.3
    d0 = float(torch.cat([x0, y0]).norm())
    for method in METHODS:
        xs, ys = RUNNERS[method](*bilinear_game(A), x0, y0, lr, 2_000)
        d = float(torch.cat([xs[-1], ys[-1]]).norm())
        if method in ("extragradient", "optimistic"):
            assert d < 1e-3 * d0
        elif method == "simultaneous":
            assert d > 10 * d0
        else:
            assert 0.1 * d0 < d < 10 * d0


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_and_batch_follow_inputs(method, dtype):
    A = torch.eye(2, dtype=dtype)
    x0, y0 = torch.ones(5, 2, dtype=dtype), torch.zeros(5, 2, dtype=dtype)
    xs, ys = RUNNERS[method](*bilinear_game(A), x0, y0, 0.1, 3)
    assert xs.dtype == dtype and xs.shape == (4, 5, 2) and ys.shape == (4, 5, 2)


def test_generic_nonlinear_game_matches_autograd_free_reference():
    # f(x, y) = x² y − y²/2 + x y: ∇ₓf = 2xy + y, ∇ᵧf = x² − y + x; one hand-written step.
    gx = lambda x, y: 2 * x * y + y  # noqa: E731
    gy = lambda x, y: x**2 - y + x  # noqa: E731
    x0, y0, lr = torch.tensor(0.3, **F64), torch.tensor(-0.2, **F64), 0.1
    xs, ys = alternating_gda(gx, gy, x0, y0, lr, 1)
    x1 = x0 - lr * gx(x0, y0)
    torch.testing.assert_close(xs[1], x1)
    torch.testing.assert_close(ys[1], y0 + lr * gy(x1, y0))


@settings(max_examples=40, deadline=None)
@given(st.floats(1e-3, 5.0), st.floats(0.0, 3.0))
def test_spectral_radius_bounds(lr, sigma):
    rho = {m: float(bilinear_spectral_radius(m, lr, sigma)) for m in METHODS}
    a = lr * sigma
    assert rho["simultaneous"] >= 1.0
    if 1e-4 < a < 1 - 1e-4:
        assert rho["extragradient"] < 1.0
    if 1e-4 < a < 1 / math.sqrt(3) - 1e-4:
        assert rho["optimistic"] < 1.0
    if a <= 2:
        assert rho["alternating"] == 1.0


def test_bad_input():
    grads = bilinear_game(torch.eye(2))
    x0, y0 = torch.zeros(2), torch.zeros(2)
    for run in RUNNERS.values():
        for lr in (0.0, -0.1, float("nan")):
            with pytest.raises(ValueError, match="lr"):
                run(*grads, x0, y0, lr, 3)
        for steps in (0, -1, 2.5):
            with pytest.raises(ValueError, match="steps"):
                run(*grads, x0, y0, 0.1, steps)
        with pytest.raises(ValueError, match="x must be"):
            run(*grads, torch.zeros(3), y0, 0.1, 3)
        with pytest.raises(ValueError, match="grad_x"):
            run(lambda x, y: torch.zeros(3), grads[1], x0, y0, 0.1, 3)
        with pytest.raises(ValueError, match="float tensor"):
            run(*grads, [0.0, 0.0], y0, 0.1, 3)
        with pytest.raises(ValueError, match="dtype"):
            run(*grads, x0, y0.double(), 0.1, 3)
    with pytest.raises(ValueError, match="A must be"):
        bilinear_game(torch.zeros(2, 2, 2))
    with pytest.raises(ValueError, match="method"):
        bilinear_update_matrix("adam", 0.1)
    with pytest.raises(ValueError, match="lr"):
        bilinear_update_matrix("alternating", 0.0)
    with pytest.raises(ValueError, match="A must be"):
        bilinear_update_matrix("alternating", 0.1, torch.ones(3))
    with pytest.raises(ValueError, match="method"):
        bilinear_spectral_radius("sgd", 0.1)
    with pytest.raises(ValueError, match="lr"):
        bilinear_spectral_radius("optimistic", -1.0)
    with pytest.raises(ValueError, match="sigma"):
        bilinear_spectral_radius("optimistic", 0.1, torch.tensor([-1.0]))
    with pytest.raises(ValueError, match="sigma"):
        bilinear_spectral_radius("optimistic", 0.1, "1")
    with pytest.raises(ValueError, match="lr"):
        alternating_invariant(x0, y0, 0.0)
    with pytest.raises(ValueError, match="x must be"):
        alternating_invariant(torch.zeros(3), y0, 0.1, torch.eye(2))
    with pytest.raises(ValueError, match="float tensor"):
        alternating_invariant([0.0], y0, 0.1)
