"""Diagnosing posterior collapse (04_posterior_collapse).

A latent dimension u is **active** (Burda et al. 2016) when the encoder's mean moves with x:

    A_u = Cov_x( E_{q(z|x)}[z_u] ) = Var_x μ_u(x) > δ          (δ = 0.01)

A collapsed latent has q(z_u | x) ≈ N(0, 1) = p(z_u) for every x: its KL is ≈ 0 and it carries
no information about x. :func:`kl_per_dimension` gives the KL of each latent averaged over data.
"""

from __future__ import annotations

import torch

from utils.validation import check_positive, shape_of
from vae.elbo import gaussian_kl

__all__ = ["active_units", "activity", "kl_per_dimension"]


def _check_means(mu: object, min_n: int) -> torch.Tensor:
    if not isinstance(mu, torch.Tensor) or not mu.dtype.is_floating_point or mu.ndim != 2 \
            or mu.shape[0] < min_n or mu.shape[1] < 1:
        raise ValueError(f"mu must be a float tensor (N, d) with N >= {min_n}, got {shape_of(mu)}")
    return mu


def activity(mu: torch.Tensor) -> torch.Tensor:
    """A_u = Var_x μ_u(x) (unbiased, over the N data points): mu ``(N, d)`` → ``(d,)``."""
    return _check_means(mu, 2).var(0)


def active_units(mu: torch.Tensor, threshold: float = 0.01) -> int:
    """The number of latents with A_u > ``threshold`` (> 0): mu ``(N, d)``, N ≥ 2."""
    return int((activity(mu) > check_positive("threshold", threshold)).sum())


def kl_per_dimension(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """(1/N) Σ_n KL(q(z_u | x_n) ‖ N(0, 1)) for each latent u: ``(N, d)`` each → ``(d,)``."""
    mu = _check_means(mu, 1)
    if not isinstance(logvar, torch.Tensor) or logvar.shape != mu.shape:
        raise ValueError(f"logvar must have mu's shape {tuple(mu.shape)}, got {shape_of(logvar)}")
    return gaussian_kl(mu.unsqueeze(-1), logvar.unsqueeze(-1)).mean(0)
