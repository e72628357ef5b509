"""Tests for alignment.dpo: the DPO, conservative DPO and IPO losses against their closed forms,
their gradients against the analytic DPO gradient, and the first DPO step on the book's GPT."""

import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from alignment import (
    completion_log_probs,
    completion_mask,
    dpo_loss,
    implicit_reward,
    ipo_loss,
    log_ratio_margin,
)
from autoregressive import GPT, GPTConfig

F64 = dict(dtype=torch.float64)


def _four(seed=0, B=6):
    g = torch.Generator().manual_seed(seed)
    return [-(torch.rand(B, generator=g, **F64) * 20) for _ in range(4)]


def _with_margin(h, beta=1.0):
    """Log-probabilities whose margin is exactly h (B,): only log π(y_w) differs from π_ref."""
    h = torch.as_tensor(h, **F64)
    ref_w, ref_l = torch.full_like(h, -3.0), torch.full_like(h, -5.0)
    return ref_w + h, ref_l.clone(), ref_w, ref_l


def test_margin_and_implicit_rewards_by_hand():
    pw, pl, rw, rl = _four()
    out = dpo_loss(pw, pl, rw, rl, beta=0.3)
    h = (pw - rw) - (pl - rl)
    assert torch.allclose(out.margin, h, atol=1e-12)
    assert torch.allclose(log_ratio_margin(pw, pl, rw, rl), h, atol=1e-12)
    assert torch.allclose(out.chosen_rewards, 0.3 * (pw - rw), atol=1e-12)
    assert torch.allclose(out.rejected_rewards, 0.3 * (pl - rl), atol=1e-12)
    assert torch.allclose(out.chosen_rewards - out.rejected_rewards, 0.3 * h, atol=1e-12)
    assert out.accuracy.item() == pytest.approx(float((h > 0).double().mean()))
    assert 0 < out.accuracy.item() < 1, "the draw should rank some pairs each way"
    expected = -torch.log(torch.sigmoid(0.3 * h))
    assert torch.allclose(out.losses, expected, rtol=1e-12)
    assert out.loss.item() == pytest.approx(expected.mean().item(), rel=1e-12)
    assert torch.allclose(implicit_reward(pw, rw, 0.3), out.chosen_rewards)


@settings(max_examples=60, deadline=None)
@given(h=st.floats(-200, 200), beta=st.floats(1e-3, 10), c=st.floats(-50, 50),
       eps=st.floats(0, 0.5))
def test_losses_are_functions_of_the_margin_only(h, beta, c, eps):
    # shifting both log-probabilities of y_w (a prompt-dependent constant in the reward) or all
    # four leaves the losses unchanged; the DPO loss is ≥ max(0, −βh) (softplus), never inf
    pw, pl, rw, rl = _with_margin([h])
    a = dpo_loss(pw, pl, rw, rl, beta, label_smoothing=eps).loss.item()
    b = dpo_loss(pw + c, pl, rw + c, rl, beta, label_smoothing=eps).loss.item()
    d = dpo_loss(pw + c, pl + c, rw + c, rl + c, beta, label_smoothing=eps).loss.item()
    tol = 1e-9 * (1 + abs(a)) + 1e-12 * beta * abs(c)
    assert abs(a - b) <= tol and abs(a - d) <= tol
    x = beta * h
    assert math.isfinite(a) and a >= max(0.0, -x) * (1 - eps) - 1e-12
    i = ipo_loss(pw, pl, rw, rl, beta).loss.item()
    assert i == pytest.approx((h - 1 / (2 * beta)) ** 2, rel=1e-9, abs=1e-9)


def test_dpo_loss_at_the_reference_is_log_2_and_its_gradient_raises_the_margin():
    pw, pl, rw, rl = _four(1)
    pw, pl = rw.clone().requires_grad_(True), rl.clone().requires_grad_(True)
    for beta in (0.1, 1.0, 7.0):
        out = dpo_loss(pw, pl, rw, rl, beta)
        assert out.loss.item() == math.log(2)
        assert bool((out.margin == 0).all()) and out.accuracy.item() == 0.0
        gw, gl = torch.autograd.grad(out.loss, (pw, pl))
        # dL/d log π(y_w) = −β/(2B), dL/d log π(y_l) = +β/(2B): descent raises h
        assert torch.allclose(gw, torch.full_like(gw, -beta / (2 * len(gw))), rtol=1e-14)
        assert torch.allclose(gl, -gw, rtol=1e-14)


