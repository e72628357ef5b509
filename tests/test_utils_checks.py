"""Tests for utils.checks: what a notebook's checked cell prints, and how it fails."""

import numpy as np
import pytest
import torch

from utils import check, check_close


def test_check_prints_tick(capsys):
    check("a bound holds", True)
    check("tensor condition", torch.tensor(True))
    check("numpy condition", np.bool_(True))
    assert capsys.readouterr().out == "✓ a bound holds\n✓ tensor condition\n✓ numpy condition\n"


def test_check_failure_names_label_and_detail(capsys):
    with pytest.raises(AssertionError, match=r"check failed: KL >= 0 \(KL = -1\)"):
        check("KL >= 0", False, detail="KL = -1")
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("condition", [torch.ones(2, dtype=torch.bool), np.ones(3, bool), 1, "yes"])
def test_check_bad_condition(condition):
    with pytest.raises(ValueError, match="single boolean|must be a bool"):
        check("label", condition)


def test_check_bad_label():
    with pytest.raises(ValueError, match="label"):
        check("  ", True)


def test_check_close(capsys):
    check_close("agree", torch.tensor([1.0, 2.0]), np.array([1.0, 2.0 + 1e-9]))
    assert capsys.readouterr().out == "✓ agree\n"
    with pytest.raises(AssertionError, match=r"max \|error\| 0.1 at flat index 1"):
        check_close("disagree", [1.0, 2.1], [1.0, 2.0], rtol=0.0, atol=1e-3)
    with pytest.raises(AssertionError):
        check_close("nan never passes", float("nan"), 0.0, atol=1.0)
    with pytest.raises(ValueError, match="broadcast"):
        check_close("shapes", [1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="non-negative"):
        check_close("tol", 1.0, 1.0, rtol=-1)


@pytest.mark.parametrize("actual, expected", [
    (torch.empty(0), torch.empty(0)),
    (torch.empty(0, 3), 1.0),
    (np.array([]), np.array([])),
    ([], []),
])
def test_check_close_fails_on_empty_input(capsys, actual, expected):
    with pytest.raises(AssertionError, match="nothing to compare"):
        check_close("empty", actual, expected)
    assert capsys.readouterr().out == ""
