"""vae.networks: shapes, dtypes, the VAE's bounds against their definitions, bad input."""

import math

import pytest
import torch
from torch import nn

from vae.elbo import gaussian_kl
from vae.networks import VAE, ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 16, 16), (3, 32, 32), (1, 28, 28)])
@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_encoder_decoder_shapes(shape, kind):
    enc = (MLPEncoder if kind == "mlp" else ConvEncoder)(shape, 5)
    dec = (MLPDecoder if kind == "mlp" else ConvDecoder)(shape, 5)
    x = torch.randn(3, *shape)
    mu, logvar = enc(x)
    assert mu.shape == logvar.shape == (3, 5)
    assert dec(torch.randn(3, 5)).shape == (3, *shape)
    assert dec(torch.randn(7, 3, 5)).shape == (7, 3, *shape)       # K samples per image


def test_networks_follow_the_input_dtype():
    enc, dec = ConvEncoder((1, 16, 16), 4).double(), ConvDecoder((1, 16, 16), 4).double()
    mu, _ = enc(torch.randn(2, 1, 16, 16, dtype=torch.float64))
    assert mu.dtype == dec(mu).dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_vae_runs_on_cuda():
    model = VAE(ConvEncoder((1, 16, 16), 4), ConvDecoder((1, 16, 16), 4)).cuda()
    x = (torch.rand(2, 1, 16, 16, device="cuda") > 0.5).float()
    assert model(x).elbo.device.type == "cuda"


def _binary(n=6, seed=0):
    return (torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) > 0.5).float()


def test_vae_elbo_terms_are_their_definitions():
    torch.manual_seed(0)
    model = VAE(MLPEncoder((1, 8, 8), 3, hidden=16), MLPDecoder((1, 8, 8), 3, hidden=16))
    x = _binary()
    out = model(x, n_samples=4)
    mu, logvar = model.encode(x)
    torch.testing.assert_close(out.kl, gaussian_kl(mu, logvar))
    torch.testing.assert_close(out.elbo, out.reconstruction - out.kl)
    # with σ → 0 the reconstruction term is log p(x | μ)
    model.encoder.body[-1][-1].bias.data[3:] = -60.0
    model.encoder.body[-1][-1].weight.data[3:] = 0.0
    mu, _ = model.encode(x)
    torch.testing.assert_close(model(x).reconstruction, model.log_px_z(x, mu))


def test_iwae_is_at_least_the_elbo_on_average_and_chunking_is_exact():
    torch.manual_seed(1)
    model = VAE(MLPEncoder((1, 8, 8), 2, hidden=16), MLPDecoder((1, 8, 8), 2, hidden=16))
    x = _binary(200, seed=1)
    with torch.no_grad():
        elbo_mean = model(x, n_samples=50).elbo.mean()
    assert model.iwae(x, 50).mean() > elbo_mean
    # a decoder that ignores z and an encoder equal to the prior: every weight is p(x), exactly
    for p in model.decoder.parameters():
        p.data.zero_()
    for p in model.encoder.parameters():
        p.data.zero_()
    log_px = -64 * math.log(2.0)
    for chunk in (1, 3, 100):
        torch.testing.assert_close(model.iwae(x, 7, chunk=chunk),
                                   torch.full((200,), log_px), rtol=0, atol=1e-5)


def test_gaussian_likelihood_learns_sigma_and_samples_have_image_shape():
    model = VAE(ConvEncoder((1, 16, 16), 4), ConvDecoder((1, 16, 16), 4), "gaussian",
                log_sigma=-1.0)
    assert isinstance(model.log_sigma, nn.Parameter) and model.sigma_log().item() == -1.0
    x = torch.randn(3, 1, 16, 16)
    out = model(x)
    out.elbo.mean().backward()
    assert model.log_sigma.grad is not None
    fixed = VAE(ConvEncoder((1, 16, 16), 4), ConvDecoder((1, 16, 16), 4), "gaussian",
                learn_sigma=False)
    assert fixed.log_sigma is None and "_log_sigma" in dict(fixed.named_buffers())
    assert model.sample(5).shape == (5, 1, 16, 16)
    bern = VAE(ConvEncoder((1, 16, 16), 4), ConvDecoder((1, 16, 16), 4))
    s = bern.sample(4, generator=torch.Generator().manual_seed(0))
    assert s.shape == (4, 1, 16, 16) and s.min() >= 0 and s.max() <= 1
    torch.testing.assert_close(s, bern.sample(4, generator=torch.Generator().manual_seed(0)))
    assert bern.reconstruct(_binary(2, 3).repeat(1, 1, 2, 2)).shape == (2, 1, 16, 16)


@pytest.mark.parametrize("call", [
    lambda: MLPEncoder((1, 8), 2),
    lambda: MLPEncoder((1, 8, 8), 0),
    lambda: ConvEncoder((1, 10, 10), 2),
    lambda: ConvDecoder((1, 8, 16), 2),
    lambda: MLPEncoder((1, 8, 8), 2)(torch.zeros(2, 1, 16, 16)),
    lambda: MLPDecoder((1, 8, 8), 2)(torch.zeros(2, 3)),
    lambda: VAE(MLPEncoder((1, 8, 8), 2), MLPDecoder((1, 8, 8), 3)),
    lambda: VAE(MLPEncoder((1, 8, 8), 2), MLPDecoder((1, 8, 8), 2), "poisson"),
    lambda: VAE(nn.Linear(2, 2), MLPDecoder((1, 8, 8), 2)),
    lambda: VAE(MLPEncoder((1, 8, 8), 2), MLPDecoder((1, 8, 8), 2)).iwae(_binary(), 0),
    lambda: VAE(MLPEncoder((1, 8, 8), 2), MLPDecoder((1, 8, 8), 2))(_binary(), n_samples=0),
    lambda: VAE(MLPEncoder((1, 8, 8), 2), MLPDecoder((1, 8, 8), 2)).sample(0),
])
def test_bad_input_raises_value_error(call):
    with pytest.raises(ValueError):
        call()
