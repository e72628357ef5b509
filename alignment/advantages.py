"""Discounted returns, TD errors and generalised advantage estimation (GAE) for a batch of
environments stepped together (02_policy_gradients_and_trpo, 03_ppo).

A rollout of T steps in N environments gives rewards r_t, value estimates V_t = V(s_t) and episode
ends done_t ∈ {0, 1} (1: the episode ended with the transition at step t, so s_{t+1} belongs to a
new episode and nothing after t is credited to it), all of shape (T, N), plus the bootstrap value
V_T = V(s_T) (N,) of the state the rollout stopped in. The discounted return, cut at episode ends
and bootstrapped at the rollout's end, obeys

    G_t = r_t + γ (1 − done_t) G_{t+1},        G_T = V_T,                      (returns)

the TD error (one-step advantage) is

    δ_t = r_t + γ V_{t+1} (1 − done_t) − V_t,   V_{t+1} for t = T−1 being V_T,  (td_errors)

and GAE(γ, λ) (Schulman et al. 2016) is the exponentially weighted sum of TD errors within the
episode, computed backwards by

    A_t = δ_t + γλ (1 − done_t) A_{t+1},       A_T = 0,                        (gae)

i.e. A_t = Σ_{l=0}^{L} (γλ)^l δ_{t+l} with t + L the episode's last step in the rollout. λ = 0
gives the TD error (low variance, biased by V); λ = 1 gives G_t − V_t (unbiased, high variance).
The value target of PPO is A_t + V_t (the TD(λ) return).

A time limit (gymnasium's ``truncated``) is not a true end: pass done_t = 0 there and let the
bootstrap carry on, or done_t = 1 to cut (as CleanRL does); the book's CartPole runs cut.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import torch

from utils.validation import shape_of

__all__ = ["GAE", "discounted_returns", "gae", "td_errors"]


def _check_unit(name: str, value: object) -> float:
    """``value`` as a float if it is a real number in [0, 1]; else a ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _check_rollout(rewards: object, dones: object, values: object | None,
                   last_value: object | None) -> tuple[torch.Tensor, ...]:
    """Checks r (T, N) or (T,), dones and values of the same shape, last_value (N,) or () (or
    None: zeros); returns them as float tensors of r's dtype, (1 − done) among them."""
    if not isinstance(rewards, torch.Tensor) or not rewards.is_floating_point() \
            or rewards.ndim not in (1, 2) or rewards.shape[0] < 1:
        raise ValueError(f"rewards must be a float tensor (T, N) or (T,) with T >= 1, got "
                         f"{shape_of(rewards)}")
    if not isinstance(dones, torch.Tensor) or dones.shape != rewards.shape:
        raise ValueError(f"dones must be a tensor of the rewards' shape {tuple(rewards.shape)}, "
                         f"got {shape_of(dones)}")
    d = dones.to(rewards.dtype)
    if not bool(((d == 0) | (d == 1)).all()):
        raise ValueError("dones must hold 0/1 (or bool) episode-end flags")
    if values is not None and (not isinstance(values, torch.Tensor)
                               or values.shape != rewards.shape):
        raise ValueError(f"values must be a tensor of the rewards' shape {tuple(rewards.shape)}, "
                         f"got {shape_of(values)}")
    batch = rewards.shape[1:]
    if last_value is None:
        v_last = rewards.new_zeros(batch)
    elif not isinstance(last_value, torch.Tensor) or last_value.shape != batch:
        raise ValueError(f"last_value must be a tensor of shape {tuple(batch)} (one bootstrap "
                         f"value per environment), got {shape_of(last_value)}")
    else:
        v_last = last_value.to(rewards.dtype)
    v = None if values is None else values.to(rewards.dtype)
    return rewards, 1 - d, v, v_last


def discounted_returns(rewards: torch.Tensor, dones: torch.Tensor, gamma: float,
                       last_value: torch.Tensor | None = None) -> torch.Tensor:
    """G_t = r_t + γ (1 − done_t) G_{t+1} with G_T = ``last_value`` (zeros when None).

    Args:
        rewards: ``(T, N)`` (or ``(T,)``) float.
        dones: same shape, 0/1 or bool; 1 where the episode ended at that step.
        gamma: discount γ in [0, 1].
        last_value: ``(N,)`` (or ``()``) bootstrap V(s_T); None: 0 (a finished episode).

    Returns:
        G: the rewards' shape and dtype. Gradients flow into ``rewards`` and ``last_value``;
        detach them for a REINFORCE target.
    """
    gamma = _check_unit("gamma", gamma)
    r, not_done, _, g = _check_rollout(rewards, dones, None, last_value)
    out = []
    for t in range(r.shape[0] - 1, -1, -1):
        g = r[t] + gamma * not_done[t] * g
        out.append(g)
    return torch.stack(out[::-1])


def td_errors(rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, gamma: float,
              last_value: torch.Tensor | None = None) -> torch.Tensor:
    """δ_t = r_t + γ V_{t+1} (1 − done_t) − V_t, with V_T = ``last_value`` (zeros when None).

    Shapes: rewards, values, dones ``(T, N)`` (or ``(T,)``); last_value ``(N,)`` (or ``()``);
    returns δ of the rewards' shape.
    """
    gamma = _check_unit("gamma", gamma)
    r, not_done, v, v_last = _check_rollout(rewards, dones, values, last_value)
    v_next = torch.cat([v[1:], v_last.unsqueeze(0)])
    return r + gamma * v_next * not_done - v


class GAE(NamedTuple):
    """``adv``: A_t, the GAE(γ, λ) advantages (T, N); ``returns``: A_t + V_t, the value targets."""

    adv: torch.Tensor
    returns: torch.Tensor


def gae(rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, gamma: float,
        lam: float, last_value: torch.Tensor | None = None) -> GAE:
    """GAE(γ, λ) by the backward recursion A_t = δ_t + γλ (1 − done_t) A_{t+1}, A_T = 0.

    Args:
        rewards: ``(T, N)`` (or ``(T,)``) float, r_t.
        values: same shape, V(s_t) (detached by the caller, as in PPO, or not).
        dones: same shape, 0/1 or bool; 1 where the episode ended at step t.
        gamma: discount γ in [0, 1]; lam: λ in [0, 1].
        last_value: ``(N,)`` (or ``()``) V(s_T) to bootstrap from; None: 0.

    Returns:
        ``GAE(adv, returns)``, both of the rewards' shape: A_t = Σ_l (γλ)^l δ_{t+l} within the
        episode, and returns = A_t + V_t (λ = 1: the bootstrapped discounted return G_t).
    """
    lam = _check_unit("lam", lam)
    delta = td_errors(rewards, values, dones, gamma, last_value)
    gamma = float(gamma)
    not_done = 1 - dones.to(delta.dtype)
    a = torch.zeros_like(delta[0])
    out = []
    for t in range(delta.shape[0] - 1, -1, -1):
        a = delta[t] + gamma * lam * not_done[t] * a
        out.append(a)
    adv = torch.stack(out[::-1])
    return GAE(adv, adv + values.to(adv.dtype))
