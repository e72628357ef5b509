"""Argument checks shared by every part of the book (DESIGN.md §3: bad input gets a clear
``ValueError`` that says what was expected and what came)."""

from __future__ import annotations

import math
import numbers

import torch

__all__ = ["check_choice", "check_int", "check_positive", "is_int", "shape_of"]


def shape_of(x: object) -> object:
    """How to show an argument in an error message: a tensor's shape, else its type's name."""
    return tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__


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


def check_positive(name: str, value: object) -> float:
    """``value`` as a float if it is a positive finite number (or a one-element tensor holding
    one); else a ``ValueError``."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a positive scalar, got a tensor of shape "
                             f"{tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0 \
            or not math.isfinite(value):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``; else a ``ValueError`` listing them."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value
