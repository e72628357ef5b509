"""Tests for utils.data.sequence_tasks: every property of the two tasks (the answer is the data
tokens in order, noise fills the rest, the induction target follows the trigger, the trigger
occurs exactly twice), determinism, stateless batches, the accuracy, and bad input."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from utils.data import IGNORE, answer_accuracy, induction_heads, selective_copying, task_batches


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 12), st.integers(2, 9), st.integers(0, 2 ** 31 - 1))
def test_selective_copying_answer_is_the_data_in_order(n_data, n_values, seed):
    n_slots = n_data + 10
    x, y, V = selective_copying(5, n_slots=n_slots, n_data=n_data, n_values=n_values, seed=seed)
    noise, marker = n_values, n_values + 1
    assert V == n_values + 2 and x.shape == y.shape == (5, n_slots + n_data)
    assert x.dtype == y.dtype == torch.int64
    for row, target in zip(x, y):
        slots = row[:n_slots]
        data = slots[slots != noise]
        assert len(data) == n_data                              # distinct positions
        assert bool((data < n_values).all())
        assert torch.equal(row[n_slots:], torch.full((n_data,), marker))
        assert torch.equal(target[n_slots:], data)              # in order of position
        assert bool((target[:n_slots] == IGNORE).all())


def test_selective_copying_positions_vary_and_values_are_uniform():
    x, y, _ = selective_copying(4000, n_slots=64, n_data=8, n_values=8, seed=3)
    first = (x[:, :64] != 8).int().argmax(1)            # where the first data token sits
    assert len(first.unique()) > 20
    counts = torch.bincount(y[:, 64:].flatten(), minlength=8).double()
    expected = 4000 * 8 / 8
    assert bool(((counts - expected).abs() < 5 * expected ** 0.5).all())


@settings(max_examples=25, deadline=None)
@given(st.integers(4, 40), st.integers(2, 20), st.integers(0, 2 ** 31 - 1))
def test_induction_target_follows_the_trigger(seq_len, n_values, seed):
    x, y, V = induction_heads(6, seq_len=seq_len, n_values=n_values, seed=seed)
    trigger = n_values
    assert V == n_values + 1 and x.shape == y.shape == (6, seq_len)
    for row, target in zip(x, y):
        where = (row == trigger).nonzero().flatten()
        assert len(where) == 2 and where[1] == seq_len - 1     # once inside, once at the end
        p = int(where[0])
        assert p <= seq_len - 3
        assert target[-1] == row[p + 1] and row[p + 1] < n_values
        assert bool((target[:-1] == IGNORE).all())


def test_deterministic_given_the_seed():
    a, b = selective_copying(7, seed=11), selective_copying(7, seed=11)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, selective_copying(7, seed=12).x)
    c, d = induction_heads(7, seed=5), induction_heads(7, seed=5)
    assert torch.equal(c.x, d.x) and torch.equal(c.y, d.y)


def test_batches_are_stateless_by_step():
    batches = task_batches("induction_heads", 16, seed=2, seq_len=32, n_values=8)
    assert batches.vocab_size == 9
    x5, y5 = batches(5)
    batches(0)
    assert torch.equal(batches(5)[0], x5) and torch.equal(batches(5)[1], y5)
    assert not torch.equal(batches(6)[0], x5)
    it = iter(batches)
    assert torch.equal(next(it)[0], batches(0)[0])
    other = task_batches("induction_heads", 16, seed=3, seq_len=32, n_values=8)
    assert not torch.equal(other(5)[0], x5)
    x, _ = task_batches("selective_copying", 4, n_slots=20, n_data=3)(0)
    assert x.shape == (4, 23)


def test_answer_accuracy_scores_only_the_answers():
    y = torch.tensor([[IGNORE, 2, 1], [IGNORE, IGNORE, 0]])
    logits = torch.zeros(2, 3, 3)
    logits[0, 1, 2] = logits[0, 2, 0] = logits[1, 2, 0] = 1.0   # right, wrong, right
    logits[:, 0, 1] = 5.0                                        # unscored: anything
    assert answer_accuracy(logits, y) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="scores no position"):
        answer_accuracy(logits, torch.full((2, 3), IGNORE))
    with pytest.raises(ValueError, match=r"\(B, T, V\)"):
        answer_accuracy(logits[0], y)


@pytest.mark.parametrize("kw", [dict(n=0), dict(n=2, n_data=0), dict(n=2, n_values=1),
                                dict(n=2, n_slots=4, n_data=5), dict(n=2, seed=-1),
                                dict(n=2.5)])
def test_selective_copying_bad_input(kw):
    with pytest.raises(ValueError):
        selective_copying(**kw)


@pytest.mark.parametrize("kw", [dict(n=0), dict(n=2, seq_len=3), dict(n=2, n_values=1)])
def test_induction_heads_bad_input(kw):
    with pytest.raises(ValueError):
        induction_heads(**kw)


def test_task_batches_bad_input():
    with pytest.raises(ValueError, match="task"):
        task_batches("copying", 4)
    with pytest.raises(ValueError):
        task_batches("selective_copying", 0)
    with pytest.raises(ValueError):
        task_batches("selective_copying", 4, n_data=100)
    with pytest.raises(ValueError):
        task_batches("induction_heads", 4)(-1)
