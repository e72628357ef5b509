"""Tests for ssm.lti: the scan against the scalar closed form and a hand loop, the kernel against
C Ā^k B̄ from matrix powers (any L, dense and diagonal, real and complex), scan = convolution
(FFT and direct, with D, batched or not), causal_conv against numpy.convolve, causality and no
wrap-around, a start state and continuing a scan from its last state, gradients, dtypes, and
every ValueError."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ssm import causal_conv, discretize, ssm_conv, ssm_kernel, ssm_scan

pytestmark = pytest.mark.usefixtures("one_thread")
f64 = torch.float64


def dense_system(N=4, M=2, P=3, dt=0.1, seed=0, dtype=f64):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(N, N, generator=g, dtype=f64)
    A = A - (torch.linalg.eigvals(A).real.max() + 0.3) * torch.eye(N, dtype=f64)
    B = torch.randn(N, M, generator=g, dtype=f64)
    C = torch.randn(P, N, generator=g, dtype=f64)
    D = torch.randn(P, M, generator=g, dtype=f64)
    A_bar, B_bar = discretize(A, B, dt)
    return A_bar.to(dtype), B_bar.to(dtype), C.to(dtype), D.to(dtype)


def diagonal_system(N=6, M=1, P=1, seed=0):
    """A complex diagonal system, as S4D's (Ā (N,), B̄ (N, M), C (P, N))."""
    g = torch.Generator().manual_seed(seed)
    lam = -torch.rand(N, generator=g, dtype=f64) * 0.5 - 0.05 + 1j * torch.randn(
        N, generator=g, dtype=f64) * 3
    A_bar, _ = discretize(lam, torch.ones(N, dtype=f64), 0.2)
    B_bar = torch.randn(N, M, generator=g, dtype=torch.complex128)
    C = torch.randn(P, N, generator=g, dtype=torch.complex128)
    return A_bar, B_bar, C


def kernel_by_powers(A_bar, B_bar, C, L):
    A = torch.diag(A_bar) if A_bar.ndim == 1 else A_bar
    return torch.stack([C @ torch.linalg.matrix_power(A, k) @ B_bar for k in range(L)], dim=-1)


def test_scalar_closed_form():
    a, b, c, L = 0.9, 0.5, 2.0, 20
    u = torch.randn(L, 1, dtype=f64, generator=torch.Generator().manual_seed(0))
    y = ssm_scan(torch.tensor([a], dtype=f64), torch.tensor([b], dtype=f64),
                 torch.tensor([c], dtype=f64), u)
    K = ssm_kernel(torch.tensor([a], dtype=f64), torch.tensor([b], dtype=f64),
                   torch.tensor([c], dtype=f64), L)
    torch.testing.assert_close(K, c * b * a ** torch.arange(L, dtype=f64))       # K_k = c a^k b
    expected = torch.tensor([sum(c * a**j * b * u[k - j, 0].item() for j in range(k + 1))
                             for k in range(L)], dtype=f64)
    assert y.shape == (L, 1)
    torch.testing.assert_close(y[:, 0], expected)


def test_scan_against_a_hand_loop_with_D_and_x0():
    A_bar, B_bar, C, D = dense_system()
    g = torch.Generator().manual_seed(1)
    u = torch.randn(2, 9, 2, generator=g, dtype=f64)
    x0 = torch.randn(2, 4, generator=g, dtype=f64)
    y, X = ssm_scan(A_bar, B_bar, C, u, D, x0, return_states=True)
    assert y.shape == (2, 9, 3) and X.shape == (2, 9, 4)
    for b in range(2):
        x = x0[b]
        for k in range(9):
            x = A_bar @ x + B_bar @ u[b, k]
            torch.testing.assert_close(X[b, k], x)
            torch.testing.assert_close(y[b, k], C @ x + D @ u[b, k])


def test_start_state_adds_the_free_response_and_a_scan_continues():
    A_bar, B_bar, C, D = dense_system(seed=2)
    g = torch.Generator().manual_seed(2)
    u = torch.randn(3, 16, 2, generator=g, dtype=f64)
    x0 = torch.randn(4, generator=g, dtype=f64)
    free = torch.stack([C @ torch.linalg.matrix_power(A_bar, k + 1) @ x0 for k in range(16)])
    torch.testing.assert_close(ssm_scan(A_bar, B_bar, C, u, D, x0),
                               ssm_scan(A_bar, B_bar, C, u, D) + free)
    # the recurrence as generation: stop after 10 steps, go on from the last state
    y_full = ssm_scan(A_bar, B_bar, C, u, D)
    y1, X1 = ssm_scan(A_bar, B_bar, C, u[:, :10], D, return_states=True)
    y2 = ssm_scan(A_bar, B_bar, C, u[:, 10:], D, X1[:, -1])
    torch.testing.assert_close(torch.cat([y1, y2], dim=1), y_full)


