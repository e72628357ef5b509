"""What the network predicts: ε, x_0, the score or v, and the conversions between them
(02_reverse_process_and_ddpm, 05_score_view).

With x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε (code's t = 0 … T−1, see :mod:`diffusion.schedules`), any
one of the four determines the others given x_t:

    x_0   = (x_t − √(1 − ᾱ_t) ε) / √ᾱ_t
    score = ∇_{x_t} log q(x_t | x_0) = −ε / √(1 − ᾱ_t)    (Tweedie: E[x_0 | x_t] from the score)
    v     = √ᾱ_t ε − √(1 − ᾱ_t) x_0                        (Salimans & Ho 2022)
    ε     = √(1 − ᾱ_t) x_t + √ᾱ_t v

The denoising loss (Ho et al. 2020's L_simple) is the mean squared error of the prediction
against the chosen target at a uniformly drawn t:

    L = E_{t, x_0, ε} ‖target(x_0, ε, t) − f_θ(x_t, t)‖²,   target ∈ {ε, x_0, v}

Shapes: x_t, predictions ``(B, ...)``; t an int or int64 ``(B,)``; alpha_bar ``(T,)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from diffusion.schedules import _check_levels, _check_like, _check_t, _check_x, gather, q_sample
from utils.validation import check_choice, shape_of

__all__ = ["PARAMETERIZATIONS", "denoising_loss", "from_eps", "to_eps"]

PARAMETERIZATIONS: tuple[str, ...] = ("eps", "x0", "score", "v")


def _levels(x_t: object, pred: object, t: object,
            alpha_bar: object) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x_t = _check_x("x_t", x_t)
    pred = _check_like("the prediction", pred, "x_t", x_t)
    alpha_bar = _check_levels(alpha_bar)
    a = gather(alpha_bar, _check_t(t, alpha_bar.shape[0], x_t.shape[0]), x_t)
    return x_t, pred, a


def to_eps(pred: torch.Tensor, kind: str, x_t: torch.Tensor, t: torch.Tensor | int,
           alpha_bar: torch.Tensor) -> torch.Tensor:
    """ε from a prediction of ``kind`` ∈ {"eps", "x0", "score", "v"} (see the module)."""
    kind = check_choice("kind", kind, PARAMETERIZATIONS)
    x_t, pred, a = _levels(x_t, pred, t, alpha_bar)
    if kind == "eps":
        return pred
    if kind == "x0":
        return (x_t - a.sqrt() * pred) / (1 - a).sqrt()
    if kind == "score":
        return -(1 - a).sqrt() * pred
    return (1 - a).sqrt() * x_t + a.sqrt() * pred                      # v


def from_eps(eps: torch.Tensor, kind: str, x_t: torch.Tensor, t: torch.Tensor | int,
             alpha_bar: torch.Tensor) -> torch.Tensor:
    """The prediction of ``kind`` ∈ {"eps", "x0", "score", "v"} that ε corresponds to."""
    kind = check_choice("kind", kind, PARAMETERIZATIONS)
    x_t, eps, a = _levels(x_t, eps, t, alpha_bar)
    if kind == "eps":
        return eps
    x0 = (x_t - (1 - a).sqrt() * eps) / a.sqrt()
    if kind == "x0":
        return x0
    if kind == "score":
        return -eps / (1 - a).sqrt()
    return a.sqrt() * eps - (1 - a).sqrt() * x0                        # v


def denoising_loss(model: Callable[..., torch.Tensor], x0: torch.Tensor,
                   alpha_bar: torch.Tensor, *, target: str = "eps",
                   t: torch.Tensor | None = None, eps: torch.Tensor | None = None,
                   cond: torch.Tensor | None = None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """L_simple: mean over the batch and every dimension of (target − model(x_t, t[, cond]))².

    Args:
        model: f_θ(x_t ``(B, ...)``, t int64 ``(B,)`` [, cond]) → ``(B, ...)``.
        x0: data ``(B, ...)``; alpha_bar: ᾱ ``(T,)``.
        target: "eps" (Ho et al.), "x0" or "v" (a score model is an ε model up to a scale).
        t: int64 ``(B,)``; default uniform on 0..T−1. eps: default N(0, I).
        cond: passed to the model as a third argument if given (class labels, text embeddings).

    Returns:
        A scalar.
    """
    target = check_choice("target", target, ("eps", "x0", "v"))
    x0 = _check_x("x0", x0)
    alpha_bar = _check_levels(alpha_bar)
    T, b = alpha_bar.shape[0], x0.shape[0]
    if t is None:
        t = torch.randint(0, T, (b,), generator=generator, device="cpu").to(x0.device)
    if eps is None:
        eps = torch.randn(x0.shape, generator=generator, device="cpu", dtype=x0.dtype) \
            .to(x0.device) if generator is not None else torch.randn_like(x0)
    x_t = q_sample(x0, t, eps, alpha_bar)
    pred = model(x_t, t) if cond is None else model(x_t, t, cond)
    if not isinstance(pred, torch.Tensor) or pred.shape != x0.shape:
        raise ValueError(f"model must return x0's shape {tuple(x0.shape)}, got {shape_of(pred)}")
    if target == "eps":
        goal = eps
    elif target == "x0":
        goal = x0
    else:
        goal = from_eps(eps, "v", x_t, t, alpha_bar)
    return (pred - goal).pow(2).mean()
