"""diffusion.schedules and diffusion.parameterization against their formulas, Monte Carlo and
Bayes' rule on Gaussians."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffusion.parameterization import PARAMETERIZATIONS, denoising_loss, from_eps, to_eps
from diffusion.schedules import (
    alpha_bar,
    cosine_beta_schedule,
    gather,
    linear_beta_schedule,
    q_posterior,
    q_sample,
    snr,
)


def test_linear_schedule_is_the_ddpm_one():
    b = linear_beta_schedule(1000)
    assert b.shape == (1000,) and b.dtype == torch.float64
    assert b[0].item() == pytest.approx(1e-4) and b[-1].item() == pytest.approx(0.02)
    torch.testing.assert_close(b[1:] - b[:-1], torch.full((999,), (0.02 - 1e-4) / 999,
                                                            dtype=torch.float64))


def test_cosine_schedule_matches_its_alpha_bar_formula():
    T, s = 1000, 0.008
    b = cosine_beta_schedule(T, s=s)
    f = lambda u: math.cos((u / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    expected = torch.tensor([f(t + 1) / f(0) for t in range(T)], dtype=torch.float64)
    ab = alpha_bar(b)
    # equal until the max_beta clip bites at the very end
    torch.testing.assert_close(ab[:-5], expected[:-5], rtol=1e-10, atol=1e-12)
    assert b.max().item() <= 0.999 and (b > 0).all()


def test_alpha_bar_is_the_product_and_snr_decreases():
    b = linear_beta_schedule(50, 1e-3, 0.2)
    ab = alpha_bar(b)
    torch.testing.assert_close(ab, torch.cumprod(1 - b, 0))
    s = snr(ab)
    torch.testing.assert_close(s, ab / (1 - ab))
    assert (s[1:] < s[:-1]).all()


def test_q_sample_moments_by_monte_carlo():
    b = linear_beta_schedule(100)
    ab = alpha_bar(b)
    n = 100_000
    x0 = torch.full((n, 1), 1.5, dtype=torch.float64)
    t = 60
    x_t = q_sample(x0, t, torch.randn(n, 1, dtype=torch.float64), ab)
    mean, var = math.sqrt(ab[t]) * 1.5, 1 - ab[t].item()
    assert abs(x_t.mean().item() - mean) < 5 * math.sqrt(var / n)
    assert abs(x_t.var().item() - var) < 5 * var * math.sqrt(2 / n)


def test_q_sample_equals_the_chain_of_one_step_kernels():
    # x_t from T one-step kernels q(x_t | x_{t-1}) has the closed-form marginal's moments
    b = linear_beta_schedule(20, 0.01, 0.3)
    n = 200_000
    x = torch.full((n,), -0.7, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    for t in range(20):
        x = (1 - b[t]).sqrt() * x + b[t].sqrt() * torch.randn(n, generator=g, dtype=torch.float64)
    ab = alpha_bar(b)[-1]
    assert abs(x.mean().item() - ab.sqrt().item() * -0.7) < 5 * math.sqrt((1 - ab) / n)
    assert abs(x.var().item() - (1 - ab).item()) < 5 * (1 - ab).item() * math.sqrt(2 / n)


def test_q_posterior_is_bayes_rule_on_gaussians():
    # q(x_{t-1} | x_t, x_0) ∝ q(x_t | x_{t-1}) q(x_{t-1} | x_0): product of two Gaussians in
    # x_{t-1}, with precisions (1 - β_t)/β_t and 1/(1 - ᾱ_{t-1})
    b = linear_beta_schedule(30, 1e-3, 0.1)
    ab = alpha_bar(b)
    x0 = torch.tensor([[0.3], [-1.0]], dtype=torch.float64)
    x_t = torch.tensor([[0.9], [0.2]], dtype=torch.float64)
    for t in (1, 7, 29):
        mean, var = q_posterior(x0, x_t, t, b)
        prec = (1 - b[t]) / b[t] + 1 / (1 - ab[t - 1])
        m = ((1 - b[t]).sqrt() / b[t] * x_t + ab[t - 1].sqrt() / (1 - ab[t - 1]) * x0) / prec
        torch.testing.assert_close(mean, m)
        torch.testing.assert_close(var, (1 / prec).expand(2, 1))
    mean, var = q_posterior(x0, x_t, 0, b)
    torch.testing.assert_close(mean, x0)
    assert (var == 0).all()


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 99), st.sampled_from(PARAMETERIZATIONS))
def test_parameterization_conversions_round_trip(t, kind):
    ab = alpha_bar(cosine_beta_schedule(100))
    g = torch.Generator().manual_seed(t)
    x0, eps = torch.randn(3, 2, generator=g, dtype=torch.float64), \
        torch.randn(3, 2, generator=g, dtype=torch.float64)
    x_t = q_sample(x0, t, eps, ab)
    pred = from_eps(eps, kind, x_t, t, ab)
    torch.testing.assert_close(to_eps(pred, kind, x_t, t, ab), eps)
    if kind == "x0":
        torch.testing.assert_close(pred, x0)
    if kind == "score":                    # ∇ log N(x_t; √ᾱ x_0, (1 − ᾱ) I)
        torch.testing.assert_close(pred, -(x_t - ab[t].sqrt() * x0) / (1 - ab[t]))
    if kind == "v":
        torch.testing.assert_close(pred, ab[t].sqrt() * eps - (1 - ab[t]).sqrt() * x0)


def test_denoising_loss_is_zero_for_the_oracle_and_matches_its_definition():
    ab = alpha_bar(linear_beta_schedule(50))
    x0 = torch.randn(8, 3, dtype=torch.float64)
    eps = torch.randn(8, 3, dtype=torch.float64)
    t = torch.randint(0, 50, (8,))

    def oracle(x_t, tt):                     # knows x0, so returns the exact ε
        return (x_t - ab[tt].sqrt()[:, None] * x0) / (1 - ab[tt]).sqrt()[:, None]

    assert denoising_loss(oracle, x0, ab, t=t, eps=eps).item() < 1e-20
    zero = lambda x_t, tt: torch.zeros_like(x_t)  # noqa: E731
    assert denoising_loss(zero, x0, ab, t=t, eps=eps).item() == pytest.approx(
        eps.pow(2).mean().item())
    assert denoising_loss(zero, x0, ab, target="x0", t=t, eps=eps).item() == pytest.approx(
        x0.pow(2).mean().item())
    cond_seen = []
    denoising_loss(lambda x, tt, c: cond_seen.append(c) or torch.zeros_like(x), x0, ab,
                   cond=torch.arange(8))
    assert torch.equal(cond_seen[0], torch.arange(8))


@pytest.mark.parametrize("call", [
    lambda: linear_beta_schedule(0),
    lambda: linear_beta_schedule(10, 0.02, 0.01),
    lambda: linear_beta_schedule(10, 1e-4, 1.0),
    lambda: cosine_beta_schedule(10, max_beta=1.0),
    lambda: cosine_beta_schedule(10, s=-0.1),
    lambda: alpha_bar(torch.tensor([0.1, 1.0])),
    lambda: alpha_bar(torch.tensor([0.0, 0.1])),
    lambda: alpha_bar(torch.zeros(2, 2)),
    lambda: snr(torch.tensor([1.0])),
    lambda: q_sample(torch.zeros(2, 1), 10, torch.zeros(2, 1), torch.full((10,), 0.5)),
    lambda: q_sample(torch.zeros(2, 1), -1, torch.zeros(2, 1), torch.full((10,), 0.5)),
    lambda: q_sample(torch.zeros(2, 1), torch.tensor([1.0, 2.0]), torch.zeros(2, 1),
                     torch.full((10,), 0.5)),
    lambda: q_sample(torch.zeros(2, 1), 1, torch.zeros(3, 1), torch.full((10,), 0.5)),
    lambda: q_posterior(torch.zeros(2, 1), torch.zeros(2, 1), 5, torch.full((5,), 0.1)),
    lambda: to_eps(torch.zeros(2, 1), "noise", torch.zeros(2, 1), 0, torch.full((5,), 0.5)),
    lambda: from_eps(torch.zeros(2, 2), "x0", torch.zeros(2, 1), 0, torch.full((5,), 0.5)),
    lambda: denoising_loss(lambda x, t: x, torch.zeros(2, 1), torch.full((5,), 0.5),
                           target="score"),
    lambda: denoising_loss(lambda x, t: x[:1], torch.zeros(2, 1), torch.full((5,), 0.5)),
])
def test_bad_input_raises_value_error(call):
    with pytest.raises(ValueError):
        call()


def test_gather_casts_before_it_moves():
    """Apple's MPS has no float64: gather must turn the float64 schedule into like's dtype on the
    schedule's device, then move it. A TorchFunctionMode sees every Tensor.to; "meta" stands in
    for an accelerator on a CPU-only machine."""
    from torch.overrides import TorchFunctionMode

    moved = []

    class Spy(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func is torch.Tensor.to and isinstance(out, torch.Tensor) \
                    and out.device.type != "cpu":
                moved.append(out.dtype)
            return out

    values = torch.linspace(0.9, 0.1, 10, dtype=torch.float64)
    like = torch.empty(3, 2, 2, device="meta")
    with Spy():
        out = gather(values, torch.tensor([0, 4, 9]), like)
    assert out.device.type == "meta" and out.dtype == torch.float32 and out.shape == (3, 1, 1)
    assert moved and torch.float64 not in moved
