"""Tests for autoregressive.made: degrees and masks against their definition; the autoregressive
property measured by autograd (output j depends exactly on the inputs before j in the ordering
that the masks connect, and never on the others); exp(log_prob) sums to one over all 2^10
vectors (one mask set and the mixture of several); log_prob against a hand Bernoulli sum;
sampling draws from the distribution log_prob scores; made_step trains through utils.training.fit
to a known distribution that independent bits cannot fit; bad input."""

import math

import pytest
import torch
import torch.nn.functional as F

from autoregressive.made import MADE, made_degrees, made_masks, made_step
from utils.training import NonFiniteLossError, fit

pytestmark = pytest.mark.usefixtures("one_thread")


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def all_binary(d):
    return torch.cartesian_prod(*[torch.tensor([0.0, 1.0], dtype=torch.float64)] * d)


def test_degrees_and_masks_follow_the_definition():
    ordering = torch.tensor([2, 0, 3, 1, 4])
    degrees = made_degrees(5, [7, 6], ordering, generator=gen(1))
    assert degrees[0].tolist() == [3, 1, 4, 2, 5]
    assert [m.shape for m in degrees[1:]] == [(7,), (6,)]
    for prev, m in zip(degrees[:-1], degrees[1:]):
        assert int(m.min()) >= int(prev.min()) and int(m.max()) <= 4       # in [min, d − 1]
    masks = made_masks(degrees)
    assert [tuple(m.shape) for m in masks] == [(7, 5), (6, 7), (5, 6)]
    for l, (m_prev, m) in enumerate(zip(degrees[:-1], degrees[1:])):
        for k in range(len(m)):
            for j in range(len(m_prev)):
                assert masks[l][k, j] == float(m[k] >= m_prev[j])
    for j in range(5):
        for k in range(6):
            assert masks[2][j, k] == float(degrees[0][j] > degrees[2][k])     # strict
    # the output of the first variable in the ordering (input 1, degree 1) sees nothing
    assert masks[2][1].sum() == 0


@pytest.mark.parametrize("hidden,n_masks", [((16,), 1), ((12, 10), 3), ((30, 30, 30), 2)])
def test_autoregressive_property_by_autograd(hidden, n_masks):
    d = 7
    torch.manual_seed(0)
    model = MADE(d, hidden, n_masks=n_masks, ordering=torch.tensor([3, 6, 0, 2, 5, 1, 4]),
                 seed=2).double()
    x = torch.bernoulli(torch.full((64, d), 0.5, dtype=torch.float64),
                        generator=gen(3)).requires_grad_()
    positive = MADE(d, hidden, n_masks=n_masks, ordering=torch.tensor([3, 6, 0, 2, 5, 1, 4]),
                    seed=2).double()
    with torch.no_grad():       # every unit active and no cancellation: each masked path counts
        for name, p in positive.named_parameters():
            p.copy_(p.abs() if name.endswith("weight") else torch.full_like(p, 0.1))
    for k in range(n_masks):
        order = model.orderings[k]                                  # order[j]: place of input j
        reach = torch.eye(d, dtype=torch.float64)                   # paths input -> output
        for i in range(len(hidden) + 1):
            reach = model._mask(i, k).double() @ reach
        logits, logits_positive = model(x, k), positive(x, k)
        for j in range(d):
            (g,) = torch.autograd.grad(logits[:, j].sum(), x, retain_graph=True)
            seen = set((g.abs().sum(0) > 0).nonzero().squeeze(-1).tolist())
            assert all(order[i] < order[j] for i in seen)            # only earlier inputs
            connected = set((reach[j] > 0).nonzero().squeeze(-1).tolist())
            assert seen <= connected           # (a ReLU dead on every input can hide a path)
            (g,) = torch.autograd.grad(logits_positive[:, j].sum(), x, retain_graph=True)
            assert set((g.abs().sum(0) > 0).nonzero().squeeze(-1).tolist()) == connected
            if order[j] == 0:
                assert not seen and not connected                    # the first: a constant
    if len(hidden) == 1 and n_masks == 1:
        # with 16 units of degrees in 1..6 the last variable sees every earlier one
        last = int(model.orderings[0].argmax())
        (g,) = torch.autograd.grad(model(x)[:, last].sum(), x)
        assert int((g.abs().sum(0) > 0).sum()) == d - 1


@pytest.mark.parametrize("n_masks,order_agnostic", [(1, True), (4, True), (3, False)])
def test_probabilities_sum_to_one_over_all_vectors(n_masks, order_agnostic):
    d = 10
    torch.manual_seed(1)
    model = MADE(d, (32, 24), n_masks=n_masks, order_agnostic=order_agnostic, seed=5).double()
    with torch.no_grad():                          # larger weights: far from uniform
        for p in model.parameters():
            p.mul_(3)
    x = all_binary(d)                              # (1024, 10)
    lp = model.log_prob(x)
    assert lp.shape == (1024,) and lp.dtype == torch.float64 and bool((lp < 0).all())
    assert abs(lp.exp().sum().item() - 1.0) < 1e-12
    assert lp.max() - lp.min() > 5                 # a distribution far from uniform
    for k in range(n_masks):
        assert abs(model.log_prob(x, mask=k).exp().sum().item() - 1.0) < 1e-12
    if n_masks > 1:
        orders = model.orderings
        assert torch.equal(orders[0], torch.arange(d))
        assert (not torch.equal(orders[1], orders[0])) == order_agnostic


