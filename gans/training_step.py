"""The adversarial training step for utils.training.fit: n_critic critic updates, then one
generator update.

One call of the returned ``step(batch)`` does, with x the batch's real samples ``(B, ...)``:

1. ``n_critic`` times: draw z ~ N(0, I) ``(B, latent_dim)`` on x's device, x̃ = G(z) (detached),
   and take one optimiser step of the critic on

       L_D = loss.critic(D(x), D(x̃)) + λ · GP(D; x, x̃)      (λ = ``gp_weight``; GP only if λ > 0),

   then, if ``clip`` is given, clip every critic parameter into [−clip, clip] (WGAN).
   All n_critic updates use the SAME real batch (fresh noise each time): with
   :func:`utils.training.fit` a step sees one batch. Pass a batch n_critic times larger and
   split it yourself if you want fresh real data per critic update.
2. Once: draw fresh z and take one optimiser step of the generator on
   ``L_G = loss.generator(D(G(z)))``.

Conditional GANs (``conditional=True``): the batch is ``(x, labels)`` and the fakes are drawn
for the SAME labels, G(z, y), scored by D(·, y); so the fakes have the data's class frequencies.
Unconditional: a batch ``(x, labels, ...)`` uses only x.

Instance noise (``instance_noise`` = σ, or a schedule t ↦ σ_t; Sønderby et al. 2017, Arjovsky &
Bottou 2017). Data and generator on low-dimensional manifolds have disjoint supports almost
surely, so a perfect discriminator exists and the generator's gradient vanishes
(``gans/07_gans_on_manifolds``). Blurring both distributions with the same Gaussian,
p_σ = p ∗ N(0, σ²I) and q_σ = q ∗ N(0, σ²I), gives them full support, JS(p_σ, q_σ) < log 2 and a
smooth optimal discriminator. The critic then only ever sees noisy inputs:

    L_D = loss.critic(D(x + σ_t ε), D(x̃ + σ_t ε'))      (+ λ · GP at the same noisy points),
    L_G = loss.generator(D(G(z) + σ_t ε'')),            ε, ε', ε'' ~ N(0, I) drawn afresh,

in every critic update and in the generator update of call t. σ_t is the float σ, or
``instance_noise(t)`` with t = 0, 1, 2, ... the number of earlier calls of this ``step`` (it
counts its own calls: a run resumed from a checkpoint in a new process restarts the count, so
pass a schedule shifted by the resumed step). An annealed schedule, e.g. σ_t = σ_0 max(0,
1 − t/T), lets the blur vanish as the generator reaches the data. σ_t = 0 draws no noise, so
the step is then exactly the noiseless one (same random numbers, same updates).

Returned metrics (floats): ``critic_loss`` (the mean of L_D without the penalty over the n_critic
updates), ``generator_loss`` (L_G), if λ > 0 ``gradient_penalty`` (the mean GP) and, if
``instance_noise`` is given, ``instance_noise`` (σ_t).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from gans.losses import GANLoss, clip_weights_, gan_loss, gradient_penalty
from utils.training import check_finite
from utils.validation import check_int, check_positive, shape_of

__all__ = ["adversarial_step"]


def _split_batch(batch: Any, conditional: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(x, labels or None) from a batch that is x or (x, labels, ...)."""
    if isinstance(batch, (tuple, list)):
        if not batch:
            raise ValueError("the batch is an empty tuple; expected x or (x, labels)")
        x, labels = batch[0], (batch[1] if len(batch) > 1 else None)
    else:
        x, labels = batch, None
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point or x.ndim < 2 \
            or x.shape[0] < 1:
        raise ValueError(f"the batch's samples must be a float tensor (B, ...), got {shape_of(x)}")
    if not conditional:
        return x, None
    if labels is None:
        raise ValueError("conditional=True needs batches (x, labels), got x alone")
    return x, labels


def _check_sigma(value: object, where: str) -> float:
    """σ as a float if it is a finite real number ≥ 0 (not a bool); else a ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not math.isfinite(value) or value < 0:
        raise ValueError(f"{where} must be a finite number >= 0 (the noise's standard "
                         f"deviation), got {value!r}")
    return float(value)


def _add_noise(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """x + σ ε, ε ~ N(0, I) of x's shape, dtype and device; x itself (no draw) when σ = 0."""
    return x + sigma * torch.randn_like(x) if sigma > 0 else x


