"""Tests for utils.training: the one loop, its checkpoints, EMA and NaN detection."""

import math

import pytest
import torch
from torch import nn

from utils.training import EMA, NonFiniteLossError, fit, load_checkpoint, save_checkpoint, to_device

CPU = torch.device("cpu")


def make_run(seed=0):
    """A small regression with dropout and injected noise, so RNG state matters for resume."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 16), nn.Dropout(0.2), nn.Tanh(), nn.Linear(16, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=20, gamma=0.7)
    g = torch.Generator().manual_seed(123)
    x = torch.randn(64, 3, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1 * torch.randn(64, 1, generator=g)

    def batches(s):
        i = torch.arange(16) + 16 * (s % 4)
        return x[i], y[i]

    def step(batch):
        xb, yb = batch
        opt.zero_grad()
        noise = 0.01 * torch.randn_like(xb)  # draws from the global RNG every step
        loss = ((model(xb + noise) - yb) ** 2).mean()
        loss.backward()
        opt.step()
        sched.step()
        return {"loss": loss.item()}

    return model, opt, sched, batches, step


def run(steps, ckpt=None, seed=0, **kw):
    model, opt, sched, batches, step = make_run(seed)
    res = fit(step, batches, steps, models=model, optimizers=opt, schedulers=sched,
              ema_decay=0.9, checkpoint=ckpt, device=CPU, progress=False, **kw)
    return model, res


def test_fit_reduces_loss_and_records_history():
    _, res = run(60)
    assert res.history["step"] == list(range(60))
    assert len(res.history["loss"]) == 60
    assert sum(res.history["loss"][-10:]) < 0.5 * sum(res.history["loss"][:10])
    assert res.step == 60 and res.seconds > 0


def test_resumed_run_ends_where_uninterrupted_run_does(tmp_path):
    torch.manual_seed(7)
    full_model, full = run(30)
    ckpt = tmp_path / "run.pt"
    torch.manual_seed(7)
    run(13, ckpt=ckpt, checkpoint_every=5)  # "interrupted" after step 13
    torch.manual_seed(999)  # the new process starts with some other RNG state
    resumed_model, resumed = run(30, ckpt=ckpt, seed=1)  # fresh weights, overwritten by the load
    for a, b in zip(full_model.state_dict().values(), resumed_model.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(full.ema["model"].state_dict().values(),
                    resumed.ema["model"].state_dict().values()):
        assert torch.equal(a, b)
    assert resumed.history == full.history


def test_resume_differs_without_rng_restore(tmp_path):
    """Control for the test above: without the RNG state in the checkpoint, runs differ."""
    torch.manual_seed(7)
    full_model, _ = run(30)
    ckpt = tmp_path / "run.pt"
    torch.manual_seed(7)
    run(13, ckpt=ckpt)
    model, opt, sched, batches, step = make_run(1)
    load_checkpoint(ckpt, models={"model": model}, optimizers={"optimizer": opt},
                    schedulers={"scheduler": sched}, ema={"model": EMA(model, 0.9)},
                    restore_rng=False)
    torch.manual_seed(999)
    for s in range(13, 30):
        step(to_device(batches(s), CPU))
    assert not torch.equal(model[0].weight, full_model[0].weight)


def test_checkpoint_loads_with_weights_only(tmp_path):
    ckpt = tmp_path / "c.pt"
    run(5, ckpt=ckpt, config={"lr": 1e-2, "hidden": [16]})
    state = torch.load(ckpt, weights_only=True)
    assert state["step"] == 5 and state["config"] == {"lr": 1e-2, "hidden": [16]}


def test_resume_refuses_other_config(tmp_path):
    ckpt = tmp_path / "c.pt"
    run(5, ckpt=ckpt, config={"lr": 1e-2})
    with pytest.raises(ValueError, match="config"):
        run(10, ckpt=ckpt, config={"lr": 1e-3})


def test_load_refuses_mismatched_names(tmp_path):
    ckpt = tmp_path / "c.pt"
    model, opt, *_ = make_run()
    save_checkpoint(ckpt, step=0, models={"G": model}, optimizers={"opt": opt})
    with pytest.raises(ValueError, match="models"):
        load_checkpoint(ckpt, models={"D": model}, optimizers={"opt": opt})


def test_nan_loss_stops_the_run():
    model = nn.Linear(2, 1)
    calls = []

    def step(batch):
        calls.append(1)
        return {"loss": float("nan") if len(calls) == 4 else 1.0}

    with pytest.raises(NonFiniteLossError, match=r"step 3: metric 'loss' is nan"):
        fit(step, lambda s: torch.zeros(1), 10, models=model, device=CPU, progress=False)
    assert len(calls) == 4


def test_inf_metric_stops_the_run():
    with pytest.raises(NonFiniteLossError, match="inf"):
        fit(lambda b: {"loss": torch.tensor(float("inf"))}, lambda s: 0, 3,
            models=nn.Linear(1, 1), device=CPU, progress=False)


def test_ema_is_the_exponential_average():
    model = nn.Linear(1, 1, bias=False)
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(0.0)
    w0 = ema.averaged.weight.item()
    for target in (2.0, 4.0):
        with torch.no_grad():
            model.weight.fill_(target)
        ema.update(model)
    assert ema.averaged.weight.item() == pytest.approx(0.25 * w0 + 0.25 * 2.0 + 0.5 * 4.0)
    assert not ema.averaged.weight.requires_grad and not ema.averaged.training


def test_ema_bad_decay():
    for d in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="decay"):
            EMA(nn.Linear(1, 1), d)


def test_iterable_batches_cycle_and_metrics_pad():
    seen = []

    def step(b):
        seen.append(int(b))
        return {"a": 1.0} if int(b) % 2 == 0 else {"a": 1.0, "b": 2.0}

    res = fit(step, [torch.tensor(0), torch.tensor(1), torch.tensor(2)], 7,
              models=nn.Linear(1, 1), device=CPU, progress=False)
    assert seen == [0, 1, 2, 0, 1, 2, 0]
    assert len(res.history["b"]) == 7 and math.isnan(res.history["b"][0])
    assert res.history["b"][1] == 2.0


def test_to_device_nested():
    b = {"x": torch.zeros(1), "y": [torch.ones(1), "label"], "z": (torch.ones(2),)}
    out = to_device(b, CPU)
    assert out["y"][1] == "label" and isinstance(out["z"], tuple)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(steps=-1), "steps"),
        (dict(steps=2.5), "steps"),
        (dict(steps=3, checkpoint_every=0, checkpoint="x.pt"), "checkpoint_every"),
        (dict(steps=3, checkpoint_every=2), "checkpoint path"),
        (dict(steps=3, models={}), "at least one model"),
        (dict(steps=3, models="not a model"), "nn.Module"),
        (dict(steps=3, batches=42), "callable"),
    ],
)
def test_fit_bad_input(kwargs, match):
    args = dict(step=lambda b: {"loss": 0.0}, batches=lambda s: 0, models=nn.Linear(1, 1),
                device=CPU, progress=False)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        fit(**args)


@pytest.mark.parametrize("metrics", [{}, {"step": 1.0}, 3.0])
def test_fit_bad_metrics(metrics):
    with pytest.raises(ValueError):
        fit(lambda b: metrics, lambda s: 0, 2, models=nn.Linear(1, 1), device=CPU, progress=False)
