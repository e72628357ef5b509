"""TRPO's linear algebra: Fisher-vector products by double backprop, conjugate gradient, the step
size from the KL constraint, and a backtracking line search that enforces it
(02_policy_gradients_and_trpo).

TRPO (Schulman et al. 2015) maximises the surrogate advantage subject to a trust region,

    max_θ  g ᵀ (θ − θ_old)   s.t.   ½ (θ − θ_old)ᵀ F (θ − θ_old) ≤ δ,

with g the policy gradient and F the Fisher information of the policy, which equals the Hessian
of the mean KL at the current policy:

    F = E_s E_{a~π} [∇ log π(a|s) ∇ log π(a|s)ᵀ] = ∇²_θ E_s KL(π_old(·|s) ‖ π_θ(·|s)) |_{θ=θ_old}.

F is never formed: F v = ∇_θ ((∇_θ KL)ᵀ v) costs two backward passes (the gradient of KL is
zero at θ_old, its Hessian is F). The search direction s = F⁻¹ g comes from conjugate gradient,
which needs only those products, and the largest step in the trust region is β s with

    β = sqrt(2δ / (sᵀ F s)),    so that ½ (β s)ᵀ F (β s) = δ.

The quadratic model is only a model: the backtracking line search tries β s, β s / 2, β s / 4, …
and takes the first fraction whose actual improvement is at least ``accept_ratio`` times the
linear prediction and whose true KL stays within δ (the ``constraint``).

Parameters are handled as one flat vector of P numbers (``torch.nn.utils.parameters_to_vector``
and ``vector_to_parameters`` convert); v, b, s: ``(P,)``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

from utils.validation import check_int, check_positive, shape_of

__all__ = [
    "LineSearchResult", "backtracking_line_search", "conjugate_gradient", "fisher_vector_product",
    "flat_grad", "trpo_step_size",
]


def _check_nonneg(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0 \
            or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _check_vector(name: str, x: object, size: int | None = None) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != 1 \
            or (size is not None and x.numel() != size):
        want = f"({size},)" if size is not None else "(P,)"
        raise ValueError(f"{name} must be a flat float tensor {want}, got {shape_of(x)}")
    return x


def flat_grad(y: torch.Tensor, params: Sequence[torch.Tensor], *,
              create_graph: bool = False) -> torch.Tensor:
    """∇_θ y for a scalar y as one flat vector (P,), P = Σ numel(params); a parameter y does not
    depend on contributes zeros."""
    params = list(params)
    grads = torch.autograd.grad(y, params, create_graph=create_graph, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if gr is None else gr).reshape(-1)
                      for p, gr in zip(params, grads)])


def fisher_vector_product(kl_fn: Callable[[], torch.Tensor], params: Sequence[torch.Tensor],
                          v: torch.Tensor, damping: float = 0.0) -> torch.Tensor:
    """(F + damping·I) v with F = ∇²_θ kl_fn() by double backprop: ∇_θ ((∇_θ KL)ᵀ v).

    Args:
        kl_fn: a closure returning the scalar mean KL(π_old ‖ π_θ) over states, π_old detached,
            evaluated at the current θ (where it is 0 and its Hessian is the Fisher matrix).
        params: the policy's parameters θ (requires_grad), P numbers in all.
        v: ``(P,)`` the vector, ordered as the flattened ``params``.
        damping: λ >= 0 added as λ v (keeps CG well conditioned; 0.1 is common).

    Returns:
        ``(P,)``, detached.
    """
    damping = _check_nonneg("damping", damping)
    params = list(params)
    if not params or not all(isinstance(p, torch.Tensor) and p.requires_grad for p in params):
        raise ValueError("params must be a non-empty sequence of tensors that require grad")
    size = sum(p.numel() for p in params)
    v = _check_vector("v", v, size)
    kl = kl_fn()
    if not isinstance(kl, torch.Tensor) or kl.numel() != 1:
        raise ValueError(f"kl_fn must return a scalar tensor, got {shape_of(kl)}")
    g = flat_grad(kl.reshape(()), params, create_graph=True)
    hv = flat_grad((g * v.detach().to(g)).sum(), params)
    return (hv + damping * v.to(hv)).detach()


def conjugate_gradient(Avp: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor,
                       iters: int = 10, tol: float = 1e-10) -> torch.Tensor:
    """x ≈ A⁻¹ b for a symmetric positive-definite A given only as v ↦ A v.

    The standard recurrence from x_0 = 0, r_0 = p_0 = b:
    α_k = r_kᵀr_k / p_kᵀA p_k,  x_{k+1} = x_k + α_k p_k,  r_{k+1} = r_k − α_k A p_k,
    p_{k+1} = r_{k+1} + (r_{k+1}ᵀr_{k+1} / r_kᵀr_k) p_k; stops after ``iters`` steps or when
    r_kᵀr_k < ``tol``. In exact arithmetic it is exact after P steps.

    Args:
        Avp: maps ``(P,)`` to ``(P,)`` (e.g. a :func:`fisher_vector_product` closure).
        b: ``(P,)`` right-hand side (TRPO: the policy gradient g).
        iters: at most this many steps (>= 1); TRPO uses 10.
        tol: >= 0, threshold on the squared residual norm.

    Returns:
        x ``(P,)``, b's dtype and device.
    """
    b = _check_vector("b", b)
    iters = check_int("iters", iters, minimum=1)
    tol = _check_nonneg("tol", tol)
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    rr = r @ r
    for _ in range(iters):
        if float(rr) < tol:
            break
        Ap = Avp(p)
        if not isinstance(Ap, torch.Tensor) or Ap.shape != b.shape:
            raise ValueError(f"Avp must map {tuple(b.shape)} to {tuple(b.shape)}, got "
                             f"{shape_of(Ap)}")
        pAp = p @ Ap
        if not float(pAp) > 0:
            raise ValueError(f"A must be positive definite: pᵀAp = {float(pAp):.3g} <= 0 (add "
                             f"damping?)")
        alpha = rr / pAp
        x = x + alpha * p
        r = r - alpha * Ap
        rr_new = r @ r
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def trpo_step_size(s: torch.Tensor, Fs: torch.Tensor, delta: float) -> torch.Tensor:
    """β = sqrt(2δ / (sᵀ F s)) for a direction s ``(P,)`` and Fs = F s ``(P,)``: the step β s
    lies on the trust region's boundary, ½ (β s)ᵀ F (β s) = δ. Returns a scalar tensor."""
    delta = check_positive("delta", delta)
    s = _check_vector("s", s)
    Fs = _check_vector("Fs", Fs, s.numel())
    sFs = s @ Fs
    if not float(sFs) > 0:
        raise ValueError(f"sᵀFs must be positive (F positive definite, s nonzero), got "
                         f"{float(sFs):.3g}")
    return torch.sqrt(2 * delta / sFs)


