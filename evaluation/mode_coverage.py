"""Mode coverage on Gaussian-mixture toys: modes covered, high-quality fraction, KL to uniform.

The protocol of the 2-D mixture benchmarks (ring of 8, grid of 25) in VEEGAN (Srivastava et al.
2017) and PacGAN (Lin et al. 2018), whose public evaluation code (fjxmlzn/PacGAN,
``MetricLogger``) does exactly this. For samples x_1..x_N, centres mu_1..mu_K and the mixture's
common standard deviation sigma:

1. assign every sample to its nearest centre,  k(i) = argmin_k ‖x_i − mu_k‖;
2. call it *high quality* if it lies within n_std = 3 standard deviations of that centre,
   ‖x_i − mu_k(i)‖ < n_std · sigma;
3. count the high-quality samples of each mode, c_k = #{i high quality : k(i) = k};
4. a mode is *covered* when c_k >= min_count (PacGAN's code: at least one, min_count = 1; pass a
   larger min_count, e.g. a fraction of the N/K samples a mode should get, for a stricter count);
5. the histogram p̂_k = c_k / Σ_j c_j of high-quality samples over modes is compared with the
   uniform distribution u_k = 1/K of a perfect generator:

       KL(p̂ ‖ u) = Σ_k p̂_k log(K p̂_k) = log K − H(p̂),   0 <= KL <= log K,

   with 0 log 0 = 0, so empty modes are allowed. It is 0 for a perfectly balanced generator and
   log(K/m) for one that spreads its samples evenly over only m of the K modes.

For exact samples from a mixture whose n_std·sigma balls do not overlap, ‖x − mu‖² / sigma² is
chi-squared with D degrees of freedom, so the expected high-quality fraction is
P(chi²_D < n_std²); in 2-D with n_std = 3 it is 1 − exp(−9/2) ≈ 0.9889.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from utils.validation import check_int, check_positive, shape_of

__all__ = ["ModeCoverage", "mode_coverage"]

_CHUNK = 65_536  # samples per block of the (block, K) distance matrix: bounds the memory used


class ModeCoverage(NamedTuple):
    """What :func:`mode_coverage` returns.

    modes_covered: number of modes with at least ``min_count`` high-quality samples (0..K);
    high_quality_fraction: (number of high-quality samples) / N, in [0, 1];
    kl_to_uniform: KL(p̂ ‖ uniform) of the high-quality histogram, in [0, log K]; NaN when no
    sample is high quality (the histogram is then undefined);
    counts: (K,) int64, the high-quality samples assigned to each mode, on the samples' device.
    """

    modes_covered: int
    high_quality_fraction: float
    kl_to_uniform: float
    counts: torch.Tensor


def _check_points(name: str, x: object, shape: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != 2 \
            or x.shape[0] < 1 or x.shape[1] < 1:
        dtype = f" {x.dtype}" if isinstance(x, torch.Tensor) else ""
        raise ValueError(f"{name} must be a non-empty floating-point tensor of shape {shape}, "
                         f"got {shape_of(x)}{dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite, got {int((~torch.isfinite(x)).sum())} "
                         f"non-finite entries (NaN or inf)")
    return x


def mode_coverage(samples: torch.Tensor, centres: torch.Tensor, std: float, *,
                  n_std: float = 3.0, min_count: int = 1) -> ModeCoverage:
    """Modes covered, high-quality fraction and KL to uniform of samples from a generator.

    Args:
        samples: (N, D) floating-point generated samples, finite.
        centres: (K, D) the mixture's centres mu_k (e.g. ``toy2d_mixture("grid25")[0]``); moved
            to the samples' dtype and device.
        std: sigma > 0, the components' common standard deviation.
        n_std: a sample is high quality when ‖x − mu_k(x)‖ < n_std · sigma (default 3).
        min_count: a mode is covered when it receives at least this many high-quality samples
            (default 1, as in PacGAN's evaluation code).

    Returns:
        :class:`ModeCoverage` ``(modes_covered, high_quality_fraction, kl_to_uniform, counts)``.
    """
    samples = _check_points("samples", samples, "(N, D)")
    centres = _check_points("centres", centres, "(K, D)")
    if centres.shape[1] != samples.shape[1]:
        raise ValueError(f"centres must have the samples' dimension D = {samples.shape[1]}, got "
                         f"centres of shape {tuple(centres.shape)}")
    sigma = check_positive("std", std)
    n_std = check_positive("n_std", n_std)
    min_count = check_int("min_count", min_count, minimum=1)
    mu = centres.to(dtype=samples.dtype, device=samples.device)
    K = len(mu)
    radius_sq = (n_std * sigma) ** 2
    counts = torch.zeros(K, dtype=torch.int64, device=samples.device)
    for block in samples.split(_CHUNK):
        squared_distance = (block[:, None, :] - mu[None, :, :]).pow(2).sum(-1)  # (B, K)
        nearest_sq, k = squared_distance.min(dim=1)  # k(i) = argmin_k ‖x_i − mu_k‖
        high_quality = nearest_sq < radius_sq
        counts += torch.bincount(k[high_quality], minlength=K)
    total = int(counts.sum())
    if total == 0:
        kl = math.nan
    else:
        p_hat = counts.to(torch.float64) / total
        kl = float(torch.special.xlogy(p_hat, p_hat * K).sum())  # Σ p̂ log(K p̂), 0 log 0 = 0
        kl = min(max(kl, 0.0), math.log(K))  # rounding only: 0 <= KL <= log K exactly
    return ModeCoverage(modes_covered=int((counts >= min_count).sum()),
                        high_quality_fraction=total / len(samples),
                        kl_to_uniform=kl, counts=counts)
