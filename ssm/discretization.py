r"""From the continuous state-space model to a recurrence: ZOH, bilinear and Euler.

The continuous linear time-invariant (LTI) system

.. math::  x'(t) = A x(t) + B u(t), \qquad y(t) = C x(t) + D u(t)

is sampled at steps of length :math:`\Delta` into the recurrence

.. math::  x_k = \bar A x_{k-1} + \bar B u_k, \qquad y_k = C x_k + D u_k .

Three rules give :math:`(\bar A, \bar B)`:

- ``"zoh"`` (zero-order hold: :math:`u` constant on each step, exact for such inputs)
  :math:`\bar A = e^{\Delta A}`, :math:`\bar B = A^{-1}(e^{\Delta A} - I) B
  = \int_0^\Delta e^{sA}\,ds\, B`. Dense: from one matrix exponential of the block matrix
  :math:`\exp\!\big(\Delta\,[[A, B], [0, 0]]\big) = [[\bar A, \bar B], [0, I]]`, which needs no
  inverse and so also holds for a singular :math:`A`. Diagonal: elementwise,
  :math:`\bar B = \Delta\,\varphi_1(\Delta A)\,B` with :math:`\varphi_1(z) = (e^z - 1)/z`
  (:func:`torch.expm1`, and :math:`\varphi_1(0) = 1`).
- ``"bilinear"`` (trapezoid rule / Tustin, S4's choice)
  :math:`\bar A = (I - \tfrac{\Delta}{2} A)^{-1}(I + \tfrac{\Delta}{2} A)`,
  :math:`\bar B = (I - \tfrac{\Delta}{2} A)^{-1} \Delta B`. (``scipy.signal.cont2discrete``'s
  ``"bilinear"`` has the same :math:`\bar A, \bar B` but also changes C and D; S4 keeps C.)
- ``"euler"`` (forward Euler) :math:`\bar A = I + \Delta A`, :math:`\bar B = \Delta B`.

Shapes. Dense: ``A (N, N)``, ``B (N, M)``, ``dt`` a positive scalar -> ``A_bar (N, N)``,
``B_bar (N, M)``. Diagonal: ``A (..., N)`` holds the diagonal(s) (real or complex; e.g. S4D's
``(H, N)``), ``B`` broadcastable to it, ``dt`` a positive scalar or a tensor broadcastable to
``A.shape[:-1]`` (one step per channel, e.g. ``(H,)``; ``(H, 1)`` is accepted too) -> ``A_bar``,
``B_bar`` elementwise, of the broadcast shape ``(..., N)``.
"""

from __future__ import annotations

import numbers

import torch

from utils.validation import check_choice, shape_of

__all__ = ["METHODS", "check_hurwitz", "discretize", "is_hurwitz"]

METHODS = ("zoh", "bilinear", "euler")


def _check_matrix_like(name: str, X: object) -> torch.Tensor:
    if not isinstance(X, torch.Tensor) or not (X.dtype.is_floating_point or X.dtype.is_complex):
        dtype = f" of dtype {X.dtype}" if isinstance(X, torch.Tensor) else ""
        raise ValueError(f"{name} must be a real or complex floating-point tensor, got "
                         f"{shape_of(X)}{dtype}")
    if X.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension, got a scalar tensor")
    return X


def _as_dt(dt: object, A: torch.Tensor) -> torch.Tensor:
    """``dt`` as a real tensor on ``A``'s device, every entry positive and finite."""
    if isinstance(dt, torch.Tensor):
        if not dt.dtype.is_floating_point:
            raise ValueError(f"dt must be a real floating-point tensor, got dtype {dt.dtype}")
        dt = dt.to(A.device)
    elif isinstance(dt, numbers.Real) and not isinstance(dt, bool):
        dt = torch.tensor(float(dt), dtype=A.real.dtype, device=A.device)
    else:
        raise ValueError(f"dt must be a positive number or a tensor of them, got {dt!r}")
    values = dt.detach()
    if values.numel() == 0 or not bool((torch.isfinite(values) & (values > 0)).all()):
        low = float(values.min()) if values.numel() else None
        raise ValueError(f"dt must be positive and finite (a step length Δ > 0), got "
                         f"{'an empty tensor' if low is None else f'minimum {low}'}")
    return dt


