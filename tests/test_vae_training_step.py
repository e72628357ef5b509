"""vae.training_step and vae.collapse: the loss is the negative ELBO, β schedules and free bits
act as documented, the collapse diagnostics match their definitions."""

import pytest
import torch

from utils.data import batches
from utils.training import fit
from vae.collapse import active_units, activity, kl_per_dimension
from vae.elbo import gaussian_kl
from vae.networks import VAE, MLPDecoder, MLPEncoder
from vae.training_step import linear_warmup, vae_step


def _model(seed=0, d=3):
    torch.manual_seed(seed)
    return VAE(MLPEncoder((1, 4, 4), d, hidden=16), MLPDecoder((1, 4, 4), d, hidden=16))


def _data(n=64, seed=0):
    return (torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(seed)) > 0.5).float()


def test_loss_is_the_negative_elbo_at_beta_one():
    model = _model()
    x = _data(16)
    step = vae_step(model, torch.optim.SGD(model.parameters(), lr=0.0))
    torch.manual_seed(5)
    m = step(x)
    torch.manual_seed(5)
    with torch.no_grad():
        out = model(x)
    assert m["loss"] == pytest.approx(-out.elbo.mean().item(), rel=1e-6)
    assert m["elbo"] == pytest.approx(out.elbo.mean().item(), rel=1e-6)
    assert m["kl"] == pytest.approx(out.kl.mean().item(), rel=1e-6)
    assert m["beta"] == 1.0


def test_beta_schedule_is_read_per_step_and_continues_across_calls():
    model = _model()
    seen = []
    step = vae_step(model, torch.optim.SGD(model.parameters(), lr=0.0),
                    beta=lambda s: seen.append(s) or 0.5, start_step=3)
    x = _data(8)
    m = step(x)
    step(x)
    assert seen == [3, 4] and m["beta"] == 0.5
    # β = 0: the loss is the reconstruction term alone
    torch.manual_seed(0)
    m0 = vae_step(model, torch.optim.SGD(model.parameters(), lr=0.0), beta=0.0)(x)
    assert m0["loss"] == pytest.approx(-m0["reconstruction"], rel=1e-6)
    assert [linear_warmup(4)(s) for s in (0, 2, 4, 9)] == [0.0, 0.5, 1.0, 1.0]


def test_free_bits_remove_the_kl_gradient_below_lambda():
    model = _model()
    x = _data(8)
    with torch.no_grad():
        mu, logvar = model.encode(x)
    kl_j = gaussian_kl(mu.unsqueeze(-1), logvar.unsqueeze(-1)).mean(0)
    lam = float(kl_j.max()) + 1.0                       # every latent is below λ
    # with the reconstruction weight zeroed (decoder output ignores z), only KL could push μ
    for p in model.decoder.parameters():
        p.data.zero_()
    step = vae_step(model, torch.optim.SGD(model.parameters(), lr=0.0), free_bits=lam)
    m = step(x)
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in model.encoder.parameters())
    assert m["loss"] == pytest.approx(-m["reconstruction"] + lam * 3, rel=1e-6)
    # without free bits the KL does move the encoder
    vae_step(model, torch.optim.SGD(model.parameters(), lr=0.0))(x)
    assert any(p.grad.abs().max() > 0 for p in model.encoder.parameters())


def test_training_with_fit_raises_the_elbo():
    model = _model(1)
    # two binary prototypes and their mirror images: log p(x) = −log 4 is the best bound,
    # about 10 nats above what the untrained model (p ≈ ½ per pixel, −16 log 2) gives
    protos = _data(2, 1)
    protos = torch.cat([protos, 1 - protos])
    x = protos[torch.arange(256) % 4]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    with torch.no_grad():
        before = model(x, n_samples=20).elbo.mean()
    fit(vae_step(model, opt), batches(x, batch_size=64), 300, models=model, optimizers=opt,
        progress=False, device="cpu")
    with torch.no_grad():
        after = model(x, n_samples=20).elbo.mean()
    assert after > before + 5.0


def test_collapse_diagnostics():
    g = torch.Generator().manual_seed(0)
    mu = torch.cat([torch.randn(500, 2, generator=g), 1e-3 * torch.randn(500, 3, generator=g)], 1)
    torch.testing.assert_close(activity(mu), mu.var(0))
    assert active_units(mu) == 2 and active_units(mu, threshold=1e-9) == 5
    logvar = torch.zeros_like(mu)
    torch.testing.assert_close(kl_per_dimension(mu, logvar), 0.5 * mu.pow(2).mean(0))
    torch.testing.assert_close(kl_per_dimension(mu, logvar).sum(), gaussian_kl(mu, logvar).mean())


@pytest.mark.parametrize("call", [
    lambda: vae_step(torch.nn.Linear(2, 2), torch.optim.SGD([torch.zeros(1)], lr=0.1)),
    lambda: vae_step(_model(), object()),
    lambda: vae_step(_model(), torch.optim.SGD(_model().parameters(), lr=0.1), beta=-1.0),
    lambda: vae_step(_model(), torch.optim.SGD(_model().parameters(), lr=0.1), free_bits=-0.1),
    lambda: vae_step(_model(), torch.optim.SGD(_model().parameters(), lr=0.1), n_samples=0),
    lambda: vae_step(_model(), torch.optim.SGD(_model().parameters(), lr=0.1),
                     beta=lambda s: -1.0)(_data(4)),
    lambda: vae_step(_model(), torch.optim.SGD(_model().parameters(), lr=0.1))(torch.zeros(4)),
    lambda: linear_warmup(0),
    lambda: activity(torch.zeros(1, 3)),
    lambda: active_units(torch.zeros(4, 3), threshold=0.0),
    lambda: kl_per_dimension(torch.zeros(4, 3), torch.zeros(4, 2)),
])
def test_bad_input_raises_value_error(call):
    with pytest.raises(ValueError):
        call()


def test_a_nan_loss_stops_before_the_update():
    from utils.training import NonFiniteLossError

    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = [p.clone() for p in model.parameters()]
    x = _data()
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match="step 0: the VAE loss is nan"):
        vae_step(model, opt)(x)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert not opt.state, "the optimiser stepped"