def adversarial_step(generator: nn.Module, critic: nn.Module, opt_generator: Any,
                     opt_critic: Any, loss: str | GANLoss, latent_dim: int, *,
                     n_critic: int = 1, gp_weight: float = 0.0, clip: float | None = None,
                     conditional: bool = False,
                     instance_noise: float | Callable[[int], float] | None = None,
                     ) -> Callable[[Any], dict[str, float]]:
    """A ``step(batch) -> dict[str, float]`` for :func:`utils.training.fit` (see the module).

    Args:
        generator: G, called as ``G(z)`` or ``G(z, labels)``; z ``(B, latent_dim)``.
        critic: D, called as ``D(x)`` or ``D(x, labels)``; returns ``(B,)`` or ``(B, 1)``.
        opt_generator, opt_critic: optimisers over G's and D's parameters.
        loss: a name in :data:`gans.losses.GAN_LOSSES` or a :class:`GANLoss`.
        latent_dim: the noise dimension, ≥ 1.
        n_critic: critic updates per generator update, ≥ 1 (5 in WGAN / WGAN-GP).
        gp_weight: λ ≥ 0 of the gradient penalty (10 in WGAN-GP); 0 turns it off.
        clip: if given (> 0), clip the critic's weights into [−clip, clip] after each update.
        conditional: batches are ``(x, labels)`` and both networks take the labels.
        instance_noise: σ ≥ 0, or a schedule ``t -> σ_t`` called once per step with the step's
            count t = 0, 1, ...: the standard deviation of the Gaussian noise added to every
            input of the critic, real and fake (see the module). None (default): no noise.

    Example::

        step = adversarial_step(G, D, opt_G, opt_D, "wasserstein", 2, n_critic=5, gp_weight=10)
        result = fit(step, batches(x, batch_size=256), 2_000, models={"G": G, "D": D},
                     optimizers={"G": opt_G, "D": opt_D})
    """
    for name, m in (("generator", generator), ("critic", critic)):
        if not isinstance(m, nn.Module):
            raise ValueError(f"{name} must be a torch.nn.Module, got {type(m).__name__}")
    for name, o in (("opt_generator", opt_generator), ("opt_critic", opt_critic)):
        if not (callable(getattr(o, "step", None)) and callable(getattr(o, "zero_grad", None))):
            raise ValueError(f"{name} must be an optimiser (with step and zero_grad), got "
                             f"{type(o).__name__}")
    if not isinstance(loss, GANLoss):
        loss = gan_loss(loss)
    latent_dim = check_int("latent_dim", latent_dim, minimum=1)
    n_critic = check_int("n_critic", n_critic, minimum=1)
    if isinstance(gp_weight, bool) or not isinstance(gp_weight, (int, float)) \
            or not math.isfinite(gp_weight) or gp_weight < 0:
        raise ValueError(f"gp_weight must be a finite number >= 0, got {gp_weight!r}")
    gp_weight = float(gp_weight)
    clip = None if clip is None else check_positive("clip", clip)
    if not isinstance(conditional, bool):
        raise ValueError(f"conditional must be a bool, got {conditional!r}")
    if instance_noise is not None and not callable(instance_noise):
        instance_noise = _check_sigma(instance_noise, "instance_noise")
    calls = 0                                    # t: the number of earlier calls of step

    def noise_level() -> float | None:
        if instance_noise is None or not callable(instance_noise):
            return instance_noise
        return _check_sigma(instance_noise(calls), f"instance_noise({calls})")

    def args(labels: torch.Tensor | None) -> tuple:
        return () if labels is None else (labels,)

    def step(batch: Any) -> dict[str, float]:
        nonlocal calls
        x, labels = _split_batch(batch, conditional)
        sigma = noise_level()                    # σ_t, or None without instance noise
        s = sigma or 0.0
        calls += 1
        b = x.shape[0]
        critic_losses, penalties = [], []
        for _ in range(n_critic):
            z = torch.randn(b, latent_dim, device=x.device, dtype=x.dtype)
            with torch.no_grad():
                fake = generator(z, *args(labels))                  # x̃: (B, ...), no G graph
            real_in, fake_in = _add_noise(x, s), _add_noise(fake, s)   # x + σε, x̃ + σε'
            opt_critic.zero_grad(set_to_none=True)
            l_d = loss.critic(critic(real_in, *args(labels)), critic(fake_in, *args(labels)))
            total = l_d
            if gp_weight > 0:
                gp = gradient_penalty(lambda h: critic(h, *args(labels)), real_in, fake_in)
                total = l_d + gp_weight * gp
                penalties.append(gp.item())
            check_finite("the critic loss", total, calls - 1)  # before the critic's update
            total.backward()
            opt_critic.step()
            if clip is not None:
                clip_weights_(critic, clip)
            critic_losses.append(l_d.item())

        z = torch.randn(b, latent_dim, device=x.device, dtype=x.dtype)
        flags = [p.requires_grad for p in critic.parameters()]
        critic.requires_grad_(False)             # no critic gradients from the generator's step
        try:
            opt_generator.zero_grad(set_to_none=True)
            fake_in = _add_noise(generator(z, *args(labels)), s)     # G(z) + σε''
            l_g = loss.generator(critic(fake_in, *args(labels)))
            check_finite("the generator loss", l_g, calls - 1)  # before the generator's update
            l_g.backward()
            opt_generator.step()
        finally:
            for p, flag in zip(critic.parameters(), flags, strict=True):
                p.requires_grad_(flag)
        metrics = {"critic_loss": sum(critic_losses) / n_critic, "generator_loss": l_g.item()}
        if gp_weight > 0:
            metrics["gradient_penalty"] = sum(penalties) / n_critic
        if sigma is not None:
            metrics["instance_noise"] = sigma
        return metrics

    return step
