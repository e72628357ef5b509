"""Tests for gans.training_step.adversarial_step: it runs under utils.training.fit on 2-D toys
and on digits (plain and conditional) with finite metrics; n_critic critic updates per generator
update; the gradient-penalty metric; weight clipping; the generator update leaves the critic
alone; noise follows the batch's dtype; a short GAN moves the generator towards the data;
instance noise (σ = 0 is the noiseless step, the critic sees x + σε in every one of its forward
passes, an annealed schedule's σ_t is used at call t); bad arguments."""

import math

import pytest
import torch

from gans import (
    DCGANDiscriminator,
    DCGANGenerator,
    GANLoss,
    MLPCritic,
    MLPGenerator,
    adversarial_step,
)
from utils.data import batches, digits, toy2d
from utils.training import fit

pytestmark = pytest.mark.usefixtures("one_thread")


class CountingOptimizer:
    """Wraps an optimiser and counts its ``step`` calls."""

    def __init__(self, opt):
        self.opt, self.steps = opt, 0

    def zero_grad(self, set_to_none=True):
        self.opt.zero_grad(set_to_none=set_to_none)

    def step(self):
        self.opt.step()
        self.steps += 1


def mlp_gan(latent_dim=2, num_classes=None, lr=1e-3, seed=0, **critic_kw):
    torch.manual_seed(seed)
    g = MLPGenerator(latent_dim, 2, hidden=16, depth=2, num_classes=num_classes)
    d = MLPCritic(2, hidden=16, depth=2, num_classes=num_classes, **critic_kw)
    return (g, d, torch.optim.Adam(g.parameters(), lr, betas=(0.5, 0.999)),
            torch.optim.Adam(d.parameters(), lr, betas=(0.5, 0.999)))


def run(step, data, steps, g, d, batch_size=64):
    data = data if isinstance(data, tuple) else (data,)
    return fit(step, batches(*data, batch_size=batch_size), steps, models={"G": g, "D": d},
               progress=False, device="cpu")


@pytest.mark.parametrize("loss,kw", [
    ("non_saturating", {}),
    ("minimax", {}),
    ("hinge", {"n_critic": 2}),
    ("wasserstein", {"n_critic": 3, "clip": 0.05}),
    ("wasserstein", {"n_critic": 2, "gp_weight": 10.0}),
])
def test_runs_under_fit_on_ring8(loss, kw):
    g, d, og, od = mlp_gan()
    result = run(adversarial_step(g, d, og, od, loss, 2, **kw), toy2d("ring8", 256), 8, g, d)
    expected = {"step", "critic_loss", "generator_loss"} | (
        {"gradient_penalty"} if kw.get("gp_weight", 0) > 0 else set())
    assert set(result.history) == expected
    assert len(result.history["critic_loss"]) == 8
    assert all(math.isfinite(v) for k in expected - {"step"} for v in result.history[k])
    if "gradient_penalty" in expected:
        assert all(v >= 0 for v in result.history["gradient_penalty"])


@pytest.mark.parametrize("conditional", [False, True])
def test_runs_under_fit_on_digits(conditional):
    data = digits(size=16)
    torch.manual_seed(0)
    k = 10 if conditional else None
    g = DCGANGenerator(8, 1, 16, width=4, num_classes=k)
    d = DCGANDiscriminator(1, 16, width=4, spectral_norm=conditional, num_classes=k)
    og = torch.optim.Adam(g.parameters(), 2e-4, betas=(0.5, 0.999))
    od = torch.optim.Adam(d.parameters(), 2e-4, betas=(0.5, 0.999))
    step = adversarial_step(g, d, og, od, "hinge" if conditional else "non_saturating", 8,
                            conditional=conditional)
    # digits batches are (images, labels); the unconditional step uses only the images
    result = run(step, (data.images, data.labels), 3, g, d, batch_size=16)
    for name in ("critic_loss", "generator_loss"):
        assert all(math.isfinite(v) for v in result.history[name])


