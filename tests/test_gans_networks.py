"""Tests for gans.networks: shapes, dtypes and devices of every network, size and conditional
variant; the DCGAN layout rules; tanh range; spectral norm; the projection discriminator's
formula; PacGAN's packing; and bad input."""

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from gans import (
    DCGAN_SIZES,
    DCGANDiscriminator,
    DCGANGenerator,
    MLPCritic,
    MLPGenerator,
    PackedCritic,
)

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))]


pytestmark = pytest.mark.usefixtures("one_thread")


def noise(b, d, seed=0, dtype=torch.float32, device="cpu"):
    return torch.randn(b, d, generator=torch.Generator().manual_seed(seed), dtype=dtype).to(device)


def labels_for(b, k, device="cpu"):
    return (torch.arange(b) % k).to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("num_classes", [None, 3])
@pytest.mark.parametrize("latent_dim,out_dim", [(2, 2), (8, 2), (3, 1)])
def test_mlp_shapes_dtypes_devices(device, num_classes, latent_dim, out_dim):
    torch.manual_seed(0)
    g = MLPGenerator(latent_dim, out_dim, hidden=16, depth=2, num_classes=num_classes).to(device)
    d = MLPCritic(out_dim, hidden=16, depth=2, num_classes=num_classes).to(device)
    y = None if num_classes is None else labels_for(5, num_classes, device)
    x = g(noise(5, latent_dim, device=device), y)
    out = d(x, y)
    assert x.shape == (5, out_dim) and out.shape == (5,)
    assert x.dtype == out.dtype == torch.float32
    assert x.device.type == out.device.type == device
    assert all(p.device.type == device for p in [*g.parameters(), *d.parameters()])
    # float64 works once the networks are converted
    g64, d64 = g.double(), d.double()
    out64 = d64(g64(noise(4, latent_dim, dtype=torch.float64, device=device),
                    None if y is None else y[:4]), None if y is None else y[:4])
    assert out64.dtype == torch.float64 and out64.shape == (4,)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size", DCGAN_SIZES)
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("num_classes", [None, 10])
def test_dcgan_shapes_dtypes_devices(device, size, channels, num_classes):
    torch.manual_seed(0)
    g = DCGANGenerator(8, channels, size, width=4, num_classes=num_classes).to(device)
    d = DCGANDiscriminator(channels, size, width=4, num_classes=num_classes).to(device)
    y = None if num_classes is None else labels_for(3, num_classes, device)
    x = g(noise(3, 8, device=device), y)
    out = d(x, y)
    assert x.shape == (3, channels, size, size) and out.shape == (3,)
    assert x.dtype == out.dtype == torch.float32
    assert x.device.type == out.device.type == device
    assert all(p.device.type == device for p in [*g.parameters(), *d.parameters()])
    assert all(b.device.type == device for b in [*g.buffers(), *d.buffers()])


@pytest.mark.parametrize("size", DCGAN_SIZES)
def test_dcgan_generator_output_lies_in_tanh_range(size):
    torch.manual_seed(0)
    g = DCGANGenerator(8, 1, size, width=4)
    with torch.no_grad():
        x = g(noise(6, 8))
        assert x.min() >= -1 and x.max() <= 1
        g.net[-2].weight.mul_(1e3)    # (BN undoes any scaling of z) huge output pre-activations:
        x = g(noise(6, 8))
    assert x.min() >= -1 and x.max() <= 1
    assert (x.abs() > 0.99).any()     # ... the bound is reached, and still respected


@pytest.mark.parametrize("size,doublings", [(16, 2), (28, 2), (32, 3)])
def test_dcgan_layout_follows_radford_et_al(size, doublings):
    g, d = DCGANGenerator(8, 1, size, width=4), DCGANDiscriminator(1, size, width=4)
    # G: BN after the projection and after every transposed conv but the last, which feeds tanh
    g_layers = list(g.net)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in g_layers) == doublings
    assert isinstance(g_layers[-2], nn.ConvTranspose2d) and isinstance(g_layers[-1], nn.Tanh)
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in g_layers) == doublings
    # D: strided convs, no pooling, no BN on the input layer, LeakyReLU(0.2)
    d_layers = list(d.features)
    assert isinstance(d_layers[0], nn.Conv2d) and isinstance(d_layers[1], nn.LeakyReLU)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in d_layers) == doublings - 1
    assert all(m.stride == (2, 2) for m in d_layers if isinstance(m, nn.Conv2d))
    assert all(m.negative_slope == 0.2 for m in d_layers if isinstance(m, nn.LeakyReLU))
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) for m in d.modules())
    assert not any(isinstance(m, nn.BatchNorm2d)
                   for m in DCGANDiscriminator(1, size, width=4, batch_norm=False).modules())


