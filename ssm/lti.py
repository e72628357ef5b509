r"""A discrete LTI state-space model two ways: the recurrence and the convolution.

The recurrence (:func:`ssm_scan`), from :math:`x_{-1} = x_0` (zero by default),

.. math::  x_k = \bar A x_{k-1} + \bar B u_k, \qquad y_k = C x_k + D u_k ,

unrolls, for a zero start, into :math:`y_k = \sum_{j=0}^{k} C \bar A^j \bar B\, u_{k-j} + D u_k`:
a causal convolution :math:`y = K * u + D u` with the kernel (:func:`ssm_kernel`)

.. math::  K = (C\bar B,\; C\bar A\bar B,\; C\bar A^2\bar B,\; \dots,\; C\bar A^{L-1}\bar B).

The scan costs :math:`O(L N^2)` (dense) or :math:`O(L N)` (diagonal) in L sequential steps; the
convolution (:func:`causal_conv`) costs :math:`O(L^2)` written out ("direct") and
:math:`O(L \log L)` through the FFT, with the whole sequence at once (training), while the
recurrence is what generation needs (one step per new input). :func:`ssm_conv` runs the
convolution path with the same arguments and layout as :func:`ssm_scan`.

Shapes: ``A_bar (N, N)`` (dense) or ``(N,)`` (diagonal); ``B_bar (N, M)`` (``(N,)`` means
M = 1); ``C (P, N)`` (``(N,)`` means P = 1); ``D (P, M)``; ``u (B, L, M)`` or ``(L, M)`` ->
``y (B, L, P)`` or ``(L, P)``. Real or complex; the output's dtype is the inputs' promotion.
"""

from __future__ import annotations

import torch

from utils.validation import check_choice, check_int, shape_of

__all__ = ["CONV_METHODS", "causal_conv", "ssm_conv", "ssm_kernel", "ssm_scan"]

CONV_METHODS = ("fft", "direct")


def _tensor(name: str, X: object, ndims: tuple[int, ...]) -> torch.Tensor:
    if not isinstance(X, torch.Tensor) or not (X.dtype.is_floating_point or X.dtype.is_complex):
        dtype = f" of dtype {X.dtype}" if isinstance(X, torch.Tensor) else ""
        raise ValueError(f"{name} must be a real or complex floating-point tensor, got "
                         f"{shape_of(X)}{dtype}")
    if X.ndim not in ndims:
        raise ValueError(f"{name} must have {' or '.join(map(str, ndims))} dimensions, got shape "
                         f"{tuple(X.shape)}")
    return X


def _system(A_bar, B_bar, C, D=None):
    """Validate (Ā, B̄, C, D); return them as Ā (N, N) or (N,), B̄ (N, M), C (P, N), D (P, M) or
    None, with whether Ā is diagonal and whether B̄ / C came as vectors."""
    A_bar = _tensor("A_bar", A_bar, (1, 2))
    B_bar = _tensor("B_bar", B_bar, (1, 2))
    C = _tensor("C", C, (1, 2))
    N = A_bar.shape[0]
    if A_bar.ndim == 2 and A_bar.shape[1] != N:
        raise ValueError(f"A_bar must be square (N, N) or a diagonal (N,), got "
                         f"{tuple(A_bar.shape)}")
    b_vec, c_vec = B_bar.ndim == 1, C.ndim == 1
    B2 = B_bar[:, None] if b_vec else B_bar
    C2 = C[None, :] if c_vec else C
    if B2.shape[0] != N:
        raise ValueError(f"B_bar must be (N, M) with N = {N} (from A_bar {tuple(A_bar.shape)}), "
                         f"got {tuple(B_bar.shape)}")
    if C2.shape[1] != N:
        raise ValueError(f"C must be (P, N) with N = {N} (from A_bar {tuple(A_bar.shape)}), got "
                         f"{tuple(C.shape)}")
    if D is not None:
        D = _tensor("D", D, (0, 1, 2))
        P, M = C2.shape[0], B2.shape[1]
        if D.ndim < 2 and P == M == 1:
            D = D.reshape(1, 1)
        if D.shape != (P, M):
            raise ValueError(f"D must be (P, M) = ({P}, {M}), got {tuple(D.shape)}")
    return A_bar, B2, C2, D, A_bar.ndim == 1, b_vec, c_vec


