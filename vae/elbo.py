"""The Gaussian VAE's ELBO: the KL term in closed form, the reparameterisation, the likelihoods,
and the importance-weighted bound (01_elbo, 02_reparameterization, 03_vae_on_digits).

The model is p(z) = N(0, I), p_θ(x | z) a decoder, q_φ(z | x) = N(μ_φ(x), diag exp(logvar_φ(x))).
For one x,

    ELBO(x) = E_q[log p_θ(x | z)] − KL(q_φ(z | x) ‖ p(z))  ≤  log p_θ(x),

    KL(N(μ, diag σ²) ‖ N(0, I)) = ½ Σ_j (σ_j² + μ_j² − 1 − log σ_j²)          (closed form)

and the reconstruction term is estimated with z = μ + σ ⊙ ε, ε ~ N(0, I) (the reparameterisation:
a differentiable function of (μ, σ) and noise that does not depend on them). The IWAE bound
(Burda et al. 2016) with K samples,

    L_K(x) = E log (1/K) Σ_k p_θ(x | z_k) p(z_k) / q_φ(z_k | x),   z_k ~ q_φ(z | x),

has L_1 = ELBO ≤ L_K ≤ L_{K+1} ≤ log p_θ(x); it is computed by
:func:`foundations.iw_bound` (a log-sum-exp).

Shapes: ``mu``, ``logvar`` and ``z`` are ``(..., d)``; the functions sum over the last dimension
(latents) or, for the likelihoods, over every dimension after the batch's first one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

from foundations.bounds import iw_bound
from utils.validation import check_int, shape_of

__all__ = [
    "ELBO", "LIKELIHOODS", "bernoulli_log_likelihood", "diagonal_gaussian_log_prob", "elbo",
    "gaussian_kl", "gaussian_log_likelihood", "independent_pixels_log_prob", "iwae_bound",
    "reparameterize", "standard_normal_log_prob",
]

LIKELIHOODS: tuple[str, ...] = ("bernoulli", "gaussian")
_LOG_2PI = math.log(2 * math.pi)


def _check_float(name: str, t: object, min_ndim: int = 1) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or not t.dtype.is_floating_point or t.ndim < min_ndim \
            or t.shape[-1] < 1:
        dtype = f" of dtype {t.dtype}" if isinstance(t, torch.Tensor) else ""
        raise ValueError(f"{name} must be a float tensor with at least {min_ndim} dimension(s) "
                         f"and a non-empty last one, got {shape_of(t)}{dtype}")
    return t


def _check_mu_logvar(mu: object, logvar: object) -> tuple[torch.Tensor, torch.Tensor]:
    mu, logvar = _check_float("mu", mu), _check_float("logvar", logvar)
    if mu.shape != logvar.shape:
        raise ValueError(f"mu and logvar must have the same shape (..., d), got "
                         f"{tuple(mu.shape)} and {tuple(logvar.shape)}")
    return mu, logvar


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, diag exp(logvar)) ‖ N(0, I)) = ½ Σ_j (exp(logvar_j) + μ_j² − 1 − logvar_j).

    Args:
        mu, logvar: ``(..., d)``, the same shape; logvar = log σ².

    Returns:
        ``(...)``: one KL per row, summed over the last (latent) dimension; ≥ 0, and 0 exactly
        when μ = 0 and logvar = 0.
    """
    mu, logvar = _check_mu_logvar(mu, logvar)
    # exp(l) − 1 − l written as expm1(l) − l: never negative in floating point (the naive form
    # rounds to about −1e-26 for l near 0)
    return 0.5 * (torch.expm1(logvar) - logvar + mu.pow(2)).sum(-1)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None = None, *,
                   n_samples: int | None = None) -> torch.Tensor:
    """z = μ + σ ⊙ ε with σ = exp(½ logvar) and ε ~ N(0, I) (drawn if not given).

    Args:
        mu, logvar: ``(..., d)``.
        eps: ``(S, ..., d)`` or ``(..., d)``: noise broadcast against μ; pass it to get several
            samples per row at once, or to make the sample a deterministic function of (μ, σ).
        n_samples: S ≥ 1: draw ε of shape ``(S, ..., d)`` (instead of passing ``eps``).

    Returns:
        z with ε's shape (or μ's): differentiable in μ and logvar.
    """
    mu, logvar = _check_mu_logvar(mu, logvar)
    if eps is not None and n_samples is not None:
        raise ValueError("give eps or n_samples, not both")
    if n_samples is not None:
        eps = torch.randn((check_int("n_samples", n_samples, minimum=1), *mu.shape),
                          dtype=mu.dtype, device=mu.device)
    elif eps is None:
        eps = torch.randn_like(mu)
    elif not isinstance(eps, torch.Tensor) or eps.shape[eps.ndim - mu.ndim:] != mu.shape:
        raise ValueError(f"eps must be a tensor of shape (..., *{tuple(mu.shape)}), got "
                         f"{shape_of(eps)}")
    return mu + (0.5 * logvar).exp() * eps


