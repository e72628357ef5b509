"""Argument checks shared by every part of the book (DESIGN.md §3: bad input gets a clear
``ValueError`` that says what was expected and what came)."""

from __future__ import annotations

import math
import numbers

import torch

__all__ = [
    "check_choice", "check_int", "check_positive", "check_probabilities", "is_int", "shape_of",
]


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


def check_probabilities(name: str, p: object) -> torch.Tensor:
    """``p`` if it is a float tensor of probability vectors along its last dimension (K >= 1
    outcomes, no NaN, non-negative, each summing to one within 1e-10·K in float64 and 1e-5·K in
    lower precision); else a ``ValueError`` saying which condition failed."""
    if not isinstance(p, torch.Tensor) or not p.dtype.is_floating_point or p.ndim < 1 \
            or p.shape[-1] < 1:
        dtype = f" of dtype {p.dtype}" if isinstance(p, torch.Tensor) else ""
        raise ValueError(f"{name} must be a float tensor of probabilities along its last "
                         f"dimension, got {shape_of(p)}{dtype}")
    values = p.detach()
    if bool(torch.isnan(values).any()) or bool((values < 0).any()):
        raise ValueError(f"{name} must have non-negative entries (no NaN), got minimum "
                         f"{float(values.min())}")
    tol = (1e-10 if p.dtype == torch.float64 else 1e-5) * p.shape[-1]
    err = float((values.sum(-1) - 1).abs().max())
    if not err <= tol:
        raise ValueError(f"{name} must sum to one along the last dimension (tolerance "
                         f"{tol:.1g}); it is off by {err:.3g}")
    return p
