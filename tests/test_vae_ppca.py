"""On probabilistic PCA a linear-Gaussian VAE's trained bound reaches the exact log-likelihood
(vae/01_elbo, issue 6).

pPCA, x = W z + μ + σ ε with z ~ N(0, I_q), has log p(x) = log N(x; μ, W Wᵀ + σ² I) in closed form
(foundations.ppca_log_likelihood) and a closed-form maximum ℓ_ML (foundations.ppca_fit). A
``vae.VAE`` with linear encoder and decoder (``MLPEncoder``/``MLPDecoder`` with ``depth=0``) and the
Gaussian likelihood with a learned scalar σ *is* pPCA with an amortised diagonal q, and its ELBO's
maximum is ℓ_ML (the best diagonal q of a decoder with orthogonal columns is the exact posterior;
Lucas et al. 2019). The bound is estimated here by the VAE's own Monte Carlo ELBO, with its standard
error, independently of the closed forms the notebook uses.

A decoder frozen at ML's W rotated by R has the same likelihood, but with non-orthogonal columns the
best diagonal q misses the posterior by KL = ½(Σ_j log M_jj − log|M|), M = WᵀW + σ² I: a trained
encoder must stall exactly that far below ℓ_ML. That gap is many times the tolerance of the first
test, so the first test would fail for a bound that did not close.
"""

import math

import torch

from foundations import ppca_fit, ppca_log_likelihood
from utils.data import batches
from utils.training import fit
from vae import VAE, MLPDecoder, MLPEncoder, vae_step

D, Q, N = 8, 2, 1_000
TOL = 0.02        # nats per point; both runs below end within 0.005 of their targets
STEPS = 500


def ppca_data() -> torch.Tensor:
    """N points of a pPCA with non-orthogonal columns and σ = 0.3, as images (N, 1, 1, D), float64.

    Centred (μ = 0): with a large offset the encoder's weights and biases are coupled and a
    frozen-decoder encoder converges several times more slowly (measured), which is not what
    these tests are about.
    """
    g = torch.Generator().manual_seed(0)
    W = torch.randn(D, Q, generator=g, dtype=torch.float64)
    W[:, 1] += 0.8 * W[:, 0]                                # correlated columns
    z = torch.randn(N, Q, generator=g, dtype=torch.float64)
    x = z @ (0.5 * W).T + 0.3 * torch.randn(N, D, generator=g, dtype=torch.float64)
    return x.reshape(N, 1, 1, D)


def linear_vae() -> VAE:
    torch.manual_seed(1)
    return VAE(MLPEncoder((1, 1, D), Q, depth=0), MLPDecoder((1, 1, D), Q, depth=0),
               "gaussian").double()


def train(model: VAE, images: torch.Tensor, params) -> None:
    opt = torch.optim.Adam(params, lr=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=STEPS)
    inner = vae_step(model, opt)

    def step(batch):
        metrics = inner(batch)
        sched.step()
        return metrics

    fit(step, batches(images, batch_size=N), STEPS, models=model, optimizers=opt,
        schedulers=sched, device="cpu", progress=False)


@torch.no_grad()
def mc_bound(model: VAE, images: torch.Tensor, passes: int = 100) -> tuple[float, float]:
    """The average ELBO by the VAE's own Monte Carlo estimate, and its standard error."""
    torch.manual_seed(2)
    runs = torch.stack([model(images).elbo.mean() for _ in range(passes)])
    return runs.mean().item(), runs.std().item() / math.sqrt(passes)


def test_trained_linear_vae_bound_reaches_the_exact_ppca_log_likelihood(one_thread):
    images = ppca_data()
    x = images.reshape(N, D)
    ll_ml = ppca_log_likelihood(x, *ppca_fit(x, Q)).mean().item()
    model = linear_vae()
    before, _ = mc_bound(model, images, passes=10)
    train(model, images, model.parameters())
    bound, se = mc_bound(model, images)
    assert ll_ml - before > 10 * TOL                        # the start is far from the optimum
    assert bound - 4 * se <= ll_ml                          # a lower bound (up to MC error)
    assert ll_ml - (bound + 4 * se) < TOL, f"bound {bound} +- {se}, l_ML {ll_ml}"
    # the decoder itself, as a pPCA, is (nearly) the maximum-likelihood one
    W = model.decoder.body[0].weight.detach()
    b = model.decoder.body[0].bias.detach()
    ll = ppca_log_likelihood(x, W, b, (2 * model.sigma_log()).exp().detach()).mean().item()
    assert ll <= ll_ml + 1e-9 and ll_ml - ll < TOL


def test_frozen_non_orthogonal_decoder_leaves_the_kl_of_the_best_diagonal_q(one_thread):
    images = ppca_data()
    x = images.reshape(N, D)
    W_ml, mu_ml, s2_ml = ppca_fit(x, Q)
    c = math.cos(math.pi / 4)
    W45 = W_ml @ torch.tensor([[c, -c], [c, c]], dtype=torch.float64)
    ll_ml = ppca_log_likelihood(x, W_ml, mu_ml, s2_ml).mean().item()
    assert abs(ppca_log_likelihood(x, W45, mu_ml, s2_ml).mean().item() - ll_ml) < 1e-10
    M = W45.T @ W45 + s2_ml * torch.eye(Q, dtype=torch.float64)
    penalty = 0.5 * (M.diagonal().log().sum() - torch.logdet(M)).item()
    assert penalty > 5 * TOL                                # the first test would reject it

    model = linear_vae()
    with torch.no_grad():
        model.decoder.body[0].weight.copy_(W45)
        model.decoder.body[0].bias.copy_(mu_ml)
        model.log_sigma.fill_(0.5 * math.log(s2_ml.item()))
    for p in [*model.decoder.parameters(), model.log_sigma]:
        p.requires_grad_(False)
    train(model, images, model.encoder.parameters())
    bound, se = mc_bound(model, images)
    ceiling = ll_ml - penalty
    assert bound - 4 * se <= ceiling, f"bound {bound} +- {se} passes the ceiling {ceiling}"
    assert ceiling - (bound + 4 * se) < TOL, f"bound {bound} +- {se}, ceiling {ceiling}"
