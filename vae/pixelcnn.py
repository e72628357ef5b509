"""A small PixelCNN over a grid of categorical values (van den Oord, Kalchbrenner & Kavukcuoglu
2016): the autoregressive prior over VQ-VAE code grids (05_vq_vae) and a strong decoder
p(x | z) for binary images (04_posterior_collapse).

In raster order (row by row, left to right) the model factorises

    p(x | h) = Π_{i,j} p(x_ij | x_<ij, h),     log p(x | h) = Σ_{i,j} log softmax(ℓ_ij)[x_ij],

with the logits ℓ_ij computed by masked convolutions, so that ℓ_ij depends on x only through
the pixels strictly before (i, j). For a k×k kernel with centre (c, c), c = (k−1)/2, the mask
keeps the rows above the centre and, in the centre row, the columns left of the centre (mask
A, the first layer: not even x_ij itself) or left of and at the centre (mask B, every later
layer: position (i, j) of a hidden layer already depends only on pixels before (i, j)):

    mask A (k = 3):  1 1 1      mask B:  1 1 1
                     1 0 0               1 1 0
                     0 0 0               0 0 0

The network: the one-hot input (B, K, H, W) → masked conv A (K → hidden) → ``layers − 1``
residual blocks x ← x + conv_B(ReLU(x)) → ReLU → 1×1 conv → ReLU → 1×1 conv (hidden → K).
Conditioning (``cond_dim``): a vector h (B, cond_dim) enters every masked layer as a learned
per-channel bias W_l h (the same at every position, so causality is kept).

A stack of such masks has a *blind spot*: the receptive field of (i, j) grows up and to the
left by c per layer but, in the rows above, never more than c·(rows up) columns to the right,
so some earlier pixels up and to the right are never seen (the gated PixelCNN's two stacks
remove it; van den Oord et al. 2016b). The tests measure the receptive field by autograd and
compare it with this geometry.

Shapes: indices x ``(B, H, W)`` int64 in 0..K−1 (or a float one-hot / relaxed tensor
``(B, K, H, W)``); h ``(B, cond_dim)``; logits ``(B, K, H, W)``; log_prob ``(B,)`` in nats.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from utils.validation import check_int, check_positive, shape_of

__all__ = ["MaskedConv2d", "PixelCNN", "causal_mask"]


def causal_mask(kernel: int, kind: str) -> torch.Tensor:
    """The k×k mask ``(k, k)`` of ones and zeros: rows above the centre, plus the centre row's
    columns left of the centre (``kind="A"``) or left of and at it (``"B"``)."""
    kernel = check_int("kernel", kernel, minimum=1)
    if kind not in ("A", "B"):
        raise ValueError(f"kind must be 'A' or 'B', got {kind!r}")
    if kernel % 2 == 0:
        raise ValueError(f"kernel must be odd (a centre pixel), got {kernel}")
    c = kernel // 2
    mask = torch.zeros(kernel, kernel)
    mask[:c] = 1
    mask[c, :c + (kind == "B")] = 1
    return mask


class MaskedConv2d(nn.Conv2d):
    """A k×k 'same' convolution whose weight is multiplied by :func:`causal_mask` (the mask is a
    non-persistent buffer: rebuilt from ``kind`` and ``kernel``, not saved)."""

    def __init__(self, kind: str, in_channels: int, out_channels: int, kernel: int):
        mask = causal_mask(kernel, kind)
        super().__init__(in_channels, out_channels, kernel, padding=kernel // 2)
        self.kind = kind
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class PixelCNN(nn.Module):
    """Masked-convolution PixelCNN over ``num_classes`` categories (see the module docstring).

    Args:
        num_classes: K ≥ 2 categories per pixel (2 for binary images, the codebook size for a
            VQ-VAE prior).
        hidden: channels of the hidden layers; layers: masked convolutions (≥ 1), the first
            with mask A; kernel: their odd size k ≥ 3.
        cond_dim: size of an optional conditioning vector h (None: unconditional).
    """

    def __init__(self, num_classes: int, hidden: int = 64, layers: int = 5, kernel: int = 5,
                 cond_dim: int | None = None):
        super().__init__()
        self.num_classes = check_int("num_classes", num_classes, minimum=2)
        hidden = check_int("hidden", hidden, minimum=1)
        self.layers = check_int("layers", layers, minimum=1)
        self.kernel = check_int("kernel", kernel, minimum=3)
        self.cond_dim = None if cond_dim is None else check_int("cond_dim", cond_dim, minimum=1)
        self.convs = nn.ModuleList(
            [MaskedConv2d("A", self.num_classes, hidden, self.kernel)]
            + [MaskedConv2d("B", hidden, hidden, self.kernel) for _ in range(self.layers - 1)])
        self.cond = None if self.cond_dim is None else nn.ModuleList(
            [nn.Linear(self.cond_dim, hidden, bias=False) for _ in range(self.layers)])
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(hidden, hidden, 1), nn.ReLU(),
                                  nn.Conv2d(hidden, self.num_classes, 1))

    def _dtype(self) -> torch.dtype:
        return self.convs[0].weight.dtype

    def _one_hot(self, x: object) -> torch.Tensor:
        k = self.num_classes
        if isinstance(x, torch.Tensor) and x.dtype == torch.int64 and x.ndim == 3 \
                and x.numel() > 0:
            if x.min() < 0 or x.max() >= k:
                raise ValueError(f"x must hold indices in 0..{k - 1}, got values in "
                                 f"{x.min().item()}..{x.max().item()}")
            return F.one_hot(x, k).movedim(-1, 1).to(self._dtype())
        if isinstance(x, torch.Tensor) and x.dtype.is_floating_point and x.ndim == 4 \
                and x.shape[1] == k and x.numel() > 0:
            return x
        raise ValueError(f"x must be int64 indices (B, H, W) or a float one-hot tensor "
                         f"(B, {k}, H, W), got {shape_of(x)}"
                         + (f" of dtype {x.dtype}" if isinstance(x, torch.Tensor) else ""))

    def _check_cond(self, h: object, batch: int) -> torch.Tensor | None:
        if self.cond_dim is None:
            if h is not None:
                raise ValueError("this PixelCNN is unconditional (cond_dim=None): pass no h")
            return None
        if not isinstance(h, torch.Tensor) or not h.dtype.is_floating_point \
                or h.shape != (batch, self.cond_dim):
            raise ValueError(f"h must be a float tensor of shape ({batch}, {self.cond_dim}), "
                             f"got {shape_of(h)}")
        return h

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(B, K, H, W)``: ℓ_ij depends only on x at pixels before (i, j)."""
        x = self._one_hot(x)
        h = self._check_cond(h, x.shape[0])
        bias = [0.0] * self.layers if h is None else [
            lin(h.to(x.dtype))[:, :, None, None] for lin in self.cond]
        a = self.convs[0](x) + bias[0]
        for conv, b in zip(self.convs[1:], bias[1:]):
            a = a + conv(F.relu(a)) + b
        return self.head(a)

    def log_prob(self, x: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x | h) = Σ_ij log softmax(ℓ_ij)[x_ij]: x ``(B, H, W)`` int64 → ``(B,)`` nats."""
        if not isinstance(x, torch.Tensor) or x.dtype != torch.int64:
            raise ValueError(f"x must be int64 indices (B, H, W), got {shape_of(x)}"
                             + (f" of dtype {x.dtype}" if isinstance(x, torch.Tensor) else ""))
        logits = self(x, h)
        return -F.cross_entropy(logits, x, reduction="none").flatten(1).sum(1)

    @torch.no_grad()
    def sample(self, n: int, shape: tuple[int, int], h: torch.Tensor | None = None,
               temperature: float = 1.0, generator: torch.Generator | None = None,
               progress: bool = False) -> torch.Tensor:
        """Draw n grids ``(n, H, W)`` int64 pixel by pixel in raster order: H·W forward passes,
        each sampling x_ij ~ softmax(ℓ_ij / temperature).

        Args:
            n: the number of samples ≥ 1; shape: (H, W).
            h: ``(n, cond_dim)`` for a conditional model, else None.
            temperature: > 0; < 1 sharpens, > 1 flattens each conditional.
            generator: a ``torch.Generator`` on the model's device (reproducible samples).
            progress: show a tqdm bar over the H·W pixels.
        """
        n = check_int("n", n, minimum=1)
        if not isinstance(shape, (tuple, list)) or len(shape) != 2:
            raise ValueError(f"shape must be (H, W), got {shape!r}")
        rows, cols = (check_int("shape[0]", shape[0], minimum=1),
                      check_int("shape[1]", shape[1], minimum=1))
        temperature = check_positive("temperature", temperature)
        h = self._check_cond(h, n)
        device = self.convs[0].weight.device
        x = torch.zeros(n, rows, cols, dtype=torch.int64, device=device)
        pixels = [(i, j) for i in range(rows) for j in range(cols)]
        if progress:
            from tqdm.auto import tqdm
            pixels = tqdm(pixels, desc="sampling")
        for i, j in pixels:
            probs = torch.softmax(self(x, h)[:, :, i, j].double() / temperature, dim=1)
            x[:, i, j] = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        return x
