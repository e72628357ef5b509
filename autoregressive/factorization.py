"""The autoregressive factorisation: the chain rule of probability; likelihoods in nats and bits.

Any distribution over sequences x = (x_1, ..., x_T) factorises, with no assumption at all, as

    p(x) = Π_{t=1}^T p(x_t | x_<t),        log p(x) = Σ_t log p(x_t | x_<t),            (1)

because p(x_≤t) = p(x_<t) · p(x_t | x_<t) by the definition of a conditional. An autoregressive
model parameterises the T conditionals; a sequence model's logits ℓ_t (B, T, V) give them as
p(x_t = v | x_<t) = softmax(ℓ_t)[v], so the exact log-likelihood of a sequence is

    log p(x) = Σ_t log softmax(ℓ_t)[x_t]                                    (sequence_log_prob)

and its negative, averaged over tokens, is the cross-entropy every language model is trained on.
A code length in bits is one in nats divided by ln 2 (log₂ p = ln p / ln 2), so a mean negative
log-likelihood of L nats per token is L / ln 2 bits per token (bits per character for text).

On an explicit joint table p(x_1, ..., x_T), ``joint`` of shape (V_1, ..., V_T), the conditionals
are ratios of marginals,

    p(x_t | x_<t) = p(x_≤t) / p(x_<t),      p(x_≤t) = Σ_{x_t+1, ..., x_T} p(x),          (2)

(:func:`chain_rule_conditionals`), and multiplying them back gives the joint exactly
(:func:`joint_from_conditionals`): (1) checked entry by entry.

Shapes: logits ``(B, T, V)``; targets ``(B, T)`` int64 in 0..V−1; log-probabilities ``(B,)`` in
nats; the t-th conditional table (t = 1..T) has shape ``(V_1, ..., V_t)``, its last axis the
distribution of x_t given the preceding indices.
"""

from __future__ import annotations

import math
import numbers

import torch

from utils.validation import shape_of

__all__ = [
    "LN2",
    "bits_per_token",
    "chain_rule_conditionals",
    "joint_from_conditionals",
    "nats_to_bits",
    "sequence_log_prob",
]

LN2 = math.log(2.0)


