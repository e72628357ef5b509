"""Intrinsic dimension: PCA spectra and the Levina-Bickel estimator (05_manifold_hypothesis).

Points ``x: (..., N, D)``: N points in R^D, with optional batch dimensions in front.

PCA. With the centred data's singular values s_1 >= s_2 >= ..., the explained variance ratios
are r_j = s_j² / Σ_l s_l², and the PCA dimension at threshold τ is the smallest n with
Σ_{j<=n} r_j >= τ. It counts the dimensions of the *linear span* of the data, not of a manifold.

Nearest-neighbour maximum likelihood (Levina & Bickel, 2005). With T_j(x_i) the distance from
x_i to its j-th nearest neighbour (itself excluded), the local estimate is

    m̂_k(x_i) = [ (1/(k-1)) Σ_{j=1}^{k-1} log(T_k(x_i) / T_j(x_i)) ]⁻¹,

and, where the density is locally uniform on an m-dimensional manifold, the sum
S_i = Σ_j log(T_k/T_j) is Gamma(k-1, rate m) distributed. So E[S_i / (k-1)] = 1/m exactly while
E[m̂_k(x_i)] = m (k-1)/(k-2): averaging the *inverses* (MacKay & Ghahramani, 2005),

    m̂_k = [ (1/N) Σ_i m̂_k(x_i)⁻¹ ]⁻¹,

is the pooled maximum-likelihood estimate and is consistent as N grows, whereas the plain average
of the m̂_k(x_i) keeps the factor (k-1)/(k-2) (12.5% at k = 10) however large N is. Over a range
k1..k2, Levina and Bickel average the global estimates: m̂ = mean_k m̂_k.

Duplicate points give T_1 = 0 and a log of infinity; the estimators raise a ValueError for them
(remove them first, e.g. with ``torch.unique(x, dim=-2)``).
"""

from __future__ import annotations

import math

import torch

from utils.validation import is_int

__all__ = [
    "intrinsic_dimension_mle",
    "knn_distances",
    "local_dimension_mle",
    "pca_dimension",
    "pca_spectrum",
    "sample_sphere",
    "sample_subspace",
    "sample_swiss_roll_3d",
    "sample_torus",
]


def _check_points(x: torch.Tensor, min_n: int = 2) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim < 2 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a floating-point tensor of shape (..., N, D), got {shape}")
    if x.shape[-2] < min_n or x.shape[-1] < 1:
        raise ValueError(f"x needs N >= {min_n} points of dimension D >= 1, got shape "
                         f"{tuple(x.shape)}")


def knn_distances(x: torch.Tensor, k: int, *, chunk: int = 1024) -> torch.Tensor:
    """Distances T_1 <= ... <= T_k from each point to its k nearest *other* points.

    ``x: (..., N, D)`` → ``(..., N, k)``, ascending along the last axis. Exact Euclidean distances
    (``torch.cdist`` without the matrix-product shortcut, so a distance is zero only between equal
    rows), ``chunk`` query rows at a time: memory O(chunk · N). A point's own row is excluded by
    index, so a duplicate of it still counts as a neighbour at distance 0.
    """
    _check_points(x)
    n = x.shape[-2]
    if not is_int(k) or not 1 <= k <= n - 1:
        raise ValueError(f"k must be an integer in [1, N - 1] = [1, {n - 1}], got {k!r}")
    if not is_int(chunk) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    out = []
    for start in range(0, n, chunk):
        rows = x[..., start:start + chunk, :]
        dist = torch.cdist(rows, x, compute_mode="donot_use_mm_for_euclid_dist")  # (..., c, N)
        c = rows.shape[-2]
        own = torch.arange(start, start + c, device=x.device)
        dist[..., torch.arange(c, device=x.device), own] = math.inf
        out.append(dist.topk(k, dim=-1, largest=False, sorted=True).values)
    return torch.cat(out, dim=-2)


def _k_range(k: int | tuple[int, int], n: int) -> tuple[int, int]:
    """Validate ``k`` (an int, or an inclusive range ``(k1, k2)``) → ``(k1, k2)``."""
    k1, k2 = (k, k) if is_int(k) else (tuple(k) if isinstance(k, (tuple, list)) and len(k) == 2
                                         else (None, None))
    if not (is_int(k1) and is_int(k2) and 2 <= k1 <= k2 <= n - 1):
        raise ValueError(f"k must be an integer or a range (k1, k2) with 2 <= k1 <= k2 <= N - 1 "
                         f"= {n - 1}, got {k!r}")
    return k1, k2


def _inverse_local(t: torch.Tensor, ks: torch.Tensor) -> torch.Tensor:
    """S_i / (k-1) = m̂_k(x_i)⁻¹ for each k in ``ks``, from ``t: (..., N, k2)`` → ``(..., N, K)``.

    Raises on duplicate points (T_1 = 0), where the log-ratios are infinite.
    """
    if bool((t[..., 0] == 0).any()):
        raise ValueError("x has duplicate points (a zero nearest-neighbour distance), where "
                         "log(T_k / T_j) is infinite; remove them first, e.g. with "
                         "torch.unique(x, dim=-2)")
    log_t = t.log()
    cum = log_t.cumsum(dim=-1)  # Σ_{j<=k} log T_j
    k = ks.to(t.dtype)
    # Σ_{j<k} log(T_k / T_j) = (k-1) log T_k - Σ_{j<k} log T_j
    s = (k - 1) * log_t[..., ks - 1] - cum[..., ks - 2]
    return s / (k - 1)


