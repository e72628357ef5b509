"""Monte Carlo estimation and importance sampling (04_law_of_large_numbers).

An expectation μ = E_p[f(x)] is estimated by an average over samples. Three estimators:

    plain Monte Carlo        μ̂   = (1/n) Σ_i f(x_i),                x_i ~ p
    importance sampling      μ̂_IS = (1/n) Σ_i w_i f(x_i),            x_i ~ q,  w_i = p(x_i)/q(x_i)
    self-normalised IS       μ̃   = Σ_i w̃_i f(x_i) / Σ_i w̃_i,       w̃_i = p̃(x_i)/q(x_i), p̃ = Z p

The first two are unbiased with variance Var/n and standard error s/√n (s the sample standard
deviation with ddof = 1 of the averaged terms); the third needs p only up to its normalising
constant Z, is biased by O(1/n), and gets a delta-method standard error. The weights' effective
sample size ESS = (Σ_i w_i)² / Σ_i w_i² says how many equally weighted samples they are worth.

Shapes: the sample dimension is always dim 0. ``f_values: (n, *B, *E)``: ``*B`` batch dimensions
(e.g. independent repetitions) and ``*E`` the shape of f's value; log-densities and log-weights
``(n, *B)``. Every weight is handled in the log domain. dtype and device follow the inputs.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from utils.validation import shape_of

__all__ = ["ISEstimate", "MCEstimate", "effective_sample_size", "importance_sampling",
           "mc_estimate"]


def _normal_interval(mean: torch.Tensor, stderr: torch.Tensor,
                     alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """μ̂ ± z_{1-α/2} · se with z the standard normal quantile (the CLT interval)."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ValueError(f"alpha must be a number in (0, 1) (1 - alpha is the level), "
                         f"got {alpha!r}")
    z = torch.special.ndtri(torch.tensor(1 - alpha / 2, dtype=torch.float64)).item()
    return mean - z * stderr, mean + z * stderr


class MCEstimate(NamedTuple):
    """A Monte Carlo estimate: ``mean (*B, *E)``, its standard error ``stderr (*B, *E)``, and the
    number of samples ``n``."""

    mean: torch.Tensor
    stderr: torch.Tensor
    n: int

    def confidence_interval(self, alpha: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
        """The CLT interval at level 1 - α: ``(μ̂ - z·se, μ̂ + z·se)``, z = Φ⁻¹(1 - α/2).

        Its coverage tends to 1 - α as n → ∞; for small n and skewed f it covers less.
        """
        return _normal_interval(self.mean, self.stderr, alpha)


class ISEstimate(NamedTuple):
    """An importance-sampling estimate: ``mean``, ``stderr`` (``(*B, *E)``), the number of samples
    ``n``, and the weights' effective sample size ``ess (*B)`` (see :func:`effective_sample_size`).
    """

    mean: torch.Tensor
    stderr: torch.Tensor
    n: int
    ess: torch.Tensor

    def confidence_interval(self, alpha: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
        """The CLT interval at level 1 - α: ``(μ̂ - z·se, μ̂ + z·se)``, z = Φ⁻¹(1 - α/2).

        Only as good as ``stderr``: with a proposal whose weights have infinite variance, the
        sample standard deviation is itself unreliable and the interval is meaningless.
        """
        return _normal_interval(self.mean, self.stderr, alpha)


def _check_values(f_values: torch.Tensor, name: str = "f_values") -> int:
    if not isinstance(f_values, torch.Tensor) or not f_values.dtype.is_floating_point \
            or f_values.ndim < 1:
        raise ValueError(f"{name} must be a float tensor of shape (n, ...) (samples along dim 0), "
                         f"got {shape_of(f_values)}"
                         + (f" of dtype {f_values.dtype}" if isinstance(f_values, torch.Tensor)
                            else ""))
    n = f_values.shape[0]
    if n < 2:
        raise ValueError(f"{name} needs n >= 2 samples along dim 0 for a standard error, got {n}")
    if not bool(torch.isfinite(f_values).all()):
        raise ValueError(f"{name} must be finite; it has {int((~torch.isfinite(f_values)).sum())} "
                         f"NaN or infinite entries")
    return n


def _check_log_weights(log_w: torch.Tensor) -> None:
    if not isinstance(log_w, torch.Tensor) or not log_w.dtype.is_floating_point or log_w.ndim < 1 \
            or log_w.shape[0] < 1:
        raise ValueError(f"log_w must be a float tensor of shape (n, ...) with n >= 1, got "
                         f"{shape_of(log_w)}")
    if bool(torch.isnan(log_w).any()) or bool((log_w == math.inf).any()):
        raise ValueError("log_w must not contain NaN or +inf (an infinite weight); -inf (a zero "
                         "weight) is allowed")
    if bool((log_w == -math.inf).all(0).any()):
        raise ValueError("every weight is zero (log_w = -inf for all n samples) in some batch "
                         "element: the proposal never reached the target")


def mc_estimate(f_values: torch.Tensor) -> MCEstimate:
    """Plain Monte Carlo: the sample mean and its standard error over dim 0.

        μ̂ = (1/n) Σ_i f_i,    se = s / √n,    s² = (1/(n-1)) Σ_i (f_i - μ̂)²   (ddof = 1)

    E[μ̂] = μ and Var[μ̂] = σ²/n for independent f_i = f(x_i), x_i ~ p; s² is unbiased for σ².

    Args:
        f_values: ``(n, ...)``, n >= 2 finite values f(x_i) (float32 or float64).
    Returns:
        ``MCEstimate(mean (...), stderr (...), n)``.
    """
    n = _check_values(f_values)
    return MCEstimate(f_values.mean(0), f_values.std(0, correction=1) / math.sqrt(n), n)


def effective_sample_size(log_w: torch.Tensor) -> torch.Tensor:
    """Kish's effective sample size of importance weights, from their logarithms:

        ESS = (Σ_i w_i)² / Σ_i w_i² = exp(2 logsumexp_i(log w_i) - logsumexp_i(2 log w_i))

    It does not change if every weight is multiplied by the same constant (so unnormalised
    weights are fine), satisfies 1 ≤ ESS ≤ n (Cauchy–Schwarz), equals n exactly when all weights
    are equal and tends to 1 when one weight dominates. log-weights of any size (±1000) are fine.

    Args:
        log_w: ``(n, *B)`` log-weights; -inf (a zero weight) is allowed, NaN and +inf are not,
            and not every weight of a batch element may be zero.
    Returns:
        ``(*B)``.
    """
    _check_log_weights(log_w)
    ess = torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0))
    return ess.clamp(1.0, float(log_w.shape[0]))  # rounding can leave ESS a few ulp outside


