"""HiPPO-LegS: the matrices, the Legendre basis, the projection, and the online states."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.polynomial import legendre as npleg
from scipy.integrate import solve_ivp

from ssm.hippo import (
    hippo_legs,
    hippo_legs_states,
    legendre_basis,
    legendre_projection,
    legendre_reconstruct,
)


def test_hippo_legs_entries_and_spectrum():
    A, B = hippo_legs(4)
    s = np.sqrt([1, 3, 5, 7])
    expected = np.array([[-1, 0, 0, 0],
                         [-s[1] * s[0], -2, 0, 0],
                         [-s[2] * s[0], -s[2] * s[1], -3, 0],
                         [-s[3] * s[0], -s[3] * s[1], -s[3] * s[2], -4]])
    np.testing.assert_allclose(A.numpy(), expected, rtol=1e-15)
    np.testing.assert_allclose(B[:, 0].numpy(), s, rtol=1e-15)
    assert A.dtype == torch.float64 and B.shape == (4, 1)
    A, _ = hippo_legs(12)
    eig = np.sort(np.linalg.eigvals(A.numpy()).real)
    np.testing.assert_allclose(eig, -np.arange(12, 0, -1), rtol=1e-8)


def test_legendre_basis_matches_numpy_and_is_orthonormal():
    x = torch.linspace(0, 1, 57, dtype=torch.float64)
    G = legendre_basis(x, 9)
    for n in range(9):
        coef = np.zeros(n + 1)
        coef[n] = 1
        ref = np.sqrt(2 * n + 1) * npleg.legval(2 * x.numpy() - 1, coef)
        np.testing.assert_allclose(G[:, n].numpy(), ref, atol=1e-12)
    nodes, weights = npleg.leggauss(40)
    Q = legendre_basis(torch.tensor((nodes + 1) / 2), 12)
    gram = Q.T @ (torch.tensor(weights / 2)[:, None] * Q)
    torch.testing.assert_close(gram, torch.eye(12, dtype=torch.float64), atol=1e-12, rtol=0)
    assert legendre_basis(torch.tensor([0.5]), 1).shape == (1, 1)


def test_hippo_ode_is_satisfied_by_the_exact_projection():
    """c'(t) = (A c + B f(t)) / t holds for the true Legendre coefficients of any smooth f:
    integrate it with scipy from the projection at t0 and compare at t1 with the projection
    computed by quadrature."""
    N = 10
    A, B = (m.numpy() for m in hippo_legs(N))
    nodes, weights = npleg.leggauss(80)
    basis = legendre_basis(torch.tensor((nodes + 1) / 2), N).numpy()

    def f(s):
        return np.cos(2 * s) + 0.3 * s

    def proj(t):
        return basis.T @ (weights / 2 * f((nodes + 1) / 2 * t))

    sol = solve_ivp(lambda t, c: (A @ c + B[:, 0] * f(t)) / t, [0.5, 3.0], proj(0.5),
                    rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sol.y[:, -1], proj(3.0), atol=1e-9)
    wrong = A.copy()
    wrong[1, 0] *= -1  # one sign off and the ODE no longer follows the projection
    bad = solve_ivp(lambda t, c: (wrong @ c + B[:, 0] * f(t)) / t, [0.5, 3.0], proj(0.5),
                    rtol=1e-10, atol=1e-10)
    assert np.abs(bad.y[:, -1] - proj(3.0)).max() > 1e-3


def test_projection_against_quadrature_of_the_piecewise_constant_signal():
    u = torch.randn(7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    N, L = 6, 7
    nodes, weights = npleg.leggauss(20)  # exact on each piece: the integrand is a polynomial
    c = np.zeros(N)
    for k in range(L):
        s = k + (nodes + 1) / 2
        g = legendre_basis(torch.tensor(s / L), N).numpy()
        c += u[k].item() * (g.T @ (weights / 2)) / L
    np.testing.assert_allclose(legendre_projection(u, N).numpy(), c, atol=1e-13)


def test_polynomials_of_degree_below_N_are_reconstructed_exactly():
    N = 5
    x = torch.linspace(0, 1, 33, dtype=torch.float64)
    coef = torch.tensor([0.3, -1.0, 2.0, 0.5, -0.7], dtype=torch.float64)
    f = sum(a * x ** i for i, a in enumerate(coef))
    nodes, weights = npleg.leggauss(10)
    xq = torch.tensor((nodes + 1) / 2)
    c = legendre_basis(xq, N).T @ (torch.tensor(weights / 2) * sum(a * xq ** i
                                                                    for i, a in enumerate(coef)))
    torch.testing.assert_close(legendre_reconstruct(c, x), f, atol=1e-12, rtol=0)


@pytest.mark.parametrize("N", [1, 4, 24])
def test_online_zoh_states_equal_the_projection_of_every_prefix(N):
    u = torch.randn(3, 60, dtype=torch.float64, generator=torch.Generator().manual_seed(N))
    c = hippo_legs_states(u, N)
    assert c.shape == (3, 60, N)
    # atol 1e-8, not 1e-12: torch.linalg.matrix_exp (behind the dense ZOH) is off by ~2e-12 per
    # step at these small norms (Δτ ≈ 1/k), and 60 steps add those up
    for t in (1, 2, 7, 60):
        torch.testing.assert_close(c[:, t - 1], legendre_projection(u[:, :t], N), atol=1e-8,
                                   rtol=0)


def test_bilinear_and_euler_approximate_with_bilinear_closer():
    t = torch.arange(400, dtype=torch.float64)
    u = torch.sin(t / 30) + 0.5 * torch.cos(t / 7)
    exact = legendre_projection(u, 16)
    err = {m: float((hippo_legs_states(u, 16, method=m)[-1] - exact).abs().max())
           for m in ("bilinear", "euler")}
    assert 1e-6 < err["bilinear"] < err["euler"]
    assert err["bilinear"] < 0.05


def test_states_follow_batch_shape_and_dtype():
    u = torch.randn(2, 3, 10)
    c = hippo_legs_states(u, 4)
    assert c.shape == (2, 3, 10, 4) and c.dtype == torch.float32
    c64 = hippo_legs_states(u.double(), 4)
    torch.testing.assert_close(c.double(), c64, atol=1e-4, rtol=0)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 12), st.integers(1, 40), st.floats(-3, 3))
def test_a_constant_signal_has_only_the_first_coefficient(N, L, value):
    """Property: the projection of a constant is (value, 0, …, 0), online and offline."""
    u = torch.full((L,), value, dtype=torch.float64)
    expected = torch.zeros(N, dtype=torch.float64)
    expected[0] = value
    torch.testing.assert_close(legendre_projection(u, N), expected, atol=1e-10, rtol=0)
    torch.testing.assert_close(hippo_legs_states(u, N)[-1], expected, atol=1e-9, rtol=0)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 10), st.integers(1, 30), st.integers(0, 10_000))
def test_projection_is_the_least_squares_fit(N, L, seed):
    """Property: Parseval, ||c||² ≤ (1/L) Σ u_k² (Bessel's inequality for an orthonormal set)."""
    u = torch.randn(L, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    c = legendre_projection(u, N)
    assert float((c ** 2).sum()) <= float((u ** 2).mean()) * (1 + 1e-10) + 1e-12


def test_bad_input():
    with pytest.raises(ValueError, match="N must be"):
        hippo_legs(0)
    with pytest.raises(ValueError, match="dtype"):
        hippo_legs(3, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"x must lie in \[0, 1\]"):
        legendre_basis(torch.tensor([1.5]), 3)
    with pytest.raises(ValueError, match="x must be a float"):
        legendre_basis([0.5], 3)
    with pytest.raises(ValueError, match="u must be"):
        legendre_projection(torch.zeros(3, dtype=torch.int64), 2)
    with pytest.raises(ValueError, match="u must be"):
        hippo_legs_states(torch.zeros(0), 2)
    with pytest.raises(ValueError, match="method"):
        hippo_legs_states(torch.zeros(4), 2, method="rk4")
    with pytest.raises(ValueError, match="c must be"):
        legendre_reconstruct(torch.zeros(3, dtype=torch.int64), torch.tensor([0.5]))
    with pytest.raises(ValueError, match="1-D"):
        legendre_reconstruct(torch.zeros(3), torch.zeros(2, 2))
    assert math.isfinite(float(legendre_projection(torch.ones(1), 3)[0]))
