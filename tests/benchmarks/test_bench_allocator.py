"""Benchmark: a Mamba training step with glibc's default large-block policy vs
:func:`utils.config.keep_freed_memory` (which :func:`utils.training.fit` calls on the CPU).

A 2-layer, 64-wide Mamba LM on selective copying (64 slots, 8 data tokens, batch 64): its fused
scan keeps a 38 MB state per layer, above glibc's mmap threshold, so by default every step maps
it afresh and faults its pages in. Both policies run in one process, the default first (glibc's
ceiling of 32 MiB set explicitly, through the same function), and the ratio of the median step
times is printed. Linux with
glibc only. Run with ``make bench``.
"""

import platform
import time

import pytest
import torch

from autoregressive import lm_step
from ssm import MambaLM
from utils.config import keep_freed_memory
from utils.data import task_batches

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
DEFAULT_CEILING = 32 << 20          # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit


def step_seconds(step, batches, n=8):
    for s in range(2):
        step(batches(s))
    times = []
    for s in range(n):
        t0 = time.perf_counter()
        step(batches(s))
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def test_keeping_freed_memory_speeds_up_a_mamba_step():
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = MambaLM(10, 64, 2)
    step = lm_step(model, torch.optim.AdamW(model.parameters(), lr=1e-3), clip=1.0)
    batches = task_batches("selective_copying", 64, seed=0, n_slots=64, n_data=8, n_values=8)
    assert keep_freed_memory(DEFAULT_CEILING)       # glibc's default: larger blocks mapped afresh
    t_default = step_seconds(step, batches)
    assert keep_freed_memory()
    t_kept = step_seconds(step, batches)
    print("\nMamba 2 x 64, selective copying (L = 72, batch 64), 2 threads, median of 8 steps:")
    print(f"  glibc default (blocks > 32 MiB mapped afresh) {t_default * 1e3:.0f} ms/step")
    print(f"  keep_freed_memory()                            {t_kept * 1e3:.0f} ms/step   "
          f"ratio default / kept = {t_default / t_kept:.2f}")
    assert t_kept < t_default
