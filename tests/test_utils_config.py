"""Tests for utils.config: profiles, device, seeding."""

import platform
import random

import numpy as np
import pytest
import torch

from utils import Config, active_profile, device, profile, seed_everything
from utils.config import keep_freed_memory


@pytest.mark.parametrize("name, expected", [("tiny", 1), ("cpu", 2), ("gpu", 3), (" CPU ", 2)])
def test_profile_picks_the_active_one(monkeypatch, name, expected):
    monkeypatch.setenv("DGM_PROFILE", name)
    assert profile(tiny=1, cpu=2, gpu=3) == expected


def test_profile_default_follows_cuda(monkeypatch):
    monkeypatch.delenv("DGM_PROFILE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert active_profile() == "gpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert active_profile() == "cpu"


def test_profile_dict_becomes_config(monkeypatch):
    monkeypatch.setenv("DGM_PROFILE", "tiny")
    cfg = profile(tiny=dict(steps=5), cpu=dict(steps=50), gpu=dict(steps=500))
    assert isinstance(cfg, Config) and cfg.steps == 5 and cfg["profile"] == "tiny"
    cfg.lr = 0.1
    assert cfg["lr"] == 0.1
    with pytest.raises(AttributeError, match="no entry 'batch'"):
        _ = cfg.batch


def test_profile_bad_input(monkeypatch):
    monkeypatch.setenv("DGM_PROFILE", "laptop")
    with pytest.raises(ValueError, match="DGM_PROFILE must be one of"):
        profile(tiny=1, cpu=2, gpu=3)
    monkeypatch.setenv("DGM_PROFILE", "cpu")
    with pytest.raises(TypeError):
        profile(tiny=1, cpu=2)  # every profile must be given
    with pytest.raises(ValueError, match="reserved"):
        profile(tiny={}, cpu={"profile": 1}, gpu={})


def test_device_prefers_cuda_and_never_picks_mps_unasked(monkeypatch):
    monkeypatch.delenv("DGM_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert device().type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert device().type == "cpu"  # MPS has no float64: used only when DGM_DEVICE asks for it
    monkeypatch.setenv("DGM_DEVICE", "mps")
    assert device().type == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.delenv("DGM_DEVICE")
    assert device().type == "cpu"


def test_device_from_the_environment(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("DGM_DEVICE", "CPU")
    assert device() == torch.device("cpu")


@pytest.mark.parametrize("name, match", [("xla", "must be"), ("gpu", "must name a device"),
                                         ("cuda", "no cuda"), ("mps", "no mps")])
def test_device_bad_environment(monkeypatch, name, match):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setenv("DGM_DEVICE", name)
    with pytest.raises(ValueError, match=match):
        device()


def test_seed_everything_repeats_all_three_generators():
    def draw():
        return random.random(), np.random.rand(), torch.rand(1).item()

    seed_everything(11)
    a = draw()
    seed_everything(11)
    assert draw() == a
    seed_everything(12)
    assert draw() != a


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, "1", True])
def test_seed_everything_bad_input(seed):
    with pytest.raises(ValueError, match="seed"):
        seed_everything(seed)


def test_keep_freed_memory_takes_effect_on_glibc_and_rejects_bad_limits():
    applied = keep_freed_memory()
    assert isinstance(applied, bool)
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert applied
    assert keep_freed_memory() == applied            # idempotent
    for bad in (0, -1, 2**31, 1.5, True, "1"):
        with pytest.raises(ValueError, match="limit_bytes"):
            keep_freed_memory(bad)
