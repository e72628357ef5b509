"""diffusion.sampling: hand-computed steps, DDIM(η = 1) = DDPM, inversion round trips, and the
samplers on Gaussian data, whose optimal ε is known in closed form."""

import math

import pytest
import torch

from diffusion.sampling import (
    ddim_invert,
    ddim_sample,
    ddim_step,
    ddim_timesteps,
    ddpm_sample,
    ddpm_step,
)
from diffusion.schedules import alpha_bar, linear_beta_schedule, q_posterior

pytestmark = pytest.mark.usefixtures("one_thread")

M, S = 0.5, 0.3             # data N(M, S²) per coordinate


def gaussian_eps(ab):
    """E[ε | x_t] for x_0 ~ N(M, S² I): x_t ~ N(√ᾱ M, ᾱ S² + 1 − ᾱ), ε's regression on x_t."""
    def eps_model(x_t, t):
        a = ab[t].to(x_t.dtype).reshape(-1, *([1] * (x_t.ndim - 1)))
        return (1 - a).sqrt() * (x_t - a.sqrt() * M) / (a * S * S + 1 - a)
    return eps_model


def test_ddpm_step_by_hand():
    b = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)
    ab = torch.cumprod(1 - b, 0)
    x_t, eps, z = (torch.tensor([[0.7]], dtype=torch.float64),
                   torch.tensor([[-0.4]], dtype=torch.float64),
                   torch.tensor([[1.3]], dtype=torch.float64))
    t = 2
    mean = (0.7 - 0.3 / math.sqrt(1 - ab[2].item()) * -0.4) / math.sqrt(0.7)
    var = (1 - ab[1].item()) / (1 - ab[2].item()) * 0.3
    assert ddpm_step(x_t, eps, t, b, z).item() == pytest.approx(mean + math.sqrt(var) * 1.3,
                                                                rel=1e-12)
    # at t = 0 the step is the mean, whatever the noise
    out0 = ddpm_step(x_t, eps, 0, b, z)
    assert out0.item() == pytest.approx((0.7 - 0.1 / math.sqrt(0.1) * -0.4) / math.sqrt(0.9),
                                        rel=1e-12)
    # the step's mean is the posterior mean at the x̂_0 that ε implies
    x0_hat = (x_t - (1 - ab[t]).sqrt() * eps) / ab[t].sqrt()
    torch.testing.assert_close(ddpm_step(x_t, eps, t, b, torch.zeros_like(z)),
                               q_posterior(x0_hat, x_t, t, b)[0])


def test_ddim_step_by_hand():
    ab = torch.tensor([0.9, 0.6, 0.3], dtype=torch.float64)
    x_t, eps = torch.tensor([[0.7]], dtype=torch.float64), torch.tensor([[-0.4]],
                                                                          dtype=torch.float64)
    x0 = (0.7 - math.sqrt(0.7) * -0.4) / math.sqrt(0.3)
    assert ddim_step(x_t, eps, 2, 0, ab).item() == pytest.approx(
        math.sqrt(0.9) * x0 + math.sqrt(0.1) * -0.4, rel=1e-12)
    assert ddim_step(x_t, eps, 2, -1, ab).item() == pytest.approx(x0, rel=1e-12)
    z = torch.tensor([[0.8]], dtype=torch.float64)
    sigma = 0.5 * math.sqrt(0.4 / 0.7) * math.sqrt(1 - 0.3 / 0.6)
    assert ddim_step(x_t, eps, 2, 1, ab, eta=0.5, noise=z).item() == pytest.approx(
        math.sqrt(0.6) * x0 + math.sqrt(0.4 - sigma ** 2) * -0.4 + sigma * 0.8, rel=1e-12)


def test_ddim_with_eta_one_is_the_ddpm_step():
    b = linear_beta_schedule(40, 1e-3, 0.2)
    ab = alpha_bar(b)
    g = torch.Generator().manual_seed(0)
    x_t, eps, z = (torch.randn(5, 3, generator=g, dtype=torch.float64) for _ in range(3))
    for t in (1, 10, 39):
        torch.testing.assert_close(ddim_step(x_t, eps, t, t - 1, ab, eta=1.0, noise=z),
                                   ddpm_step(x_t, eps, t, b, z))
    torch.testing.assert_close(ddim_step(x_t, eps, 0, -1, ab, eta=1.0, noise=z),
                               ddpm_step(x_t, eps, 0, b, z))