@pytest.mark.parametrize("n_critic", [1, 5])
def test_n_critic_updates_per_generator_update(n_critic):
    g, d, og, od = mlp_gan()
    og, od = CountingOptimizer(og), CountingOptimizer(od)
    step = adversarial_step(g, d, og, od, "wasserstein", 2, n_critic=n_critic, gp_weight=1.0)
    run(step, toy2d("ring8", 256), 3, g, d)
    assert og.steps == 3
    assert od.steps == 3 * n_critic


def test_gradient_penalty_metric_only_when_weighted():
    x = toy2d("ring8", 64)
    g, d, og, od = mlp_gan()
    assert "gradient_penalty" not in adversarial_step(g, d, og, od, "wasserstein", 2)(x)
    out = adversarial_step(g, d, og, od, "wasserstein", 2, gp_weight=10.0)(x)
    assert out["gradient_penalty"] >= 0 and math.isfinite(out["gradient_penalty"])
    assert all(isinstance(v, float) for v in out.values())


def test_clip_bounds_the_critic_weights():
    g, d, og, od = mlp_gan()
    c = 0.01
    assert max(p.abs().max().item() for p in d.parameters()) > c    # the default init exceeds c
    adversarial_step(g, d, og, od, "wasserstein", 2, clip=c)(toy2d("ring8", 64))
    assert max(p.abs().max().item() for p in d.parameters()) <= c


def test_generator_update_leaves_the_critic_alone():
    g, d, og, od = mlp_gan()
    snapshots = []

    class Snap(CountingOptimizer):
        def step(self):
            super().step()
            snapshots.append({k: v.clone() for k, v in d.state_dict().items()})

    d.head.weight.requires_grad_(False)           # a frozen parameter must stay frozen
    g_before = [p.clone() for p in g.parameters()]
    adversarial_step(g, d, og, Snap(od), "non_saturating", 2, n_critic=2)(toy2d("ring8", 64))
    assert len(snapshots) == 2
    for k, v in d.state_dict().items():           # D after the whole step = D after its update
        torch.testing.assert_close(v, snapshots[-1][k], rtol=0, atol=0)
    assert not d.head.weight.requires_grad
    assert all(p.requires_grad for name, p in d.named_parameters() if name != "head.weight")
    assert any((p - q).abs().max() > 0 for p, q in zip(g.parameters(), g_before, strict=True))


def test_noise_follows_the_batch_dtype():
    g, d, og, od = mlp_gan(num_classes=8)
    g, d = g.double(), d.double()
    og = torch.optim.SGD(g.parameters(), 1e-3)
    od = torch.optim.SGD(d.parameters(), 1e-3)
    x = toy2d("ring8", 32).double()
    y = torch.arange(32) % 8
    out = adversarial_step(g, d, og, od, "hinge", 2, conditional=True, gp_weight=1.0,
                           instance_noise=0.1)((x, y))
    assert all(math.isfinite(v) for v in out.values())


