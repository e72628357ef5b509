"""Discrete optimal transport: the exact linear program and log-domain Sinkhorn.

For probability vectors a (n,), b (m,) and a cost matrix C (n, m), Kantorovich's problem is the
linear program

    OT(a, b) = min_{P ∈ U(a, b)} ⟨P, C⟩,   U(a, b) = {P ≥ 0 : P 1_m = a, Pᵀ 1_n = b},

solved exactly by :func:`emd` (scipy's HiGHS). Adding an entropy term gives the entropic problem

    min_{P ∈ U(a, b)} ⟨P, C⟩ − ε H(P),   H(P) = −Σ_ij P_ij (log P_ij − 1),

whose dual is max_{f, g} ⟨f, a⟩ + ⟨g, b⟩ − ε Σ_ij exp((f_i + g_j − C_ij)/ε) and whose solution is
P_ij = exp((f_i + g_j − C_ij)/ε). Maximising the dual in f, then in g, alternately is Sinkhorn's
matrix scaling, written here with log-sum-exp so that nothing underflows when ε ≪ C:

    f_i ← ε log a_i − ε logsumexp_j ((g_j − C_ij)/ε)
    g_j ← ε log b_j − ε logsumexp_i ((f_i − C_ij)/ε).

After each g-update the columns of P match b exactly, so the marginal error
‖P 1 − a‖₁ + ‖Pᵀ 1 − b‖₁ (the stopping rule) is, up to rounding, the row error alone.
The entropic cost ⟨P_ε, C⟩ exceeds OT(a, b) by at most ε · min(H(a), H(b)).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import scipy.optimize
import scipy.sparse
import torch

from utils.validation import check_int, check_positive

__all__ = ["SinkhornPotentials", "SinkhornResult", "emd", "entropic_plan", "sinkhorn",
           "sinkhorn_potentials"]


class SinkhornResult(NamedTuple):
    """What :func:`sinkhorn` returns (leading batch dims ``...`` as in its inputs).

    plan: (..., n, m) the entropic plan P_ε; cost: (...) ⟨P_ε, C⟩; converged: True when every
    problem in the batch reached ``marginal_error <= tol``; n_iter: the (f, g) updates done;
    marginal_error: (...) ‖P 1 − a‖₁ + ‖Pᵀ 1 − b‖₁ at the end.
    """

    plan: torch.Tensor
    cost: torch.Tensor
    converged: bool
    n_iter: int
    marginal_error: torch.Tensor


class SinkhornPotentials(NamedTuple):
    """What :func:`sinkhorn_potentials` returns: the dual potentials f (..., n) and g (..., m)
    with P = exp((f ⊕ g − C)/ε), and the same convergence report as :class:`SinkhornResult`."""

    f: torch.Tensor
    g: torch.Tensor
    converged: bool
    n_iter: int
    marginal_error: torch.Tensor


def _sum_tol(dtypes: tuple[torch.dtype, ...], n: int) -> float:
    """Rounding allowance for a sum of n probabilities, set by the least precise input."""
    low = any(d in (torch.float32, torch.float16, torch.bfloat16) for d in dtypes)
    return (1e-5 if low else 1e-10) * max(n, 10)


def _check_problem(a, b, C) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate a (..., n), b (..., m), C (..., n, m); return them in C's dtype and device."""
    C = torch.as_tensor(C)
    if C.ndim < 2 or not C.dtype.is_floating_point or C.shape[-1] < 1 or C.shape[-2] < 1:
        raise ValueError(f"C must be a float tensor of shape (..., n, m), got shape "
                         f"{tuple(C.shape)} and dtype {C.dtype}")
    if not bool(torch.isfinite(C).all()):
        raise ValueError("C must be finite")
    n, m = C.shape[-2:]
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    dtypes = (a.dtype, b.dtype, C.dtype)
    a, b = a.to(device=C.device, dtype=C.dtype), b.to(device=C.device, dtype=C.dtype)
    if a.ndim < 1 or b.ndim < 1 or a.shape[-1] != n or b.shape[-1] != m:
        raise ValueError(f"C of shape (..., n, m) needs a of shape (..., n) and b of shape "
                         f"(..., m); got a {tuple(a.shape)}, b {tuple(b.shape)}, "
                         f"C {tuple(C.shape)}")
    try:
        torch.broadcast_shapes(a.shape[:-1], b.shape[:-1], C.shape[:-2])
    except RuntimeError:
        raise ValueError(f"the batch dimensions of a {tuple(a.shape)}, b {tuple(b.shape)} and C "
                         f"{tuple(C.shape)} do not broadcast") from None
    for name, p in (("a", a), ("b", b)):
        if not bool(torch.isfinite(p).all()) or bool((p < 0).any()):
            raise ValueError(f"{name} must be a probability vector with finite, non-negative "
                             f"entries; minimum {float(p.min())}")
    mass_a, mass_b = a.sum(-1), b.sum(-1)
    gap = float((mass_a - mass_b).abs().max())
    if gap > _sum_tol(dtypes, max(n, m)):
        raise ValueError(f"a and b must have the same total mass; got {float(mass_a.max()):.6g} "
                         f"and {float(mass_b.max()):.6g} (differ by {gap:.3g})")
    err = float((mass_a - 1).abs().max())
    if err > _sum_tol(dtypes, n):
        raise ValueError(f"a and b must sum to one along the last dimension; off by {err:.3g}")
    return a, b, C


