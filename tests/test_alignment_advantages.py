"""Tests for alignment.advantages: discounted returns, TD errors and GAE(γ, λ) on a batch of
environments with episode ends, against the direct sums written out step by step."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from alignment import discounted_returns, gae, td_errors

F64 = dict(dtype=torch.float64)


def rollout(T=9, N=4, seed=0, p_done=0.25):
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(T, N, generator=g, **F64)
    v = torch.randn(T, N, generator=g, **F64)
    dones = torch.rand(T, N, generator=g) < p_done
    v_last = torch.randn(N, generator=g, **F64)
    return r, v, dones, v_last


def episode_end(dones, t, n):
    """The last step of the episode that step t of environment n belongs to (or T − 1)."""
    T = dones.shape[0]
    for u in range(t, T):
        if dones[u, n]:
            return u, True
    return T - 1, False


def direct_returns(r, dones, gamma, v_last):
    """G_t = Σ_{u=t}^{end} γ^{u−t} r_u (+ γ^{T−t} V_T when the episode runs past the rollout)."""
    T, N = r.shape
    G = torch.zeros_like(r)
    for n in range(N):
        for t in range(T):
            end, finished = episode_end(dones, t, n)
            G[t, n] = sum(gamma ** (u - t) * r[u, n] for u in range(t, end + 1))
            if not finished:
                G[t, n] += gamma ** (T - t) * v_last[n]
    return G


def direct_gae(delta, dones, gamma, lam):
    """A_t = Σ_{l=0}^{L} (γλ)^l δ_{t+l}, t + L the episode's last step in the rollout."""
    T, N = delta.shape
    A = torch.zeros_like(delta)
    for n in range(N):
        for t in range(T):
            end, _ = episode_end(dones, t, n)
            A[t, n] = sum((gamma * lam) ** (u - t) * delta[u, n] for u in range(t, end + 1))
    return A


@pytest.mark.parametrize("gamma", [0.0, 0.9, 1.0])
def test_returns_equal_the_direct_discounted_sum_within_episodes(gamma):
    r, _, dones, v_last = rollout()
    torch.testing.assert_close(discounted_returns(r, dones, gamma, v_last),
                               direct_returns(r, dones, gamma, v_last), rtol=1e-12, atol=1e-12)
    # no bootstrap value: a finished episode, zeros after the rollout
    torch.testing.assert_close(discounted_returns(r, dones, gamma),
                               direct_returns(r, dones, gamma, torch.zeros(4, **F64)),
                               rtol=1e-12, atol=1e-12)


def test_td_errors_by_hand():
    r, v, dones, v_last = rollout(T=3, N=2)
    gamma = 0.8
    for t in range(3):
        for n in range(2):
            v_next = v[t + 1, n] if t < 2 else v_last[n]
            expected = r[t, n] + gamma * v_next * (1 - float(dones[t, n])) - v[t, n]
            assert td_errors(r, v, dones, gamma, v_last)[t, n].item() == pytest.approx(
                expected.item(), abs=1e-14)


@pytest.mark.parametrize("gamma, lam", [(0.99, 0.95), (0.9, 0.5), (1.0, 1.0), (0.7, 0.0)])
def test_gae_recursion_equals_the_direct_sum_of_td_errors(gamma, lam):
    r, v, dones, v_last = rollout(seed=1)
    out = gae(r, v, dones, gamma, lam, v_last)
    delta = td_errors(r, v, dones, gamma, v_last)
    torch.testing.assert_close(out.adv, direct_gae(delta, dones, gamma, lam), rtol=1e-12,
                               atol=1e-12)
    torch.testing.assert_close(out.returns, out.adv + v)


def test_lambda_zero_is_the_td_error_and_lambda_one_is_returns_minus_values():
    r, v, dones, v_last = rollout(seed=2)
    gamma = 0.95
    torch.testing.assert_close(gae(r, v, dones, gamma, 0.0, v_last).adv,
                               td_errors(r, v, dones, gamma, v_last))
    G = discounted_returns(r, dones, gamma, v_last)
    torch.testing.assert_close(gae(r, v, dones, gamma, 1.0, v_last).adv, G - v,
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gae(r, v, dones, gamma, 1.0, v_last).returns, G,
                               rtol=1e-12, atol=1e-12)


