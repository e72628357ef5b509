"""Tests for divergences.optimal_transport: the exact linear program against the assignment
problem and the metric axioms of W_p, log-domain Sinkhorn against the LP and the entropic bound,
batching, gradients in float64, and a ValueError for every kind of bad input."""

import math

import numpy as np
import pytest
import scipy.optimize
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from divergences import SinkhornResult, emd, entropic_plan, sinkhorn, sinkhorn_potentials

F64 = torch.float64
PROPERTY = settings(max_examples=25, deadline=None, derandomize=True)


def points(n, d=2, seed=0, dtype=F64):
    return torch.rand(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def simplex(n, seed=0, dtype=F64):
    w = torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=dtype) + 0.05
    return w / w.sum()


def uniform(n, dtype=F64):
    return torch.full((n,), 1.0 / n, dtype=dtype)


def entropy(p):
    return float(-torch.special.xlogy(p, p).sum())


# ---------------------------------------------------------------- emd (the linear program)


@pytest.mark.parametrize("n,seed", [(5, 0), (12, 1), (30, 2)])
def test_emd_with_uniform_weights_equals_the_optimal_assignment(n, seed):
    # For a = b = 1/n the LP's vertices are permutation matrices / n (Birkhoff), so its optimum
    # is the optimal assignment's cost / n.
    C = torch.cdist(points(n, seed=seed), points(n, seed=seed + 100)) ** 2
    plan, cost = emd(uniform(n), uniform(n), C)
    rows, cols = scipy.optimize.linear_sum_assignment(C.numpy())
    assert cost.item() == pytest.approx(C.numpy()[rows, cols].sum() / n, rel=1e-9, abs=1e-12)
    # the LP vertex HiGHS returns is itself the permutation (the optimum is generically unique)
    expected = torch.zeros(n, n, dtype=F64)
    expected[rows, cols] = 1.0 / n
    torch.testing.assert_close(plan, expected, atol=1e-9, rtol=0)


def test_emd_plan_is_feasible_and_sparse_for_unequal_weights():
    n, m = 7, 11
    a, b = simplex(n, 1), simplex(m, 2)
    C = torch.cdist(points(n, seed=3), points(m, seed=4))
    plan, cost = emd(a, b, C)
    assert bool((plan >= 0).all())
    torch.testing.assert_close(plan.sum(1), a, atol=1e-9, rtol=0)
    torch.testing.assert_close(plan.sum(0), b, atol=1e-9, rtol=0)
    assert int((plan > 1e-12).sum()) <= n + m - 1  # a vertex of the transportation polytope
    assert cost.item() == pytest.approx(float((plan * C).sum()))
    assert plan.dtype == F64 and cost.shape == ()


def test_emd_on_the_line_matches_the_quantile_formula():
    # In 1-D with C = |x - y|, W_1 = ∫ |F_a(t) − F_b(t)| dt (a closed form independent of the LP).
    x = torch.sort(torch.rand(9, generator=torch.Generator().manual_seed(5), dtype=F64)).values
    y = torch.sort(torch.rand(6, generator=torch.Generator().manual_seed(6), dtype=F64)).values
    a, b = simplex(9, 7), simplex(6, 8)
    _, cost = emd(a, b, (x[:, None] - y[None, :]).abs())
    t = torch.sort(torch.cat([x, y])).values
    Fa = (a[None, :] * (x[None, :] <= t[:-1, None])).sum(1)
    Fb = (b[None, :] * (y[None, :] <= t[:-1, None])).sum(1)
    assert cost.item() == pytest.approx(float(((Fa - Fb).abs() * t.diff()).sum()), rel=1e-9)


def test_emd_cost_gradient_is_the_plan_and_gradcheck_float64():
    n, m = 5, 6
    a, b = simplex(n, 9), simplex(m, 10)
    C = torch.cdist(points(n, seed=11), points(m, seed=12)).requires_grad_()
    plan, cost = emd(a, b, C)
    (grad,) = torch.autograd.grad(cost, C)
    torch.testing.assert_close(grad, plan)
    # finite differences agree: the optimal vertex does not move under a 1e-6 perturbation
    assert torch.autograd.gradcheck(lambda C_: emd(a, b, C_)[1], (C,), eps=1e-6, atol=1e-6)


