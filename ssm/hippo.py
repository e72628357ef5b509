"""HiPPO-LegS: a state of N numbers that holds the best degree-(N−1) polynomial approximation of
a signal's entire history, updated online (Gu, Dao, Ermon, Rudra & Ré 2020).

At time t the history f(s), 0 ≤ s ≤ t, is projected onto the Legendre polynomials rescaled to
[0, t], orthonormal for the uniform measure on [0, t]:

    g_n(x) = √(2n+1) P_n(2x − 1),   x = s / t ∈ [0, 1]   (x = 0 the start, x = 1 now),
    c_n(t) = (1/t) ∫_0^t f(s) g_n(s/t) ds,      f(s) ≈ Σ_{n<N} c_n(t) g_n(s/t).

Differentiating c_n(t) under the integral gives an exact linear ODE (no approximation: x g_n'(x)
is a polynomial of degree n, so it lies in the span of g_0 … g_n):

    c'(t) = (1/t) (A c(t) + B f(t)),
    A_nk = −√(2n+1) √(2k+1) (n > k),  −(n+1) (n = k),  0 (n < k);   B_n = √(2n+1),

the HiPPO-LegS matrices in S4's sign convention (:func:`hippo_legs`). In log time τ = log t the
system is time-invariant, dc/dτ = A c + B f(e^τ), so a signal held constant on [k, k+1)
(the samples u_k) is followed *exactly* by the zero-order hold over Δτ_k = log((k+1)/k):

    c(k+1) = e^{Δτ_k A} c(k) + A⁻¹(e^{Δτ_k A} − I) B u_k,      c(1) = u_0 e_0,

which is :func:`hippo_legs_states` with ``method="zoh"`` (``ssm.discretization.discretize``
supplies Ā, B̄; "bilinear" and "euler" approximate the same step). Its state after t samples
equals :func:`legendre_projection` of those samples to rounding error: two independent
computations of one number. :func:`legendre_reconstruct` turns a state back into a curve.

S4 keeps (A, B) but steps with a *constant* Δ instead of log((k+1)/k): the state then forgets
the far past at a rate set by Δ (a time-invariant SSM, a convolution), which is what S4 learns.

Shapes: u (..., L) samples; c (..., N) a state, (..., L, N) all states; x (M,) in [0, 1].
"""

from __future__ import annotations

import math

import torch

from ssm.discretization import discretize
from utils.validation import check_choice, check_int, shape_of

__all__ = ["HIPPO_METHODS", "hippo_legs", "hippo_legs_states", "legendre_basis",
           "legendre_projection", "legendre_reconstruct"]

HIPPO_METHODS = ("zoh", "bilinear", "euler")