def local_dimension_mle(x: torch.Tensor, k: int = 10, *, chunk: int = 1024) -> torch.Tensor:
    """Levina-Bickel local estimates m̂_k(x_i) = [(1/(k-1)) Σ_{j<k} log(T_k/T_j)]⁻¹.

    ``x: (..., N, D)`` with distinct points → ``(..., N)``. ``k`` must be in [2, N - 1]. A point
    whose k nearest neighbours are all at the same distance gets +inf (zero log-ratios); pooled
    by :func:`intrinsic_dimension_mle` it is harmless.
    """
    _check_points(x, min_n=3)
    k1, _ = _k_range(k, x.shape[-2])
    if not is_int(k):
        raise ValueError(f"local_dimension_mle takes one integer k, got {k!r}")
    t = knn_distances(x, k1, chunk=chunk)
    ks = torch.tensor([k1], device=x.device)
    return 1.0 / _inverse_local(t, ks)[..., 0]


def intrinsic_dimension_mle(x: torch.Tensor, k: int | tuple[int, int] = 10, *,
                            average: str = "inverse", chunk: int = 1024) -> torch.Tensor:
    """Global Levina-Bickel intrinsic dimension of ``x: (..., N, D)`` → ``(...)`` (0-dim if 2-D).

    Args:
        k: neighbours used, an integer in [2, N - 1], or an inclusive range ``(k1, k2)`` whose
            global estimates are averaged (Levina & Bickel's recipe; k1 = 10, k2 = 20 is theirs).
        average: how the local estimates are pooled. ``"inverse"`` (default, MacKay and
            Ghahramani): m̂_k = [mean_i m̂_k(x_i)⁻¹]⁻¹, the maximum-likelihood estimate of m under
            the model's Gamma(k-1, m) law for each point, unbiased for 1/m. ``"estimate"``:
            Levina and Bickel's mean_i m̂_k(x_i), biased up by the factor (k-1)/(k-2).
        chunk: query rows per ``torch.cdist`` call (memory O(chunk · N)).

    Raises ValueError on duplicate points (zero nearest-neighbour distance).
    """
    _check_points(x, min_n=3)
    if average not in ("inverse", "estimate"):
        raise ValueError(f"average must be 'inverse' or 'estimate', got {average!r}")
    k1, k2 = _k_range(k, x.shape[-2])
    t = knn_distances(x, k2, chunk=chunk)
    ks = torch.arange(k1, k2 + 1, device=x.device)
    inv = _inverse_local(t, ks)  # (..., N, K): m̂_k(x_i)⁻¹
    per_k = 1.0 / inv.mean(dim=-2) if average == "inverse" else (1.0 / inv).mean(dim=-2)
    return per_k.mean(dim=-1)


def pca_spectrum(x: torch.Tensor) -> torch.Tensor:
    """Explained variance ratios r_j = s_j² / Σ_l s_l², descending, of ``x: (..., N, D)``.

    s are the singular values of the centred data; → ``(..., min(N, D))``, summing to one (as
    ``sklearn.decomposition.PCA().explained_variance_ratio_``). Needs N >= 2 and points that are
    not all equal.
    """
    _check_points(x)
    s2 = torch.linalg.svdvals(x - x.mean(dim=-2, keepdim=True)) ** 2
    total = s2.sum(dim=-1, keepdim=True)
    if bool((total <= 0).any()):
        raise ValueError("x has zero variance (all points equal): the spectrum is undefined")
    return s2 / total


