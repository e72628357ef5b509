"""Tests for vae.pixelcnn: the masks; the causal property and the exact receptive field (with
its blind spot) measured by autograd; log_prob against a hand-computed cross-entropy;
conditioning; sampling (deterministic given a generator, greedy at low temperature); a short
training run that learns a known distribution; and bad input."""

import math

import pytest
import torch
import torch.nn.functional as F

from vae.pixelcnn import MaskedConv2d, PixelCNN, causal_mask

pytestmark = pytest.mark.usefixtures("one_thread")


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_masks():
    assert causal_mask(3, "A").tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    assert causal_mask(3, "B").tolist() == [[1, 1, 1], [1, 1, 0], [0, 0, 0]]
    b5 = causal_mask(5, "B")
    assert int(b5.sum()) == 13 and b5[2, 2] == 1 and b5[2, 3] == 0 and b5[1, 4] == 1


def expected_field(i, j, rows, cols, kernel, layers):
    """The pixels the logits at (i, j) can depend on, from the mask geometry alone: one mask-B
    step per later layer, then the first layer's mask-A step, never leaving the image (zero
    padding carries nothing)."""
    c = kernel // 2
    a = [(di, dj) for di in range(-c, 0) for dj in range(-c, c + 1)] + [(0, dj)
                                                                         for dj in range(-c, 0)]
    field = {(i, j)}
    for offsets in [a + [(0, 0)]] * (layers - 1) + [a]:
        field = {(p + di, q + dj) for p, q in field for di, dj in offsets
                 if 0 <= p + di < rows and 0 <= q + dj < cols}
    return field


@pytest.mark.parametrize("kernel,layers,cond", [(3, 3, None), (5, 2, 3), (3, 1, None)])
def test_causal_receptive_field_measured_by_autograd(kernel, layers, cond):
    rows, cols, k = 6, 7, 3
    torch.manual_seed(0)
    model = PixelCNN(k, hidden=16, layers=layers, kernel=kernel, cond_dim=cond).double()
    idx = torch.randint(k, (4, rows, cols), generator=gen(1))
    x = F.one_hot(idx, k).movedim(-1, 1).double().requires_grad_()
    h = None if cond is None else torch.randn(4, cond, generator=gen(2), dtype=torch.float64)
    logits = model(x, h)
    blind = 0
    for i in range(rows):
        for j in range(cols):
            (g,) = torch.autograd.grad(logits[:, :, i, j].sum(), x, retain_graph=True)
            seen = {tuple(p) for p in (g.abs().sum((0, 1)) > 0).nonzero().tolist()}
            assert all(p < (i, j) for p in seen)         # strictly before, in raster order
            assert seen == expected_field(i, j, rows, cols, kernel, layers)
            if i or j:
                assert seen                              # some earlier pixel is seen
            blind += (i * cols + j) - len(seen)          # earlier pixels not seen
    assert blind > 0                                     # a masked stack has a blind spot


def test_float_one_hot_and_indices_agree_and_dtype_follows_the_model():
    torch.manual_seed(0)
    model = PixelCNN(4, hidden=8, layers=2, kernel=3)
    idx = torch.randint(4, (2, 5, 5), generator=gen(3))
    out = model(idx)
    assert out.shape == (2, 4, 5, 5) and out.dtype == torch.float32
    torch.testing.assert_close(model(F.one_hot(idx, 4).movedim(-1, 1).float()), out)
    assert model.double()(idx).dtype == torch.float64