def _inputs(u, M):
    u = _tensor("u", u, (2, 3))
    if u.shape[-1] != M:
        raise ValueError(f"u must be (B, L, M) or (L, M) with M = {M} inputs (from B_bar), got "
                         f"{tuple(u.shape)}")
    if u.shape[-2] < 1:
        raise ValueError(f"u must hold at least one step, got shape {tuple(u.shape)}")
    return u


def ssm_scan(A_bar: torch.Tensor, B_bar: torch.Tensor, C: torch.Tensor, u: torch.Tensor,
             D: torch.Tensor | None = None, x0: torch.Tensor | None = None, *,
             return_states: bool = False):
    r"""The recurrence :math:`x_k = \bar A x_{k-1} + \bar B u_k`, :math:`y_k = C x_k + D u_k`.

    Args:
        A_bar: ``(N, N)`` or its diagonal ``(N,)``. B_bar: ``(N, M)`` (or ``(N,)``: M = 1).
        C: ``(P, N)`` (or ``(N,)``: P = 1). D: ``(P, M)`` or None (no skip).
        u: ``(B, L, M)`` or ``(L, M)``. x0: the state before the first step, ``(N,)`` or
            ``(B, N)``; None is zero.
        return_states: also return the states ``x (B, L, N)`` (or ``(L, N)``).

    Returns:
        ``y (B, L, P)`` (or ``(L, P)``), and ``x`` if ``return_states``.
    """
    A_bar, B2, C2, D, diag, _, _ = _system(A_bar, B_bar, C, D)
    u = _inputs(u, B2.shape[1])
    unbatched = u.ndim == 2
    if unbatched:
        u = u[None]
    Bsz, L, _ = u.shape
    N = A_bar.shape[0]
    dtype = torch.promote_types(torch.promote_types(A_bar.dtype, B2.dtype),
                                torch.promote_types(C2.dtype, u.dtype))
    if x0 is None:
        x = torch.zeros(Bsz, N, dtype=dtype, device=u.device)
    else:
        x0 = _tensor("x0", x0, (1, 2))
        if x0.shape[-1] != N or (x0.ndim == 2 and x0.shape[0] not in (1, Bsz)):
            raise ValueError(f"x0 must be (N,) or (B, N) = ({Bsz}, {N}), got {tuple(x0.shape)}")
        x = x0.to(dtype).expand(Bsz, N)
    Bu = u.to(dtype) @ B2.to(dtype).T                   # B̄ u_k for every k: (B, L, N)
    A_bar = A_bar.to(dtype)
    states = []
    for k in range(L):
        x = (x * A_bar if diag else x @ A_bar.T) + Bu[:, k]   # x_k = Ā x_{k−1} + B̄ u_k
        states.append(x)
    X = torch.stack(states, dim=1)                        # (B, L, N)
    y = X @ C2.to(dtype).T                                # y_k = C x_k
    if D is not None:
        y = y + u.to(dtype) @ D.to(dtype).T               # + D u_k
    if unbatched:
        y, X = y[0], X[0]
    return (y, X) if return_states else y


def ssm_kernel(A_bar: torch.Tensor, B_bar: torch.Tensor, C: torch.Tensor, L: int) -> torch.Tensor:
    r"""The convolution kernel :math:`K_k = C \bar A^k \bar B`, k = 0, …, L − 1.

    Shapes: ``K (P, M, L)``, with the P axis dropped when ``C`` is a vector ``(N,)`` and the M
    axis when ``B_bar`` is (so the single-input single-output kernel is ``(L,)``). Diagonal
    ``A_bar (N,)``: :math:`K_k = \sum_n C_{pn} \bar A_n^k \bar B_{nm}` (a Vandermonde product);
    dense: :math:`C (\bar A^k \bar B)`. The powers come by doubling (:math:`\bar A^{2^j}` times
    the first :math:`2^j` of them), O(log L) products of whole blocks.
    """
    A_bar, B2, C2, _, diag, b_vec, c_vec = _system(A_bar, B_bar, C)
    L = check_int("L", L, minimum=1)
    dtype = torch.promote_types(torch.promote_types(A_bar.dtype, B2.dtype), C2.dtype)
    A_bar, B2, C2 = A_bar.to(dtype), B2.to(dtype), C2.to(dtype)
    # powers by doubling: with Ā^k for k < 2^j known, Ā^{2^j} · Ā^k gives 2^j ≤ k < 2^{j+1}
    if diag:
        V = torch.ones(A_bar.shape[0], 1, dtype=dtype, device=A_bar.device)  # Ā_n^0: (N, 1)
        P = A_bar                                         # Ā_n^{2^j}
        while V.shape[1] < L:
            V = torch.cat([V, P[:, None] * V], dim=1)
            P = P * P
        K = torch.einsum("pn,nl,nm->pml", C2, V[:, :L], B2)  # Σ_n C_pn Ā_n^k B̄_nm
    else:
        V = B2[None]                                      # Ā^k B̄ for k < 1: (1, N, M)
        P = A_bar                                         # Ā^{2^j}
        while V.shape[0] < L:
            V = torch.cat([V, P @ V], dim=0)
            P = P @ P
        K = torch.einsum("pn,lnm->pml", C2, V[:L])
    if b_vec:
        K = K[:, 0]
    if c_vec:
        K = K[0]
    return K


