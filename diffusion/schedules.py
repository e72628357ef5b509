"""Noise schedules and the forward process (01_forward_process, 02_reverse_process_and_ddpm).

Timesteps are indexed t = 0 … T−1 in code, as in the common libraries (diffusers, the DDPM
code): ``betas[t]`` = β_t is the variance of the one-step kernel that produces x_t,

    q(x_t | x_{t−1}) = N(√(1 − β_t) x_{t−1}, β_t I),      x_{−1} := x_0 (the data),

so that ``alpha_bar[t]`` = ᾱ_t = Π_{s ≤ t} (1 − β_s) is the signal level of x_t and

    q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I),   i.e.  x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε.

The papers' t = 1 … T is code's t − 1: the paper's x_0 is the data, its x_1 is code's x_0.
The posterior of one step back, for t ≥ 1 (with ᾱ_{t−1} the previous level),

    q(x_{t−1} | x_t, x_0) = N(μ̃_t, β̃_t I),
    μ̃_t = √ᾱ_{t−1} β_t / (1 − ᾱ_t) · x_0 + √(1 − β_t)(1 − ᾱ_{t−1}) / (1 − ᾱ_t) · x_t,
    β̃_t = (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · β_t,

and for t = 0 the step back is to the data itself (variance 0).

Shapes: ``betas`` ``(T,)``; ``t`` an int or an int64 tensor ``(B,)``; images x ``(B, ...)``.
"""

from __future__ import annotations

import math

import torch

from utils.validation import check_int, check_positive, shape_of

__all__ = [
    "alpha_bar", "check_betas", "cosine_beta_schedule", "gather", "linear_beta_schedule",
    "q_posterior", "q_sample", "snr",
]


