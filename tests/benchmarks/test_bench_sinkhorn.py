"""Benchmark: log-domain Sinkhorn against the exact linear program (HiGHS) on n×n problems.

For n = 100, 300, 1000 points drawn uniformly in the unit square (uniform weights, squared
Euclidean cost, float64, one thread), both solvers run in the same process on the same problem;
printed are the LP time, the Sinkhorn time, their ratio LP / Sinkhorn and the relative cost gap
(⟨P_ε, C⟩ − OT) / OT. Sinkhorn runs at ε = 0.01 · median(C) (it must converge there) and at
ε = 0.003 · median(C) (closer to the LP, more updates; capped at 20,000 updates, and the table
says whether it converged) and stops when the marginal error ‖P1 − a‖₁ + ‖Pᵀ1 − b‖₁ is below
1e-6. The LP at n = 1000 has 10⁶ unknowns: it is slow (that is
the point), and the printout says so when it takes over two minutes. Run with ``make bench``.
"""

import math
import time

import torch

from divergences import emd, sinkhorn

SIZES = (100, 300, 1_000)
REL_EPS = (0.01, 0.003)  # eps = REL_EPS * median(C)
MAX_ITER = 20_000
TOL = 1e-6
SLOW_LP_S = 120.0


def problem(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, generator=g, dtype=torch.float64)
    y = torch.rand(n, 2, generator=g, dtype=torch.float64)
    a = torch.full((n,), 1.0 / n, dtype=torch.float64)
    return a, torch.cdist(x, y) ** 2


def test_sinkhorn_against_the_exact_linear_program():
    torch.set_num_threads(1)
    a, C = problem(50)
    emd(a, a, C), sinkhorn(a, a, C, 0.01)  # warm-up (imports, first calls)
    print(f"\nSinkhorn (log domain, marginal L1 tol {TOL:g}) vs the exact LP (scipy HiGHS); "
          f"uniform points in [0, 1]^2, squared Euclidean cost, float64, 1 thread:")
    print(f"{'n':>6} {'LP s':>8} {'eps/med C':>10} {'Sinkhorn s':>11} {'LP/Sinkhorn':>12} "
          f"{'updates':>8} {'conv.':>5} {'OT (LP)':>9} {'<P_eps,C>':>10} {'rel. gap':>9}",
          flush=True)
    for n in SIZES:
        a, C = problem(n, seed=n)
        t0 = time.perf_counter()
        _, ot = emd(a, a, C)
        t_lp = time.perf_counter() - t0
        for rel in REL_EPS:
            eps = rel * C.median().item()
            t0 = time.perf_counter()
            res = sinkhorn(a, a, C, eps, tol=TOL, max_iter=MAX_ITER)
            t_sk = time.perf_counter() - t0
            gap = res.cost.item() - ot.item()
            print(f"{n:6d} {t_lp:8.2f} {rel:10g} {t_sk:11.3f} {t_lp / t_sk:12.2f} {res.n_iter:8d} "
                  f"{'yes' if res.converged else 'no':>5} {ot.item():9.5f} "
                  f"{res.cost.item():10.5f} {gap / ot.item():9.2%}", flush=True)
            assert res.converged or rel != REL_EPS[0], f"no convergence at n = {n}, eps = {eps}"
            if res.converged:
                # 0 ≤ ⟨P_ε, C⟩ − OT ≤ ε min(H(a), H(b)) = ε log n, up to marginal error × max C
                slack = res.marginal_error.item() * C.max().item()
                assert -slack <= gap <= eps * math.log(n) + slack, (gap, eps)
        if t_lp > SLOW_LP_S:
            print(f"       (the LP took {t_lp / 60:.1f} min at n = {n}: {n * n:,} unknowns)")
