"""Two-sample statistics: is a set of samples drawn from the same distribution as another?
(06_score_and_tweedie checks Langevin samples with them).

Maximum mean discrepancy with the Gaussian kernel k(a, b) = exp(-‖a - b‖² / (2 h²)) (Gretton et
al. 2012). For x: (M, D) ~ P and y: (N, D) ~ Q the unbiased estimate (a U-statistic) is

    MMD²_u = 1/(M(M-1)) Σ_{i≠j} k(x_i, x_j) + 1/(N(N-1)) Σ_{i≠j} k(y_i, y_j)
             - 2/(MN) Σ_{i,j} k(x_i, y_j),

whose expectation is MMD²(P, Q) = E k(x, x') + E k(y, y') - 2 E k(x, y), zero iff P = Q (the
Gaussian kernel is characteristic). It can be slightly negative when P = Q.

Bandwidth: the median heuristic, h = the median Euclidean distance between the pooled points.

Permutation test: under H0 (P = Q) the M + N pooled points are exchangeable, so re-splitting them
at random gives draws T_1..T_B of the statistic's null distribution, and

    p = (1 + #{b : T_b ≥ T}) / (1 + B)

satisfies P(p ≤ α) ≤ α exactly for every α (it is exactly α when α(B + 1) is an integer).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm import tqdm

from utils.validation import check_positive

__all__ = ["PermutationTest", "gaussian_kernel", "median_heuristic", "mmd2", "mmd2_from_kernels",
           "permutation_test"]


def _check_samples(x: object, y: object, min_n: int = 2) -> None:
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, torch.Tensor) or not t.dtype.is_floating_point or t.ndim != 2 \
                or t.shape[0] < min_n:
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a float tensor of shape (n, D) with n >= {min_n}, "
                             f"got {got}")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension D, got {x.shape[1]} and "
                         f"{y.shape[1]}")


def gaussian_kernel(x: torch.Tensor, y: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """k(x_i, y_j) = exp(-‖x_i - y_j‖² / (2 h²)) for ``x: (M, D)``, ``y: (N, D)`` → ``(M, N)``.

    Distances are computed directly (not by the ‖a‖² + ‖b‖² - 2⟨a, b⟩ expansion), so k(a, a) = 1
    exactly.
    """
    _check_samples(x, y, min_n=1)
    h = check_positive("bandwidth", bandwidth)
    d = torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist")
    return torch.exp(-d.pow(2) / (2 * h * h))


def median_heuristic(x: torch.Tensor, y: torch.Tensor) -> float:
    """The median of the Euclidean distances ‖z_i - z_j‖, i < j, over the pooled z = (x, y).

    It depends on the pooled set only, not on which points came from x, so a permutation test
    that uses it stays exact. (The lower median when the number of pairs is even.)
    """
    _check_samples(x, y, min_n=1)
    z = torch.cat([x, y])
    if len(z) < 2:
        raise ValueError("the median heuristic needs at least two pooled points")
    h = float(torch.nn.functional.pdist(z).median())
    if not h > 0:
        raise ValueError("the median pairwise distance is zero (more than half the pairs are "
                         "identical points); give a bandwidth")
    return h


def mmd2(x: torch.Tensor, y: torch.Tensor, bandwidth: float | None = None) -> torch.Tensor:
    """The unbiased MMD²_u between ``x: (M, D)`` and ``y: (N, D)`` (M, N ≥ 2), a 0-d tensor.

    ``bandwidth`` h of the Gaussian kernel; ``None`` takes the median heuristic on the pooled
    points. Differentiable with respect to x and y.
    """
    _check_samples(x, y)
    h = median_heuristic(x, y) if bandwidth is None else check_positive("bandwidth", bandwidth)
    return mmd2_from_kernels(gaussian_kernel(x, x, h), gaussian_kernel(y, y, h),
                             gaussian_kernel(x, y, h))


def mmd2_from_kernels(k_xx: torch.Tensor, k_yy: torch.Tensor, k_xy: torch.Tensor) -> torch.Tensor:
    """The unbiased MMD²_u from kernel matrices ``k_xx: (M, M)``, ``k_yy: (N, N)``, ``k_xy: (M, N)``
    (M, N ≥ 2) for any kernel: the U-statistic above (diagonals of k_xx and k_yy left out). A 0-d
    tensor, differentiable. ``evaluation.kid`` calls it with a polynomial kernel.
    """
    ok = all(isinstance(k, torch.Tensor) and k.ndim == 2 for k in (k_xx, k_yy, k_xy))
    if not ok or k_xx.shape[0] != k_xx.shape[1] or k_yy.shape[0] != k_yy.shape[1] \
            or k_xy.shape != (k_xx.shape[0], k_yy.shape[0]) or min(k_xy.shape) < 2:
        got = [tuple(k.shape) if isinstance(k, torch.Tensor) else type(k).__name__
               for k in (k_xx, k_yy, k_xy)]
        raise ValueError(f"expected kernel matrices k_xx (M, M), k_yy (N, N), k_xy (M, N) with "
                         f"M, N >= 2, got {got}")
    m, n = k_xy.shape
    s_xx = k_xx.sum() - k_xx.diagonal().sum()  # Σ_{i≠j}
    s_yy = k_yy.sum() - k_yy.diagonal().sum()
    return s_xx / (m * (m - 1)) + s_yy / (n * (n - 1)) - 2 * k_xy.sum() / (m * n)


@dataclass
class PermutationTest:
    """The result of :func:`permutation_test`.

    ``statistic`` is T on the given split, ``null`` the B values T_b on random re-splits
    ``(B,)``, ``p_value`` = (1 + #{T_b ≥ T}) / (1 + B), ``bandwidth`` the kernel's h (MMD only).
    """

    statistic: float
    p_value: float
    null: torch.Tensor
    bandwidth: float | None = None

    def threshold(self, alpha: float) -> float:
        """The critical value t of the level-α test: reject H0 iff T > t (iff p ≤ α).

        With B null draws, p ≤ α iff at most k = ⌊α(B + 1)⌋ - 1 of them are ≥ T, i.e. iff T
        exceeds the (k + 1)-th largest; ``inf`` when k < 0 (B too small for level α).
        """
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
        b = len(self.null)
        k = math.floor(alpha * (b + 1) + 1e-9) - 1
        if k < 0:
            return math.inf
        return float(torch.sort(self.null, descending=True).values[k])

    def reject(self, alpha: float) -> bool:
        """Whether H0 (same distribution) is rejected at level α: p ≤ α."""
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
        return self.p_value <= alpha + 1e-12


def permutation_test(x: torch.Tensor, y: torch.Tensor,
                     statistic: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                     n_permutations: int = 200, *, generator: torch.Generator | None = None,
                     bandwidth: float | None = None, progress: bool = False) -> PermutationTest:
    """Permutation test of H0: ``x: (M, D)`` and ``y: (N, D)`` come from the same distribution.

    ``statistic(x, y)`` (larger = more different) defaults to :func:`mmd2` with one bandwidth
    for all re-splits (``bandwidth``, or the median heuristic of the pooled points); that default
    is vectorised: the pooled kernel matrix K is computed once, and for a split with indicator u
    (1 on the x part) Σ_{i≠j∈x} k = uᵀK₀u, Σ_{i≠j∈y} k = (1-u)ᵀK₀(1-u), Σ_{x,y} k = uᵀK₀(1-u),
    K₀ = K with its diagonal zeroed. Re-split b uses ``torch.randperm(M + N, generator)``, its
    first M indices being the new x, in both code paths. ``progress``: a tqdm bar (custom
    statistics only).
    """
    _check_samples(x, y)
    if isinstance(n_permutations, bool) or not isinstance(n_permutations, int) \
            or n_permutations < 1:
        raise ValueError(f"n_permutations must be a positive integer, got {n_permutations!r}")
    m, n = len(x), len(y)
    z = torch.cat([x, y]).detach()
    perms = [torch.randperm(m + n, generator=generator, device=z.device)
             for _ in range(n_permutations)]
    if statistic is not None:
        if bandwidth is not None:
            raise ValueError("bandwidth applies to the default MMD statistic only")
        t_obs = float(statistic(x.detach(), y.detach()))
        null = torch.tensor([float(statistic(z[p[:m]], z[p[m:]]))
                             for p in tqdm(perms, desc="permutations", disable=not progress,
                                           mininterval=1.0, dynamic_ncols=True)],
                            dtype=torch.float64)
        h = None
    else:
        h = median_heuristic(x, y) if bandwidth is None else check_positive("bandwidth", bandwidth)
        k0 = gaussian_kernel(z, z, h)
        k0.fill_diagonal_(0.0)
        u = torch.zeros(m + n, n_permutations + 1, dtype=z.dtype, device=z.device)
        u[:m, 0] = 1.0  # column 0: the observed split
        for b, p in enumerate(perms, start=1):
            u[p[:m], b] = 1.0
        row = k0.sum(1)                   # K₀ 1
        total = row.sum()                 # 1ᵀ K₀ 1
        q = (u * (k0 @ u)).sum(0)         # uᵀ K₀ u = Σ_{i≠j ∈ x}
        lin = row @ u                     # 1ᵀ K₀ u
        s_xx, s_xy = q, lin - q
        s_yy = total - 2 * lin + q
        t = s_xx / (m * (m - 1)) + s_yy / (n * (n - 1)) - 2 * s_xy / (m * n)
        t = t.double().cpu()
        t_obs, null = float(t[0]), t[1:]
    p_value = (1 + int((null >= t_obs).sum())) / (1 + n_permutations)
    return PermutationTest(statistic=t_obs, p_value=p_value, null=null, bandwidth=h)
