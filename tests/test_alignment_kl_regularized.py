"""Tests for alignment.kl_regularized: the Gibbs optimum π* ∝ π_ref exp(r/β) of
J(π) = E_π r − β KL(π ‖ π_ref) against random points of the simplex, gradient ascent and the
closed-form value; DPO's implicit reward at π*; RLHF's per-token rewards, summed by hand and in
expectation over every completion of a tiny GPT (exact enumeration)."""

import itertools
import math

import pytest
import torch

from alignment import (
    completion_log_probs,
    implicit_reward,
    kl_penalized_rewards,
    kl_regularized_objective,
    kl_regularized_optimum,
    kl_regularized_value,
)
from autoregressive import GPT, GPTConfig

F64 = dict(dtype=torch.float64)


def _bandit(seed=0, K=6, batch=()):
    g = torch.Generator().manual_seed(seed)
    pi_ref = torch.distributions.Dirichlet(torch.ones(K, **F64)).sample(batch)
    pi_ref = pi_ref.clamp_min(1e-3)
    pi_ref = pi_ref / pi_ref.sum(-1, keepdim=True)
    return pi_ref, torch.randn(*batch, K, generator=g, **F64)


def _kl(p, q):
    return (torch.xlogy(p, p) - torch.xlogy(p, q)).sum(-1)


