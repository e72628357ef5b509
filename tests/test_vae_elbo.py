"""vae.elbo against torch.distributions and the closed forms of a linear-Gaussian model."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import Bernoulli, Independent, Normal, kl_divergence

from vae.elbo import (
    ELBO,
    bernoulli_log_likelihood,
    diagonal_gaussian_log_prob,
    elbo,
    gaussian_kl,
    gaussian_log_likelihood,
    iwae_bound,
    reparameterize,
    standard_normal_log_prob,
)


def _q(shape=(5, 3), seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=dtype),
            torch.randn(shape, generator=g, dtype=dtype))


def test_gaussian_kl_matches_torch_distributions():
    mu, logvar = _q((4, 6, 3))
    q = Independent(Normal(mu, (0.5 * logvar).exp()), 1)
    p = Independent(Normal(torch.zeros_like(mu), torch.ones_like(mu)), 1)
    torch.testing.assert_close(gaussian_kl(mu, logvar), kl_divergence(q, p))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(-5, 5), st.floats(-5, 5)), min_size=1, max_size=6))
def test_gaussian_kl_is_non_negative_and_zero_only_at_the_prior(pairs):
    mu = torch.tensor([p[0] for p in pairs], dtype=torch.float64)
    logvar = torch.tensor([p[1] for p in pairs], dtype=torch.float64)
    kl = gaussian_kl(mu, logvar)
    assert kl >= 0
    assert gaussian_kl(torch.zeros_like(mu), torch.zeros_like(mu)) == 0


def test_reparameterize_moments_and_gradients():
    mu = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    logvar = torch.tensor([0.0, math.log(4.0)], dtype=torch.float64, requires_grad=True)
    n = 200_000
    eps = torch.randn(n, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    z = reparameterize(mu, logvar, eps)
    # mean within 5 standard errors, variance within 5 standard errors (Var of s^2 ≈ 2σ⁴/n)
    se_mean = torch.tensor([1.0, 2.0], dtype=torch.float64) / math.sqrt(n)
    assert ((z.mean(0) - mu).abs() < 5 * se_mean).all()
    var = torch.tensor([1.0, 4.0], dtype=torch.float64)
    assert ((z.var(0) - var).abs() < 5 * var * math.sqrt(2 / n)).all()
    # dz/dmu = 1, dz/dlogvar = ½ σ ε
    z.sum().backward()
    torch.testing.assert_close(mu.grad, torch.full((2,), float(n), dtype=torch.float64))
    expected = (0.5 * (0.5 * logvar.detach()).exp() * eps).sum(0)
    torch.testing.assert_close(logvar.grad, expected)


def test_reparameterize_draws_noise_of_mu_shape_and_rejects_bad_eps():
    mu, logvar = _q()
    assert reparameterize(mu, logvar).shape == mu.shape
    assert reparameterize(mu, logvar, torch.zeros(7, *mu.shape, dtype=mu.dtype)).shape == \
        (7, *mu.shape)
    with pytest.raises(ValueError, match="eps"):
        reparameterize(mu, logvar, torch.zeros(5, 4, dtype=mu.dtype))
    z = reparameterize(mu, logvar, n_samples=4)
    assert z.shape == (4, *mu.shape) and z.dtype == mu.dtype
    torch.manual_seed(7)
    drawn = reparameterize(mu, logvar, n_samples=3)
    torch.manual_seed(7)
    torch.testing.assert_close(drawn, reparameterize(mu, logvar, torch.randn(3, *mu.shape,
                                                                            dtype=mu.dtype)))
    with pytest.raises(ValueError, match="not both"):
        reparameterize(mu, logvar, torch.zeros(2, *mu.shape, dtype=mu.dtype), n_samples=2)
    with pytest.raises(ValueError, match="n_samples"):
        reparameterize(mu, logvar, n_samples=0)


def test_log_probs_match_torch_distributions():
    mu, logvar = _q((6, 3))
    z = torch.randn(4, 6, 3, dtype=torch.float64)
    expected = Independent(Normal(mu, (0.5 * logvar).exp()), 1).log_prob(z)
    torch.testing.assert_close(diagonal_gaussian_log_prob(z, mu, logvar), expected)
    torch.testing.assert_close(standard_normal_log_prob(z), Normal(0.0, 1.0).log_prob(z).sum(-1))


def test_bernoulli_log_likelihood_matches_torch_and_broadcasts_samples():
    g = torch.Generator().manual_seed(2)
    x = (torch.rand(5, 1, 4, 4, generator=g) > 0.5).double()
    logits = 3 * torch.randn(3, 5, 1, 4, 4, generator=g, dtype=torch.float64)
    out = bernoulli_log_likelihood(logits, x)
    assert out.shape == (3, 5)
    torch.testing.assert_close(out, Bernoulli(logits=logits).log_prob(x.expand_as(logits))
                               .flatten(2).sum(-1))
    # extreme logits do not overflow
    assert torch.isfinite(bernoulli_log_likelihood(torch.full((1, 2), 1e4), torch.ones(1, 2)))


def test_gaussian_log_likelihood_matches_torch():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 2, 3, generator=g, dtype=torch.float64)
    mean = torch.randn(2, 5, 2, 3, generator=g, dtype=torch.float64)
    out = gaussian_log_likelihood(mean, x, log_sigma=math.log(0.3))
    torch.testing.assert_close(out, Normal(mean, 0.3).log_prob(x.expand_as(mean)).flatten(2)
                               .sum(-1))
    assert gaussian_log_likelihood(mean[0], x).shape == (5,)


def test_elbo_is_reconstruction_minus_kl():
    mu, logvar = _q((5, 3))
    log_px_z = torch.randn(4, 5, dtype=torch.float64)
    out = elbo(log_px_z, mu, logvar)
    assert isinstance(out, ELBO)
    torch.testing.assert_close(out.reconstruction, log_px_z.mean(0))
    torch.testing.assert_close(out.kl, gaussian_kl(mu, logvar))
    torch.testing.assert_close(out.elbo, out.reconstruction - out.kl)
    torch.testing.assert_close(elbo(log_px_z[0], mu, logvar).reconstruction, log_px_z[0])


# A linear-Gaussian model with an exact posterior: z ~ N(0, 1), x | z ~ N(a z, s²).
A, S = 1.5, 0.5


def _log_px_z(x):
    return lambda z: Normal(A * z[..., 0], S).log_prob(x)              # z (K, B, 1) -> (K, B)


def _exact(x):
    v = A * A + S * S
    log_px = Normal(0.0, math.sqrt(v)).log_prob(x)
    post_mu, post_var = A * x / v, S * S / v
    return log_px, post_mu, post_var


def test_iwae_with_the_exact_posterior_is_log_p_x_for_every_k():
    x = torch.tensor([-1.0, 0.3, 2.0], dtype=torch.float64)
    log_px, post_mu, post_var = _exact(x)
    mu, logvar = post_mu[:, None], torch.full((3, 1), math.log(post_var), dtype=torch.float64)
    for k in (1, 5, 50):
        torch.testing.assert_close(iwae_bound(_log_px_z(x), mu, logvar, k), log_px)


def test_iwae_is_non_decreasing_in_k_and_below_log_p_x():
    torch.manual_seed(0)
    x = torch.full((4000,), 1.2, dtype=torch.float64)                 # 4000 repetitions
    log_px, post_mu, post_var = _exact(x[:1])
    mu = torch.full((4000, 1), 0.2, dtype=torch.float64)             # a poor q: wrong mean,
    logvar = torch.full((4000, 1), math.log(0.3), dtype=torch.float64)  # and wrong variance
    means, ses = [], []
    for k in (1, 10, 100):
        b = iwae_bound(_log_px_z(x), mu, logvar, k)
        means.append(b.mean().item())
        ses.append(b.std().item() / math.sqrt(len(b)))
    # the exact ELBO of this q (closed form): E_q log N(x; a z, s²) − KL(q ‖ N(0, 1))
    m, v = 0.2, 0.3
    exact_elbo = (-0.5 * math.log(2 * math.pi * S * S) - ((1.2 - A * m) ** 2 + A * A * v)
                  / (2 * S * S) - 0.5 * (v + m * m - 1 - math.log(v)))
    assert abs(means[0] - exact_elbo) < 5 * ses[0]
    assert means[0] + 5 * ses[0] < means[1] and means[1] + 5 * ses[1] < means[2]
    assert means[2] < log_px.item() + 5 * ses[2]


@pytest.mark.parametrize("call", [
    lambda: gaussian_kl(torch.zeros(3), torch.zeros(4)),
    lambda: gaussian_kl(torch.zeros(3, dtype=torch.int64), torch.zeros(3)),
    lambda: gaussian_kl([0.0], [0.0]),
    lambda: diagonal_gaussian_log_prob(torch.zeros(2, 4), torch.zeros(2, 3), torch.zeros(2, 3)),
    lambda: standard_normal_log_prob(torch.zeros(())),
    lambda: bernoulli_log_likelihood(torch.zeros(2, 3), torch.full((2, 3), 2.0)),
    lambda: bernoulli_log_likelihood(torch.zeros(2, 4), torch.zeros(2, 3)),
    lambda: gaussian_log_likelihood(torch.zeros(2, 4), torch.zeros(2, 3)),
    lambda: elbo(torch.zeros(4, 6), torch.zeros(5, 2), torch.zeros(5, 2)),
    lambda: elbo(torch.zeros(4, 5), torch.zeros(5), torch.zeros(5)),
    lambda: iwae_bound(lambda z: z[..., 0], torch.zeros(3, 1), torch.zeros(3, 1), 0),
    lambda: iwae_bound(lambda z: z, torch.zeros(3, 1), torch.zeros(3, 1), 2),
])
def test_bad_input_raises_value_error(call):
    with pytest.raises(ValueError):
        call()


def test_independent_pixels_is_a_normalised_smoothed_product_of_coins():
    import itertools

    from vae.elbo import independent_pixels_log_prob

    x_train = torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    every = torch.tensor(list(itertools.product([0.0, 1.0], repeat=3)))      # all 2^3 images
    log_p = independent_pixels_log_prob(x_train, every)
    assert torch.logsumexp(log_p, 0).item() == pytest.approx(0.0, abs=1e-6)   # sums to one
    p = torch.tensor([5 / 6, 2 / 6, 2 / 6])                                  # (count + 1)/(N + 2)
    expected = (every * p.log() + (1 - every) * (1 - p).log()).sum(1)
    assert torch.allclose(log_p, expected, atol=1e-6)
    assert independent_pixels_log_prob(x_train[:, None], every[:, None]).shape == (8,)


@pytest.mark.parametrize("x_train, x, match", [
    (torch.full((4, 3), 0.5), torch.zeros(2, 3), "binary"),
    (torch.zeros(4, 3), torch.full((2, 3), 2.0), "binary"),
    (torch.zeros(4, 3), torch.zeros(2, 4), "same image shape"),
])
def test_independent_pixels_bad_input(x_train, x, match):
    from vae.elbo import independent_pixels_log_prob

    with pytest.raises(ValueError, match=match):
        independent_pixels_log_prob(x_train, x)