def test_dpo_gradient_is_sigma_times_beta_times_grad_h_on_a_softmax_bandit():
    # π_θ = softmax(θ) over K arms: h = θ_w − θ_l − (log π_ref(w) − log π_ref(l)) (the
    # normaliser cancels), so ∇_θ h = e_w − e_l and ∇_θ L = −(1/B) Σ β σ(−β h_b) (e_w − e_l)
    g = torch.Generator().manual_seed(2)
    K, B, beta = 6, 40, 0.7
    theta = torch.randn(K, generator=g, **F64).requires_grad_(True)
    log_ref = torch.log_softmax(torch.randn(K, generator=g, **F64), -1)
    w, l = torch.randint(K, (B,), generator=g), torch.randint(K, (B,), generator=g)
    log_pi = torch.log_softmax(theta, -1)
    out = dpo_loss(log_pi[w], log_pi[l], log_ref[w], log_ref[l], beta)
    (grad,) = torch.autograd.grad(out.loss, theta)
    with torch.no_grad():
        h = theta[w] - theta[l] - (log_ref[w] - log_ref[l])
        weight = beta * torch.sigmoid(-beta * h) / B
        expected = torch.zeros(K, **F64).index_add_(0, w, -weight).index_add_(0, l, weight)
    assert torch.allclose(out.margin, h, atol=1e-12)
    assert torch.allclose(grad, expected, atol=1e-14)


def test_gradcheck_dpo_cdpo_ipo():
    pw, pl, rw, rl = _four(3, B=4)
    pw.requires_grad_(True)
    pl.requires_grad_(True)
    for f in (lambda a, b: dpo_loss(a, b, rw, rl, 0.4).loss,
              lambda a, b: dpo_loss(a, b, rw, rl, 0.4, label_smoothing=0.2).loss,
              lambda a, b: ipo_loss(a, b, rw, rl, 0.4).loss):
        assert torch.autograd.gradcheck(f, (pw, pl))


def test_reference_log_probs_get_no_gradient():
    pw, pl, rw, rl = _four(4)
    rw.requires_grad_(True)
    pw.requires_grad_(True)
    dpo_loss(pw, pl, rw, rl).loss.backward()
    assert rw.grad is None and pw.grad is not None


def test_cdpo_at_zero_is_dpo_symmetric_at_one_half_and_minimised_where_the_odds_say():
    pw, pl, rw, rl = _four(5)
    assert torch.equal(dpo_loss(pw, pl, rw, rl, 0.5, label_smoothing=0.0).losses,
                       dpo_loss(pw, pl, rw, rl, 0.5).losses)
    a = dpo_loss(pw, pl, rw, rl, 0.5, label_smoothing=0.5).losses
    b = dpo_loss(pl, pw, rl, rw, 0.5, label_smoothing=0.5).losses
    assert torch.allclose(a, b, rtol=1e-14)
    # for 0 < ε < ½ it is not symmetric, and the loss as a function of h has its minimum at
    # β h* = log((1 − ε)/ε): a fine grid of h and the gradient there agree
    beta = 0.5
    for eps in (0.05, 0.2, 0.5):
        h_star = math.log((1 - eps) / eps) / beta
        grid = torch.linspace(h_star - 3, h_star + 3, 6001, **F64)
        losses = dpo_loss(*_with_margin(grid), beta, label_smoothing=eps).losses
        assert grid[losses.argmin()].item() == pytest.approx(h_star, abs=1e-3)
        hs = torch.tensor([h_star], **F64).requires_grad_(True)
        (g,) = torch.autograd.grad(dpo_loss(*_with_margin(hs), beta, label_smoothing=eps).loss,
                                   hs)
        assert abs(g.item()) < 1e-12
    c = dpo_loss(pw, pl, rw, rl, 0.5, label_smoothing=0.2).losses
    d = dpo_loss(pl, pw, rl, rw, 0.5, label_smoothing=0.2).losses
    assert not torch.allclose(c, d)


