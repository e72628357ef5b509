"""Position encodings: attention is permutation-equivariant, so order must be put in by hand.

- **Sinusoidal** (Vaswani et al. 2017), added to the token embeddings:
  PE[t, 2i] = sin(t / base^{2i/d}), PE[t, 2i+1] = cos(t / base^{2i/d}), i = 0 … d/2 − 1.
  Fixed; each pair of dimensions is a clock of its own frequency, and PE[t + k] is a fixed
  rotation of PE[t] (a linear function of it), so relative offsets are easy to read off.
- **Learned** (GPT-2): one trained vector per position 0 … T_max − 1, added likewise.
- **Rotary** (RoPE, Su et al. 2021), applied to queries and keys inside attention: the pair
  (x_{2i}, x_{2i+1}) at position m is rotated by the angle m θ_i, θ_i = base^{−2i/d}. Rotations
  are orthogonal and compose, R(m)ᵀR(n) = R(n − m), so q_m · k_n = (R(m) q)ᵀ (R(n) k)
  = qᵀ R(n − m) k depends on the positions only through n − m. We rotate adjacent pairs
  (2i, 2i+1) as the paper does; GPT-NeoX and LLaMA's Hugging Face code rotate the halves
  (i, i + d/2) instead, a permutation of the same dimensions (the same model up to how q and k's
  weights are laid out).
"""

from __future__ import annotations

import torch
from torch import nn

from utils.validation import check_int, check_positive

__all__ = ["LearnedPositions", "RotaryEmbedding", "sinusoidal_positions"]


def _even_dim(d: object) -> int:
    d = check_int("d", d, minimum=2)
    if d % 2:
        raise ValueError(f"the width must be even (pairs of dimensions), got d = {d}")
    return d


def _frequencies(d: int, base: float) -> torch.Tensor:
    """θ_i = base^{−2i/d}, i = 0 … d/2 − 1: (d/2,) float64."""
    return base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)


def sinusoidal_positions(length: int, d: int, *, base: float = 10_000.0, start: int = 0,
                         dtype: torch.dtype = torch.float32,
                         device: torch.device | str | None = None) -> torch.Tensor:
    """PE (length, d) for positions start … start + length − 1 (computed in float64)."""
    length = check_int("length", length, minimum=1)
    d, base = _even_dim(d), check_positive("base", base)
    start = check_int("start", start, minimum=0)
    t = torch.arange(start, start + length, dtype=torch.float64)[:, None]
    angle = t * _frequencies(d, base)[None, :]                 # (length, d/2)
    pe = torch.stack([angle.sin(), angle.cos()], dim=-1).flatten(-2)  # interleave: 2i sin, 2i+1 cos
    return pe.to(device=device, dtype=dtype)


class LearnedPositions(nn.Module):
    """A trained vector per position: ``forward(length, start=0)`` -> (length, d)."""

    def __init__(self, max_length: int, d: int):
        super().__init__()
        self.max_length = check_int("max_length", max_length, minimum=1)
        self.weight = nn.Parameter(torch.randn(self.max_length, check_int("d", d, minimum=1))
                                   * 0.02)

    def forward(self, length: int, start: int = 0) -> torch.Tensor:
        if start + length > self.max_length:
            raise ValueError(f"positions {start} … {start + length - 1} exceed the "
                             f"{self.max_length} learned ones")
        return self.weight[start:start + length]


class RotaryEmbedding(nn.Module):
    """Rotary position embedding of width ``head_dim``: ``forward(x, start=0)`` rotates each pair
    (x_{2i}, x_{2i+1}) of x (..., T, head_dim) at position m = start + t by m θ_i:

        x'_{2i}   = x_{2i} cos(m θ_i) − x_{2i+1} sin(m θ_i)
        x'_{2i+1} = x_{2i} sin(m θ_i) + x_{2i+1} cos(m θ_i).

    The angles are computed in float64 and cast to x's dtype (no float64 reaches an MPS tensor).
    """

    def __init__(self, head_dim: int, *, base: float = 10_000.0):
        super().__init__()
        self.head_dim = _even_dim(head_dim)
        self.base = check_positive("base", base)

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        if x.shape[-1] != self.head_dim:
            raise ValueError(f"x must be (..., T, {self.head_dim}), got {tuple(x.shape)}")
        t = x.shape[-2]
        m = torch.arange(start, start + t, dtype=torch.float64)[:, None]
        angle = m * _frequencies(self.head_dim, self.base)[None, :]          # (T, d/2)
        cos = angle.cos().to(device=x.device, dtype=x.dtype)
        sin = angle.sin().to(device=x.device, dtype=x.dtype)
        x_even, x_odd = x[..., 0::2], x[..., 1::2]
        return torch.stack([x_even * cos - x_odd * sin, x_even * sin + x_odd * cos],
                           dim=-1).flatten(-2)
