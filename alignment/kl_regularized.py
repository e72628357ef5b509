"""The KL-regularised objective of RLHF, its closed-form optimum, and RLHF's per-token rewards.

RLHF fits a policy π to a reward r while keeping it near a reference π_ref (the supervised
model), by maximising, per prompt x,

    J(π) = E_{y~π} r(y) − β KL(π ‖ π_ref),      KL(π ‖ π_ref) = Σ_y π(y) log(π(y) / π_ref(y)).

Over all distributions on a finite set of K outcomes (a bandit; or all completions of a prompt)
the maximiser is the Gibbs distribution

    π*(y) = π_ref(y) exp(r(y) / β) / Z,      Z = Σ_y π_ref(y) exp(r(y) / β),

because, for every π, J(π) = β log Z − β KL(π ‖ π*) (expand log π* = log π_ref + r/β − log Z
inside KL(π ‖ π*)); so J(π) ≤ J(π*) = β log Z with equality only at π = π*. Small β follows the
reward (π* → the arg max of r), large β stays at π_ref. Solved for r, the optimum gives
r(y) = β log(π*(y) / π_ref(y)) + β log Z: DPO's implicit reward (:mod:`alignment.dpo`) equals
r up to the constant β log Z.

For a language model RLHF optimises J with PPO on sampled completions; the KL term is spread
over the completion's tokens as a per-token reward (InstructGPT, TRL's PPO trainer):

    r_t = −β (log π(y_t | y_<t) − log π_ref(y_t | y_<t))  at every completion token t,
          + R(x, y)                                          added at the last completion token,

with R the reward model's score. The KL estimator is k1: the log-ratio of the sampled token,
whose sum over the completion, log π(y|x) − log π_ref(y|x), has expectation exactly
KL(π(·|x) ‖ π_ref(·|x)) under y ~ π, but can be negative on one sample (the k3 estimator in
``alignment.policy_losses`` is never negative; InstructGPT and TRL's default use k1). The
return Σ_t r_t = R − β log(π(y|x) / π_ref(y|x)) is then an unbiased estimate of J(π).

Shapes: bandit tables ``(..., K)`` (a batch of prompts in front), values ``(...,)``;
per-token tensors ``(B, T)`` (with :func:`alignment.completion_log_probs`'s per-token output,
T is its T − 1 and the mask its ``mask``), scores ``(B,)``.
"""

from __future__ import annotations

import torch

from utils.validation import check_positive, check_probabilities, shape_of

__all__ = ["kl_penalized_rewards", "kl_regularized_objective", "kl_regularized_optimum",
           "kl_regularized_value"]


def _check_bandit(pi_ref: object, r: object) -> tuple[torch.Tensor, torch.Tensor]:
    pi_ref = check_probabilities("pi_ref", pi_ref)
    if not isinstance(r, torch.Tensor) or not r.dtype.is_floating_point \
            or r.shape != pi_ref.shape:
        raise ValueError(f"r must be a float tensor of pi_ref's shape {tuple(pi_ref.shape)} "
                         f"(..., K), got {shape_of(r)}")
    if not bool(torch.isfinite(r).all()):
        raise ValueError("r must be finite")
    return pi_ref, r


def kl_regularized_optimum(pi_ref: torch.Tensor, r: torch.Tensor, beta: float) -> torch.Tensor:
    """π* = π_ref exp(r/β) / Z = softmax(log π_ref + r/β), the maximiser of J.

    Args:
        pi_ref: ``(..., K)`` probabilities (zeros allowed: π* is 0 there too).
        r: ``(..., K)`` finite rewards.
        beta: β > 0.

    Returns:
        ``(..., K)``, computed in the log domain (no overflow for small β).
    """
    beta = check_positive("beta", beta)
    pi_ref, r = _check_bandit(pi_ref, r)
    return torch.softmax(torch.log(pi_ref) + r / beta, dim=-1)