def pca_dimension(x: torch.Tensor, threshold: float = 0.95) -> torch.Tensor:
    """Smallest n with Σ_{j<=n} r_j >= ``threshold`` ∈ (0, 1], for ``x: (..., N, D)`` → ``(...)``.

    The comparison allows a few units of rounding (16 eps · D), so that ``threshold = 1`` returns
    the rank of the centred data: exactly d for points spanning a d-dimensional affine subspace.
    Returns an int64 tensor.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) \
            or not 0 < threshold <= 1:
        raise ValueError(f"threshold must be a number in (0, 1], got {threshold!r}")
    r = pca_spectrum(x)
    slack = 16 * torch.finfo(r.dtype).eps * x.shape[-1]
    return 1 + (r.cumsum(dim=-1) < threshold - slack).sum(dim=-1)


def _frame(d: int, ambient_dim: int, g: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """A random ``(d, D)`` frame with orthonormal rows, Haar distributed (sign-fixed QR)."""
    q, r = torch.linalg.qr(torch.randn(ambient_dim, d, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    return q.T.to(dtype)


def _check_sampler(n: int, d: int, ambient_dim: int | None, seed: int, need: int) -> int:
    """Validate a sampler's arguments; ``need`` = D's minimum (and default) → the ambient D."""
    if not is_int(n) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not is_int(seed) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    ambient_dim = need if ambient_dim is None else ambient_dim
    if not is_int(ambient_dim) or ambient_dim < need:
        raise ValueError(f"ambient_dim must be an integer >= {need} for d = {d}, got "
                         f"{ambient_dim!r}")
    return ambient_dim


def _check_d(d: int) -> int:
    if not is_int(d) or d < 1:
        raise ValueError(f"d must be a positive integer, got {d!r}")
    return d


def sample_sphere(n: int, d: int, ambient_dim: int | None = None, seed: int = 0,
                  dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """n points uniform on the unit sphere S^d (dimension d) in a random (d+1)-subspace of R^D.

    z ~ N(0, I_{d+1}), u = z / ‖z‖ is uniform on S^d; x = u Q with Q a random orthonormal
    ``(d+1, D)`` frame, so ‖x‖ = 1 and the points span a (d+1)-dimensional linear subspace.
    ``ambient_dim`` defaults to d + 1. → ``(n, D)``; the same seed gives the same points.
    """
    ambient_dim = _check_sampler(n, d, ambient_dim, seed, need=_check_d(d) + 1)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d + 1, generator=g, dtype=torch.float64)
    u = z / z.norm(dim=1, keepdim=True)
    return (u @ _frame(d + 1, ambient_dim, g, torch.float64)).to(dtype)


def sample_torus(n: int, d: int, ambient_dim: int | None = None, seed: int = 0,
                 dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """n points uniform on the flat torus T^d = (S^1)^d (dimension d), curved into R^{2d} ⊂ R^D.

    θ ~ U[0, 2π)^d and x = (cos θ_1, sin θ_1, ..., cos θ_d, sin θ_d) / √d Q, Q a random
    orthonormal ``(2d, D)`` frame: a product of circles (the Clifford torus), intrinsically flat,
    with no boundary, of unit norm. Every one of its 2d linear directions carries the same
    variance 1/(2d), so PCA counts 2d while the manifold has dimension d.
    ``ambient_dim`` defaults to 2d. → ``(n, D)``.
    """
    ambient_dim = _check_sampler(n, d, ambient_dim, seed, need=2 * _check_d(d))
    g = torch.Generator().manual_seed(seed)
    theta = 2 * math.pi * torch.rand(n, d, generator=g, dtype=torch.float64)
    circles = torch.stack([theta.cos(), theta.sin()], dim=-1).reshape(n, 2 * d) / math.sqrt(d)
    return (circles @ _frame(2 * d, ambient_dim, g, torch.float64)).to(dtype)


def sample_subspace(n: int, d: int, ambient_dim: int, seed: int = 0,
                    dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """n points uniform on a d-cube [-1, 1]^d placed isometrically in a random affine d-subspace.

    x = c + u Q with u ~ U[-1, 1]^d, Q a random orthonormal ``(d, D)`` frame and c ~ N(0, I_D) a
    random offset: a flat d-dimensional manifold (with boundary) spanning exactly d directions.
    → ``(n, D)``.
    """
    if ambient_dim is None:
        raise ValueError("sample_subspace needs ambient_dim (an integer >= d)")
    _check_sampler(n, d, ambient_dim, seed, need=_check_d(d))
    g = torch.Generator().manual_seed(seed)
    u = 2 * torch.rand(n, d, generator=g, dtype=torch.float64) - 1
    frame = _frame(d, ambient_dim, g, torch.float64)
    offset = torch.randn(ambient_dim, generator=g, dtype=torch.float64)
    return (offset + u @ frame).to(dtype)


def sample_swiss_roll_3d(n: int, seed: int = 0, noise: float = 0.0,
                         dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """The swiss roll in R^3 (a 2-D sheet rolled up), ``sklearn.datasets.make_swiss_roll``.

    t = 1.5π (1 + 2u), u ~ U[0, 1), h ~ U[0, 21): x = (t cos t, h, t sin t) + noise · ε.
    Returns ``(x, coords)``: x ``(n, 3)`` and the unrolled coordinates ``coords = (t, h)``
    ``(n, 2)``, the manifold's own 2-D chart. ``noise`` >= 0 is the standard deviation of ε.
    """
    _check_sampler(n, 2, 3, seed, need=3)
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not noise >= 0:
        raise ValueError(f"noise must be a non-negative number, got {noise!r}")
    from sklearn.datasets import make_swiss_roll  # imported here: sklearn is slow to import

    x, t = make_swiss_roll(n, noise=0.0, random_state=seed)
    x, t = torch.from_numpy(x), torch.from_numpy(t)
    coords = torch.stack([t, x[:, 1]], dim=1)  # (t, h): the unrolled sheet
    g = torch.Generator().manual_seed(seed)
    x = x + noise * torch.randn(n, 3, generator=g, dtype=torch.float64)
    return x.to(dtype), coords.to(dtype)