def sequence_log_prob(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(x_b) = Σ_t log softmax(logits[b, t])[targets[b, t]], the chain rule (1) in nats.

    Args:
        logits: ``(B, T, V)`` float; ``logits[:, t]`` are the logits of the distribution of
            ``targets[:, t]`` given what came before it (for a language model fed ``x``, the
            targets are ``x`` shifted by one: ``y[:, t] = x[:, t + 1]``).
        targets: ``(B, T)`` int64 in 0..V−1.

    Returns:
        ``(B,)``: the exact log-probability of each sequence (≤ 0), in the logits' dtype.
    """
    if not isinstance(logits, torch.Tensor) or not logits.dtype.is_floating_point \
            or logits.ndim != 3 or logits.shape[-1] < 1:
        dtype = f" of dtype {logits.dtype}" if isinstance(logits, torch.Tensor) else ""
        raise ValueError(f"logits must be a float tensor (B, T, V), got {shape_of(logits)}{dtype}")
    if not isinstance(targets, torch.Tensor) or targets.dtype != torch.int64 \
            or tuple(targets.shape) != tuple(logits.shape[:2]):
        dtype = f" of dtype {targets.dtype}" if isinstance(targets, torch.Tensor) else ""
        raise ValueError(f"targets must be int64 of shape {tuple(logits.shape[:2])} (B, T), got "
                         f"{shape_of(targets)}{dtype}")
    vocab = logits.shape[-1]
    if targets.numel() and (targets.min() < 0 or targets.max() >= vocab):
        raise ValueError(f"targets must lie in 0..{vocab - 1} (V = {vocab}), got values in "
                         f"{targets.min().item()}..{targets.max().item()}")
    log_p = torch.log_softmax(logits, dim=-1)                               # (B, T, V)
    return log_p.gather(-1, targets.unsqueeze(-1)).squeeze(-1).sum(-1)      # (B,)


def nats_to_bits(x: float | torch.Tensor) -> float | torch.Tensor:
    """x / ln 2: a log-probability or code length in nats, in bits (a float or a tensor)."""
    if isinstance(x, torch.Tensor):
        if not x.dtype.is_floating_point:
            raise ValueError(f"x must be a float tensor, got dtype {x.dtype}")
        return x / LN2
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise ValueError(f"x must be a real number or a float tensor, got {type(x).__name__}")
    return float(x) / LN2


def bits_per_token(mean_nll_nats: float | torch.Tensor) -> float:
    """A mean negative log-likelihood in nats per token as bits per token (per character for a
    character model): L / ln 2. The input must be a finite number ≥ 0 (a discrete model's
    −log p is never negative)."""
    if isinstance(mean_nll_nats, torch.Tensor):
        if mean_nll_nats.numel() != 1:
            raise ValueError(f"mean_nll_nats must be one number, got a tensor of shape "
                             f"{tuple(mean_nll_nats.shape)}")
        mean_nll_nats = mean_nll_nats.item()
    if isinstance(mean_nll_nats, bool) or not isinstance(mean_nll_nats, numbers.Real) \
            or not math.isfinite(mean_nll_nats) or mean_nll_nats < 0:
        raise ValueError(f"mean_nll_nats must be a finite number >= 0 (nats per token), got "
                         f"{mean_nll_nats!r}")
    return float(mean_nll_nats) / LN2


def _check_joint(joint: object) -> torch.Tensor:
    if not isinstance(joint, torch.Tensor) or not joint.dtype.is_floating_point \
            or joint.ndim < 1 or joint.numel() == 0:
        raise ValueError(f"joint must be a non-empty float tensor (V_1, ..., V_T), got "
                         f"{shape_of(joint)}")
    if bool(torch.isnan(joint).any()) or bool((joint < 0).any()):
        raise ValueError("joint must have non-negative entries (no NaN)")
    tol = 1e-10 if joint.dtype == torch.float64 else 1e-5
    total = joint.sum().item()
    if abs(total - 1.0) > tol * max(1, joint.numel()) ** 0.5:
        raise ValueError(f"joint must sum to one, it sums to {total:.6g}")
    return joint


def chain_rule_conditionals(joint: torch.Tensor) -> list[torch.Tensor]:
    """The conditionals p(x_t | x_<t), t = 1..T, of a joint table, by (2).

    Args:
        joint: ``(V_1, ..., V_T)`` non-negative, summing to one.

    Returns:
        T tables; the t-th has shape ``(V_1, ..., V_t)`` and sums to one over its last axis.
        Where the prefix has probability 0 the conditional is undefined (0/0); it is set to
        uniform there, which changes nothing in the product (it is multiplied by p(x_<t) = 0).
    """
    joint = _check_joint(joint)
    T = joint.ndim
    # marginals[t] = p(x_1, ..., x_t) of shape (V_1, ..., V_t), t = 0..T (t = 0: the number 1)
    marginals = [joint.sum(dim=tuple(range(t, T))) if t < T else joint for t in range(T + 1)]
    conditionals = []
    for t in range(1, T + 1):
        num, den = marginals[t], marginals[t - 1].unsqueeze(-1)            # (..., V_t), (..., 1)
        uniform = torch.full_like(num, 1.0 / num.shape[-1])
        conditionals.append(torch.where(den > 0, num / den.clamp_min(torch.finfo(num.dtype).tiny),
                                        uniform))
    return conditionals


def joint_from_conditionals(conditionals: list[torch.Tensor]) -> torch.Tensor:
    """The product (1) of conditional tables: p(x) = p(x_1) p(x_2 | x_1) ... p(x_T | x_<T).

    Args:
        conditionals: T tables, the t-th of shape ``(V_1, ..., V_t)``, each summing to one over
            its last axis (as :func:`chain_rule_conditionals` returns).

    Returns:
        the joint ``(V_1, ..., V_T)``.
    """
    if not isinstance(conditionals, (list, tuple)) or not conditionals:
        raise ValueError(f"conditionals must be a non-empty list of tables, got "
                         f"{type(conditionals).__name__}")
    joint = None
    for t, c in enumerate(conditionals, start=1):
        expected = (*joint.shape, "V_t") if joint is not None else ("V_1",)
        if not isinstance(c, torch.Tensor) or not c.dtype.is_floating_point or c.ndim != t \
                or (joint is not None and tuple(c.shape[:-1]) != tuple(joint.shape)):
            raise ValueError(f"conditional {t} must be a float table of shape {expected}, got "
                             f"{shape_of(c)}")
        tol = 1e-10 if c.dtype == torch.float64 else 1e-5
        if bool((c < 0).any()) or float((c.sum(-1) - 1).abs().max()) > tol * c.shape[-1]:
            raise ValueError(f"conditional {t} must be non-negative and sum to one over its last "
                             f"axis")
        joint = c if joint is None else joint.unsqueeze(-1) * c
    return joint
