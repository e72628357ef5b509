"""The diffusion model's training step for utils.training.fit (03_ddpm_on_digits, 06).

One call of the returned ``step(batch)`` takes x_0 ``(B, ...)`` (and, for a conditional model,
its condition c), draws t ~ U{0, …, T−1} and ε ~ N(0, I), and takes one optimiser step on the
denoising loss (:func:`diffusion.parameterization.denoising_loss`)

    L = mean ‖target − f_θ(√ᾱ_t x_0 + √(1 − ᾱ_t) ε, t[, c̃])‖²,

where c̃ is c replaced by ∅ with probability ``p_uncond`` (classifier-free guidance's training,
:func:`diffusion.conditioning.drop_condition`). The EMA of the weights that sampling uses is
:func:`utils.training.fit`'s ``ema_decay``. Gradients are clipped to norm ``grad_clip`` if given.

Returned metrics: ``loss``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from diffusion.conditioning import drop_condition
from diffusion.parameterization import denoising_loss
from diffusion.sampling import _check_alpha_bar
from utils.training import check_finite
from utils.validation import check_choice, check_positive, shape_of

__all__ = ["diffusion_step"]


def diffusion_step(model: nn.Module, optimizer: Any, alpha_bar: torch.Tensor, *,
                   target: str = "eps", conditional: bool = False, p_uncond: float = 0.0,
                   grad_clip: float | None = None) -> Callable[[Any], dict[str, float]]:
    """A ``step(batch) -> {"loss": float}`` for :func:`utils.training.fit` (see the module).

    Args:
        model: f_θ(x_t, t[, c]); a conditional one has ``null_value`` (the ∅ condition).
        optimizer: over the model's parameters.
        alpha_bar: ᾱ ``(T,)``.
        target: "eps", "x0" or "v".
        conditional: batches are (x_0, c) and the model takes c.
        p_uncond: probability of training on ∅ instead of c, in [0, 1].
        grad_clip: max gradient norm (> 0), or None.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
    if not (callable(getattr(optimizer, "step", None))
            and callable(getattr(optimizer, "zero_grad", None))):
        raise ValueError(f"optimizer must have step and zero_grad, got {type(optimizer).__name__}")
    alpha_bar = _check_alpha_bar(alpha_bar)
    target = check_choice("target", target, ("eps", "x0", "v"))
    if not isinstance(conditional, bool):
        raise ValueError(f"conditional must be a bool, got {conditional!r}")
    if isinstance(p_uncond, bool) or not isinstance(p_uncond, (int, float)) \
            or not 0 <= p_uncond <= 1:
        raise ValueError(f"p_uncond must lie in [0, 1], got {p_uncond!r}")
    if p_uncond > 0 and not conditional:
        raise ValueError("p_uncond > 0 needs conditional=True")
    null = getattr(model, "null_value", None)
    if conditional and null is None:
        raise ValueError("a conditional model must have a null_value (the no-condition value)")
    grad_clip = None if grad_clip is None else check_positive("grad_clip", grad_clip)
    params = [p for p in model.parameters() if p.requires_grad]

    def step(batch: Any) -> dict[str, float]:
        if conditional:
            if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                raise ValueError("conditional=True needs batches (x_0, c)")
            x0, c = batch[0], batch[1]
            if p_uncond > 0:
                c = drop_condition(c, p_uncond, null)
        else:
            x0, c = (batch[0] if isinstance(batch, (tuple, list)) else batch), None
        if not isinstance(x0, torch.Tensor) or not x0.dtype.is_floating_point or x0.ndim < 2:
            raise ValueError(f"the batch's x_0 must be a float tensor (B, ...), got "
                             f"{shape_of(x0)}")
        optimizer.zero_grad(set_to_none=True)
        loss = denoising_loss(model, x0, alpha_bar, target=target, cond=c)  # ᾱ stays float64
        value = check_finite("the denoising loss", loss)  # before the update
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        return {"loss": value}

    return step
