"""Tests for ssm.discretization: dense ZOH / bilinear / Euler against scipy.signal.cont2discrete
and scipy.linalg.expm, ZOH exact for a held input (against an ODE solver), singular A, the
diagonal form equal to the dense one on diag(A) (real and complex, one Δ per channel), the
semigroup property of ZOH, bilinear's stability map, gradients, dtypes, is_hurwitz from the
eigenvalues, and every ValueError."""

import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
import scipy.signal
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ssm import check_hurwitz, discretize, is_hurwitz

pytestmark = pytest.mark.usefixtures("one_thread")

SCIPY_METHOD = {"zoh": "zoh", "bilinear": "bilinear", "euler": "euler"}


def system(n=4, m=2, seed=0, stable=True):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, n, generator=g, dtype=torch.float64)
    if stable:  # shift the spectrum left of the imaginary axis
        A = A - (torch.linalg.eigvals(A).real.max() + 0.5) * torch.eye(n, dtype=torch.float64)
    B = torch.randn(n, m, generator=g, dtype=torch.float64)
    return A, B


def scipy_discrete(A, B, dt, method):
    n, m = B.shape
    Ad, Bd, *_ = scipy.signal.cont2discrete(
        (A.numpy(), B.numpy(), np.eye(n), np.zeros((n, m))), dt, method=SCIPY_METHOD[method])
    return torch.from_numpy(Ad), torch.from_numpy(Bd)


