"""Benchmark: the parallel associative scan vs the sequential loop for h_t = a_t h_{t−1} + b_t at
L = 4,096 on the CPU (issue #13's target: at least 5× faster, equal to 1e-10 in float64).

64 channels (e.g. 4 sequences × 16 state channels) of length 4,096 in float64, |a_t| < 1; both
scans run in the same process on one thread, each timed best of three (forward only, and
forward + backward). The loop (:func:`ssm.sequential_scan`) already writes in place with a
hand-written backward, so the ratio is against a fair loop, not against autograd over 4,096
small steps. Both parallel methods are printed; the target is asserted for the default
(Blelloch's work-efficient scan). Where each step's block is large (thousands of channels) the
loop's Python overhead vanishes and it wins on a CPU: ``ssm/05_parallel_scan`` measures that
crossover. Run with ``make bench``.
"""

import time

import torch

from ssm import SCAN_METHODS, parallel_scan, scan_cost, sequential_scan

L, CHANNELS, TARGET = 4_096, 64, 5.0


def best_of(fn, repeats=3):
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def test_parallel_vs_sequential_scan():
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    a = (0.5 + 0.5 * torch.rand(CHANNELS, L, generator=g, dtype=torch.float64)).requires_grad_()
    b = torch.randn(CHANNELS, L, generator=g, dtype=torch.float64).requires_grad_()
    h0 = torch.randn(CHANNELS, generator=g, dtype=torch.float64)
    ref = sequential_scan(a, b, h0)
    with torch.no_grad():
        t_seq = best_of(lambda: sequential_scan(a, b, h0))
    t_seq_bwd = best_of(lambda: sequential_scan(a, b, h0).sum().backward())
    print(f"\nscan of {CHANNELS} channels x L = {L:,} (float64, 1 thread): sequential "
          f"{t_seq * 1e3:.1f} ms forward, {t_seq_bwd * 1e3:.1f} ms forward+backward")
    ratios = {}
    for method in SCAN_METHODS:
        h = parallel_scan(a, b, h0, method=method)
        err = float((h - ref).detach().abs().max())
        with torch.no_grad():
            t = best_of(lambda m=method: parallel_scan(a, b, h0, method=m))
        t_bwd = best_of(lambda m=method: parallel_scan(a, b, h0, method=m).sum().backward())
        work, depth = scan_cost(L, method)
        ratios[method] = (t_seq / t, err)
        print(f"{method:>14}: {t * 1e3:7.2f} ms forward ({t_seq / t:5.1f}x faster), "
              f"{t_bwd * 1e3:7.2f} ms forward+backward ({t_seq_bwd / t_bwd:5.1f}x); "
              f"max |h - h_seq| = {err:.1e}; work {work:,}, depth {depth} "
              f"(sequential: {L - 1:,}, {L - 1:,})")
    ratio, err = ratios["blelloch"]
    print(f"target (>= {TARGET:g}x faster, equal to 1e-10): "
          f"{'met' if ratio >= TARGET and err <= 1e-10 else 'NOT met'}")
    assert all(e <= 1e-10 for _, e in ratios.values())
    assert ratio >= TARGET
