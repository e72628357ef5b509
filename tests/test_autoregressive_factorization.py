"""Tests for autoregressive.factorization: sequence_log_prob against a hand loop and against
torch's cross_entropy; nats and bits; the chain rule on explicit joint tables (conditionals sum
to one, the product gives the joint back, and the logits built from the conditionals score every
sequence at its exact log p); bad input."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from autoregressive.factorization import (
    LN2,
    bits_per_token,
    chain_rule_conditionals,
    joint_from_conditionals,
    nats_to_bits,
    sequence_log_prob,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def random_joint(shape, seed=0, zeros=False):
    p = torch.rand(shape, generator=gen(seed), dtype=torch.float64)
    if zeros:                                      # some prefixes of probability 0
        p[0] = 0.0
        p[..., 1] = 0.0
    return p / p.sum()


def test_sequence_log_prob_is_the_sum_of_the_chain_rule_terms():
    logits = torch.randn(3, 5, 7, generator=gen(1), dtype=torch.float64)
    y = torch.randint(7, (3, 5), generator=gen(2))
    by_hand = torch.zeros(3, dtype=torch.float64)
    for b in range(3):
        for t in range(5):
            z = logits[b, t]
            by_hand[b] += z[y[b, t]] - math.log(z.exp().sum())
    torch.testing.assert_close(sequence_log_prob(logits, y), by_hand)


def test_sequence_log_prob_matches_cross_entropy():
    logits = 4 * torch.randn(4, 9, 11, generator=gen(3))
    y = torch.randint(11, (4, 9), generator=gen(4))
    lp = sequence_log_prob(logits, y)
    assert lp.shape == (4,) and lp.dtype == torch.float32 and bool((lp <= 0).all())
    ce = F.cross_entropy(logits.reshape(-1, 11), y.reshape(-1))          # mean nats per token
    torch.testing.assert_close(-lp.sum() / y.numel(), ce)
    torch.testing.assert_close(-lp, F.cross_entropy(logits.transpose(1, 2), y,
                                                    reduction="none").sum(1))


def test_sequence_log_prob_is_stable_for_large_logits():
    logits = torch.tensor([[[1000.0, 0.0], [-1000.0, 0.0]]])
    lp = sequence_log_prob(logits, torch.tensor([[0, 0]]))
    torch.testing.assert_close(lp, torch.tensor([-1000.0]))


def test_nats_and_bits():
    assert nats_to_bits(math.log(2)) == pytest.approx(1.0, abs=1e-15)
    assert nats_to_bits(-3 * LN2) == pytest.approx(-3.0)                # a log p may be < 0
    t = torch.tensor([0.0, math.log(8)], dtype=torch.float64)
    torch.testing.assert_close(nats_to_bits(t), torch.tensor([0.0, 3.0], dtype=torch.float64))
    # a uniform model over 256 symbols costs log 256 nats = 8 bits per token
    assert bits_per_token(math.log(256)) == pytest.approx(8.0)
    assert bits_per_token(torch.tensor(math.log(4))) == pytest.approx(2.0)


@settings(deadline=None, max_examples=50)
@given(st.floats(0, 1e6))
def test_bits_per_token_is_log2_of_the_perplexity(nll):
    assert bits_per_token(nll) == pytest.approx(math.log2(math.exp(nll)) if nll < 700
                                                else nll / math.log(2), rel=1e-12)


@pytest.mark.parametrize("shape,zeros", [((5,), False), ((3, 4), False), ((2, 3, 4, 2), False),
                                         ((3, 3, 3), True)])
def test_chain_rule_on_a_joint_table(shape, zeros):
    joint = random_joint(shape, seed=len(shape), zeros=zeros)
    conditionals = chain_rule_conditionals(joint)
    assert [tuple(c.shape) for c in conditionals] == [shape[:t] for t in range(1, len(shape) + 1)]
    for c in conditionals:                                     # each is a distribution over x_t
        assert bool((c >= 0).all())
        torch.testing.assert_close(c.sum(-1), torch.ones(c.shape[:-1], dtype=torch.float64),
                                   rtol=0, atol=1e-12)
    torch.testing.assert_close(joint_from_conditionals(conditionals), joint, rtol=0, atol=1e-15)
    # the first conditional is the marginal of x_1, the last one p(x_T | x_<T) by division
    marginal_1 = joint.sum(tuple(range(1, len(shape)))) if len(shape) > 1 else joint
    torch.testing.assert_close(conditionals[0], marginal_1)
    if not zeros:
        torch.testing.assert_close(conditionals[-1], joint / joint.sum(-1, keepdim=True))


def test_conditionals_as_logits_score_every_sequence_exactly():
    # a joint over T = 4 tokens of V = 3 values, written as an AR model: logits_t = log p(.|x_<t)
    T, V = 4, 3
    joint = random_joint((V,) * T, seed=7)
    conditionals = chain_rule_conditionals(joint)
    x = torch.cartesian_prod(*[torch.arange(V)] * T)                    # all 81 sequences (81, 4)
    logits = torch.stack([conditionals[t][tuple(x[:, :t].T)].log().expand(len(x), V)
                          for t in range(T)], 1)                        # (81, T, V)
    lp = sequence_log_prob(logits, x)                                   # (81,)
    torch.testing.assert_close(lp, joint[tuple(x.T)].log(), rtol=0, atol=1e-12)
    torch.testing.assert_close(lp.exp().sum(), torch.tensor(1.0, dtype=torch.float64))


def test_bad_input():
    logits, y = torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.int64)
    with pytest.raises(ValueError, match="logits"):
        sequence_log_prob(torch.zeros(2, 4), y)
    with pytest.raises(ValueError, match="logits"):
        sequence_log_prob(torch.zeros(2, 3, 4, dtype=torch.int64), y)
    with pytest.raises(ValueError, match="targets"):
        sequence_log_prob(logits, torch.zeros(2, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="targets"):
        sequence_log_prob(logits, y.float())
    with pytest.raises(ValueError, match=r"0\.\.3"):
        sequence_log_prob(logits, y + 4)
    with pytest.raises(ValueError, match=r"0\.\.3"):
        sequence_log_prob(logits, y - 1)
    with pytest.raises(ValueError, match="float"):
        nats_to_bits(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="real"):
        nats_to_bits("1.0")
    for bad in (-0.1, math.inf, math.nan, True, torch.tensor([1.0, 2.0])):
        with pytest.raises(ValueError, match="mean_nll_nats"):
            bits_per_token(bad)
    with pytest.raises(ValueError, match="sum to one"):
        chain_rule_conditionals(torch.ones(2, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="non-negative"):
        chain_rule_conditionals(torch.tensor([1.5, -0.5], dtype=torch.float64))
    with pytest.raises(ValueError, match="float"):
        chain_rule_conditionals(torch.tensor([1]))
    good = chain_rule_conditionals(random_joint((2, 3)))
    with pytest.raises(ValueError, match="conditional 2"):
        joint_from_conditionals([good[0], torch.rand(3, 3, dtype=torch.float64)])
    with pytest.raises(ValueError, match="conditional 2"):
        joint_from_conditionals([good[0], 2 * good[1]])
    with pytest.raises(ValueError, match="non-empty"):
        joint_from_conditionals([])