@pytest.mark.parametrize("method", ["zoh", "bilinear", "euler"])
@pytest.mark.parametrize("dt", [1e-3, 0.1, 0.7])
@pytest.mark.parametrize("stable", [True, False])
def test_dense_matches_scipy_cont2discrete(method, dt, stable):
    A, B = system(5, 3, seed=int(dt * 1000), stable=stable)
    A_bar, B_bar = discretize(A, B, dt, method)
    Ad, Bd = scipy_discrete(A, B, dt, method)
    assert A_bar.shape == (5, 5) and B_bar.shape == (5, 3)
    torch.testing.assert_close(A_bar, Ad, rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(B_bar, Bd, rtol=1e-11, atol=1e-12)


def test_zoh_is_the_matrix_exponential_and_the_integral():
    A, B = system(4, 2, seed=3)
    dt = 0.37
    A_bar, B_bar = discretize(A, B, dt, "zoh")
    torch.testing.assert_close(A_bar, torch.from_numpy(scipy.linalg.expm(dt * A.numpy())))
    # B̄ = A⁻¹ (e^{ΔA} − I) B for an invertible A
    closed = torch.linalg.solve(A, (A_bar - torch.eye(4, dtype=A.dtype)) @ B)
    torch.testing.assert_close(B_bar, closed, rtol=1e-10, atol=1e-12)


def test_zoh_is_exact_for_a_held_input():
    """x(Δ) from an ODE solver with u held constant equals Ā x0 + B̄ u."""
    A, B = system(3, 2, seed=5)
    x0, u, dt = np.array([1.0, -2.0, 0.5]), np.array([0.3, -1.1]), 0.8
    sol = scipy.integrate.solve_ivp(lambda t, x: A.numpy() @ x + B.numpy() @ u, (0, dt), x0,
                                    rtol=1e-12, atol=1e-12, method="DOP853")
    A_bar, B_bar = discretize(A, B, dt, "zoh")
    x1 = A_bar.numpy() @ x0 + B_bar.numpy() @ u
    np.testing.assert_allclose(x1, sol.y[:, -1], rtol=1e-9, atol=1e-10)
    # Euler and bilinear are not exact at this Δ: the check above can tell the methods apart
    for method in ("euler", "bilinear"):
        Ab, Bb = discretize(A, B, dt, method)
        assert np.abs(Ab.numpy() @ x0 + Bb.numpy() @ u - sol.y[:, -1]).max() > 1e-3


def test_zoh_handles_a_singular_A():
    dt = 0.5
    # integrator x' = u: Ā = 1, B̄ = Δ B
    A_bar, B_bar = discretize(torch.zeros(1, 1, dtype=torch.float64),
                              torch.tensor([[2.0]], dtype=torch.float64), dt)
    assert A_bar.item() == pytest.approx(1.0) and B_bar.item() == pytest.approx(2 * dt)
    # double integrator x1' = x2, x2' = u: B̄ = (Δ²/2, Δ)
    A = torch.tensor([[0.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    B = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    A_bar, B_bar = discretize(A, B, dt)
    torch.testing.assert_close(A_bar, torch.tensor([[1.0, dt], [0.0, 1.0]], dtype=torch.float64))
    torch.testing.assert_close(B_bar, torch.tensor([[dt**2 / 2], [dt]], dtype=torch.float64))
    # diagonal form: an exact zero uses φ1(0) = 1, and a tiny λ is continuous with it
    for lam in (0.0, 1e-13, -1e-9):
        A_bar, B_bar = discretize(torch.tensor([lam, -1.0], dtype=torch.float64),
                                  torch.ones(2, dtype=torch.float64), dt)
        assert torch.isfinite(B_bar).all()
        assert B_bar[0].item() == pytest.approx(dt, rel=1e-8)
        assert B_bar[1].item() == pytest.approx(1 - np.exp(-dt), rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(["zoh", "bilinear", "euler"]), st.booleans(),
       st.floats(1e-3, 2.0))
def test_diagonal_equals_dense_on_the_diagonal_matrix(seed, method, complex_, dt):
    g = torch.Generator().manual_seed(seed)
    N = 5
    lam = -torch.rand(N, generator=g, dtype=torch.float64) * 3 - 0.01
    b = torch.randn(N, generator=g, dtype=torch.float64)
    if complex_:
        lam = lam + 1j * torch.randn(N, generator=g, dtype=torch.float64) * 4
        b = b + 1j * torch.randn(N, generator=g, dtype=torch.float64)
    A_bar, B_bar = discretize(lam, b, dt, method)
    Ad, Bd = discretize(torch.diag(lam), b[:, None], dt, method)
    torch.testing.assert_close(A_bar, torch.diagonal(Ad), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(B_bar, Bd[:, 0], rtol=1e-10, atol=1e-12)


def test_one_step_per_channel():
    """S4D's call: A (H, N) complex, B (H, N), dt (H,) equals each channel on its own."""
    g = torch.Generator().manual_seed(1)
    H, N = 3, 4
    A = -torch.rand(H, N, generator=g, dtype=torch.float64) + 1j * torch.randn(
        H, N, generator=g, dtype=torch.float64)
    B = torch.randn(H, N, generator=g, dtype=torch.complex128)
    dt = torch.tensor([1e-3, 1e-2, 1e-1], dtype=torch.float64)
    for method in ("zoh", "bilinear", "euler"):
        A_bar, B_bar = discretize(A, B, dt, method)
        assert A_bar.shape == (H, N) and B_bar.shape == (H, N) and A_bar.dtype == torch.complex128
        for h in range(H):
            a, b = discretize(A[h], B[h], float(dt[h]), method)
            torch.testing.assert_close(A_bar[h], a)
            torch.testing.assert_close(B_bar[h], b)
        a2, b2 = discretize(A, B, dt[:, None], method)  # (H, 1) reads the same
        torch.testing.assert_close(a2, A_bar)
        torch.testing.assert_close(b2, B_bar)
    # square H = N with one Δ per channel is read as diagonal
    A_sq, B_sq = A[:, :3], B[:, :3]
    A_bar, _ = discretize(A_sq, B_sq, dt)
    torch.testing.assert_close(A_bar, torch.exp(dt[:, None] * A_sq))
    # B broadcasts: one B for every channel
    _, B_bar = discretize(A, torch.ones(N, dtype=torch.float64), dt)
    assert B_bar.shape == (H, N)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.floats(1e-3, 1.0), st.floats(1e-3, 1.0))
def test_zoh_semigroup(seed, d1, d2):
    """Ā(Δ1+Δ2) = Ā(Δ2) Ā(Δ1) and, holding u over both steps, B̄(Δ1+Δ2) = Ā(Δ2) B̄(Δ1) + B̄(Δ2)."""
    A, B = system(4, 2, seed=seed)
    A1, B1 = discretize(A, B, d1)
    A2, B2 = discretize(A, B, d2)
    A12, B12 = discretize(A, B, d1 + d2)
    torch.testing.assert_close(A12, A2 @ A1, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(B12, A2 @ B1 + B2, rtol=1e-9, atol=1e-11)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.floats(1e-3, 10.0))
def test_stable_maps_into_the_unit_disc(seed, dt):
    """A Hurwitz λ goes inside the unit circle under ZOH (|e^{Δλ}| < 1) and bilinear (any Δ);
    Euler's |1 + Δλ| leaves it for large Δ, and bilinear maps Re λ = 0 onto |z| = 1."""
    g = torch.Generator().manual_seed(seed)
    lam = -torch.rand(6, generator=g, dtype=torch.float64) * 5 - 1e-3 + 1j * torch.randn(
        6, generator=g, dtype=torch.float64) * 5
    for method in ("zoh", "bilinear"):
        A_bar, _ = discretize(lam, torch.ones_like(lam), dt, method)
        assert (A_bar.abs() < 1).all()
    A_bar, _ = discretize(1j * lam.imag, torch.ones_like(lam), dt, "bilinear")
    torch.testing.assert_close(A_bar.abs(), torch.ones(6, dtype=torch.float64))
    A_bar, _ = discretize(torch.tensor([-1.0], dtype=torch.float64), torch.ones(1), 3.0, "euler")
    assert A_bar.abs().item() == pytest.approx(2.0)  # Euler at Δ = 3 on λ = −1: unstable


def test_eigenvalues_of_the_zoh_matrix():
    A, B = system(5, 1, seed=9)
    dt = 0.3
    A_bar, _ = discretize(A, B, dt)
    lam = torch.linalg.eigvals(A)
    mu = torch.linalg.eigvals(A_bar)
    # e^{Δλ} are the eigenvalues of e^{ΔA}: match them as sets
    target = torch.exp(dt * lam)
    dist = (mu[:, None] - target[None, :]).abs()
    assert dist.min(dim=1).values.max() < 1e-10 and dist.min(dim=0).values.max() < 1e-10


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(0)
    A = (-torch.rand(2, 3, generator=g, dtype=torch.float64) - 0.1 + 1j * torch.randn(
        2, 3, generator=g, dtype=torch.float64)).requires_grad_()
    B = torch.randn(2, 3, generator=g, dtype=torch.complex128).requires_grad_()
    dt = (torch.rand(2, generator=g, dtype=torch.float64) * 0.5 + 0.01).requires_grad_()
    for method in ("zoh", "bilinear", "euler"):
        assert torch.autograd.gradcheck(lambda a, b, d, m=method: discretize(a, b, d, m),
                                        (A, B, dt))
    Ad, Bd = system(3, 2, seed=2)
    Ad.requires_grad_(), Bd.requires_grad_()
    dts = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    for method in ("zoh", "bilinear", "euler"):
        assert torch.autograd.gradcheck(lambda a, b, d, m=method: discretize(a, b, d, m),
                                        (Ad, Bd, dts))


def test_dtype_and_device_follow_the_inputs():
    A, B = system(3, 1)
    A_bar, B_bar = discretize(A.float(), B.float(), 0.1)
    assert A_bar.dtype == torch.float32 and B_bar.dtype == torch.float32
    A_bar, B_bar = discretize(A.float(), B.float(), torch.tensor(0.1, dtype=torch.float64))
    assert A_bar.dtype == torch.float64
    lam = torch.tensor([-1 + 2j, -0.5 - 1j], dtype=torch.complex64)
    A_bar, B_bar = discretize(lam, torch.ones(2), torch.tensor([0.1, 0.2]))
    assert A_bar.dtype == torch.complex64 and B_bar.dtype == torch.complex64
    assert A_bar.shape == (2, 2)


def test_is_hurwitz_uses_the_eigenvalues():
    # every diagonal entry negative, yet eigenvalues 2 and −4: not Hurwitz
    A = torch.tensor([[-1.0, 3.0], [3.0, -1.0]], dtype=torch.float64)
    assert not is_hurwitz(A)
    # positive diagonal can't be Hurwitz; an upper-triangular one is read off the diagonal
    assert is_hurwitz(torch.tensor([[-1.0, 100.0], [0.0, -0.1]]))
    assert not is_hurwitz(torch.tensor([[-1.0, 0.0], [0.0, 0.0]]))          # Re λ = 0 fails
    assert is_hurwitz(torch.tensor([[0.0, 1.0], [-1.0, -0.1]]))             # damped oscillator
    assert is_hurwitz(torch.tensor([-0.5 + 3j, -1e-3 - 2j]))                # diagonal vector
    assert not is_hurwitz(torch.tensor([-0.5 + 3j, 1e-3 - 2j]))
    assert is_hurwitz(-torch.rand(3, 5) - 0.1)                              # (H, N) diagonals
    sq = torch.tensor([[-1.0, 3.0], [-2.0, -1.0]])    # dense: λ = −1 ± i√6; as diagonals: has 3
    assert is_hurwitz(sq) and not is_hurwitz(sq, diagonal=True)
    assert check_hurwitz("A", A - 3 * torch.eye(2, dtype=A.dtype)) is not None  # λ = −1, −7
    with pytest.raises(ValueError, match="A must be Hurwitz"):
        check_hurwitz("A", A)
    with pytest.raises(ValueError, match="Lambda must be Hurwitz.*real part 0.001"):
        check_hurwitz("Lambda", torch.tensor([-0.5 + 3j, 1e-3 - 2j]))


def test_bad_input():
    A, B = system(3, 2)
    for dt in (0.0, -0.1, float("nan"), float("inf"), torch.tensor([0.1, -0.1]),
               torch.tensor([]), True, "0.1", None):
        with pytest.raises(ValueError, match="dt"):
            discretize(A, B, dt)
    with pytest.raises(ValueError, match="dt must be a real"):
        discretize(A, B, torch.tensor(1))
    with pytest.raises(ValueError, match="method must be one of"):
        discretize(A, B, 0.1, "rk4")
    with pytest.raises(ValueError, match="A must be a real or complex"):
        discretize(A.numpy(), B, 0.1)
    with pytest.raises(ValueError, match="B must be a real or complex"):
        discretize(A, torch.ones(3, 2, dtype=torch.int64), 0.1)
    with pytest.raises(ValueError, match="at least one dimension"):
        discretize(torch.tensor(-1.0), torch.tensor(1.0), 0.1)
    with pytest.raises(ValueError, match="dense B must be"):
        discretize(A, torch.ones(4, 2, dtype=torch.float64), 0.1, diagonal=False)
    with pytest.raises(ValueError, match="dense A must be square"):
        discretize(torch.ones(2, 3), torch.ones(2, 1), 0.1, diagonal=False)
    with pytest.raises(ValueError, match="one step dt"):
        discretize(A, B, torch.tensor([0.1, 0.2, 0.3]), diagonal=False)
    with pytest.raises(ValueError, match="ambiguous|read both"):
        discretize(torch.eye(3).neg(), torch.ones(3, 3), 0.1)
    with pytest.raises(ValueError, match="diagonal must be"):
        discretize(A, B, 0.1, diagonal="yes")
    with pytest.raises(ValueError, match="must broadcast to A"):
        discretize(-torch.ones(2, 4), torch.ones(3, 4), 0.1)
    with pytest.raises(ValueError, match="state size"):
        discretize(-torch.ones(1), torch.ones(3), 0.1)
    with pytest.raises(ValueError, match="dt must broadcast"):
        discretize(-torch.ones(3, 4), torch.ones(3, 4), torch.tensor([0.1, 0.2]))
    with pytest.raises(ValueError, match="dense A must be square"):
        is_hurwitz(torch.ones(2, 3), diagonal=False)
    with pytest.raises(ValueError, match="A must be a real or complex"):
        is_hurwitz([[-1.0]])