def causal_conv(u: torch.Tensor, K: torch.Tensor, method: str = "fft") -> torch.Tensor:
    r"""The causal convolution :math:`y_k = \sum_{j=0}^{k} K_j u_{k-j}` along the last axis.

    ``u (..., L)`` and ``K (..., L_K)`` broadcast over the leading axes; ``y (..., L)``. Only
    :math:`K_0 … K_{L-1}` can reach the output, so a longer K is cut and a shorter one is a
    short filter. ``"fft"``: zero-pad both to n ≥ 2L (a circular convolution of that length has
    no wrap-around: every index k − j stays in 0 … n − 1), multiply the transforms, keep the
    first L; O(L log L). ``"direct"``: the sum written out, O(L · L_K), the reference.
    """
    u = _tensor("u", u, tuple(range(1, 9)))
    K = _tensor("K", K, tuple(range(1, 9)))
    method = check_choice("method", method, CONV_METHODS)
    L = u.shape[-1]
    try:
        batch = torch.broadcast_shapes(u.shape[:-1], K.shape[:-1])
    except RuntimeError:
        raise ValueError(f"u (..., L) and K (..., L_K) must broadcast over their leading axes, "
                         f"got {tuple(u.shape)} and {tuple(K.shape)}") from None
    K = K[..., :L]
    dtype = torch.promote_types(u.dtype, K.dtype)
    u, K = u.to(dtype), K.to(dtype)
    if method == "direct":
        y = torch.zeros(*batch, L, dtype=dtype, device=u.device)
        for j in range(K.shape[-1]):                      # y_k += K_j u_{k−j}, k ≥ j
            y[..., j:] += K[..., j:j + 1] * u[..., :L - j]
        return y
    n = 1 << (2 * L - 1).bit_length()                     # a power of two ≥ 2L
    if dtype.is_complex:
        y = torch.fft.ifft(torch.fft.fft(u, n) * torch.fft.fft(K, n), n)
    else:
        y = torch.fft.irfft(torch.fft.rfft(u, n) * torch.fft.rfft(K, n), n)
    return y[..., :L]


def ssm_conv(A_bar: torch.Tensor, B_bar: torch.Tensor, C: torch.Tensor, u: torch.Tensor,
             D: torch.Tensor | None = None, method: str = "fft") -> torch.Tensor:
    r""":func:`ssm_scan`'s output from a zero state, computed as :math:`y = K * u + D u`.

    Same arguments and shapes as :func:`ssm_scan` (no ``x0``: the convolution form starts at
    rest): ``u (B, L, M)`` or ``(L, M)`` -> ``y (B, L, P)`` or ``(L, P)``, with
    :math:`y_{k,p} = \sum_m \sum_{j \le k} K_{p,m,j}\, u_{k-j,m}` (``K`` from :func:`ssm_kernel`,
    the convolution by :func:`causal_conv`).
    """
    A_bar, B2, C2, D, _, _, _ = _system(A_bar, B_bar, C, D)
    method = check_choice("method", method, CONV_METHODS)
    u = _inputs(u, B2.shape[1])
    K = ssm_kernel(A_bar, B2, C2, u.shape[-2])             # (P, M, L)
    v = u.transpose(-1, -2).unsqueeze(-3)                  # (B, 1, M, L)
    y = causal_conv(v, K, method).sum(-2)                  # (B, P, L): sum over inputs m
    y = y.transpose(-1, -2)                                # (B, L, P)
    if D is not None:
        y = y + u.to(y.dtype) @ D.to(y.dtype).T
    return y