def test_emd_follows_the_cost_dtype():
    C = torch.cdist(points(4, dtype=torch.float32), points(4, seed=1, dtype=torch.float32))
    plan, cost = emd(uniform(4, torch.float32), uniform(4, torch.float32), C)
    assert plan.dtype == torch.float32 and cost.dtype == torch.float32


# ---------------------------------------------------------------- W_p metric axioms (hypothesis)


def weighted_cloud(draw, max_n=6, d=2):
    n = draw(st.integers(1, max_n))
    coords = draw(st.lists(st.floats(-3, 3), min_size=n * d, max_size=n * d))
    w = draw(st.lists(st.floats(0.05, 1.0), min_size=n, max_size=n))
    x = torch.tensor(coords, dtype=F64).reshape(n, d)
    w = torch.tensor(w, dtype=F64)
    return x, w / w.sum()


@st.composite
def clouds(draw, k):
    return [weighted_cloud(draw) for _ in range(k)]


def w_p(xa, xb, p):
    (x, a), (y, b) = xa, xb
    return emd(a, b, torch.cdist(x, y) ** p)[1].item() ** (1 / p)


@PROPERTY
@given(clouds(3), st.sampled_from([1, 2]))
def test_w_p_is_symmetric_and_satisfies_the_triangle_inequality(cs, p):
    u, v, w = cs
    assert w_p(u, v, p) == pytest.approx(w_p(v, u, p), rel=1e-7, abs=1e-7)
    # LP solutions are accurate to ~1e-9 in the cost; W_p = cost^(1/p) amplifies that near 0
    assert w_p(u, w, p) <= w_p(u, v, p) + w_p(v, w, p) + 1e-4


@PROPERTY
@given(clouds(1), st.sampled_from([1, 2]))
def test_w_p_is_zero_between_identical_inputs_and_positive_otherwise(cs, p):
    (u,) = cs
    assert w_p(u, u, p) == pytest.approx(0.0, abs=1e-4)
    x, a = u
    shifted = (x + torch.tensor([0.5, 0.0], dtype=F64), a)
    # translating every point by t moves mass at least |t|: W_p ≥ W_1 ≥ 0.5
    assert w_p(u, shifted, p) >= 0.5 - 1e-6


# ---------------------------------------------------------------- sinkhorn (log domain)


def problem(n=20, m=25, seed=0, dtype=F64):
    C = torch.cdist(points(n, seed=seed, dtype=dtype), points(m, seed=seed + 1, dtype=dtype)) ** 2
    return simplex(n, seed + 2, dtype), simplex(m, seed + 3, dtype), C


def test_sinkhorn_result_fields_and_marginals():
    a, b, C = problem()
    r = sinkhorn(a, b, C, 0.05, tol=1e-9, max_iter=5_000)
    assert isinstance(r, SinkhornResult) and r.converged and 0 < r.n_iter <= 5_000
    assert r.plan.shape == (20, 25) and r.cost.shape == () and r.marginal_error.shape == ()
    torch.testing.assert_close(r.plan.sum(1), a, atol=1e-9, rtol=0)
    torch.testing.assert_close(r.plan.sum(0), b, atol=1e-9, rtol=0)
    measured = (r.plan.sum(1) - a).abs().sum() + (r.plan.sum(0) - b).abs().sum()
    assert float(r.marginal_error) == pytest.approx(float(measured), abs=1e-15)
    assert r.cost.item() == pytest.approx(float((r.plan * C).sum()))


def test_sinkhorn_solves_the_entropic_problem_plan_is_a_diagonal_scaling_of_the_kernel():
    # P = diag(u) K diag(v) with K = exp(-C/ε): log P + C/ε has rank one in the additive sense,
    # i.e. log P_ij + C_ij/ε − (row term) − (column term) = 0.
    a, b, C = problem(8, 9, seed=4)
    eps = 0.1
    r = sinkhorn(a, b, C, eps, tol=1e-10, max_iter=5_000)
    L = r.plan.log() + C / eps
    torch.testing.assert_close(L - L[:, :1] - L[:1, :] + L[0, 0], torch.zeros_like(L), atol=1e-9,
                               rtol=0)


