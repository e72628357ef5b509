"""Tests for vae.quantize: nearest codes (brute force), the straight-through gradient, where the
codebook and commitment gradients go, the EMA update against a hand computation, dead-code
restarts, perplexity, eval mode, checkpointing, the VQ-VAE's shapes and a short training run,
and bad input."""

import math

import pytest
import torch

from vae.quantize import VQVAE, VectorQuantizer, digits_vqvae

pytestmark = pytest.mark.usefixtures("one_thread")


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def quantizer(k=6, d=3, seed=0, **kwargs):
    torch.manual_seed(seed)
    vq = VectorQuantizer(k, d, **kwargs)
    with torch.no_grad():
        vq.codebook.copy_(torch.randn(k, d, generator=gen(seed + 100)))
        vq.embed_sum.copy_(vq.codebook)
    return vq


@pytest.mark.parametrize("shape", [(5, 3, 4, 4), (7, 3), (2, 3, 5)])
def test_outputs_are_the_nearest_codebook_vectors(shape):
    vq = quantizer().double().eval()
    z_e = torch.randn(shape, generator=gen(1), dtype=torch.float64)
    q = vq(z_e)
    grid = shape[:1] + shape[2:]
    assert q.z_q.shape == z_e.shape and q.indices.shape == grid and q.indices.dtype == torch.int64
    flat = z_e.movedim(1, -1).reshape(-1, 3)
    brute = torch.stack([((v - vq.codebook) ** 2).sum(1).argmin() for v in flat])
    assert torch.equal(q.indices.reshape(-1), brute)
    # each output vector is exactly its code (not merely close to it)
    assert torch.equal(q.z_q.movedim(1, -1).reshape(-1, 3), vq.codebook[brute].detach())
    assert torch.equal(vq.dequantize(q.indices), q.z_q)


def test_straight_through_jacobian_is_the_identity():
    vq = quantizer().double()
    z_e = torch.randn(2, 3, 2, 2, generator=gen(2), dtype=torch.float64, requires_grad=True)
    z_q = vq(z_e).z_q.reshape(-1)
    rows = [torch.autograd.grad(z_q[n], z_e, retain_graph=True)[0].reshape(-1)
            for n in range(z_q.numel())]                       # row n: ∂z_q[n] / ∂z_e
    torch.testing.assert_close(torch.stack(rows), torch.eye(z_e.numel(), dtype=torch.float64))


def test_codebook_loss_reaches_only_the_codebook_commitment_only_the_encoder():
    vq = quantizer().double()
    z_e = torch.randn(4, 3, 3, 3, generator=gen(3), dtype=torch.float64, requires_grad=True)
    q = vq(z_e)
    g_z, g_e = torch.autograd.grad(q.codebook_loss, [z_e, vq.codebook], allow_unused=True)
    assert g_z is None and float(g_e.abs().sum()) > 0
    q = vq(z_e)
    g_z, g_e = torch.autograd.grad(q.commitment_loss, [z_e, vq.codebook], allow_unused=True)
    assert g_e is None and float(g_z.abs().sum()) > 0
    # the values: MSEs between z_e and its codes; loss = codebook + β·commitment
    diff = (z_e - q.z_q).detach()
    torch.testing.assert_close(q.commitment_loss, diff.pow(2).mean())
    torch.testing.assert_close(q.codebook_loss, diff.pow(2).mean())
    torch.testing.assert_close(q.loss, (1 + vq.beta) * diff.pow(2).mean())
    # the codebook-loss gradient of code k: 2/N·D Σ_{i→k} (e_k − z_i)
    q = vq(z_e)
    (g_e,) = torch.autograd.grad(q.codebook_loss, vq.codebook)
    flat, idx = z_e.detach().movedim(1, -1).reshape(-1, 3), q.indices.reshape(-1)
    expected = torch.zeros_like(g_e).index_add_(0, idx, vq.codebook.detach()[idx] - flat)
    torch.testing.assert_close(g_e, 2 * expected / flat.numel())


def test_ema_update_matches_a_hand_computation():
    """K = 2 codes in D = 1, γ = 0.5, ε = 0.1: codes at 0 and 10, inputs 1, 2 (→ code 0) and
    9 (→ code 1); the state starts at N = (1, 1), m = (0, 10)."""
    vq = VectorQuantizer(2, 1, ema=True, decay=0.5, eps=0.1).double()
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[0.0], [10.0]]))
        vq.embed_sum.copy_(vq.codebook)
    q = vq(torch.tensor([[1.0], [2.0], [9.0]], dtype=torch.float64))
    assert q.indices.tolist() == [0, 0, 1] and float(q.codebook_loss) == 0.0
    n = torch.tensor([0.5 * 1 + 0.5 * 2, 0.5 * 1 + 0.5 * 1], dtype=torch.float64)    # (1.5, 1)
    m = torch.tensor([0.5 * 0 + 0.5 * 3, 0.5 * 10 + 0.5 * 9], dtype=torch.float64)   # (1.5, 9.5)
    smoothed = (n + 0.1) / (2.5 + 2 * 0.1) * 2.5
    torch.testing.assert_close(vq.cluster_size, n)
    torch.testing.assert_close(vq.embed_sum[:, 0], m)
    torch.testing.assert_close(vq.codebook[:, 0], m / smoothed)
    # the returned z_q used the codebook before the update
    assert q.z_q[:, 0].tolist() == [0.0, 0.0, 10.0]
    assert not vq.codebook.requires_grad