@pytest.mark.parametrize("L", [1, 2, 7, 16, 33])
def test_kernel_against_matrix_powers(L):
    A_bar, B_bar, C, _ = dense_system(seed=L)
    K = ssm_kernel(A_bar, B_bar, C, L)
    assert K.shape == (3, 2, L)
    torch.testing.assert_close(K, kernel_by_powers(A_bar, B_bar, C, L), rtol=1e-10, atol=1e-12)
    a, b, c = diagonal_system(N=5, M=2, P=3, seed=L)
    K = ssm_kernel(a, b, c, L)
    assert K.shape == (3, 2, L) and K.dtype == torch.complex128
    torch.testing.assert_close(K, kernel_by_powers(a, b, c, L), rtol=1e-10, atol=1e-12)
    # the diagonal kernel equals the dense one on diag(Ā)
    torch.testing.assert_close(ssm_kernel(torch.diag(a), b, c, L), K, rtol=1e-10, atol=1e-12)


def test_kernel_axes_follow_vectors():
    A_bar, B_bar, C, _ = dense_system(M=1, P=1)
    L = 12
    full = ssm_kernel(A_bar, B_bar, C, L)
    assert full.shape == (1, 1, L)
    assert ssm_kernel(A_bar, B_bar[:, 0], C[0], L).shape == (L,)           # SISO: (L,)
    torch.testing.assert_close(ssm_kernel(A_bar, B_bar[:, 0], C[0], L), full[0, 0])
    assert ssm_kernel(A_bar, B_bar[:, 0], C.repeat(3, 1), L).shape == (3, L)   # (P, L)
    assert ssm_kernel(A_bar, B_bar.repeat(1, 2), C[0], L).shape == (2, L)      # (M, L)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 70), st.booleans(), st.booleans(),
       st.sampled_from(["fft", "direct"]))
def test_scan_equals_convolution(seed, L, diag, batched, method):
    g = torch.Generator().manual_seed(seed)
    if diag:
        A_bar, B_bar, C = diagonal_system(N=4, M=2, P=3, seed=seed)
        D = torch.randn(3, 2, generator=g, dtype=f64)
    else:
        A_bar, B_bar, C, D = dense_system(seed=seed)
    shape = (2, L, 2) if batched else (L, 2)
    u = torch.randn(*shape, generator=g, dtype=f64)
    y_scan = ssm_scan(A_bar, B_bar, C, u, D)
    y_conv = ssm_conv(A_bar, B_bar, C, u, D, method)
    assert y_conv.shape == y_scan.shape == (*shape[:-1], 3)
    torch.testing.assert_close(y_conv, y_scan, rtol=1e-9, atol=1e-11)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 90), st.integers(1, 100), st.booleans())
def test_causal_conv_against_numpy(seed, L, LK, complex_):
    rng = np.random.default_rng(seed)
    u = rng.standard_normal(L)
    K = rng.standard_normal(LK) + (1j * rng.standard_normal(LK) if complex_ else 0)
    expected = np.convolve(u, K)[:L]                     # full linear convolution, first L
    for method in ("fft", "direct"):
        y = causal_conv(torch.from_numpy(u), torch.from_numpy(K), method)
        assert y.shape == (L,)
        np.testing.assert_allclose(y.numpy(), expected, rtol=1e-10, atol=1e-11)


def test_causal_conv_broadcasts_per_channel():
    g = torch.Generator().manual_seed(4)
    u = torch.randn(2, 3, 40, generator=g, dtype=f64)    # (B, H, L)
    K = torch.randn(3, 40, generator=g, dtype=f64)       # (H, L): one kernel per channel
    y = causal_conv(u, K)
    assert y.shape == (2, 3, 40)
    for b in range(2):
        for h in range(3):
            np.testing.assert_allclose(y[b, h].numpy(), np.convolve(u[b, h], K[h])[:40],
                                       rtol=1e-10, atol=1e-11)
    torch.testing.assert_close(causal_conv(u, K, "direct"), y)


