"""Figures every part shares: image grids, 2-D scatter and density contours, training curves.

Every function draws on ``ax`` (a new figure when ``ax`` is None), gives the axes a title and
labels, and returns the ``Axes`` so a notebook can add to it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes

__all__ = ["density_contours", "image_grid", "scatter2d", "training_curves"]


def _axes(ax: Axes | None, figsize: tuple[float, float] = (4.5, 4.5)) -> Axes:
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def _points(x: torch.Tensor | np.ndarray, name: str = "x") -> np.ndarray:
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"{name} must have shape (N, 2), got {x.shape}")
    return x


def image_grid(images: torch.Tensor, nrow: int | None = None, *, title: str = "",
               value_range: tuple[float, float] = (-1.0, 1.0), ax: Axes | None = None,
               padding: int = 1) -> Axes:
    """Show a batch of images as one grid.

    Args:
        images: (B, C, H, W) with C = 1 (grey) or 3 (RGB), values in ``value_range``.
        nrow: images per row (default: about √B).
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
        shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise ValueError(f"images must be a tensor of shape (B, 1 or 3, H, W), got {shape}")
    lo, hi = value_range
    if not hi > lo:
        raise ValueError(f"value_range must be increasing, got {value_range}")
    b, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(b))
    if nrow < 1:
        raise ValueError(f"nrow must be positive, got {nrow}")
    ncol_rows = math.ceil(b / nrow)
    x = ((images.detach().cpu().float() - lo) / (hi - lo)).clamp(0, 1)
    grid = torch.ones(c, ncol_rows * (h + padding) + padding, nrow * (w + padding) + padding)
    for i in range(b):
        r, k = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + k * (w + padding)
        grid[:, top:top + h, left:left + w] = x[i]
    ax = _axes(ax, figsize=(0.6 * nrow + 1, 0.6 * ncol_rows + 1))
    if c == 1:
        ax.imshow(grid[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(f"{b} images, {h}×{w}")
    return ax


def scatter2d(x: torch.Tensor | np.ndarray, *, title: str = "", ax: Axes | None = None,
              label: str | None = None, s: float = 2.0, alpha: float = 0.5,
              color: str | None = None, lim: float | None = None) -> Axes:
    """Scatter plot of 2-D points ``x: (N, 2)``; ``lim`` sets both axes to ``[-lim, lim]``."""
    x = _points(x)
    ax = _axes(ax)
    ax.scatter(x[:, 0], x[:, 1], s=s, alpha=alpha, label=label, color=color, linewidths=0)
    if lim is not None:
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_title(title)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    if label is not None:
        ax.legend(loc="upper right", markerscale=4)
    return ax


@torch.no_grad()
def density_contours(log_prob: Callable[[torch.Tensor], torch.Tensor],
                     xlim: tuple[float, float] = (-4.0, 4.0),
                     ylim: tuple[float, float] | None = None, *,
                     data: torch.Tensor | np.ndarray | None = None, title: str = "",
                     ax: Axes | None = None, n_grid: int = 200, levels: int = 12,
                     log_scale: bool = False) -> Axes:
    """Filled contours of a 2-D density ``p(x) = exp(log_prob(x))`` with the data on top.

    ``log_prob`` maps (N, 2) float32 points to (N,) log-densities. With ``log_scale`` the contours
    are of log p (clipped 12 nats below its maximum), which shows the tails.
    """
    ylim = ylim if ylim is not None else xlim
    if not (xlim[1] > xlim[0] and ylim[1] > ylim[0]):
        raise ValueError(f"limits must be increasing, got xlim={xlim}, ylim={ylim}")
    if n_grid < 2:
        raise ValueError(f"n_grid must be at least 2, got {n_grid}")
    gx = torch.linspace(*xlim, n_grid)
    gy = torch.linspace(*ylim, n_grid)
    xx, yy = torch.meshgrid(gx, gy, indexing="xy")
    grid = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)
    lp = log_prob(grid).detach().cpu().double()
    if lp.shape != (n_grid * n_grid,):
        raise ValueError(f"log_prob must return one value per point, got shape {tuple(lp.shape)}")
    lp = lp.reshape(n_grid, n_grid)
    z = lp.clamp(min=lp.max() - 12.0) if log_scale else lp.exp()
    ax = _axes(ax)
    cs = ax.contourf(xx.numpy(), yy.numpy(), z.numpy(), levels=levels, cmap="viridis")
    plt.colorbar(cs, ax=ax, fraction=0.046, pad=0.04, label="log p(x)" if log_scale else "p(x)")
    if data is not None:
        d = _points(data, "data")
        ax.scatter(d[:, 0], d[:, 1], s=1.0, c="white", alpha=0.35, linewidths=0)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal")
    ax.set_title(title)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    return ax


def training_curves(history: Mapping[str, Sequence[float]], keys: Sequence[str] | None = None, *,
                    title: str = "Training curves", ax: Axes | None = None, smooth: int = 1,
                    logy: bool = False, ylabel: str = "value") -> Axes:
    """Plot metrics from :func:`utils.training.fit`'s history against the step.

    ``smooth`` is the width of a trailing moving average (1 = raw values); NaN entries (steps
    where a metric was not reported) are skipped.
    """
    if "step" not in history:
        raise ValueError("history must have a 'step' entry, as utils.training.fit returns")
    keys = list(keys) if keys is not None else [k for k in history if k != "step"]
    missing = [k for k in keys if k not in history]
    if missing:
        raise ValueError(f"unknown metrics {missing}; history has {sorted(history)}")
    if smooth < 1:
        raise ValueError(f"smooth must be at least 1, got {smooth}")
    ax = _axes(ax, figsize=(6, 3.5))
    steps = np.asarray(history["step"], dtype=float)
    for k in keys:
        v = np.asarray(history[k], dtype=float)
        ok = np.isfinite(v)
        s, v = steps[ok], v[ok]
        if smooth > 1 and len(v) >= smooth:
            v = np.convolve(v, np.ones(smooth) / smooth, mode="valid")
            s = s[smooth - 1:]
        ax.plot(s, v, label=k)
    if logy:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    if keys:
        ax.legend()
    return ax
