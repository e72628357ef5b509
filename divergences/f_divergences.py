"""f-divergences of discrete distributions, their generators and convex conjugates, and the
Fenchel (f-GAN) lower bound.

For a convex f: (0, ∞) → ℝ with f(1) = 0 and distributions p, q on the same K outcomes,

    D_f(p ‖ q) = Σ_x q(x) f(p(x) / q(x))                       ≥ f(Σ_x p(x)) = f(1) = 0

by Jensen. Conventions: 0 · f(0/0) = 0, and where q(x) = 0 < p(x) the term is
p(x) · lim_{u→∞} f(u)/u (infinite for KL and Pearson, finite for JS, TV, Hellinger).

The convex conjugate f*(t) = sup_u {u t − f(u)} gives f(u) ≥ u t − f*(t) for every t (the
Fenchel–Young inequality), hence for any critic T,

    D_f(p ‖ q) ≥ E_p[T(x)] − E_q[f*(T(x))],

with equality at T*(x) = f'(p(x)/q(x)) (Nguyen, Wainwright & Jordan 2010; Nowozin et al. 2016).
Probabilities lie along the LAST dimension, batched over leading ones; natural log.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from utils.validation import check_probabilities

__all__ = ["GENERATORS", "FDivergence", "f_divergence", "get_generator", "js", "kl", "tv",
           "variational_bound"]

_LOG2 = math.log(2.0)


@dataclass(frozen=True)
class FDivergence:
    """One member of the f-divergence family (all functions elementwise on tensors).

    Attributes:
        name: its key in :data:`GENERATORS`.
        f: the convex generator u ↦ f(u) on u ≥ 0, f(1) = 0.
        conjugate: t ↦ f*(t) = sup_u {u t − f(u)}; +inf outside dom f*.
        activation: v ↦ g_f(v), maps a real critic output into dom f* (Nowozin et al. 2016,
            Table 2).
        slope_at_infinity: lim_{u→∞} f(u)/u, the cost per unit of p-mass where q = 0.
    """

    name: str
    f: Callable[[torch.Tensor], torch.Tensor]
    conjugate: Callable[[torch.Tensor], torch.Tensor]
    activation: Callable[[torch.Tensor], torch.Tensor]
    slope_at_infinity: float


def _inf_where(mask: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    return torch.where(mask, torch.full_like(value, math.inf), value)


# KL: f(u) = u log u, f*(t) = exp(t − 1), dom f* = ℝ, g(v) = v.
def _kl_f(u):
    return torch.special.xlogy(u, u)


def _kl_conj(t):
    return torch.exp(t - 1)


# Reverse KL: f(u) = −log u, f*(t) = −1 − log(−t) for t < 0, g(v) = −exp(−v).
def _rkl_f(u):
    return -torch.log(u)


def _rkl_conj(t):
    neg = t < 0
    return _inf_where(~neg, -1 - torch.log(torch.where(neg, -t, torch.ones_like(t))))


def _rkl_act(v):
    return -torch.exp(-v)


# Jensen-Shannon (the 1/2-normalised one, so D_f = JS ∈ [0, log 2]):
# f(u) = ½[u log u − (u+1) log((u+1)/2)], f*(t) = −½ log(2 − exp(2t)) for t < ½ log 2,
# g(v) = ½(log 2 − softplus(−v)).
def _js_f(u):
    return 0.5 * (torch.special.xlogy(u, u) - torch.special.xlogy(u + 1, (u + 1) / 2))


def _js_conj(t):
    ok = t < 0.5 * _LOG2
    ts = torch.where(ok, t, torch.zeros_like(t))
    return _inf_where(~ok, -0.5 * torch.log(-torch.expm1(2 * ts) + 1))


def _js_act(v):
    return 0.5 * (_LOG2 - F.softplus(-v))


# Total variation: f(u) = ½|u − 1|, f*(t) = t on |t| ≤ ½, g(v) = ½ tanh(v).
def _tv_f(u):
    return 0.5 * (u - 1).abs()


def _tv_conj(t):
    return _inf_where(t.abs() > 0.5, t)


def _tv_act(v):
    return 0.5 * torch.tanh(v)


# Pearson χ²: f(u) = (u − 1)², f*(t) = t²/4 + t, dom ℝ, g(v) = v.
def _pearson_f(u):
    return (u - 1) ** 2


def _pearson_conj(t):
    return 0.25 * t * t + t


# Squared Hellinger: f(u) = (√u − 1)², f*(t) = t/(1 − t) for t < 1, g(v) = 1 − exp(−v).
def _hellinger_f(u):
    return (torch.sqrt(u) - 1) ** 2


def _hellinger_conj(t):
    ok = t < 1
    ts = torch.where(ok, t, torch.zeros_like(t))
    return _inf_where(~ok, ts / (1 - ts))


def _hellinger_act(v):
    return -torch.expm1(-v)


def _identity(v):
    return v


GENERATORS: dict[str, FDivergence] = {
    "kl": FDivergence("kl", _kl_f, _kl_conj, _identity, math.inf),
    "reverse_kl": FDivergence("reverse_kl", _rkl_f, _rkl_conj, _rkl_act, 0.0),
    "js": FDivergence("js", _js_f, _js_conj, _js_act, 0.5 * _LOG2),
    "tv": FDivergence("tv", _tv_f, _tv_conj, _tv_act, 0.5),
    "pearson": FDivergence("pearson", _pearson_f, _pearson_conj, _identity, math.inf),
    "hellinger": FDivergence("hellinger", _hellinger_f, _hellinger_conj, _hellinger_act, 1.0),
}


def get_generator(name: str | FDivergence) -> FDivergence:
    """The :class:`FDivergence` called ``name`` (one of :data:`GENERATORS`); an ``FDivergence``
    passes through."""
    if isinstance(name, FDivergence):
        return name
    if not isinstance(name, str) or name not in GENERATORS:
        raise ValueError(f"unknown f-divergence {name!r}; known generators: {tuple(GENERATORS)}")
    return GENERATORS[name]


def _check_pair(p: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate two probability tensors of the same shape (see ``check_probabilities``)."""
    check_probabilities("p", p)
    check_probabilities("q", q)
    if p.shape != q.shape:
        raise ValueError(f"p and q must have the same shape, got {tuple(p.shape)} and "
                         f"{tuple(q.shape)}")
    return p, q


def kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) = Σ_x p(x) log(p(x)/q(x)): ``(..., K)``, ``(..., K)`` → ``(...)``.

    0 log(0/q) = 0; +inf where q(x) = 0 < p(x).
    """
    p, q = _check_pair(p, q)
    return (torch.special.xlogy(p, p) - torch.special.xlogy(p, q)).sum(-1)


def js(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """JS(p, q) = ½ KL(p ‖ m) + ½ KL(q ‖ m), m = (p + q)/2: ``(..., K)`` × 2 → ``(...)``.

    Symmetric, in [0, log 2]; log 2 exactly when p and q have disjoint supports. (scipy's
    ``jensenshannon`` returns √JS.)
    """
    p, q = _check_pair(p, q)
    m = 0.5 * (p + q)
    out = 0.5 * (torch.special.xlogy(p, p) - torch.special.xlogy(p, m)
                 + torch.special.xlogy(q, q) - torch.special.xlogy(q, m)).sum(-1)
    return out.clamp(0.0, _LOG2)


def tv(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """TV(p, q) = ½ Σ_x |p(x) − q(x)|: ``(..., K)`` × 2 → ``(...)``, in [0, 1]."""
    p, q = _check_pair(p, q)
    return 0.5 * (p - q).abs().sum(-1)


def f_divergence(p: torch.Tensor, q: torch.Tensor, f: str | FDivergence) -> torch.Tensor:
    """D_f(p ‖ q) = Σ_x q(x) f(p(x)/q(x)): ``(..., K)`` × 2 → ``(...)``.

    Terms with q(x) = 0: 0 if p(x) = 0, else p(x) · lim_{u→∞} f(u)/u (``slope_at_infinity``).
    Equals :func:`kl`, :func:`js`, :func:`tv` for ``"kl"``, ``"js"``, ``"tv"``.
    """
    gen = get_generator(f)
    p, q = _check_pair(p, q)
    pos = q > 0
    q_safe = torch.where(pos, q, torch.ones_like(q))
    u = torch.where(pos, p / q_safe, torch.ones_like(p))
    inner = torch.where(pos, q * gen.f(u), torch.zeros_like(p))  # f(1) = 0 on masked entries
    edge = torch.where(~pos & (p > 0), p * gen.slope_at_infinity, torch.zeros_like(p))
    if gen.slope_at_infinity != math.inf:
        return inner.sum(-1) + edge.sum(-1)
    return inner.sum(-1) + torch.where(edge > 0, torch.full_like(p, math.inf),
                                       torch.zeros_like(p)).sum(-1)


def variational_bound(f: str | FDivergence, t_p: torch.Tensor, t_q: torch.Tensor) -> torch.Tensor:
    """The Fenchel lower bound  E_p[T] − E_q[f*(T)] ≤ D_f(p ‖ q), estimated by sample means.

    Args:
        f: a generator name or :class:`FDivergence`.
        t_p: ``(N,)`` critic outputs T(x) on samples x ~ p, already through ``activation``.
        t_q: ``(M,)`` critic outputs T(x) on samples x ~ q, already through ``activation``.

    Returns:
        A scalar tensor (differentiable in both; −inf if some t_q lies outside dom f*).
    """
    gen = get_generator(f)
    for name, t in (("t_p", t_p), ("t_q", t_q)):
        if not isinstance(t, torch.Tensor) or t.ndim != 1 or t.numel() == 0 \
                or not t.dtype.is_floating_point:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a non-empty 1-D float tensor of critic outputs, "
                             f"got {shape}")
    return t_p.mean() - gen.conjugate(t_q).mean()
