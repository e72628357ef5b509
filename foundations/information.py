"""Entropy and cross-entropy of discrete distributions, the quantities behind maximum likelihood.

For p, q on the same K outcomes (probabilities along the last dimension, natural log):

    H(p)    = -Σ_k p_k log p_k                       (0 log 0 = 0)
    H(p, q) = -Σ_k p_k log q_k  = H(p) + KL(p ‖ q)

The second line is why maximising the average log-likelihood of data with empirical distribution p̂
is minimising KL(p̂ ‖ q_θ): H(p̂) does not depend on θ.
"""

from __future__ import annotations

import torch

from utils.validation import check_int, check_probabilities

__all__ = ["cross_entropy", "empirical_distribution", "entropy"]


def entropy(p: torch.Tensor) -> torch.Tensor:
    """H(p) = -Σ_k p_k log p_k in nats, with 0 log 0 = 0: ``(..., K)`` → ``(...)``."""
    p = check_probabilities("p", p)
    return -torch.special.xlogy(p, p).sum(-1)


def cross_entropy(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """H(p, q) = -Σ_k p_k log q_k in nats: ``(..., K)``, ``(..., K)`` → ``(...)``.

    Infinite where q puts zero mass on an outcome p can produce; a zero p_k contributes 0.
    """
    p, q = check_probabilities("p", p), check_probabilities("q", q)
    if p.shape[-1] != q.shape[-1]:
        raise ValueError(f"p and q must have the same number of outcomes, got {p.shape[-1]} "
                         f"and {q.shape[-1]}")
    return -torch.special.xlogy(p, q).sum(-1)


def empirical_distribution(samples: torch.Tensor, k: int) -> torch.Tensor:
    """p̂_k = (1/N) #{i : samples_i = k} for integer ``samples: (N,)`` in {0, …, k-1} → ``(k,)``,
    in float64."""
    samples = torch.as_tensor(samples)
    if samples.ndim != 1 or samples.numel() == 0 or samples.dtype.is_floating_point:
        raise ValueError(f"samples must be a non-empty 1-D integer tensor, got shape "
                         f"{tuple(samples.shape)} and dtype {samples.dtype}")
    k = check_int("k", k, minimum=1)
    if bool(torch.any((samples < 0) | (samples >= k))):
        raise ValueError(f"samples must lie in {{0, …, {k - 1}}}, got range "
                         f"[{int(samples.min())}, {int(samples.max())}]")
    return torch.bincount(samples, minlength=k).double() / samples.numel()