def hippo_legs(N: int, *, dtype: torch.dtype = torch.float64,
               device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The HiPPO-LegS matrices A (N, N) (lower triangular, eigenvalues −1, −2, …, −N) and
    B (N, 1), as S4 writes them:

        A_nk = −√(2n+1)√(2k+1) if n > k,  −(n+1) if n = k,  0 if n < k;   B_n = √(2n+1).
    """
    N = check_int("N", N, minimum=1)
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a real floating-point dtype, got {dtype}")
    q = torch.sqrt(2 * torch.arange(N, dtype=dtype, device=device) + 1)
    A = -torch.tril(q[:, None] * q[None, :], diagonal=-1) \
        - torch.diag(torch.arange(1, N + 1, dtype=dtype, device=device))
    return A, q[:, None].clone()


def _legendre(z: torch.Tensor, n_max: int) -> torch.Tensor:
    """P_0(z) … P_{n_max}(z) by Bonnet's recurrence (n+1)P_{n+1} = (2n+1) z P_n − n P_{n−1}:
    (..., n_max + 1)."""
    P = [torch.ones_like(z), z]
    for n in range(1, n_max):
        P.append(((2 * n + 1) * z * P[n] - n * P[n - 1]) / (n + 1))
    return torch.stack(P[:n_max + 1], dim=-1)


def _check_x(x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
        raise ValueError(f"x must be a float tensor of positions in [0, 1], got {shape_of(x)}")
    if x.numel() and (float(x.min()) < 0 or float(x.max()) > 1):
        raise ValueError(f"x must lie in [0, 1] (s / t: 0 the start, 1 now), got "
                         f"[{float(x.min()):.3g}, {float(x.max()):.3g}]")
    return x


def legendre_basis(x: torch.Tensor, N: int) -> torch.Tensor:
    """g_n(x) = √(2n+1) P_n(2x − 1) for n < N, orthonormal on [0, 1]: x (...) → (..., N)."""
    x = _check_x(x)
    N = check_int("N", N, minimum=1)
    q = torch.sqrt(2 * torch.arange(N, dtype=x.dtype, device=x.device) + 1)
    return _legendre(2 * x - 1, max(N - 1, 1))[..., :N] * q


def _check_u(u: object) -> torch.Tensor:
    if not isinstance(u, torch.Tensor) or not u.dtype.is_floating_point or u.ndim < 1 \
            or u.shape[-1] < 1:
        raise ValueError(f"u must be a real float tensor (..., L) of samples with L >= 1, got "
                         f"{shape_of(u)}" + (f" of dtype {u.dtype}"
                                             if isinstance(u, torch.Tensor) else ""))
    return u


def legendre_projection(u: torch.Tensor, N: int) -> torch.Tensor:
    """The first N Legendre coefficients of the piecewise-constant signal f(s) = u_k on
    [k, k+1), k < L, over its whole history [0, L]: u (..., L) → c (..., N).

    c_n = (1/L) ∫_0^L f(s) g_n(s/L) ds = Σ_k u_k (G_n((k+1)/L) − G_n(k/L)) with the
    antiderivative G_n(x) = ∫_0^x g_n = √(2n+1)/2 · (P_{n+1}(z) − P_{n−1}(z))/(2n+1), z = 2x − 1
    (G_0(x) = x), exact up to rounding: the offline answer the online state must reproduce.
    """
    u = _check_u(u)
    N = check_int("N", N, minimum=1)
    L = u.shape[-1]
    z = 2 * torch.arange(L + 1, dtype=u.dtype, device=u.device) / L - 1     # (L+1,) edges
    P = _legendre(z, N)                                                      # (L+1, N+1)
    n = torch.arange(N, dtype=u.dtype, device=u.device)
    P_prev = torch.cat([torch.full_like(z[:, None], -1.0), P[:, :N - 1]], dim=1)  # P_{-1} := −1
    G = torch.sqrt(2 * n + 1) / 2 * (P[:, 1:N + 1] - P_prev) / (2 * n + 1)   # G_0 = (z+1)/2 = x
    return u @ (G[1:] - G[:-1])                                              # (..., N)


def legendre_reconstruct(c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """f(x t) ≈ Σ_n c_n g_n(x): a state c (..., N) → the history at relative positions
    x (M,) in [0, 1] (0 the start, 1 now): (..., M)."""
    if not isinstance(c, torch.Tensor) or not c.dtype.is_floating_point or c.ndim < 1:
        raise ValueError(f"c must be a real float tensor (..., N), got {shape_of(c)}")
    x = _check_x(x)
    if x.ndim != 1:
        raise ValueError(f"x must be 1-D (M,), got {tuple(x.shape)}")
    return c @ legendre_basis(x.to(c.dtype), c.shape[-1]).T


def hippo_legs_states(u: torch.Tensor, N: int, *, method: str = "zoh") -> torch.Tensor:
    """The online HiPPO-LegS states after each prefix: u (..., L) → c (..., L, N), where
    c[..., t−1, :] summarises u_0 … u_{t−1} (the history [0, t]).

    c(1) = u_0 e_0 (a constant's projection), then for k = 1 … L−1 one step of the log-time
    LTI system over Δτ_k = log((k+1)/k), (Ā_k, B̄_k) = ``discretize(A, B, Δτ_k, method)``:
    c(k+1) = Ā_k c(k) + B̄_k u_k. With ``method="zoh"`` this is exact for the piecewise-constant
    signal (equal to :func:`legendre_projection` of every prefix); "bilinear" (the HiPPO and
    S4 papers' choice) and "euler" are approximations whose per-step error shrinks with
    Δτ_k ≈ 1/k.
    Computed in u's dtype (float64 recommended: the step matrices mix entries of size ~N).
    """
    u = _check_u(u)
    N = check_int("N", N, minimum=1)
    method = check_choice("method", method, HIPPO_METHODS)
    A, B = hippo_legs(N, dtype=u.dtype, device=u.device)
    batch, L = u.shape[:-1], u.shape[-1]
    flat = u.reshape(-1, L)                                                  # (b, L)
    c = torch.zeros(flat.shape[0], N, dtype=u.dtype, device=u.device)
    c[:, 0] = flat[:, 0]
    states = [c]
    for k in range(1, L):
        A_bar, B_bar = discretize(A, B, math.log((k + 1) / k), method=method, diagonal=False)
        c = c @ A_bar.T + flat[:, k:k + 1] * B_bar[:, 0]
        states.append(c)
    return torch.stack(states, dim=1).reshape(*batch, L, N)
