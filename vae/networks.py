"""Encoders, decoders and the Gaussian-latent VAE (03_vae_on_digits, 04_posterior_collapse).

Shapes: images x ``(B, C, H, W)``; latents z ``(B, d)`` or ``(K, B, d)`` (K samples per image).
An encoder maps x to the parameters (μ, logvar) ``(B, d)`` each of q_φ(z | x) =
N(μ, diag exp(logvar)); a decoder maps z ``(..., d)`` to the parameters of p_θ(x | z) of shape
``(..., C, H, W)``: Bernoulli *logits* or Gaussian *means*.

:class:`VAE` ties them to the prior p(z) = N(0, I) and a likelihood:

- ``"bernoulli"``: p(x | z) = Π_i Ber(x_i; σ(ℓ_i)) for binary x ∈ {0, 1} (binarised digits);
- ``"gaussian"``: p(x | z) = N(x; mean, σ² I) with one learned log σ (``learn_sigma``), for
  continuous x (e.g. in [−1, 1]).

and exposes the ELBO (:func:`vae.elbo.elbo`), the IWAE bound (:func:`vae.elbo.iwae_bound`),
reconstructions and samples.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from utils.validation import check_int, shape_of
from vae.elbo import (
    ELBO,
    LIKELIHOODS,
    bernoulli_log_likelihood,
    elbo,
    gaussian_log_likelihood,
    iwae_bound,
    reparameterize,
)

__all__ = ["VAE", "ConvDecoder", "ConvEncoder", "MLPDecoder", "MLPEncoder"]


def _check_shape(shape: object) -> tuple[int, int, int]:
    if not isinstance(shape, (tuple, list)) or len(shape) != 3 \
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape):
        raise ValueError(f"image_shape must be (C, H, W) of positive integers, got {shape!r}")
    return tuple(shape)


def _check_images(x: object, shape: tuple[int, ...]) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point or x.ndim != 4 \
            or tuple(x.shape[1:]) != shape or x.shape[0] < 1:
        raise ValueError(f"x must be a float tensor of shape (B, {', '.join(map(str, shape))}), "
                         f"got {shape_of(x)}")
    return x


def _check_latents(z: object, d: int) -> torch.Tensor:
    if not isinstance(z, torch.Tensor) or not z.dtype.is_floating_point or z.ndim < 2 \
            or z.shape[-1] != d:
        raise ValueError(f"z must be a float tensor of shape (..., B, {d}), got {shape_of(z)}")
    return z


def _mlp(widths: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-2], widths[1:-1]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(widths[-2], widths[-1]))


class _Encoder(nn.Module):
    """x ``(B, C, H, W)`` → (μ, logvar), ``(B, d)`` each, from a body giving ``(B, 2d)``."""

    image_shape: tuple[int, int, int]
    latent_dim: int
    body: nn.Module

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(_check_images(x, self.image_shape))
        mu, logvar = h.chunk(2, dim=-1)
        return mu, logvar


class _Decoder(nn.Module):
    """z ``(..., d)`` → ``(..., C, H, W)``: leading dimensions flattened for the body."""

    image_shape: tuple[int, int, int]
    latent_dim: int
    body: nn.Module

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = _check_latents(z, self.latent_dim)
        out = self.body(z.reshape(-1, self.latent_dim))
        return out.reshape(*z.shape[:-1], *self.image_shape)


def _init_mlp_shapes(net: nn.Module, image_shape: object, latent_dim: object, hidden: object,
                     depth: object) -> list[int]:
    """Check and set ``net.image_shape`` and ``net.latent_dim``; return [hidden] · depth."""
    net.image_shape = _check_shape(image_shape)
    net.latent_dim = check_int("latent_dim", latent_dim, minimum=1)
    return [check_int("hidden", hidden, minimum=1)] * check_int("depth", depth, minimum=0)


class MLPEncoder(_Encoder):
    """Flatten, ``depth`` ReLU layers of ``hidden`` units, then a linear map to (μ, logvar)."""

    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int, hidden: int = 256,
                 depth: int = 2):
        super().__init__()
        hidden_layers = _init_mlp_shapes(self, image_shape, latent_dim, hidden, depth)
        self.body = nn.Sequential(nn.Flatten(), _mlp([math.prod(self.image_shape)]
                                                     + hidden_layers + [2 * self.latent_dim]))


class MLPDecoder(_Decoder):
    """``depth`` ReLU layers of ``hidden`` units, then a linear map to the pixels' parameters."""

    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int, hidden: int = 256,
                 depth: int = 2):
        super().__init__()
        hidden_layers = _init_mlp_shapes(self, image_shape, latent_dim, hidden, depth)
        self.body = _mlp([self.latent_dim] + hidden_layers + [math.prod(self.image_shape)])


def _check_side(image_shape: tuple[int, int, int]) -> int:
    c, h, w = image_shape
    if h != w or h % 4:
        raise ValueError(f"conv encoders/decoders need square images with a side divisible by 4, "
                         f"got {image_shape}")
    return h // 4


def _init_conv_shapes(net: nn.Module, image_shape: object, latent_dim: object,
                      width: object) -> tuple[int, int]:
    """Check and set ``net.image_shape`` and ``net.latent_dim``; return (width, H/4)."""
    net.image_shape = _check_shape(image_shape)
    net.latent_dim = check_int("latent_dim", latent_dim, minimum=1)
    return check_int("width", width, minimum=1), _check_side(net.image_shape)


