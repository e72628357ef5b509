"""The Fréchet distance between Gaussians, and between Gaussians fitted to features (FID).

For N(mu1, S1) and N(mu2, S2) (Fréchet 1957; Dowson & Landau 1982; Heusel et al. 2017 with
Inception features as FID):

    d² = ‖mu1 − mu2‖² + tr(S1 + S2 − 2 (S1^{1/2} S2 S1^{1/2})^{1/2}),

the squared 2-Wasserstein distance between the two Gaussians (the Bures metric on covariances,
see ``divergences.gaussian_w2``). It is zero iff mu1 = mu2 and S1 = S2, symmetric, and
d² >= ‖mu1 − mu2‖² (the trace part is a squared distance itself).

How it is computed. The common recipe takes ``scipy.linalg.sqrtm(S1 @ S2)``: S1 S2 is not
symmetric, so its square root comes back complex with small imaginary parts (and fails on
singular products) that then have to be dropped. Here only symmetric matrices are square-rooted:

    S^{1/2} = V diag(√λ) Vᵀ            from the symmetric eigendecomposition S = V diag(λ) Vᵀ,
    tr (S1^{1/2} S2 S1^{1/2})^{1/2} = Σ_i s_i(S1^{1/2} S2^{1/2})   (s_i: singular values),

since (S1^{1/2} S2^{1/2})(S1^{1/2} S2^{1/2})ᵀ = S1^{1/2} S2 S1^{1/2}; tiny negative eigenvalues
(rounding) are clamped to zero, and everything is in float64: the trace part is a
difference of large, nearly equal numbers (tr S1 + tr S2 vs 2 tr(...)), which float32 would round
away. So singular covariances (fewer samples than features) are fine, and the answer is real.
Near a singular covariance the distance itself is sensitive to rounding in the inputs (√λ has
infinite slope at 0: an eigenvalue perturbed by ε‖S‖ moves d² by up to about 2√(ε‖S‖)·‖S‖^{1/2}),
so expect agreement to about 1e-8 relative there, to about 1e-12 otherwise.

Outputs are float64 whatever the inputs' dtype; the device is the inputs'. A finite-sample FID is
biased upwards (the plug-in covariances are noisy), so compare FIDs only at equal sample sizes.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
import torch

from utils.validation import check_positive, shape_of

__all__ = ["feature_statistics", "frechet_distance", "frechet_distance_from_features",
           "frechet_distance_sqrtm"]


def _default_rtol(dtype: torch.dtype) -> float:
    """Relative tolerance of the symmetry and PSD checks: √(machine epsilon) of the inputs."""
    return torch.finfo(dtype).eps ** 0.5


def _check_gaussian(name: str, mu: object, S: object) -> None:
    for label, x in ((f"mu{name}", mu), (f"S{name}", S)):
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            dtype = f" {x.dtype}" if isinstance(x, torch.Tensor) else ""
            raise ValueError(f"{label} must be a floating-point tensor, got {shape_of(x)}{dtype}")
    if mu.ndim < 1 or mu.shape[-1] < 1 or S.shape != (*mu.shape, mu.shape[-1]):
        raise ValueError(f"mu{name} must have shape (..., D) with D >= 1 and S{name} shape "
                         f"(..., D, D), got {tuple(mu.shape)} and {tuple(S.shape)}")
    for label, x in ((f"mu{name}", mu), (f"S{name}", S)):
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{label} must be finite, got {int((~torch.isfinite(x)).sum())} "
                             f"non-finite entries")


def _symmetric_psd(name: str, S: torch.Tensor, rtol: float) -> tuple[torch.Tensor, torch.Tensor]:
    """S (..., D, D) in float64, symmetrised, with its eigendecomposition (λ clamped to >= 0);
    ValueError if S is not symmetric PSD within rtol relative to its largest entry/eigenvalue."""
    S = S.to(torch.float64)
    values = S.detach()
    scale = values.abs().amax(dim=(-2, -1))
    asymmetry = (values - values.mT).abs().amax(dim=(-2, -1))
    if bool((asymmetry > rtol * scale).any()):
        raise ValueError(f"{name} must be symmetric (within rtol = {rtol:.1g} of its largest "
                         f"entry), got an asymmetry of {float(asymmetry.max()):.3g}")
    S = (S + S.mT) / 2
    lam, V = torch.linalg.eigh(S)
    lam_max = lam.detach().abs().amax(dim=-1)
    lam_min = lam.detach().amin(dim=-1)
    if bool((lam_min < -rtol * lam_max).any()):
        raise ValueError(f"{name} must be positive semi-definite (eigenvalues >= -rtol · the "
                         f"largest, rtol = {rtol:.1g}), got a smallest eigenvalue "
                         f"{float(lam_min.min()):.3g}")
    return lam.clamp(min=0), V


def frechet_distance(mu1: torch.Tensor, S1: torch.Tensor, mu2: torch.Tensor, S2: torch.Tensor,
                     *, rtol: float | None = None) -> torch.Tensor:
    """Squared Fréchet distance d² between N(mu1, S1) and N(mu2, S2).

        d² = ‖mu1 − mu2‖² + tr S1 + tr S2 − 2 tr (S1^{1/2} S2 S1^{1/2})^{1/2}.

    Args:
        mu1, mu2: (..., D) means; S1, S2: (..., D, D) covariances, symmetric positive
            semi-definite (singular is fine). Any floating dtype, one device; all four share
            their leading (batch) shape.
        rtol: tolerance of the symmetry and PSD checks, relative to the largest entry and
            eigenvalue; default √eps of the inputs' dtype (1.5e-8 in float64, 3.5e-4 in
            float32). Within it, S is symmetrised and negative eigenvalues are clamped to 0.

    Returns:
        d2: (...) float64 tensor on the inputs' device (0-d for single Gaussians; ``float(d2)``
        for a number), >= 0. Differentiable where the eigenvalues of S1, S2 and the singular
        values of S1^{1/2} S2^{1/2} are distinct and positive.
    """
    _check_gaussian("1", mu1, S1)
    _check_gaussian("2", mu2, S2)
    if mu1.shape != mu2.shape or mu1.device != mu2.device or S1.device != mu1.device \
            or S2.device != mu1.device:
        raise ValueError(f"the two Gaussians must share shape and device, got mu1 "
                         f"{tuple(mu1.shape)} on {mu1.device} and mu2 {tuple(mu2.shape)} on "
                         f"{mu2.device} (S1 on {S1.device}, S2 on {S2.device})")
    dtypes = (mu1.dtype, S1.dtype, mu2.dtype, S2.dtype)
    rtol = max(_default_rtol(d) for d in dtypes) if rtol is None else check_positive("rtol", rtol)
    lam1, V1 = _symmetric_psd("S1", S1, rtol)
    lam2, V2 = _symmetric_psd("S2", S2, rtol)
    R1 = V1 @ torch.diag_embed(lam1.sqrt()) @ V1.mT  # S1^{1/2}, symmetric PSD
    R2 = V2 @ torch.diag_embed(lam2.sqrt()) @ V2.mT  # S2^{1/2}
    # (R1 R2)(R1 R2)ᵀ = R1 S2 R1, so the singular values of R1 R2 are the square roots of the
    # eigenvalues of S1^{1/2} S2 S1^{1/2}; taking them directly avoids the square root that
    # would turn eigenvalue rounding ε‖S‖² into errors √ε‖S‖ on the null directions.
    cross = torch.linalg.svdvals(R1 @ R2).sum(-1)  # tr (S1^{1/2} S2 S1^{1/2})^{1/2}
    mean_term = (mu1.to(torch.float64) - mu2.to(torch.float64)).pow(2).sum(-1)
    d2 = mean_term + lam1.sum(-1) + lam2.sum(-1) - 2 * cross  # tr S = Σ λ
    return d2.clamp(min=0)  # >= 0 exactly; only rounding can push it below


def _check_features(name: str, f: object) -> torch.Tensor:
    if not isinstance(f, torch.Tensor) or not f.is_floating_point() or f.ndim != 2 \
            or f.shape[0] < 2 or f.shape[1] < 1:
        dtype = f" {f.dtype}" if isinstance(f, torch.Tensor) else ""
        raise ValueError(f"{name} must be a floating-point tensor of shape (N, D) with N >= 2 "
                         f"samples (the unbiased covariance divides by N - 1) and D >= 1, got "
                         f"{shape_of(f)}{dtype}")
    if not bool(torch.isfinite(f).all()):
        raise ValueError(f"{name} must be finite, got {int((~torch.isfinite(f)).sum())} "
                         f"non-finite entries")
    return f


def feature_statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased covariance of features, in float64 (cache them for a reference set).

        mu = (1/N) Σ_i f_i,   S = (1/(N − 1)) Σ_i (f_i − mu)(f_i − mu)ᵀ.

    Args:
        features: (N, D) floating point, N >= 2, finite.

    Returns:
        ``(mu, S)``: (D,) and (D, D) float64 on the features' device.
    """
    f = _check_features("features", features).to(torch.float64)
    mu = f.mean(0)
    centred = f - mu
    S = centred.mT @ centred / (len(f) - 1)
    return mu, (S + S.mT) / 2