def weighted_layers(module):
    return [m for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


@pytest.mark.parametrize("make", [
    lambda: MLPCritic(2, hidden=16, depth=2, spectral_norm=True),
    lambda: DCGANDiscriminator(1, 16, width=4, spectral_norm=True, batch_norm=False,
                               num_classes=3),
])
def test_spectral_norm_makes_every_weight_unit_norm(make):
    torch.manual_seed(0)
    d = make()
    layers = weighted_layers(d)
    assert layers and all(parametrize.is_parametrized(m, "weight") for m in layers)
    x = torch.randn(4, 2) if isinstance(d, MLPCritic) else torch.randn(4, 1, 16, 16)
    y = None if d.num_classes is None else labels_for(4, 3)
    with torch.no_grad():
        for _ in range(300):    # one power iteration per training-mode forward pass
            d(x, y)
    for m in layers:
        sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2).item()
        # the power-iteration estimate converges geometrically (ratio (σ₂/σ₁)² per step) to
        # σ_max(W); after 300 steps it is exact to float32 precision unless σ₂ ≈ σ₁
        assert sigma == pytest.approx(1.0, abs=1e-3)
    # without the option there is no parametrization and the weights are not normalised
    plain = weighted_layers(MLPCritic(2, hidden=16, depth=2))
    assert not any(parametrize.is_parametrized(m) for m in plain)


@pytest.mark.parametrize("make,shape", [
    (lambda: MLPCritic(2, hidden=16, depth=2, num_classes=4), (6, 2)),
    (lambda: DCGANDiscriminator(1, 16, width=4, num_classes=4).eval(), (6, 1, 16, 16)),
])
def test_projection_discriminator_formula(make, shape):
    torch.manual_seed(0)
    d = make()
    x = torch.randn(*shape)
    y0, y1 = torch.zeros(6, dtype=torch.int64), torch.full((6,), 3, dtype=torch.int64)
    with torch.no_grad():
        phi = d.features(x)
        psi = d.head(phi).squeeze(1)
        e = d.embed.weight
        # D(x, y) = ψ(φ(x)) + ⟨e(y), φ(x)⟩
        torch.testing.assert_close(d(x, y0), psi + phi @ e[0])
        torch.testing.assert_close(d(x, y1), psi + phi @ e[3])
        assert (d(x, y0) - d(x, y1)).abs().min() > 1e-4     # the label matters
        d.embed.weight.zero_()                               # e = 0: the unconditional head
        torch.testing.assert_close(d(x, y0), psi)


@pytest.mark.parametrize("make,latent", [
    (lambda: MLPGenerator(4, 2, hidden=16, depth=2, num_classes=5), 4),
    (lambda: DCGANGenerator(4, 1, 16, width=4, num_classes=5).eval(), 4),
])
def test_conditional_generator_depends_on_the_label(make, latent):
    torch.manual_seed(0)
    g = make()
    z = noise(3, latent)
    with torch.no_grad():
        a = g(z, torch.zeros(3, dtype=torch.int64))
        b = g(z, torch.full((3,), 4, dtype=torch.int64))
        assert (a - b).flatten(1).abs().amax(1).min() > 1e-4
        torch.testing.assert_close(g(z, torch.zeros(3, dtype=torch.int64)), a)


@pytest.mark.parametrize("make", [
    lambda: MLPGenerator(latent_dim=0),
    lambda: MLPGenerator(out_dim=0),
    lambda: MLPGenerator(hidden=0),
    lambda: MLPGenerator(depth=0),
    lambda: MLPGenerator(num_classes=0),
    lambda: MLPCritic(in_dim=0),
    lambda: MLPCritic(num_classes=0),
    lambda: MLPCritic(hidden=2.5),
    lambda: DCGANGenerator(latent_dim=0),
    lambda: DCGANGenerator(size=24),
    lambda: DCGANGenerator(size=16.0),
    lambda: DCGANGenerator(channels=0),
    lambda: DCGANGenerator(width=0),
    lambda: DCGANGenerator(num_classes=0),
    lambda: DCGANDiscriminator(size=64),
    lambda: DCGANDiscriminator(channels=0),
    lambda: DCGANDiscriminator(num_classes=-1),
])
def test_bad_constructor_arguments(make):
    with pytest.raises(ValueError):
        make()


