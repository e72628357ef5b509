"""Monte Carlo estimators of ∇_φ E_{q_φ}[f(z)] for a diagonal Gaussian q (02_reparameterization).

q_φ(z) = N(z; μ, diag σ²) with φ = (μ, logvar), σ² = exp(logvar). Two unbiased estimators from
n samples, each returned as its n per-sample terms g_i (their mean is the estimate, their sample
variance / n its variance):

    score function (REINFORCE, the log-derivative trick ∇q = q ∇log q):

        ∇_φ E_q f = E_q[f(z) ∇_φ log q_φ(z)],        g_i = (f(z_i) − b_i) ∇_φ log q_φ(z_i),

        ∇_μ log q = (z − μ) / σ² = ε / σ,    ∇_logvar log q = ½ ((z − μ)² / σ² − 1) = ½ (ε² − 1);

    reparameterised (pathwise), z = μ + σ ⊙ ε with ε ~ N(0, I) independent of φ:

        ∇_φ E_q f = E_ε[∇_z f(z) · ∂z/∂φ],           g_i = ∇_φ f(μ + σ ⊙ ε_i),

        ∂z/∂μ = 1,    ∂z_j/∂logvar_j = ½ σ_j ε_j.

The score function needs only f's values (f may be non-differentiable, or z discrete); the
pathwise estimator needs ∇_z f and a q that can be written as a differentiable map of
parameter-free noise. A baseline b_i that does not depend on z_i leaves the score-function
estimator unbiased, because E_q[∇_φ log q] = ∇_φ ∫ q = 0; a good one reduces its variance
(a *control variate*). The per-coordinate optimal constant is b*_j = E[f s_j²] / E[s_j²],
s = ∇_φ log q; :func:`score_function_gradient` estimates it (and the mean of f) from the
*other* n − 1 samples (leave-one-out), so that b_i stays independent of z_i.

Shapes: ``mu``, ``logvar`` ``(..., d)`` (leading dimensions are independent Gaussians, e.g.
repetitions); ``f`` maps z ``(n, ..., d)`` to ``(n, ...)`` row by row (no mixing across samples:
no batch normalisation); the estimates are ``(n, ..., d)`` for μ and for logvar, detached.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import NamedTuple

import torch

from utils.validation import check_choice, check_int, shape_of
from vae.elbo import _check_mu_logvar, diagonal_gaussian_log_prob, reparameterize

__all__ = ["BASELINES", "GradientSamples", "reparameterized_gradient", "score_function_gradient"]

BASELINES: tuple[str, ...] = ("mean", "optimal")

Fn = Callable[[torch.Tensor], torch.Tensor]


class GradientSamples(NamedTuple):
    """n per-sample gradient estimates g_i and what they were computed from.

    ``mu``, ``logvar``: ``(n, ..., d)``, the terms of ∇_μ and ∇_logvar of E_q f (their mean over
    dim 0 is the estimate); ``f``: ``(n, ...)``, the values f(z_i); ``z``: ``(n, ..., d)``.
    """

    mu: torch.Tensor
    logvar: torch.Tensor
    f: torch.Tensor
    z: torch.Tensor

    def stacked(self) -> torch.Tensor:
        """``(n, ..., 2d)``: the μ and logvar terms side by side (the whole ∇_φ)."""
        return torch.cat([self.mu, self.logvar], -1)


def _draw(mu: torch.Tensor, logvar: torch.Tensor, n: object, generator: torch.Generator | None
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample copies of μ and logvar ``(n, ..., d)`` as leaves (so autograd returns one
    gradient per sample), and ε ``(n, ..., d)``."""
    mu, logvar = _check_mu_logvar(mu, logvar)
    n = check_int("n", n, minimum=1)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got "
                         f"{type(generator).__name__}")
    eps = torch.randn((n, *mu.shape), generator=generator, dtype=mu.dtype, device=mu.device)
    mu_n = mu.detach().expand(n, *mu.shape).clone().requires_grad_(True)
    logvar_n = logvar.detach().expand(n, *mu.shape).clone().requires_grad_(True)
    return mu_n, logvar_n, eps, n


def _values(f: Fn, z: torch.Tensor) -> torch.Tensor:
    out = f(z)
    if not isinstance(out, torch.Tensor) or not out.dtype.is_floating_point \
            or out.shape != z.shape[:-1]:
        raise ValueError(f"f must map z {tuple(z.shape)} to a float tensor of shape "
                         f"{tuple(z.shape[:-1])} (one value per sample), got {shape_of(out)}")
    if not bool(torch.isfinite(out).all()):
        raise ValueError("f returned NaN or infinite values")
    return out


