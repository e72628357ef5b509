"""FID: an Inception-v3 pool-feature extractor, the FID of two image sets, and FID extrapolated
to infinitely many samples (01_fid).

FID (Heusel et al. 2017) is the Fréchet distance (:mod:`evaluation.frechet`) between Gaussians
fitted to features φ(x) ∈ R^2048 of real and generated images,

    FID = ‖μ_r − μ_g‖² + tr(Σ_r + Σ_g − 2 (Σ_r^{1/2} Σ_g Σ_r^{1/2})^{1/2}),

with φ the 2,048 outputs of Inception-v3's final average pool. The number depends on every
convention of that pipeline, which is why two libraries disagree on the same images:

- the network's weights: the original TF graph (``pt_inception-2015-12-05``, used by TTUR,
  pytorch-fid, torch-fidelity) and torchvision's ImageNet weights (``IMAGENET1K_V1``, used here:
  the only ones torchvision ships) give different features, so their FIDs are not comparable;
- the resize to 299×299 (bilinear here and in pytorch-fid; clean-fid uses an antialiased
  bicubic PIL resize) and the input range ([-1, 1] for Inception: the images' own range, so
  ``transform_input=False``);
- the square root's precision and method (see :func:`evaluation.frechet_distance_sqrtm`);
- the sample size: the plug-in estimate is biased upwards by about c/N for N samples, so only
  FIDs at equal N are comparable. :func:`fid_infinity` (Chong & Forsyth 2020) fits
  FID_N = FID_∞ + c/N over several N and reports the intercept.

The weights are downloaded (about 100 MB) the first time, into torch's hub cache; offline that
fails with an error that names the offline stand-in, ``evaluation.digits_classifier()``, whose
``features`` give the book's "digits FD" on 16×16 digits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple
from urllib.error import URLError

import torch
import torch.nn.functional as F
from torch import nn

from evaluation.frechet import feature_statistics, frechet_distance, frechet_distance_from_features
from utils.validation import check_choice, check_int, is_int, shape_of

__all__ = ["FIDInfinity", "InceptionFeatures", "check_images", "extract_features", "fid",
           "fid_infinity"]

INCEPTION_SIZE = 299
INCEPTION_DIM = 2048
RESIZE_MODES = ("bilinear", "bicubic", "nearest")
_RANGE_TOL = 1e-3  # images may overshoot [-1, 1] by this much (interpolation rounding)


def check_images(name: str, x: object, *, channels: tuple[int, ...] = (1, 3),
                 min_n: int = 1) -> torch.Tensor:
    """x must be a finite float tensor (N, C, H, W), N >= ``min_n``, C in ``channels``, with
    values in [-1, 1] (to within 1e-3); returns it, else ValueError saying what came."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != 4 \
            or x.shape[0] < min_n or x.shape[1] not in channels or min(x.shape[2:]) < 1:
        dtype = f" {x.dtype}" if isinstance(x, torch.Tensor) else ""
        raise ValueError(f"{name} must be a float tensor of images (N, C, H, W) with N >= "
                         f"{min_n} and C in {channels}, got {shape_of(x)}{dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite, got {int((~torch.isfinite(x)).sum())} "
                         f"non-finite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1 - _RANGE_TOL or hi > 1 + _RANGE_TOL:
        raise ValueError(f"{name} must lie in [-1, 1], got values in [{lo:.4g}, {hi:.4g}] "
                         f"(map [0, 1] images with 2x − 1 and uint8 ones with x / 127.5 − 1)")
    return x


class InceptionFeatures(nn.Module):
    """φ(x): Inception-v3's 2,048 average-pool features of images in [-1, 1].

    forward: x (B, C, H, W), C = 1 (repeated to RGB) or 3, values in [-1, 1] → resized to
    299×299 with ``resize`` (align_corners=False, no antialiasing: pytorch-fid's convention for
    bilinear) → Inception-v3 up to the pool, in evaluation mode → (B, 2048).

    Args:
        weights: ``"imagenet"`` (torchvision's ``IMAGENET1K_V1``, downloaded once; offline a
            RuntimeError naming ``evaluation.digits_classifier()``) or ``None`` (random
            initialisation: for tests and for timing, not for numbers).
        resize: ``"bilinear"`` (default), ``"bicubic"`` or ``"nearest"``.
    """

    def __init__(self, weights: str | None = "imagenet", *, resize: str = "bilinear"):
        super().__init__()
        if weights not in ("imagenet", None):
            raise ValueError(f"weights must be 'imagenet' or None, got {weights!r}")
        self.resize = check_choice("resize", resize, RESIZE_MODES)
        from torchvision.models import Inception_V3_Weights, inception_v3

        if weights is None:
            net = inception_v3(weights=None, aux_logits=False, transform_input=False,
                               init_weights=True)
        else:
            try:
                # torchvision loads these weights with the auxiliary classifier; it is dropped
                # below (it only runs in training mode)
                net = inception_v3(weights=Inception_V3_Weights.IMAGENET1K_V1,
                                   transform_input=False)
            except (URLError, OSError, RuntimeError) as error:
                raise RuntimeError(
                    f"could not load Inception-v3's ImageNet weights ({type(error).__name__}: "
                    f"{error}); they are downloaded once (about 100 MB) into torch's hub cache. "
                    f"Offline, use the book's digits features instead: "
                    f"evaluation.digits_classifier().features as the extractor.") from error
        net.aux_logits, net.AuxLogits = False, None
        net.fc = nn.Identity()  # the pool's 2,048 features (after dropout, a no-op in eval)
        self.net = net.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> InceptionFeatures:
        """Stays in evaluation mode (BatchNorm statistics and dropout frozen) whatever ``mode``."""
        super().train(False)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_images("x", x)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        kwargs = {} if self.resize == "nearest" else {"align_corners": False}
        x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode=self.resize, **kwargs)
        return self.net(x)