class ConvEncoder(_Encoder):
    """Two stride-2 convolutions (kernel 4, padding 1; ``width``, 2·``width`` channels, ReLU)
    take H×W to H/4×W/4, then a linear map to (μ, logvar)."""

    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int, width: int = 32):
        super().__init__()
        width, s = _init_conv_shapes(self, image_shape, latent_dim, width)
        self.body = nn.Sequential(
            nn.Conv2d(self.image_shape[0], width, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.ReLU(),
            nn.Flatten(), nn.Linear(2 * width * s * s, 2 * self.latent_dim))


class ConvDecoder(_Decoder):
    """A linear map to a ``(2·width, H/4, W/4)`` map, then two stride-2 transposed convolutions
    (ReLU between) up to ``(C, H, W)`` parameters (logits or means, no output activation)."""

    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int, width: int = 32):
        super().__init__()
        width, s = _init_conv_shapes(self, image_shape, latent_dim, width)
        self.body = nn.Sequential(
            nn.Linear(self.latent_dim, 2 * width * s * s), nn.ReLU(),
            nn.Unflatten(1, (2 * width, s, s)),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(width, self.image_shape[0], 4, 2, 1))


class VAE(nn.Module):
    """A VAE with prior N(0, I): ``encoder`` x → (μ, logvar), ``decoder`` z → parameters.

    Args:
        encoder, decoder: modules with matching ``latent_dim`` and ``image_shape`` (such as
            :class:`MLPEncoder` / :class:`ConvDecoder`).
        likelihood: ``"bernoulli"`` (x ∈ {0, 1}) or ``"gaussian"`` (x real).
        log_sigma: the Gaussian likelihood's initial log σ; learned if ``learn_sigma``.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, likelihood: str = "bernoulli", *,
                 log_sigma: float = 0.0, learn_sigma: bool = True):
        super().__init__()
        for name, m in (("encoder", encoder), ("decoder", decoder)):
            if not isinstance(m, nn.Module) or not isinstance(getattr(m, "latent_dim", None), int):
                raise ValueError(f"{name} must be an nn.Module with an integer latent_dim")
        if encoder.latent_dim != decoder.latent_dim:
            raise ValueError(f"encoder and decoder latent_dim differ: {encoder.latent_dim} vs "
                             f"{decoder.latent_dim}")
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        self.encoder, self.decoder, self.likelihood = encoder, decoder, likelihood
        self.latent_dim = encoder.latent_dim
        sigma = torch.tensor(float(log_sigma))
        self.log_sigma = nn.Parameter(sigma) if learn_sigma else None
        if not learn_sigma:
            self.register_buffer("_log_sigma", sigma)

    def sigma_log(self) -> torch.Tensor:
        """log σ of the Gaussian likelihood (a scalar tensor)."""
        return self.log_sigma if self.log_sigma is not None else self._log_sigma

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x ``(B, C, H, W)`` → μ, logvar ``(B, d)``."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z ``(..., d)`` → the likelihood's parameters ``(..., C, H, W)`` (logits or means)."""
        return self.decoder(z)

    def log_px_z(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p_θ(x_b | z_{..b}): x ``(B, C, H, W)``, z ``(..., B, d)`` → ``(..., B)``."""
        params = self.decode(z)
        if self.likelihood == "bernoulli":
            return bernoulli_log_likelihood(params, x)
        return gaussian_log_likelihood(params, x, self.sigma_log())

    def forward(self, x: torch.Tensor, n_samples: int = 1) -> ELBO:
        """The ELBO's terms ``(B,)`` each, the reconstruction term from ``n_samples``
        reparameterised z per image (differentiable in θ and φ)."""
        n_samples = check_int("n_samples", n_samples, minimum=1)
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar, n_samples=n_samples)
        return elbo(self.log_px_z(x, z), mu, logvar)

    def iwae(self, x: torch.Tensor, k: int, *, chunk: int = 100) -> torch.Tensor:
        """The IWAE bound L̂_k ``(B,)`` (no gradient), drawing the k samples ``chunk`` at a time
        (the log-mean-exp is combined exactly across chunks)."""
        k, chunk = check_int("k", k, minimum=1), check_int("chunk", chunk, minimum=1)
        with torch.no_grad():
            mu, logvar = self.encode(x)
            parts, sizes = [], []
            for start in range(0, k, chunk):
                n = min(chunk, k - start)
                parts.append(iwae_bound(lambda z: self.log_px_z(x, z), mu, logvar, n))
                sizes.append(n)
            # log (1/k) Σ_k w = logsumexp_c [L̂_c + log n_c] − log k
            logs = torch.stack(parts) + torch.tensor(sizes, dtype=mu.dtype,
                                                     device=mu.device).log()[:, None]
            return torch.logsumexp(logs, 0) - math.log(k)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of p(x | z = μ(x)): images ``(B, C, H, W)`` (probabilities for Bernoulli)."""
        return self.mean(self.decode(self.encode(x)[0]))

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """The likelihood's mean from its parameters: σ(ℓ) for Bernoulli, the mean itself else."""
        return params.sigmoid() if self.likelihood == "bernoulli" else params

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """n images ``(n, C, H, W)``: the likelihood's mean at z ~ N(0, I)."""
        n = check_int("n", n, minimum=1)
        p = next(self.parameters())
        z = torch.randn(n, self.latent_dim, generator=generator, dtype=p.dtype, device=p.device)
        return self.mean(self.decode(z))
