"""The adversarial losses: minimax, non-saturating, Wasserstein, hinge; gradient penalty.

Every loss takes the critic's RAW outputs, one number per sample: ``real_out = D(x)`` on data
and ``fake_out = D(G(z))`` on generated samples, each of shape ``(B,)`` or ``(B, 1)`` (the two
batch sizes may differ). For ``minimax`` and ``non_saturating`` the raw output is the
discriminator's LOGIT d, with D = σ(d); the logs are written with softplus, which never
overflows or takes log 0:

    −log σ(d) = softplus(−d),        −log(1 − σ(d)) = softplus(d).

Both players MINIMISE the returned scalar (means over the batch):

  minimax         critic:    −E log σ(d_r) − E log(1 − σ(d_f)) = E softplus(−d_r) + E softplus(d_f)
                  generator: E log(1 − σ(d_f)) = −E softplus(d_f)
  non_saturating  critic:    the same as minimax
                  generator: −E log σ(d_f) = E softplus(−d_f)
  wasserstein     critic:    E D(x̃) − E D(x)
                  generator: −E D(x̃)
  hinge           critic:    E max(0, 1 − D(x)) + E max(0, 1 + D(x̃))
                  generator: −E D(x̃)

``minimax`` is the two-player game min_G max_D V(D, G) of Goodfellow et al. (2014),
V = E_p log D(x) + E_z log(1 − D(G(z))); ``non_saturating`` is the generator loss they recommend
instead (same fixed points, no vanishing gradient when D rejects the fakes). ``wasserstein`` is
the Kantorovich–Rubinstein dual of W1 (Arjovsky, Chintala & Bottou 2017), which needs a
1-Lipschitz critic: weight clipping (:func:`clip_weights_`, the original paper) or the gradient
penalty (:func:`gradient_penalty`, Gulrajani et al. 2017); :func:`critic_gradient_norms`
measures the constraint on a trained critic. ``hinge`` is the geometric-GAN /
SN-GAN loss (Lim & Ye 2017; Miyato et al. 2018).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from utils.validation import check_choice, check_positive, shape_of

__all__ = ["GAN_LOSSES", "GANLoss", "clip_weights_", "critic_gradient_norms", "gan_loss",
           "gradient_penalty"]

GAN_LOSSES: tuple[str, ...] = ("minimax", "non_saturating", "wasserstein", "hinge")


def _check_out(name: str, out: object) -> torch.Tensor:
    """A float tensor of one critic output per sample: ``(B,)`` or ``(B, 1)``, B ≥ 1."""
    if not isinstance(out, torch.Tensor) or not out.dtype.is_floating_point or out.ndim not in (
            1, 2) or out.shape[0] < 1 or (out.ndim == 2 and out.shape[1] != 1):
        dtype = f" of dtype {out.dtype}" if isinstance(out, torch.Tensor) else ""
        raise ValueError(f"{name} must be a float tensor of critic outputs of shape (B,) or "
                         f"(B, 1) with B >= 1, got {shape_of(out)}{dtype}")
    return out


def _check_pair(real_out: object, fake_out: object) -> tuple[torch.Tensor, torch.Tensor]:
    real_out, fake_out = _check_out("real_out", real_out), _check_out("fake_out", fake_out)
    if real_out.ndim != fake_out.ndim:
        raise ValueError(f"real_out and fake_out must have the same layout ((B,) or (B, 1)), got "
                         f"{tuple(real_out.shape)} and {tuple(fake_out.shape)}")
    return real_out, fake_out


# The critic losses. d_r = real_out, d_f = fake_out: (B,) or (B, 1) each → scalar.
def _bce_critic(d_r: torch.Tensor, d_f: torch.Tensor) -> torch.Tensor:
    # −E log σ(d_r) − E log(1 − σ(d_f))
    return F.softplus(-d_r).mean() + F.softplus(d_f).mean()


def _wasserstein_critic(d_r: torch.Tensor, d_f: torch.Tensor) -> torch.Tensor:
    # −(E D(x) − E D(x̃)): the critic maximises the dual objective of W1
    return d_f.mean() - d_r.mean()


def _hinge_critic(d_r: torch.Tensor, d_f: torch.Tensor) -> torch.Tensor:
    # E max(0, 1 − D(x)) + E max(0, 1 + D(x̃))
    return F.relu(1 - d_r).mean() + F.relu(1 + d_f).mean()


# The generator losses. d_f = fake_out: (B,) or (B, 1) → scalar.
def _minimax_generator(d_f: torch.Tensor) -> torch.Tensor:
    # E log(1 − σ(d_f)) = −E softplus(d_f): saturates (gradient σ(d_f) → 0) when d_f ≪ 0
    return -F.softplus(d_f).mean()


def _non_saturating_generator(d_f: torch.Tensor) -> torch.Tensor:
    # −E log σ(d_f) = E softplus(−d_f): gradient −(1 − σ(d_f)) → −1 when d_f ≪ 0
    return F.softplus(-d_f).mean()


def _linear_generator(d_f: torch.Tensor) -> torch.Tensor:
    # −E D(x̃)
    return -d_f.mean()


_CRITIC = {"minimax": _bce_critic, "non_saturating": _bce_critic,
           "wasserstein": _wasserstein_critic, "hinge": _hinge_critic}
_GENERATOR = {"minimax": _minimax_generator, "non_saturating": _non_saturating_generator,
              "wasserstein": _linear_generator, "hinge": _linear_generator}


@dataclass(frozen=True)
class GANLoss:
    """A pair of adversarial losses, both to be minimised (see the module's table).

    Attributes:
        name: one of :data:`GAN_LOSSES`.
    """

    name: str

    def __post_init__(self) -> None:
        check_choice("name", self.name, GAN_LOSSES)

    def critic(self, real_out: torch.Tensor, fake_out: torch.Tensor) -> torch.Tensor:
        """The critic's (discriminator's) loss: ``real_out (B,)|(B, 1)``, ``fake_out (B',)|(B',
        1)`` → scalar. Pass ``fake_out`` computed on detached fakes when only D should move."""
        real_out, fake_out = _check_pair(real_out, fake_out)
        return _CRITIC[self.name](real_out, fake_out)

    def generator(self, fake_out: torch.Tensor) -> torch.Tensor:
        """The generator's loss: ``fake_out = D(G(z))``, ``(B,)`` or ``(B, 1)`` → scalar."""
        return _GENERATOR[self.name](_check_out("fake_out", fake_out))