def diagonal_gaussian_log_prob(z: torch.Tensor, mu: torch.Tensor,
                               logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; μ, diag exp(logvar)) = −½ Σ_j [log 2π + logvar_j + (z_j − μ_j)² / exp(logvar_j)].

    z ``(..., d)`` broadcast against μ, logvar ``(..., d)``; returns the broadcast ``(...)``.
    """
    mu, logvar = _check_mu_logvar(mu, logvar)
    z = _check_float("z", z)
    if z.shape[-1] != mu.shape[-1]:
        raise ValueError(f"z must have last dimension {mu.shape[-1]}, got {tuple(z.shape)}")
    return -0.5 * (_LOG_2PI + logvar + (z - mu).pow(2) * (-logvar).exp()).sum(-1)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) = −½ Σ_j (log 2π + z_j²): z ``(..., d)`` → ``(...)``."""
    z = _check_float("z", z)
    return -0.5 * (_LOG_2PI + z.pow(2)).sum(-1)


def _check_pair(name: str, params: object, x: object) -> tuple[torch.Tensor, torch.Tensor]:
    params, x = _check_float(name, params, 2), _check_float("x", x, 2)
    if params.shape[params.ndim - x.ndim + 1:] != x.shape[1:] or params.ndim < x.ndim:
        raise ValueError(f"{name} must have shape (..., B, {', '.join(map(str, x.shape[1:]))}) "
                         f"to match x {tuple(x.shape)}, got {tuple(params.shape)}")
    return params, x


def bernoulli_log_likelihood(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x | z) = Σ_i [x_i log σ(ℓ_i) + (1 − x_i) log(1 − σ(ℓ_i))], ℓ the decoder's logits.

    Written with softplus (no log 0): x ℓ − softplus(ℓ). A proper log-probability, in nats, for
    binary x ∈ {0, 1}.

    Args:
        logits: ``(..., B, *event)``, e.g. ``(K, B, 1, 16, 16)`` for K samples of z per image.
        x: ``(B, *event)`` with values in [0, 1].

    Returns:
        ``(..., B)``: summed over the event dimensions.
    """
    logits, x = _check_pair("logits", logits, x)
    if bool(((x < 0) | (x > 1)).any()):
        raise ValueError("x must lie in [0, 1] for a Bernoulli likelihood (binarise the data)")
    return (x * logits - F.softplus(logits)).flatten(logits.ndim - x.ndim + 1).sum(-1)


def independent_pixels_log_prob(x_train: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The baseline a binary-image model must beat: log p(x) = Σ_j [x_j log p_j + (1 − x_j)
    log(1 − p_j)], every pixel an independent coin with the training set's frequency, smoothed by
    one pseudo-count each way, p_j = (Σ_n x_train[n, j] + 1) / (N + 2) (so no log 0 on test data).

    Args:
        x_train: ``(N, *event)`` in {0, 1}, the images p is fitted to.
        x: ``(B, *event)`` in {0, 1}.

    Returns:
        ``(B,)``: exact log-probabilities in nats.
    """
    x_train, x = _check_float("x_train", x_train, 2), _check_float("x", x, 2)
    if x_train.shape[1:] != x.shape[1:]:
        raise ValueError(f"x_train {tuple(x_train.shape)} and x {tuple(x.shape)} must have the "
                         f"same image shape")
    for name, t in (("x_train", x_train), ("x", x)):
        if not bool(((t == 0) | (t == 1)).all()):
            raise ValueError(f"{name} must be binary (values in {{0, 1}}): binarise the images")
    p = (x_train.sum(0) + 1) / (x_train.shape[0] + 2)                       # p_j: (*event)
    return bernoulli_log_likelihood((p.log() - (-p).log1p()).expand_as(x), x)


