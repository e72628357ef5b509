"""diffusion.networks, diffusion.conditioning, diffusion.training_step, diffusion.latent."""

import math

import pytest
import torch
from torch import nn

from diffusion.conditioning import (
    ConditionEmbedding,
    caption_tokens,
    classifier_free_guidance,
    drop_condition,
)
from diffusion.latent import LatentCodec
from diffusion.networks import MLPDenoiser, UNet, sinusoidal_embedding
from diffusion.sampling import ddim_sample
from diffusion.schedules import alpha_bar, cosine_beta_schedule
from diffusion.training_step import diffusion_step
from utils.data import batches, toy2d
from utils.training import fit
from vae.networks import VAE, MLPDecoder, MLPEncoder

pytestmark = pytest.mark.usefixtures("one_thread")


def test_sinusoidal_embedding_formula():
    t = torch.tensor([0, 1, 7])
    e = sinusoidal_embedding(t, 8)
    freqs = torch.tensor([10_000 ** (-i / 4) for i in range(4)])
    expected = torch.cat([torch.sin(t[:, None] * freqs), torch.cos(t[:, None] * freqs)], 1)
    torch.testing.assert_close(e, expected)
    assert torch.equal(e[0], torch.tensor([0.0] * 4 + [1.0] * 4))


@pytest.mark.parametrize("cond", [None, "class", "caption"])
def test_unet_and_mlp_shapes(cond):
    kw = {} if cond is None else ({"num_classes": 10} if cond == "class" else {"vocab_size": 8})
    c = None if cond is None else (torch.tensor([0, 3, 10]) if cond == "class"
                                   else torch.tensor([[1, 2, 0], [0, 0, 0], [3, 4, 5]]))
    t = torch.tensor([0, 10, 999])
    for size, mults in ((16, (1, 2, 2)), (28, (1, 2)), (32, (1, 2, 2, 2))):
        net = UNet(3, 8, mults, **kw)
        assert net(torch.randn(3, 3, size, size), t, c).shape == (3, 3, size, size)
    assert MLPDenoiser(2, 32, **kw)(torch.randn(3, 2), t, c).shape == (3, 2)


def test_unet_follows_dtype_and_depends_on_t_and_condition():
    net = UNet(1, 8, (1, 2), num_classes=3).double()
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    out = net(x, torch.tensor([1, 1]), torch.tensor([0, 0]))
    assert out.dtype == torch.float64
    assert not torch.allclose(out, net(x, torch.tensor([500, 500]), torch.tensor([0, 0])))
    assert not torch.allclose(out, net(x, torch.tensor([1, 1]), torch.tensor([2, 2])))


def test_condition_embedding_null_and_caption_mean():
    emb = ConditionEmbedding(4, vocab_size=5)
    tokens = torch.tensor([[1, 2, 0], [0, 0, 0]])
    e = emb(tokens)
    torch.testing.assert_close(e[0], (emb.table.weight[1] + emb.table.weight[2]) / 2)
    torch.testing.assert_close(e[1], emb.null)
    cls = ConditionEmbedding(4, num_classes=3)
    assert cls.null_value == 3 and emb.null_value == 0
    torch.testing.assert_close(cls(torch.tensor([3])), cls.table.weight[3:4])


def test_caption_tokens_and_vocab():
    tok, vocab = caption_tokens(["a small red circle", "a large square"])
    assert vocab[0] == "<pad>" and len(vocab) == 7
    assert tok.shape == (2, 4) and tok[1, 3] == 0
    assert [vocab[i] for i in tok[0]] == ["a", "small", "red", "circle"]
    tok2, _ = caption_tokens(["a red circle"], vocab, length=5)
    assert tok2.shape == (1, 5)


def test_drop_condition_rate_and_rows():
    c = torch.arange(20_000)
    dropped = drop_condition(c, 0.3, -1, generator=torch.Generator().manual_seed(0))
    rate = (dropped == -1).double().mean().item()
    assert abs(rate - 0.3) < 5 * math.sqrt(0.3 * 0.7 / 20_000)
    kept = dropped != -1
    assert torch.equal(dropped[kept], c[kept])
    tokens = torch.ones(1000, 3, dtype=torch.int64)
    d = drop_condition(tokens, 0.5, 0)
    assert ((d == 0).all(1) | (d == 1).all(1)).all()          # whole rows are dropped
    assert torch.equal(drop_condition(c, 0.0, -1), c) and (drop_condition(c, 1.0, -1) == -1).all()


def test_classifier_free_guidance_combines_the_two_predictions():
    def model(x, t, c):                       # ε_c = x + c, so the guided ε is x + w c (ε_∅ = x)
        return x + c.double()[:, None].masked_fill(c[:, None] == 9, 0.0)

    x, t, c = torch.zeros(3, 2, dtype=torch.float64), torch.zeros(3, dtype=torch.int64), \
        torch.tensor([1, 2, 3])
    for w in (0.0, 1.0, 2.5):
        out = classifier_free_guidance(model, c, 9, w)(x, t)
        torch.testing.assert_close(out, w * c.double()[:, None].expand(3, 2))


