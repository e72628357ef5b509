"""Nonparametric density estimates, the histogram and the kernel density estimate (KDE).

Histogram with equal bins of side w = (high - low) / b along each of D axes (b^D cells):

    p̂(x) = #{i : x_i in cell(x)} / (N w^D)           (zero outside [low, high)^D)

Gaussian KDE with bandwidths h: (D,) (a diagonal kernel N(0, diag h²)):

    p̂(x) = (1/N) Σ_i N(x; x_i, diag h²),   log p̂(x) = logsumexp_i log N(x; x_i, diag h²) - log N

Scott's rule picks h_j = σ̂_j N^{-1/(D+4)}. Both estimates need the number of samples to grow
exponentially with D to keep their error fixed: the curse of dimensionality that
``01_probability_and_density_modeling`` measures.
"""

from __future__ import annotations

import math

import torch

from utils.validation import check_int

__all__ = ["histogram_log_prob", "kde_log_prob", "scott_bandwidth"]


def _check_pair(x: torch.Tensor, data: torch.Tensor) -> None:
    if not isinstance(data, torch.Tensor) or data.ndim != 2 or data.shape[0] < 1:
        raise ValueError(f"data must be a tensor of shape (N, D) with N >= 1, got "
                         f"{tuple(data.shape) if isinstance(data, torch.Tensor) else data!r}")
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != data.shape[1]:
        raise ValueError(f"x must be a tensor of shape (M, {data.shape[1]}), got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else x!r}")


def scott_bandwidth(data: torch.Tensor) -> torch.Tensor:
    """Scott's rule h_j = σ̂_j N^{-1/(D+4)} for ``data: (N, D)`` with N >= 2 → ``(D,)``."""
    if not isinstance(data, torch.Tensor) or data.ndim != 2 or data.shape[0] < 2:
        raise ValueError("data must be a tensor of shape (N, D) with N >= 2")
    n, d = data.shape
    return data.std(0) * n ** (-1.0 / (d + 4))


def kde_log_prob(x: torch.Tensor, data: torch.Tensor, bandwidth: torch.Tensor | float,
                 chunk: int = 1024) -> torch.Tensor:
    """log p̂(x) of the Gaussian KDE on ``data: (N, D)`` at ``x: (M, D)`` → ``(M,)``.

    ``bandwidth``: a positive scalar or ``(D,)``. Computed by log-sum-exp in chunks of ``chunk``
    query points, so it stays finite far from the data and memory stays O(chunk · N).
    """
    _check_pair(x, data)
    n, d = data.shape
    h = torch.as_tensor(bandwidth, dtype=data.dtype, device=data.device)
    if h.ndim == 0:
        h = h.expand(d)
    if h.shape != (d,) or not bool(torch.all(h > 0)):
        raise ValueError(f"bandwidth must be positive, a scalar or of shape ({d},), got {h}")
    log_norm = h.log().sum() + 0.5 * d * math.log(2 * math.pi) + math.log(n)
    out = []
    for xc in x.split(chunk):
        sq = (((xc[:, None, :] - data[None, :, :]) / h) ** 2).sum(-1)  # (m, N)
        out.append(torch.logsumexp(-0.5 * sq, dim=1) - log_norm)
    return torch.cat(out)


def histogram_log_prob(x: torch.Tensor, data: torch.Tensor, bins: int, low: float,
                       high: float) -> torch.Tensor:
    """log p̂(x) of the histogram of ``data: (N, D)`` with ``bins`` equal bins per axis on
    ``[low, high)``, at ``x: (M, D)`` → ``(M,)``; ``-inf`` in empty cells and outside the range.

    Only occupied cells are stored (sorted cell indices and counts), so b^D may far exceed memory.
    """
    _check_pair(x, data)
    bins = check_int("bins", bins, minimum=1)
    if not high > low:
        raise ValueError(f"need low < high, got low={low}, high={high}")
    n, d = data.shape
    if d * math.log(bins) >= 62 * math.log(2):
        raise ValueError(f"bins^D = {bins}^{d} cells do not fit a 64-bit cell index")
    w = (high - low) / bins

    def cell(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ij = torch.floor((p - low) / w).long()
        inside = ((ij >= 0) & (ij < bins)).all(1)
        radix = bins ** torch.arange(d, device=p.device)
        return (ij.clamp(0, bins - 1) * radix).sum(1), inside

    data_cell, data_inside = cell(data)
    cells, counts = torch.unique(data_cell[data_inside], return_counts=True)  # sorted
    x_cell, x_inside = cell(x)
    pos = torch.searchsorted(cells, x_cell).clamp(max=max(len(cells) - 1, 0))
    found = x_inside & (cells[pos] == x_cell) if len(cells) else torch.zeros_like(x_inside)
    count = torch.where(found, counts[pos] if len(cells) else 0, 0).to(data.dtype)
    return count.log() - math.log(n) - d * math.log(w)
