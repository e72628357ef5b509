"""Profiles, device and seeding (DESIGN.md §5).

Every notebook has one config cell::

    cfg = profile(tiny=dict(steps=50), cpu=dict(steps=2_000), gpu=dict(steps=20_000))

The environment variable ``DGM_PROFILE`` picks the profile: ``tiny`` (CI: proves the code runs and
the checks hold, each notebook under 60 s on 2 CPU cores), ``cpu`` (figures worth reading, under
10 min) or ``gpu`` (aims at the published numbers, under 30 min on one Colab-class GPU). Unset, it
is ``gpu`` when CUDA is available, else ``cpu``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import random
from typing import Any

import numpy as np
import torch

__all__ = ["PROFILES", "Config", "active_profile", "device", "keep_freed_memory", "profile",
           "seed_everything"]

PROFILES = ("tiny", "cpu", "gpu")
ENV_VAR = "DGM_PROFILE"
DEVICE_ENV_VAR = "DGM_DEVICE"


class Config(dict):
    """A dict whose keys also read as attributes: ``cfg.steps`` is ``cfg["steps"]``."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(
                f"config has no entry {name!r}; it has {sorted(self)}"
            ) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value


def active_profile() -> str:
    """The active profile name: ``$DGM_PROFILE`` if set, else ``gpu`` with CUDA, else ``cpu``."""
    name = os.environ.get(ENV_VAR, "").strip().lower()
    if not name:
        return "gpu" if torch.cuda.is_available() else "cpu"
    if name not in PROFILES:
        raise ValueError(f"{ENV_VAR} must be one of {PROFILES}, got {name!r}")
    return name


def profile(*, tiny: Any, cpu: Any, gpu: Any) -> Any:
    """Return the value given for the active profile.

    All three are required, so no notebook forgets one. A ``dict`` comes back as a :class:`Config`
    (attribute access), with the profile's name under ``"profile"``; anything else is returned as
    it is.
    """
    value = {"tiny": tiny, "cpu": cpu, "gpu": gpu}[active_profile()]
    if isinstance(value, dict):
        if "profile" in value:
            raise ValueError("'profile' is reserved in a profile dict: it holds the profile's name")
        return Config(value, profile=active_profile())
    return value


def device() -> torch.device:
    """The device the book trains on: ``$DGM_DEVICE`` if set, else CUDA if available, else the CPU.

    Apple's MPS is used only when asked for (``DGM_DEVICE=mps``): it has no float64, which several
    parts use for schedules and exact references, so picking it unasked broke them.
    ``DGM_DEVICE`` is any name ``torch.device`` reads (``cpu``, ``cuda``, ``cuda:1``, ``mps``); an
    unknown name, or a device this machine does not have, is a ``ValueError``.
    """
    raw = os.environ.get(DEVICE_ENV_VAR, "").strip().lower()
    if not raw:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(raw)
    except RuntimeError:
        raise ValueError(f"{DEVICE_ENV_VAR} must name a device (cpu, cuda, cuda:N, mps), got "
                         f"{raw!r}") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{DEVICE_ENV_VAR} must be cpu, cuda, cuda:N or mps, got {raw!r}")
    mps = getattr(torch.backends, "mps", None)
    available = {"cpu": True, "cuda": torch.cuda.is_available(),
                 "mps": mps is not None and mps.is_available()}[dev.type]
    if not available:
        raise ValueError(f"{DEVICE_ENV_VAR}={raw!r} but this machine has no {dev.type} device; "
                         f"unset it to use {'cuda' if torch.cuda.is_available() else 'cpu'}")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"{DEVICE_ENV_VAR}={raw!r} but this machine has "
                         f"{torch.cuda.device_count()} CUDA device(s)")
    return dev


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3     # glibc's mallopt parameters (malloc.h)


def keep_freed_memory(limit_bytes: int = 1 << 30) -> bool:
    """Let the C allocator keep freed blocks of up to ``limit_bytes`` for reuse (glibc only).

    Training allocates the same large buffers at every step. glibc serves a block above its mmap
    threshold (at most 32 MiB by default) with a fresh ``mmap`` and gives it back to the system
    on ``free``, so every step faults the same pages in again; in a virtual machine that is slow
    (the Mamba block's 38 MB scan states: a training step 1.1-1.3× slower, measured by
    ``tests/benchmarks/test_bench_allocator.py``). This raises the mmap and trim thresholds to
    ``limit_bytes`` so that freed blocks stay in the heap. Called by :func:`utils.training.fit`
    on the CPU; the process keeps its peak heap until exit. Returns whether it took effect
    (``False`` where the C library is not glibc).
    """
    if not isinstance(limit_bytes, int) or isinstance(limit_bytes, bool) \
            or not 0 < limit_bytes < 2**31:
        raise ValueError(f"limit_bytes must be an int in (0, 2**31), got {limit_bytes!r}")
    mallopt = _mallopt()
    return mallopt is not None and bool(mallopt(_M_MMAP_THRESHOLD, limit_bytes)) \
        and bool(mallopt(_M_TRIM_THRESHOLD, limit_bytes))


@functools.cache
def _mallopt():
    """glibc's ``mallopt``, or None; looked up once (``find_library`` reads the linker cache)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return None


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every CUDA device)."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer, got {type(seed).__name__}")
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must lie in [0, 2**32), got {seed}")
    random.seed(int(seed))
    np.random.seed(int(seed))
    torch.manual_seed(int(seed))  # also seeds every CUDA device
