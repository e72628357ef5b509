"""What the loaders share: the ``LabelledImages`` record and the uint8 pixel mapping."""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["LabelledImages"]


class LabelledImages(NamedTuple):
    """Images with class labels, as every image loader in ``utils.data`` returns them.

    Attributes:
        images: (N, C, H, W) float32 in [-1, 1].
        labels: (N,) int64 class indices.
    """

    images: torch.Tensor
    labels: torch.Tensor


def uint8_to_unit_interval(pixels: torch.Tensor) -> torch.Tensor:
    """Map uint8 pixels 0..255 to float32 in [-1, 1]: x / 127.5 - 1 (0 -> -1, 255 -> 1)."""
    return pixels.to(torch.float32) / 127.5 - 1.0
