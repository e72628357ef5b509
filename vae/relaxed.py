"""Relaxed categorical latents: the Gumbel-softmax / Concrete distribution (Jang, Gu & Poole 2017;
Maddison, Mnih & Teh 2017), its temperature schedule, and the KL of a categorical posterior to
the uniform prior (06_discrete_vs_continuous).

The Gumbel-max trick: with g_k = −log(−log U_k), U_k ~ U(0, 1) i.i.d.,

    argmax_k (ℓ_k + g_k) ~ Cat(π),   π = softmax(ℓ).

Replacing the argmax by a softmax at temperature τ > 0 gives a point of the simplex,

    y_k = exp((ℓ_k + g_k) / τ) / Σ_j exp((ℓ_j + g_j) / τ),                       (Gumbel-softmax)

a differentiable function of ℓ (the reparameterisation of a discrete latent); as τ → 0, y tends
to the one-hot vector of the Gumbel-max sample, as τ → ∞ to the uniform vector (1/K, …, 1/K).
Its density on the simplex (Maddison et al. 2017, w.r.t. Lebesgue measure on y_1..y_{K−1}) is

    log p_τ(y) = log (K−1)! + (K−1) log τ + Σ_k [log π_k − (τ+1) log y_k]
                 − K log Σ_k π_k y_k^{−τ}.

The straight-through variant (``hard=True``) returns the one-hot vector onehot(argmax y) in the
forward pass and the gradient of the soft y in the backward pass.

Shapes: ``logits`` ``(..., K)``, K categories along the last dimension; samples ``(..., K)``.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F

from utils.validation import check_int, check_positive, shape_of

__all__ = [
    "categorical_kl_uniform", "gumbel_softmax", "relaxed_log_prob", "temperature_schedule",
]


def _check_logits(logits: object, min_ndim: int = 1) -> torch.Tensor:
    if not isinstance(logits, torch.Tensor) or not logits.dtype.is_floating_point \
            or logits.ndim < min_ndim or logits.shape[-1] < 1:
        dtype = f" of dtype {logits.dtype}" if isinstance(logits, torch.Tensor) else ""
        raise ValueError(f"logits must be a float tensor with at least {min_ndim} dimension(s) "
                         f"and K >= 1 categories in the last one, got {shape_of(logits)}{dtype}")
    if not bool(torch.isfinite(logits.detach()).all()):
        raise ValueError("logits must be finite (no NaN or inf)")
    return logits


def _gumbel_noise(shape: torch.Size, like: torch.Tensor,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """g = −log E with E ~ Exp(1) (the same law as −log(−log U)), E clamped away from 0."""
    e = torch.empty(shape, dtype=like.dtype, device=like.device).exponential_(generator=generator)
    return -e.clamp_min(torch.finfo(like.dtype).tiny).log()


def gumbel_softmax(logits: torch.Tensor, tau: float, hard: bool = False,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """A Gumbel-softmax sample y = softmax((ℓ + g) / τ), g standard Gumbel.

    Args:
        logits: ``(..., K)``: unnormalised log-probabilities ℓ (finite), π = softmax(ℓ).
        tau: the temperature τ > 0 (a float or a one-element tensor).
        hard: straight-through: the forward value is exactly onehot(argmax_k y_k) (the
            Gumbel-max sample, distributed as Cat(π)), the gradient is that of the soft y. It is
            written onehot + (y − sg[y]), whose forward value is exactly the one-hot vector.
        generator: a ``torch.Generator`` on ``logits``' device for reproducible noise.

    Returns:
        ``(..., K)`` in ``logits``' dtype and device: a point of the simplex (one-hot if hard).
    """
    logits = _check_logits(logits)
    tau = check_positive("tau", tau)
    y = torch.softmax((logits + _gumbel_noise(logits.shape, logits, generator)) / tau, dim=-1)
    if not hard:
        return y
    one_hot = F.one_hot(y.argmax(-1), logits.shape[-1]).to(y.dtype)
    return one_hot + (y - y.detach())


def temperature_schedule(step: int, tau0: float = 1.0, tau_min: float = 0.5,
                         rate: float = 1e-4, every: int = 1) -> float:
    """Jang et al.'s annealing: τ(t) = max(τ_min, τ0 · exp(−r · t)), t = ``step`` rounded down
    to a multiple of ``every`` (they update τ every N = 500 steps with r ∈ {1e-5, 1e-4}).

    Args:
        step: the training step t ≥ 0.
        tau0: the initial temperature τ0 > 0; tau_min: the floor, 0 < τ_min ≤ τ0.
        rate: r ≥ 0 (0 keeps τ = τ0). every: N ≥ 1.

    Returns:
        τ(t) as a float in [τ_min, τ0].
    """
    step = check_int("step", step, minimum=0)
    every = check_int("every", every, minimum=1)
    tau0, tau_min = check_positive("tau0", tau0), check_positive("tau_min", tau_min)
    if tau_min > tau0:
        raise ValueError(f"tau_min must be <= tau0, got tau_min={tau_min} > tau0={tau0}")
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not math.isfinite(rate) \
            or rate < 0:
        raise ValueError(f"rate must be a finite number >= 0, got {rate!r}")
    t = (step // every) * every
    return max(tau_min, tau0 * math.exp(-rate * t))


def categorical_kl_uniform(logits: torch.Tensor) -> torch.Tensor:
    """KL(Cat(softmax(ℓ)) ‖ Uniform(K)) = Σ_k q_k (log q_k + log K) = log K − H(q), for each
    latent variable, summed over the latent variables.

    Args:
        logits: ``(B, *latent, K)``: B data points, each with ∏ latent categorical variables of
            K categories (e.g. ``(B, N, K)`` for N variables, ``(B, K)`` for one).

    Returns:
        ``(B,)``: the KL of the factorised posterior to the uniform prior, in nats; in
        [0, N log K], 0 exactly for uniform q.
    """
    logits = _check_logits(logits, min_ndim=2)
    log_q = torch.log_softmax(logits, dim=-1)
    kl = (log_q.exp() * (log_q + math.log(logits.shape[-1]))).sum(-1)
    return kl.flatten(1).sum(-1) if kl.ndim > 1 else kl


def relaxed_log_prob(y: torch.Tensor, logits: torch.Tensor, tau: float) -> torch.Tensor:
    """log p_τ(y) of the Concrete distribution (formula in the module docstring).

    Args:
        y: ``(..., K)``: points in the open simplex (positive entries summing to one).
        logits: ``(..., K)``, broadcast against y. tau: τ > 0.

    Returns:
        ``(...)``, the broadcast batch shape: a density (it can be positive).
    """
    logits = _check_logits(logits)
    tau = check_positive("tau", tau)
    if not isinstance(y, torch.Tensor) or not y.dtype.is_floating_point \
            or y.ndim < 1 or y.shape[-1] != logits.shape[-1]:
        raise ValueError(f"y must be a float tensor of shape (..., {logits.shape[-1]}), got "
                         f"{shape_of(y)}")
    tol = 1e-10 if y.dtype == torch.float64 else 1e-5
    if not bool((y > 0).all()) or float((y.sum(-1) - 1).abs().max()) > tol * y.shape[-1]:
        raise ValueError("y must have positive entries summing to one along the last dimension")
    k = logits.shape[-1]
    log_pi, log_y = torch.log_softmax(logits, dim=-1), y.log()
    return (math.lgamma(k) + (k - 1) * math.log(tau) + (log_pi - (tau + 1) * log_y).sum(-1)
            - k * torch.logsumexp(log_pi - tau * log_y, dim=-1))