def test_ema_codebook_moves_to_cluster_means():
    vq = quantizer(k=2, d=2, ema=True, decay=0.8)
    centres = torch.tensor([[3.0, 0.0], [-3.0, 0.0]])
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
        vq.embed_sum.copy_(vq.codebook)
    for step in range(60):
        z = centres.repeat(50, 1) + 0.1 * torch.randn(100, 2, generator=gen(step))
        vq(z)
    torch.testing.assert_close(vq.codebook, centres, atol=0.05, rtol=0)


def test_unused_code_is_not_thrown_away_by_the_smoothing():
    vq = quantizer(k=3, d=2, ema=True)
    before = vq.codebook.detach().clone()
    z = before[0].repeat(8, 1)                    # only code 0 is used
    vq(z)
    torch.testing.assert_close(vq.codebook[1:], before[1:], rtol=0.02, atol=0)


@pytest.mark.parametrize("ema", [False, True])
def test_dead_code_is_restarted_to_an_encoder_output(ema):
    vq = quantizer(k=4, d=2, ema=ema, restart_dead=True, dead_threshold=0.5, decay=0.5)
    z = vq.codebook.detach()[:2].repeat(3, 1).requires_grad_()     # codes 0 and 1, 3 times
    vq(z)                                         # N of codes 2, 3: 0.5·1 = 0.5, not yet dead
    assert vq.cluster_size[2:].tolist() == [0.5, 0.5]
    q = vq(z)                                     # now 0.25 < 0.5: restarted
    q.loss.backward()                             # the in-place restart leaves autograd intact
    for k in (2, 3):
        assert any(torch.equal(vq.codebook[k].detach(), v) for v in z.detach())
        assert float(vq.cluster_size[k]) == 1.0
        torch.testing.assert_close(vq.embed_sum[k], vq.codebook[k].detach())
    # without restarts the unused codes stay where they were
    vq2 = quantizer(k=4, d=2, ema=ema, restart_dead=False, decay=0.5)
    before = vq2.codebook.detach().clone()
    vq2(z), vq2(z)
    if not ema:
        assert torch.equal(vq2.codebook[2:], before[2:])
    assert not any(torch.equal(vq2.codebook[2].detach(), v) for v in z.detach())


def test_perplexity_and_codes_used():
    vq = quantizer(k=5, d=5).eval()
    with torch.no_grad():
        vq.codebook.copy_(10 * torch.eye(5))
    q = vq(10 * torch.eye(5).repeat(3, 1))            # each code used 3 times
    torch.testing.assert_close(q.perplexity, torch.tensor(5.0))
    assert int(q.codes_used) == 5
    q = vq(10 * torch.eye(5)[2].repeat(7, 1))
    torch.testing.assert_close(q.perplexity, torch.tensor(1.0))
    assert int(q.codes_used) == 1
    q = vq(10 * torch.eye(5)[[0, 0, 0, 1]])          # usage (3/4, 1/4)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    torch.testing.assert_close(q.perplexity, torch.tensor(math.exp(h)))


def test_eval_mode_does_not_change_the_state():
    vq = quantizer(ema=True, restart_dead=True)
    vq.eval()
    state = {k: v.clone() for k, v in vq.state_dict().items()}
    vq(torch.randn(4, 3, 2, 2, generator=gen(4)))
    assert all(torch.equal(state[k], v) for k, v in vq.state_dict().items())
    vq.train()
    vq(torch.randn(4, 3, 2, 2, generator=gen(4)))
    assert not torch.equal(state["cluster_size"], vq.cluster_size)


def test_state_dict_round_trip_keeps_the_ema_state():
    vq = quantizer(ema=True)
    vq(torch.randn(8, 3, generator=gen(5)))
    other = VectorQuantizer(6, 3, ema=True)
    other.load_state_dict(vq.state_dict())
    assert set(vq.state_dict()) == {"codebook", "cluster_size", "embed_sum"}
    for k, v in vq.state_dict().items():
        assert torch.equal(other.state_dict()[k], v)