def test_log_prob_is_minus_the_cross_entropy():
    torch.manual_seed(0)
    model = PixelCNN(3, hidden=8, layers=2, kernel=3, cond_dim=2).double()
    idx = torch.randint(3, (5, 4, 3), generator=gen(4))
    h = torch.randn(5, 2, generator=gen(5), dtype=torch.float64)
    logits = model(idx, h)
    by_hand = torch.zeros(5, dtype=torch.float64)
    for b in range(5):
        for i in range(4):
            for j in range(3):
                z = logits[b, :, i, j]
                by_hand[b] += z[idx[b, i, j]] - torch.log(torch.exp(z).sum())
    torch.testing.assert_close(model.log_prob(idx, h), by_hand)
    # a proper distribution: on a 1×2 grid of 3 classes the 9 probabilities sum to one
    grids = torch.tensor([[[a, b]] for a in range(3) for b in range(3)])
    lp = model.log_prob(grids, h[:1].expand(9, 2))
    torch.testing.assert_close(lp.exp().sum(), torch.tensor(1.0, dtype=torch.float64))


def test_conditioning_changes_the_logits_everywhere():
    torch.manual_seed(0)
    model = PixelCNN(2, hidden=8, layers=2, kernel=3, cond_dim=2)
    idx = torch.zeros(1, 3, 3, dtype=torch.int64)
    a = model(idx, torch.tensor([[1.0, 0.0]]))
    b = model(idx, torch.tensor([[0.0, 1.0]]))
    assert bool(((a - b).abs().sum(1) > 0).all())       # including at (0, 0)


def test_sampling_is_deterministic_given_the_generator():
    torch.manual_seed(0)
    model = PixelCNN(5, hidden=8, layers=2, kernel=3)
    s1 = model.sample(6, (3, 4), generator=gen(6))
    s2 = model.sample(6, (3, 4), generator=gen(6))
    assert s1.shape == (6, 3, 4) and s1.dtype == torch.int64 and torch.equal(s1, s2)
    assert int(s1.min()) >= 0 and int(s1.max()) < 5
    assert not torch.equal(s1, model.sample(6, (3, 4), generator=gen(7)))


def test_low_temperature_sampling_is_greedy_decoding():
    torch.manual_seed(0)
    model = PixelCNN(3, hidden=8, layers=2, kernel=3, cond_dim=1)
    h = torch.randn(4, 1, generator=gen(8))
    greedy = torch.zeros(4, 3, 3, dtype=torch.int64)
    with torch.no_grad():
        for i in range(3):
            for j in range(3):
                greedy[:, i, j] = model(greedy, h)[:, :, i, j].argmax(1)
    assert torch.equal(model.sample(4, (3, 3), h, temperature=1e-4, generator=gen(9)), greedy)


def markov_grids(n, rows, cols, p, g):
    """x_00 ~ Ber(½); x_i0 copies x_(i−1)0 and x_ij copies x_i(j−1), each flipped w.p. p.
    Returns the grids and their exact log-probabilities."""
    flips = torch.rand(n, rows, cols, generator=g) < p
    x = torch.zeros(n, rows, cols, dtype=torch.int64)
    x[:, 0, 0] = (torch.rand(n, generator=g) < 0.5).long()
    for i in range(rows):
        for j in range(cols):
            if i or j:
                x[:, i, j] = (x[:, i, j - 1] if j else x[:, i - 1, 0]) ^ flips[:, i, j].long()
    log_p = torch.where(flips, math.log(p), math.log(1 - p)).flatten(1)[:, 1:].sum(1)
    return x, math.log(0.5) + log_p