def _is_diagonal(A: torch.Tensor, B: torch.Tensor, dt: torch.Tensor,
                 diagonal: bool | None) -> bool:
    if diagonal is not None:
        if not isinstance(diagonal, bool):
            raise ValueError(f"diagonal must be True, False or None, got {diagonal!r}")
        return diagonal
    if A.ndim != 2 or A.shape[0] != A.shape[1] or B.ndim != 2 or B.shape[0] != A.shape[0]:
        return True  # only a square A with a B (N, M) can be dense
    if dt.numel() > 1:
        return True  # one step per channel: a dense system takes a single Δ
    if B.shape == A.shape and A.shape[0] > 1:  # (1, 1): both readings agree
        raise ValueError(f"A {tuple(A.shape)} and B {tuple(B.shape)} read both as a dense system "
                         f"and as {A.shape[0]} diagonal ones: pass diagonal=True or False")
    return False


def discretize(A: torch.Tensor, B: torch.Tensor, dt: float | torch.Tensor, method: str = "zoh",
               *, diagonal: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The discrete :math:`(\bar A, \bar B)` of :math:`x' = Ax + Bu` at step ``dt`` = Δ.

    Args:
        A: dense ``(N, N)``, or the diagonal ``(..., N)`` of diagonal systems (real or complex).
        B: ``(N, M)`` for a dense ``A``; broadcastable to ``A`` for a diagonal one.
        dt: the step Δ > 0: a number, or (diagonal) a tensor broadcastable to ``A.shape[:-1]``.
        method: ``"zoh"``, ``"bilinear"`` or ``"euler"`` (see the module docstring).
        diagonal: force the diagonal (True) or dense (False) reading. ``None`` infers it: a
            square 2-D ``A`` with ``B (N, M)`` and a single Δ is dense, anything else diagonal;
            a square ``A`` with ``B`` of the same shape and one Δ is ambiguous and must say.

    Returns:
        ``(A_bar, B_bar)``: ``(N, N), (N, M)`` dense; ``(..., N), (..., N)`` diagonal. Their dtype
        is the promotion of A's, B's and dt's, on A's device.
    """
    A = _check_matrix_like("A", A)
    B = _check_matrix_like("B", B)
    method = check_choice("method", method, METHODS)
    dt = _as_dt(dt, A)
    if _is_diagonal(A, B, dt, diagonal):
        return _discretize_diagonal(A, B, dt, method)
    return _discretize_dense(A, B, dt, method)


def _discretize_dense(A, B, dt, method):
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"a dense A must be square (N, N), got {tuple(A.shape)}")
    N = A.shape[0]
    if B.ndim != 2 or B.shape[0] != N:
        raise ValueError(f"a dense B must be (N, M) = ({N}, M) to match A {tuple(A.shape)}, got "
                         f"{tuple(B.shape)}")
    if dt.numel() != 1:
        raise ValueError(f"a dense system takes one step dt, got a tensor of shape "
                         f"{tuple(dt.shape)} (use the diagonal form for one step per channel)")
    dtype = torch.promote_types(torch.promote_types(A.dtype, B.dtype), dt.dtype)
    A, B, dt = A.to(dtype), B.to(dtype), dt.reshape(()).to(dtype)
    M = B.shape[1]
    I = torch.eye(N, dtype=dtype, device=A.device)  # noqa: E741 (the identity's usual name)
    if method == "zoh":
        # exp(Δ [[A, B], [0, 0]]) = [[e^{ΔA}, ∫_0^Δ e^{sA} ds B], [0, I]]
        block = torch.zeros(N + M, N + M, dtype=dtype, device=A.device)
        block[:N, :N] = A
        block[:N, N:] = B
        E = torch.linalg.matrix_exp(dt * block)
        return E[:N, :N], E[:N, N:]
    if method == "bilinear":
        left = I - dt / 2 * A                                    # (I − Δ/2 A)
        A_bar = torch.linalg.solve(left, I + dt / 2 * A)          # (I − Δ/2 A)⁻¹ (I + Δ/2 A)
        B_bar = torch.linalg.solve(left, dt * B)                  # (I − Δ/2 A)⁻¹ Δ B
        return A_bar, B_bar
    return I + dt * A, dt * B                                     # euler


def _discretize_diagonal(A, B, dt, method):
    try:
        shape = torch.broadcast_shapes(A.shape, B.shape)
    except RuntimeError:
        raise ValueError(f"a diagonal B must broadcast to A {tuple(A.shape)} (both (..., N)), "
                         f"got {tuple(B.shape)}") from None
    if shape[-1] != A.shape[-1]:
        raise ValueError(f"a diagonal B must not change the state size N = {A.shape[-1]} of A "
                         f"{tuple(A.shape)}, got {tuple(B.shape)}")
    if dt.ndim > 0 and not (dt.ndim == A.ndim and dt.shape[-1] == 1):
        dt = dt.unsqueeze(-1)                                     # (..., ) -> (..., 1): per channel
    try:
        torch.broadcast_shapes(dt.shape, A.shape[:-1] + (1,))
    except RuntimeError:
        raise ValueError(f"dt must broadcast to A.shape[:-1] = {tuple(A.shape[:-1])} (one step "
                         f"per channel), got {tuple(dt.shape)}") from None
    dtA = dt * A                                                  # ΔA, (..., N)
    if method == "zoh":
        A_bar = torch.exp(dtA)                                    # e^{ΔA}
        # B̄ = A⁻¹(e^{ΔA} − 1) B = Δ φ1(ΔA) B with φ1(z) = expm1(z)/z, φ1(0) = 1
        zero = dtA == 0
        safe = torch.where(zero, torch.ones_like(dtA), dtA)
        phi1 = torch.where(zero, torch.ones_like(dtA), torch.expm1(safe) / safe)
        B_bar = dt * phi1 * B
    elif method == "bilinear":
        denom = 1 - dtA / 2                                       # (1 − Δ/2 A)
        A_bar = (1 + dtA / 2) / denom
        B_bar = dt * B / denom
    else:                                                         # euler
        A_bar = 1 + dtA
        B_bar = dt * B
    A_bar, B_bar = torch.broadcast_tensors(A_bar, B_bar)
    return A_bar, B_bar


def _eigenvalues(A: torch.Tensor, diagonal: bool | None) -> torch.Tensor:
    A = _check_matrix_like("A", A)
    if diagonal is None:
        diagonal = not (A.ndim == 2 and A.shape[0] == A.shape[1])
    if diagonal:
        return A
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"a dense A must be square (N, N), got {tuple(A.shape)}")
    return torch.linalg.eigvals(A.detach())


def is_hurwitz(A: torch.Tensor, *, diagonal: bool | None = None) -> bool:
    r"""True if every eigenvalue of ``A`` has a negative real part (``x' = Ax`` decays to 0).

    ``A``: a dense ``(N, N)`` matrix (its eigenvalues by :func:`torch.linalg.eigvals`) or the
    diagonal(s) ``(..., N)`` of diagonal matrices (the entries are the eigenvalues). A square 2-D
    ``A`` is read as dense unless ``diagonal=True``.
    """
    return bool((_eigenvalues(A, diagonal).real < 0).all())


def check_hurwitz(name: str, A: torch.Tensor, *, diagonal: bool | None = None) -> torch.Tensor:
    """``A`` if :func:`is_hurwitz`; else a ``ValueError`` naming ``name`` and the largest real
    part of an eigenvalue (where the math needs a stable ``A``: a decaying kernel, an inverse)."""
    lam = _eigenvalues(A, diagonal)
    if not bool((lam.real < 0).all()):
        raise ValueError(f"{name} must be Hurwitz (every eigenvalue with real part < 0), got an "
                         f"eigenvalue with real part {float(lam.real.max()):.4g}")
    return A