def test_log_prob_is_the_bernoulli_sum_of_the_logits():
    torch.manual_seed(2)
    model = MADE(6, (20,)).double()
    x = torch.bernoulli(torch.full((5, 6), 0.3, dtype=torch.float64), generator=gen(4))
    logits = model(x)
    p = torch.sigmoid(logits)
    by_hand = (x * p.log() + (1 - x) * (1 - p).log()).sum(1)
    torch.testing.assert_close(model.log_prob(x), by_hand)
    torch.testing.assert_close(model.log_prob(x), -F.binary_cross_entropy_with_logits(
        logits, x, reduction="none").sum(1))


@pytest.mark.parametrize("n_masks", [1, 3])
def test_samples_follow_the_modelled_distribution(n_masks):
    d, n = 3, 40_000
    torch.manual_seed(3)
    model = MADE(d, (16,), n_masks=n_masks, seed=1).double()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3)
    s = model.sample(n, gen(5))
    assert s.shape == (n, d) and bool(((s == 0) | (s == 1)).all())
    assert torch.equal(s, model.sample(n, gen(5)))                   # a generator fixes them
    p = model.log_prob(all_binary(d)).exp()                          # (8,) in binary order
    codes = (s * torch.tensor([4.0, 2.0, 1.0], dtype=s.dtype)).sum(1).long()
    freq = torch.bincount(codes, minlength=8).double() / n
    assert bool(((freq - p).abs() <= 5 * (p * (1 - p) / n).sqrt() + 1e-12).all()), (freq, p)


def test_made_step_learns_a_correlated_distribution():
    # x_1 ~ Ber(0.5), then each bit copies the previous one with probability 0.9: the bits are
    # marginally fair coins, so independent bits cost 4 ln 2 nats while the chain costs
    # ln 2 + 3 H(0.9) ≈ 1.67 nats
    d = 4
    g = gen(6)
    x = torch.zeros(4_000, d)
    x[:, 0] = torch.bernoulli(torch.full((4_000,), 0.5), generator=g)
    for j in range(1, d):
        flip = torch.bernoulli(torch.full((4_000,), 0.1), generator=g)
        x[:, j] = (x[:, j - 1] + flip) % 2
    h_bin = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    entropy = math.log(2) + (d - 1) * h_bin
    torch.manual_seed(4)
    model = MADE(d, (32,), n_masks=2, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def data(step):
        return (x[torch.randint(len(x), (128,), generator=gen(step))],)

    result = fit(made_step(model, opt), data, 400, models=model, optimizers=opt, progress=False,
                 device="cpu")
    assert len(result.history["nll"]) == 400
    with torch.no_grad():
        nll = -model.log_prob(x).mean().item()
    assert nll < entropy + 0.05 < d * math.log(2) - 1.0, (nll, entropy)


def test_made_step_stops_on_a_nan():
    model = MADE(3, (4,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with torch.no_grad():
        model.out.bias.fill_(float("nan"))
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(NonFiniteLossError):
        made_step(model, opt)(torch.ones(2, 3))
    for p, q in zip(model.parameters(), before):
        assert torch.equal(p, q) or bool(torch.isnan(p).all() and torch.isnan(q).all())


def test_state_dict_keeps_the_masks():
    a = MADE(5, (8,), n_masks=2, seed=1)
    b = MADE(5, (8,), n_masks=2, seed=2)
    assert not torch.equal(a.mask_0, b.mask_0)
    b.load_state_dict(a.state_dict())
    x = torch.bernoulli(torch.full((3, 5), 0.5), generator=gen(7))
    torch.testing.assert_close(a.log_prob(x), b.log_prob(x))


def test_bad_input():
    with pytest.raises(ValueError, match="d must"):
        MADE(1)
    with pytest.raises(ValueError, match="hidden"):
        MADE(4, ())
    with pytest.raises(ValueError, match="hidden"):
        MADE(4, (0,))
    with pytest.raises(ValueError, match="n_masks"):
        MADE(4, (8,), n_masks=0)
    with pytest.raises(ValueError, match="ordering"):
        MADE(4, (8,), ordering=torch.tensor([0, 1, 1, 2]))
    with pytest.raises(ValueError, match="ordering"):
        made_degrees(3, [4], torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="degrees"):
        made_masks([torch.arange(3) + 1])
    model = MADE(4, (8,), n_masks=2)
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        model(torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        model(torch.zeros(2, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="binary"):
        model.log_prob(torch.full((2, 4), 0.5))
    with pytest.raises(ValueError, match="mask"):
        model(torch.zeros(2, 4), mask=2)
    with pytest.raises(ValueError, match="mask"):
        model.sample(3, mask=-1)
    with pytest.raises(ValueError, match="n must"):
        model.sample(-1)
    with pytest.raises(ValueError, match="model"):
        made_step(torch.nn.Linear(2, 2), torch.optim.SGD([torch.zeros(1, requires_grad=True)],
                                                         lr=1.0))
    with pytest.raises(ValueError, match="optimizer"):
        made_step(model, object())
