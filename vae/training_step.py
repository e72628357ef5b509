"""The VAE's training step for utils.training.fit, with the cures for posterior collapse
(04_posterior_collapse): a KL weight β (annealed or fixed) and free bits.

One call of the returned ``step(batch)`` minimises, for the batch x ``(B, ...)``,

    L = −(1/B) Σ_b [ E_q log p(x_b | z) − β_s · KL_b ]                       (free_bits = 0)

    L = −(1/B) Σ_b E_q log p(x_b | z) + β_s · Σ_j max(λ, (1/B) Σ_b KL_bj)     (free_bits = λ)

with KL_bj = KL(q(z_j | x_b) ‖ N(0, 1)) the KL of latent j (Kingma et al. 2016's free bits: no
latent is pushed below λ nats, so the encoder can keep it informative at no cost). β_s is the
number ``beta`` or ``beta(s)``, a schedule of the step s (KL annealing, Bowman et al. 2016: β
from 0 to 1 over a warm-up). β = 1 and λ = 0 is the ELBO itself.

The step counts its own calls (s = 0, 1, ...), so a schedule continues across repeated
:func:`utils.training.fit` calls in one process (training in chunks); for a run resumed from a
checkpoint in a new process, pass ``start_step`` = the checkpoint's step.

Returned metrics (floats, batch means): ``loss`` (L), ``elbo`` (the true bound, β = 1, λ = 0),
``reconstruction``, ``kl`` and ``beta``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from utils.training import check_finite
from utils.validation import check_int, shape_of
from vae.elbo import gaussian_kl, reparameterize

__all__ = ["linear_warmup", "vae_step"]


def linear_warmup(steps: int) -> Callable[[int], float]:
    """β(s) = min(1, s / steps): KL annealing from 0 to 1 over ``steps`` ≥ 1 steps."""
    steps = check_int("steps", steps, minimum=1)
    return lambda s: min(1.0, s / steps)


def _check_beta(beta: object) -> Callable[[int], float]:
    if callable(beta):
        return beta
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not math.isfinite(beta) \
            or beta < 0:
        raise ValueError(f"beta must be a finite number >= 0 or a schedule step -> beta, got "
                         f"{beta!r}")
    return lambda s, b=float(beta): b


def vae_step(model: nn.Module, optimizer: Any, *, beta: float | Callable[[int], float] = 1.0,
             free_bits: float = 0.0, n_samples: int = 1,
             start_step: int = 0) -> Callable[[Any], dict[str, float]]:
    """A ``step(batch) -> dict[str, float]`` for :func:`utils.training.fit` (see the module).

    Args:
        model: a :class:`vae.VAE` (``encode`` and ``log_px_z``).
        optimizer: over the model's parameters.
        beta: the KL weight β ≥ 0, or a schedule ``s -> β``.
        free_bits: λ ≥ 0 nats per latent dimension (0: off).
        n_samples: reparameterised samples per image for the reconstruction term, ≥ 1.
        start_step: the step the schedule starts at (for a resumed run).

    A batch is x or (x, labels, ...): only x is used.
    """
    if not isinstance(model, nn.Module) or not callable(getattr(model, "log_px_z", None)):
        raise ValueError(f"model must be a VAE (an nn.Module with encode and log_px_z), got "
                         f"{type(model).__name__}")
    if not (callable(getattr(optimizer, "step", None))
            and callable(getattr(optimizer, "zero_grad", None))):
        raise ValueError(f"optimizer must have step and zero_grad, got {type(optimizer).__name__}")
    schedule = _check_beta(beta)
    if isinstance(free_bits, bool) or not isinstance(free_bits, (int, float)) \
            or not math.isfinite(free_bits) or free_bits < 0:
        raise ValueError(f"free_bits must be a finite number >= 0, got {free_bits!r}")
    free_bits = float(free_bits)
    n_samples = check_int("n_samples", n_samples, minimum=1)
    counter = [check_int("start_step", start_step, minimum=0)]

    def step(batch: Any) -> dict[str, float]:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point or x.ndim < 2:
            raise ValueError(f"the batch must be a float tensor (B, ...), got {shape_of(x)}")
        b = float(schedule(counter[0]))
        if not math.isfinite(b) or b < 0:
            raise ValueError(f"beta({counter[0]}) must be a finite number >= 0, got {b!r}")
        optimizer.zero_grad(set_to_none=True)
        mu, logvar = model.encode(x)
        z = reparameterize(mu, logvar, n_samples=n_samples)
        reconstruction = model.log_px_z(x, z).mean(0)                     # (B,)
        kl_j = gaussian_kl(mu.unsqueeze(-1), logvar.unsqueeze(-1))        # (B, d): KL per latent
        kl = kl_j.sum(-1)                                                 # (B,)
        if free_bits > 0:
            kl_term = kl_j.mean(0).clamp(min=free_bits).sum()
        else:
            kl_term = kl.mean()
        loss = -reconstruction.mean() + b * kl_term
        value = check_finite("the VAE loss", loss, counter[0])  # before the update
        loss.backward()
        optimizer.step()
        counter[0] += 1
        return {"loss": value, "elbo": (reconstruction - kl).mean().item(),
                "reconstruction": reconstruction.mean().item(), "kl": kl.mean().item(),
                "beta": b}

    return step
