"""Benchmark: DDIM with 10/20/50/100 steps against DDPM with all T = 1000 steps, on the same
trained model and the same number of samples (issue 7's target: DDIM with 50 steps within 20% of
DDPM's quality, at least 15× faster).

Two models are trained inside the benchmark (deterministic seeds, one thread, ε-prediction,
linear β schedule with T = 1000, EMA of the weights):

- 2-D: an ``MLPDenoiser`` on ``ring8`` (scaled by 1/√2 to unit variance per coordinate);
  quality = MMD² (unbiased, Gaussian kernel with the fixed bandwidth h = 0.1, about a tenth of
  the distance between two modes) between 2,000 samples and 2,000 held-out data points;
- digits: a small ``UNet`` on the 1,437 training digits at their native 8×8 resolution (16×16
  would make the T = 1000 DDPM reference alone take about ten minutes on one loaded CPU thread);
  quality = the digits Fréchet distance (``evaluation.digits_classifier`` features, which resize
  8×8 inputs exactly as ``digits(size=16)`` does) between 360 samples and the 360 test digits.

Printed per sampler: steps, seconds, the time ratio DDPM / DDIM, the distance, and the quality
ratio distance(DDIM) / distance(DDPM) (< 1.2: within 20% of DDPM); the data-vs-data floor of
each distance is printed too. DDIM here is deterministic (η = 0) and starts from the same x_T
generator seed as DDPM. Run with ``make bench``.
"""

import math
import time

import torch

from diffusion import (
    MLPDenoiser,
    UNet,
    alpha_bar,
    ddim_sample,
    ddpm_sample,
    diffusion_step,
    linear_beta_schedule,
)
from evaluation import digits_classifier, frechet_distance_from_features
from foundations import mmd2
from utils import seed_everything
from utils.data import batches, digits, toy2d
from utils.training import fit

T = 1_000
DDIM_STEPS = (10, 20, 50, 100)
TARGET_STEPS, TARGET_SPEEDUP, TARGET_QUALITY = 50, 15.0, 1.2
BANDWIDTH = 0.1
TOY = dict(n_train=20_000, n_eval=2_000, steps=5_000, batch=512, lr=2e-3, hidden=128)
DIGITS = dict(steps=1_500, batch=64, lr=1e-3, base=16, mults=(1, 2))


def train(net, x, steps, batch, lr, seed=0):
    """ε-prediction with Adam, a cosine learning-rate decay and an EMA (0.999); the EMA copy."""
    ab = alpha_bar(linear_beta_schedule(T))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    inner = diffusion_step(net, opt, ab)

    def step(b):
        out = inner(b)
        sched.step()
        return out

    t0 = time.perf_counter()
    result = fit(step, batches(x, batch_size=batch, seed=seed), steps, models=net,
                 optimizers=opt, ema_decay=0.999, device="cpu", progress=False)
    return next(iter(result.ema.values())).eval(), time.perf_counter() - t0


def timed(fn, repeats=1):
    """(output of the first call, best wall time of ``repeats`` calls)."""
    best, out = math.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        o = fn()
        best = min(best, time.perf_counter() - t0)
        out = o if out is None else out
    return out, best


def compare(label, net, shape, distance, floor, repeats):
    """Print the table for one model; return {steps: (time ratio, quality ratio)}."""
    betas = linear_beta_schedule(T)
    ab = alpha_bar(betas)

    def eps(x, t):
        return net(x, t)

    def gen():
        return torch.Generator().manual_seed(1)

    ref, t_ref = timed(lambda: ddpm_sample(eps, shape, betas, generator=gen()), repeats)
    d_ref = distance(ref)
    print(f"\n{label}: {shape[0]} samples, 1 thread, data-vs-data floor {floor:.4g}")
    print(f"{'sampler':>10} {'steps':>6} {'seconds':>8} {'DDPM/DDIM time':>15} {'distance':>10} "
          f"{'DDIM/DDPM dist.':>16}")
    print(f"{'DDPM':>10} {T:6d} {t_ref:8.2f} {1.0:15.1f} {d_ref:10.4g} {1.0:16.2f}"
          f"   (DDPM's distance is {d_ref / abs(floor):.0f}× the |floor|)")
    out = {}
    for s in DDIM_STEPS:
        x, t_s = timed(lambda s=s: ddim_sample(eps, shape, ab, s, eta=0.0, generator=gen()),
                       repeats)
        d = distance(x)
        out[s] = (t_ref / t_s, d / d_ref)
        print(f"{'DDIM η=0':>10} {s:6d} {t_s:8.2f} {t_ref / t_s:15.1f} {d:10.4g} "
              f"{d / d_ref:16.2f}", flush=True)
    return out


