"""Benchmark: an LTI state-space model's output computed by the recurrence (``ssm_scan``: L
sequential steps) and by the convolution with its kernel through the FFT (``ssm_conv``: the
kernel K_k = C Ā^k B̄ for k < L, then one O(L log L) convolution), L = 1,024 … 16,384, both timed
in the same process on one thread; the written-out O(L²) convolution is timed too up to
L = 4,096.

The system is S4D-Lin's: N = 64 complex diagonal states λ_n = −1/2 + iπn, ZOH at Δ = 0.01, a
random complex C, one input and one output, a batch of 16 sequences, float64. The FFT time
includes computing the kernel (as a training step does). Printed per L: seconds of each, the
ratio scan / FFT, and the largest difference relative to the output's scale.

Target (the issue names none; this one is ours): the FFT convolution at least 10× faster than the
scan at L = 16,384, and equal to it within 1e-10 (relative) at every L. Run with ``make bench``.
"""

import math
import time

import torch

from ssm import discretize, ssm_conv, ssm_scan

LENGTHS = (1_024, 2_048, 4_096, 8_192, 16_384)
DIRECT_UP_TO = 4_096
N, BATCH, DT = 64, 16, 0.01
TARGET_L, TARGET_SPEEDUP, TOL = 16_384, 10.0, 1e-10


def best_time(fn, repeats):
    best, out = math.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def test_fft_convolution_against_the_scan():
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        g = torch.Generator().manual_seed(0)
        lam = -0.5 + 1j * math.pi * torch.arange(N, dtype=torch.float64)   # S4D-Lin
        A_bar, B_bar = discretize(lam, torch.ones(N, dtype=torch.float64), DT)
        B_bar = B_bar[:, None]                                            # (N, M = 1)
        C = torch.randn(1, N, generator=g, dtype=torch.complex128)        # (P = 1, N)
        print(f"\nLTI SSM: N = {N} complex diagonal states (S4D-Lin, ZOH, Δ = {DT}), "
              f"batch {BATCH}, float64, 1 thread")
        print(f"{'L':>7} {'scan s':>9} {'FFT s':>9} {'scan/FFT':>9} {'direct s':>9} "
              f"{'direct/FFT':>10} {'rel. diff':>10}")
        ratios, diffs = {}, {}
        for L in LENGTHS:
            u = torch.randn(BATCH, L, 1, generator=g, dtype=torch.float64)
            repeats = 3 if L <= 4_096 else 2
            y_scan, t_scan = best_time(lambda u=u: ssm_scan(A_bar, B_bar, C, u), repeats)
            y_fft, t_fft = best_time(lambda u=u: ssm_conv(A_bar, B_bar, C, u), repeats + 2)
            scale = y_scan.abs().max()
            diffs[L] = ((y_fft - y_scan).abs().max() / scale).item()
            ratios[L] = t_scan / t_fft
            direct = ""
            if L <= DIRECT_UP_TO:
                y_dir, t_dir = best_time(lambda u=u: ssm_conv(A_bar, B_bar, C, u, method="direct"),
                                         1)
                diffs[L] = max(diffs[L], ((y_dir - y_scan).abs().max() / scale).item())
                direct = f"{t_dir:9.4f} {t_dir / t_fft:10.1f}"
            else:
                direct = f"{'-':>9} {'-':>10}"
            print(f"{L:7d} {t_scan:9.4f} {t_fft:9.4f} {ratios[L]:9.1f} {direct} "
                  f"{diffs[L]:10.2e}", flush=True)
        ok = ratios[TARGET_L] >= TARGET_SPEEDUP and max(diffs.values()) <= TOL
        print(f"FFT convolution {ratios[TARGET_L]:.1f}× faster than the scan at L = {TARGET_L:,} "
              f"(target ≥ {TARGET_SPEEDUP:g}×), largest relative difference "
              f"{max(diffs.values()):.1e} (target ≤ {TOL:g}): "
              f"{'target met' if ok else 'target NOT met'}")
        assert max(diffs.values()) <= TOL, diffs
        assert ratios[TARGET_L] >= TARGET_SPEEDUP, ratios
    finally:
        torch.set_num_threads(n_threads)