class LineSearchResult(NamedTuple):
    """``x``: the accepted point (``x`` itself when nothing was accepted); ``accepted``;
    ``fraction``: the step fraction taken (0.5^k, or 0.0 when rejected); ``n_backtracks``: how
    many halvings were tried before it (``max_backtracks`` when rejected)."""

    x: torch.Tensor
    accepted: bool
    fraction: float
    n_backtracks: int


def backtracking_line_search(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                             full_step: torch.Tensor, expected_improve: float,
                             accept_ratio: float = 0.1, max_backtracks: int = 10,
                             constraint: Callable[[torch.Tensor], bool] | None = None
                             ) -> LineSearchResult:
    """Try x + 0.5^k · full_step for k = 0, 1, …, max_backtracks − 1 and return the first that
    decreases the loss f by at least ``accept_ratio`` times the predicted decrease and satisfies
    the constraint:

        f(x) − f(x_k) > 0,   (f(x) − f(x_k)) / (0.5^k · expected_improve) >= accept_ratio,
        constraint(x_k) true (TRPO: the true mean KL at x_k is <= δ).

    Args:
        f: maps parameters ``(P,)`` to a scalar loss to minimise (TRPO: minus the surrogate).
        x: ``(P,)`` current parameters.
        full_step: ``(P,)`` the step β s.
        expected_improve: > 0, the first-order predicted decrease of f for the full step,
            −∇f(x)ᵀ full_step (TRPO: gᵀ β s).
        accept_ratio: in (0, 1]; the share of the predicted decrease that must be realised.
        max_backtracks: >= 1 step fractions tried.
        constraint: maps a candidate ``(P,)`` to True when it is allowed; None: no constraint.
    """
    x = _check_vector("x", x)
    full_step = _check_vector("full_step", full_step, x.numel())
    expected_improve = check_positive("expected_improve", expected_improve)
    if isinstance(accept_ratio, bool) or not isinstance(accept_ratio, numbers.Real) \
            or not 0 < accept_ratio <= 1:
        raise ValueError(f"accept_ratio must be a number in (0, 1], got {accept_ratio!r}")
    max_backtracks = check_int("max_backtracks", max_backtracks, minimum=1)
    with torch.no_grad():
        f0 = float(f(x))
        for k in range(max_backtracks):
            fraction = 0.5 ** k
            x_new = x + fraction * full_step
            improve = f0 - float(f(x_new))
            if improve > 0 and improve / (fraction * expected_improve) >= accept_ratio \
                    and (constraint is None or bool(constraint(x_new))):
                return LineSearchResult(x_new, True, fraction, k)
    return LineSearchResult(x, False, 0.0, max_backtracks)