def verdict(label, results):
    speedup, quality = results[TARGET_STEPS]
    ok = speedup >= TARGET_SPEEDUP and quality <= TARGET_QUALITY
    print(f"{label}: DDIM-{TARGET_STEPS} is {speedup:.1f}× faster (target ≥ {TARGET_SPEEDUP:g}×) "
          f"at {quality:.2f}× DDPM's distance (target ≤ {TARGET_QUALITY}): "
          f"{'target met' if ok else 'target NOT met'}")
    return ok


def test_ddim_against_ddpm_time_and_quality():
    torch.set_num_threads(1)
    t_start = time.perf_counter()

    # --- 2-D: ring8 --------------------------------------------------------------------
    seed_everything(0)
    scale = 1 / math.sqrt(2)                               # ring8 has radius 2: unit variance
    x = toy2d("ring8", TOY["n_train"], seed=0) * scale
    held_out = toy2d("ring8", TOY["n_eval"], seed=1) * scale
    floor_2d = mmd2(toy2d("ring8", TOY["n_eval"], seed=2) * scale, held_out, BANDWIDTH).item()
    mlp, t_mlp = train(MLPDenoiser(dim=2, hidden=TOY["hidden"], depth=3), x, TOY["steps"],
                       TOY["batch"], TOY["lr"])
    print(f"\ntrained the 2-D MLPDenoiser ({TOY['steps']} steps) in {t_mlp:.0f} s")
    toy = compare(f"2-D ring8, MMD² (h = {BANDWIDTH}) to held-out data", mlp,
                  (TOY["n_eval"], 2), lambda s: mmd2(s, held_out, BANDWIDTH).item(), floor_2d,
                  repeats=3)

    # --- digits (8×8) --------------------------------------------------------------------
    seed_everything(0)
    x_train = digits("train", size=8).images
    x_test = digits("test", size=8).images
    classifier = digits_classifier()
    with torch.no_grad():
        f_test = classifier.features(x_test)
        floor_digits = frechet_distance_from_features(classifier.features(x_train),
                                                      f_test).item()

    def frechet(images):
        with torch.no_grad():
            return frechet_distance_from_features(classifier.features(images.clamp(-1, 1)),
                                                  f_test).item()

    unet, t_unet = train(UNet(channels=1, base=DIGITS["base"], mults=DIGITS["mults"]), x_train,
                         DIGITS["steps"], DIGITS["batch"], DIGITS["lr"])
    print(f"\ntrained the digits UNet ({DIGITS['steps']} steps) in {t_unet:.0f} s")
    dig = compare("digits 8×8, digits Fréchet distance to the test digits", unet,
                  (len(x_test), 1, 8, 8), frechet, floor_digits, repeats=1)

    print()
    ok_toy = verdict("2-D ring8", toy)
    verdict("digits   ", dig)
    # The digits UNet gets only DIGITS["steps"] steps (the benchmark's budget): its DDPM samples
    # are far from the floor, so its quality ratio is printed, not asserted.
    print(f"digits: the UNet is trained for {DIGITS['steps']} steps only (the benchmark's budget); "
          f"its ratios say how DDIM behaves on an undertrained model, hence not asserted")
    print(f"benchmark total {time.perf_counter() - t_start:.0f} s")
    # The sampler's cost is one network call per step: the speed-up is the step ratio up to
    # the per-step overhead, on both models.
    for results in (toy, dig):
        assert results[TARGET_STEPS][0] >= TARGET_SPEEDUP, results
    assert ok_toy, toy