def _leave_one_out(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """b_i = (Σ_k num_k − num_i) / (Σ_k den_k − den_i) over dim 0."""
    return (num.sum(0, keepdim=True) - num) / (den.sum(0, keepdim=True) - den)


def score_function_gradient(f: Fn, mu: torch.Tensor, logvar: torch.Tensor, n: int,
                            baseline: float | torch.Tensor | str | None = None,
                            generator: torch.Generator | None = None) -> GradientSamples:
    """The score-function (REINFORCE) terms g_i = (f(z_i) − b_i) ∇_φ log q_φ(z_i), z_i ~ q_φ.

    ∇_φ log q is autograd's gradient of :func:`vae.elbo.diagonal_gaussian_log_prob`; f is only
    evaluated (under ``no_grad``), so it need not be differentiable.

    Args:
        f: z ``(n, ..., d)`` → ``(n, ...)``.
        mu, logvar: ``(..., d)``, the same shape.
        n: samples, ≥ 1 (≥ 2 for the leave-one-out baselines).
        baseline: the control variate b_i, which must not depend on z_i:
            ``None`` (b = 0); a number, or a tensor broadcastable to ``(n, ...)`` (e.g. E_q f
            estimated from a separate batch); ``"mean"``: b_i = mean of f over the other
            n − 1 samples (leave-one-out); ``"optimal"``: per coordinate j,
            b_ij = Σ_{k≠i} f_k s_kj² / Σ_{k≠i} s_kj² (leave-one-out estimate of
            b*_j = E[f s_j²] / E[s_j²], the constant that minimises Var g_j).
        generator: for the noise ε.

    Returns:
        :class:`GradientSamples` with ``(n, ..., d)`` terms for μ and logvar.
    """
    mu_n, logvar_n, eps, n = _draw(mu, logvar, n, generator)
    with torch.no_grad():
        z = reparameterize(mu_n, logvar_n, eps)        # a sample of q; no path to φ is used
        values = _values(f, z)
    with torch.enable_grad():
        log_q = diagonal_gaussian_log_prob(z, mu_n, logvar_n)                    # (n, ...)
        s_mu, s_logvar = torch.autograd.grad(log_q.sum(), (mu_n, logvar_n))      # (n, ..., d)
    fv = values[..., None]                                                       # (n, ..., 1)
    if baseline is None:
        b_mu = b_logvar = torch.zeros((), dtype=fv.dtype, device=fv.device)
    elif isinstance(baseline, str):
        check_choice("baseline", baseline, BASELINES)
        if n < 2:
            raise ValueError(f"the leave-one-out baseline {baseline!r} needs n >= 2, got {n}")
        if baseline == "mean":
            b_mu = b_logvar = _leave_one_out(fv, torch.ones_like(fv))
        else:
            b_mu = _leave_one_out(fv * s_mu ** 2, s_mu ** 2)
            b_logvar = _leave_one_out(fv * s_logvar ** 2, s_logvar ** 2)
    elif isinstance(baseline, numbers.Real) and not isinstance(baseline, bool):
        b_mu = b_logvar = torch.tensor(float(baseline), dtype=fv.dtype, device=fv.device)
    elif isinstance(baseline, torch.Tensor) and baseline.dtype.is_floating_point:
        try:
            b = torch.broadcast_to(baseline.detach(), values.shape)[..., None]
        except RuntimeError:
            raise ValueError(f"a baseline tensor must broadcast to f's shape "
                             f"{tuple(values.shape)}, got {tuple(baseline.shape)}") from None
        b_mu = b_logvar = b.to(fv.device)
    else:
        raise ValueError(f"baseline must be None, a number, a float tensor or one of {BASELINES}, "
                         f"got {baseline!r}")
    return GradientSamples((fv - b_mu) * s_mu, (fv - b_logvar) * s_logvar, values, z)


def reparameterized_gradient(f: Fn, mu: torch.Tensor, logvar: torch.Tensor, n: int,
                             generator: torch.Generator | None = None) -> GradientSamples:
    """The pathwise terms g_i = ∇_φ f(μ + σ ⊙ ε_i), ε_i ~ N(0, I), through
    :func:`vae.elbo.reparameterize`:

        g_i^μ = ∇_z f(z_i),        g_i^logvar = ∇_z f(z_i) ⊙ ½ σ ⊙ ε_i.

    Args:
        f: z ``(n, ..., d)`` → ``(n, ...)``, differentiable in z (torch operations).
        mu, logvar: ``(..., d)``, the same shape.
        n: samples, ≥ 1.
        generator: for the noise ε.

    Returns:
        :class:`GradientSamples` with ``(n, ..., d)`` terms for μ and logvar.
    """
    mu_n, logvar_n, eps, n = _draw(mu, logvar, n, generator)
    with torch.enable_grad():
        z = reparameterize(mu_n, logvar_n, eps)
        values = _values(f, z)
        if not values.requires_grad:
            raise ValueError("f must be differentiable in z (its output has no gradient); the "
                             "score-function estimator needs only f's values")
        g_mu, g_logvar = torch.autograd.grad(values.sum(), (mu_n, logvar_n), allow_unused=True)
    zero = torch.zeros_like(mu_n)
    g_mu = zero if g_mu is None else g_mu
    g_logvar = zero if g_logvar is None else g_logvar
    return GradientSamples(g_mu.detach(), g_logvar.detach(), values.detach(), z.detach())
