"""Tests for ssm.scan: the parallel scans (Hillis-Steele, Blelloch) equal the sequential loop to
1e-10 in float64 at every length (not only powers of two), with h0, along any dim, with
broadcasting; both equal the unrolled sum and the geometric-series closed form; the operator is
associative on random triples; gradients (the loop's hand-written backward and autograd through
the parallel scans) pass gradcheck; the work/depth counts match their closed forms; hypothesis
properties (linearity in b, agreement at random lengths); every ValueError."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ssm import SCAN_METHODS, parallel_scan, scan_cost, sequential_scan
from ssm.scan import _combine

pytestmark = pytest.mark.usefixtures("one_thread")
F64 = torch.float64


def rand(*shape, seed=0, low=-1.0, high=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g, dtype=F64) * (high - low) + low


def unrolled(a, b, h0):
    """h_t = Σ_{s≤t} (Π_{s<r≤t} a_r) b_s + (Π_{r≤t} a_r) h0, along the last axis, by brute force."""
    L = a.shape[-1]
    out = []
    for t in range(L):
        h = torch.prod(a[..., :t + 1], -1) * h0
        for s in range(t + 1):
            h = h + torch.prod(a[..., s + 1:t + 1], -1) * b[..., s]
        out.append(h)
    return torch.stack(out, -1)


@pytest.mark.parametrize("L", [1, 2, 3, 5, 7, 8, 9, 31, 64, 100, 257])
@pytest.mark.parametrize("method", SCAN_METHODS)
def test_parallel_equals_sequential_at_every_length(L, method):
    a, b, h0 = rand(3, 4, L, seed=L), rand(3, 4, L, seed=L + 1), rand(3, 4, seed=L + 2)
    for init in (None, h0):
        ref = sequential_scan(a, b, init)
        assert (parallel_scan(a, b, init, method=method) - ref).abs().max() < 1e-10


def test_sequential_equals_the_unrolled_sum_and_the_closed_form():
    a, b, h0 = rand(2, 9, seed=1), rand(2, 9, seed=2), rand(2, seed=3)
    expected = unrolled(a, b, h0)
    assert torch.allclose(sequential_scan(a, b, h0), expected, atol=1e-13)
    for method in SCAN_METHODS:
        assert torch.allclose(parallel_scan(a, b, h0, method=method), expected, atol=1e-13)
    # constant a, b = 1: h_t = (1 − a^{t+1}) / (1 − a), a geometric series
    L, c = 50, 0.9
    t = torch.arange(L, dtype=F64)
    geometric = (1 - c ** (t + 1)) / (1 - c)
    ones = torch.ones(L, dtype=F64)
    for h in (sequential_scan(torch.full((L,), c, dtype=F64), ones),
              *(parallel_scan(torch.full((L,), c, dtype=F64), ones, method=m)
                for m in SCAN_METHODS)):
        assert torch.allclose(h, geometric, atol=1e-12)


def test_any_dim_and_broadcasting():
    a = rand(6, 1, seed=4)                   # one decay per row of length 6, broadcast over 5
    b = rand(6, 5, seed=5)
    h0 = rand(5, seed=6)
    ref = sequential_scan(a.expand(6, 5).T, b.T, h0).T           # scanned along the last dim
    for method in SCAN_METHODS:
        assert torch.allclose(parallel_scan(a, b, h0, dim=0, method=method), ref, atol=1e-12)
    assert torch.allclose(sequential_scan(a, b, h0, dim=0), ref, atol=1e-12)
    assert torch.allclose(sequential_scan(a, b, h0, dim=-2), ref, atol=1e-12)
    assert parallel_scan(a, b, h0, dim=0).shape == (6, 5)
    # h0 broadcasts over the batch: a scalar initial state
    x = parallel_scan(rand(3, 7, seed=7), rand(3, 7, seed=8), torch.tensor(2.0, dtype=F64))
    y = sequential_scan(rand(3, 7, seed=7), rand(3, 7, seed=8), torch.full((3,), 2.0,
                                                                           dtype=F64))
    assert torch.allclose(x, y, atol=1e-12)


def test_dtype_and_complex_follow_the_inputs():
    a32, b32 = rand(4, 10).float(), rand(4, 10, seed=1).float()
    for h in (sequential_scan(a32, b32), parallel_scan(a32, b32)):
        assert h.dtype == torch.float32
    a = torch.polar(rand(10, low=0.5, high=1.0), rand(10, seed=2, low=-3, high=3))
    b = torch.complex(rand(10, seed=3), rand(10, seed=4))
    assert torch.allclose(parallel_scan(a, b), sequential_scan(a, b), atol=1e-12)
    assert torch.allclose(parallel_scan(a, b), unrolled(a, b, torch.zeros((), dtype=a.dtype)),
                          atol=1e-12)


def test_the_operator_is_associative_on_random_triples():
    (a1, b1), (a2, b2), (a3, b3) = [(rand(1000, seed=2 * i), rand(1000, seed=2 * i + 1))
                                    for i in range(3)]
    left = _combine(*_combine(a1, b1, a2, b2), a3, b3)
    right = _combine(a1, b1, *_combine(a2, b2, a3, b3))
    assert torch.allclose(left[0], right[0], atol=1e-15)
    assert torch.allclose(left[1], right[1], atol=1e-15)
    # and it composes affine maps: applying (a1, b1) then (a2, b2) to any h
    h = rand(1000, seed=9)
    a12, b12 = _combine(a1, b1, a2, b2)
    assert torch.allclose(a12 * h + b12, a2 * (a1 * h + b1) + b2, atol=1e-15)
    # and it is not commutative (order matters: the scan runs forwards)
    assert not torch.allclose(_combine(a1, b1, a2, b2)[1], _combine(a2, b2, a1, b1)[1])


@pytest.mark.parametrize("scan", ["sequential", *SCAN_METHODS])
def test_gradcheck(scan):
    def run(a, b, h0):
        if scan == "sequential":
            return sequential_scan(a, b, h0)
        return parallel_scan(a, b, h0, method=scan)

    for L in (1, 6, 11):
        a = rand(2, L, seed=L, low=0.3, high=1.0).requires_grad_()
        b = rand(2, L, seed=L + 1).requires_grad_()
        h0 = rand(2, seed=L + 2).requires_grad_()
        assert torch.autograd.gradcheck(run, (a, b, h0))
    # broadcast a (L,) against b (2, L): the gradient sums over the broadcast rows
    a = rand(7, seed=3, low=0.3, high=1.0).requires_grad_()
    b = rand(2, 7, seed=4).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: run(a, b, None), (a, b))


def test_sequential_backward_matches_autograd_through_the_plain_loop():
    a = rand(3, 20, seed=1, low=0.5, high=1.0).requires_grad_()
    b = rand(3, 20, seed=2).requires_grad_()
    w = rand(3, 20, seed=3)
    (sequential_scan(a, b) * w).sum().backward()
    ga, gb = a.grad.clone(), b.grad.clone()
    a.grad = b.grad = None
    h, out = torch.zeros(3, dtype=F64), []
    for t in range(20):
        h = a[:, t] * h + b[:, t]
        out.append(h)
    (torch.stack(out, -1) * w).sum().backward()
    assert torch.allclose(ga, a.grad, atol=1e-12) and torch.allclose(gb, b.grad, atol=1e-12)


def test_work_and_depth_closed_forms():
    for L in range(1, 70):
        levels = math.ceil(math.log2(L)) if L > 1 else 0
        assert scan_cost(L, "sequential") == (L - 1, L - 1)
        assert scan_cost(L, "hillis_steele") == (sum(L - 2 ** j for j in range(levels)), levels)
        work, depth = scan_cost(L, "blelloch")
        assert L - 1 <= work <= 2 * L and depth <= 2 * levels
    for p in range(1, 13):
        L = 2 ** p
        assert scan_cost(L, "blelloch") == (2 * L - 2 - p, 2 * p - 1)
        assert scan_cost(L, "hillis_steele") == (L * p - L + 1, p)


def test_blelloch_counts_are_the_implementations():
    """Counting the operator applications by hand on a wrapped combine, independently."""
    from ssm.scan import _apply, _blelloch
    calls = []

    def combine(a1, b1, a2, b2):
        calls.append(len(a2))
        return _combine(a1, b1, a2, b2)

    def apply(a, h, b):
        calls.append(len(a))
        return _apply(a, h, b)

    a, b = rand(100, seed=1), rand(100, seed=2)
    h = _blelloch(a, b, combine, apply)
    assert torch.allclose(h, sequential_scan(a, b), atol=1e-12)
    assert (sum(calls), len(calls)) == scan_cost(100, "blelloch")


@settings(max_examples=40, deadline=None)
@given(L=st.integers(1, 300), batch=st.integers(1, 3), seed=st.integers(0, 10_000),
       method=st.sampled_from(SCAN_METHODS))
def test_property_parallel_equals_sequential(L, batch, seed, method):
    a = rand(batch, L, seed=seed, low=-1.0, high=1.0)
    b = rand(batch, L, seed=seed + 1)
    assert (parallel_scan(a, b, method=method) - sequential_scan(a, b)).abs().max() < 1e-10


@settings(max_examples=25, deadline=None)
@given(L=st.integers(1, 64), seed=st.integers(0, 10_000), c=st.floats(-3, 3))
def test_property_linear_in_b_and_h0(L, seed, c):
    a, b1, b2 = rand(L, seed=seed), rand(L, seed=seed + 1), rand(L, seed=seed + 2)
    h1, h2 = rand((), seed=seed + 3), rand((), seed=seed + 4)
    lhs = parallel_scan(a, b1 + c * b2, h1 + c * h2)
    rhs = parallel_scan(a, b1, h1) + c * parallel_scan(a, b2, h2)
    assert torch.allclose(lhs, rhs, atol=1e-10)
    # causality: h_t does not depend on b after t
    k = L // 2
    b3 = b1.clone()
    b3[k + 1:] += 1.0
    assert torch.equal(sequential_scan(a, b3)[:k + 1], sequential_scan(a, b1)[:k + 1])


@pytest.mark.parametrize("fn", [sequential_scan, parallel_scan])
def test_bad_input(fn):
    a = rand(2, 5)
    with pytest.raises(ValueError, match="a must be a float"):
        fn([1.0, 2.0], a)
    with pytest.raises(ValueError, match="b must be a float"):
        fn(a, torch.ones(2, 5, dtype=torch.int64))
    with pytest.raises(ValueError, match="broadcast"):
        fn(a, rand(3, 5))
    with pytest.raises(ValueError, match="at least one dimension"):
        fn(torch.tensor(0.5), torch.tensor(1.0))
    with pytest.raises(ValueError, match="dim must be"):
        fn(a, a, dim=2)
    with pytest.raises(ValueError, match="dim must be"):
        fn(a, a, dim=1.0)
    with pytest.raises(ValueError, match="length >= 1"):
        fn(rand(2, 0), rand(2, 0))
    with pytest.raises(ValueError, match="h0 must broadcast"):
        fn(a, a, rand(3))
    with pytest.raises(ValueError, match="h0 must broadcast"):
        fn(a, a, rand(4, 2))
    with pytest.raises(ValueError, match="h0 must be a float"):
        fn(a, a, [0.0, 0.0])


def test_bad_method_and_cost_arguments():
    with pytest.raises(ValueError, match="method must be one of"):
        parallel_scan(rand(4), rand(4), method="kogge_stone")
    with pytest.raises(ValueError, match="method must be one of"):
        scan_cost(8, "fast")
    with pytest.raises(ValueError, match="L must be an integer"):
        scan_cost(0, "blelloch")
    with pytest.raises(ValueError, match="L must be an integer"):
        scan_cost(8.0, "blelloch")
