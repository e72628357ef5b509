"""Policy-gradient losses: REINFORCE with a baseline, PPO's clipped surrogate, its value loss and
entropy bonus, and the approximate KL estimators PPO logs (02_policy_gradients_and_trpo, 03_ppo,
04_rlhf). Each is a loss to minimise; the PPO total is

    L = L_clip + c_v L_V − c_H H.

REINFORCE (Williams 1992). ∇_θ E[G] = E[∇_θ log π_θ(a|s) (G − b)] for any baseline b that does
not depend on a, so the surrogate loss is

    L_PG = −E[log π_θ(a|s) (G − b)],      b detached (a baseline must carry no gradient).

PPO (Schulman et al. 2017). With the probability ratio ρ = π_θ(a|s) / π_old(a|s) =
exp(log_ratio) and an advantage A,

    L_clip = −E[min(ρ A, clip(ρ, 1 − ε, 1 + ε) A)].

Where the clip is active (ρ > 1 + ε with A > 0, or ρ < 1 − ε with A < 0) the min picks the
constant clipped term and that sample's gradient is exactly zero: the update gains nothing by
moving ρ further. The clip fraction logged is the share of samples with |ρ − 1| > ε.

Value loss: ½ E[(V − R)²], or PPO2's / CleanRL's clipped form around the rollout's values V_old,
½ E[max((V − R)², (V_old + clip(V − V_old, −ε, ε) − R)²)].

Approximate KL (Schulman, "Approximating KL divergence", 2020). For a ~ π_old and
log ρ = log π_θ(a) − log π_old(a), KL(π_old ‖ π_θ) = E[−log ρ], so

    k1 = −log ρ               unbiased, but negative for some draws (so its mean can be < 0),
    k2 = ½ (log ρ)²           ≥ 0, biased (low bias when the policies are close),
    k3 = (ρ − 1) − log ρ      ≥ 0 (since log x ≤ x − 1) and unbiased (E[ρ] = 1).

Shapes: every per-sample input is any shape (e.g. (B,) or (T, N)), all of the same shape; logits
``(..., K)``. Losses are means over all samples.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import torch

from utils.validation import check_choice, check_positive, shape_of

__all__ = [
    "PPOClip", "approx_kl", "entropy_bonus", "kl_k1", "kl_k2", "kl_k3", "ppo_clip_loss",
    "reinforce_loss", "value_loss",
]


def _check_same(**tensors: object) -> list[torch.Tensor]:
    """All float tensors of one shape (the first's); else a ``ValueError`` naming the odd one."""
    names = list(tensors)
    first = tensors[names[0]]
    for name, x in tensors.items():
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise ValueError(f"{name} must be a float tensor, got {shape_of(x)}"
                             + (f" of dtype {x.dtype}" if isinstance(x, torch.Tensor) else ""))
        if x.shape != first.shape:
            raise ValueError(f"{name} must have the shape of {names[0]} {tuple(first.shape)}, "
                             f"got {tuple(x.shape)}")
    if first.numel() == 0:
        raise ValueError(f"{names[0]} must hold at least one sample, got shape "
                         f"{tuple(first.shape)}")
    return list(tensors.values())


def reinforce_loss(log_prob: torch.Tensor, returns: torch.Tensor,
                   baseline: torch.Tensor | float | None = None) -> torch.Tensor:
    """L_PG = −mean(log π(a|s) · (G − b)), with G and b detached.

    Args:
        log_prob: log π_θ(a_i|s_i), any shape (carries the gradient).
        returns: G_i, the same shape (detached here: a target, not a path for gradients).
        baseline: b_i of the same shape, a Python number, or None (0); detached here, so a
            learned baseline is trained by its own loss (e.g. :func:`value_loss`).

    Returns:
        A scalar whose gradient is the REINFORCE estimate −mean(∇ log π (G − b)).
    """
    log_prob, returns = _check_same(log_prob=log_prob, returns=returns)
    adv = returns.detach()
    if baseline is not None:
        if isinstance(baseline, torch.Tensor):
            baseline = _check_same(log_prob=log_prob, baseline=baseline)[1].detach()
        elif isinstance(baseline, bool) or not isinstance(baseline, numbers.Real) \
                or not math.isfinite(baseline):
            raise ValueError(f"baseline must be a tensor of log_prob's shape, a finite number or "
                             f"None, got {baseline!r}")
        adv = adv - baseline
    return -(log_prob * adv).mean()


class PPOClip(NamedTuple):
    """``loss``: L_clip (scalar, to minimise); ``clip_fraction``: the share of samples with
    |ρ − 1| > ε (scalar, detached)."""

    loss: torch.Tensor
    clip_fraction: torch.Tensor


def ppo_clip_loss(log_prob: torch.Tensor, old_log_prob: torch.Tensor, adv: torch.Tensor,
                  eps: float = 0.2) -> PPOClip:
    """L_clip = −mean(min(ρ A, clip(ρ, 1 − ε, 1 + ε) A)), ρ = exp(log_prob − old_log_prob).

    Args:
        log_prob: log π_θ(a|s) under the policy being updated, any shape.
        old_log_prob: log π_old(a|s) recorded in the rollout, same shape (detached here).
        adv: advantages A, same shape (detached here; normalise them before if wanted).
        eps: clip range ε > 0 (PPO's 0.2).

    Returns:
        ``PPOClip(loss, clip_fraction)``.
    """
    eps = check_positive("eps", eps)
    log_prob, old_log_prob, adv = _check_same(log_prob=log_prob, old_log_prob=old_log_prob,
                                              adv=adv)
    rho = torch.exp(log_prob - old_log_prob.detach())
    adv = adv.detach()
    surrogate = torch.minimum(rho * adv, rho.clamp(1 - eps, 1 + eps) * adv)
    clip_fraction = ((rho.detach() - 1).abs() > eps).to(rho.dtype).mean()
    return PPOClip(-surrogate.mean(), clip_fraction)


def value_loss(values: torch.Tensor, returns: torch.Tensor,
               old_values: torch.Tensor | None = None, clip_eps: float | None = None
               ) -> torch.Tensor:
    """½ mean((V − R)²); with ``old_values`` and ``clip_eps``, PPO2's clipped form
    ½ mean(max((V − R)², (V_old + clip(V − V_old, −ε, ε) − R)²)).

    Args:
        values: V_θ(s), any shape (carries the gradient).
        returns: value targets R (e.g. ``gae(...).returns``), same shape (detached here).
        old_values: V_old(s) from the rollout, same shape; needed with ``clip_eps`` only.
        clip_eps: ε > 0 for the clipped loss, or None (unclipped).
    """
    values, returns = _check_same(values=values, returns=returns)
    returns = returns.detach()
    sq = (values - returns).pow(2)
    if clip_eps is None:
        return 0.5 * sq.mean()
    clip_eps = check_positive("clip_eps", clip_eps)
    if old_values is None:
        raise ValueError("value_loss with clip_eps needs old_values (the rollout's V_old), "
                         "got None")
    (_, old_values) = _check_same(values=values, old_values=old_values)
    old_values = old_values.detach()
    v_clip = old_values + (values - old_values).clamp(-clip_eps, clip_eps)
    return 0.5 * torch.maximum(sq, (v_clip - returns).pow(2)).mean()


def entropy_bonus(logits: torch.Tensor) -> torch.Tensor:
    """H = mean over rows of −Σ_k π_k log π_k, π = softmax(logits), for logits ``(..., K)``.

    The bonus enters the loss as −c_H H (maximising entropy keeps exploring); −inf logits
    (masked actions) contribute 0.
    """
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point() \
            or logits.ndim < 1 or logits.shape[-1] < 1 or logits.numel() == 0:
        raise ValueError(f"logits must be a float tensor (..., K) with K >= 1, got "
                         f"{shape_of(logits)}")
    return torch.distributions.Categorical(logits=logits).entropy().mean()


def kl_k1(log_ratio: torch.Tensor) -> torch.Tensor:
    """k1 = −log ρ per sample (log_ratio = log π_θ(a) − log π_old(a), a ~ π_old): unbiased
    for KL(π_old ‖ π_θ) and negative wherever π_θ(a) > π_old(a)."""
    (log_ratio,) = _check_same(log_ratio=log_ratio)
    return -log_ratio


def kl_k2(log_ratio: torch.Tensor) -> torch.Tensor:
    """k2 = ½ (log ρ)² per sample: ≥ 0, biased for KL(π_old ‖ π_θ) (exact to second order)."""
    (log_ratio,) = _check_same(log_ratio=log_ratio)
    return 0.5 * log_ratio.pow(2)


def kl_k3(log_ratio: torch.Tensor) -> torch.Tensor:
    """k3 = (ρ − 1) − log ρ per sample, ρ = exp(log_ratio): ≥ 0 and unbiased for
    KL(π_old ‖ π_θ). Computed as expm1(x) − x, and for |x| < 1e-3 (where that difference
    cancels) by its series x² (1/2 + x/6 + x²/24 + x³/120), relative error below 1e-14."""
    (x,) = _check_same(log_ratio=log_ratio)
    series = x.pow(2) * (0.5 + x * (1 / 6 + x * (1 / 24 + x / 120)))
    return torch.where(x.abs() < 1e-3, series, torch.expm1(x) - x)


_ESTIMATORS = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}


def approx_kl(log_ratio: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """The mean of ``estimator`` ("k1", "k2" or "k3") over samples a ~ π_old: an estimate of
    KL(π_old ‖ π_θ) from log_ratio = log π_θ(a) − log π_old(a) (any shape) → scalar."""
    check_choice("estimator", estimator, tuple(_ESTIMATORS))
    return _ESTIMATORS[estimator](log_ratio).mean()