@pytest.mark.parametrize("beta", [0.05, 0.5, 3.0])
def test_optimum_beats_every_random_policy_by_beta_kl_to_it(beta):
    # Gibbs' variational identity J(π) = J(π*) − β KL(π ‖ π*), for 2,000 random π on the
    # simplex and for points on segments from π* towards them (small perturbations)
    torch.manual_seed(1)
    pi_ref, r = _bandit(1)
    pi_star = kl_regularized_optimum(pi_ref, r, beta)
    j_star = kl_regularized_objective(pi_star, pi_ref, r, beta)
    pis = torch.distributions.Dirichlet(torch.full((6,), 0.7, **F64)).sample((2_000,))
    for t in (1.0, 1e-2, 1e-4):
        pi = (1 - t) * pi_star + t * pis
        j = kl_regularized_objective(pi, pi_ref.expand_as(pi), r.expand_as(pi), beta)
        assert bool((j < j_star).all())
        assert torch.allclose(j, j_star - beta * _kl(pi, pi_star), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("beta", [0.2, 1.0])
def test_softmax_gradient_ascent_finds_the_optimum(beta):
    pi_ref, r = _bandit(2)
    theta = torch.zeros(6, **F64, requires_grad=True)
    opt = torch.optim.LBFGS([theta], lr=1, max_iter=200, tolerance_grad=1e-13,
                            tolerance_change=0, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = -kl_regularized_objective(torch.softmax(theta, -1), pi_ref, r, beta)
        loss.backward()
        return loss

    opt.step(closure)
    found = torch.softmax(theta.detach(), -1)
    pi_star = kl_regularized_optimum(pi_ref, r, beta)
    assert torch.allclose(found, pi_star, atol=1e-7)
    assert not torch.allclose(pi_star, pi_ref, atol=1e-2)   # the reward moved it


def test_value_is_beta_log_partition_and_its_limits():
    pi_ref, r = _bandit(3, batch=(4,))
    for beta in (0.01, 0.3, 10.0):
        pi_star = kl_regularized_optimum(pi_ref, r, beta)
        v = kl_regularized_value(pi_ref, r, beta)
        assert v.shape == (4,)
        assert torch.allclose(kl_regularized_objective(pi_star, pi_ref, r, beta), v, rtol=1e-10)
        by_hand = beta * torch.log((pi_ref * torch.exp(r / beta)).sum(-1))
        assert torch.allclose(v, by_hand, rtol=1e-10)
        # between the reference's expected reward (π = π_ref is feasible) and max r
        assert bool((v >= (pi_ref * r).sum(-1) - 1e-12).all())
        assert bool((v <= r.amax(-1) + 1e-12).all())
    # β → 0: the arg max of r; β → ∞: π_ref; no overflow with r/β = 1e5
    greedy = kl_regularized_optimum(pi_ref, r, 1e-5)
    assert torch.equal(greedy.argmax(-1), r.argmax(-1)) and bool((greedy.amax(-1) > 1 - 1e-9).all())
    assert torch.allclose(kl_regularized_optimum(pi_ref, r, 1e6), pi_ref, atol=1e-5)
    assert torch.isfinite(kl_regularized_value(pi_ref, r * 1e3, 1e-2)).all()


def test_dpo_implicit_reward_at_the_optimum_is_the_reward_up_to_a_constant():
    pi_ref, r = _bandit(4, batch=(3,))
    beta = 0.4
    pi_star = kl_regularized_optimum(pi_ref, r, beta)
    r_hat = implicit_reward(torch.log(pi_star), torch.log(pi_ref), beta)     # (3, K)
    diff = r_hat - r
    # the constant is −β log Z(x), one per prompt
    assert torch.allclose(diff, -kl_regularized_value(pi_ref, r, beta)[:, None].expand_as(diff),
                          atol=1e-12)
    # so every pairwise difference, all that Bradley-Terry (and DPO) sees, is exact
    assert torch.allclose(r_hat[:, :, None] - r_hat[:, None, :], r[:, :, None] - r[:, None, :],
                          atol=1e-12)


def test_zero_reference_mass_stays_zero():
    pi_ref = torch.tensor([0.5, 0.0, 0.5], **F64)
    r = torch.tensor([0.0, 100.0, 1.0], **F64)
    pi_star = kl_regularized_optimum(pi_ref, r, 0.5)
    assert pi_star[1].item() == 0.0 and pi_star.sum().item() == pytest.approx(1.0)
    assert kl_regularized_objective(torch.tensor([0.0, 1.0, 0.0], **F64), pi_ref, r,
                                    0.5).item() == -math.inf
    assert math.isfinite(kl_regularized_objective(pi_star, pi_ref, r, 0.5).item())


def test_per_token_rewards_by_hand():
    g = torch.Generator().manual_seed(5)
    B, T, beta = 3, 6, 0.3
    log_pi = -torch.rand(B, T, generator=g, **F64) * 3
    log_ref = -torch.rand(B, T, generator=g, **F64) * 3
    mask = torch.tensor([[0, 1, 1, 1, 1, 1],      # completion to the end
                         [0, 0, 1, 1, 0, 0],      # right padding
                         [0, 0, 0, 1, 1, 0]], dtype=torch.bool)
    score = torch.tensor([1.5, -2.0, 0.25], **F64)
    rewards = kl_penalized_rewards(log_pi, log_ref, mask, score, beta)
    assert rewards.shape == (B, T) and not rewards.requires_grad
    last = [5, 3, 4]
    for b in range(B):
        for t in range(T):
            expected = -beta * (log_pi[b, t] - log_ref[b, t]).item() if mask[b, t] else 0.0
            expected += score[b].item() if t == last[b] else 0.0
            assert rewards[b, t].item() == pytest.approx(expected, abs=1e-14)
    summed = score - beta * ((log_pi - log_ref) * mask).sum(-1)
    assert torch.allclose(rewards.sum(-1), summed, atol=1e-14)
    # gradients never flow into the rewards
    lp = log_pi.clone().requires_grad_(True)
    assert not kl_penalized_rewards(lp, log_ref, mask, score, beta).requires_grad


def test_expected_return_of_per_token_rewards_is_the_kl_regularised_objective(one_thread):
    # every completion y of 3 tokens (V = 3: 27 of them) after a one-token prompt, under two
    # tiny GPTs: Σ_y π(y) Σ_t r_t(y) = J(π) of the sequence-level bandit, with
    # π(y) = exp(completion_log_probs(...).total); and the k1 sum is exactly KL in
    # expectation while some single completions give a negative value
    V, beta = 3, 0.7
    torch.manual_seed(0)
    policy = GPT(GPTConfig(vocab_size=V, block_size=4, n_layer=1, n_head=1, n_embd=8)).double()
    torch.manual_seed(1)
    ref = GPT(GPTConfig(vocab_size=V, block_size=4, n_layer=1, n_head=1, n_embd=8)).double()
    for p in (*policy.parameters(), *ref.parameters()):
        p.data.mul_(20)                            # far from uniform, so KL is not tiny
    ys = torch.tensor(list(itertools.product(range(V), repeat=3)))
    idx = torch.cat([torch.ones(len(ys), 1, dtype=torch.int64), ys], 1)        # (27, 4)
    mask = torch.ones_like(idx, dtype=torch.bool)
    mask[:, 0] = False
    with torch.no_grad():
        lp, lr = completion_log_probs(policy, idx, mask), completion_log_probs(ref, idx, mask)
    pi, pi_ref = lp.total.exp(), lr.total.exp()
    assert pi.sum().item() == pytest.approx(1.0, abs=1e-12)
    score = torch.sin(3.0 * ys.double()).sum(-1)                                # a gold reward
    rewards = kl_penalized_rewards(lp.per_token, lr.per_token, lp.mask, score, beta)
    expected_return = (pi * rewards.sum(-1)).sum()
    j = kl_regularized_objective(pi, pi_ref, score, beta)
    assert expected_return.item() == pytest.approx(j.item(), rel=1e-10)
    k1 = (lp.per_token - lr.per_token).sum(-1)
    assert (pi * k1).sum().item() == pytest.approx(_kl(pi, pi_ref).item(), rel=1e-10)
    assert _kl(pi, pi_ref).item() > 0.05 and bool((k1 < 0).any())


@pytest.mark.parametrize("beta", [0.0, -1.0, float("nan"), float("inf")])
def test_beta_must_be_positive(beta):
    pi_ref, r = _bandit(6)
    for call in (lambda: kl_regularized_optimum(pi_ref, r, beta),
                 lambda: kl_regularized_value(pi_ref, r, beta),
                 lambda: kl_regularized_objective(pi_ref, pi_ref, r, beta),
                 lambda: kl_penalized_rewards(torch.zeros(1, 2), torch.zeros(1, 2),
                                              torch.tensor([[0, 1]]), torch.zeros(1), beta)):
        with pytest.raises(ValueError, match="beta"):
            call()


def test_bandit_bad_input():
    pi_ref, r = _bandit(7)
    with pytest.raises(ValueError, match="sum to one"):
        kl_regularized_optimum(pi_ref * 2, r, 1.0)
    with pytest.raises(ValueError, match="non-negative"):
        kl_regularized_optimum(torch.tensor([1.5, -0.5], **F64), torch.zeros(2, **F64), 1.0)
    with pytest.raises(ValueError, match="pi_ref's shape"):
        kl_regularized_value(pi_ref, r[:-1], 1.0)
    with pytest.raises(ValueError, match="finite"):
        kl_regularized_value(pi_ref, torch.full_like(r, math.inf), 1.0)
    with pytest.raises(ValueError, match="pi must have"):
        kl_regularized_objective(torch.tensor([1.0, 0.0], **F64), pi_ref, r, 1.0)
    with pytest.raises(ValueError, match="pi must"):
        kl_regularized_objective(pi_ref + 0.1, pi_ref, r, 1.0)


@pytest.mark.parametrize("log_pi, log_ref, mask, score, match", [
    (torch.zeros(2, 3), torch.zeros(2, 4), torch.ones(2, 3), torch.zeros(2), "same shape"),
    (torch.zeros(3), torch.zeros(3), torch.ones(3), torch.zeros(1), r"\(B, T\)"),
    (torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 4), torch.zeros(2), "mask"),
    (torch.zeros(2, 3), torch.zeros(2, 3), torch.full((2, 3), 2), torch.zeros(2), "0/1"),
    (torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([[0, 1, 0], [0, 0, 0]]), torch.zeros(2),
     r"rows \[1\]"),
    (torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 3), torch.zeros(3), r"score"),
    (torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 3), torch.zeros(2, dtype=torch.int64),
     r"score"),
])
def test_per_token_rewards_bad_input(log_pi, log_ref, mask, score, match):
    with pytest.raises(ValueError, match=match):
        kl_penalized_rewards(log_pi, log_ref, mask, score, 0.1)
