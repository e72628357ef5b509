"""Synthetic preference pairs from a known ground-truth (gold) reward (DESIGN.md §6), for the
reward models, RLHF and DPO of part 9: the gold reward stays available, so every learned reward
and policy can be scored against it.

Each pair (a, b) of items is labelled by the **Bradley-Terry** model with temperature τ:

    P(a ≻ b) = σ((r(a) − r(b)) / τ),        σ(z) = 1 / (1 + e^{−z}),

one Bernoulli draw per pair; the winner is stored as ``chosen``, the loser as ``rejected``, and
``p_chosen`` = σ((r(chosen) − r(rejected)) / τ) is the gold probability of the label that was
drawn (a soft label; it is below ½ whenever the draw went against the gold reward). τ → 0 gives
noiseless labels, τ → ∞ coin flips; only r / τ is identified from the labels (and only up to a
constant, see ``alignment.bradley_terry``).

Kinds (``PREFERENCE_KINDS``):

- ``"bandit"``: items are the arms 0 … K−1 of a K-armed bandit, int64 ``(n,)``; the gold reward
  is a table r (K,) ~ N(0, 1), centred to mean zero (the gauge ``alignment.bt_mle`` uses); the
  two arms of a pair are distinct, drawn uniformly.
- ``"vectors"``: items are x ∈ R^d, float ``(n, d)`` with x ~ N(0, I); the gold reward is
  ``gold="linear"``: r(x) = wᵀx with w ~ N(0, I / d), or ``gold="mlp"``: the fixed one-hidden-
  layer network r(x) = vᵀ tanh(W x + c) with W (16, d) ~ N(0, 1/d), c ~ N(0, 1), v ~ N(0, 1/16).

The gold reward depends only on ``seed`` and the item space (K, or d and ``gold``), never on n,
so data sets of growing n share it (error against n is then meaningful). Text pairs (completions
of the book's GPT scored by a gold reward) are a later kind of the same function.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from utils.validation import check_choice, check_int, check_positive, shape_of

__all__ = ["GOLD_REWARDS", "PREFERENCE_KINDS", "ArmReward", "LinearReward", "MLPReward",
           "PreferencePairs", "preference_pairs"]

PREFERENCE_KINDS = ("bandit", "vectors")
GOLD_REWARDS = ("linear", "mlp")
_HIDDEN = 16


class ArmReward:
    """The gold reward of a K-armed bandit: ``reward(a)`` = r[a] for arms a int64 (n,) -> (n,);
    ``reward.r`` is the table (K,)."""

    def __init__(self, r: torch.Tensor):
        self.r = r

    def __call__(self, a: torch.Tensor) -> torch.Tensor:
        if not isinstance(a, torch.Tensor) or a.dtype != torch.int64:
            raise ValueError(f"arms must be an int64 tensor, got {shape_of(a)}")
        if a.numel() and (int(a.min()) < 0 or int(a.max()) >= len(self.r)):
            raise ValueError(f"arms must lie in 0..{len(self.r) - 1}, got "
                             f"{int(a.min())}..{int(a.max())}")
        return self.r.to(a.device)[a]


class _VectorReward:
    dim: int

    def _check(self, x: object) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point \
                or x.ndim < 1 or x.shape[-1] != self.dim:
            raise ValueError(f"x must be a float tensor (..., {self.dim}), got {shape_of(x)}")
        return x


class LinearReward(_VectorReward):
    """r(x) = wᵀx: x (..., d) -> (...,); ``w`` (d,)."""

    def __init__(self, w: torch.Tensor):
        self.w, self.dim = w, len(w)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = self._check(x)
        return x @ self.w.to(x)


class MLPReward(_VectorReward):
    """r(x) = vᵀ tanh(W x + c): x (..., d) -> (...,); W (H, d), c (H,), v (H,)."""

    def __init__(self, W: torch.Tensor, c: torch.Tensor, v: torch.Tensor):
        self.W, self.c, self.v, self.dim = W, c, v, W.shape[1]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = self._check(x)
        return torch.tanh(x @ self.W.to(x).T + self.c.to(x)) @ self.v.to(x)


class PreferencePairs(NamedTuple):
    """``chosen``, ``rejected``: the items of each pair, winner first (bandit: int64 (n,);
    vectors: (n, d)); ``p_chosen`` (n,): the gold P(chosen ≻ rejected) = σ((r(c) − r(r)) / τ);
    ``reward``: the gold reward, a callable items -> (n,) (:class:`ArmReward`,
    :class:`LinearReward` or :class:`MLPReward`); ``temperature`` τ; ``kind``."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    p_chosen: torch.Tensor
    reward: ArmReward | LinearReward | MLPReward
    temperature: float
    kind: str