def emd(a: torch.Tensor, b: torch.Tensor, C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact discrete optimal transport (the "earth mover's distance") by linear programming.

    Solves min_P ⟨P, C⟩ subject to P ≥ 0, P 1 = a, Pᵀ 1 = b with ``scipy.optimize.linprog``
    (HiGHS), the n·m unknowns P_ij flattened row-major.

    Args:
        a: (n,) and b: (m,) probability vectors; C: (n, m) costs.
    Returns:
        plan (n, m) an optimal P (a vertex: at most n + m − 1 non-zeros) and cost (), ⟨P, C⟩, in
        C's dtype and device. The cost is differentiable in C with gradient P (by the envelope
        theorem, wherever the optimal plan is unique); the plan itself carries no gradient.
    """
    a, b, C = _check_problem(a, b, C)
    if a.ndim != 1 or b.ndim != 1 or C.ndim != 2:
        raise ValueError(f"emd solves one problem: a (n,), b (m,), C (n, m); got a "
                         f"{tuple(a.shape)}, b {tuple(b.shape)}, C {tuple(C.shape)}")
    n, m = C.shape
    a_np = a.detach().cpu().double().numpy()
    b_np = b.detach().cpu().double().numpy()
    b_np = b_np * (a_np.sum() / b_np.sum())  # equal mass to the last bit, so the LP is feasible
    c_np = C.detach().cpu().double().numpy().reshape(-1)
    # Row sums: row i of A_eq has ones at columns i*m … i*m + m − 1; column sums: ones at j, j+m, ….
    rows = scipy.sparse.kron(scipy.sparse.eye(n), np.ones((1, m)))
    cols = scipy.sparse.kron(np.ones((1, n)), scipy.sparse.eye(m))
    # One constraint is implied by the others (both sides sum to the same mass): drop the last.
    A_eq = scipy.sparse.vstack([rows, cols.tocsr()[:-1]]).tocsr()
    b_eq = np.concatenate([a_np, b_np[:-1]])
    res = scipy.optimize.linprog(c_np, A_eq=A_eq, b_eq=b_eq, bounds=(0, None), method="highs")
    if res.status != 0:
        raise RuntimeError(f"the transport linear program failed: {res.message}")
    plan = torch.as_tensor(np.maximum(res.x, 0.0).reshape(n, m), dtype=C.dtype, device=C.device)
    return plan, (plan * C).sum()


def entropic_plan(f: torch.Tensor, g: torch.Tensor, C: torch.Tensor, eps: float) -> torch.Tensor:
    """P_ij = exp((f_i + g_j − C_ij)/ε): f (..., n), g (..., m), C (..., n, m) → (..., n, m)."""
    return torch.exp((f[..., :, None] + g[..., None, :] - C) / eps)


def sinkhorn_potentials(a: torch.Tensor, b: torch.Tensor, C: torch.Tensor, eps: float, *,
                        max_iter: int = 1_000, tol: float = 1e-6, check_every: int = 10,
                        init: tuple[torch.Tensor, torch.Tensor] | None = None
                        ) -> SinkhornPotentials:
    """The log-domain Sinkhorn iterations (module docstring) for the dual potentials f, g.

    Args:
        a: (..., n), b: (..., m) probability vectors; C: (..., n, m) costs; leading dims
            broadcast. eps > 0: the entropic regularisation, in the units of C.
        max_iter: most (f, g) updates; tol ≥ 0: stop once every problem's marginal error
            ‖P 1 − a‖₁ + ‖Pᵀ 1 − b‖₁ is at most tol, checked every ``check_every`` updates and
            after the last one. init: a warm start (f, g) (e.g. from a larger eps), else zeros.
    Returns:
        :class:`SinkhornPotentials` with f (..., n), g (..., m), differentiable in C, a, b (the
        iterations are unrolled for autograd).
    """
    a, b, C = _check_problem(a, b, C)
    eps = check_positive("eps", eps)
    max_iter = check_int("max_iter", max_iter, minimum=1)
    check_every = check_int("check_every", check_every, minimum=1)
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol >= 0:
        raise ValueError(f"tol must be a non-negative number, got {tol!r}")
    batch = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1], C.shape[:-2])
    n, m = C.shape[-2:]
    C = C.expand(*batch, n, m)
    a, b = a.expand(*batch, n), b.expand(*batch, m)
    log_a, log_b = torch.log(a), torch.log(b)  # -inf where a point has no mass: its row is 0
    if init is None:
        f = torch.zeros(*batch, n, dtype=C.dtype, device=C.device)
        g = torch.zeros(*batch, m, dtype=C.dtype, device=C.device)
    else:
        f, g = (torch.as_tensor(t, dtype=C.dtype, device=C.device) for t in init)
        if f.shape[-1] != n or g.shape[-1] != m:
            raise ValueError(f"init must be (f (..., {n}), g (..., {m})), got shapes "
                             f"{tuple(f.shape)} and {tuple(g.shape)}")
        f, g = f.expand(*batch, n), g.expand(*batch, m)
    # Iterate on f/ε, g/ε and C/ε (one division of C instead of one per update).
    C_eps, f, g = C / eps, f / eps, g / eps
    err = torch.full(batch, math.inf, dtype=C.dtype, device=C.device)
    it = 0
    for it in range(1, max_iter + 1):
        # f_i ← ε log a_i − ε logsumexp_j ((g_j − C_ij)/ε)
        f = log_a - torch.logsumexp(g[..., None, :] - C_eps, dim=-1)
        # g_j ← ε log b_j − ε logsumexp_i ((f_i − C_ij)/ε)
        g = log_b - torch.logsumexp(f[..., :, None] - C_eps, dim=-2)
        if it % check_every == 0 or it == max_iter:
            with torch.no_grad():
                P = torch.exp(f[..., :, None] + g[..., None, :] - C_eps)
                err = (P.sum(-1) - a).abs().sum(-1) + (P.sum(-2) - b).abs().sum(-1)
            if bool((err <= tol).all()):
                break
    converged = bool(torch.isfinite(err).all() and (err <= tol).all())
    return SinkhornPotentials(eps * f, eps * g, converged, it, err)


def sinkhorn(a: torch.Tensor, b: torch.Tensor, C: torch.Tensor, eps: float, *,
             max_iter: int = 1_000, tol: float = 1e-6, check_every: int = 10,
             init: tuple[torch.Tensor, torch.Tensor] | None = None) -> SinkhornResult:
    """Entropic optimal transport by log-domain Sinkhorn, batched over leading dims.

    Runs :func:`sinkhorn_potentials` (same arguments) and returns the plan
    P = exp((f ⊕ g − C)/ε) (..., n, m) and its transport cost ⟨P, C⟩ (...) (without the entropy
    term), with ``converged``, ``n_iter`` and the marginal error ‖P 1 − a‖₁ + ‖Pᵀ 1 − b‖₁.
    Stable for eps down to 1e-3 of the cost scale (then it needs many iterations: raise
    ``max_iter`` or warm-start from a larger eps with ``init``).
    """
    pot = sinkhorn_potentials(a, b, C, eps, max_iter=max_iter, tol=tol, check_every=check_every,
                              init=init)
    C = torch.as_tensor(C)
    plan = entropic_plan(pot.f, pot.g, C, float(eps))
    return SinkhornResult(plan, (plan * C).sum((-2, -1)), pot.converged, pot.n_iter,
                          pot.marginal_error)