def importance_sampling(f_values: torch.Tensor, log_p: torch.Tensor, log_q: torch.Tensor, *,
                        self_normalised: bool = False) -> ISEstimate:
    """Estimate E_p[f] from samples x_i ~ q, with log-weights log w_i = log p(x_i) - log q(x_i).

    Plain importance sampling (``self_normalised=False``) needs a *normalised* log p:

        μ̂_IS = (1/n) Σ_i w_i f_i,    se = s_wf / √n,   s_wf the ddof = 1 std of the w_i f_i,

    unbiased whenever q > 0 wherever p f ≠ 0, with Var[μ̂_IS] = (E_q[w² f²] - μ²)/n, which is
    infinite when q's tails are lighter than p's (E_q[w²] = ∫ p²/q = ∞).

    Self-normalised IS (``self_normalised=True``) works with an *unnormalised* log p̃ = log p + c:

        μ̃ = Σ_i w̃_i f_i / Σ_i w̃_i = Σ_i W_i f_i,   W = softmax(log w̃),
        se² = Σ_i W_i² (f_i - μ̃)²                      (delta method)

    The constant c cancels; μ̃ is consistent but biased, E[μ̃] - μ = -E_q[w²(f - μ)]/n + O(1/n²)
    (w = p/q normalised). The delta-method standard error is a large-n approximation.

    Both compute the weights' ``ess`` (:func:`effective_sample_size`). Large log-weights are
    handled by factoring out their maximum: w_i = e^m · e^(log w_i - m).

    Args:
        f_values: ``(n, *B, *E)``, finite f(x_i); ``*E`` is f's value shape (may be empty).
        log_p: ``(n, *B)`` log p(x_i) (or log p̃); -inf is allowed (p = 0 there), NaN, +inf not.
        log_q: ``(n, *B)`` log q(x_i), finite (the x_i were drawn from q).
        self_normalised: False for plain IS, True for self-normalised IS.
    Returns:
        ``ISEstimate(mean (*B, *E), stderr (*B, *E), n, ess (*B))``.
    """
    n = _check_values(f_values)
    if not isinstance(self_normalised, bool):
        raise ValueError(f"self_normalised must be True or False, got {self_normalised!r}")
    for name, lp in (("log_p", log_p), ("log_q", log_q)):
        if not isinstance(lp, torch.Tensor) or not lp.dtype.is_floating_point or lp.ndim < 1:
            raise ValueError(f"{name} must be a float tensor of shape (n, *B), got {shape_of(lp)}")
    if log_p.shape != log_q.shape or f_values.shape[:log_p.ndim] != log_p.shape:
        raise ValueError(f"log_p and log_q must both have shape (n, *B) and f_values (n, *B, *E); "
                         f"got log_p {tuple(log_p.shape)}, log_q {tuple(log_q.shape)}, f_values "
                         f"{tuple(f_values.shape)}")
    if not bool(torch.isfinite(log_q).all()):
        raise ValueError("log_q must be finite: each x_i was drawn from q, so q(x_i) > 0")
    log_w = log_p - log_q
    _check_log_weights(log_w)
    ess = effective_sample_size(log_w)
    extra = (1,) * (f_values.ndim - log_w.ndim)  # broadcast the weights over f's value shape
    if self_normalised:
        W = torch.softmax(log_w, 0).reshape(log_w.shape + extra)
        mean = (W * f_values).sum(0)
        stderr = (W.square() * (f_values - mean).square()).sum(0).sqrt()
        return ISEstimate(mean, stderr, n, ess)
    m = log_w.detach().amax(0)  # (*B); finite because not every weight is zero
    scale = m.exp().reshape(m.shape + extra)
    terms = torch.exp(log_w - m).reshape(log_w.shape + extra) * f_values  # w_i f_i / e^m
    mean = scale * terms.mean(0)
    stderr = scale * terms.std(0, correction=1) / math.sqrt(n)
    return ISEstimate(mean, stderr, n, ess)