@pytest.mark.parametrize("rel_eps", [0.1, 0.01, 0.003])
def test_sinkhorn_cost_lies_within_the_entropic_bound_of_the_lp(rel_eps):
    # ⟨P_ε, C⟩ − ε H(P_ε) ≤ ⟨P*, C⟩ − ε H(P*) with H(P_ε) ≤ H(a) + H(b), H(P*) ≥ max(H(a), H(b))
    # gives 0 ≤ ⟨P_ε, C⟩ − OT ≤ ε min(H(a), H(b)); the lower side needs P_ε feasible, true up to
    # the marginal error times max C.
    a, b, C = problem(15, 12, seed=7)
    eps = rel_eps * float(C.max())
    r = sinkhorn(a, b, C, eps, tol=1e-8, max_iter=50_000)
    _, ot = emd(a, b, C)
    assert r.converged
    slack = float(r.marginal_error) * float(C.max())
    gap = r.cost.item() - ot.item()
    assert -slack <= gap <= eps * min(entropy(a), entropy(b)) + slack, (gap, eps)


def test_sinkhorn_cost_decreases_to_the_lp_as_eps_shrinks():
    a, b, C = problem(10, 10, seed=3)
    _, ot = emd(a, b, C)
    costs = [sinkhorn(a, b, C, e, tol=1e-9, max_iter=100_000).cost.item()
             for e in (0.3, 0.1, 0.03, 0.01)]
    assert all(x > y for x, y in zip(costs, costs[1:])), costs
    assert costs[-1] - ot.item() < 0.1 * (costs[0] - ot.item()), costs


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sinkhorn_is_stable_at_eps_1e_3_of_the_cost_scale(dtype):
    # exp(-C/ε) underflows here (C/ε reaches 1000 > 745, the float64 limit; 104 in float32);
    # the log domain does not, and its plan approaches the LP's.
    a64, b64, C64 = problem(30, 30, seed=5)
    a, b, C = a64.to(dtype), b64.to(dtype), C64.to(dtype)
    eps = 1e-3 * float(C.max())
    assert float(torch.exp(-C / eps).min()) == 0.0
    r = sinkhorn(a, b, C, eps, tol=1e-4, max_iter=20_000)
    assert r.converged and torch.isfinite(r.plan).all() and r.plan.dtype == dtype
    _, ot = emd(a64, b64, C64)
    assert abs(r.cost.item() - ot.item()) <= eps * math.log(30) + 1e-4 * float(C.max())


def test_sinkhorn_reports_not_converged_when_stopped_early():
    a, b, C = problem(seed=2)
    r = sinkhorn(a, b, C, 0.001, max_iter=3, tol=1e-9)
    assert not r.converged and r.n_iter == 3 and float(r.marginal_error) > 1e-9


def test_sinkhorn_is_batched_and_matches_one_problem_at_a_time():
    probs = [problem(6, 7, seed=s) for s in range(3)]
    a, b, C = (torch.stack(t) for t in zip(*probs))
    r = sinkhorn(a, b, C, 0.05, tol=1e-10, max_iter=5_000)
    assert r.plan.shape == (3, 6, 7) and r.cost.shape == (3,) and r.marginal_error.shape == (3,)
    for i, (ai, bi, Ci) in enumerate(probs):
        ri = sinkhorn(ai, bi, Ci, 0.05, tol=1e-10, max_iter=5_000)
        torch.testing.assert_close(r.plan[i], ri.plan, atol=1e-9, rtol=0)
    # shared marginals broadcast against a batch of costs
    rb = sinkhorn(probs[0][0], probs[0][1], C, 0.05, tol=1e-10, max_iter=5_000)
    assert rb.plan.shape == (3, 6, 7)


