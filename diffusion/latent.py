"""Latent diffusion (Rombach et al. 2022): diffuse in an autoencoder's latent space
(06_latent_diffusion).

A trained VAE (:class:`vae.VAE`) gives an encoder x ↦ μ_φ(x) ∈ R^d and a decoder z ↦ x̂. The
diffusion model is trained on the latents z_0 = μ_φ(x) / s, with s the latents' standard
deviation over the training set (one number, as in Stable Diffusion's scale factor, so that z_0
has unit variance like the noise), and a sample is decoded as x̂ = decoder(s · z_0). The cost of
a denoising step then scales with d instead of the number of pixels.

Shapes: images ``(B, C, H, W)``; latents ``(B, d)``.
"""

from __future__ import annotations

import torch
from torch import nn

from utils.validation import check_int, shape_of

__all__ = ["LatentCodec"]


class LatentCodec(nn.Module):
    """Encode images to scaled latents and decode them back, with a frozen VAE.

    Args:
        vae: a trained VAE with ``encode`` (x → μ, logvar) and ``decode`` / ``mean``.
        scale: s > 0; see :meth:`fit_scale`.
    """

    def __init__(self, vae: nn.Module, scale: float = 1.0):
        super().__init__()
        if not all(callable(getattr(vae, m, None)) for m in ("encode", "decode", "mean")):
            raise ValueError(f"vae must have encode, decode and mean, got {type(vae).__name__}")
        self.vae = vae.eval().requires_grad_(False)
        self.register_buffer("scale", torch.tensor(float(scale)))
        if not float(scale) > 0:
            raise ValueError(f"scale must be > 0, got {scale!r}")

    @torch.no_grad()
    def _means(self, x: torch.Tensor, batch_size: int) -> torch.Tensor:
        """μ_φ(x) ``(B, d)``, encoded ``batch_size`` images at a time."""
        batch_size = check_int("batch_size", batch_size, minimum=1)
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise ValueError(f"x must be images (B, C, H, W), got {shape_of(x)}")
        return torch.cat([self.vae.encode(x[i:i + batch_size])[0]
                          for i in range(0, x.shape[0], batch_size)])

    @torch.no_grad()
    def fit_scale(self, x: torch.Tensor, batch_size: int = 512) -> float:
        """Set s to the standard deviation of μ_φ(x) over every coordinate of ``x``'s latents."""
        self.scale.fill_(self._means(x, batch_size).std().item())
        return float(self.scale)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """z_0 = μ_φ(x) / s: images ``(B, C, H, W)`` → ``(B, d)``."""
        return self._means(x, batch_size) / self.scale

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """x̂ = the decoder's mean at s · z: latents ``(B, d)`` → images."""
        if not isinstance(z, torch.Tensor) or z.ndim != 2:
            raise ValueError(f"z must be latents (B, d), got {shape_of(z)}")
        return self.vae.mean(self.vae.decode(z * self.scale))
