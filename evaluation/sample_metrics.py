"""KID and the precision and recall of generative models, on features of real and generated
samples (01_fid). Both take features (e.g. :func:`evaluation.extract_features`), not images.

KID (Bińkowski et al. 2018): the squared MMD between the feature distributions under the cubic
polynomial kernel k(x, y) = (xᵀy / D + 1)³, estimated by the unbiased U-statistic
(:func:`foundations.mmd2_from_kernels`),

    KID = 1/(m(m−1)) Σ_{i≠j} k(x_i, x_j) + 1/(n(n−1)) Σ_{i≠j} k(y_i, y_j)
          − 2/(mn) Σ_{i,j} k(x_i, y_j).

Unlike FID it is unbiased at every sample size (E KID = MMD², which is 0 when the two
distributions are equal), so it can be compared across N and can come out negative. Its standard
error here is the two-sample jackknife (each point left out once; for a U-statistic the
leave-one-out values come from the kernel matrices' row sums in O(m² + n²)):

    se² = (m−1)/m Σ_i (θ_{−i} − θ̄_x)² + (n−1)/n Σ_j (θ_{−j} − θ̄_y)².

It matches the spread of KID over independent draws when the distributions differ; when they
are equal the U-statistic is degenerate (fluctuations O(1/n) rather than O(1/√n)) and the
jackknife errs on the safe side (tested: above the spread, by less than 2×).

(Reference implementations instead average the statistic over random subsets of 1,000 and report
the spread of one subset's value; both are given a common footing by ``subset_size`` here.)

Precision and recall (Kynkäänniemi et al. 2019): approximate each manifold by the union of
balls around its points, each of radius the distance to its k-th nearest neighbour in the same
set; precision = the fraction of generated points inside the real manifold (fidelity), recall =
the fraction of real points inside the generated manifold (coverage). Mode dropping lowers
recall and leaves precision; blurry or off-manifold samples lower precision.

evaluation imports foundations here (a math part, not a model family) to reuse its MMD
estimator rather than write a second one.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from foundations.two_sample import mmd2_from_kernels
from utils.validation import check_int, shape_of

__all__ = ["KID", "PrecisionRecall", "kid", "knn_radii", "polynomial_kernel", "precision_recall"]


def _check_pair(f_a: object, f_b: object, min_n: int) -> tuple[torch.Tensor, torch.Tensor]:
    for name, f in (("f_a", f_a), ("f_b", f_b)):
        if not isinstance(f, torch.Tensor) or not f.is_floating_point() or f.ndim != 2 \
                or f.shape[0] < min_n or f.shape[1] < 1:
            raise ValueError(f"{name} must be a float tensor of features (N, D) with N >= "
                             f"{min_n}, got {shape_of(f)}")
        if not bool(torch.isfinite(f).all()):
            raise ValueError(f"{name} must be finite")
    if f_a.shape[1] != f_b.shape[1]:
        raise ValueError(f"f_a and f_b must have the same feature dimension, got {f_a.shape[1]} "
                         f"and {f_b.shape[1]}")
    return f_a.to(torch.float64), f_b.to(torch.float64).to(f_a.device)


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """k(x_i, y_j) = (x_iᵀ y_j / D + 1)³ for x (M, D), y (N, D) → (M, N)."""
    return (x @ y.T / x.shape[1] + 1).pow(3)


class KID(NamedTuple):
    """``value``: the unbiased MMD² (mean over subsets when ``subset_size`` is given); ``se``:
    its jackknife standard error (over subsets: their standard deviation / √n_subsets)."""

    value: float
    se: float


def _jackknife_se(k_xx: torch.Tensor, k_yy: torch.Tensor, k_xy: torch.Tensor) -> float:
    m, n = k_xy.shape
    a = k_xx.sum() - k_xx.diagonal().sum()             # Σ_{i≠j} k(x_i, x_j)
    b = k_yy.sum() - k_yy.diagonal().sum()
    c = k_xy.sum()
    r_x = k_xx.sum(1) - k_xx.diagonal()                # Σ_{j≠i} k(x_i, x_j)  (m,)
    r_y = k_yy.sum(1) - k_yy.diagonal()
    # leave x_i out: a loses 2 r_x[i], c loses row i of k_xy; likewise for y_j
    th_x = (a - 2 * r_x) / ((m - 1) * (m - 2)) + b / (n * (n - 1)) \
        - 2 * (c - k_xy.sum(1)) / ((m - 1) * n)
    th_y = a / (m * (m - 1)) + (b - 2 * r_y) / ((n - 1) * (n - 2)) \
        - 2 * (c - k_xy.sum(0)) / (m * (n - 1))
    var = (m - 1) / m * (th_x - th_x.mean()).pow(2).sum() \
        + (n - 1) / n * (th_y - th_y.mean()).pow(2).sum()
    return math.sqrt(float(var))


def kid(f_a: torch.Tensor, f_b: torch.Tensor, *, subset_size: int | None = None,
        n_subsets: int = 100, generator: torch.Generator | None = None) -> KID:
    """KID between features f_a (M, D) and f_b (N, D), M, N >= 3, computed in float64.

    With ``subset_size`` None (default): the U-statistic on all points and its jackknife
    standard error (memory: three kernel matrices, 8 (M² + N² + MN) bytes). With an integer s
    (3 <= s <= min(M, N)): the reference implementations' recipe, the mean over ``n_subsets``
    random subsets of s points from each set, with se = their standard deviation / √n_subsets.
    """
    x, y = _check_pair(f_a, f_b, min_n=3)
    if subset_size is None:
        k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
        return KID(float(mmd2_from_kernels(k_xx, k_yy, k_xy)), _jackknife_se(k_xx, k_yy, k_xy))
    s = check_int("subset_size", subset_size, minimum=3)
    if s > min(len(x), len(y)):
        raise ValueError(f"subset_size must be at most min(M, N) = {min(len(x), len(y))}, got {s}")
    n_subsets = check_int("n_subsets", n_subsets, minimum=2)
    values = []
    for _ in range(n_subsets):
        xs = x[torch.randperm(len(x), generator=generator)[:s].to(x.device)]
        ys = y[torch.randperm(len(y), generator=generator)[:s].to(y.device)]
        values.append(float(mmd2_from_kernels(polynomial_kernel(xs, xs), polynomial_kernel(ys, ys),
                                              polynomial_kernel(xs, ys))))
    v = torch.tensor(values, dtype=torch.float64)
    return KID(float(v.mean()), float(v.std() / math.sqrt(n_subsets)))


def knn_radii(f: torch.Tensor, k: int, *, chunk: int = 1024) -> torch.Tensor:
    """r_i = ‖f_i − its k-th nearest neighbour in f (itself excluded)‖ for f (N, D) → (N,);
    1 <= k <= N − 1."""
    if not isinstance(f, torch.Tensor) or f.ndim != 2:
        raise ValueError(f"f must be a tensor of features (N, D), got {shape_of(f)}")
    k = check_int("k", k, minimum=1)
    if k > len(f) - 1:
        raise ValueError(f"k must be at most N − 1 = {len(f) - 1} (each point's neighbours "
                         f"exclude itself), got {k}")
    f = f.to(torch.float64)
    # the (k+1)-th smallest distance in the row, the point itself (distance 0) being the first
    return torch.cat([torch.cdist(c, f).kthvalue(k + 1, dim=1).values for c in f.split(chunk)])


def _inside(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor,
            chunk: int) -> torch.Tensor:
    """(P,) bool: is points_p within radii_i of some centres_i?"""
    return torch.cat([(torch.cdist(c, centres) <= radii).any(1) for c in points.split(chunk)])


class PrecisionRecall(NamedTuple):
    """``precision``: the fraction of fake points inside the real k-NN manifold; ``recall``: the
    fraction of real points inside the fake one (both in [0, 1])."""

    precision: float
    recall: float


def precision_recall(f_real: torch.Tensor, f_fake: torch.Tensor, *, k: int = 3,
                     chunk: int = 1024) -> PrecisionRecall:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of f_fake (N, D) against
    f_real (M, D) with k-NN balls (k = 3 as in the paper; 1 <= k < min(M, N))."""
    real, fake = _check_pair(f_real, f_fake, min_n=2)
    k = check_int("k", k, minimum=1)
    chunk = check_int("chunk", chunk, minimum=1)
    precision = _inside(fake, real, knn_radii(real, k, chunk=chunk), chunk).double().mean()
    recall = _inside(real, fake, knn_radii(fake, k, chunk=chunk), chunk).double().mean()
    return PrecisionRecall(float(precision), float(recall))