def _generator(seed: int, stream: int) -> torch.Generator:
    derived = np.random.SeedSequence([seed, stream]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(derived))


def preference_pairs(n: int, *, kind: str = "bandit", n_arms: int = 8, dim: int = 4,
                     gold: str = "linear", temperature: float = 1.0, seed: int = 0,
                     dtype: torch.dtype = torch.float64) -> PreferencePairs:
    """``n`` Bradley-Terry-labelled pairs of ``kind`` ("bandit" or "vectors"; see the module
    docstring), deterministic given ``seed``.

    Args:
        n: number of pairs ≥ 1.
        kind: "bandit" (uses ``n_arms`` K ≥ 2) or "vectors" (uses ``dim`` d ≥ 1 and ``gold``,
            "linear" or "mlp").
        temperature: τ > 0 of P(a ≻ b) = σ((r(a) − r(b)) / τ).
        seed: ≥ 0; the gold reward is drawn from it alone (the same for every n).
        dtype: float dtype of the rewards, probabilities and vector items.
    """
    n = check_int("n", n, minimum=1)
    kind = check_choice("kind", kind, PREFERENCE_KINDS)
    tau = check_positive("temperature", temperature)
    seed = check_int("seed", seed, minimum=0)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a float torch.dtype, got {dtype!r}")
    g_gold, g_data = _generator(seed, 0), _generator(seed, 1)
    if kind == "bandit":
        k = check_int("n_arms", n_arms, minimum=2)
        r = torch.randn(k, generator=g_gold, dtype=torch.float64)
        reward = ArmReward((r - r.mean()).to(dtype))
        a = torch.randint(k, (n,), generator=g_data)
        b = (a + torch.randint(1, k, (n,), generator=g_data)) % k      # uniform over b ≠ a
    else:
        d = check_int("dim", dim, minimum=1)
        gold = check_choice("gold", gold, GOLD_REWARDS)
        if gold == "linear":
            reward = LinearReward(torch.randn(d, generator=g_gold, dtype=dtype) / math.sqrt(d))
        else:
            W = torch.randn(_HIDDEN, d, generator=g_gold, dtype=dtype) / math.sqrt(d)
            c = torch.randn(_HIDDEN, generator=g_gold, dtype=dtype)
            v = torch.randn(_HIDDEN, generator=g_gold, dtype=dtype) / math.sqrt(_HIDDEN)
            reward = MLPReward(W, c, v)
        a = torch.randn(n, d, generator=g_data, dtype=dtype)
        b = torch.randn(n, d, generator=g_data, dtype=dtype)
    p_a = torch.sigmoid((reward(a) - reward(b)) / tau)                  # P(a ≻ b)   (n,)
    a_wins = torch.rand(n, generator=g_data, dtype=dtype) < p_a
    pick = a_wins if kind == "bandit" else a_wins.unsqueeze(-1)
    chosen, rejected = torch.where(pick, a, b), torch.where(pick, b, a)
    p_chosen = torch.where(a_wins, p_a, 1 - p_a)
    return PreferencePairs(chosen, rejected, p_chosen, reward, tau, kind)
