"""Tests for alignment.policy_losses: REINFORCE against the exact policy gradient of a softmax
bandit, PPO's clipped surrogate against its piecewise closed form and its zero gradient where
the clip is active, the value loss, the entropy, and the k1/k2/k3 KL estimators against the
exact KL of two categoricals (by exact expectation and by Monte Carlo)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from alignment import (
    approx_kl,
    entropy_bonus,
    kl_k1,
    kl_k2,
    kl_k3,
    ppo_clip_loss,
    reinforce_loss,
    value_loss,
)

F64 = dict(dtype=torch.float64)


def bandit(K=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(K, generator=g, **F64)
    r = torch.randn(K, generator=g, **F64) + 3.0       # an offset that a baseline removes
    return theta, r, g


def per_sample_reinforce_grads(theta, r, a, b):
    """∇_θ of −log π(a_i) (r_{a_i} − b) for each sample: −(onehot(a_i) − π)(r_{a_i} − b)."""
    pi = torch.softmax(theta, 0)
    onehot = torch.nn.functional.one_hot(a, len(theta)).to(theta.dtype)
    return -(onehot - pi) * (r[a] - b).unsqueeze(1)


def test_reinforce_gradient_is_the_score_function_sum_and_the_baseline_is_detached():
    theta0, r, g = bandit()
    theta = theta0.clone().requires_grad_()
    a = torch.multinomial(torch.softmax(theta0, 0), 50, replacement=True, generator=g)
    log_prob = torch.log_softmax(theta, 0)[a]
    b = torch.full((50,), 2.5, **F64, requires_grad=True)
    reinforce_loss(log_prob, r[a], b).backward()
    torch.testing.assert_close(theta.grad,
                               per_sample_reinforce_grads(theta0, r, a, 2.5).mean(0))
    assert b.grad is None, "the baseline must carry no gradient"
    # a number as baseline is the same as a constant tensor; None is b = 0
    lp = torch.log_softmax(theta0, 0)[a]
    assert reinforce_loss(lp, r[a], 2.5).item() == pytest.approx(
        reinforce_loss(lp, r[a], torch.full((50,), 2.5, **F64)).item(), abs=1e-14)
    assert reinforce_loss(lp, r[a]).item() == pytest.approx(-(lp * r[a]).mean().item(),
                                                            abs=1e-14)


def test_reinforce_is_unbiased_for_the_exact_gradient_and_a_baseline_cuts_its_variance():
    # ∇_θ E_π[r] = π ⊙ (r − E_π r); the per-sample estimates (n = 20,000) average to it within
    # 4 standard errors, with b = 0 and with b = E_π r; the baseline lowers their variance
    theta, r, g = bandit(seed=1)
    pi = torch.softmax(theta, 0)
    exact = -(pi * (r - (pi * r).sum()))               # gradient of the loss −E[r]
    n = 20_000
    a = torch.multinomial(pi, n, replacement=True, generator=g)
    variances = []
    for b in (0.0, float((pi * r).sum())):
        grads = per_sample_reinforce_grads(theta, r, a, b)
        se = grads.std(0) / math.sqrt(n)
        assert bool(((grads.mean(0) - exact).abs() < 4 * se).all())
        variances.append(float(grads.var(0).sum()))
    assert variances[1] < 0.5 * variances[0]


def ppo_by_cases(rho, adv, eps):
    """min(ρA, clip(ρ)A) sample by sample, with the clipped branch written out."""
    out = []
    for p, a in zip(rho.tolist(), adv.tolist()):
        if a >= 0:
            out.append(min(p, 1 + eps) * a)
        else:
            out.append(max(p, 1 - eps) * a)
    return torch.tensor(out, **F64)


def test_ppo_clip_loss_equals_its_piecewise_form_and_counts_the_clipped():
    g = torch.Generator().manual_seed(2)
    log_ratio = 0.5 * torch.randn(200, generator=g, **F64)
    old = torch.randn(200, generator=g, **F64)
    adv = torch.randn(200, generator=g, **F64)
    eps = 0.2
    out = ppo_clip_loss(old + log_ratio, old, adv, eps)
    rho = log_ratio.exp()
    assert out.loss.item() == pytest.approx(-ppo_by_cases(rho, adv, eps).mean().item(),
                                            abs=1e-14)
    assert out.clip_fraction.item() == pytest.approx(
        sum(abs(p - 1) > eps for p in rho.tolist()) / 200, abs=1e-15)
    assert 0 < out.clip_fraction.item() < 1


def test_ppo_gradient_is_zero_exactly_where_the_clip_is_active():
    g = torch.Generator().manual_seed(3)
    n, eps = 300, 0.1
    old = torch.randn(n, generator=g, **F64)
    log_prob = (old + 0.3 * torch.randn(n, generator=g, **F64)).requires_grad_()
    adv = torch.randn(n, generator=g, **F64)
    ppo_clip_loss(log_prob, old, adv, eps).loss.backward()
    rho = (log_prob - old).exp().detach()
    active = ((rho > 1 + eps) & (adv > 0)) | ((rho < 1 - eps) & (adv < 0))
    assert active.any() and (~active).any()
    assert bool((log_prob.grad[active] == 0).all())
    # elsewhere ∂L/∂log π_i = −ρ_i A_i / n (the unclipped surrogate's gradient)
    torch.testing.assert_close(log_prob.grad[~active], (-rho * adv / n)[~active])


def test_ppo_at_the_old_policy_is_the_policy_gradient():
    # ρ = 1: L = −mean(A) and ∇L = −mean(A ∇ log π), REINFORCE with the advantage
    g = torch.Generator().manual_seed(4)
    lp = torch.randn(10, generator=g, **F64).requires_grad_()
    adv = torch.randn(10, generator=g, **F64)
    out = ppo_clip_loss(lp, lp.detach(), adv)
    assert out.loss.item() == pytest.approx(-adv.mean().item(), abs=1e-14)
    assert out.clip_fraction.item() == 0
    (grad,) = torch.autograd.grad(out.loss, lp)
    (grad_pg,) = torch.autograd.grad(reinforce_loss(lp, adv), lp)
    torch.testing.assert_close(grad, grad_pg)


def test_value_loss_plain_and_clipped():
    g = torch.Generator().manual_seed(5)
    v = torch.randn(50, generator=g, **F64)
    v_old = v + 0.4 * torch.randn(50, generator=g, **F64)
    R = torch.randn(50, generator=g, **F64)
    assert value_loss(v, R).item() == pytest.approx(0.5 * ((v - R) ** 2).mean().item(),
                                                    abs=1e-14)
    eps = 0.2
    expected = []
    for vi, oi, ri in zip(v.tolist(), v_old.tolist(), R.tolist()):
        clipped = oi + min(max(vi - oi, -eps), eps)
        expected.append(0.5 * max((vi - ri) ** 2, (clipped - ri) ** 2))
    assert value_loss(v, R, v_old, eps).item() == pytest.approx(sum(expected) / 50, abs=1e-14)
    # inside the trust region the clipped loss is the plain one
    near = v + 0.01 * torch.randn(50, generator=g, **F64)
    assert value_loss(v, R, near, 0.05).item() == pytest.approx(value_loss(v, R).item(),
                                                                abs=1e-14)


def test_entropy_bonus():
    K = 5
    assert entropy_bonus(torch.zeros(3, K, **F64)).item() == pytest.approx(math.log(K),
                                                                           abs=1e-14)
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(4, K, generator=g, **F64)
    p = torch.softmax(logits, -1)
    assert entropy_bonus(logits).item() == pytest.approx(
        -(p * p.log()).sum(-1).mean().item(), abs=1e-14)
    # a masked action (−inf logit) contributes nothing: the entropy of the other K − 1
    masked = torch.zeros(1, K, **F64)
    masked[0, 0] = -math.inf
    assert entropy_bonus(masked).item() == pytest.approx(math.log(K - 1), abs=1e-14)


def two_categoricals(seed=7, K=6, scale=0.7):
    g = torch.Generator().manual_seed(seed)
    p_old = torch.softmax(torch.randn(K, generator=g, **F64), 0)
    p_new = torch.softmax(p_old.log() + scale * torch.randn(K, generator=g, **F64), 0)
    kl = float((p_old * (p_old / p_new).log()).sum())
    return p_old, p_new, kl, g


def test_k1_and_k3_have_the_exact_kl_as_their_expectation_and_k2_does_not():
    p_old, p_new, kl, _ = two_categoricals()
    torch_kl = torch.distributions.kl_divergence(torch.distributions.Categorical(probs=p_old),
                                                 torch.distributions.Categorical(probs=p_new))
    assert kl == pytest.approx(torch_kl.item(), rel=1e-12)
    log_ratio = (p_new / p_old).log()                  # one entry per action
    assert float((p_old * kl_k1(log_ratio)).sum()) == pytest.approx(kl, rel=1e-12)
    assert float((p_old * kl_k3(log_ratio)).sum()) == pytest.approx(kl, rel=1e-12)
    assert abs(float((p_old * kl_k2(log_ratio)).sum()) - kl) > 1e-3 * kl


def test_kl_estimators_by_monte_carlo():
    # n = 40,000 draws a ~ π_old: the means of k1 and k3 are within 4 standard errors of the
    # exact KL; k1 is negative for some draws, k3 never; close policies: k3 has the lower spread
    p_old, p_new, kl, g = two_categoricals(seed=8, scale=0.3)
    n = 40_000
    a = torch.multinomial(p_old, n, replacement=True, generator=g)
    log_ratio = (p_new[a] / p_old[a]).log()
    for name, k in (("k1", kl_k1(log_ratio)), ("k3", kl_k3(log_ratio))):
        se = float(k.std()) / math.sqrt(n)
        assert abs(approx_kl(log_ratio, name).item() - kl) < 4 * se, name
    assert bool((kl_k1(log_ratio) < 0).any())
    assert bool((kl_k3(log_ratio) >= 0).all())
    assert float(kl_k3(log_ratio).std()) < float(kl_k1(log_ratio).std())
    assert approx_kl(log_ratio).item() == approx_kl(log_ratio, "k3").item()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-30, 30, allow_nan=False), min_size=1, max_size=20))
def test_property_k3_and_k2_are_non_negative_and_k3_is_zero_only_at_equal_probabilities(xs):
    log_ratio = torch.tensor(xs, **F64)
    k3 = kl_k3(log_ratio)
    assert bool((k3 >= 0).all()) and bool((kl_k2(log_ratio) >= 0).all())
    assert bool((k3[log_ratio.abs() > 1e-150] > 0).all())
    assert bool((k3[log_ratio == 0] == 0).all())
    # for small |log ρ| k3 ≈ k2 (both ½ (log ρ)² to second order; k3 / k2 − 1 ≈ log ρ / 3)
    small = log_ratio * 1e-4
    torch.testing.assert_close(kl_k3(small), kl_k2(small), rtol=2e-3, atol=1e-300)


def test_k3_is_accurate_for_tiny_and_large_log_ratios_and_has_the_analytic_gradient():
    # k3(x) = e^x − 1 − x = Σ_{n≥2} xⁿ / n!, summed exactly enough with 40 terms
    xs = [1e-12, -3e-9, 1e-5, -1e-4, 9.99e-4, -1.001e-3, 1.001e-3, 0.5, -3.0, 4.0]
    series = [math.fsum(x ** n / math.factorial(n) for n in range(2, 40)) for x in xs]
    torch.testing.assert_close(kl_k3(torch.tensor(xs, **F64)), torch.tensor(series, **F64),
                               rtol=1e-13, atol=0)
    # dk3/dx = e^x − 1 on both branches
    x = torch.tensor([-2e-3, -5e-4, 1e-6, 7e-4, 2e-3, 1.5], **F64, requires_grad=True)
    (grad,) = torch.autograd.grad(kl_k3(x).sum(), x)
    torch.testing.assert_close(grad, torch.expm1(x.detach()), rtol=1e-12, atol=0)
    assert torch.autograd.gradcheck(kl_k3, (x,))


@pytest.mark.parametrize("call, match", [
    (lambda: ppo_clip_loss(torch.zeros(3), torch.zeros(3), torch.ones(3), eps=0.0),
     "eps must be a positive"),
    (lambda: ppo_clip_loss(torch.zeros(3), torch.zeros(3), torch.ones(3), eps=-0.2),
     "eps must be a positive"),
    (lambda: ppo_clip_loss(torch.zeros(3), torch.zeros(4), torch.ones(3)),
     r"old_log_prob must have the shape of log_prob \(3,\)"),
    (lambda: ppo_clip_loss(torch.zeros(3), torch.zeros(3), torch.ones(3, dtype=torch.int64)),
     "adv must be a float tensor"),
    (lambda: ppo_clip_loss(torch.zeros(0), torch.zeros(0), torch.ones(0)), "at least one"),
    (lambda: reinforce_loss(torch.zeros(3), torch.zeros(2)), "returns must have the shape"),
    (lambda: reinforce_loss(torch.zeros(3), torch.zeros(3), torch.zeros(2)),
     "baseline must have the shape"),
    (lambda: reinforce_loss(torch.zeros(3), torch.zeros(3), "mean"), "baseline must be"),
    (lambda: reinforce_loss(torch.zeros(3), torch.zeros(3), math.nan), "baseline must be"),
    (lambda: value_loss(torch.zeros(3), torch.zeros(3), torch.zeros(3), clip_eps=0.0),
     "clip_eps must be a positive"),
    (lambda: value_loss(torch.zeros(3), torch.zeros(3), None, clip_eps=0.2), "old_values"),
    (lambda: value_loss(torch.zeros(3), torch.zeros(3), torch.zeros(2), clip_eps=0.2),
     "old_values must have the shape"),
    (lambda: value_loss(torch.zeros(3), [0.0, 1.0, 2.0]), "returns must be a float tensor"),
    (lambda: entropy_bonus(torch.zeros(3, 0)), "K >= 1"),
    (lambda: entropy_bonus(torch.zeros(3, dtype=torch.int64)), "float tensor"),
    (lambda: approx_kl(torch.zeros(3), "k4"), "estimator must be one of"),
    (lambda: kl_k3([0.1]), "log_ratio must be a float tensor"),
])
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()
