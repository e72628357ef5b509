"""Tests for autoregressive.training_step: lm_loss against the hand-computed cross-entropy,
lm_step with fit (loss falls, clipping bounds the update, a non-finite loss stops before the
step), the warm-up/cosine schedule's formula, evaluate_lm's windows (every target exactly once,
with the promised context) and its value against a direct computation; bad input."""

import math

import pytest
import torch

from autoregressive import GPT, GPTConfig, evaluate_lm, lm_loss, lm_step, warmup_cosine
from autoregressive.training_step import _windows
from utils.training import NonFiniteLossError, fit

pytestmark = pytest.mark.usefixtures("one_thread")


def small(block=8):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=6, block_size=block, n_layer=1, n_head=2, n_embd=8))


def test_lm_loss_by_hand():
    logits = torch.tensor([[[0.0, 1.0], [2.0, 0.0]]])
    y = torch.tensor([[1, 1]])
    expected = -(math.log(math.e / (1 + math.e)) + math.log(1 / (1 + math.e ** 2))) / 2
    assert lm_loss(logits, y).item() == pytest.approx(expected, abs=1e-6)


def test_lm_step_trains_with_fit():
    model = small()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = torch.tensor([[0, 1, 2, 3, 4, 5, 0, 1]]).repeat(4, 1)
    y = torch.roll(x, -1, 1)
    result = fit(lm_step(model, opt), lambda s: (x, y), 60, models=model, optimizers=opt,
                 progress=False, device="cpu")
    loss = result.history["loss"]
    assert loss[0] > 1.5 and loss[-1] < 0.1
    assert set(result.history) >= {"loss", "grad_norm", "lr"}


def test_clipping_bounds_the_gradient():
    model = small()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    x = torch.randint(6, (2, 8), generator=torch.Generator().manual_seed(0))
    step = lm_step(model, opt, clip=1e-3)
    metrics = step((x, x))
    clipped = math.sqrt(sum(p.grad.pow(2).sum().item() for p in model.parameters()))
    assert metrics["grad_norm"] > 1e-3 and clipped == pytest.approx(1e-3, rel=1e-3)


def test_nonfinite_loss_stops_before_the_step():
    model = small()
    with torch.no_grad():
        model.head.weight[0, 0] = float("nan")
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.AdamW(model.parameters(), lr=1.0)
    with pytest.raises(NonFiniteLossError, match="loss"):
        lm_step(model, opt)((torch.zeros(1, 4, dtype=torch.int64),) * 2)
    for a, b in zip(before, model.parameters()):
        assert torch.equal(a, b.detach()) or torch.isnan(a).any()


def test_warmup_cosine_formula():
    p = torch.nn.Parameter(torch.zeros(()))
    opt = torch.optim.SGD([p], lr=2.0)
    sched = warmup_cosine(opt, warmup=4, total=14, min_ratio=0.1)
    lrs = []
    for _ in range(16):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.5, 1.0, 1.5, 2.0])
    assert lrs[9] == pytest.approx(2.0 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5))))
    assert lrs[14] == pytest.approx(0.2) and lrs[15] == pytest.approx(0.2)


@pytest.mark.parametrize("n,block,stride", [(1, 4, 2), (3, 4, 2), (37, 8, 4), (40, 8, 8),
                                            (40, 8, 3), (5, 8, 4)])
def test_windows_score_every_target_once_with_context(n, block, stride):
    scored = []
    for start, first, end in _windows(n, block, stride):
        assert end <= block
        for j in range(first, end):
            scored.append(start + j)
            if start > 0:
                assert j >= block - stride   # at least block − stride tokens of context
    assert scored == list(range(n))


def test_evaluate_lm_equals_a_direct_computation():
    model = small(block=8).double()
    tokens = torch.randint(6, (30,), generator=torch.Generator().manual_seed(1))
    got = evaluate_lm(model, tokens, stride=8, batch_size=3)
    # stride = block: windows of 8 starting at 0, 8, 16; the last 5 targets (24 … 28) are scored
    # in the full window starting at 21, so that they keep 3 … 7 tokens of context
    total = 0.0
    with torch.no_grad():
        for s, first in [(0, 0), (8, 0), (16, 0), (21, 3)]:
            x, y = tokens[s:s + 8], tokens[s + 1:s + 9]
            logp = torch.log_softmax(model(x[None]), -1)[0]
            total -= logp.gather(-1, y[:, None])[first:].sum().item()
    assert got == pytest.approx(total / 29, rel=1e-9)
    assert evaluate_lm(model, tokens, max_tokens=5) == pytest.approx(
        evaluate_lm(model, tokens[:6]), rel=1e-9)
    assert model.training


def test_bad_input():
    model = small()
    with pytest.raises(ValueError, match="int64"):
        evaluate_lm(model, torch.zeros(10))
    with pytest.raises(ValueError, match="N >= 2"):
        evaluate_lm(model, torch.zeros(1, dtype=torch.int64))
    with pytest.raises(ValueError, match="stride"):
        evaluate_lm(model, torch.zeros(10, dtype=torch.int64), stride=9)
    with pytest.raises(ValueError, match="clip"):
        lm_step(model, torch.optim.SGD(model.parameters(), lr=0.1), clip=0.0)
    with pytest.raises(ValueError, match="warmup"):
        warmup_cosine(torch.optim.SGD(model.parameters(), lr=0.1), warmup=10, total=10)
    with pytest.raises(ValueError, match=r"\(B, T, V\)"):
        lm_loss(torch.zeros(2, 5), torch.zeros(2, dtype=torch.int64))


def test_ignored_targets_are_left_out_of_the_mean():
    from autoregressive import IGNORE, lm_loss
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    y = torch.randint(7, (2, 5))
    masked = y.clone()
    masked[:, :3] = IGNORE
    expected = torch.nn.functional.cross_entropy(logits[:, 3:].flatten(0, 1), y[:, 3:].flatten())
    torch.testing.assert_close(lm_loss(logits, masked), expected)


def test_ignore_is_the_data_tasks_unscored_value():
    from autoregressive import IGNORE
    from utils.data import IGNORE as DATA_IGNORE
    assert IGNORE == DATA_IGNORE == -100