def frechet_distance_from_features(f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
    """Squared Fréchet distance between Gaussians fitted to two feature sets (FID when the
    features are Inception-v3 pool features of images).

    Args:
        f1: (N, D), f2: (M, D) floating-point features, N, M >= 2, on one device.

    Returns:
        d2: 0-d float64 tensor, ``frechet_distance(*feature_statistics(f1),
        *feature_statistics(f2))``.
    """
    f1 = _check_features("f1", f1)
    f2 = _check_features("f2", f2)
    if f1.shape[1] != f2.shape[1] or f1.device != f2.device:
        raise ValueError(f"f1 and f2 must have the same feature dimension D and device, got "
                         f"{tuple(f1.shape)} on {f1.device} and {tuple(f2.shape)} on "
                         f"{f2.device}")
    mu1, S1 = feature_statistics(f1)
    mu2, S2 = feature_statistics(f2)
    return frechet_distance(mu1, S1, mu2, S2)


def frechet_distance_sqrtm(mu1: torch.Tensor, S1: torch.Tensor, mu2: torch.Tensor,
                           S2: torch.Tensor, *, dtype: torch.dtype = torch.float64,
                           eps: float = 1e-6) -> float:
    """The common recipe (TTUR's and pytorch-fid's ``calculate_frechet_distance``), for
    comparison: d² = ‖mu1 − mu2‖² + tr S1 + tr S2 − 2 tr sqrtm(S1 S2), in ``dtype``.

    ``scipy.linalg.sqrtm`` of the non-symmetric product S1 S2 (computed in ``dtype``: float32
    inputs give a float32 Schur decomposition). The usual guards: if the square root is not
    finite (a singular product), eps·I is added to both covariances and it is taken again; a
    complex result whose diagonal has imaginary parts above 1e-3 is an error, smaller ones are
    dropped. Use :func:`frechet_distance` for results; this exists to measure how the recipe
    and its precision move the number.

    Args:
        mu1, mu2: (D,); S1, S2: (D, D) covariances (tensors, any float dtype; CPU copies made).
        dtype: torch.float64 or torch.float32, the precision of the whole computation.
        eps: the diagonal offset of the guard, > 0.

    Returns:
        d2 as a Python float (it can come out slightly negative in float32).
    """
    for name, mu, S in (("1", mu1, S1), ("2", mu2, S2)):
        _check_gaussian(name, mu, S)
        if mu.ndim != 1:
            raise ValueError(f"mu{name} must have shape (D,) (no batch), got {tuple(mu.shape)}")
    if mu1.shape != mu2.shape:
        raise ValueError(f"mu1 and mu2 must have the same shape, got {tuple(mu1.shape)} and "
                         f"{tuple(mu2.shape)}")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    eps = check_positive("eps", eps)
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    m1, m2, c1, c2 = (t.detach().cpu().double().numpy().astype(np_dtype)
                      for t in (mu1, mu2, S1, S2))
    with warnings.catch_warnings():  # a singular product warns; the guard below handles it
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(c1 @ c2)
        if not np.isfinite(covmean).all():  # singular product: regularise both covariances
            offset = np.eye(len(m1), dtype=np_dtype) * np_dtype(eps)
            covmean = scipy.linalg.sqrtm((c1 + offset) @ (c2 + offset))
    if np.iscomplexobj(covmean):
        imag = float(np.abs(np.diagonal(covmean).imag).max())
        if imag > 1e-3:
            raise ValueError(f"sqrtm(S1 S2) has imaginary diagonal parts up to {imag:.3g}; the "
                             f"covariances are not PSD or are too ill-conditioned")
        covmean = covmean.real
    diff = m1 - m2
    return float(diff @ diff + np.trace(c1) + np.trace(c2) - 2 * np.trace(covmean))