def gan_loss(name: str) -> GANLoss:
    """The :class:`GANLoss` called ``name``: ``"minimax"``, ``"non_saturating"``,
    ``"wasserstein"`` or ``"hinge"``; any other name is a ``ValueError`` listing them."""
    return GANLoss(check_choice("name", name, GAN_LOSSES))


def _interpolate_gradient_norms(critic: Callable[[torch.Tensor], torch.Tensor],
                                real: object, fake: object, generator: torch.Generator | None,
                                create_graph: bool) -> torch.Tensor:
    """‖∇_x̂ D(x̂)‖₂ ``(B,)`` at x̂ = ε x + (1 − ε) x̃, ε ~ U(0, 1) per sample (shared by
    :func:`gradient_penalty` and :func:`critic_gradient_norms`; checks their inputs)."""
    if not callable(critic):
        raise ValueError(f"critic must be callable (x -> scores), got {type(critic).__name__}")
    if not isinstance(real, torch.Tensor) or not isinstance(fake, torch.Tensor) \
            or not real.dtype.is_floating_point or real.ndim < 2 or real.shape[0] < 1 \
            or real.shape != fake.shape or real.dtype != fake.dtype:
        raise ValueError(f"real and fake must be float tensors of the same shape (B, ...) and "
                         f"dtype, got {shape_of(real)} and {shape_of(fake)}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got "
                         f"{type(generator).__name__}")
    eps = torch.rand((real.shape[0],) + (1,) * (real.ndim - 1), generator=generator,
                     device=real.device, dtype=real.dtype)                # ε: (B, 1, ...)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    with torch.enable_grad():
        out = _check_out("critic(x_hat)", critic(x_hat))
        if out.shape[0] != real.shape[0]:
            raise ValueError(f"critic must return one output per sample ({real.shape[0]}), got "
                             f"{tuple(out.shape)}")
        (grad,) = torch.autograd.grad(out.sum(), x_hat,                   # ∇_x̂ D(x̂): (B, ...)
                                      create_graph=create_graph)
    return torch.linalg.vector_norm(grad.flatten(1), dim=1)             # ‖∇‖: (B,)


def gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor,
                     fake: torch.Tensor, *, target: float = 1.0,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """The WGAN-GP penalty (Gulrajani et al. 2017), a scalar:

        GP = E_x̂ (‖∇_x̂ D(x̂)‖₂ − target)²,   x̂ = ε x + (1 − ε) x̃,   ε ~ U(0, 1) per sample,

    i.e. the critic's gradient norm pushed towards ``target`` (1: the Lipschitz constant of the
    Kantorovich–Rubinstein dual) on random points of the segments between real and fake samples.
    The training loss adds ``λ · GP`` (λ = 10 in the paper) to the critic's loss. The norms are
    those of :func:`critic_gradient_norms` (same ε for the same ``generator`` state):
    GP = mean((critic_gradient_norms(...) − target)²).

    Args:
        critic: maps ``(B, ...)`` to ``(B,)`` or ``(B, 1)``.
        real, fake: ``(B, ...)``, same shape; both are detached (the penalty trains the critic
            only). ``fake`` is usually ``G(z)``.
        target: the norm the gradient is pushed to, > 0.
        generator: the ``torch.Generator`` that draws ε (on ``real``'s device).

    The gradient is taken with ``create_graph=True``, so the result backpropagates into the
    critic's parameters (a second-order derivative).
    """
    target = check_positive("target", target)
    norm = _interpolate_gradient_norms(critic, real, fake, generator, create_graph=True)
    return ((norm - target) ** 2).mean()


def critic_gradient_norms(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor,
                          fake: torch.Tensor,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """The critic's gradient norms at random interpolates, for measurement, ``(B,)``:

        n_i = ‖∇_x̂ D(x̂_i)‖₂,   x̂_i = ε_i x_i + (1 − ε_i) x̃_i,   ε_i ~ U(0, 1),

    the quantity :func:`gradient_penalty` pushes to 1. A 1-Lipschitz critic has n_i ≤ 1
    everywhere; the optimal critic of W1 has n_i = 1 on the segments between optimally coupled
    points (Gulrajani et al. 2017, Proposition 1); a weight-clipped critic's norms sit far
    below 1 (their scale is set by the clipping constant).

    Args:
        critic: maps ``(B, ...)`` to ``(B,)`` or ``(B, 1)``.
        real, fake: ``(B, ...)``, same shape and dtype (detached).
        generator: the ``torch.Generator`` that draws ε (on ``real``'s device).

    Returns:
        ``(B,)`` detached norms, in ``real``'s dtype and device. No graph is kept
        (``create_graph=False``) and the critic's parameters get no gradient; it works under
        ``torch.no_grad()`` too.
    """
    return _interpolate_gradient_norms(critic, real, fake, generator,
                                       create_graph=False).detach()


@torch.no_grad()
def clip_weights_(module: nn.Module, c: float) -> nn.Module:
    """Clip every parameter of ``module`` into [−c, c], in place (WGAN, Arjovsky et al. 2017:
    c = 0.01). A crude way to bound the critic's Lipschitz constant. Returns ``module``."""
    if not isinstance(module, nn.Module):
        raise ValueError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    c = check_positive("c", c)
    for p in module.parameters():
        p.clamp_(-c, c)
    return module