def test_sinkhorn_potentials_give_the_plan_and_warm_start():
    a, b, C = problem(seed=8)
    pot = sinkhorn_potentials(a, b, C, 0.02, tol=1e-9, max_iter=10_000)
    r = sinkhorn(a, b, C, 0.02, tol=1e-9, max_iter=10_000)
    torch.testing.assert_close(entropic_plan(pot.f, pot.g, C, 0.02), r.plan)
    warm = sinkhorn(a, b, C, 0.02, tol=1e-9, max_iter=10_000, init=(pot.f, pot.g))
    assert warm.converged and warm.n_iter <= 10  # already at the fixed point: one check


def test_sinkhorn_gradcheck_float64():
    a, b, C = problem(4, 5, seed=9)
    C = C.requires_grad_()

    def cost(C_):  # a fixed number of iterations (tol = 0): the same function at every probe
        return sinkhorn(a, b, C_, 0.1, max_iter=50, tol=0.0).cost

    assert torch.autograd.gradcheck(cost, (C,), eps=1e-6, atol=1e-6)


# ---------------------------------------------------------------- bad input → ValueError

GOOD = problem(3, 4, seed=0)


@pytest.mark.parametrize("fn", [emd, lambda a, b, C: sinkhorn(a, b, C, 0.1),
                                lambda a, b, C: sinkhorn_potentials(a, b, C, 0.1)])
@pytest.mark.parametrize("case,match", [
    ("negative", "non-negative"),
    ("not_one", "sum to one"),
    ("mass", "same total mass"),
    ("shape_a", "shape"),
    ("shape_C", "shape"),
    ("C_1d", "shape"),
    ("C_int", "float"),
    ("C_nan", "finite"),
])
def test_bad_input_raises(fn, case, match):
    a, b, C = (t.clone() for t in GOOD)
    if case == "negative":
        a = torch.tensor([0.5, 0.7, -0.2], dtype=F64)
    elif case == "not_one":
        a, b = a * 2, b * 2
    elif case == "mass":
        b = b * 1.5
    elif case == "shape_a":
        a = uniform(4)
    elif case == "shape_C":
        C = C.T.contiguous()
    elif case == "C_1d":
        C = C[0]
    elif case == "C_int":
        C = C.long()
    elif case == "C_nan":
        C[0, 0] = math.nan
    with pytest.raises(ValueError, match=match):
        fn(a, b, C)


def test_emd_rejects_a_batch():
    a, b, C = GOOD
    with pytest.raises(ValueError, match="one problem"):
        emd(a.expand(2, 3), b.expand(2, 4), C.expand(2, 3, 4))


@pytest.mark.parametrize("kw,match", [
    (dict(eps=0.0), "eps"), (dict(eps=-1.0), "eps"), (dict(eps=math.inf), "eps"),
    (dict(max_iter=0), "max_iter"), (dict(max_iter=2.5), "max_iter"),
    (dict(tol=-1e-3), "tol"), (dict(check_every=0), "check_every"),
    (dict(init=(torch.zeros(5, dtype=F64), torch.zeros(4, dtype=F64))), "init"),
])
def test_sinkhorn_bad_options_raise(kw, match):
    a, b, C = GOOD
    kw = {"eps": 0.1, **kw}
    eps = kw.pop("eps")
    with pytest.raises(ValueError, match=match):
        sinkhorn(a, b, C, eps, **kw)


def test_sinkhorn_rejects_batches_that_do_not_broadcast():
    a, b, C = GOOD
    with pytest.raises(ValueError, match="broadcast"):
        sinkhorn(a.expand(2, 3), b, C.expand(3, 3, 4), 0.1)


def test_emd_linear_program_is_the_same_as_dense_linprog():
    # the sparse constraint matrix in emd against a dense one written from the definition
    n, m = 4, 3
    a, b = simplex(n, 20), simplex(m, 21)
    C = torch.cdist(points(n, seed=22), points(m, seed=23))
    A = np.zeros((n + m, n * m))
    for i in range(n):
        for j in range(m):
            A[i, i * m + j] = 1.0
            A[n + j, i * m + j] = 1.0
    res = scipy.optimize.linprog(C.numpy().ravel(), A_eq=A, b_eq=np.concatenate([a, b]),
                                 bounds=(0, None), method="highs")
    assert emd(a, b, C)[1].item() == pytest.approx(res.fun, rel=1e-9)
