"""Tests for alignment.bradley_terry: the likelihood and its derivatives against autograd, the
gauge (scores up to a constant), the MLE (closed form for two items, L-BFGS, recovery of the gold
reward with the asymptotic 1/n error), the pairwise loss (log 2, soft labels, BCE), and
calibration."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from alignment import (
    bt_gradient,
    bt_hessian,
    bt_log_likelihood,
    bt_mle,
    calibration,
    pairwise_loss,
    preference_accuracy,
)
from utils.data import preference_pairs

F64 = dict(dtype=torch.float64)


def random_outcomes(k=5, n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(k, generator=g, **F64)
    w = torch.randint(k, (n,), generator=g)
    l_ = (w + torch.randint(1, k, (n,), generator=g)) % k
    return s, w, l_


def test_log_likelihood_by_hand_and_as_the_summed_pairwise_loss():
    s, w, l_ = random_outcomes()
    by_hand = sum(math.log(1 / (1 + math.exp(-(float(s[a]) - float(s[b])))))
                  for a, b in zip(w.tolist(), l_.tolist()))
    assert float(bt_log_likelihood(s, w, l_)) == pytest.approx(by_hand, rel=1e-12)
    assert float(bt_log_likelihood(s, w, l_)) == pytest.approx(
        -float(pairwise_loss(s[w], s[l_], reduction="sum")), rel=1e-12)


def test_gradient_and_hessian_against_autograd():
    s, w, l_ = random_outcomes(k=6, n=50, seed=1)
    s = s.requires_grad_()
    (auto,) = torch.autograd.grad(bt_log_likelihood(s, w, l_), s)
    torch.testing.assert_close(bt_gradient(s.detach(), w, l_), auto)
    hess = torch.autograd.functional.hessian(lambda x: bt_log_likelihood(x, w, l_), s.detach())
    torch.testing.assert_close(bt_hessian(s.detach(), w, l_), hess)
    assert torch.autograd.gradcheck(lambda x: bt_log_likelihood(x, w, l_), (s,))
    # negative semi-definite
    assert float(torch.linalg.eigvalsh(bt_hessian(s.detach(), w, l_)).max()) < 1e-12


def test_gauge_invariance():
    s, w, l_ = random_outcomes(seed=2)
    for c in (-3.0, 0.7, 100.0):
        assert float(bt_log_likelihood(s + c, w, l_)) == pytest.approx(
            float(bt_log_likelihood(s, w, l_)), rel=1e-12)
        torch.testing.assert_close(bt_gradient(s + c, w, l_), bt_gradient(s, w, l_))
    ones = torch.ones(len(s), **F64)
    assert abs(float(bt_gradient(s, w, l_).sum())) < 1e-12
    assert float((bt_hessian(s, w, l_) @ ones).abs().max()) < 1e-12
    # shifting which item is "zero" does not move the MLE in its gauge
    s_hat = bt_mle(w, l_, len(s), l2=0.1)
    assert abs(float(s_hat.sum())) < 1e-10


def test_mle_closed_form_for_two_items():
    # a beat b m times and lost j times: ŝ_a − ŝ_b = log(m / j), ŝ_a + ŝ_b = 0
    m, j = 7, 3
    w = torch.tensor([0] * m + [1] * j)
    l_ = 1 - w
    s_hat = bt_mle(w, l_, 2)
    assert float(s_hat[0] - s_hat[1]) == pytest.approx(math.log(m / j), rel=1e-10)
    assert float(s_hat.sum()) == pytest.approx(0.0, abs=1e-12)


def test_mle_is_the_maximiser_found_by_lbfgs():
    data = preference_pairs(300, kind="bandit", n_arms=6, seed=3)
    w, l_ = data.chosen, data.rejected
    s_hat = bt_mle(w, l_, 6)
    assert float(bt_gradient(s_hat, w, l_).abs().max()) < 1e-8
    x = torch.zeros(6, **F64, requires_grad=True)
    opt = torch.optim.LBFGS([x], max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = -bt_log_likelihood(x, w, l_)
        loss.backward()
        return loss
    opt.step(closure)
    torch.testing.assert_close(s_hat, (x - x.mean()).detach(), atol=1e-6, rtol=0)


def test_mle_with_ridge_is_a_stationary_point():
    data = preference_pairs(30, kind="bandit", n_arms=8, seed=4)
    lam = 0.5
    s_hat = bt_mle(data.chosen, data.rejected, 8, l2=lam)
    g = bt_gradient(s_hat, data.chosen, data.rejected) - lam * s_hat
    assert float(g.abs().max()) < 1e-8


def test_mle_recovers_the_gold_reward_with_the_asymptotic_error():
    # The MLE is asymptotically normal with covariance the pseudo-inverse of the Fisher
    # information −∇²ℓ (which does not depend on the labels), so E‖ŝ − r/τ‖² ≈ tr((−∇²ℓ)⁺):
    # ∝ 1/n, i.e. an RMS error ∝ 1/√n. Each ratio ‖ŝ − r/τ‖² / tr(...) has mean ≈ 1 and
    # relative sd ≈ √(2 / (K − 1)); the mean of R of them is within 4√(2 / ((K − 1) R)). The
    # MLE's finite-n bias adds to it (the mean ratio was 1.08 at n = 2,000 and 1.18 at 1,000
    # with these seeds), so n starts at 2,000.
    k, tau, reps = 10, 0.7, 40
    tol = 4 * math.sqrt(2 / ((k - 1) * reps))
    mse = {}
    for n in (2_000, 20_000):
        ratios, errs = [], []
        for rep in range(reps):
            data = preference_pairs(n, kind="bandit", n_arms=k, temperature=tau, seed=100 + rep)
            target = data.reward.r / tau
            s_hat = bt_mle(data.chosen, data.rejected, k)
            err = float((s_hat - target).pow(2).sum())
            fisher = -bt_hessian(target, data.chosen, data.rejected)
            # tr(F⁺) on the gauge plane ⟂ 1: F + 11ᵀ/K has eigenvalue 1 along 1/√K
            trace = float(torch.linalg.inv(fisher + 1 / k).trace()) - 1
            ratios.append(err / trace)
            errs.append(err)
        assert abs(sum(ratios) / reps - 1) < tol
        mse[n] = sum(errs) / reps
    assert mse[2_000] / mse[20_000] == pytest.approx(10, rel=0.4)


def test_mle_needs_a_strongly_connected_graph():
    # item 2 never loses: no finite MLE without a ridge
    w, l_ = torch.tensor([0, 1, 2, 2]), torch.tensor([1, 0, 0, 1])
    with pytest.raises(ValueError, match="strongly connected"):
        bt_mle(w, l_, 3)
    s_hat = bt_mle(w, l_, 3, l2=1.0)
    assert bool(torch.isfinite(s_hat).all()) and int(s_hat.argmax()) == 2
    with pytest.raises(ValueError, match="strongly connected"):
        bt_mle(torch.tensor([0, 1]), torch.tensor([1, 0]), 3)       # item 2 never played


def test_pairwise_loss_at_equal_scores_is_log2():
    r = torch.randn(9, **F64)
    assert float(pairwise_loss(r, r)) == pytest.approx(math.log(2), rel=1e-14)
    assert float(pairwise_loss(r, r, label_smoothing=0.3)) == pytest.approx(math.log(2), rel=1e-14)
    p = torch.rand(9, **F64)
    assert float(pairwise_loss(r, r, p=p)) == pytest.approx(math.log(2), rel=1e-14)


def test_pairwise_loss_is_the_bce_of_the_margin_and_its_gradient():
    g = torch.Generator().manual_seed(5)
    rc, rr = torch.randn(20, generator=g, **F64), torch.randn(20, generator=g, **F64)
    p = torch.rand(20, generator=g, **F64)
    torch.testing.assert_close(pairwise_loss(rc, rr, p=p, reduction="none"),
                               F.binary_cross_entropy_with_logits(rc - rr, p, reduction="none"))
    torch.testing.assert_close(pairwise_loss(rc, rr), -F.logsigmoid(rc - rr).mean())
    torch.testing.assert_close(pairwise_loss(rc, rr, label_smoothing=0.1),
                               pairwise_loss(rc, rr, p=torch.full_like(rc, 0.9)))
    # ∂L/∂r_c = σ(Δ) − p per pair (reduction "sum")
    rc = rc.requires_grad_()
    (grad,) = torch.autograd.grad(pairwise_loss(rc, rr, p=p, reduction="sum"), rc)
    torch.testing.assert_close(grad, torch.sigmoid(rc - rr).detach() - p)
    # stable far from zero
    big = pairwise_loss(torch.tensor([-1000.0]), torch.tensor([0.0]))
    assert float(big) == pytest.approx(1000.0)


@settings(max_examples=50, deadline=None)
@given(p=st.floats(0.01, 0.99), delta=st.floats(-8, 8))
def test_soft_label_loss_is_minimised_at_the_true_logit(p, delta):
    # L(Δ) − H(p) = KL(Bern(p) ‖ Bern(σ(Δ))) ≥ 0, zero at Δ = log(p / (1 − p))
    logit = math.log(p / (1 - p))
    pt = torch.tensor([p], **F64)

    def loss(d):
        return float(pairwise_loss(torch.tensor([d], **F64), torch.zeros(1, **F64), p=pt))
    entropy = -p * math.log(p) - (1 - p) * math.log(1 - p)
    assert loss(logit) == pytest.approx(entropy, rel=1e-10)
    assert loss(delta) >= loss(logit) - 1e-12


def test_preference_accuracy():
    rc, rr = torch.tensor([1.0, 2.0, 0.0, 3.0]), torch.tensor([0.0, 3.0, 0.0, 1.0])
    assert preference_accuracy(rc, rr) == pytest.approx((1 + 0 + 0.5 + 1) / 4)


def test_calibration_by_hand():
    p = torch.tensor([0.05, 0.15, 0.12, 0.95, 1.0])
    y = torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0])
    cal = calibration(p, y, n_bins=2)
    assert cal.count.tolist() == [3, 2]
    torch.testing.assert_close(cal.predicted, torch.tensor([0.32 / 3, 0.975], **F64))
    torch.testing.assert_close(cal.observed, torch.tensor([1 / 3, 1.0], **F64))
    ece = (3 * abs(1 / 3 - 0.32 / 3) + 2 * abs(1 - 0.975)) / 5
    assert cal.ece == pytest.approx(ece, rel=1e-6)
    assert torch.isnan(calibration(p, y, n_bins=10).observed[5])    # an empty bin


def test_calibration_of_the_gold_and_of_an_overconfident_model():
    # outcomes drawn from the predicted probabilities: every bin within 4 standard errors;
    # the same outcomes against sharpened predictions σ(3 logit p) are visibly off
    n = 20_000
    data = preference_pairs(n, kind="vectors", dim=3, seed=6)
    g = torch.Generator().manual_seed(7)
    flip = torch.rand(n, generator=g) < 0.5          # show each pair in a random order
    p_true = torch.where(flip, 1 - data.p_chosen, data.p_chosen)
    y = (~flip).double()
    cal = calibration(p_true, y)
    ok = cal.count > 50
    se = (cal.predicted * (1 - cal.predicted) / cal.count).sqrt()
    assert bool(((cal.observed - cal.predicted).abs() < 4 * se + 0.01)[ok].all())
    sharp = torch.sigmoid(3 * torch.logit(p_true))
    assert calibration(sharp, y).ece > 5 * cal.ece


@pytest.mark.parametrize("fn, match", [
    (lambda: pairwise_loss(torch.zeros(3), torch.zeros(4)), "same shape"),
    (lambda: pairwise_loss(torch.zeros(3), torch.zeros(3), label_smoothing=0.6), "label_smo"),
    (lambda: pairwise_loss(torch.zeros(3), torch.zeros(3), label_smoothing=-0.1), "label_smo"),
    (lambda: pairwise_loss(torch.zeros(3), torch.zeros(3), p=torch.full((3,), 1.5)), r"\[0, 1\]"),
    (lambda: pairwise_loss(torch.zeros(3), torch.zeros(3), p=torch.zeros(2)), "p must be"),
    (lambda: pairwise_loss(torch.zeros(3), torch.zeros(3), p=torch.zeros(3),
                           label_smoothing=0.1), "not both"),
    (lambda: pairwise_loss(torch.zeros(3), torch.zeros(3), reduction="max"), "reduction"),
    (lambda: pairwise_loss(torch.zeros(3, dtype=torch.int64), torch.zeros(3)), "float"),
    (lambda: bt_log_likelihood(torch.zeros(1), torch.tensor([0]), torch.tensor([0])), "K >= 2"),
    (lambda: bt_log_likelihood(torch.zeros(3), torch.tensor([3]), torch.tensor([0])), "0..2"),
    (lambda: bt_gradient(torch.zeros(3), torch.tensor([0, 1]), torch.tensor([1])), "same shape"),
    (lambda: bt_hessian(torch.zeros(3), torch.tensor([0.0]), torch.tensor([1])), "int64"),
    (lambda: bt_mle(torch.tensor([0]), torch.tensor([1]), 2, l2=-1.0), "l2"),
    (lambda: bt_mle(torch.tensor([0]), torch.tensor([1]), 1), "n_items"),
    (lambda: bt_mle(torch.tensor([], dtype=torch.int64), torch.tensor([], dtype=torch.int64),
                    2), "at least one"),
    (lambda: calibration(torch.tensor([0.5]), torch.tensor([1.0]), n_bins=0), "n_bins"),
    (lambda: calibration(torch.tensor([1.5]), torch.tensor([1.0])), r"\[0, 1\]"),
    (lambda: calibration(torch.tensor([0.5]), torch.tensor([1.0, 0.0])), "shape"),
    (lambda: preference_accuracy(torch.zeros(2), torch.zeros(3)), "same shape"),
])
def test_bad_input(fn, match):
    with pytest.raises(ValueError, match=match):
        fn()