def test_short_gan_moves_the_generator_to_the_data():
    # 1-D data N(3, 0.5²); G starts with its sample mean near 0 (small random init). 300
    # non-saturating steps must bring the mean within 0.5 of 3 (seen: 2.95..3.02 over seeds
    # 0..3); an update in the wrong direction, or a missing generator step, leaves it near 0.
    torch.manual_seed(0)
    data = 3 + 0.5 * torch.randn(4096, 1, generator=torch.Generator().manual_seed(0))
    g = MLPGenerator(1, 1, hidden=16, depth=2)
    d = MLPCritic(1, hidden=16, depth=2)
    og = torch.optim.Adam(g.parameters(), 2e-3, betas=(0.5, 0.999))
    od = torch.optim.Adam(d.parameters(), 2e-3, betas=(0.5, 0.999))
    z = torch.randn(4096, 1, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        start = g(z).mean().item()
    assert abs(start - 3) > 2.5
    run(adversarial_step(g, d, og, od, GANLoss("non_saturating"), 1), data, 300, g, d,
        batch_size=128)
    with torch.no_grad():
        end = g(z).mean().item()
    assert abs(end - 3) < 0.5


class Recording(torch.nn.Module):
    """A critic that records (a copy of) every input it is called with, then scores it."""

    def __init__(self, critic):
        super().__init__()
        self.critic, self.inputs = critic, []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        return self.critic(x)


class Constant(torch.nn.Module):
    """G(z) = c for every z: the fakes are known exactly, so what the critic sees minus c is
    the added noise."""

    def __init__(self, c):
        super().__init__()
        self.c = torch.nn.Parameter(torch.tensor(c))

    def forward(self, z):
        return self.c.expand(z.shape[0], -1) + 0 * z[:, :1]


def constant_gan(n=4096):
    torch.manual_seed(0)
    g, d = Constant([3.0, -1.0]), Recording(MLPCritic(2, hidden=8, depth=1))
    og = torch.optim.SGD(g.parameters(), 1e-3)
    od = torch.optim.SGD(d.parameters(), 1e-3)
    return g, d, og, od, toy2d("ring8", n)


@pytest.mark.parametrize("loss,kw", [("non_saturating", {}),
                                     ("wasserstein", {"n_critic": 2, "gp_weight": 10.0})])
def test_zero_instance_noise_is_the_noiseless_step(loss, kw):
    # σ = 0 (a float or a schedule) draws no noise: the same random numbers and updates, so the
    # parameters after 5 steps are bit-for-bit those of the step without instance noise
    params, losses = [], []
    for noise in (None, 0.0, lambda t: 0.0):
        g, d, og, od = mlp_gan()
        torch.manual_seed(1)
        out = run(adversarial_step(g, d, og, od, loss, 2, instance_noise=noise, **kw),
                  toy2d("ring8", 256), 5, g, d)
        params.append([p.detach().clone() for p in [*g.parameters(), *d.parameters()]])
        losses.append(out.history["critic_loss"])
        assert ("instance_noise" in out.history) == (noise is not None)
    for other in params[1:]:
        for p, q in zip(params[0], other, strict=True):
            torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert losses[0] == losses[1] == losses[2]


@pytest.mark.parametrize("sigma", [0.0, 0.3])
def test_the_critic_sees_noisy_real_and_fake_inputs(sigma):
    # n_critic = 2: each critic update scores (real, fake); then the generator update scores the
    # fakes: 5 critic calls. Every input minus its clean value must be N(0, σ²) noise, drawn
    # afresh each time. With 8192 values the sample std has relative s.e. 1/sqrt(2 · 8192) <
    # 0.8%: 5% is 6 s.e.; independent draws have a correlation of s.e. 1/sqrt(8192) ≈ 0.011.
    g, d, og, od, x = constant_gan()
    c = g.c.detach().clone()
    adversarial_step(g, d, og, od, "non_saturating", 2, n_critic=2, instance_noise=sigma)(x)
    assert len(d.inputs) == 5
    seen = d.inputs
    clean = [x, c, x, c, c]       # real, fake, real, fake, then the generator's fake (G has not
    noise = [s - cl for s, cl in zip(seen, clean, strict=True)]   # moved yet: c exactly)
    if sigma == 0:
        assert all(torch.equal(s, cl.expand_as(s)) for s, cl in zip(seen, clean, strict=True))
        return
    for e in noise:
        assert abs(e.std().item() / sigma - 1) < 0.05
        assert abs(e.mean().item()) < 6 * sigma / math.sqrt(e.numel())
    flat = [e.flatten() for e in noise]
    for i in range(len(flat)):
        for j in range(i + 1, len(flat)):
            assert abs(torch.corrcoef(torch.stack([flat[i], flat[j]]))[0, 1]) < 0.06


def test_gradient_penalty_sees_the_noisy_points():
    # with gp_weight > 0 the critic's third call per update is at x̂ = ε x_in + (1 − ε) x̃_in,
    # on the segment between the NOISY real and fake inputs it was just shown
    g, d, og, od, x = constant_gan(64)
    torch.manual_seed(2)
    adversarial_step(g, d, og, od, "wasserstein", 2, gp_weight=1.0, instance_noise=0.5)(x)
    real_in, fake_in, x_hat = d.inputs[:3]
    eps = (x_hat - fake_in)[:, :1] / (real_in - fake_in)[:, :1]
    torch.testing.assert_close(x_hat, eps * real_in + (1 - eps) * fake_in)
    assert bool(((eps >= 0) & (eps <= 1)).all())
    assert not torch.allclose(real_in, x)


def test_annealed_schedule_is_used_per_step():
    sigmas, asked = [0.6, 0.3, 0.1, 0.0], []

    def schedule(t):
        asked.append(t)
        return sigmas[t]

    g, d, og, od, x = constant_gan()
    c = g.c.detach().clone()
    result = fit(adversarial_step(g, d, og, od, "minimax", 2, instance_noise=schedule),
                 lambda s: x, 4, models={"G": g, "D": d}, progress=False, device="cpu")
    assert asked == [0, 1, 2, 3]                 # once per step, with the step's count
    assert result.history["instance_noise"] == sigmas
    for t, sigma in enumerate(sigmas):           # 3 critic calls per step: real, fake, G's fake
        real_in, fake_in = d.inputs[3 * t], d.inputs[3 * t + 1]
        if sigma == 0:
            assert torch.equal(real_in, x)
        else:
            assert abs((real_in - x).std().item() / sigma - 1) < 0.05
        # G moves only a little (SGD, lr 1e-3), so the fakes' spread is the noise
        assert abs((fake_in - c).std().item() - sigma) < 0.05 * sigma + 0.01


def test_bad_instance_noise():
    g, d, og, od = mlp_gan()
    for bad in (-0.1, math.nan, math.inf, True, "0.1", torch.tensor(0.1), [0.1]):
        with pytest.raises(ValueError, match="instance_noise"):
            adversarial_step(g, d, og, od, "hinge", 2, instance_noise=bad)
    x = toy2d("ring8", 16)
    for bad in (-1.0, math.nan, "big", None):
        step = adversarial_step(g, d, og, od, "hinge", 2, instance_noise=lambda t, v=bad: v)
        with pytest.raises(ValueError, match=r"instance_noise\(0\)"):
            step(x)


def test_bad_arguments():
    g, d, og, od = mlp_gan()
    for kw in ({"n_critic": 0}, {"n_critic": 1.5}, {"gp_weight": -1.0},
               {"gp_weight": math.nan}, {"clip": 0.0}, {"clip": -0.1}, {"conditional": 1}):
        with pytest.raises(ValueError):
            adversarial_step(g, d, og, od, "wasserstein", 2, **kw)
    with pytest.raises(ValueError, match="name must be one of"):
        adversarial_step(g, d, og, od, "least_squares", 2)
    with pytest.raises(ValueError, match="latent_dim"):
        adversarial_step(g, d, og, od, "hinge", 0)
    with pytest.raises(ValueError, match="generator must be"):
        adversarial_step(lambda z: z, d, og, od, "hinge", 2)
    with pytest.raises(ValueError, match="opt_critic must be"):
        adversarial_step(g, d, og, None, "hinge", 2)


def test_bad_batches():
    g, d, og, od = mlp_gan(num_classes=3)
    with pytest.raises(ValueError, match="needs batches"):
        adversarial_step(g, d, og, od, "hinge", 2, conditional=True)(toy2d("ring8", 8))
    with pytest.raises(ValueError, match="float tensor"):
        adversarial_step(g, d, og, od, "hinge", 2)(torch.zeros(8, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="empty"):
        adversarial_step(g, d, og, od, "hinge", 2)(())


def test_a_nan_loss_stops_before_the_critic_update():
    from utils.training import NonFiniteLossError

    g, d, og, od = mlp_gan()
    before = [p.clone() for p in [*g.parameters(), *d.parameters()]]
    x = torch.randn(16, 2)
    x[5] = float("nan")
    with pytest.raises(NonFiniteLossError, match="step 0: the critic loss is nan"):
        adversarial_step(g, d, og, od, "non_saturating", 2)(x)
    after = [*g.parameters(), *d.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(before, after)) and not od.state and not og.state
