"""Benchmark: the overhead of utils.training.fit over a bare Python loop doing the same steps.

The loop adds device placement, metric history, NaN checks, an EMA update and a progress bar to
every step. On the smallest model in the book (a 2-D Gaussian mixture, where a step costs least
and the overhead weighs most) both loops run the same number of steps in the same process, and
the ratio of their times is printed. Run with ``make bench``.
"""

import time

import torch

from foundations import GaussianMixture, mle_step
from utils.data import batches, toy2d
from utils.training import fit

STEPS = 1_000


def make(seed=0):
    x = toy2d("ring8", 4_096, seed=seed)
    model = GaussianMixture.from_data(x, 8, seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    return model, opt, batches(x, batch_size=256, seed=seed)


def bare_loop():
    model, opt, data = make()
    step = mle_step(model, opt)
    t0 = time.perf_counter()
    for s in range(STEPS):
        step(data(s))
    return time.perf_counter() - t0, model


def fit_loop(**kw):
    model, opt, data = make()
    t0 = time.perf_counter()
    fit(mle_step(model, opt), data, STEPS, models=model, optimizers=opt, device="cpu",
        progress=False, **kw)
    return time.perf_counter() - t0, model


def test_fit_overhead_over_a_bare_loop():
    torch.set_num_threads(1)
    bare_loop(), fit_loop()  # warm-up
    t_bare, m_bare = min((bare_loop() for _ in range(3)), key=lambda r: r[0])
    t_fit, m_fit = min((fit_loop() for _ in range(3)), key=lambda r: r[0])
    t_ema, _ = min((fit_loop(ema_decay=0.999) for _ in range(3)), key=lambda r: r[0])
    print(f"\n{STEPS} steps of a K=8 2-D Gaussian mixture, batch 256, 1 thread (best of 3):")
    print(f"  bare loop {t_bare * 1e3 / STEPS:.3f} ms/step")
    print(f"  fit       {t_fit * 1e3 / STEPS:.3f} ms/step   ratio fit / bare = "
          f"{t_fit / t_bare:.2f}")
    print(f"  fit + EMA {t_ema * 1e3 / STEPS:.3f} ms/step   ratio fit+EMA / bare = "
          f"{t_ema / t_bare:.2f}")
    # the same steps on the same data give the same weights: the loop only adds bookkeeping
    for a, b in zip(m_bare.parameters(), m_fit.parameters()):
        assert torch.equal(a, b)
