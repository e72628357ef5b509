"""Tests for evaluation.teacher_forcing: the schedules' closed forms, the per-token coin of
scheduled sampling (per-position frequencies, binomial counts within a sequence, independent
positions), the exact rollout against a recompute-the-prefix rollout and against
autoregressive.generate, teacher forcing against lm_loss and lm_step, the two-pass
approximation's definition, Huszár's inconsistency (scheduled sampling's minimiser in closed
form), repeated n-grams against a set; every ValueError."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from autoregressive import GPT, GPTConfig, RecurrentLM, generate, lm_loss, lm_step
from evaluation import (
    IGNORE,
    exponential_decay,
    exposure_errors,
    free_running,
    given_inputs,
    inverse_sigmoid_decay,
    linear_decay,
    mix_inputs,
    mixed_rollout,
    repeated_ngrams,
    scheduled_sampling_step,
    teacher_forced_loss,
    token_nll,
    truth_mask,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def lstm(vocab=7, hidden=12, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return RecurrentLM(vocab, hidden, fused=True).to(dtype)


def tokens(b, t, vocab=7, seed=1):
    return torch.randint(vocab, (b, t), generator=torch.Generator().manual_seed(seed))


# -- schedules -------------------------------------------------------------------------------

def test_schedules_closed_forms():
    assert linear_decay(0, slope=0.01) == 1.0
    assert linear_decay(30, slope=0.01) == pytest.approx(0.7)
    assert linear_decay(500, slope=0.01, floor=0.1) == 0.1
    assert linear_decay(10, slope=0.05, start=0.8, floor=0.2) == pytest.approx(0.3)
    assert exponential_decay(0, 0.9) == 1.0
    assert exponential_decay(7, 0.9) == pytest.approx(0.9 ** 7)
    k = 50.0
    assert inverse_sigmoid_decay(0, k) == pytest.approx(k / (k + 1))
    assert inverse_sigmoid_decay(200, k) == pytest.approx(k / (k + math.exp(4.0)))
    # ε = 1/2 where exp(i/k) = k, i.e. i = k ln k (≈ 195.6 for k = 50): between steps 195 and 196
    assert inverse_sigmoid_decay(195, k) > 0.5 > inverse_sigmoid_decay(196, k)
    assert inverse_sigmoid_decay(10 ** 7, 2.0) == 0.0          # no overflow


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 5_000), st.floats(1.0, 1e4), st.floats(0.5, 1.0), st.floats(0.0, 0.1))
def test_schedules_are_probabilities_and_non_increasing(i, k, base, slope):
    for f in (lambda j: inverse_sigmoid_decay(j, k), lambda j: exponential_decay(j, base),
              lambda j: linear_decay(j, slope=slope, floor=0.05)):
        a, b = f(i), f(i + 1)
        assert 0.0 <= b <= a <= 1.0


@pytest.mark.parametrize("call", [
    lambda: inverse_sigmoid_decay(3, 0.5), lambda: inverse_sigmoid_decay(3, math.inf),
    lambda: exponential_decay(3, 0.0), lambda: exponential_decay(3, 1.5),
    lambda: linear_decay(3, slope=-0.1), lambda: linear_decay(3, slope=0.1, start=1.2),
    lambda: linear_decay(3, slope=0.1, floor=-0.1), lambda: linear_decay(3, slope=0.1,
                                                                         start=0.3, floor=0.5),
    lambda: linear_decay(-1, slope=0.1), lambda: exponential_decay(2.0, 0.5),
])
def test_schedule_bad_input(call):
    with pytest.raises(ValueError):
        call()


# -- the per-token coin ----------------------------------------------------------------------

def test_truth_mask_flips_one_coin_per_token():
    B, T, eps = 20_000, 9, 0.3
    m = truth_mask(B, T, eps, generator=torch.Generator().manual_seed(0))
    assert m.dtype == torch.bool and m.shape == (B, T) and bool(m[:, 0].all())
    # each position t >= 1: frequency of the truth ≈ ε within 5 standard errors
    se = math.sqrt(eps * (1 - eps) / B)
    assert ((m[:, 1:].double().mean(0) - eps).abs() < 5 * se).all()
    # within a sequence the T − 1 coins are independent: the count of truth tokens is
    # Binomial(T − 1, ε), variance (T − 1) ε (1 − ε) = 1.68; one coin per *sequence* would give
    # (T − 1)² ε (1 − ε) = 13.4. The sample variance's standard error is ≈ var · √(2 / B).
    count = m[:, 1:].sum(1).double()
    var = (T - 1) * eps * (1 - eps)
    assert abs(count.var().item() - var) < 5 * var * math.sqrt(2 / B)
    # and no two positions are correlated (|r| < 5 / √B)
    c = torch.corrcoef(m[:, 1:].double().T)
    assert (c - torch.eye(T - 1, dtype=torch.float64)).abs().max() < 5 / math.sqrt(B)


def test_truth_mask_extremes_and_bad_input():
    assert bool(truth_mask(4, 5, 1.0).all())
    assert not bool(truth_mask(4, 5, 0.0)[:, 1:].any())
    for eps in (-0.1, 1.1, True, "0.5"):
        with pytest.raises(ValueError, match="epsilon"):
            truth_mask(4, 5, eps)
    with pytest.raises(ValueError):
        truth_mask(0, 5, 0.5)


def test_mix_inputs_and_given_inputs_by_hand():
    x = torch.tensor([[1, 2, 3, 4]])
    predicted = torch.tensor([[7, 8, 9, 6]])        # guesses of x[:, 1], x[:, 2], x[:, 3], −
    mask = torch.tensor([[False, False, True, False]])
    assert mix_inputs(x, predicted, mask).tolist() == [[1, 7, 3, 9]]
    y = torch.tensor([[IGNORE, 5, IGNORE, 2]])
    assert given_inputs(y).tolist() == [[True, True, False, True]]
    with pytest.raises(ValueError):
        mix_inputs(x, predicted[:, :3], mask)
    with pytest.raises(ValueError):
        mix_inputs(x, predicted, mask.long())
    with pytest.raises(ValueError):
        mix_inputs(x.float(), predicted, mask)
    with pytest.raises(ValueError):
        given_inputs(y[0])


# -- rollouts ----------------------------------------------------------------------------------

def test_all_truth_is_teacher_forcing_for_every_method():
    model, x = lstm(), tokens(3, 10)
    expected = model(x)
    full = torch.ones_like(x, dtype=torch.bool)
    for kwargs in (dict(method="exact"), dict(method="exact", cache=False),
                   dict(method="two_pass")):
        r = mixed_rollout(model, x, full, **kwargs)
        assert torch.equal(r.tokens, x)
        torch.testing.assert_close(r.logits, expected, rtol=1e-10, atol=1e-10)


def test_exact_rollout_cache_equals_recomputing_the_prefix():
    model, x = lstm(), tokens(5, 12)
    mask = truth_mask(5, 12, 0.5, generator=torch.Generator().manual_seed(2))
    a = mixed_rollout(model, x, mask, generator=torch.Generator().manual_seed(3))
    b = mixed_rollout(model, x, mask, cache=False, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.tokens, b.tokens)
    torch.testing.assert_close(a.logits, b.logits, rtol=1e-10, atol=1e-10)
    # where the truth is fed the input is the truth; elsewhere it is the argmax (greedy) of the
    # logits the model gave on the mixed prefix
    g = mixed_rollout(model, x, mask, greedy=True)
    assert torch.equal(g.tokens[mask], x[mask])
    guess = g.logits[:, :-1].argmax(-1)
    assert torch.equal(g.tokens[:, 1:][~mask[:, 1:]], guess[~mask[:, 1:]])
    # and the logits are those of a plain forward pass on the tokens it read
    torch.testing.assert_close(g.logits, model(g.tokens), rtol=1e-10, atol=1e-10)


def test_free_running_is_generate_greedy_for_an_rnn_and_a_gpt():
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=7, block_size=16, n_layer=1, n_head=2, n_embd=16)).double()
    prompt = tokens(3, 4)
    for model, cache in ((lstm(), True), (gpt, False)):
        r = free_running(model, prompt, 16, cache=cache)
        assert torch.equal(r.tokens, generate(model, prompt, 12, greedy=True))
        assert r.logits.shape == (3, 16, 7) and not r.logits.requires_grad


def test_two_pass_takes_its_guesses_from_the_teacher_forced_pass():
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=7, block_size=16, n_layer=2, n_head=2, n_embd=16)).double()
    x = tokens(4, 16)
    mask = truth_mask(4, 16, 0.4, generator=torch.Generator().manual_seed(5))
    r = mixed_rollout(gpt, x, mask, method="two_pass", greedy=True)
    guess = gpt(x).argmax(-1)                                # on the true prefix
    assert torch.equal(r.tokens, mix_inputs(x, guess, mask))
    torch.testing.assert_close(r.logits, gpt(r.tokens))
    assert r.logits.requires_grad                            # pass 2 carries the gradient


def test_gradients_flow_through_the_recurrent_state_of_an_exact_rollout():
    model, x = lstm(), tokens(2, 8)
    mask = torch.zeros_like(x, dtype=torch.bool)
    r = mixed_rollout(model, x, mask, greedy=True)
    r.logits[:, -1].sum().backward()
    assert model.rnn.weight_hh_l0.grad is not None and model.rnn.weight_hh_l0.grad.abs().sum() > 0


def test_exact_rollout_of_a_gpt_recomputing_the_prefix_equals_its_kv_cache_and_has_gradients():
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=7, block_size=16, n_layer=2, n_head=2, n_embd=16)).double()
    x = tokens(3, 12)
    mask = truth_mask(3, 12, 0.5, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        cached = mixed_rollout(gpt, x, mask, greedy=True)
    r = mixed_rollout(gpt, x, mask, greedy=True, cache=False)
    assert torch.equal(r.tokens, cached.tokens)
    torch.testing.assert_close(r.logits, cached.logits)
    r.logits.sum().backward()
    assert gpt.tok_emb.weight.grad.abs().sum() > 0


def test_exposure_errors_free_run_equals_the_truth_up_to_the_first_teacher_forced_error():
    model = lstm(vocab=5, hidden=6, seed=3)
    x = tokens(200, 9, vocab=5, seed=7)
    y = torch.roll(x, -1, 1)
    y[:, 1::3] = IGNORE                     # every third input is given, the rest predicted
    tf, free = exposure_errors(model, x, y)
    scored = y != IGNORE
    assert torch.equal(tf, (model(x).argmax(-1) != y) & scored)
    assert not bool((tf | free)[~scored].any()) and model.training
    first = tf.float().argmax(1)
    for b in range(200):
        if tf[b].any():
            j = int(first[b])
            assert not free[b, :j].any() and bool(free[b, j])
        else:
            assert not free[b].any()
    assert bool((free & ~tf).any())   # past it the free run errs where teacher forcing does not
    with pytest.raises(ValueError, match="shape"):
        exposure_errors(model, x, y[:, :5])


def test_rollout_bad_input():
    model, x = lstm(), tokens(2, 5)
    m = torch.ones_like(x, dtype=torch.bool)
    with pytest.raises(ValueError, match="method"):
        mixed_rollout(model, x, m, method="parallel")
    with pytest.raises(ValueError, match="mask"):
        mixed_rollout(model, x, m[:, :4])
    with pytest.raises(ValueError, match="int64"):
        mixed_rollout(model, x[0], m[0])
    with pytest.raises(ValueError, match="length"):
        free_running(model, x, 3)


# -- losses and the training step -------------------------------------------------------------

def test_token_nll_and_teacher_forced_loss_equal_lm_loss():
    model, x = lstm(), tokens(3, 9)
    y = torch.roll(x, -1, 1)
    y[0, :4] = IGNORE
    logits = model(x)
    nll = token_nll(logits, y)
    assert nll.shape == (3, 9) and bool((nll[0, :4] == 0).all())
    by_hand = -torch.log_softmax(logits, -1).gather(-1, x.roll(-1, 1)[..., None])[..., 0]
    torch.testing.assert_close(nll[y != IGNORE], by_hand[y != IGNORE])
    torch.testing.assert_close(teacher_forced_loss(model, x, y), lm_loss(logits, y))
    with pytest.raises(ValueError):
        token_nll(logits[0], y[0])
    with pytest.raises(ValueError):
        token_nll(logits, y[:, :5])


def test_scheduled_sampling_with_epsilon_one_is_the_teacher_forced_step():
    x = tokens(4, 10)
    y = torch.roll(x, -1, 1)
    a, b = lstm(), lstm()
    opt_a = torch.optim.Adam(a.parameters(), lr=1e-2)
    opt_b = torch.optim.Adam(b.parameters(), lr=1e-2)
    sched_a = torch.optim.lr_scheduler.StepLR(opt_a, 1, gamma=0.5)
    sched_b = torch.optim.lr_scheduler.StepLR(opt_b, 1, gamma=0.5)
    for _ in range(2):
        out = scheduled_sampling_step(a, opt_a, 1.0, clip=0.5, scheduler=sched_a)((x, y))
        lm_step(b, opt_b, clip=0.5, scheduler=sched_b)((x, y))
    assert opt_a.param_groups[0]["lr"] == pytest.approx(2.5e-3)
    assert out["epsilon"] == 1.0 and out["truth_fed"] == 1.0
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q)


def test_step_follows_its_schedule_and_keeps_given_inputs():
    x = tokens(64, 11)
    y = torch.roll(x, -1, 1)
    y[:, ::2] = IGNORE                  # the odd inputs are not predicted: always the data's
    model = lstm()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    seen = []
    step = scheduled_sampling_step(model, opt, lambda i: seen.append(i) or 0.0, start=5,
                                   greedy=True)
    out = [step((x, y)) for _ in range(3)]
    assert seen == [5, 6, 7] and out[0]["truth_fed"] == 0.0
    # with ε = 0 every predicted input is the model's argmax; the given ones stay the truth
    r = mixed_rollout(model, x, given_inputs(y), greedy=True)
    assert torch.equal(r.tokens[:, 1::2], x[:, 1::2])
    assert not torch.equal(r.tokens, x)


def test_step_bad_input():
    model = lstm()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="epsilon"):
        scheduled_sampling_step(model, opt, 1.5)
    with pytest.raises(ValueError, match="clip"):
        scheduled_sampling_step(model, opt, 0.5, clip=0)
    with pytest.raises(ValueError, match="method"):
        scheduled_sampling_step(model, opt, 0.5, method="beam")
    x = tokens(2, 4)
    with pytest.raises(ValueError, match="epsilon"):  # the schedule left [0, 1]
        scheduled_sampling_step(model, opt, lambda i: 2.0)((x, x))


class CopyTable(nn.Module):
    """p(x_{t+1} | x_t) = softmax(W_t[x_t]): a table per position (x_0 = BOS = 0)."""

    def __init__(self, vocab, length):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(length, vocab, vocab))

    def forward(self, idx):
        return self.w[torch.arange(idx.shape[1])[None, :], idx]


def test_scheduled_sampling_minimiser_is_not_the_data_distribution():
    # Huszár (2015). Data: x_0 = BOS, x_1 uniform on {1..K}, x_2 = x_1 (a copy). With ε fixed,
    # the input at position 1 is x_1 w.p. ε, else x̂_1 ~ p_θ(· | BOS) (uniform once learned), so
    # the minimiser of the scheduled-sampling loss is q(x_2 = a | x̃_1 = a) = ε + (1 − ε) / K,
    # not 1: the model class holds the truth (a copy) but the objective does not pick it.
    K, eps, n = 4, 0.5, 4_096
    torch.manual_seed(0)
    model = CopyTable(K + 1, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    step = scheduled_sampling_step(model, opt, eps, cache=False, clip=None,
                                   generator=torch.Generator().manual_seed(1))

    def batch(s):
        x1 = torch.randint(1, K + 1, (n,), generator=torch.Generator().manual_seed(s))
        x = torch.stack([torch.zeros_like(x1), x1], 1)
        return x, torch.stack([x1, x1], 1)

    for s in range(300):
        step(batch(s))
    for group in opt.param_groups:   # a few small steps to settle the Adam noise
        group["lr"] = 0.01
    for s in range(300, 400):
        step(batch(s))
    p = torch.softmax(model.w.detach(), -1)
    copy = p[1, torch.arange(1, K + 1), torch.arange(1, K + 1)]
    # the empirical target frequencies of a batch have sd √(q(1 − q) / (n/K)) ≈ 0.016
    assert torch.allclose(copy, torch.full((K,), eps + (1 - eps) / K), atol=0.03), copy
    assert torch.allclose(p[0, 0, 1:], torch.full((K,), 1 / K), atol=0.03)


# -- repeated n-grams --------------------------------------------------------------------------

def test_repeated_ngrams_against_a_set():
    x = tokens(6, 40, vocab=3, seed=4)
    for n in (1, 2, 4):
        r = repeated_ngrams(x, n)
        for b in range(6):
            seen, row = set(), x[b].tolist()
            for t in range(40):
                gram = tuple(row[t - n + 1:t + 1]) if t >= n - 1 else None
                assert bool(r[b, t]) == (gram is not None and gram in seen)
                if gram is not None:
                    seen.add(gram)
    assert repeated_ngrams(torch.tensor([[1, 2, 1, 2, 3]]), 2).tolist() == \
        [[False, False, False, True, False]]
    assert not repeated_ngrams(x[:, :3], 5).any()
    with pytest.raises(ValueError):
        repeated_ngrams(x, 0)
    with pytest.raises(ValueError):
        repeated_ngrams(x.float(), 2)