def test_bad_forward_inputs():
    g, d = MLPGenerator(2, 2, hidden=8, depth=1), MLPCritic(2, hidden=8, depth=1)
    gc = MLPGenerator(2, 2, hidden=8, depth=1, num_classes=3)
    dc = DCGANDiscriminator(1, 16, width=4, num_classes=3)
    ok_labels = torch.zeros(4, dtype=torch.int64)
    with pytest.raises(ValueError, match="z must be"):
        g(torch.randn(4, 3))                                  # wrong latent_dim
    with pytest.raises(ValueError, match="z must be"):
        g(torch.randn(4))                                     # no batch dimension
    with pytest.raises(ValueError, match="z must be"):
        g(torch.zeros(4, 2, dtype=torch.int64))               # not float
    with pytest.raises(ValueError, match="z must be"):
        g([[0.0, 0.0]])                                       # not a tensor
    with pytest.raises(ValueError, match="unconditional"):
        g(torch.randn(4, 2), ok_labels)
    with pytest.raises(ValueError, match="labels must be"):
        gc(torch.randn(4, 2))                                 # labels missing
    with pytest.raises(ValueError, match="labels must be"):
        gc(torch.randn(4, 2), ok_labels.float())              # wrong dtype
    with pytest.raises(ValueError, match="labels must be"):
        gc(torch.randn(4, 2), ok_labels[:3])                  # wrong length
    with pytest.raises(ValueError, match=r"0\.\.2"):
        gc(torch.randn(4, 2), ok_labels + 3)                  # out of range
    with pytest.raises(ValueError, match=r"0\.\.2"):
        gc(torch.randn(4, 2), ok_labels - 1)
    with pytest.raises(ValueError, match="x must be"):
        d(torch.randn(4, 3))
    with pytest.raises(ValueError, match="x must be"):
        dc(torch.randn(4, 1, 28, 28), ok_labels)              # wrong image size
    with pytest.raises(ValueError, match="x must be"):
        dc(torch.randn(4, 3, 16, 16), ok_labels)              # wrong channels
    with pytest.raises(ValueError, match="labels must be"):
        dc(torch.randn(4, 1, 16, 16))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("pack", [1, 2, 4])
def test_packed_critic_shapes_and_devices(device, pack):
    torch.manual_seed(0)
    d = PackedCritic(MLPCritic(in_dim=2 * pack, hidden=8, depth=2), pack).to(device)
    out = d(noise(8, 2, device=device))
    assert out.shape == (8 // pack,) and out.dtype == torch.float32
    assert out.device.type == device
    img = PackedCritic(DCGANDiscriminator(channels=3 * pack, size=16, width=4), pack).to(device)
    assert img(torch.randn(8, 3, 16, 16, device=device)).shape == (8 // pack,)


def test_packed_critic_with_pack_1_is_the_wrapped_critic():
    torch.manual_seed(0)
    inner = MLPCritic(in_dim=2, hidden=8, depth=2)
    x = noise(6, 2)
    torch.testing.assert_close(PackedCritic(inner, 1)(x), inner(x), rtol=0, atol=0)


@pytest.mark.parametrize("pack", [2, 3])
def test_packed_critic_scores_consecutive_samples_concatenated(pack):
    torch.manual_seed(0)
    inner = MLPCritic(in_dim=2 * pack, hidden=8, depth=2)
    d = PackedCritic(inner, pack)
    x = noise(4 * pack, 2)
    # pack j = x_{jm} ⊕ x_{jm+1} ⊕ … ⊕ x_{jm+m-1}, built by hand
    by_hand = torch.stack([torch.cat([x[j * pack + i] for i in range(pack)])
                           for j in range(4)])
    torch.testing.assert_close(d(x), inner(by_hand), rtol=0, atol=0)
    # images: the members are stacked along the channel axis
    dc = DCGANDiscriminator(channels=pack, size=16, width=4).eval()
    xi = torch.randn(2 * pack, 1, 16, 16)
    torch.testing.assert_close(PackedCritic(dc, pack)(xi), dc(torch.cat(
        [torch.cat(list(xi[j * pack:(j + 1) * pack]), dim=0)[None] for j in range(2)])))
    # every member of a pack gets a gradient, and only its own pack's score depends on it
    xg = x.clone().requires_grad_(True)
    d(xg)[1].backward()
    grad_norm = xg.grad.norm(dim=1)
    assert (grad_norm[pack:2 * pack] > 0).all()
    assert (grad_norm[:pack] == 0).all() and (grad_norm[2 * pack:] == 0).all()


def test_packed_critic_bad_input():
    with pytest.raises(ValueError, match="pack"):
        PackedCritic(MLPCritic(in_dim=2), 0)
    with pytest.raises(ValueError, match="pack"):
        PackedCritic(MLPCritic(in_dim=4), 2.0)
    with pytest.raises(ValueError, match="critic must be"):
        PackedCritic(lambda x: x, 2)
    d = PackedCritic(MLPCritic(in_dim=4, hidden=8, depth=1), 2)
    with pytest.raises(ValueError, match="multiple of pack = 2"):
        d(torch.randn(5, 2))
    with pytest.raises(ValueError, match="x must be"):
        d(torch.randn(4))                                     # no feature axis
    with pytest.raises(ValueError, match="x must be"):
        d(torch.zeros(4, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="x must be"):
        d(torch.randn(4, 3))                                  # 2·3 features: the inner check
