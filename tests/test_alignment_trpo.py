"""Tests for alignment.trpo on a small linear-softmax policy: the Fisher-vector product against
the explicit Fisher matrix E[∇log π ∇log πᵀ] and against the KL's Hessian by
torch.autograd.functional.hessian; conjugate gradient against torch.linalg.solve; the step size
on the trust region's boundary; the line search's first accepted fraction and its KL
constraint; and one whole TRPO step."""

import math

import pytest
import torch

from alignment import (
    backtracking_line_search,
    conjugate_gradient,
    fisher_vector_product,
    flat_grad,
    trpo_step_size,
)

F64 = dict(dtype=torch.float64)
M, D, K = 6, 3, 4                                      # states, features, actions
P = D * K + K                                          # W (D, K) and bias (K,)


def policy(seed=0):
    """States S (M, D), parameters θ_old (P,), advantages A (M, K)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(M, D, generator=g, **F64), 0.5 * torch.randn(P, generator=g, **F64),
            torch.randn(M, K, generator=g, **F64))


def log_pi(S, theta):
    """log π_θ(·|s) (M, K) for logits S W + b, θ = (vec W, b)."""
    W, b = theta[:D * K].view(D, K), theta[D * K:]
    return torch.log_softmax(S @ W + b, -1)


def mean_kl(S, theta_old, theta):
    """E_s KL(π_old(·|s) ‖ π_θ(·|s))."""
    lp_old = log_pi(S, theta_old)
    return (lp_old.exp() * (lp_old - log_pi(S, theta))).sum(-1).mean()


def explicit_fisher(S, theta):
    """F = E_s Σ_a π(a|s) ∇log π(a|s) ∇log π(a|s)ᵀ, one autograd gradient per (s, a)."""
    th = theta.clone().requires_grad_()
    lp = log_pi(S, th)
    F = torch.zeros(P, P, **F64)
    for s in range(M):
        for a in range(K):
            (gr,) = torch.autograd.grad(lp[s, a], th, retain_graph=True)
            F += lp[s, a].exp().detach() * torch.outer(gr, gr) / M
    return F


def fvp_closure(S, theta_old, damping):
    """v ↦ (F + λI) v with θ held as two parameter tensors W and b."""
    W = theta_old[:D * K].view(D, K).clone().requires_grad_()
    b = theta_old[D * K:].clone().requires_grad_()
    kl_fn = lambda: mean_kl(S, theta_old, torch.cat([W.reshape(-1), b]))  # noqa: E731
    return lambda v: fisher_vector_product(kl_fn, [W, b], v, damping)


def test_fisher_vector_product_equals_the_explicit_fisher_and_the_kl_hessian():
    S, theta, _ = policy()
    F = explicit_fisher(S, theta)
    H = torch.autograd.functional.hessian(lambda th: mean_kl(S, theta, th), theta)
    torch.testing.assert_close(H, F, rtol=1e-10, atol=1e-12)
    g = torch.Generator().manual_seed(1)
    for damping in (0.0, 0.1):
        fvp = fvp_closure(S, theta, damping)
        for _ in range(3):
            v = torch.randn(P, generator=g, **F64)
            torch.testing.assert_close(fvp(v), F @ v + damping * v, rtol=1e-10, atol=1e-12)
    # F is symmetric positive semi-definite; adding the same constant to every logit changes
    # nothing, so the bias direction (0, …, 0, 1, …, 1) is in its null space
    assert torch.linalg.eigvalsh(F).min() > -1e-12
    null = torch.cat([torch.zeros(D * K, **F64), torch.ones(K, **F64)])
    torch.testing.assert_close(fvp_closure(S, theta, 0.0)(null), torch.zeros(P, **F64),
                               atol=1e-12, rtol=0)


def test_flat_grad_orders_like_parameters_to_vector_and_fills_unused_with_zeros():
    a = torch.randn(2, 3, **F64, requires_grad=True)
    b = torch.randn(4, **F64, requires_grad=True)
    unused = torch.randn(2, **F64, requires_grad=True)
    y = (a ** 2).sum() + (3 * b).sum()
    expected = torch.nn.utils.parameters_to_vector([2 * a.detach(), torch.full((4,), 3.0, **F64),
                                                    torch.zeros(2, **F64)])
    torch.testing.assert_close(flat_grad(y, [a, b, unused]), expected)


def random_spd(n, seed, cond_floor=0.1):
    g = torch.Generator().manual_seed(seed)
    Q = torch.randn(n, n, generator=g, **F64)
    return Q @ Q.T + cond_floor * torch.eye(n, **F64), torch.randn(n, generator=g, **F64)


def test_conjugate_gradient_equals_solve_after_n_steps_and_its_error_falls():
    n = 8
    A, b = random_spd(n, seed=2)
    x_star = torch.linalg.solve(A, b)
    torch.testing.assert_close(conjugate_gradient(lambda v: A @ v, b, iters=n, tol=0.0), x_star,
                               rtol=1e-7, atol=1e-8)
    # CG minimises the A-norm error over growing Krylov spaces: it never increases
    errs = []
    for k in range(1, n + 1):
        e = conjugate_gradient(lambda v: A @ v, b, iters=k, tol=0.0) - x_star
        errs.append(float(e @ A @ e))
    assert all(e2 <= e1 * (1 + 1e-9) + 1e-20 for e1, e2 in zip(errs, errs[1:]))
    assert errs[-1] < 1e-12 * errs[0]
    # tol stops it early: no step at all when the initial residual is already below tol
    assert torch.equal(conjugate_gradient(lambda v: A @ v, b, iters=n, tol=float(b @ b) * 2),
                       torch.zeros(n, **F64))


def test_conjugate_gradient_on_fisher_products_solves_the_damped_fisher_system():
    S, theta, A_sa = policy(seed=3)
    F = explicit_fisher(S, theta)
    g = torch.randn(P, generator=torch.Generator().manual_seed(4), **F64)
    x = conjugate_gradient(fvp_closure(S, theta, 0.1), g, iters=P, tol=0.0)
    torch.testing.assert_close(x, torch.linalg.solve(F + 0.1 * torch.eye(P, **F64), g),
                               rtol=1e-7, atol=1e-8)


def surrogate(S, theta_old, A_sa, theta):
    """E_s Σ_a π_old(a|s) ρ(a|s) A(s, a) = E_s Σ_a π_θ(a|s) A(s, a), ρ = π_θ / π_old."""
    return (log_pi(S, theta).exp() * A_sa).sum(-1).mean()


def natural_gradient_step(S, theta, A_sa, delta, damping=1e-3):
    th = theta.clone().requires_grad_()
    g = flat_grad(surrogate(S, theta, A_sa, th), [th])
    fvp = fvp_closure(S, theta, damping)
    s = conjugate_gradient(fvp, g, iters=P, tol=0.0)
    beta = trpo_step_size(s, fvp(s), delta)
    return g, s, beta


def test_the_scaled_step_lies_on_the_trust_region_boundary_and_the_true_kl_approaches_it():
    S, theta, A_sa = policy(seed=5)
    # ½ sᵀ(F + λI)s = δ for the damped F the step was sized with; the true KL's quadratic
    # model is ½ sᵀFs (the damping's share, along F's null space, costs no KL), and the KL
    # differs from it by O(|step|³): relative error O(√δ), falling ×10 per ×100 in δ
    F = explicit_fisher(S, theta)
    rel_errors = []
    for delta in (1e-2, 1e-4, 1e-6):
        _, s, beta = natural_gradient_step(S, theta, A_sa, delta, damping=1e-3)
        step = beta * s
        assert float(0.5 * step @ (F + 1e-3 * torch.eye(P, **F64)) @ step) == pytest.approx(
            delta, rel=1e-10)
        kl = float(mean_kl(S, theta, theta + step))
        rel_errors.append(abs(kl / float(0.5 * step @ F @ step) - 1))
    assert 5 < rel_errors[0] / rel_errors[1] < 20 and 5 < rel_errors[1] / rel_errors[2] < 20
    assert rel_errors[2] < 1e-2


def quadratic_case():
    """f(x) = (x − 1)² at x = 0, full step 4: predicted decrease −f'(0)·4 = 8."""
    f = lambda x: ((x - 1) ** 2).sum()  # noqa: E731
    return f, torch.zeros(1, **F64), torch.full((1,), 4.0, **F64), 8.0