def test_ipo_is_minimised_at_one_over_two_beta_and_dpo_is_not():
    # one pair on a softmax bandit, a deterministic preference for arm 0 over arm 1: gradient
    # descent on IPO settles at h = 1/(2β); DPO's h keeps growing (its optimum is h = ∞)
    beta = 0.25
    log_ref = torch.log(torch.tensor([0.2, 0.5, 0.3], **F64))
    w, l = torch.tensor([0]), torch.tensor([1])
    margins = {}
    for name, f in (("ipo", ipo_loss), ("dpo", dpo_loss)):
        theta = log_ref.clone().requires_grad_(True)
        opt = torch.optim.SGD([theta], lr=0.2)
        trace = []
        for _ in range(400):
            log_pi = torch.log_softmax(theta, -1)
            out = f(log_pi[w], log_pi[l], log_ref[w], log_ref[l], beta)
            opt.zero_grad()
            out.loss.backward()
            opt.step()
            trace.append(out.margin.item())
        margins[name] = trace
    assert margins["ipo"][-1] == pytest.approx(1 / (2 * beta), abs=1e-6)
    assert margins["dpo"][-1] > 2 / beta and margins["dpo"][-1] > margins["dpo"][-100] + 0.1
    h = torch.tensor([1 / (2 * beta)], **F64)
    assert ipo_loss(*_with_margin(h), beta).loss.item() == 0.0


def test_first_dpo_step_on_a_gpt(one_thread):
    # the policy starts as a copy of the reference: loss log 2, h = 0; its gradient is
    # −(β/2) ∇_θ mean(h), and one small SGD step lowers the loss and raises the mean margin
    torch.manual_seed(0)
    V, T, B, beta = 11, 10, 4, 0.5
    ref = GPT(GPTConfig(vocab_size=V, block_size=T, n_layer=1, n_head=2, n_embd=16)).double()
    policy = copy.deepcopy(ref)
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(V, (B, 4), generator=g)
    chosen = torch.cat([prompt, torch.randint(V, (B, T - 4), generator=g)], 1)
    rejected = torch.cat([prompt, torch.randint(V, (B, T - 4), generator=g)], 1)
    mask = completion_mask(torch.full((B,), 4), torch.tensor([T, T - 1, T - 2, T]), T)

    def losses():
        lw = completion_log_probs(policy, chosen, mask).total
        ll = completion_log_probs(policy, rejected, mask).total
        with torch.no_grad():
            rw = completion_log_probs(ref, chosen, mask).total
            rl = completion_log_probs(ref, rejected, mask).total
        return dpo_loss(lw, ll, rw, rl, beta), log_ratio_margin(lw, ll, rw, rl)

    out, h = losses()
    assert out.loss.item() == math.log(2) and bool((out.margin == 0).all())
    params = [p for p in policy.parameters()]
    g_loss = torch.autograd.grad(out.loss, params, retain_graph=True)
    g_h = torch.autograd.grad(h.mean(), params)
    for a, b in zip(g_loss, g_h):
        assert torch.allclose(a, -beta / 2 * b, rtol=1e-10, atol=1e-16)
    assert sum(float(b.abs().sum()) for b in g_h) > 0
    with torch.no_grad():
        for p, gp in zip(params, g_loss):
            p -= 1e-2 * gp
    after, _ = losses()
    assert after.loss.item() < math.log(2)
    assert after.margin.mean().item() > 0


@pytest.mark.parametrize("f", [dpo_loss, ipo_loss])
def test_bad_input(f):
    a = torch.zeros(3)
    with pytest.raises(ValueError, match="beta"):
        f(a, a, a, a, 0.0)
    with pytest.raises(ValueError, match="beta"):
        f(a, a, a, a, -0.1)
    with pytest.raises(ValueError, match="same shape"):
        f(a, torch.zeros(4), a, a, 0.1)
    with pytest.raises(ValueError, match="same shape"):
        f(a, a, a, torch.zeros(2), 0.1)
    with pytest.raises(ValueError, match=r"\(B,\)"):
        f(torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(3, 2), 0.1)
    with pytest.raises(ValueError, match="float"):
        f(a.long(), a, a, a, 0.1)
    with pytest.raises(ValueError, match=r"B >= 1"):
        f(*[torch.zeros(0)] * 4, 0.1)


@pytest.mark.parametrize("eps", [-0.01, 0.51, 1.0, True, "0.1"])
def test_label_smoothing_outside_zero_one_half(eps):
    a = torch.zeros(3)
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(a, a, a, a, 0.1, label_smoothing=eps)


def test_implicit_reward_bad_input():
    with pytest.raises(ValueError, match="beta"):
        implicit_reward(torch.zeros(2), torch.zeros(2), 0)
    with pytest.raises(ValueError, match="same shape"):
        implicit_reward(torch.zeros(2), torch.zeros(3), 1.0)
