"""Tests for ssm.training_step: classify_step's loss and accuracy against direct computations,
training with fit on a separable toy, clipping, a non-finite loss stopping before the step,
evaluate_classifier against a direct count (batched, mode restored); bad input."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssm.training_step import classify_step, evaluate_classifier
from utils.training import NonFiniteLossError, fit

pytestmark = pytest.mark.usefixtures("one_thread")


class MeanLinear(nn.Module):
    """(B, L, d) → mean over L → linear → (B, K): a tiny sequence classifier."""

    def __init__(self, d=3, k=4):
        super().__init__()
        self.lin = nn.Linear(d, k)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.lin(self.drop(x.mean(1)))


def toy(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(4, (n,), generator=g)
    centres = torch.tensor([[2.0, 0, 0], [0, 2.0, 0], [0, 0, 2.0], [-2.0, -2.0, -2.0]])
    x = centres[y][:, None, :] + 0.3 * torch.randn(n, 5, 3, generator=g)
    return x, y


def test_loss_and_accuracy_equal_direct_computation():
    torch.manual_seed(0)
    model = MeanLinear()
    model.drop.p = 0.0
    x, y = toy(16)
    with torch.no_grad():
        logits = model(x)
    expected_loss = F.cross_entropy(logits, y).item()
    expected_acc = (logits.argmax(-1) == y).float().mean().item()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    m = classify_step(model, opt)((x, y))
    assert m["loss"] == pytest.approx(expected_loss, rel=1e-6)
    assert m["accuracy"] == pytest.approx(expected_acc)
    assert set(m) == {"loss", "accuracy", "grad_norm", "lr"} and m["lr"] == 0.0
    by_hand = -torch.log_softmax(logits, -1)[torch.arange(16), y].mean().item()
    assert m["loss"] == pytest.approx(by_hand, rel=1e-6)


def test_trains_with_fit_and_evaluates():
    torch.manual_seed(0)
    model = MeanLinear()
    x, y = toy(128)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    before = evaluate_classifier(model, x, y)
    result = fit(classify_step(model, opt), lambda s: (x, y), 80, models=model, optimizers=opt,
                 progress=False, device="cpu", guard=False)
    after = evaluate_classifier(model, x, y, batch_size=7)
    assert before < 0.6 and after == 1.0
    assert result.history["loss"][-1] < result.history["loss"][0] / 3
    assert model.training  # restored after evaluation


def test_evaluate_counts_correct_predictions_in_eval_mode():
    torch.manual_seed(1)
    model = MeanLinear()
    x, y = toy(50)
    model.eval()
    with torch.no_grad():
        direct = (model(x).argmax(-1) == y).float().mean().item()
    model.train()
    for bs in (1, 7, 50, 500):
        assert evaluate_classifier(model, x, y, batch_size=bs) == pytest.approx(direct)
    assert model.training


def test_clipping_bounds_the_gradient_and_reports_the_norm_before():
    torch.manual_seed(0)
    model = MeanLinear()
    model.drop.p = 0.0
    x, y = toy(16)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    m = classify_step(model, opt, clip=1e-3)((x, y))
    clipped = math.sqrt(sum(p.grad.pow(2).sum().item() for p in model.parameters()))
    assert m["grad_norm"] > 1e-3 and clipped == pytest.approx(1e-3, rel=1e-3)
    m2 = classify_step(model, opt, clip=None)((x, y))
    assert m2["grad_norm"] == pytest.approx(m["grad_norm"], rel=1e-5)


def test_scheduler_steps():
    model = MeanLinear()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    step = classify_step(model, opt, scheduler=sched)
    x, y = toy(8)
    assert [step((x, y))["lr"] for _ in range(3)] == [0.5, 0.25, 0.125]


def test_nonfinite_loss_stops_before_the_step():
    model = MeanLinear()
    with torch.no_grad():
        model.lin.bias[0] = float("nan")
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    with pytest.raises(NonFiniteLossError, match="loss"):
        classify_step(model, opt)(toy(4))
    for a, b in zip(before, model.parameters(), strict=True):
        assert torch.equal(a.nan_to_num(), b.detach().nan_to_num())


def test_bad_input():
    model = MeanLinear()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = toy(4)
    with pytest.raises(ValueError, match="clip"):
        classify_step(model, opt, clip=0)
    with pytest.raises(ValueError, match="clip"):
        classify_step(model, opt, clip=True)
    with pytest.raises(ValueError, match="no trainable"):
        classify_step(MeanLinear().requires_grad_(False), opt)
    step = classify_step(model, opt)
    with pytest.raises(ValueError, match="y must be an int64"):
        step((x, y.float()))
    with pytest.raises(ValueError, match="y must be an int64"):
        step((x, y[:2]))
    with pytest.raises(ValueError, match="labels must lie"):
        step((x, y + 10))
    with pytest.raises(ValueError, match="logits"):
        lin = nn.Linear(3, 4)  # (B, L, 4): not (B, K)
        classify_step(lin, torch.optim.SGD(lin.parameters(), lr=0.1))((x, y))
    with pytest.raises(ValueError, match="x must be"):
        evaluate_classifier(model, torch.zeros(3), y[:3])
    with pytest.raises(ValueError, match="batch_size"):
        evaluate_classifier(model, x, y, batch_size=0)
