"""Tests for utils.data.preferences: Bradley-Terry labels from a known gold reward (the label
rate against σ(|Δr| / τ) by Monte Carlo), determinism, and the gold reward's availability."""

import math

import pytest
import torch

from utils.data import (
    ArmReward,
    LinearReward,
    MLPReward,
    PreferencePairs,
    preference_pairs,
)


def agreement_check(data: PreferencePairs):
    """The number of pairs whose label agrees with the gold reward is a sum of independent
    Bernoulli(σ(|Δr_i| / τ)); return its observed value, mean and standard deviation."""
    delta = data.reward(data.chosen) - data.reward(data.rejected)
    q = torch.sigmoid(delta.abs() / data.temperature)
    agree = float((delta > 0).double().sum())
    return agree, float(q.sum()), math.sqrt(float((q * (1 - q)).sum()))


@pytest.mark.parametrize("kwargs", [dict(kind="bandit", n_arms=5),
                                    dict(kind="vectors", dim=3, gold="linear"),
                                    dict(kind="vectors", dim=3, gold="mlp", temperature=0.3)])
def test_labels_follow_bradley_terry(kwargs):
    data = preference_pairs(20_000, seed=1, **kwargs)
    agree, mean, sd = agreement_check(data)
    assert abs(agree - mean) < 4 * sd
    # p_chosen is the gold probability of the drawn label
    delta = data.reward(data.chosen) - data.reward(data.rejected)
    torch.testing.assert_close(data.p_chosen, torch.sigmoid(delta / data.temperature))
    # the labels are informative: chosen beats rejected more often than a coin says
    assert agree > 0.55 * len(delta)


def test_temperature_moves_labels_between_noiseless_and_coin_flips():
    cold = preference_pairs(4_000, kind="vectors", temperature=1e-4, seed=2)
    d = cold.reward(cold.chosen) - cold.reward(cold.rejected)
    assert float((d > 0).double().mean()) > 0.995
    hot = preference_pairs(4_000, kind="vectors", temperature=1e4, seed=2)
    d = hot.reward(hot.chosen) - hot.reward(hot.rejected)
    assert abs(float((d > 0).double().mean()) - 0.5) < 4 * 0.5 / math.sqrt(4_000)


def test_deterministic_and_gold_independent_of_n():
    a, b = preference_pairs(50, seed=3), preference_pairs(50, seed=3)
    assert torch.equal(a.chosen, b.chosen) and torch.equal(a.rejected, b.rejected)
    assert not torch.equal(a.chosen, preference_pairs(50, seed=4).chosen)
    big = preference_pairs(5_000, seed=3)
    torch.testing.assert_close(big.reward.r, a.reward.r)
    assert abs(float(a.reward.r.sum())) < 1e-12                     # gauge: mean zero
    v1 = preference_pairs(10, kind="vectors", gold="mlp", seed=3)
    v2 = preference_pairs(900, kind="vectors", gold="mlp", seed=3)
    x = torch.randn(7, 4, dtype=torch.float64)
    torch.testing.assert_close(v1.reward(x), v2.reward(x))


def test_bandit_pairs_are_distinct_uniform_arms():
    k, n = 6, 30_000
    data = preference_pairs(n, kind="bandit", n_arms=k, seed=5, temperature=1e6)
    assert data.chosen.dtype == torch.int64 and data.chosen.shape == (n,)
    assert bool((data.chosen != data.rejected).all())
    # with coin-flip labels each arm is chosen with probability 1/K per pair
    counts = torch.bincount(data.chosen, minlength=k).double()
    sd = math.sqrt(n * (1 / k) * (1 - 1 / k))
    assert float((counts - n / k).abs().max()) < 4 * sd


def test_vector_items_and_gold_rewards_are_as_documented():
    data = preference_pairs(3_000, kind="vectors", dim=2, seed=6, dtype=torch.float32)
    assert data.chosen.shape == data.rejected.shape == (3_000, 2)
    assert data.chosen.dtype == data.p_chosen.dtype == torch.float32
    x = torch.cat([data.chosen, data.rejected]).double()
    assert float(x.mean(0).abs().max()) < 4 / math.sqrt(6_000)
    assert float((x.var(0) - 1).abs().max()) < 4 * math.sqrt(2 / 6_000)
    assert isinstance(data.reward, LinearReward)
    torch.testing.assert_close(data.reward(data.chosen), data.chosen @ data.reward.w)
    mlp = preference_pairs(3, kind="vectors", dim=2, gold="mlp").reward
    assert isinstance(mlp, MLPReward)
    xi = torch.tensor([0.3, -1.2], dtype=torch.float64)
    by_hand = sum(float(mlp.v[h]) * math.tanh(float(mlp.W[h] @ xi) + float(mlp.c[h]))
                  for h in range(len(mlp.v)))
    assert float(mlp(xi)) == pytest.approx(by_hand, rel=1e-12)
    assert isinstance(preference_pairs(3).reward, ArmReward)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n=0), "n must be"),
    (dict(n=5, temperature=0.0), "temperature"),
    (dict(n=5, temperature=-1.0), "temperature"),
    (dict(n=5, kind="text"), "kind must be"),
    (dict(n=5, kind="vectors", gold="cubic"), "gold must be"),
    (dict(n=5, n_arms=1), "n_arms"),
    (dict(n=5, kind="vectors", dim=0), "dim"),
    (dict(n=5, seed=-1), "seed"),
    (dict(n=5, dtype=torch.int64), "dtype"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        preference_pairs(**kwargs)


def test_gold_rewards_reject_wrong_items():
    arm = preference_pairs(3, n_arms=4).reward
    with pytest.raises(ValueError, match="0..3"):
        arm(torch.tensor([4]))
    with pytest.raises(ValueError, match="int64"):
        arm(torch.tensor([0.0]))
    lin = preference_pairs(3, kind="vectors", dim=3).reward
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        lin(torch.zeros(2, 4))