def test_episode_end_stops_credit_and_the_bootstrap():
    # one environment, the episode ends at t = 1: A_0, A_1 ignore everything after t = 1
    r = torch.tensor([1.0, 2.0, 100.0], **F64)
    v = torch.tensor([0.5, 0.25, 7.0], **F64)
    dones = torch.tensor([False, True, False])
    out = gae(r, v, dones, 0.5, 1.0, torch.tensor(1000.0, **F64))
    # A_1 = r_1 − V_1; A_0 = r_0 + γ r_1 − V_0; A_2 = r_2 + γ V_3 − V_2
    torch.testing.assert_close(out.adv, torch.tensor([1 + 0.5 * 2 - 0.5, 2 - 0.25,
                                                      100 + 0.5 * 1000 - 7], **F64))


def test_1d_input_equals_one_column_and_dtype_and_gradients_follow():
    r, v, dones, v_last = rollout(seed=3)
    full = gae(r, v, dones, 0.9, 0.8, v_last)
    col = gae(r[:, 1], v[:, 1], dones[:, 1], 0.9, 0.8, v_last[1])
    torch.testing.assert_close(col.adv, full.adv[:, 1])
    assert gae(r.float(), v.float(), dones, 0.9, 0.8, v_last.float()).adv.dtype == torch.float32
    # the advantage is linear in the rewards: dA_0/dr_u = (γλ)^u within the episode
    r1 = torch.zeros(4, **F64, requires_grad=True)
    a = gae(r1, torch.zeros(4, **F64), torch.zeros(4), 0.9, 0.5).adv
    (grad,) = torch.autograd.grad(a[0], r1)
    torch.testing.assert_close(grad, torch.tensor([0.45 ** u for u in range(4)], **F64))


@settings(max_examples=25, deadline=None)
@given(gamma=st.floats(0, 1), lam=st.floats(0, 1), seed=st.integers(0, 10_000))
def test_property_gae_matches_the_direct_sum(gamma, lam, seed):
    r, v, dones, v_last = rollout(T=6, N=2, seed=seed, p_done=0.3)
    delta = td_errors(r, v, dones, gamma, v_last)
    torch.testing.assert_close(gae(r, v, dones, gamma, lam, v_last).adv,
                               direct_gae(delta, dones, gamma, lam), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("fn, kwargs, match", [
    ("gae", dict(gamma=1.1), r"gamma must be a number in \[0, 1\]"),
    ("gae", dict(gamma=-0.1), r"gamma must be a number in \[0, 1\]"),
    ("gae", dict(lam=1.5), r"lam must be a number in \[0, 1\]"),
    ("gae", dict(lam=-1e-3), r"lam must be a number in \[0, 1\]"),
    ("gae", dict(lam=True), r"lam must be a number"),
    ("returns", dict(gamma=2.0), "gamma"),
    ("td", dict(gamma=float("nan")), "gamma"),
    ("gae", dict(dones=torch.zeros(5, 4)), "dones must be a tensor of the rewards' shape"),
    ("gae", dict(dones=torch.full((9, 4), 2.0)), "0/1"),
    ("gae", dict(values=torch.zeros(9, 3, **F64)), "values must be a tensor"),
    ("gae", dict(last_value=torch.zeros(3, **F64)), r"last_value must be a tensor of shape \(4,\)"),
    ("gae", dict(rewards=torch.zeros(9, 4, dtype=torch.int64)), "rewards must be a float"),
    ("returns", dict(rewards=torch.zeros(2, 3, 4, **F64)), r"\(T, N\)"),
])
def test_bad_input_raises(fn, kwargs, match):
    r, v, dones, v_last = rollout()
    args = dict(rewards=r, values=v, dones=dones, gamma=0.9, lam=0.9, last_value=v_last) | kwargs
    with pytest.raises(ValueError, match=match):
        if fn == "gae":
            gae(**args)
        elif fn == "td":
            td_errors(args["rewards"], args["values"], args["dones"], args["gamma"],
                      args["last_value"])
        else:
            discounted_returns(args["rewards"], args["dones"], args["gamma"], args["last_value"])
