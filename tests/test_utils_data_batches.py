"""Tests for utils.data.batches: every epoch is a permutation, and a batch depends only on its
step."""

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from utils.data import Batches, batches, epoch_permutation


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 40), data=st.data(), seed=st.integers(0, 2**40),
       drop_last=st.booleans(), epoch=st.integers(0, 3))
def test_every_epoch_visits_every_index_once(n, data, seed, drop_last, epoch):
    batch_size = data.draw(st.integers(1, n), label="batch_size")
    sampler = batches(torch.arange(n), batch_size=batch_size, seed=seed, drop_last=drop_last)
    steps = range(epoch * sampler.steps_per_epoch, (epoch + 1) * sampler.steps_per_epoch)
    seen = torch.cat([sampler(s) for s in steps])
    if drop_last:
        assert sampler.steps_per_epoch == n // batch_size
        assert all(len(sampler(s)) == batch_size for s in steps)
        assert len(seen) == (n // batch_size) * batch_size
        assert len(set(seen.tolist())) == len(seen)  # no repeats; N mod B left out
    else:
        assert sampler.steps_per_epoch == -(-n // batch_size)
        assert torch.equal(seen.sort().values, torch.arange(n))


def test_epoch_is_the_permutation_slice():
    x = torch.arange(10) * 10
    sampler = batches(x, batch_size=3, seed=5, drop_last=False)  # steps of 3, 3, 3, 1
    assert sampler.steps_per_epoch == 4
    pi_1 = epoch_permutation(10, seed=5, epoch=1)
    assert torch.equal(sampler(4), x[pi_1[0:3]])
    assert torch.equal(sampler(7), x[pi_1[9:10]])


def test_same_step_same_batch_and_resume_matches_an_uninterrupted_run():
    x, y = torch.randn(50, 3), torch.arange(50)
    uninterrupted = list(itertools.islice(iter(batches(x, y, batch_size=8, seed=1)), 20))
    resumed = batches(x, y, batch_size=8, seed=1)  # a fresh sampler, as after a restart
    for step in [13, 7, 19, 13, 0]:  # in any order, repeatedly
        bx, by = resumed(step)
        assert torch.equal(bx, uninterrupted[step][0]) and torch.equal(by, uninterrupted[step][1])


def test_epochs_and_seeds_differ():
    x = torch.arange(100)
    sampler = batches(x, batch_size=100, seed=0)
    assert sampler.steps_per_epoch == 1
    assert not torch.equal(sampler(0), sampler(1))
    assert not torch.equal(sampler(0), batches(x, batch_size=100, seed=1)(0))
    # The derived seed hashes (seed, epoch): no shift between seeds as with seed + epoch.
    assert not torch.equal(epoch_permutation(100, 0, 1), epoch_permutation(100, 1, 0))


def test_one_tensor_gives_a_tensor_two_give_an_aligned_tuple():
    x = torch.arange(20, dtype=torch.float32)[:, None].expand(20, 4)
    y = torch.arange(20) * 2
    single = batches(x, batch_size=6)(2)
    assert isinstance(single, torch.Tensor) and single.shape == (6, 4)
    pair = batches(x, y, batch_size=6)(2)
    assert isinstance(pair, tuple) and len(pair) == 2
    assert torch.equal(pair[0][:, 0].long() * 2, pair[1])
    assert torch.equal(pair[0], single)  # the same indices whatever the number of tensors


def test_iter_yields_steps_in_order_forever():
    sampler = batches(torch.arange(7), batch_size=2, seed=3)
    first = list(itertools.islice(iter(sampler), 10))  # 3 steps per epoch: crosses 3 epochs
    assert all(torch.equal(b, sampler(s)) for s, b in enumerate(first))


def test_does_not_touch_global_rng():
    torch.manual_seed(0)
    expected = torch.rand(2)
    torch.manual_seed(0)
    batches(torch.arange(30), batch_size=4)(11)
    assert torch.equal(torch.rand(2), expected)


def test_attributes_and_repr():
    sampler = batches(torch.zeros(10, 2), batch_size=4, seed=2, drop_last=False)
    assert isinstance(sampler, Batches)
    assert (sampler.n, sampler.batch_size, sampler.seed, sampler.steps_per_epoch) == (10, 4, 2, 3)
    assert "steps_per_epoch=3" in repr(sampler)


def test_no_tensors():
    with pytest.raises(ValueError, match="at least one tensor, got none"):
        batches(batch_size=2)


def test_different_first_dimensions():
    with pytest.raises(ValueError, match=r"same first dimension, got \[5, 4\]"):
        batches(torch.zeros(5), torch.zeros(4), batch_size=2)


@pytest.mark.parametrize("bad", [[1, 2, 3], torch.tensor(1.0)])
def test_not_a_batchable_tensor(bad):
    with pytest.raises(ValueError, match="tensor 1 must be a torch.Tensor with a first"):
        batches(torch.zeros(3), bad, batch_size=1)


def test_empty_tensors():
    with pytest.raises(ValueError, match="no examples"):
        batches(torch.zeros(0, 2), batch_size=1)


@pytest.mark.parametrize("batch_size", [0, -1, 11, 2.0, True, None])
def test_bad_batch_size(batch_size):
    with pytest.raises(ValueError, match=r"batch_size must be an integer in \[1, N = 10\], got"):
        batches(torch.zeros(10), batch_size=batch_size)


@pytest.mark.parametrize("step", [-1, 1.0, "3", None])
def test_bad_step(step):
    sampler = batches(torch.zeros(10), batch_size=2)
    with pytest.raises(ValueError, match=r"step must be an integer >= 0, got"):
        sampler(step)


def test_bad_seed_and_drop_last():
    with pytest.raises(ValueError, match=r"seed must be an integer >= 0, got -1"):
        batches(torch.zeros(10), batch_size=2, seed=-1)
    with pytest.raises(ValueError, match="drop_last must be a bool, got 1"):
        batches(torch.zeros(10), batch_size=2, drop_last=1)


def test_epoch_permutation_checks_inputs():
    assert torch.equal(epoch_permutation(6, 0, 0).sort().values, torch.arange(6))
    for kwargs, match in [(dict(n=0, seed=0, epoch=0), "n must be"),
                          (dict(n=3, seed=-2, epoch=0), "seed must be"),
                          (dict(n=3, seed=0, epoch=-1), "epoch must be")]:
        with pytest.raises(ValueError, match=match):
            epoch_permutation(**kwargs)