def test_diffusion_step_trains_an_mlp_denoiser_that_samples_the_data():
    torch.manual_seed(0)
    x = toy2d("ring8", 4000, seed=0)
    ab = alpha_bar(cosine_beta_schedule(100))
    net = MLPDenoiser(2, 64, 3)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    result = fit(diffusion_step(net, opt, ab), batches(x, batch_size=256), 1500, models=net,
                 optimizers=opt, device="cpu", progress=False)
    first, last = result.history["loss"][:50], result.history["loss"][-50:]
    assert sum(last) < 0.8 * sum(first)
    net.eval()
    with torch.no_grad():
        samples = ddim_sample(lambda z, t: net(z, t), (2000, 2), ab, 50,
                              generator=torch.Generator().manual_seed(1))
    r = samples.norm(dim=1)
    # the ring has radius 2: most samples land near it (an untrained net gives r ~ N(0, I) norms)
    assert ((r - 2).abs() < 0.3).double().mean() > 0.7


def test_conditional_step_drops_conditions_and_passes_labels():
    seen = []

    class Net(nn.Module):
        null_value = 5

        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, x, t, c):
            seen.append(c.clone())
            return x * self.w

    net = Net()
    step = diffusion_step(net, torch.optim.SGD(net.parameters(), lr=0.1),
                          alpha_bar(cosine_beta_schedule(10)), conditional=True, p_uncond=0.5)
    step((torch.randn(4000, 2), torch.zeros(4000, dtype=torch.int64)))
    frac = (seen[0] == 5).double().mean().item()
    assert abs(frac - 0.5) < 0.05 and set(seen[0].tolist()) == {0, 5}


def test_latent_codec_scales_to_unit_variance_and_round_trips_shapes():
    torch.manual_seed(0)
    model = VAE(MLPEncoder((1, 8, 8), 4, hidden=16), MLPDecoder((1, 8, 8), 4, hidden=16))
    codec = LatentCodec(model)
    x = torch.rand(300, 1, 8, 8)
    s = codec.fit_scale(x, batch_size=64)
    z = codec.encode(x, batch_size=64)
    assert z.shape == (300, 4) and s > 0
    assert z.std().item() == pytest.approx(1.0, rel=1e-4)
    torch.testing.assert_close(z * s, model.encode(x)[0], rtol=1e-5, atol=1e-6)
    out = codec.decode(z[:5])
    assert out.shape == (5, 1, 8, 8) and out.min() >= 0 and out.max() <= 1
    assert not any(p.requires_grad for p in codec.parameters())


@pytest.mark.parametrize("call", [
    lambda: sinusoidal_embedding(torch.arange(3), 5),
    lambda: sinusoidal_embedding(torch.zeros(2, 2), 4),
    lambda: UNet(1, 8, ())(torch.zeros(1, 1, 8, 8), torch.zeros(1, dtype=torch.int64)),
    lambda: UNet(1, 8, (1, 2))(torch.zeros(1, 1, 7, 7), torch.zeros(1, dtype=torch.int64)),
    lambda: UNet(1, 8, (1, 2))(torch.zeros(1, 1, 8, 8), torch.zeros(1)),
    lambda: UNet(1, 8, (1, 2))(torch.zeros(1, 1, 8, 8), torch.zeros(1, dtype=torch.int64),
                               torch.zeros(1, dtype=torch.int64)),
    lambda: UNet(1, 8, (1, 2), num_classes=3)(torch.zeros(1, 1, 8, 8),
                                              torch.zeros(1, dtype=torch.int64)),
    lambda: MLPDenoiser(2)(torch.zeros(3, 3), torch.zeros(3, dtype=torch.int64)),
    lambda: ConditionEmbedding(4),
    lambda: ConditionEmbedding(4, num_classes=3, vocab_size=4),
    lambda: ConditionEmbedding(4, num_classes=3)(torch.tensor([4])),
    lambda: ConditionEmbedding(4, vocab_size=3)(torch.tensor([[3]])),
    lambda: caption_tokens(["a red"], ["a", "red"]),
    lambda: caption_tokens(["a blue"], ["<pad>", "a", "red"]),
    lambda: caption_tokens("a red circle"),
    lambda: drop_condition(torch.zeros(3, dtype=torch.int64), 1.5, 0),
    lambda: classifier_free_guidance(lambda x, t, c: x, torch.zeros(2, dtype=torch.int64), 0,
                                     -1.0),
    lambda: diffusion_step(nn.Linear(2, 2), torch.optim.SGD([torch.zeros(1)], lr=1),
                           torch.full((5,), 0.5), target="score"),
    lambda: diffusion_step(nn.Linear(2, 2), torch.optim.SGD([torch.zeros(1)], lr=1),
                           torch.full((5,), 0.5), p_uncond=0.1),
    lambda: diffusion_step(nn.Linear(2, 2), torch.optim.SGD([torch.zeros(1)], lr=1),
                           torch.full((5,), 0.5), conditional=True),
    lambda: diffusion_step(nn.Linear(2, 2), object(), torch.full((5,), 0.5)),
    lambda: LatentCodec(nn.Linear(2, 2)),
])
def test_bad_input_raises_value_error(call):
    with pytest.raises(ValueError):
        call()


def test_diffusion_step_stops_before_the_update_on_a_nan_loss():
    from utils.training import NonFiniteLossError

    net = MLPDenoiser(2, 16, 2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    before = [p.clone() for p in net.parameters()]
    x = torch.randn(8, 2)
    x[3] = float("nan")
    with pytest.raises(NonFiniteLossError, match="the denoising loss is nan"):
        diffusion_step(net, opt, alpha_bar(cosine_beta_schedule(10)))(x)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters())) and not opt.state
