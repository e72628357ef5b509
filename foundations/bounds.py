"""Jensen and variational bounds: the ELBO and the importance-weighted bound
(03_jensen_and_variational_bounds).

For a latent variable model p(x, z) and any distribution q(z) (an *approximate posterior*) whose
support covers the posterior's, the importance weight of a sample z ~ q is w = p(x, z) / q(z), and
E_q[w] = p(x). Jensen's inequality for the concave log gives the bounds

    ELBO(q) = E_q[log p(x, z) - log q(z)]                  = log p(x) - KL(q(z) ‖ p(z | x))
    L_K     = E_{z_1..K ~ q}[ log (1/K) Σ_k w_k ]           (Burda et al., 2016)

with ELBO(q) = L_1 ≤ L_K ≤ L_{K+1} ≤ log p(x) and L_K → log p(x) as K → ∞.

The estimators here take the *log-weights* of samples the caller drew from q, as two tensors of the
same shape ``(S, ...)``: ``log_p_xz = log p(x, z_s)`` and ``log_q_z = log q(z_s)``; the leading
dimension indexes the samples, the trailing dimensions are batch (data points, repetitions) and are
kept. :func:`elbo_discrete` is the ELBO in closed form when z takes finitely many values.
"""

from __future__ import annotations

import math

import torch

from utils.validation import check_probabilities

__all__ = ["elbo", "elbo_discrete", "iw_bound"]


def _log_weights(log_p_xz: torch.Tensor, log_q_z: torch.Tensor) -> torch.Tensor:
    """log w_s = log p(x, z_s) - log q(z_s), after checking the two inputs agree: ``(S, ...)``."""
    for name, t in (("log_p_xz", log_p_xz), ("log_q_z", log_q_z)):
        if not isinstance(t, torch.Tensor) or not t.dtype.is_floating_point:
            kind = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a float tensor of shape (S, ...), got {kind}")
        if t.ndim < 1 or t.shape[0] < 1:
            raise ValueError(f"{name} must have shape (S, ...) with at least one sample S >= 1 "
                             f"along the leading dimension, got shape {tuple(t.shape)}")
        if bool(torch.isnan(t).any()):
            raise ValueError(f"{name} contains NaN")
    if log_p_xz.shape != log_q_z.shape:
        raise ValueError(f"log_p_xz and log_q_z must have the same shape (one log q per sample), "
                         f"got {tuple(log_p_xz.shape)} and {tuple(log_q_z.shape)}")
    if bool(torch.isinf(log_q_z).any()):
        raise ValueError("log_q_z must be finite: every sample z_s ~ q has q(z_s) > 0")
    return log_p_xz - log_q_z


def elbo(log_p_xz: torch.Tensor, log_q_z: torch.Tensor) -> torch.Tensor:
    """Monte Carlo estimate of the evidence lower bound from S samples z_s ~ q(z | x):

        ELBO ≈ (1/S) Σ_s [log p(x, z_s) - log q(z_s | x)]

    Unbiased for ELBO(q) = E_q[log p(x, z) - log q(z | x)] = log p(x) - KL(q ‖ p(z | x)), so it
    is at most log p(x) *in expectation*; a single estimate can land above it.

    Args:
        log_p_xz: (S, ...) log p(x, z_s), the joint at each sample (may be -inf where p = 0).
        log_q_z: (S, ...) log q(z_s | x), same shape, finite.

    Returns:
        (...) the estimate for every batch entry; dtype and device follow the inputs.
    """
    return _log_weights(log_p_xz, log_q_z).mean(0)


def iw_bound(log_p_xz: torch.Tensor, log_q_z: torch.Tensor) -> torch.Tensor:
    """The importance-weighted bound's estimate from K samples z_k ~ q(z | x) (Burda et al.):

        L̂_K = log (1/K) Σ_k w_k = logsumexp_k [log p(x, z_k) - log q(z_k | x)] - log K

    computed with a log-sum-exp, so weights as small as e^-1000 or as large as e^+1000 are fine.
    Its expectation L_K is non-decreasing in K and tends to log p(x); L̂_1 is the ELBO estimate
    of one sample, and for any fixed samples elbo(...) ≤ iw_bound(...) (Jensen on the samples).

    Args:
        log_p_xz: (K, ...) log p(x, z_k), the joint at each sample (may be -inf where p = 0).
        log_q_z: (K, ...) log q(z_k | x), same shape, finite.

    Returns:
        (...) one estimate per batch entry (e.g. per repetition); dtype and device follow the
        inputs.
    """
    log_w = _log_weights(log_p_xz, log_q_z)
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


def elbo_discrete(log_p_xz: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The ELBO of a categorical q(z) over K values of z, *in closed form* (an exact expectation,
    not a Monte Carlo estimate):

        ELBO(q) = Σ_z q(z) [log p(x, z) - log q(z)]           (0 · log 0 = 0)

    A term with q(z) = 0 contributes nothing, even where log p(x, z) = -inf; a term with q(z) > 0
    and p(x, z) = 0 makes the ELBO -inf. Equal to log p(x) - KL(q ‖ p(z | x)).

    Args:
        log_p_xz: (..., K) log p(x, z = k), e.g. ``log π_k + log N(x; μ_k, Σ_k)`` for a mixture.
        q: (..., K) probabilities along the last dimension (non-negative, summing to one).
            The batch dimensions of the two broadcast against each other (e.g. many q for one x).

    Returns:
        (...) the broadcast batch shape; dtype and device follow the inputs.
    """
    if not isinstance(log_p_xz, torch.Tensor) or not log_p_xz.dtype.is_floating_point \
            or log_p_xz.ndim < 1 or log_p_xz.shape[-1] < 1:
        shape = tuple(log_p_xz.shape) if isinstance(log_p_xz, torch.Tensor) else \
            type(log_p_xz).__name__
        raise ValueError(f"log_p_xz must be a float tensor of shape (..., K) with K >= 1, got "
                         f"{shape}")
    if bool(torch.isnan(log_p_xz).any()):
        raise ValueError("log_p_xz contains NaN")
    q = torch.as_tensor(q)
    check_probabilities("q", q)
    if q.shape[-1] != log_p_xz.shape[-1]:
        raise ValueError(f"q and log_p_xz must have the same number K of latent values (last "
                         f"dimension), got {q.shape[-1]} and {log_p_xz.shape[-1]}")
    try:
        torch.broadcast_shapes(q.shape, log_p_xz.shape)
    except RuntimeError:
        raise ValueError(f"the batch shapes of log_p_xz {tuple(log_p_xz.shape)} and q "
                         f"{tuple(q.shape)} do not broadcast") from None
    # q · log p with 0 · (-inf) = 0: zero the log where q = 0 (also keeps its gradient finite).
    log_p_safe = torch.where(q > 0, log_p_xz, torch.zeros((), dtype=log_p_xz.dtype,
                                                           device=log_p_xz.device))
    return (q * log_p_safe).sum(-1) - torch.special.xlogy(q, q).sum(-1)