def linear_beta_schedule(T: int, beta_start: float = 1e-4, beta_end: float = 0.02,
                         dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """β_t = beta_start + (beta_end − beta_start) · t / (T − 1), t = 0 … T−1 (Ho et al. 2020,
    with T = 1000): ``(T,)``. Requires 0 < beta_start ≤ beta_end < 1."""
    T = check_int("T", T, minimum=1)
    beta_start, beta_end = check_positive("beta_start", beta_start), \
        check_positive("beta_end", beta_end)
    if not beta_start <= beta_end < 1:
        raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
    if T == 1:
        return torch.tensor([beta_start], dtype=dtype)
    return torch.linspace(beta_start, beta_end, T, dtype=dtype)


def cosine_beta_schedule(T: int, s: float = 0.008, max_beta: float = 0.999,
                         dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Nichol & Dhariwal (2021): ᾱ(u) = f(u)/f(0), f(u) = cos²((u/T + s)/(1 + s) · π/2), and

        β_t = min(1 − f(t + 1) / f(t), max_beta),   t = 0 … T−1,

    so that the code's ᾱ_t = ᾱ(t + 1) (the paper's step t + 1). ``(T,)``."""
    T = check_int("T", T, minimum=1)
    s = check_positive("s", s)
    max_beta = check_positive("max_beta", max_beta)
    if max_beta >= 1:
        raise ValueError(f"max_beta must lie in (0, 1), got {max_beta}")
    u = torch.arange(T + 1, dtype=torch.float64)
    f = torch.cos((u / T + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta).to(dtype)


def check_betas(betas: object) -> torch.Tensor:
    """``betas`` if it is a float tensor ``(T,)``, T ≥ 1, with every β_t in (0, 1); else a
    ``ValueError``."""
    if not isinstance(betas, torch.Tensor) or not betas.dtype.is_floating_point \
            or betas.ndim != 1 or betas.numel() < 1:
        raise ValueError(f"betas must be a float tensor of shape (T,) with T >= 1, got "
                         f"{shape_of(betas)}")
    if not bool(((betas > 0) & (betas < 1)).all()):
        raise ValueError(f"every beta must lie in (0, 1), got values in "
                         f"[{betas.min().item():.3g}, {betas.max().item():.3g}]")
    return betas


def alpha_bar(betas: torch.Tensor) -> torch.Tensor:
    """ᾱ_t = Π_{s ≤ t} (1 − β_s), computed as exp(Σ log(1 − β_s)): ``(T,)``, decreasing."""
    return torch.cumsum(torch.log1p(-check_betas(betas)), 0).exp()


def snr(alpha_bar: torch.Tensor) -> torch.Tensor:
    """The signal-to-noise ratio SNR_t = ᾱ_t / (1 − ᾱ_t) of x_t: ``(T,)`` → ``(T,)``."""
    if not isinstance(alpha_bar, torch.Tensor) or not alpha_bar.dtype.is_floating_point \
            or not bool(((alpha_bar > 0) & (alpha_bar < 1)).all()):
        raise ValueError("alpha_bar must be a float tensor with values in (0, 1)")
    return alpha_bar / (1 - alpha_bar)


def _check_t(t: object, T: int, batch: int | None = None) -> torch.Tensor:
    """t as an int64 tensor ``(B,)`` (an int is broadcast to the batch), every value in 0..T−1."""
    if isinstance(t, bool):
        raise ValueError(f"t must be an integer or an int64 tensor, got {t!r}")
    if isinstance(t, int):
        t = torch.full((batch or 1,), t, dtype=torch.int64)
    if not isinstance(t, torch.Tensor) or t.dtype != torch.int64 or t.ndim != 1 \
            or (batch is not None and t.shape[0] != batch):
        want = f"({batch},)" if batch is not None else "(B,)"
        raise ValueError(f"t must be an int or an int64 tensor of shape {want}, got "
                         f"{shape_of(t)}")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= T):
        raise ValueError(f"t must lie in 0..{T - 1}, got values in {int(t.min())}.."
                         f"{int(t.max())}")
    return t


def gather(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values[t] reshaped to ``(B, 1, ..., 1)`` to broadcast against ``like`` ``(B, ...)``, in
    ``like``'s dtype and on its device. It indexes where ``values`` live and casts *before* the
    move, so a float64 schedule never reaches a device without float64 (Apple's MPS)."""
    out = values[t.to(values.device)].to(like.dtype).to(like.device)
    return out.reshape(-1, *([1] * (like.ndim - 1)))


def _check_x(name: str, x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point or x.ndim < 1 \
            or x.shape[0] < 1:
        raise ValueError(f"{name} must be a float tensor (B, ...), got {shape_of(x)}")
    return x


def _check_like(name: str, x: object, ref_name: str, ref: torch.Tensor) -> torch.Tensor:
    """``x`` if it is a float tensor (B, ...) of ``ref``'s shape."""
    x = _check_x(name, x)
    if x.shape != ref.shape:
        raise ValueError(f"{name} must have {ref_name}'s shape {tuple(ref.shape)}, got "
                         f"{tuple(x.shape)}")
    return x


def _check_levels(alpha_bar: object) -> torch.Tensor:
    """``alpha_bar`` if it is a tensor of shape (T,)."""
    if not isinstance(alpha_bar, torch.Tensor) or alpha_bar.ndim != 1:
        raise ValueError(f"alpha_bar must be a tensor (T,), got {shape_of(alpha_bar)}")
    return alpha_bar


def _with_previous(alpha_bar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(ᾱ_t, ᾱ_{t−1}) ``(T,)`` each, with ᾱ_{−1} = 1 (the data)."""
    one = torch.ones(1, dtype=alpha_bar.dtype, device=alpha_bar.device)
    return alpha_bar, torch.cat([one, alpha_bar[:-1]])


def _step_terms(betas: torch.Tensor, levels: tuple[torch.Tensor, torch.Tensor],
                t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """β_t, ᾱ_t, ᾱ_{t−1} and β̃_t = (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · β_t (0 at t = 0), each
    ``(B, 1, ..., 1)``, from ``levels`` = :func:`_with_previous` (ᾱ)."""
    ab, ab_prev = levels
    b, a, a_prev = gather(betas, t, like), gather(ab, t, like), gather(ab_prev, t, like)
    return b, a, a_prev, (1 - a_prev) / (1 - a) * b


def q_sample(x0: torch.Tensor, t: torch.Tensor | int, eps: torch.Tensor,
             alpha_bar: torch.Tensor) -> torch.Tensor:
    """x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε, a draw from q(x_t | x_0).

    Args:
        x0: ``(B, ...)`` data; eps: ε ~ N(0, I), same shape.
        t: an int or int64 ``(B,)`` in 0..T−1.
        alpha_bar: ᾱ ``(T,)``.
    """
    x0 = _check_x("x0", x0)
    eps = _check_like("eps", eps, "x0", x0)
    alpha_bar = _check_levels(alpha_bar)
    t = _check_t(t, alpha_bar.shape[0], x0.shape[0])
    a = gather(alpha_bar, t, x0)
    return a.sqrt() * x0 + (1 - a).sqrt() * eps


def q_posterior(x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor | int,
                betas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean μ̃_t ``(B, ...)`` and variance β̃_t ``(B, 1, ..., 1)`` of q(x_{t−1} | x_t, x_0) (see
    the module); at t = 0 the mean is x_0 and the variance 0 (the step to the data)."""
    betas = check_betas(betas)
    x0 = _check_x("x0", x0)
    x_t = _check_like("x_t", x_t, "x0", x0)
    t = _check_t(t, betas.shape[0], x0.shape[0])
    b, a, a_prev, var = _step_terms(betas, _with_previous(alpha_bar(betas)), t, x0)
    mean = (a_prev.sqrt() * b / (1 - a)) * x0 + ((1 - b).sqrt() * (1 - a_prev) / (1 - a)) * x_t
    return mean, var                                          # var = β̃_t; 0 at t = 0
