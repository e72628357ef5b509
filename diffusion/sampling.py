"""Reverse-process samplers: DDPM's ancestral step and DDIM's (02, 03, 04_ddim).

Code's timesteps are t = 0 … T−1 (:mod:`diffusion.schedules`); ᾱ_{−1} := 1 is the data.

DDPM (Ho et al. 2020), one step from x_t to x_{t−1} with the posterior variance β̃_t:

    x_{t−1} = 1/√(1 − β_t) · (x_t − β_t / √(1 − ᾱ_t) · ε_θ(x_t, t)) + √β̃_t · z,   z ~ N(0, I),

with no noise at t = 0 (β̃_0 = 0: the last step returns the mean, an estimate of the data).

DDIM (Song, Meng & Ermon 2021), from x_t to x_{t'} for any t' < t (t' = −1: the data):

    x̂_0   = (x_t − √(1 − ᾱ_t) ε_θ) / √ᾱ_t
    σ_t   = η · √((1 − ᾱ_{t'}) / (1 − ᾱ_t)) · √(1 − ᾱ_t / ᾱ_{t'})
    x_{t'} = √ᾱ_{t'} x̂_0 + √(1 − ᾱ_{t'} − σ_t²) · ε_θ + σ_t · z

η = 0 is deterministic (an ODE solver, which can be inverted); η = 1 with t' = t − 1 gives
σ_t² = β̃_t, DDPM's variance (and then the same step as DDPM).

An ``eps_model`` is any callable ``(x_t (B, ...), t int64 (B,)) → ε̂ (B, ...)``: a trained
network (in eval mode), a closed-form ε for a Gaussian, or a classifier-free-guided combination
(:func:`diffusion.guidance.classifier_free_guidance`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from tqdm import tqdm  # the text bar, as utils.training: it renders in the committed notebooks

from diffusion.schedules import (
    _check_like,
    _check_t,
    _check_x,
    _step_terms,
    _with_previous,
    alpha_bar,
    check_betas,
)
from utils.validation import check_int, shape_of

__all__ = ["ddim_invert", "ddim_sample", "ddim_step", "ddim_timesteps", "ddpm_sample",
           "ddpm_step"]

EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _check_eps(x_t: object, eps_pred: object) -> tuple[torch.Tensor, torch.Tensor]:
    x_t = _check_x("x_t", x_t)
    return x_t, _check_like("eps_pred", eps_pred, "x_t", x_t)


def _check_noise(noise: object, like: torch.Tensor) -> torch.Tensor:
    if noise is None:
        return torch.randn_like(like)
    if not isinstance(noise, torch.Tensor) or noise.shape != like.shape:
        raise ValueError(f"noise must have x_t's shape {tuple(like.shape)}, got {shape_of(noise)}")
    return noise


def ddpm_step(x_t: torch.Tensor, eps_pred: torch.Tensor, t: torch.Tensor | int,
              betas: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
    """One ancestral step x_t → x_{t−1} (see the module); no noise where t = 0.

    Args:
        x_t, eps_pred: ``(B, ...)``; t: int or int64 ``(B,)`` in 0..T−1; betas: ``(T,)``.
        noise: z ``(B, ...)``; default N(0, I).
    """
    betas = check_betas(betas)
    x_t, eps_pred = _check_eps(x_t, eps_pred)
    t = _check_t(t, betas.shape[0], x_t.shape[0])
    return _ddpm_update(x_t, eps_pred, t, betas, _with_previous(alpha_bar(betas)),
                        _check_noise(noise, x_t))


def _ddpm_update(x_t: torch.Tensor, eps_pred: torch.Tensor, t: torch.Tensor,
                 betas: torch.Tensor, levels: tuple[torch.Tensor, torch.Tensor],
                 noise: torch.Tensor) -> torch.Tensor:
    """:func:`ddpm_step` on checked inputs, with (ᾱ_t, ᾱ_{t−1}) computed once by the caller."""
    b, a, _, var = _step_terms(betas, levels, t, x_t)         # var = β̃_t, exactly 0 at t = 0
    mean = (x_t - b / (1 - a).sqrt() * eps_pred) / (1 - b).sqrt()
    return mean + var.sqrt() * noise


def _level(alpha_bar: torch.Tensor, t: int, like: torch.Tensor) -> torch.Tensor:
    return torch.ones((), dtype=like.dtype, device=like.device) if t < 0 else \
        alpha_bar[t].to(like.dtype).to(like.device)  # cast first: MPS has no float64


def _check_alpha_bar(alpha_bar: object) -> torch.Tensor:
    if not isinstance(alpha_bar, torch.Tensor) or not alpha_bar.dtype.is_floating_point \
            or alpha_bar.ndim != 1 or alpha_bar.numel() < 1 \
            or not bool(((alpha_bar > 0) & (alpha_bar < 1)).all()):
        raise ValueError(f"alpha_bar must be a float tensor (T,) with values in (0, 1), got "
                         f"{shape_of(alpha_bar)}")
    return alpha_bar


def ddim_step(x_t: torch.Tensor, eps_pred: torch.Tensor, t: int, t_prev: int,
              alpha_bar: torch.Tensor, eta: float = 0.0,
              noise: torch.Tensor | None = None) -> torch.Tensor:
    """One DDIM step x_t → x_{t_prev} (see the module); ``t_prev < 0`` is the step to x_0.

    Args:
        x_t, eps_pred: ``(B, ...)``; t: int in 0..T−1; t_prev: int, −1 ≤ t_prev < t.
        alpha_bar: ᾱ ``(T,)``; eta: η ≥ 0 (0: deterministic; 1: DDPM's variance).
        noise: z ``(B, ...)``, used only if η > 0; default N(0, I).
    """
    alpha_bar = _check_alpha_bar(alpha_bar)
    x_t, eps_pred = _check_eps(x_t, eps_pred)
    T = alpha_bar.shape[0]
    t = check_int("t", t, minimum=0)
    if t >= T:
        raise ValueError(f"t must lie in 0..{T - 1}, got {t}")
    t_prev = check_int("t_prev", t_prev, minimum=-1)
    if t_prev >= t:
        raise ValueError(f"t_prev must be smaller than t = {t}, got {t_prev}")
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not eta >= 0:
        raise ValueError(f"eta must be a number >= 0, got {eta!r}")
    a, a_prev = _level(alpha_bar, t, x_t), _level(alpha_bar, t_prev, x_t)
    x0 = (x_t - (1 - a).sqrt() * eps_pred) / a.sqrt()                    # x̂_0
    sigma = eta * ((1 - a_prev) / (1 - a)).sqrt() * (1 - a / a_prev).sqrt()
    direction = (1 - a_prev - sigma ** 2).clamp(min=0).sqrt() * eps_pred
    out = a_prev.sqrt() * x0 + direction
    if eta > 0:
        out = out + sigma * _check_noise(noise, x_t)
    return out


def ddim_timesteps(T: int, steps: int) -> list[int]:
    """``steps`` timesteps evenly spaced on 0..T−1, descending, starting at T−1 and ending at 0:
    round(linspace(T−1, 0, steps)). ``steps`` = T gives every step."""
    T = check_int("T", T, minimum=1)
    steps = check_int("steps", steps, minimum=1)
    if steps > T:
        raise ValueError(f"steps must be at most T = {T}, got {steps}")
    if steps == 1:
        return [T - 1]
    return torch.linspace(T - 1, 0, steps, dtype=torch.float64).round().long().tolist()


def _timestep(t: int, like: torch.Tensor) -> torch.Tensor:
    return torch.full((like.shape[0],), t, dtype=torch.int64, device=like.device)


def _start(shape: Sequence[int], generator: torch.Generator | None, device, dtype):
    if not isinstance(shape, (tuple, list, torch.Size)) or not shape \
            or not all(isinstance(s, int) and s >= 1 for s in shape):
        raise ValueError(f"shape must be a non-empty tuple of positive ints (B, ...), got "
                         f"{shape!r}")
    return torch.randn(tuple(shape), generator=generator, dtype=dtype).to(device)


@torch.no_grad()
def ddpm_sample(eps_model: EpsModel, shape: Sequence[int], betas: torch.Tensor, *,
                generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                dtype: torch.dtype = torch.float32, progress: bool = False) -> torch.Tensor:
    """x_T ~ N(0, I) ``shape``, then T ancestral steps (:func:`ddpm_step`) down to x_0.

    ``generator`` (a CPU generator) draws every noise, so a sample is reproducible."""
    betas = check_betas(betas)
    levels = _with_previous(alpha_bar(betas))                # ᾱ once, not once per step
    x = _start(shape, generator, device, dtype)
    for t in tqdm(range(betas.shape[0] - 1, -1, -1), desc="DDPM", disable=not progress):
        noise = torch.randn(x.shape, generator=generator, dtype=dtype).to(device)
        t_batch = _timestep(t, x)
        eps = _check_like("eps_model(x_t, t)", eps_model(x, t_batch), "x_t", x)
        x = _ddpm_update(x, eps, t_batch, betas, levels, noise)
    return x


@torch.no_grad()
def ddim_sample(eps_model: EpsModel, shape: Sequence[int], alpha_bar: torch.Tensor, steps: int,
                *, eta: float = 0.0, x_T: torch.Tensor | None = None,
                generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                dtype: torch.dtype = torch.float32, progress: bool = False) -> torch.Tensor:
    """DDIM with ``steps`` model calls on :func:`ddim_timesteps` (T, steps), then the step to
    x_0; ``x_T`` (default N(0, I)) is the starting noise, e.g. from :func:`ddim_invert`."""
    alpha_bar = _check_alpha_bar(alpha_bar)
    ts = ddim_timesteps(alpha_bar.shape[0], steps)
    if x_T is None:
        x = _start(shape, generator, device, dtype)
    else:
        x = _check_x("x_T", x_T)
        if tuple(x.shape) != tuple(shape):
            raise ValueError(f"x_T must have shape {tuple(shape)}, got {tuple(x.shape)}")
    for t, t_prev in tqdm(list(zip(ts, ts[1:] + [-1])), desc="DDIM", disable=not progress):
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device) \
            if eta > 0 else None
        x = ddim_step(x, eps_model(x, _timestep(t, x)), t, t_prev, alpha_bar, eta, noise)
    return x


@torch.no_grad()
def ddim_invert(eps_model: EpsModel, x0: torch.Tensor, alpha_bar: torch.Tensor,
                steps: int, *, iterations: int = 0, progress: bool = False) -> torch.Tensor:
    """Deterministic DDIM inversion x_0 → x_T: the η = 0 step run forwards, from t' to the next
    t of :func:`ddim_timesteps` (ascending),

        x_t = √ᾱ_t x̂_0 + √(1 − ᾱ_t) ε̂,   x̂_0 = (x_{t'} − √(1 − ᾱ_{t'}) ε̂) / √ᾱ_{t'}.

    The sampler's step back from x_t uses ε̂ = ε_θ(x_t, t), unknown before x_t is. The plain
    inversion (``iterations = 0``) evaluates the model at the known point, ε̂ = ε_θ(x_{t'}, t),
    an O(1/steps) error per step; each of ``iterations`` fixed-point rounds re-evaluates
    ε̂ = ε_θ(x_t, t) at the current x_t. At the fixed point, :func:`ddim_sample` from the result
    returns x_0 exactly (up to floating point)."""
    alpha_bar = _check_alpha_bar(alpha_bar)
    x = _check_x("x0", x0)
    iterations = check_int("iterations", iterations, minimum=0)
    ts = ddim_timesteps(alpha_bar.shape[0], steps)[::-1]             # ascending
    for t_prev, t in tqdm(list(zip([-1] + ts[:-1], ts)), desc="DDIM inversion",
                          disable=not progress):
        a, a_prev = _level(alpha_bar, t, x), _level(alpha_bar, t_prev, x)
        x_next, eps = x, None
        for _ in range(iterations + 1):
            eps = eps_model(x_next, _timestep(t, x))
            x0_hat = (x - (1 - a_prev).sqrt() * eps) / a_prev.sqrt()
            x_next = a.sqrt() * x0_hat + (1 - a).sqrt() * eps
        x = x_next
    return x
