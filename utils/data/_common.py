"""What the loaders share: the ``LabelledImages`` record and the checks on their arguments."""

from __future__ import annotations

import numbers
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


def is_int(value: object) -> bool:
    """True for Python and NumPy integers, False for bools, floats and everything else."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(name: str, value: object, *, minimum: int | None = None) -> int:
    """``value`` as a Python int if it is an integer >= ``minimum``; else a ``ValueError``."""
    if not is_int(value):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise ValueError(f"{name} must be an integer{bound}, got {value!r} "
                         f"({type(value).__name__})")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return value


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``; else a ``ValueError`` listing them."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def uint8_to_unit_interval(pixels: torch.Tensor) -> torch.Tensor:
    """Map uint8 pixels 0..255 to float32 in [-1, 1]: x / 127.5 - 1 (0 -> -1, 255 -> 1)."""
    return pixels.to(torch.float32) / 127.5 - 1.0
