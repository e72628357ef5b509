"""Tests for evaluation.inversion and evaluation.latent_encoder against closed forms: with a
linear generator G(z) = A z the inversion problem is least squares (ridge with the prior term)
and latent regression must learn a left inverse of A."""

import math

import pytest
import torch
from torch import nn

from evaluation import LatentEncoder, invert, reconstruction_loss, train_encoder

f64 = dict(dtype=torch.float64)


class LinearGenerator(nn.Module):
    """G(z) = A z reshaped to (B, 1, 4, 4): z (B, d) -> images, A (16, d)."""

    def __init__(self, d: int = 5, seed: int = 0, dtype=torch.float64):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.A = nn.Parameter(torch.randn(16, d, generator=g, dtype=dtype) / math.sqrt(d))
        self.latent_dim = d

    def forward(self, z):
        return (z @ self.A.T).view(-1, 1, 4, 4)


class TanhGenerator(LinearGenerator):
    """G(z) = tanh(A z): non-linear, still one latent per target."""

    def forward(self, z):
        return torch.tanh(super().forward(z))


def _targets(n=3, seed=1):
    return torch.randn(n, 1, 4, 4, generator=torch.Generator().manual_seed(seed), **f64)


@pytest.mark.parametrize("lam", [0.0, 0.1])
def test_linear_generator_inversion_is_ridge_regression(lam):
    # J(z) = (1/P)‖A z − x‖² + λ‖z‖²: ∇J = 0 ⟺ (AᵀA + λ P I) z = Aᵀ x, P = 16 pixels.
    G, x = LinearGenerator(), _targets()
    result = invert(G, x, steps=600, lr=0.05, prior_weight=lam, seed=0)
    A = G.A.detach()
    z_star = torch.linalg.solve(A.T @ A + lam * 16 * torch.eye(5, **f64), A.T @ x.flatten(1).T).T
    torch.testing.assert_close(result.z, z_star, atol=1e-8, rtol=0)
    expected_loss = (z_star @ A.T - x.flatten(1)).pow(2).mean(1)
    torch.testing.assert_close(result.loss, expected_loss, atol=1e-12, rtol=0)
    assert result.trace.shape == (601, 3) and result.seconds > 0
    torch.testing.assert_close(result.trace[-1], result.loss)


def test_trace_starts_at_z_init_and_the_generator_is_left_as_it_was():
    G, x = TanhGenerator(), _targets()
    G.train()
    z0 = torch.randn(3, 5, **f64)
    result = invert(G, x, steps=5, z_init=z0)
    torch.testing.assert_close(result.trace[0], reconstruction_loss(G(z0), x))
    assert G.training and G.A.requires_grad and G.A.grad is None   # mode, flags, no grads


def test_each_target_is_inverted_as_if_alone():
    G, x = TanhGenerator(), _targets(4)
    z0 = torch.randn(4, 5, generator=torch.Generator().manual_seed(2), **f64)
    together = invert(G, x, steps=30, lr=0.1, z_init=z0)
    for i in range(4):
        alone = invert(G, x[i:i + 1], steps=30, lr=0.1, z_init=z0[i:i + 1])
        torch.testing.assert_close(together.z[i:i + 1], alone.z, atol=1e-12, rtol=0)
        torch.testing.assert_close(together.trace[:, i:i + 1], alone.trace, atol=1e-12, rtol=0)


def test_restarts_keep_the_best_of_the_separate_runs():
    G, x = TanhGenerator(d=3), _targets(4)
    z0 = 2.0 * torch.randn(5, 4, 3, generator=torch.Generator().manual_seed(3), **f64)
    best = invert(G, x, steps=20, lr=0.1, restarts=5, z_init=z0)
    runs = [invert(G, x, steps=20, lr=0.1, z_init=z0[r]) for r in range(5)]
    losses = torch.stack([r.loss for r in runs])                  # (R, B)
    torch.testing.assert_close(best.loss, losses.min(0).values, atol=1e-12, rtol=0)
    k = losses.argmin(0)
    torch.testing.assert_close(best.z, torch.stack([runs[k[b]].z[b] for b in range(4)]))
    assert not torch.allclose(losses.min(0).values, losses.max(0).values)   # starts matter


def test_default_starts_are_seeded_and_restarts_draw_independent_ones():
    G, x = TanhGenerator(), _targets()
    a, b = invert(G, x, steps=3, seed=7), invert(G, x, steps=3, seed=7)
    torch.testing.assert_close(a.z, b.z, atol=0, rtol=0)
    z0 = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(7), **f64)
    c = invert(G, x, steps=3, restarts=2, z_init=z0)
    torch.testing.assert_close(invert(G, x, steps=3, restarts=2, seed=7).z, c.z)


def test_shell_keeps_every_latent_at_radius_sqrt_d():
    G, x = TanhGenerator(d=6), _targets()
    result = invert(G, x, steps=10, shell=True, seed=0)
    torch.testing.assert_close(result.z.norm(dim=1), torch.full((3,), math.sqrt(6), **f64))


def test_reconstruction_losses_match_their_formulas():
    g = torch.Generator().manual_seed(4)
    x_hat, x = torch.randn(3, 2, 3, 3, generator=g, **f64), torch.randn(3, 2, 3, 3, generator=g,
                                                                       **f64)
    diff = (x_hat - x).reshape(3, -1)
    torch.testing.assert_close(reconstruction_loss(x_hat, x), (diff**2).sum(1) / 18)
    torch.testing.assert_close(reconstruction_loss(x_hat, x, "l1"), diff.abs().sum(1) / 18)
    W = torch.randn(18, 4, generator=g, **f64)
    got = reconstruction_loss(x_hat, x, "features", features=lambda im: im.flatten(1) @ W)
    torch.testing.assert_close(got, ((diff @ W) ** 2).mean(1))


