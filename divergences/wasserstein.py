"""Wasserstein distances from samples (1-D, sliced, exact assignment) and between Gaussians.

The p-Wasserstein distance between μ and ν on R^D is

    W_p(μ, ν) = ( inf_{π ∈ Π(μ, ν)} E_{(x, y) ~ π} ‖x − y‖^p )^{1/p},   p ≥ 1,

the cheapest way to move the mass of μ onto ν when moving a unit of mass by d costs d^p.

- In 1-D the optimal plan is monotone, so W_p is the L^p distance between quantile functions:
  W_p^p = ∫_0^1 |F^{-1}(u) − G^{-1}(u)|^p du. For empirical distributions both quantile functions
  are step functions, and the integral is a finite sum over the merged steps (``wasserstein_1d``).
- Sliced: SW_p^p(μ, ν) = E_{θ ~ U(S^{D−1})} W_p^p(θ#μ, θ#ν), estimated by Monte Carlo over
  L random directions (``sliced_wasserstein``; ``projected_wasserstein`` for given directions).
  Projection is 1-Lipschitz, so every W_p(θ#μ, θ#ν) ≤ W_p(μ, ν), hence SW_p ≤ W_p.
- Two uniform clouds of n points each: an optimal plan is a permutation (Birkhoff), found by the
  Hungarian algorithm (``wasserstein_assignment``; scipy's ``linear_sum_assignment``).
- Gaussians (Bures, ``gaussian_w2``):
  W_2²(N(m1, S1), N(m2, S2)) = ‖m1 − m2‖² + tr(S1 + S2 − 2 (S1^{½} S2 S1^{½})^{½}).
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import numpy as np
import scipy.optimize
import torch

from utils.validation import check_int, shape_of

__all__ = [
    "Assignment",
    "gaussian_w2",
    "projected_wasserstein",
    "random_directions",
    "sliced_wasserstein",
    "wasserstein_1d",
    "wasserstein_assignment",
]


def _check_p(p: object) -> float:
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not math.isfinite(p) or p < 1:
        raise ValueError(f"p must be a finite number >= 1, got {p!r}")
    return float(p)


def _check_float(name: str, t: object, min_ndim: int) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or not t.dtype.is_floating_point or t.ndim < min_ndim:
        raise ValueError(f"{name} must be a float tensor with at least {min_ndim} dimension(s), "
                         f"got {shape_of(t)}" + (f" of dtype {t.dtype}"
                                                 if isinstance(t, torch.Tensor) else ""))
    return t


def _wp_pow_1d(x: torch.Tensor, y: torch.Tensor, p: float) -> torch.Tensor:
    """W_p^p between the empirical distributions of x: (..., N) and y: (..., M) → (...).

    Sorted samples are the quantile functions: F^{-1}(u) = x_(i) for u ∈ ((i−1)/N, i/N].
    The merged breakpoints u_k of {i/N} ∪ {j/M} cut (0, 1] into intervals on which both are
    constant; W_p^p = Σ_k (u_k − u_{k−1}) |x_(i_k) − y_(j_k)|^p.
    """
    n, m = x.shape[-1], y.shape[-1]
    xs, ys = x.sort(dim=-1).values, y.sort(dim=-1).values
    if n == m:  # the breakpoints coincide: the sorted matching
        return (xs - ys).abs().pow(p).mean(-1)
    f64 = dict(dtype=torch.float64, device=x.device)
    u = torch.cat([torch.arange(1, n + 1, **f64) / n, torch.arange(1, m + 1, **f64) / m])
    u = u.sort().values                                   # (N + M,) breakpoints, last = 1
    du = torch.diff(u, prepend=u.new_zeros(1))            # interval widths, sum to 1
    mid = u - du / 2                                      # a point inside each interval
    i = (mid * n).floor().long().clamp(max=n - 1)         # F^{-1}(mid) = xs[i]
    j = (mid * m).floor().long().clamp(max=m - 1)
    gap = xs[..., i] - ys[..., j]
    return (du.to(x.dtype) * gap.abs().pow(p)).sum(-1)


def wasserstein_1d(x: torch.Tensor, y: torch.Tensor, p: float = 1) -> torch.Tensor:
    """W_p between the empirical distributions of 1-D samples ``x: (..., N)``, ``y: (..., M)``.

    W_p^p = ∫_0^1 |F^{-1}(u) − G^{-1}(u)|^p du with the empirical quantile functions (sorted
    samples); N and M may differ. Leading dimensions are a batch (they must match). Returns
    ``(...)``, a 0-d tensor for 1-D inputs; differentiable in x and y (away from W = 0 for p > 1).
    """
    p = _check_p(p)
    x, y = _check_float("x", x, 1), _check_float("y", y, 1)
    if x.shape[:-1] != y.shape[:-1] or x.shape[-1] < 1 or y.shape[-1] < 1:
        raise ValueError(f"x: (..., N) and y: (..., M) need N, M >= 1 and the same leading "
                         f"dimensions, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.dtype != y.dtype or x.device != y.device:
        raise ValueError(f"x and y must share dtype and device, got {x.dtype}/{x.device} and "
                         f"{y.dtype}/{y.device}")
    return _wp_pow_1d(x, y, p).pow(1 / p)


def _check_clouds(x: object, y: object) -> tuple[torch.Tensor, torch.Tensor]:
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, torch.Tensor) or not t.dtype.is_floating_point or t.ndim != 2 \
                or t.shape[0] < 1 or t.shape[1] < 1:
            raise ValueError(f"{name} must be a float tensor of shape (n, D) with n, D >= 1, "
                             f"got {shape_of(t)}")
    if x.shape[1] != y.shape[1] or x.dtype != y.dtype or x.device != y.device:
        raise ValueError(f"x: (N, D) and y: (M, D) must share D, dtype and device, got "
                         f"{tuple(x.shape)} {x.dtype} {x.device} and "
                         f"{tuple(y.shape)} {y.dtype} {y.device}")
    return x, y


def random_directions(n_projections: int, dim: int, *, generator: torch.Generator | None = None,
                      dtype: torch.dtype = torch.float32,
                      device: torch.device | str | None = None) -> torch.Tensor:
    """``(L, D)`` directions θ_l uniform on the unit sphere S^{D−1} (normalised Gaussians).

    Drawn on the generator's device (the CPU without one), then moved to ``device``.
    """
    n_projections = check_int("n_projections", n_projections, minimum=1)
    dim = check_int("dim", dim, minimum=1)
    where = generator.device if generator is not None else "cpu"
    g = torch.randn(n_projections, dim, generator=generator, dtype=dtype, device=where)
    return (g / g.norm(dim=1, keepdim=True)).to(device if device is not None else where)


def projected_wasserstein(x: torch.Tensor, y: torch.Tensor, directions: torch.Tensor,
                          p: float = 2) -> torch.Tensor:
    """``(L,)``: W_p(θ_l#μ, θ_l#ν) for the empirical μ of ``x: (N, D)``, ν of ``y: (M, D)``
    and each row θ_l of ``directions: (L, D)`` (unit vectors)."""
    p = _check_p(p)
    x, y = _check_clouds(x, y)
    if not isinstance(directions, torch.Tensor) or directions.ndim != 2 \
            or directions.shape[1] != x.shape[1] or directions.shape[0] < 1:
        raise ValueError(f"directions must be a tensor of shape (L, {x.shape[1]}) with L >= 1, "
                         f"got {shape_of(directions)}")
    theta = directions.to(x)
    norms = theta.norm(dim=1)
    if not torch.allclose(norms, torch.ones_like(norms), atol=1e-4):
        raise ValueError("directions must be unit vectors (rows of norm 1)")
    return _wp_pow_1d(theta @ x.T, theta @ y.T, p).pow(1 / p)    # (L, N), (L, M) → (L,)


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, n_projections: int, p: float = 2, *,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Monte Carlo sliced Wasserstein between point clouds ``x: (N, D)`` and ``y: (M, D)``.

    SW_p ≈ ( (1/L) Σ_l W_p^p(θ_l#μ, θ_l#ν) )^{1/p}, θ_l ~ U(S^{D−1}), L = ``n_projections``.
    The average of W_p^p is unbiased for SW_p^p, with standard error sd_θ(W_p^p(θ)) / √L.
    Each term is ≤ W_p^p(μ, ν), so the estimate never exceeds W_p(μ, ν). Returns a 0-d tensor.
    """
    p = _check_p(p)
    x, y = _check_clouds(x, y)
    theta = random_directions(n_projections, x.shape[1], generator=generator, dtype=x.dtype,
                              device=x.device)
    return projected_wasserstein(x, y, theta, p).pow(p).mean().pow(1 / p)


class Assignment(NamedTuple):
    """Exact OT between two uniform clouds of n points: ``distance`` W_p (0-d tensor,
    differentiable in x and y) and ``perm`` (n,) with x_i sent to y_perm[i]."""

    distance: torch.Tensor
    perm: torch.Tensor


def wasserstein_assignment(x: torch.Tensor, y: torch.Tensor, p: float = 2) -> Assignment:
    """Exact W_p between the uniform empirical distributions of ``x: (n, D)`` and ``y: (n, D)``.

    With equal sizes and weights an optimal plan is a permutation σ (Birkhoff–von Neumann), so
    W_p^p = min_σ (1/n) Σ_i ‖x_i − y_σ(i)‖^p, solved exactly by the Hungarian algorithm on the
    (n, n) cost matrix. The distance is recomputed from the matched pairs in torch, so its
    gradient is the envelope-theorem gradient at the optimal σ.
    """
    p = _check_p(p)
    x, y = _check_clouds(x, y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same number of points, got {x.shape[0]} and "
                         f"{y.shape[0]}")
    with torch.no_grad():
        cost = torch.cdist(x.double(), y.double(), compute_mode="donot_use_mm_for_euclid_dist")
        cost = cost.pow(p).cpu().numpy()
    _, col = scipy.optimize.linear_sum_assignment(cost)
    perm = torch.as_tensor(np.asarray(col), dtype=torch.long, device=x.device)
    d = (x - y[perm]).norm(dim=1)
    return Assignment(d.pow(p).mean().pow(1 / p), perm)


def _check_gaussian(name: str, m: object, s: object) -> None:
    if not isinstance(m, torch.Tensor) or not m.dtype.is_floating_point or m.ndim < 1:
        raise ValueError(f"{name}: the mean must be a float tensor of shape (..., D), "
                         f"got {shape_of(m)}")
    d = m.shape[-1]
    if not isinstance(s, torch.Tensor) or s.shape != (*m.shape, d) or s.dtype != m.dtype:
        raise ValueError(f"{name}: the covariance must be a {m.dtype} tensor of shape "
                         f"{(*m.shape, d)}, got {shape_of(s)}")
    scale = s.abs().amax(dim=(-2, -1)).clamp(min=1.0)
    tol = 100 * torch.finfo(s.dtype).eps * scale
    if not ((s - s.mT).abs().amax(dim=(-2, -1)) <= tol).all():
        raise ValueError(f"{name}: the covariance must be symmetric")
    with torch.no_grad():
        low = torch.linalg.eigvalsh(s).amin(-1)
    if not (low >= -1e3 * tol).all():
        raise ValueError(f"{name}: the covariance must be positive semi-definite, smallest "
                         f"eigenvalue {low.min().item():.3g}")


def _factor(s: torch.Tensor) -> torch.Tensor:
    """A with A Aᵀ = s: the Cholesky factor if s is positive definite, else the symmetric
    square root V diag(√λ) Vᵀ (for singular s)."""
    chol, info = torch.linalg.cholesky_ex(s)
    if bool((info == 0).all()):
        return chol
    lam, v = torch.linalg.eigh(s)
    return v * lam.clamp(min=0).sqrt().unsqueeze(-2) @ v.mT


def gaussian_w2(m1: torch.Tensor, S1: torch.Tensor, m2: torch.Tensor,
                S2: torch.Tensor) -> torch.Tensor:
    """W_2 between N(m1, S1) and N(m2, S2): means ``(..., D)``, covariances ``(..., D, D)``
    symmetric positive semi-definite → ``(...)``.

        W_2² = ‖m1 − m2‖² + tr S1 + tr S2 − 2 tr (S1^{½} S2 S1^{½})^{½}   (the Bures metric).

    tr (S1^{½} S2 S1^{½})^{½} = Σ_i √λ_i(Aᵀ S2 A) for any A with A Aᵀ = S1, because Aᵀ S2 A
    is symmetric PSD and has the eigenvalues of S2 S1 (the same as S1^{½} S2 S1^{½}); only
    eigenvalues are needed, so gradients exist even when eigenvalues repeat.
    """
    _check_gaussian("(m1, S1)", m1, S1)
    _check_gaussian("(m2, S2)", m2, S2)
    if m1.shape != m2.shape or m1.dtype != m2.dtype or m1.device != m2.device:
        raise ValueError(f"the two Gaussians must share shape, dtype and device, got "
                         f"{tuple(m1.shape)} {m1.dtype} and {tuple(m2.shape)} {m2.dtype}")
    a = _factor(S1)
    lam = torch.linalg.eigvalsh(a.mT @ S2 @ a)
    cross = lam.clamp(min=0).sqrt().sum(-1)
    trace = S1.diagonal(dim1=-2, dim2=-1).sum(-1) + S2.diagonal(dim1=-2, dim2=-1).sum(-1)
    w2_sq = (m1 - m2).pow(2).sum(-1) + trace - 2 * cross
    return w2_sq.clamp(min=0).sqrt()