def first_accepted_by_hand(f, x, step, expected, ratio, n, constraint=lambda x: True):
    for k in range(n):
        x_new = x + 0.5 ** k * step
        imp = float(f(x)) - float(f(x_new))
        if imp > 0 and imp / (0.5 ** k * expected) >= ratio and constraint(x_new):
            return k
    return None


def test_line_search_returns_the_first_accepted_fraction():
    f, x, step, expected = quadratic_case()
    # fractions 1 (x = 4, worse) and 1/2 (x = 2, no gain) fail; 1/4 (x = 1) gains 1 of the
    # predicted 2: ratio 0.5 >= 0.1
    out = backtracking_line_search(f, x, step, expected, accept_ratio=0.1, max_backtracks=10)
    assert (out.accepted, out.fraction, out.n_backtracks) == (True, 0.25, 2)
    torch.testing.assert_close(out.x, torch.ones(1, **F64))
    # a stricter ratio: 1/4 realises 0.5 < 0.6; 1/8 (x = 0.5) gains 0.75 of 1: accepted
    out = backtracking_line_search(f, x, step, expected, accept_ratio=0.6)
    assert (out.fraction, out.n_backtracks) == (0.125, 3)
    assert first_accepted_by_hand(f, x, step, expected, 0.6, 10) == 3


