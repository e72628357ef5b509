"""Scores, Langevin dynamics, Tweedie's formula and denoising score matching.

The **score** of a density p is s(x) = ∇_x log p(x): it ignores the normalising constant, and it is
all that Langevin dynamics needs to sample from p. Shapes: points ``x: (N, D)`` (or ``(N, *event)``
for the losses); a score function maps ``(N, D) → (N, D)``.

Unadjusted Langevin algorithm (ULA; Welling & Teh 2011, Song & Ermon 2019), step size η > 0::

    x ← x + (η/2) s(x) + √η ε,      ε ~ N(0, I)

(Song & Ermon write the step as ε; the drift is half the noise variance, so that as η → 0 it is the
Euler-Maruyama discretisation of dx = ∇log p(x) dt + √2 dW with dt = η/2.)

Tweedie's formula, for y = x + σ ε with x ~ p and p_σ the density of y::

    E[x | y] = y + σ² ∇_y log p_σ(y)

Denoising score matching (Vincent 2011), unweighted, averaged over the batch::

    DSM(s) = E_{x, ε} ‖s(x + σ ε) + ε / σ‖²  =  E_y ‖s(y) - ∇log p_σ(y)‖² + C  =  ESM(s) + C,
    C = D / σ² - E_y ‖∇log p_σ(y)‖²   (independent of s)

σ² · DSM = E‖σ s(y) + ε‖² is the noise-prediction loss of diffusion models with ε̂ = -σ s
(the weighting λ(σ) = σ² of Song & Ermon 2019).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from tqdm import tqdm

from foundations.densities import GaussianMixture
from utils.validation import check_int, check_positive, shape_of

__all__ = [
    "annealed_langevin_sample",
    "autograd_score",
    "dsm_loss",
    "esm_loss",
    "gaussian_mixture_posterior_mean",
    "langevin_sample",
    "tweedie_denoise",
]

ScoreFn = Callable[[torch.Tensor], torch.Tensor]


def _check_batch(x: object, name: str = "x", ndim: int | None = None) -> None:
    ok = isinstance(x, torch.Tensor) and x.dtype.is_floating_point and x.ndim >= 2
    if ok and ndim is not None:
        ok = x.ndim == ndim
    if not ok or x.shape[0] < 1:
        want = "(N, D)" if ndim == 2 else "(N, ...) with at least 2 dimensions"
        raise ValueError(f"{name} must be a float tensor of shape {want}, N >= 1, "
                         f"got {shape_of(x)}")


def _score_at(score_fn: Callable[..., torch.Tensor], x: torch.Tensor, *args) -> torch.Tensor:
    s = score_fn(x, *args)
    if not isinstance(s, torch.Tensor) or s.shape != x.shape:
        raise ValueError(f"score_fn must return a tensor of the input's shape {tuple(x.shape)}, "
                         f"got {shape_of(s)}")
    return s


def autograd_score(log_prob: Callable[[torch.Tensor], torch.Tensor],
                   x: torch.Tensor) -> torch.Tensor:
    """∇_x log p(x) by automatic differentiation of ``log_prob: (..., D) → (...)`` → ``(..., D)``.

    Each point's log-density depends only on that point, so the gradient of Σ_i log p(x_i) with
    respect to x_i is ∇ log p(x_i). Returns a detached tensor.
    """
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point or x.ndim < 1:
        raise ValueError(f"x must be a float tensor of shape (..., D), got {shape_of(x)}")
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        lp = log_prob(x)
        if lp.shape != x.shape[:-1]:
            raise ValueError(f"log_prob must map {tuple(x.shape)} to {tuple(x.shape[:-1])}, got "
                             f"{shape_of(lp)}")
        (grad,) = torch.autograd.grad(lp.sum(), x)
    return grad.detach()


def langevin_sample(score_fn: ScoreFn, x0: torch.Tensor, step_size: float, n_steps: int, *,
                    generator: torch.Generator | None = None, progress: bool = False,
                    desc: str = "Langevin") -> torch.Tensor:
    """Run ``n_steps`` of the unadjusted Langevin algorithm from ``x0: (N, D)``, N chains at once.

        x_{t+1} = x_t + (η/2) s(x_t) + √η ε_t,   ε_t ~ N(0, I),   η = ``step_size``

    ``score_fn: (N, D) → (N, D)`` is ∇log p. For small η the chains' law approaches p as t grows,
    with an O(η) bias (no Metropolis correction): for p = N(μ, s²) the stationary law is
    N(μ, s² / (1 - η / (4 s²))), stable for η < 4 s². ``generator`` (on ``x0``'s device) makes the
    run reproducible; ``progress`` shows a tqdm bar. Returns the final state ``(N, D)``, detached,
    in ``x0``'s dtype and device; raises ``FloatingPointError`` if the chains diverged (η too
    large for the score's stiffness).
    """
    _check_batch(x0, "x0", ndim=2)
    eta = check_positive("step_size", step_size)
    n_steps = check_int("n_steps", n_steps, minimum=1)
    x = x0.detach().clone()
    sqrt_eta = math.sqrt(eta)
    for _ in tqdm(range(n_steps), desc=desc, disable=not progress, mininterval=1.0,
                  dynamic_ncols=True):
        s = _score_at(score_fn, x)
        eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        x = (x + 0.5 * eta * s + sqrt_eta * eps).detach()
    if not bool(torch.isfinite(x).all()):
        raise FloatingPointError(f"Langevin chains diverged (non-finite states): step_size {eta} "
                                 "is too large for this score")
    return x


def annealed_langevin_sample(score_fn: Callable[[torch.Tensor, float], torch.Tensor],
                             x0: torch.Tensor, sigmas: torch.Tensor | list[float],
                             step_size: float, n_steps_each: int, *,
                             generator: torch.Generator | None = None, progress: bool = False,
                             desc: str = "annealed Langevin") -> torch.Tensor:
    """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1) from ``x0: (N, D)``.

    For each noise level σ_1 > σ_2 > … > σ_L in ``sigmas`` (positive, strictly decreasing), run
    ``n_steps_each`` Langevin steps on the smoothed density p_{σ_i} with step size

        α_i = ε σ_i² / σ_L²,    x ← x + (α_i/2) s(x, σ_i) + √α_i z,   z ~ N(0, I)

    where ε = ``step_size`` is the step at the smallest level and ``score_fn(x, sigma)`` is
    ∇_x log p_σ(x) (``(N, D), float → (N, D)``). Large σ smooths the modes together so chains can
    move between them; each level starts from where the last one ended. Returns ``(N, D)``.
    """
    _check_batch(x0, "x0", ndim=2)
    eps_step = check_positive("step_size", step_size)
    n_steps_each = check_int("n_steps_each", n_steps_each, minimum=1)
    sig = torch.as_tensor(sigmas, dtype=torch.float64).detach().cpu()
    if sig.ndim != 1 or len(sig) < 1 or not bool(torch.all(sig > 0)) \
            or not bool(torch.all(sig[1:] < sig[:-1])):
        raise ValueError(f"sigmas must be a non-empty 1-D sequence of positive, strictly "
                         f"decreasing noise levels, got {sig.tolist()}")
    sig_l = float(sig[-1])
    x = x0.detach().clone()
    bar = tqdm(total=len(sig) * n_steps_each, desc=desc, disable=not progress, mininterval=1.0,
               dynamic_ncols=True)
    try:
        for sigma in sig.tolist():
            alpha = eps_step * sigma**2 / sig_l**2
            for _ in range(n_steps_each):
                s = _score_at(score_fn, x, sigma)
                z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
                x = (x + 0.5 * alpha * s + math.sqrt(alpha) * z).detach()
                bar.update(1)
    finally:
        bar.close()
    if not bool(torch.isfinite(x).all()):
        raise FloatingPointError("annealed Langevin chains diverged: step_size is too large")
    return x


def tweedie_denoise(y: torch.Tensor, sigma: float, score_fn: ScoreFn) -> torch.Tensor:
    """Tweedie's formula E[x | y] = y + σ² ∇_y log p_σ(y) for ``y = x + σ ε``: ``(N, D) → (N, D)``.

    ``score_fn`` must be the score of the *noisy* density p_σ (for a Gaussian mixture prior,
    ``prior.smoothed(sigma).score``), not of the clean p.
    """
    _check_batch(y, "y", ndim=2)
    sigma = check_positive("sigma", sigma)
    return y + sigma**2 * _score_at(score_fn, y)


def gaussian_mixture_posterior_mean(prior: GaussianMixture, y: torch.Tensor,
                                    sigma: float) -> torch.Tensor:
    """The exact E[x | y] for x ~ Σ_k π_k N(μ_k, Σ_k) and y = x + σ ε, ``y: (..., D) → (..., D)``.

        p(k | y) ∝ π_k N(y; μ_k, Σ_k + σ² I)
        E[x | y, k] = μ_k + Σ_k (Σ_k + σ² I)⁻¹ (y - μ_k)
        E[x | y] = Σ_k p(k | y) E[x | y, k]

    Computed from Gaussian conditioning, with no score: the independent check of Tweedie's formula.
    """
    if not isinstance(prior, GaussianMixture):
        raise ValueError(f"prior must be a GaussianMixture, got {type(prior).__name__}")
    if not isinstance(y, torch.Tensor) or y.ndim < 1 or y.shape[-1] != prior.dim:
        raise ValueError(f"y must be a tensor of shape (..., {prior.dim}), got {shape_of(y)}")
    if y.dtype != prior.means.dtype:
        raise ValueError(f"y must have the prior's dtype {prior.means.dtype}, got {y.dtype}")
    sigma = check_positive("sigma", sigma)
    noisy = prior.smoothed(sigma)                      # Σ_k + σ² I, detached
    r = noisy.posterior(y)                             # p(k | y): (..., K)
    means, cov = prior.means.detach(), prior.covariances.detach()
    diff = (y.unsqueeze(-2) - means).unsqueeze(-1)     # y - μ_k: (..., K, D, 1)
    L = noisy.scale_tril.expand(*diff.shape[:-2], prior.dim, prior.dim)
    gain = cov @ torch.cholesky_solve(diff, L, upper=False)  # Σ_k (Σ_k + σ²I)⁻¹ (y - μ_k)
    m_k = means + gain.squeeze(-1)                     # (..., K, D)
    return (r.unsqueeze(-1) * m_k).sum(-2)


def _reduce(terms: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return terms.mean()
    if reduction == "none":
        return terms
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def dsm_loss(score_fn: ScoreFn, x: torch.Tensor, sigma: float, eps: torch.Tensor | None = None,
             *, generator: torch.Generator | None = None,
             reduction: str = "mean") -> torch.Tensor:
    """Denoising score matching at one noise level: ``(1/N) Σ_i ‖s(x_i + σ ε_i) + ε_i / σ‖²``.

    ``x: (N, *event)`` clean data, ``eps`` the same shape (drawn from N(0, I) with ``generator``
    if not given). -ε/σ = ∇_y log N(y; x, σ² I) is the score of the noising kernel; its regression
    onto y has the noisy score ∇log p_σ(y) as minimiser. The squared norm sums over every
    non-batch dimension; no weighting (multiply by σ² for the noise-prediction scale).
    ``reduction="none"`` returns the N per-example terms (for Monte Carlo standard errors).
    Differentiable with respect to ``score_fn``'s parameters and ``x``.
    """
    _check_batch(x, "x")
    sigma = check_positive("sigma", sigma)
    if eps is None:
        eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    elif not isinstance(eps, torch.Tensor) or eps.shape != x.shape:
        raise ValueError(f"eps must have x's shape {tuple(x.shape)}, got {shape_of(eps)}")
    y = x + sigma * eps
    residual = _score_at(score_fn, y) + eps / sigma
    return _reduce(residual.pow(2).flatten(1).sum(1), reduction)


def esm_loss(score_fn: ScoreFn, x: torch.Tensor, true_score: ScoreFn, *,
             reduction: str = "mean") -> torch.Tensor:
    """Explicit score matching (the Fisher divergence): ``(1/N) Σ_i ‖s(x_i) - ∇log p(x_i)‖²``.

    ``x: (N, *event)`` drawn from p; ``true_score`` is ∇log p (known only for toy densities,
    which is why one trains with :func:`dsm_loss` instead). ``reduction`` as in ``dsm_loss``.
    """
    _check_batch(x, "x")
    residual = _score_at(score_fn, x) - _score_at(true_score, x)
    return _reduce(residual.pow(2).flatten(1).sum(1), reduction)