def test_feature_loss_inversion_matches_the_features_exactly():
    # φ(x) = W x with W (2, 16): the optimum matches φ exactly (d = 5 > 2), not the pixels.
    G, x = LinearGenerator(), _targets(2)
    W = torch.randn(16, 2, generator=torch.Generator().manual_seed(5), **f64)
    phi = lambda im: im.flatten(1) @ W  # noqa: E731
    result = invert(G, x, steps=500, lr=0.05, loss="features", features=phi, seed=0)
    assert result.loss.max() < 1e-10
    assert reconstruction_loss(G(result.z), x).min() > 1e-3


def test_l1_inversion_of_an_image_in_the_range_is_exact():
    G = LinearGenerator()
    z_true = torch.randn(2, 5, generator=torch.Generator().manual_seed(6), **f64)
    with torch.no_grad():
        x = G(z_true)
    result = invert(G, x, steps=1500, lr=0.01, loss="l1", seed=0)
    # Adam's steps do not shrink at the kink of |.|: z hovers within about lr of z_true
    assert result.loss.max() < 0.01 * G.A.abs().sum(1).mean()
    assert (result.z - z_true).abs().max() < 0.05


def test_invert_rejects_bad_input():
    G, x = LinearGenerator(), _targets()
    bad = [
        dict(steps=0), dict(lr=0.0), dict(loss="l2"), dict(prior_weight=-1.0),
        dict(prior_weight=True), dict(shell=1), dict(restarts=0),
        dict(z_init=torch.zeros(2, 5, **f64)), dict(z_init=torch.zeros(2, 3, 5, **f64)),
        dict(z_init=torch.zeros(3, 4, **f64)), dict(z_init=torch.zeros(3, 5, **f64), latent_dim=4),
        dict(loss="features"), dict(features=lambda im: im.flatten(1)),
        dict(loss="features", features=lambda im: im.flatten(1).detach()),
        dict(loss="features", features=lambda im: im.sum((1, 2, 3))),
    ]
    for kwargs in bad:
        with pytest.raises(ValueError):
            invert(G, x, steps=kwargs.pop("steps", 2), **kwargs)
    with pytest.raises(ValueError, match="generator"):
        invert(lambda z: z, x)
    with pytest.raises(ValueError, match="shape"):
        invert(G, x.flatten(1))
    with pytest.raises(ValueError, match="targets' shape"):
        invert(G, torch.zeros(3, 1, 8, 8, **f64))
    with pytest.raises(ValueError, match="latent_dim"):
        invert(nn.Linear(5, 16), x)
    with pytest.raises(ValueError, match="same shape"):
        reconstruction_loss(x, x[:2])


def test_latent_regression_learns_a_left_inverse_of_a_linear_generator(one_thread):
    # E(x) = W x minimises E‖W A z − z‖² at W A = I: every image in G's range is inverted.
    G = LinearGenerator(d=3, dtype=torch.float32)
    E = nn.Sequential(nn.Flatten(), nn.Linear(16, 3, bias=False))
    result = train_encoder(E, G, 400, batch_size=64, lr=0.02, progress=False)
    assert result.history["latent"][-1] < 1e-4
    W, A = E[1].weight.detach(), G.A.detach()
    torch.testing.assert_close(W @ A, torch.eye(3), atol=5e-3, rtol=0)
    assert not E.training and G.A.grad is None


def test_reconstruction_on_real_images_is_trained_too(one_thread):
    G = LinearGenerator(d=3, dtype=torch.float32)
    E = LatentEncoder(3, channels=1, size=4, width=8)
    real = torch.randn(40, 1, 4, 4)
    result = train_encoder(E, G, 3, reconstruction_weight=1.0, real=real, batch_size=8,
                           progress=False)
    assert set(result.history) == {"step", "latent", "reconstruction", "loss"}
    h = result.history
    assert all(abs(t - (a + r)) < 1e-5 for a, r, t in
               zip(h["latent"], h["reconstruction"], h["loss"], strict=True))


def test_latent_encoder_shapes_and_bad_input():
    E = LatentEncoder(7, channels=3, size=16, width=4)
    assert E(torch.zeros(2, 3, 16, 16)).shape == (2, 7)
    with pytest.raises(ValueError, match="shape"):
        E(torch.zeros(2, 1, 16, 16))
    with pytest.raises(ValueError, match="multiple of 4"):
        LatentEncoder(7, size=10)
    G = LinearGenerator(d=3, dtype=torch.float32)
    for kwargs in (dict(steps=0), dict(batch_size=0), dict(lr=-1.0),
                   dict(reconstruction_weight=-1.0), dict(real=torch.zeros(4, 1, 4, 4)),
                   dict(real=torch.zeros(4, 16), reconstruction_weight=1.0)):
        with pytest.raises(ValueError):
            train_encoder(nn.Sequential(nn.Flatten(), nn.Linear(16, 3)), G,
                          kwargs.pop("steps", 1), progress=False, **kwargs)
    with pytest.raises(ValueError, match="latents"):
        train_encoder(nn.Sequential(nn.Flatten(), nn.Linear(16, 2)), G, 1, progress=False)
    with pytest.raises(ValueError, match="encoder"):
        train_encoder("E", G, 1, progress=False)