def test_causal_and_no_wrap_around():
    L = 64
    K = torch.arange(1, L + 1, dtype=f64)
    # an impulse at the last step: a circular convolution of length L would leak K_1.. to the start
    u = torch.zeros(L, dtype=f64)
    u[-1] = 1.0
    y = causal_conv(u, K)
    torch.testing.assert_close(y[:-1], torch.zeros(L - 1, dtype=f64), atol=1e-10, rtol=0)
    assert y[-1].item() == pytest.approx(1.0)
    # changing u_k moves only y_j for j >= k
    g = torch.Generator().manual_seed(0)
    u = torch.randn(L, generator=g, dtype=f64)
    v = u.clone()
    v[40] += 1.0
    d = causal_conv(v, K) - causal_conv(u, K)
    assert d[:40].abs().max() < 1e-10
    torch.testing.assert_close(d[40:], K[:L - 40])


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 50), st.integers(0, 20))
def test_convolution_is_linear_and_shift_equivariant(seed, L, s):
    g = torch.Generator().manual_seed(seed)
    u, v, K = (torch.randn(L, generator=g, dtype=f64) for _ in range(3))
    torch.testing.assert_close(causal_conv(2 * u - 3 * v, K),
                               2 * causal_conv(u, K) - 3 * causal_conv(v, K))
    # delaying the input by s delays the output by s (zeros shifted in)
    shifted = torch.cat([torch.zeros(s, dtype=f64), u])
    torch.testing.assert_close(causal_conv(shifted, K)[s:], causal_conv(u, K), rtol=1e-9,
                               atol=1e-11)


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(0)
    u = torch.randn(2, 7, generator=g, dtype=f64, requires_grad=True)
    K = torch.randn(7, generator=g, dtype=f64, requires_grad=True)
    for method in ("fft", "direct"):
        assert torch.autograd.gradcheck(lambda a, b, m=method: causal_conv(a, b, m), (u, K))
    A_bar, B_bar, C, D = dense_system(N=3, M=1, P=2)
    B_bar.requires_grad_(), C.requires_grad_(), A_bar.requires_grad_()
    x = torch.randn(5, 1, generator=g, dtype=f64)
    assert torch.autograd.gradcheck(lambda a, b, c: ssm_conv(a, b, c, x), (A_bar, B_bar, C))
    assert torch.autograd.gradcheck(lambda a, b, c: ssm_scan(a, b, c, x), (A_bar, B_bar, C))


def test_dtype_follows_the_inputs():
    A_bar, B_bar, C, D = dense_system(dtype=torch.float32)
    u = torch.randn(2, 10, 2)
    assert ssm_scan(A_bar, B_bar, C, u, D).dtype == torch.float32
    assert ssm_conv(A_bar, B_bar, C, u, D).dtype == torch.float32
    assert causal_conv(u[0].T, u[1].T).dtype == torch.float32
    a, b, c = diagonal_system()
    assert ssm_scan(a, b, c, u[..., :1].double()).dtype == torch.complex128


def test_bad_input():
    A_bar, B_bar, C, D = dense_system()
    u = torch.randn(10, 2, dtype=f64)
    with pytest.raises(ValueError, match="A_bar must be a real or complex"):
        ssm_scan(A_bar.numpy(), B_bar, C, u)
    with pytest.raises(ValueError, match="A_bar must have 1 or 2 dimensions"):
        ssm_scan(A_bar[None], B_bar, C, u)
    with pytest.raises(ValueError, match="A_bar must be square"):
        ssm_kernel(A_bar[:, :3], B_bar, C, 5)
    with pytest.raises(ValueError, match="B_bar must be \\(N, M\\) with N = 4"):
        ssm_scan(A_bar, B_bar[:3], C, u)
    with pytest.raises(ValueError, match="C must be \\(P, N\\) with N = 4"):
        ssm_conv(A_bar, B_bar, C[:, :3], u)
    with pytest.raises(ValueError, match="D must be \\(P, M\\)"):
        ssm_scan(A_bar, B_bar, C, u, D.T)
    with pytest.raises(ValueError, match="M = 2 inputs"):
        ssm_scan(A_bar, B_bar, C, u[:, :1])
    with pytest.raises(ValueError, match="u must have 2 or 3"):
        ssm_scan(A_bar, B_bar, C, u[:, 0])
    with pytest.raises(ValueError, match="at least one step"):
        ssm_conv(A_bar, B_bar, C, u[:0])
    with pytest.raises(ValueError, match="x0 must be"):
        ssm_scan(A_bar, B_bar, C, u, x0=torch.zeros(3, dtype=f64))
    with pytest.raises(ValueError, match="x0 must be"):
        ssm_scan(A_bar, B_bar, C, u[None].repeat(2, 1, 1), x0=torch.zeros(3, 4, dtype=f64))
    with pytest.raises(ValueError, match="L must be an integer >= 1"):
        ssm_kernel(A_bar, B_bar, C, 0)
    with pytest.raises(ValueError, match="L must be an integer"):
        ssm_kernel(A_bar, B_bar, C, 3.0)
    with pytest.raises(ValueError, match="method must be one of"):
        causal_conv(u[:, 0], u[:, 1], "overlap-add")
    with pytest.raises(ValueError, match="method must be one of"):
        ssm_conv(A_bar, B_bar, C, u, method="scan")
    with pytest.raises(ValueError, match="must broadcast over their leading axes"):
        causal_conv(torch.ones(2, 5), torch.ones(3, 5))
    with pytest.raises(ValueError, match="K must be a real or complex"):
        causal_conv(torch.ones(5), torch.ones(5, dtype=torch.int64))
    with pytest.raises(ValueError, match="u must have"):
        causal_conv(torch.tensor(1.0), torch.ones(5))
