"""Numerical checks for notebooks (DESIGN.md §4).

A check prints one line that is identical on every machine and profile (``✓ label``), so nbval can
compare it, and raises ``AssertionError`` naming the label when it fails, so a broken derivation
fails the notebook whether or not its output is compared. Never print a raw number from a checked
cell: put the number in the failure message instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["check", "check_close"]

TICK = "✓"


def _as_bool(label: str, condition: Any) -> bool:
    if isinstance(condition, torch.Tensor):
        if condition.numel() != 1:
            raise ValueError(
                f"check {label!r}: condition must be a single boolean, got a tensor of shape "
                f"{tuple(condition.shape)}; reduce it with .all() or .any()"
            )
        return bool(condition.item())
    if isinstance(condition, np.ndarray):
        if condition.size != 1:
            raise ValueError(
                f"check {label!r}: condition must be a single boolean, got an array of shape "
                f"{condition.shape}; reduce it with .all() or .any()"
            )
        return bool(condition.item())
    if isinstance(condition, (bool, np.bool_)):
        return bool(condition)
    raise ValueError(
        f"check {label!r}: condition must be a bool (or a one-element tensor/array), "
        f"got {type(condition).__name__}"
    )


def check(label: str, condition: Any, detail: str = "") -> None:
    """Print ``✓ label`` if ``condition`` holds, else raise ``AssertionError`` naming the label.

    ``detail`` (e.g. the measured numbers) is shown only on failure, so the printed output stays
    identical across machines and profiles.
    """
    if not isinstance(label, str) or not label.strip():
        raise ValueError("check needs a non-empty label")
    if not _as_bool(label, condition):
        raise AssertionError(f"check failed: {label}" + (f" ({detail})" if detail else ""))
    print(f"{TICK} {label}")


def check_close(label: str, actual: Any, expected: Any, *, rtol: float = 1e-5,
                atol: float = 1e-8) -> None:
    """Check that ``|actual - expected| <= atol + rtol * |expected|`` elementwise.

    Works on numbers, NumPy arrays and tensors (compared in float64 on the CPU). The failure
    message reports the largest absolute error and where it occurred. An empty comparison fails
    (it would otherwise hold vacuously, checking nothing).
    """
    if rtol < 0 or atol < 0:
        raise ValueError(f"tolerances must be non-negative, got rtol={rtol}, atol={atol}")
    a = torch.as_tensor(np.asarray(_to_numpy(actual), dtype=np.float64))
    e = torch.as_tensor(np.asarray(_to_numpy(expected), dtype=np.float64))
    try:
        a, e = torch.broadcast_tensors(a, e)
    except RuntimeError:
        raise ValueError(
            f"check_close {label!r}: shapes {tuple(a.shape)} and {tuple(e.shape)} do not broadcast"
        ) from None
    if a.numel() == 0:  # all() of nothing is True: an empty comparison would pass vacuously
        check(label, False, f"nothing to compare: shapes {tuple(a.shape)} and {tuple(e.shape)} "
                            f"broadcast to an empty tensor")
    err = (a - e).abs()
    ok = bool(torch.all(err <= atol + rtol * e.abs()))
    detail = ""
    if not ok:
        i = int(torch.nan_to_num(err, nan=float("inf")).flatten().argmax())
        detail = (f"max |error| {err.flatten()[i].item():.3g} at flat index {i}: "
                  f"actual {a.flatten()[i].item():.6g}, expected {e.flatten()[i].item():.6g}, "
                  f"rtol={rtol}, atol={atol}")
    check(label, ok, detail)


def _to_numpy(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return x