def kl_regularized_value(pi_ref: torch.Tensor, r: torch.Tensor, beta: float) -> torch.Tensor:
    """J(π*) = β log Σ_y π_ref(y) exp(r(y)/β) (log-sum-exp): ``(..., K)`` -> ``(...,)``."""
    beta = check_positive("beta", beta)
    pi_ref, r = _check_bandit(pi_ref, r)
    return beta * torch.logsumexp(torch.log(pi_ref) + r / beta, dim=-1)


def kl_regularized_objective(pi: torch.Tensor, pi_ref: torch.Tensor, r: torch.Tensor,
                             beta: float) -> torch.Tensor:
    """J(π) = Σ_y π(y) r(y) − β KL(π ‖ π_ref): ``(..., K)`` each -> ``(...,)``.

    0 log 0 counts as 0; where π puts mass on an outcome π_ref gives 0, KL = ∞ and J = −∞.
    Gradients flow to π (and r); π_ref should have none."""
    beta = check_positive("beta", beta)
    pi_ref, r = _check_bandit(pi_ref, r)
    pi = check_probabilities("pi", pi)
    if pi.shape != pi_ref.shape:
        raise ValueError(f"pi must have pi_ref's shape {tuple(pi_ref.shape)}, got "
                         f"{tuple(pi.shape)}")
    kl = (torch.xlogy(pi, pi) - torch.xlogy(pi, pi_ref)).sum(-1)
    return (pi * r).sum(-1) - beta * kl


def kl_penalized_rewards(log_pi: torch.Tensor, log_ref: torch.Tensor, mask: torch.Tensor,
                         score: torch.Tensor, beta: float) -> torch.Tensor:
    """RLHF's per-token rewards r_t = −β (log π_t − log π_ref,t) + [t = last] R, at mask only.

    Args:
        log_pi: ``(B, T)`` log π(y_t | y_<t) of the sampled tokens under the policy.
        log_ref: ``(B, T)`` the same under the frozen reference.
        mask: ``(B, T)`` bool (or 0/1), True at completion tokens; each row needs one.
        score: ``(B,)`` the reward model's score R(x, y) of each completion.
        beta: β > 0, the KL coefficient.

    Returns:
        ``(B, T)`` rewards, 0 outside the mask, the score added at each row's last completion
        token (its last True, wherever padding sits). They are data for the PPO step, so the
        result is detached. Σ_t r_t = R − β Σ_{t in mask} (log π_t − log π_ref,t).
    """
    beta = check_positive("beta", beta)
    for name, x in (("log_pi", log_pi), ("log_ref", log_ref)):
        if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point or x.ndim != 2:
            raise ValueError(f"{name} must be a float tensor (B, T), got {shape_of(x)}")
    if log_ref.shape != log_pi.shape:
        raise ValueError(f"log_pi and log_ref must have the same shape (B, T), got "
                         f"{tuple(log_pi.shape)} and {tuple(log_ref.shape)}")
    if not isinstance(mask, torch.Tensor) or mask.shape != log_pi.shape \
            or not (mask.dtype == torch.bool or bool(((mask == 0) | (mask == 1)).all())):
        raise ValueError(f"mask must be a bool (or 0/1) tensor of shape {tuple(log_pi.shape)}, "
                         f"got {shape_of(mask)}")
    mask = mask.to(torch.bool)
    if not bool(mask.any(-1).all()):
        rows = (~mask.any(-1)).nonzero().flatten().tolist()
        raise ValueError(f"every row needs at least one completion token; rows {rows} have none")
    B, T = log_pi.shape
    if not isinstance(score, torch.Tensor) or not score.dtype.is_floating_point \
            or tuple(score.shape) != (B,):
        raise ValueError(f"score must be a float tensor ({B},) (one per row), got "
                         f"{shape_of(score)}")
    with torch.no_grad():
        log_ratio = torch.where(mask, log_pi - log_ref, torch.zeros((), dtype=log_pi.dtype,
                                                                    device=log_pi.device))
        rewards = -beta * log_ratio                                             # k1 per token
        t = torch.arange(T, device=mask.device)
        last = torch.where(mask, t, -1).amax(-1)                                # (B,)
        rewards[torch.arange(B, device=mask.device), last] += score.to(rewards.dtype)
    return rewards