@pytest.mark.parametrize("grid", [4, 8])
def test_vqvae_shapes_and_index_round_trip(grid):
    torch.manual_seed(0)
    model = digits_vqvae(num_codes=8, dim=4, grid=grid, hidden=8)
    x = torch.rand(3, 1, 16, 16, generator=gen(6)) * 2 - 1
    out = model(x)
    assert out.x_hat.shape == x.shape and out.quantized.indices.shape == (3, grid, grid)
    torch.testing.assert_close(out.loss, out.reconstruction_loss + out.quantized.loss)
    torch.testing.assert_close(out.reconstruction_loss, ((out.x_hat - x) ** 2).mean())
    idx = model.encode_indices(x)
    assert torch.equal(idx, out.quantized.indices)
    model.eval()
    torch.testing.assert_close(model.decode_indices(idx), model(x).x_hat)
    assert float(model.decode_indices(idx).detach().abs().max()) <= 1


def test_vqvae_trains_on_a_tiny_set():
    torch.manual_seed(0)
    model = digits_vqvae(num_codes=16, dim=8, grid=4, hidden=16, ema=True, restart_dead=True)
    x = torch.tanh(2 * torch.randn(16, 1, 16, 16, generator=gen(7)).cumsum(-1) / 4)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = float(model(x).reconstruction_loss.detach())
    for _ in range(60):
        opt.zero_grad()
        out = model(x)
        out.loss.backward()
        opt.step()
    assert float(out.quantized.perplexity) > 4                 # the codebook is in use
    model.eval()
    # reached ≈ 0.35·first when written; the encoder learns only through the straight-through
    # copy: with it cut (z_q = sg[e]) the loss stays at ≈ 0.93·first
    assert float(model(x).reconstruction_loss.detach()) < 0.5 * first


def test_vqvae_custom_parts():
    enc, dec = torch.nn.Conv2d(1, 2, 2, stride=2), torch.nn.ConvTranspose2d(2, 1, 2, stride=2)
    model = VQVAE(enc, VectorQuantizer(5, 2), dec)
    assert model(torch.zeros(2, 1, 4, 4)).quantized.indices.shape == (2, 2, 2)
    with pytest.raises(ValueError, match="quantizer"):
        VQVAE(enc, torch.nn.Identity(), dec)
    with pytest.raises(ValueError, match="x must"):
        model(torch.zeros(4, dtype=torch.int64))


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_codes=0), "num_codes"), (dict(num_codes=2.0), "num_codes"), (dict(dim=0), "dim"),
    (dict(beta=-0.1), "beta"), (dict(beta=float("nan")), "beta"), (dict(beta="1"), "beta"),
    (dict(decay=0.0), "decay"), (dict(decay=1.0), "decay"), (dict(decay=1.5), "decay"),
    (dict(eps=0.0), "eps"), (dict(dead_threshold=-1.0), "dead_threshold"),
])
def test_quantizer_rejects_bad_arguments(kwargs, match):
    kwargs = {"num_codes": 4, "dim": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        VectorQuantizer(**kwargs)


@pytest.mark.parametrize("z_e", [torch.zeros(2, 4, 3, 3), torch.zeros(3), torch.zeros(0, 3),
                                 torch.zeros(2, 3, dtype=torch.int64), [[0.0, 0.0, 0.0]]])
def test_quantizer_rejects_bad_input(z_e):
    vq = VectorQuantizer(4, 3)
    with pytest.raises(ValueError, match="z_e"):
        vq(z_e)
    with pytest.raises(ValueError, match="z_e"):
        vq.nearest(z_e)


@pytest.mark.parametrize("idx", [torch.tensor([0, 4]), torch.tensor([-1]),
                                 torch.tensor([0.0, 1.0]), torch.tensor(1), [0, 1]])
def test_dequantize_rejects_bad_indices(idx):
    with pytest.raises(ValueError, match="indices"):
        VectorQuantizer(4, 3).dequantize(idx)


@pytest.mark.parametrize("kwargs", [dict(grid=16), dict(grid=3), dict(size=12, grid=4),
                                    dict(grid=0), dict(hidden=0), dict(channels=0),
                                    dict(num_codes=0)])
def test_digits_vqvae_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        digits_vqvae(**kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("ema", [False, True])
def test_quantizer_follows_the_device(ema):
    vq = quantizer(ema=ema, restart_dead=True).cuda()
    q = vq(torch.randn(4, 3, 2, 2, device="cuda", requires_grad=True))
    q.loss.backward()
    assert q.z_q.device.type == q.indices.device.type == vq.cluster_size.device.type == "cuda"
    model = digits_vqvae(num_codes=8, dim=4, hidden=8).cuda()
    assert model.decode_indices(model.encode_indices(torch.zeros(2, 1, 16, 16,
                                                                 device="cuda"))).is_cuda
