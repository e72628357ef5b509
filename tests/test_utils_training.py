"""Tests for utils.training: the one loop, its checkpoints, EMA and NaN detection."""

import math

import pytest
import torch
from torch import nn

from utils.training import (
    EMA,
    NonFiniteLossError,
    check_finite,
    fit,
    load_checkpoint,
    planned_steps,
    save_checkpoint,
    to_device,
)

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


@pytest.mark.parametrize("kind", ["optimizers", "schedulers", "ema", "config"])
def test_load_checks_every_name_before_loading_anything(tmp_path, kind):
    """A mismatch found late (optimisers, schedulers, EMA, config) must not leave the model
    already overwritten: the checkpoint is either loaded whole or not at all."""
    ckpt = tmp_path / "c.pt"
    model, opt, sched, *_ = make_run(seed=0)
    ema = EMA(model, 0.9)
    save_checkpoint(ckpt, step=3, models={"model": model}, optimizers={"opt": opt},
                    schedulers={"sched": sched}, ema={"model": ema}, config={"lr": 1e-2})
    fresh, fresh_opt, fresh_sched, *_ = make_run(seed=1)
    before = [p.clone() for p in fresh.parameters()]
    names = dict(models={"model": fresh}, optimizers={"opt": fresh_opt},
                 schedulers={"sched": fresh_sched}, ema={"model": EMA(fresh, 0.9)},
                 config={"lr": 1e-2})
    if kind == "config":
        names["config"] = {"lr": 1e-3}
    else:
        names[kind] = {"renamed": next(iter(names[kind].values()))}
    with pytest.raises(ValueError, match=kind):
        load_checkpoint(ckpt, **names)
    for a, b in zip(before, fresh.parameters()):
        assert torch.equal(a, b), "the model was loaded before the mismatch was found"


def test_rng_states_load_on_the_cpu_whatever_the_map_location(tmp_path):
    """Regression: a GPU run resumed with map_location=its device moved the RNG states there,
    and torch.set_rng_state / NumPy raised. "meta" stands in for an accelerator on a CPU-only
    machine: a tensor there is not a CPU tensor, exactly like a CUDA one."""
    ckpt = tmp_path / "c.pt"
    torch.manual_seed(5)
    save_checkpoint(ckpt, step=1, models={})
    expected = torch.rand(3)
    torch.manual_seed(99)
    load_checkpoint(ckpt, models={}, map_location="meta")
    assert torch.equal(torch.rand(3), expected)


def test_map_location_must_be_a_device(tmp_path):
    ckpt = tmp_path / "c.pt"
    save_checkpoint(ckpt, step=1, models={})
    with pytest.raises(ValueError, match="map_location"):
        load_checkpoint(ckpt, models={}, map_location={"cuda:0": "cpu"})


def test_map_location_moves_the_weights_not_the_rng(tmp_path):
    ckpt = tmp_path / "c.pt"
    model, opt, *_ = make_run()
    save_checkpoint(ckpt, step=1, models={"model": model}, optimizers={"opt": opt})
    fresh, fresh_opt, *_ = make_run(seed=3)
    load_checkpoint(ckpt, models={"model": fresh}, optimizers={"opt": fresh_opt},
                    map_location=torch.device("cpu"))
    for a, b in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(a, b)


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


def test_ema_is_the_warmed_up_exponential_average():
    """d_n = min(decay, (1 + n)/(10 + n)): with decay 0.5, d_0 = 0.1, d_1 = 2/11, then 0.5."""
    model = nn.Linear(1, 1, bias=False)
    ema = EMA(model, decay=0.5)
    w = ema.averaged.weight.item()
    for n, target in enumerate((2.0, 4.0, -1.0, 3.0, 5.0, 7.0, 0.5, 8.0, 9.0, 1.0)):
        d = min(0.5, (1 + n) / (10 + n))
        assert ema.current_decay() == pytest.approx(d)
        with torch.no_grad():
            model.weight.fill_(target)
        ema.update(model)
        w = d * w + (1 - d) * target
        assert ema.averaged.weight.item() == pytest.approx(w, rel=1e-6)
    assert ema.updates == 10 and ema.current_decay() == 0.5
    assert not ema.averaged.weight.requires_grad and not ema.averaged.training


def test_ema_warm_up_forgets_the_initial_weights():
    """Without warm-up, after 100 steps at decay 0.999 the random init still weighs
    0.999^100 = 90%; with it, its weight is prod_n d_n = 9!·100!/109! (tiny)."""
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = EMA(model, decay=0.999)
    with torch.no_grad():
        model.weight.fill_(0.0)
    for _ in range(100):
        ema.update(model)
    weight_of_init = math.prod(min(0.999, (1 + n) / (10 + n)) for n in range(100))
    assert ema.averaged.weight.item() == pytest.approx(weight_of_init, rel=1e-4)
    assert weight_of_init < 1e-11


def test_ema_averages_float_buffers_and_copies_integer_ones():
    model = nn.BatchNorm1d(2)
    ema = EMA(model, decay=0.5)
    model.train()
    x = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    model(x)                                  # running_mean = 0.1 · batch mean; one batch tracked
    ema.update(model)                         # d_0 = 0.1
    expected = 0.1 * torch.zeros(2) + 0.9 * model.running_mean
    assert torch.allclose(ema.averaged.running_mean, expected)
    assert not torch.equal(ema.averaged.running_mean, model.running_mean)
    assert ema.averaged.num_batches_tracked.item() == 1


def test_ema_state_holds_the_update_count():
    model = nn.Linear(2, 1)
    ema = EMA(model, 0.9)
    for _ in range(3):
        ema.update(model)
    other = EMA(nn.Linear(2, 1), 0.9)
    other.load_state_dict(ema.state_dict())
    assert other.updates == 3
    with pytest.raises(ValueError, match="averaged"):
        other.load_state_dict(model.state_dict())


def test_check_finite_raises_before_the_update():
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.clone() for p in model.parameters()]

    def step(batch):
        opt.zero_grad()
        loss = model(batch).mean() * float("nan")
        check_finite("loss", loss)
        loss.backward()
        opt.step()
        return {"loss": loss.item()}

    with pytest.raises(NonFiniteLossError, match="loss is nan"):
        fit(step, lambda s: torch.ones(4, 2), 3, models=model, device=CPU, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert check_finite("x", torch.tensor(2.5)) == 2.5
    with pytest.raises(NonFiniteLossError, match="step 7: x is inf"):
        check_finite("x", float("inf"), 7)


def test_planned_steps_cuts_fit_for_the_guards(monkeypatch):
    monkeypatch.delenv("DGM_FIT_FRACTION", raising=False)
    assert planned_steps(500) == 500
    monkeypatch.setenv("DGM_FIT_FRACTION", "0.02")
    assert [planned_steps(n) for n in (0, 1, 50, 500, 1234)] == [0, 1, 1, 10, 25]
    res = fit(lambda b: {"loss": 1.0}, lambda s: 0, 200, models=nn.Linear(1, 1), device=CPU,
              progress=False)
    assert res.step == 4 and len(res.history["loss"]) == 4
    res = fit(lambda b: {"loss": 1.0}, lambda s: 0, 200, models=nn.Linear(1, 1), device=CPU,
              progress=False, guard=False)
    assert res.step == 200
    for bad in ("0", "1.5", "-0.1", "half"):
        monkeypatch.setenv("DGM_FIT_FRACTION", bad)
        with pytest.raises(ValueError, match="DGM_FIT_FRACTION"):
            planned_steps(10)


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