def gaussian_log_likelihood(mean: torch.Tensor, x: torch.Tensor,
                            log_sigma: torch.Tensor | float = 0.0) -> torch.Tensor:
    """log N(x; mean, σ² I) = −Σ_i [½ log 2π + log σ + (x_i − mean_i)² / (2σ²)].

    Args:
        mean: ``(..., B, *event)``; x: ``(B, *event)``.
        log_sigma: log σ, a float or a tensor broadcast against ``mean`` (a learned scalar, or
            one per pixel).

    Returns:
        ``(..., B)``: summed over the event dimensions (a density: it can be positive).
    """
    mean, x = _check_pair("mean", mean, x)
    log_sigma = torch.as_tensor(log_sigma, dtype=mean.dtype, device=mean.device)
    terms = 0.5 * _LOG_2PI + log_sigma + (x - mean).pow(2) * (-2 * log_sigma).exp() / 2
    return -terms.expand_as(mean).flatten(mean.ndim - x.ndim + 1).sum(-1)


class ELBO(NamedTuple):
    """The two terms of the bound and the bound, each ``(B,)``: ``elbo = reconstruction − kl``."""

    elbo: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor


def elbo(log_px_z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> ELBO:
    """ELBO = E_q log p(x | z) − KL(q(z | x) ‖ N(0, I)), the KL in closed form.

    Args:
        log_px_z: ``(S, B)`` or ``(B,)``: log p(x_b | z_sb) for S reparameterised samples (the
            reconstruction term is their mean).
        mu, logvar: ``(B, d)``: the encoder's q(z | x_b).

    Returns:
        :class:`ELBO` of ``(B,)`` tensors.
    """
    mu, logvar = _check_mu_logvar(mu, logvar)
    if mu.ndim != 2:
        raise ValueError(f"mu and logvar must have shape (B, d), got {tuple(mu.shape)}")
    if not isinstance(log_px_z, torch.Tensor) or not log_px_z.dtype.is_floating_point \
            or log_px_z.ndim not in (1, 2) or log_px_z.shape[-1] != mu.shape[0] \
            or log_px_z.shape[0] < 1:
        raise ValueError(f"log_px_z must be a float tensor of shape (S, {mu.shape[0]}) or "
                         f"({mu.shape[0]},), got {shape_of(log_px_z)}")
    reconstruction = log_px_z if log_px_z.ndim == 1 else log_px_z.mean(0)
    kl = gaussian_kl(mu, logvar)
    return ELBO(reconstruction - kl, reconstruction, kl)


def iwae_bound(log_px_z: Callable[[torch.Tensor], torch.Tensor], mu: torch.Tensor,
               logvar: torch.Tensor, k: int) -> torch.Tensor:
    """The importance-weighted bound L̂_K(x_b) with K samples z_k ~ q(z | x_b) = N(μ_b, σ_b²):

        L̂_K = logsumexp_k [log p(x_b | z_k) + log N(z_k; 0, I) − log q(z_k | x_b)] − log K.

    Args:
        log_px_z: maps z ``(K, B, d)`` to log p(x_b | z_kb) ``(K, B)`` (a decoder and a
            likelihood, e.g. :meth:`vae.VAE.log_px_z`).
        mu, logvar: ``(B, d)``, the encoder's output for the batch.
        k: K ≥ 1; K = 1 is a one-sample ELBO estimate (with the KL estimated, not exact).

    Returns:
        ``(B,)``, one estimate per data point (Monte Carlo: average over repetitions or data).
    """
    mu, logvar = _check_mu_logvar(mu, logvar)
    k = check_int("k", k, minimum=1)
    if mu.ndim != 2:
        raise ValueError(f"mu and logvar must have shape (B, d), got {tuple(mu.shape)}")
    z = reparameterize(mu, logvar, n_samples=k)
    log_lik = log_px_z(z)
    if not isinstance(log_lik, torch.Tensor) or log_lik.shape != z.shape[:2]:
        raise ValueError(f"log_px_z must map z {tuple(z.shape)} to {tuple(z.shape[:2])}, got "
                         f"{shape_of(log_lik)}")
    return iw_bound(log_lik + standard_normal_log_prob(z),
                    diagonal_gaussian_log_prob(z, mu, logvar))

