"""Tests for utils.validation, the argument checks every part shares."""

import math

import numpy as np
import pytest
import torch

from utils.validation import (
    check_choice,
    check_int,
    check_positive,
    check_probabilities,
    is_int,
    shape_of,
)


def test_shape_of():
    assert shape_of(torch.zeros(2, 3)) == (2, 3)
    assert shape_of([1, 2]) == "list"


@pytest.mark.parametrize("value, expected", [(3, True), (np.int64(3), True), (True, False),
                                             (3.0, False), ("3", False), (None, False)])
def test_is_int(value, expected):
    assert is_int(value) is expected


def test_check_int():
    assert check_int("n", np.int32(5), minimum=1) == 5 and type(check_int("n", 5)) is int
    with pytest.raises(ValueError, match=r"n must be an integer >= 1, got 0"):
        check_int("n", 0, minimum=1)
    with pytest.raises(ValueError, match=r"n must be an integer, got 2.0 \(float\)"):
        check_int("n", 2.0)
    with pytest.raises(ValueError, match="bool"):
        check_int("n", True)


def test_check_positive():
    assert check_positive("sigma", 2) == 2.0 and check_positive("sigma", torch.tensor(0.5)) == 0.5
    for bad in (0, -1.0, math.inf, math.nan, True, "1", None):
        with pytest.raises(ValueError, match="sigma must be a positive finite number"):
            check_positive("sigma", bad)
    with pytest.raises(ValueError, match="positive scalar"):
        check_positive("sigma", torch.ones(2))


def test_check_choice():
    assert check_choice("name", "a", ("a", "b")) == "a"
    with pytest.raises(ValueError, match=r"name must be one of \('a', 'b'\), got 'c'"):
        check_choice("name", "c", ("a", "b"))


def test_check_probabilities():
    p = torch.tensor([[0.25, 0.75], [1.0, 0.0]], dtype=torch.float64)
    assert check_probabilities("p", p) is p
    check_probabilities("p", torch.tensor([0.3, 0.7 + 1e-6]))  # float32 tolerance 1e-5 per entry
    with pytest.raises(ValueError, match="sum to one"):
        check_probabilities("p", torch.tensor([0.3, 0.7 + 1e-6], dtype=torch.float64))
    with pytest.raises(ValueError, match="non-negative entries"):
        check_probabilities("p", torch.tensor([1.5, -0.5]))
    with pytest.raises(ValueError, match="no NaN"):
        check_probabilities("p", torch.tensor([float("nan"), 1.0]))
    for bad in (torch.tensor([1, 0]), [0.5, 0.5], torch.tensor(1.0), torch.zeros(2, 0)):
        with pytest.raises(ValueError, match="float tensor of probabilities"):
            check_probabilities("p", bad)