def test_ddim_timesteps():
    assert ddim_timesteps(1000, 1000) == list(range(999, -1, -1))
    ts = ddim_timesteps(1000, 10)
    assert ts[0] == 999 and ts[-1] == 0 and len(set(ts)) == 10
    assert all(a > b for a, b in zip(ts, ts[1:]))
    assert ddim_timesteps(10, 1) == [9]


def test_ddim_inversion_then_sampling_reconstructs_the_input():
    ab = alpha_bar(linear_beta_schedule(1000))
    eps_model = gaussian_eps(ab)
    x0 = M + S * torch.randn(6, 2, generator=torch.Generator().manual_seed(1),
                             dtype=torch.float64)

    def error(steps, iterations):
        x_T = ddim_invert(eps_model, x0, ab, steps, iterations=iterations)
        assert x_T.dtype == torch.float64 and x_T.shape == x0.shape
        return (ddim_sample(eps_model, x0.shape, ab, steps, x_T=x_T) - x0).abs().max().item()

    # the plain inversion's error is first order in the step: 10× the steps, ~10× smaller
    e20, e200 = error(20, 0), error(200, 0)
    assert 5 < e20 / e200 < 20
    # fixed-point inversion is exact
    assert error(20, 30) < 1e-10
@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_samplers_reproduce_gaussian_data(sampler):
    b = linear_beta_schedule(1000)
    ab = alpha_bar(b)
    n = 10_000
    g = torch.Generator().manual_seed(2)
    if sampler == "ddpm":
        x = ddpm_sample(gaussian_eps(ab), (n, 1), b, generator=g, dtype=torch.float64)
    else:
        x = ddim_sample(gaussian_eps(ab), (n, 1), ab, 100, generator=g, dtype=torch.float64)
    # discretisation bias is small; allow it plus 5 standard errors
    assert abs(x.mean().item() - M) < 0.01 + 5 * S / math.sqrt(n)
    assert abs(x.std().item() - S) < 0.01 + 5 * S / math.sqrt(2 * n)


def test_samplers_are_reproducible_given_a_generator():
    b = linear_beta_schedule(50)
    ab = alpha_bar(b)
    run = lambda f: f(torch.Generator().manual_seed(3))  # noqa: E731
    torch.testing.assert_close(
        run(lambda g: ddpm_sample(gaussian_eps(ab), (4, 2), b, generator=g)),
        run(lambda g: ddpm_sample(gaussian_eps(ab), (4, 2), b, generator=g)))
    torch.testing.assert_close(
        run(lambda g: ddim_sample(gaussian_eps(ab), (4, 2), ab, 10, eta=0.5, generator=g)),
        run(lambda g: ddim_sample(gaussian_eps(ab), (4, 2), ab, 10, eta=0.5, generator=g)))


_AB = torch.tensor([0.9, 0.6, 0.3])


@pytest.mark.parametrize("call", [
    lambda: ddpm_step(torch.zeros(2, 1), torch.zeros(2, 1), 3, torch.full((3,), 0.1)),
    lambda: ddpm_step(torch.zeros(2, 1), torch.zeros(2, 2), 0, torch.full((3,), 0.1)),
    lambda: ddpm_step(torch.zeros(2, 1), torch.zeros(2, 1), 0, torch.full((3,), 1.5)),
    lambda: ddpm_step(torch.zeros(2, 1), torch.zeros(2, 1), 0, torch.full((3,), 0.1),
                      noise=torch.zeros(3, 1)),
    lambda: ddim_step(torch.zeros(2, 1), torch.zeros(2, 1), 3, 1, _AB),
    lambda: ddim_step(torch.zeros(2, 1), torch.zeros(2, 1), 1, 1, _AB),
    lambda: ddim_step(torch.zeros(2, 1), torch.zeros(2, 1), 1, -2, _AB),
    lambda: ddim_step(torch.zeros(2, 1), torch.zeros(2, 1), 2, 1, _AB, eta=-0.1),
    lambda: ddim_step(torch.zeros(2, 1), torch.zeros(2, 1), 2, 1, torch.tensor([0.5, 1.0, 0.2])),
    lambda: ddim_timesteps(10, 11),
    lambda: ddim_timesteps(10, 0),
    lambda: ddim_sample(lambda x, t: x, (2, 1), _AB, 4),
    lambda: ddim_sample(lambda x, t: x, (2, 1), _AB, 2, x_T=torch.zeros(3, 1)),
    lambda: ddpm_sample(lambda x, t: x, (0, 1), torch.full((3,), 0.1)),
])
def test_bad_input_raises_value_error(call):
    with pytest.raises(ValueError):
        call()
