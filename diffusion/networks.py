"""Denoisers ε_θ(x_t, t[, c]): an MLP for 2-D data and a small UNet for images (02, 03, 06).

The timestep enters through the sinusoidal embedding of the Transformer (Vaswani et al. 2017),
as in DDPM: for an embedding of even size D and frequencies ω_i = 10000^{−i/(D/2)},

    emb(t) = [sin(ω_0 t), …, sin(ω_{D/2−1} t), cos(ω_0 t), …, cos(ω_{D/2−1} t)],

followed by an MLP. A condition c (class or caption, :mod:`diffusion.conditioning`) adds its
embedding e(c) to the time embedding.

The UNet (Ronneberger et al. 2015, in the DDPM variant): residual blocks (GroupNorm, SiLU,
3×3 conv, the time embedding added per channel, GroupNorm, SiLU, 3×3 conv, a 1×1 skip), one
block per level and a stride-2 downsampling between levels; self-attention at the coarsest
level; the up path mirrors it with skip connections concatenated.

Shapes: x_t ``(B, dim)`` (MLP) or ``(B, C, H, W)`` (UNet, H = W divisible by 2^(levels−1));
t int64 ``(B,)``; c int64 ``(B,)`` or ``(B, L)``; the output has x_t's shape.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from diffusion.conditioning import ConditionEmbedding
from utils.validation import check_int, shape_of

__all__ = ["MLPDenoiser", "UNet", "sinusoidal_embedding"]


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """emb(t) ``(B, dim)`` for t ``(B,)`` (ints or floats), ``dim`` even (see the module)."""
    dim = check_int("dim", dim, minimum=2)
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    if not isinstance(t, torch.Tensor) or t.ndim != 1:
        raise ValueError(f"t must be a tensor of shape (B,), got {shape_of(t)}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=1)


class _TimeConditioned(nn.Module):
    """The embedding of (t, c) shared by both denoisers: ``(B, emb_dim)``."""

    def _init_embedding(self, emb_dim: int, num_classes: int | None,
                        vocab_size: int | None) -> None:
        self.emb_dim = emb_dim
        self.time_mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(),
                                      nn.Linear(emb_dim, emb_dim))
        self.cond = None if num_classes is None and vocab_size is None else \
            ConditionEmbedding(emb_dim, num_classes=num_classes, vocab_size=vocab_size)

    @property
    def null_value(self) -> int | None:
        """The condition value meaning ∅ (None for an unconditional denoiser)."""
        return None if self.cond is None else self.cond.null_value

    def _embed(self, t: torch.Tensor, c: torch.Tensor | None, batch: int,
               dtype: torch.dtype) -> torch.Tensor:
        if not isinstance(t, torch.Tensor) or t.dtype != torch.int64 or t.shape != (batch,):
            raise ValueError(f"t must be an int64 tensor of shape ({batch},), got {shape_of(t)}")
        e = self.time_mlp(sinusoidal_embedding(t, self.emb_dim).to(dtype))
        if self.cond is None:
            if c is not None:
                raise ValueError("this denoiser is unconditional: pass no condition")
            return e
        if c is None:
            raise ValueError("this denoiser is conditional: pass c (use null_value for none)")
        if c.shape[0] != batch:
            raise ValueError(f"c must have {batch} rows, got {tuple(c.shape)}")
        return e + self.cond(c).to(dtype)


class MLPDenoiser(_TimeConditioned):
    """ε_θ(x_t, t[, c]) for points ``(B, dim)``: [x_t, emb(t, c)] → ``depth`` SiLU layers of
    ``hidden`` units → ``(B, dim)``."""

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3, emb_dim: int = 64, *,
                 num_classes: int | None = None, vocab_size: int | None = None):
        super().__init__()
        self.dim = check_int("dim", dim, minimum=1)
        hidden, depth = check_int("hidden", hidden, minimum=1), check_int("depth", depth, minimum=1)
        self._init_embedding(check_int("emb_dim", emb_dim, minimum=2), num_classes, vocab_size)
        layers: list[nn.Module] = []
        width = self.dim + emb_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        self.net = nn.Sequential(*layers, nn.Linear(width, self.dim))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor,
                c: torch.Tensor | None = None) -> torch.Tensor:
        if not isinstance(x_t, torch.Tensor) or x_t.ndim != 2 or x_t.shape[1] != self.dim:
            raise ValueError(f"x_t must have shape (B, {self.dim}), got {shape_of(x_t)}")
        return self.net(torch.cat([x_t, self._embed(t, c, x_t.shape[0], x_t.dtype)], dim=1))


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, c), c)


class _ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int):
        super().__init__()
        self.block1 = nn.Sequential(_norm(c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1))
        self.emb = nn.Linear(emb_dim, c_out)
        self.block2 = nn.Sequential(_norm(c_out), nn.SiLU(), nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        h = self.block1(x) + self.emb(nn.functional.silu(e))[:, :, None, None]
        return self.skip(x) + self.block2(h)


class _Attention(nn.Module):
    """Single-head self-attention over the H·W positions, with a residual connection."""

    def __init__(self, c: int):
        super().__init__()
        self.norm, self.qkv, self.out = _norm(c), nn.Conv2d(c, 3 * c, 1), nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)
        attn = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(c), dim=-1)   # (B, HW, HW)
        return x + self.out((v @ attn.transpose(1, 2)).reshape(b, c, h, w))


class UNet(_TimeConditioned):
    """ε_θ(x_t, t[, c]) for images ``(B, channels, H, W)``.

    Args:
        channels: image channels; base: channels of the first level; mults: the channel
            multiplier per level (len(mults) levels, H halved between levels).
        attention: self-attention at the coarsest level.
        num_classes / vocab_size: class or caption conditioning (at most one).
    """

    def __init__(self, channels: int = 1, base: int = 32, mults: tuple[int, ...] = (1, 2, 2),
                 *, attention: bool = True, num_classes: int | None = None,
                 vocab_size: int | None = None):
        super().__init__()
        self.channels = check_int("channels", channels, minimum=1)
        base = check_int("base", base, minimum=1)
        if not mults or not all(isinstance(m, int) and m >= 1 for m in mults):
            raise ValueError(f"mults must be a non-empty tuple of positive ints, got {mults!r}")
        self.levels = len(mults)
        emb_dim = 4 * base
        self._init_embedding(emb_dim, num_classes, vocab_size)
        widths = [base * m for m in mults]
        self.inp = nn.Conv2d(self.channels, base, 3, padding=1)
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        c = base
        for i, w in enumerate(widths):
            self.down.append(_ResBlock(c, w, emb_dim))
            c = w
            if i < self.levels - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        self.mid1, self.mid2 = _ResBlock(c, c, emb_dim), _ResBlock(c, c, emb_dim)
        self.attn = _Attention(c) if attention else nn.Identity()
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i, w in reversed(list(enumerate(widths))):
            self.up.append(_ResBlock(c + w, w, emb_dim))
            c = w
            if i > 0:
                self.upsample.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                                   nn.Conv2d(c, c, 3, padding=1)))
        self.out = nn.Sequential(_norm(c), nn.SiLU(), nn.Conv2d(c, self.channels, 3, padding=1))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor,
                c: torch.Tensor | None = None) -> torch.Tensor:
        side = 2 ** (self.levels - 1)
        if not isinstance(x_t, torch.Tensor) or x_t.ndim != 4 or x_t.shape[1] != self.channels \
                or x_t.shape[2] % side or x_t.shape[3] % side:
            raise ValueError(f"x_t must have shape (B, {self.channels}, H, W) with H, W divisible "
                             f"by {side}, got {shape_of(x_t)}")
        e = self._embed(t, c, x_t.shape[0], x_t.dtype)
        h = self.inp(x_t)
        skips = []
        for i, block in enumerate(self.down):
            h = block(h, e)
            skips.append(h)
            if i < self.levels - 1:
                h = self.downsample[i](h)
        h = self.mid2(self.attn(self.mid1(h, e)), e)
        for i, block in enumerate(self.up):
            h = block(torch.cat([h, skips.pop()], dim=1), e)
            if i < self.levels - 1:
                h = self.upsample[i](h)
        return self.out(h)
