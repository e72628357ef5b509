"""Tests for gans.losses: each loss against its formula (written with log σ, not softplus) on
known inputs, stability at large logits, gradients (gradcheck), the gradient penalty on linear
critics (‖∇‖ = ‖w‖ exactly), the measured gradient norms at interpolates (the same ones the
penalty uses), weight clipping, and bad input."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from gans import (
    GAN_LOSSES,
    GANLoss,
    clip_weights_,
    critic_gradient_norms,
    gan_loss,
    gradient_penalty,
)

F64 = torch.float64
PROPERTY = settings(max_examples=40, deadline=None, derandomize=True)


def outputs(seed, n=7, m=5, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    return 3 * torch.randn(n, generator=g, dtype=dtype), 3 * torch.randn(m, generator=g,
                                                                         dtype=dtype)


def naive(name, r, f):
    """The textbook formulas, written directly (log of sigmoid, not softplus)."""
    sr, sf = torch.sigmoid(r), torch.sigmoid(f)
    if name in ("minimax", "non_saturating"):
        critic = -(torch.log(sr).mean() + torch.log(1 - sf).mean())
        gen = torch.log(1 - sf).mean() if name == "minimax" else -torch.log(sf).mean()
    elif name == "wasserstein":
        critic, gen = -(r.mean() - f.mean()), -f.mean()
    else:
        critic = torch.clamp(1 - r, min=0).mean() + torch.clamp(1 + f, min=0).mean()
        gen = -f.mean()
    return critic, gen


@pytest.mark.parametrize("name", GAN_LOSSES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_losses_match_their_formulas(name, seed):
    r, f = outputs(seed)
    loss = gan_loss(name)
    critic, gen = naive(name, r, f)
    torch.testing.assert_close(loss.critic(r, f), critic, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(loss.generator(f), gen, rtol=1e-12, atol=1e-12)
    # (B, 1) outputs give the same numbers as (B,)
    torch.testing.assert_close(loss.critic(r[:, None], f[:, None]), critic, rtol=1e-12,
                               atol=1e-12)


def test_known_values():
    zero, one = torch.zeros(4, dtype=F64), torch.ones(3, dtype=F64)
    # D = σ(0) = 1/2 everywhere: critic loss 2 log 2, minimax G loss log ½, NS G loss log 2
    assert gan_loss("minimax").critic(zero, zero).item() == pytest.approx(2 * math.log(2), 1e-15)
    assert gan_loss("minimax").generator(zero).item() == pytest.approx(-math.log(2), 1e-15)
    assert gan_loss("non_saturating").generator(zero).item() == pytest.approx(math.log(2), 1e-15)
    # hinge: margin met exactly on both sides gives 0; at zero outputs it is 1 + 1
    assert gan_loss("hinge").critic(one, -one).item() == 0.0
    assert gan_loss("hinge").critic(zero, zero).item() == 2.0
    assert gan_loss("wasserstein").critic(2 * one, zero).item() == -2.0
    assert gan_loss("wasserstein").generator(2 * one).item() == -2.0


@pytest.mark.parametrize("name", ["minimax", "non_saturating"])
def test_bce_losses_are_stable_at_huge_logits(name):
    big = torch.tensor([200.0, -200.0], dtype=torch.float32)
    loss = gan_loss(name)
    assert torch.isfinite(loss.critic(big, big))
    # a confident D: real at +200 (loss 0), fake at +200 (loss 200 each) → mean 100
    assert loss.critic(big[:1], big[:1]).item() == pytest.approx(200.0, rel=1e-6)
    assert torch.isfinite(loss.generator(big))


def test_saturation_gradients_in_the_logit():
    # d/dd E log(1 − σ(d)) = −σ(d);  d/dd −E log σ(d) = −(1 − σ(d)) (per sample, / B)
    d = torch.tensor([-8.0, 0.0, 3.0], dtype=F64, requires_grad=True)
    (g_mm,) = torch.autograd.grad(gan_loss("minimax").generator(d), d)
    (g_ns,) = torch.autograd.grad(gan_loss("non_saturating").generator(d), d)
    s = torch.sigmoid(d.detach())
    torch.testing.assert_close(g_mm, -s / 3, rtol=1e-12, atol=0)
    torch.testing.assert_close(g_ns, -(1 - s) / 3, rtol=1e-12, atol=0)
    assert g_mm[0].abs() < 1e-3 < g_ns[0].abs()


@pytest.mark.parametrize("name", GAN_LOSSES)
def test_gradcheck(name):
    r, f = outputs(3)
    # (random outputs land on hinge's kinks at ±1 with probability 0)
    r, f = r.requires_grad_(True), f.requires_grad_(True)
    loss = gan_loss(name)
    assert torch.autograd.gradcheck(loss.critic, (r, f))
    assert torch.autograd.gradcheck(loss.generator, (f,))


@PROPERTY
@given(st.lists(st.floats(-30, 30), min_size=1, max_size=8),
       st.lists(st.floats(-30, 30), min_size=1, max_size=8))
def test_bounds(real, fake):
    r, f = torch.tensor(real, dtype=F64), torch.tensor(fake, dtype=F64)
    bce = gan_loss("minimax").critic(r, f)
    assert bce >= 0                                      # −log of probabilities
    assert gan_loss("minimax").generator(f) <= 0          # log of a probability
    assert gan_loss("non_saturating").generator(f) >= 0
    assert gan_loss("hinge").critic(r, f) >= 0


@pytest.mark.parametrize("shape", [(6, 3), (6, 2, 4, 4)])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_gradient_penalty_on_a_linear_critic(shape, dtype):
    # D(x) = <w, x> + b has ∇D = w everywhere, so GP = (‖w‖ − target)² exactly, whatever ε.
    g = torch.Generator().manual_seed(0)
    w = torch.randn(shape[1:], generator=g, dtype=dtype)
    real, fake = torch.randn(shape, generator=g, dtype=dtype), torch.randn(shape, generator=g,
                                                                          dtype=dtype)

    def critic(x):
        return (x * w).flatten(1).sum(1) + 0.7

    for target in (1.0, 0.5):
        gp = gradient_penalty(critic, real, fake, target=target, generator=g)
        expected = (w.norm() - target) ** 2
        tol = 1e-12 if dtype == F64 else 1e-5
        torch.testing.assert_close(gp, expected, rtol=tol, atol=tol)


def test_gradient_penalty_trains_the_critic():
    # With a linear critic nn.Linear(3, 1), GP = (‖w‖ − 1)², whose gradient in w is
    # 2 (‖w‖ − 1) w / ‖w‖: the penalty must backpropagate into the weights (create_graph=True).
    torch.manual_seed(0)
    critic = nn.Linear(3, 1).double()
    real, fake = torch.randn(5, 3, dtype=F64), torch.randn(5, 3, dtype=F64)
    gradient_penalty(critic, real, fake).backward()
    w = critic.weight.detach()
    torch.testing.assert_close(critic.weight.grad, 2 * (w.norm() - 1) * w / w.norm(),
                               rtol=1e-12, atol=1e-12)
    assert critic.bias.grad is None or not critic.bias.grad.any()    # ∇_x D does not see b


def test_gradient_penalty_interpolates():
    # D(x) = ½‖x‖² has ∇D(x̂) = x̂; with real = a·1 and fake = 0, x̂ = ε a·1 and ‖x̂‖ = ε a √d.
    # Check the mean over n draws of ε ~ U(0, 1): E (ε c − 1)² = c²/3 − c + 1 with c = a√d = 2,
    # i.e. E u² = 1/3 for u = 2ε − 1 ~ U(−1, 1); its sd is √(E u⁴ − (E u²)²) = √(1/5 − 1/9), and
    # the check allows 4 standard errors, 4 · 0.298 / √n ≈ 0.0027 at n = 200,000.
    n, d, a = 200_000, 4, 1.0
    real, fake = torch.full((n, d), a, dtype=F64), torch.zeros(n, d, dtype=F64)
    gp = gradient_penalty(lambda x: 0.5 * (x**2).sum(1), real, fake,
                          generator=torch.Generator().manual_seed(1))
    c = a * math.sqrt(d)
    assert abs(gp.item() - (c**2 / 3 - c + 1)) < 4 * math.sqrt(1 / 5 - 1 / 9) / math.sqrt(n)


@pytest.mark.parametrize("shape", [(6, 3), (5, 2, 4, 4)])
def test_critic_gradient_norms_of_a_linear_critic(shape):
    # D(x) = <w, x> + b: ∇D = w at every point, so every norm is ‖w‖ exactly, whatever ε.
    g = torch.Generator().manual_seed(3)
    w = torch.randn(shape[1:], generator=g, dtype=F64)
    real, fake = torch.randn(shape, generator=g, dtype=F64), torch.randn(shape, generator=g,
                                                                        dtype=F64)
    norms = critic_gradient_norms(lambda x: (x * w).flatten(1).sum(1) - 2.0, real, fake,
                                  generator=g)
    assert norms.shape == (shape[0],) and norms.dtype == F64 and not norms.requires_grad
    torch.testing.assert_close(norms, w.norm().expand(shape[0]), rtol=1e-12, atol=1e-12)


def test_critic_gradient_norms_at_known_interpolates():
    # D(x) = ½‖x‖²: ∇D(x̂) = x̂ = ε x + (1 − ε) x̃, so with the ε drawn from the same generator
    # state the norms are ‖ε_i x_i + (1 − ε_i) x̃_i‖, per sample.
    g = torch.Generator().manual_seed(4)
    real, fake = torch.randn(7, 3, generator=g, dtype=F64), torch.randn(7, 3, generator=g,
                                                                       dtype=F64)
    state = g.get_state()
    norms = critic_gradient_norms(lambda x: 0.5 * (x**2).sum(1), real, fake, generator=g)
    g.set_state(state)
    eps = torch.rand(7, 1, generator=g, dtype=F64)
    torch.testing.assert_close(norms, (eps * real + (1 - eps) * fake).norm(dim=1), rtol=1e-12,
                               atol=1e-12)


def test_gradient_penalty_is_the_mean_squared_deviation_of_the_norms():
    # A nonlinear critic (an MLP): GP(target) = mean((n_i − target)²) with the n_i measured by
    # critic_gradient_norms for the same generator seed, i.e. the two share the interpolates.
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1)).double()
    real, fake = torch.randn(9, 3, dtype=F64), torch.randn(9, 3, dtype=F64)
    norms = critic_gradient_norms(critic, real, fake, generator=torch.Generator().manual_seed(5))
    assert norms.std() > 1e-3                     # the norms differ between interpolates
    for target in (1.0, 0.3):
        gp = gradient_penalty(critic, real, fake, target=target,
                              generator=torch.Generator().manual_seed(5))
        torch.testing.assert_close(gp, ((norms - target) ** 2).mean(), rtol=1e-12, atol=1e-12)
    # a different seed draws other interpolates, hence other norms
    other = critic_gradient_norms(critic, real, fake, generator=torch.Generator().manual_seed(6))
    assert not torch.allclose(norms, other)


def test_critic_gradient_norms_leave_the_critic_alone():
    # measurement only: no parameter gradients, no graph, and it works under no_grad
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 1))
    real, fake = torch.randn(4, 2), torch.randn(4, 2)
    norms = critic_gradient_norms(critic, real, fake, generator=torch.Generator().manual_seed(0))
    assert all(p.grad is None for p in critic.parameters())
    assert norms.grad_fn is None and not norms.requires_grad
    with torch.no_grad():
        again = critic_gradient_norms(critic, real, fake,
                                      generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(again, norms, rtol=0, atol=0)


def test_clip_weights():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    before = [p.detach().clone() for p in m.parameters()]
    assert clip_weights_(m, 0.1) is m
    for p, p0 in zip(m.parameters(), before):
        torch.testing.assert_close(p.detach(), p0.clamp(-0.1, 0.1))
    assert max(p.abs().max().item() for p in m.parameters()) == pytest.approx(0.1)


def test_bad_input():
    with pytest.raises(ValueError, match="minimax.*non_saturating.*wasserstein.*hinge"):
        gan_loss("vanilla")
    with pytest.raises(ValueError, match="must be one of"):
        GANLoss("wgan")
    loss = gan_loss("hinge")
    r = torch.zeros(4)
    with pytest.raises(ValueError, match="real_out and fake_out"):
        loss.critic(r, r[:, None])
    with pytest.raises(ValueError, match=r"\(B,\) or \(B, 1\)"):
        loss.critic(torch.zeros(4, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="float tensor"):
        loss.generator(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="fake_out"):
        loss.generator([0.0, 1.0])
    with pytest.raises(ValueError, match="fake_out"):
        loss.generator(torch.zeros(0))

    def lin(x):
        return x.sum(1)

    with pytest.raises(ValueError, match="same shape"):
        gradient_penalty(lin, torch.zeros(4, 2), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="same shape"):
        gradient_penalty(lin, torch.zeros(4), torch.zeros(4))
    with pytest.raises(ValueError, match="target"):
        gradient_penalty(lin, torch.zeros(4, 2), torch.zeros(4, 2), target=0.0)
    with pytest.raises(ValueError, match="critic"):
        gradient_penalty(lambda x: x, torch.zeros(4, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="one output per sample"):
        gradient_penalty(lambda x: x.sum().reshape(1), torch.zeros(4, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="same shape"):
        critic_gradient_norms(lin, torch.zeros(4, 2), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="same shape"):
        critic_gradient_norms(lin, torch.zeros(4, 2, dtype=F64), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="same shape"):
        critic_gradient_norms(lin, torch.zeros(4, 2, dtype=torch.long),
                              torch.zeros(4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="callable"):
        critic_gradient_norms("critic", torch.zeros(4, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="torch.Generator"):
        critic_gradient_norms(lin, torch.zeros(4, 2), torch.zeros(4, 2), generator=0)
    with pytest.raises(ValueError, match="critic"):
        critic_gradient_norms(lambda x: x, torch.zeros(4, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="one output per sample"):
        critic_gradient_norms(lambda x: x[:2].sum(1), torch.zeros(4, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="positive"):
        clip_weights_(nn.Linear(2, 1), -1.0)
    with pytest.raises(ValueError, match="nn.Module"):
        clip_weights_([torch.zeros(2)], 0.1)
