"""Tests for alignment.sequence_logprobs: completion log-probabilities under a causal LM, against
autoregressive.sequence_log_prob and a loop that feeds the model one prefix at a time."""

import pytest
import torch

from alignment import completion_log_probs, completion_mask, token_log_probs
from autoregressive import GPT, GPTConfig, sequence_log_prob

V, T = 7, 9


@pytest.fixture
def gpt(one_thread):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=V, block_size=16, n_layer=2, n_head=2, n_embd=16)).double()


def _rows(seed=1, B=3):
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(V, (B, T), generator=g)
    prompt = torch.tensor([1, 3, 4])[:B]
    lengths = torch.tensor([T, 6, 7])[:B]
    return idx, completion_mask(prompt, lengths, T), prompt, lengths


def test_all_tokens_after_the_first_equal_sequence_log_prob(gpt):
    idx, _, _, _ = _rows()
    mask = torch.ones_like(idx, dtype=torch.bool)
    mask[:, 0] = False
    out = completion_log_probs(gpt, idx, mask)
    logits = gpt(idx)
    expected = sequence_log_prob(logits[:, :-1], idx[:, 1:])
    assert torch.allclose(out.total, expected, rtol=1e-12, atol=1e-12)
    assert torch.allclose(out.per_token, token_log_probs(logits, idx), rtol=0, atol=0)
    assert out.per_token.shape == (3, T - 1) and out.mask.shape == (3, T - 1)


def test_completion_sum_equals_a_loop_over_prefixes(gpt):
    # each conditional π(idx_t | idx_<t) computed from a fresh forward pass on the prefix idx_≤t
    # alone, so that a mis-shifted logit, a non-causal model or a leak from later tokens shows
    idx, mask, prompt, lengths = _rows()
    out = completion_log_probs(gpt, idx, mask)
    for b in range(idx.shape[0]):
        total = 0.0
        for t in range(int(prompt[b]), int(lengths[b])):
            log_p = torch.log_softmax(gpt(idx[b:b + 1, :t])[0, -1], -1)[idx[b, t]]
            assert out.per_token[b, t - 1].item() == pytest.approx(log_p.item(), abs=1e-12)
            total += log_p.item()
        assert out.total[b].item() == pytest.approx(total, abs=1e-11)


def test_prompt_and_padding_are_excluded(gpt):
    idx, mask, prompt, lengths = _rows()
    out = completion_log_probs(gpt, idx, mask)
    assert torch.equal(out.mask, mask[:, 1:])
    assert bool((out.per_token[~out.mask] == 0).all())
    assert bool((out.per_token[out.mask] < 0).all())
    # padding after the completion does not change anything (the model is causal)
    padded = idx.clone()
    for b in range(3):
        padded[b, int(lengths[b]):] = (padded[b, int(lengths[b]):] + 1) % V
    assert not torch.equal(padded, idx)
    assert torch.allclose(completion_log_probs(gpt, padded, mask).total, out.total, atol=1e-12)
    # and no gradient reaches the logits of prompt or padding positions
    logits = gpt(idx).detach().requires_grad_(True)
    completion_log_probs(logits, idx, mask).total.sum().backward()
    scored = torch.zeros(3, T, dtype=torch.bool)
    scored[:, :-1] = mask[:, 1:]                       # logits at t − 1 score the token at t
    assert bool((logits.grad[~scored] == 0).all())
    assert bool((logits.grad[scored].abs().sum(-1) > 0).all())


def test_a_longer_prompt_scores_fewer_tokens():
    # the same logits: moving the prompt boundary one token right drops exactly that token
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, T, V, generator=g, dtype=torch.float64)
    idx = torch.randint(V, (2, T), generator=g)
    lp = token_log_probs(logits, idx)
    a = completion_log_probs(logits, idx, completion_mask(torch.tensor([2, 2]),
                                                          torch.tensor([T, T]), T)).total
    b = completion_log_probs(logits, idx, completion_mask(torch.tensor([3, 3]),
                                                          torch.tensor([T, T]), T)).total
    assert torch.allclose(a - b, lp[:, 1], atol=1e-12)


def test_completion_mask_layout():
    m = completion_mask(torch.tensor([1, 2]), torch.tensor([3, 5]), 5)
    assert m.tolist() == [[False, True, True, False, False], [False, False, True, True, True]]


def test_half_precision_logits_are_scored_in_float32():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 4, V, generator=g)
    idx = torch.randint(V, (2, 4), generator=g)
    out = token_log_probs(logits.to(torch.bfloat16), idx)
    assert out.dtype == torch.float32
    ref = token_log_probs(logits.to(torch.bfloat16).float(), idx)
    assert torch.equal(out, ref)


@pytest.mark.parametrize("logits, idx, mask, match", [
    (torch.zeros(2, 4, V), torch.zeros(2, 4, dtype=torch.int64), torch.zeros(2, 3), "shape"),
    (torch.zeros(2, 4, V), torch.zeros(2, 4, dtype=torch.int64),
     torch.tensor([[1, 1, 0, 0], [0, 1, 0, 0]]), r"mask\[:, 0\]"),
    (torch.zeros(2, 4, V), torch.zeros(2, 4, dtype=torch.int64),
     torch.tensor([[0, 1, 0, 0], [0, 0, 0, 0]]), r"rows \[1\]"),
    (torch.zeros(2, 4, V), torch.zeros(2, 4, dtype=torch.int64),
     torch.tensor([[0, 2, 0, 0], [0, 1, 0, 0]]), "0/1"),
    (torch.zeros(2, 4, V), torch.full((2, 4), V), torch.tensor([[0, 1, 0, 0]] * 2), "lie in"),
    (torch.zeros(2, 4, V), torch.zeros(2, 4), torch.tensor([[0, 1, 0, 0]] * 2), "int64"),
    (torch.zeros(2, 5, V), torch.zeros(2, 4, dtype=torch.int64),
     torch.tensor([[0, 1, 0, 0]] * 2), r"\(B, T\)"),
    (torch.zeros(2, 4), torch.zeros(2, 4, dtype=torch.int64), torch.tensor([[0, 1, 0, 0]] * 2),
     r"\(B, T, V\)"),
])
def test_completion_log_probs_bad_input(logits, idx, mask, match):
    with pytest.raises(ValueError, match=match):
        completion_log_probs(logits, idx, mask)


def test_token_log_probs_needs_two_tokens():
    with pytest.raises(ValueError, match="T >= 2"):
        token_log_probs(torch.zeros(2, 1, V), torch.zeros(2, 1, dtype=torch.int64))


@pytest.mark.parametrize("prompt, lengths, T_, match", [
    (torch.tensor([0, 1]), torch.tensor([2, 2]), 4, "1 <= prompt_lengths"),
    (torch.tensor([2, 1]), torch.tensor([2, 2]), 4, "prompt_lengths < lengths"),
    (torch.tensor([1, 1]), torch.tensor([5, 2]), 4, "lengths <= T"),
    (torch.tensor([1, 1]), torch.tensor([2]), 4, "same shape"),
    (torch.tensor([1.0]), torch.tensor([2]), 4, "integer tensor"),
    (torch.tensor([1]), torch.tensor([2]), 1, "T must be"),
])
def test_completion_mask_bad_input(prompt, lengths, T_, match):
    with pytest.raises(ValueError, match=match):
        completion_mask(prompt, lengths, T_)