def test_line_search_honours_the_constraint_and_reports_failure():
    f, x, step, expected = quadratic_case()
    # only x <= 0.3 allowed: 1/4 and 1/8 are rejected by the constraint; 1/16 (x = 0.25) is
    # the first allowed point
    ok = lambda z: bool(z.item() <= 0.3)  # noqa: E731
    out = backtracking_line_search(f, x, step, expected, constraint=ok)
    assert (out.accepted, out.fraction, out.n_backtracks) == (True, 1 / 16, 4)
    assert first_accepted_by_hand(f, x, step, expected, 0.1, 10, ok) == 4
    # too few backtracks (or a constraint nothing meets): x unchanged, not accepted
    for kwargs in (dict(max_backtracks=2), dict(constraint=lambda z: False)):
        out = backtracking_line_search(f, x, step, expected, **kwargs)
        assert not out.accepted and out.fraction == 0.0 and torch.equal(out.x, x)
    # a step uphill is never accepted
    out = backtracking_line_search(f, x, -step, expected)
    assert not out.accepted


def test_a_whole_trpo_step_improves_the_surrogate_within_the_kl_bound():
    S, theta, A_sa = policy(seed=6)
    delta = 0.5                                        # large: the full step overshoots the KL
    g, s, beta = natural_gradient_step(S, theta, A_sa, delta)
    kl_at = lambda z: float(mean_kl(S, theta, z))  # noqa: E731
    f = lambda z: -surrogate(S, theta, A_sa, z)  # noqa: E731
    out = backtracking_line_search(f, theta, beta * s, float(g @ (beta * s)),
                                   constraint=lambda z: kl_at(z) <= delta)
    assert out.accepted
    assert kl_at(out.x) <= delta
    assert float(f(out.x)) < float(f(theta))
    assert first_accepted_by_hand(f, theta, beta * s, float(g @ (beta * s)), 0.1, 10,
                                  lambda z: kl_at(z) <= delta) == out.n_backtracks
    assert kl_at(theta + beta * s) > delta, "the test should exercise the KL constraint"
    assert math.isfinite(float(beta)) and out.fraction < 1


@pytest.mark.parametrize("call, match", [
    (lambda fvp, A, b: fisher_vector_product(lambda: torch.zeros(()), [torch.zeros(
        2, requires_grad=True)], torch.zeros(2), damping=-0.1), "damping must be a finite"),
    (lambda fvp, A, b: fvp(torch.zeros(P + 1, **F64)), rf"v must be a flat float tensor \({P},\)"),
    (lambda fvp, A, b: fisher_vector_product(lambda: torch.zeros(2), [torch.zeros(
        2, requires_grad=True)], torch.zeros(2)), "kl_fn must return a scalar"),
    (lambda fvp, A, b: fisher_vector_product(lambda: torch.zeros(()), [torch.zeros(2)],
                                             torch.zeros(2)), "require grad"),
    (lambda fvp, A, b: conjugate_gradient(lambda v: A @ v, b, iters=0), "iters must be"),
    (lambda fvp, A, b: conjugate_gradient(lambda v: A @ v, b, tol=-1.0), "tol must be"),
    (lambda fvp, A, b: conjugate_gradient(lambda v: -(A @ v), b), "positive definite"),
    (lambda fvp, A, b: conjugate_gradient(lambda v: v[:2], b), "Avp must map"),
    (lambda fvp, A, b: conjugate_gradient(lambda v: A @ v, b.view(2, -1)), "b must be a flat"),
    (lambda fvp, A, b: trpo_step_size(b, A @ b, 0.0), "delta must be a positive"),
    (lambda fvp, A, b: trpo_step_size(b, -(A @ b), 0.01), "sᵀFs must be positive"),
    (lambda fvp, A, b: trpo_step_size(b, (A @ b)[:3], 0.01), "Fs must be a flat"),
    (lambda fvp, A, b: backtracking_line_search(*quadratic_case()[:3], 0.0),
     "expected_improve must be a positive"),
    (lambda fvp, A, b: backtracking_line_search(*quadratic_case(), accept_ratio=0.0),
     r"accept_ratio must be a number in \(0, 1\]"),
    (lambda fvp, A, b: backtracking_line_search(*quadratic_case(), max_backtracks=0),
     "max_backtracks"),
    (lambda fvp, A, b: backtracking_line_search(quadratic_case()[0], torch.zeros(1, **F64),
                                                torch.ones(2, **F64), 1.0), "full_step"),
])
def test_bad_input_raises(call, match):
    S, theta, _ = policy()
    A, b = random_spd(4, seed=7)
    with pytest.raises(ValueError, match=match):
        call(fvp_closure(S, theta, 0.1), A, b)