def test_learns_a_markov_grid():
    """The entropy is log 2 + 15·H(0.1) ≈ 5.53 nats per 4×4 grid (independent pixels: 11.09).
    The KL(data ‖ model) = E[log p − log p_model] is estimated on 4,000 fresh grids (standard
    error ≈ 0.005 nats); ≈ 0.017 nats when written, after 150 steps."""
    torch.manual_seed(0)
    data, _ = markov_grids(150 * 64, 4, 4, 0.1, gen(10))
    model = PixelCNN(2, hidden=16, layers=3, kernel=3)
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    for batch in data.split(64):
        loss = -model.log_prob(batch).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, log_p = markov_grids(4000, 4, 4, 0.1, gen(11))
    with torch.no_grad():
        kl = float((log_p - model.log_prob(x)).mean())
    assert -0.02 < kl < 0.1
    # its samples flip a pixel's predecessor at the rate 0.1 (7,500 transitions, se ≈ 0.0035)
    s = model.sample(500, (4, 4), generator=gen(12))
    changes = torch.cat([(s[:, 1:, 0] != s[:, :-1, 0]).flatten(),
                         (s[:, :, 1:] != s[:, :, :-1]).flatten()]).double().mean()
    assert abs(float(changes) - 0.1) < 0.03


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_classes=1), "num_classes"), (dict(hidden=0), "hidden"), (dict(layers=0), "layers"),
    (dict(kernel=4), "kernel"), (dict(kernel=1), "kernel"), (dict(cond_dim=0), "cond_dim"),
    (dict(num_classes=2.0), "num_classes"),
])
def test_pixelcnn_rejects_bad_arguments(kwargs, match):
    kwargs = {"num_classes": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        PixelCNN(**kwargs)


def test_masks_reject_bad_arguments():
    with pytest.raises(ValueError, match="kind"):
        causal_mask(3, "C")
    with pytest.raises(ValueError, match="odd"):
        causal_mask(4, "A")
    with pytest.raises(ValueError, match="kernel"):
        MaskedConv2d("A", 1, 1, 0)


@pytest.mark.parametrize("x", [torch.tensor([[[0, 3]]]), torch.tensor([[[-1, 0]]]),
                               torch.zeros(2, 3), torch.zeros(2, 2, 3, 3),
                               torch.zeros(2, 3, 3, dtype=torch.int32),
                               torch.zeros(0, 3, 3, dtype=torch.int64), [[0, 1]]])
def test_forward_rejects_bad_input(x):
    model = PixelCNN(3, hidden=4, layers=1, kernel=3)
    with pytest.raises(ValueError, match="x must"):
        model(x)


def test_bad_conditioning_and_log_prob_input():
    cond = PixelCNN(2, hidden=4, layers=1, kernel=3, cond_dim=2)
    idx = torch.zeros(3, 2, 2, dtype=torch.int64)
    for h in (None, torch.zeros(3, 3), torch.zeros(2, 2), torch.zeros(3, 2, dtype=torch.int64)):
        with pytest.raises(ValueError, match="h must"):
            cond(idx, h)
    with pytest.raises(ValueError, match="unconditional"):
        PixelCNN(2, hidden=4, layers=1, kernel=3)(idx, torch.zeros(3, 2))
    with pytest.raises(ValueError, match="x must"):
        cond.log_prob(torch.zeros(3, 2, 2, 2), torch.zeros(3, 2))


@pytest.mark.parametrize("kwargs,match", [
    (dict(n=0), "n must"), (dict(shape=(3,)), "shape"), (dict(shape=(0, 2)), "shape"),
    (dict(shape="ab"), "shape"), (dict(temperature=0.0), "temperature"),
    (dict(temperature=float("inf")), "temperature"), (dict(h=torch.zeros(2, 1)), "unconditional"),
])
def test_sample_rejects_bad_arguments(kwargs, match):
    kwargs = {"n": 2, "shape": (2, 2), **kwargs}
    with pytest.raises(ValueError, match=match):
        PixelCNN(2, hidden=4, layers=1, kernel=3).sample(**kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pixelcnn_follows_the_device():
    torch.manual_seed(0)
    model = PixelCNN(3, hidden=8, layers=2, kernel=3, cond_dim=2).cuda()
    h = torch.randn(4, 2, device="cuda")
    g = torch.Generator(device="cuda").manual_seed(0)
    s = model.sample(4, (3, 3), h, generator=g)
    assert s.is_cuda and model.log_prob(s, h).shape == (4,)
    assert torch.equal(s, model.sample(4, (3, 3), h,
                                       generator=torch.Generator(device="cuda").manual_seed(0)))