def extract_features(images: torch.Tensor, extractor: Callable[[torch.Tensor], torch.Tensor], *,
                     batch_size: int = 256) -> torch.Tensor:
    """φ(images) (N, D) on the CPU, in ``batch_size`` chunks without gradients.

    images: (N, C, H, W) in [-1, 1]; extractor: images (B, C, H, W) → (B, D), e.g. an
    :class:`InceptionFeatures` or ``digits_classifier().features``; chunks are sent to the
    extractor's parameters' device when it has one.
    """
    images = check_images("images", images)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    if not callable(extractor):
        raise ValueError(f"extractor must be callable (images → features), got {extractor!r}")
    params = list(extractor.parameters()) if isinstance(extractor, nn.Module) else []
    device = params[0].device if params else images.device
    out = []
    with torch.no_grad():
        for chunk in images.split(batch_size):
            f = extractor(chunk.to(device))
            if not isinstance(f, torch.Tensor) or f.ndim != 2 or len(f) != len(chunk):
                raise ValueError(f"the extractor must return features (B, D) for B = "
                                 f"{len(chunk)} images, got {shape_of(f)}")
            out.append(f.cpu())
    return torch.cat(out)


def fid(images_a: torch.Tensor, images_b: torch.Tensor, *,
        extractor: Callable[[torch.Tensor], torch.Tensor], batch_size: int = 256) -> torch.Tensor:
    """The Fréchet distance between Gaussians fitted to φ(images_a) and φ(images_b): FID with an
    :class:`InceptionFeatures` extractor, the digits FD with ``digits_classifier().features``.

    images_a: (N, C, H, W), images_b: (M, C, H, W), N, M >= 2, in [-1, 1]. Returns a 0-d float64
    tensor. Compare values only at equal N and M (see :func:`fid_infinity`).
    """
    for name, x in (("images_a", images_a), ("images_b", images_b)):
        check_images(name, x, min_n=2)
    f_a = extract_features(images_a, extractor, batch_size=batch_size)
    f_b = extract_features(images_b, extractor, batch_size=batch_size)
    return frechet_distance_from_features(f_a, f_b)


class FIDInfinity(NamedTuple):
    """The result of :func:`fid_infinity`: ``fid_inf`` the intercept at 1/N = 0, ``slope`` c of
    FID_N ≈ FID_∞ + c/N, ``sizes`` (K,) the N used and ``fids`` (K,) the mean FID_N at each, and
    ``r2`` the coefficient of determination of the straight-line fit in 1/N."""

    fid_inf: float
    slope: float
    sizes: torch.Tensor
    fids: torch.Tensor
    r2: float


def fid_infinity(f_real: torch.Tensor, f_fake: torch.Tensor, sizes: list[int], *,
                 repeats: int = 1, generator: torch.Generator | None = None) -> FIDInfinity:
    """FID_∞ (Chong & Forsyth 2020): the Fréchet distance of N random fake features against the
    whole real set, at each N in ``sizes`` (the mean over ``repeats`` draws without
    replacement), and the least-squares line FID_N = FID_∞ + c/N extrapolated to N → ∞.

    Why a line in 1/N: the plug-in Σ̂ of N samples has E Σ̂ = Σ and fluctuations of order
    N^{-1/2}; the mean term contributes exactly tr Σ_g / N in expectation and the trace term's
    second-order expansion another O(1/N), so E FID_N = FID + c/N + o(1/N).

    Args:
        f_real: (N_r, D) and f_fake: (N_f, D) features, N_r >= 2.
        sizes: at least two distinct integers in [2, N_f].
        repeats: draws per size, >= 1; generator: for the draws.
    """
    mu_r, S_r = feature_statistics(f_real)
    if not isinstance(f_fake, torch.Tensor) or f_fake.ndim != 2 or f_fake.shape[1] != mu_r.shape[0]:
        raise ValueError(f"f_fake must be a tensor (N, {mu_r.shape[0]}), got {shape_of(f_fake)}")
    n_fake = len(f_fake)
    if not isinstance(sizes, (list, tuple)) or not all(is_int(n) and 2 <= n <= n_fake
                                                       for n in sizes) or len(set(sizes)) < 2:
        raise ValueError(f"sizes must be at least two distinct integers in [2, {n_fake}] (the "
                         f"number of fake features), got {sizes!r}")
    repeats = check_int("repeats", repeats, minimum=1)
    sizes_t = torch.tensor([int(n) for n in sizes], dtype=torch.float64)
    fids = torch.zeros(len(sizes), dtype=torch.float64)
    for i, n in enumerate(sizes):
        for _ in range(repeats):
            idx = torch.randperm(n_fake, generator=generator)[:int(n)]
            mu_g, S_g = feature_statistics(f_fake[idx])
            fids[i] += frechet_distance(mu_r, S_r, mu_g, S_g).cpu() / repeats
    X = torch.stack([torch.ones_like(sizes_t), 1 / sizes_t], 1)  # FID_N = a + c · (1/N)
    coef = torch.linalg.lstsq(X, fids[:, None]).solution[:, 0]
    residual = fids - X @ coef
    total = (fids - fids.mean()).pow(2).sum()
    r2 = float(1 - residual.pow(2).sum() / total) if total > 0 else 1.0
    return FIDInfinity(float(coef[0]), float(coef[1]), sizes_t, fids, r2)
