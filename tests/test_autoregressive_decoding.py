"""Tests for autoregressive.decoding: top-k and top-p on hand examples (the crossing token kept),
temperature's limits, sampling frequencies against the filtered distribution, generate with and
without the KV cache (identical greedy tokens and identical samples from the same generator,
also past the block), beam search against exhaustive search, bad input."""

import itertools
import math

import pytest
import torch

from autoregressive import (
    GPT,
    GPTConfig,
    beam_search,
    filter_top_k,
    filter_top_p,
    generate,
    sample_next,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def small(block=12, vocab=7):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=vocab, block_size=block, n_layer=2, n_head=2, n_embd=16))


def test_top_k_by_hand():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.5]])
    kept = torch.isfinite(filter_top_k(logits, 2))
    assert kept.tolist() == [[False, True, True, False]]
    assert torch.equal(filter_top_k(logits, 10), logits)
    ties = torch.isfinite(filter_top_k(torch.tensor([[1.0, 2.0, 2.0, 0.0]]), 1))
    assert ties.tolist() == [[False, True, True, False]]   # ties at the k-th value all kept


def test_top_p_keeps_the_crossing_token():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    # mass before: 0, 0.5, 0.8, 0.95 -> p = 0.6 keeps 0.5 and 0.3 (0.3 crosses 0.6)
    assert torch.isfinite(filter_top_p(logits, 0.6)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_top_p(logits, 0.5)).tolist() == [[True, False, False, False]]
    assert torch.isfinite(filter_top_p(logits, 0.1)).tolist() == [[True, False, False, False]]
    assert torch.isfinite(filter_top_p(logits, 1.0)).all()
    shuffled = logits[:, [2, 0, 3, 1]]                     # order in the vocabulary is irrelevant
    assert torch.isfinite(filter_top_p(shuffled, 0.6)).tolist() == [[False, True, False, True]]


def test_sampling_frequencies_match_the_filtered_distribution():
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log().repeat(40_000, 1)
    x = sample_next(logits, top_p=0.6, generator=gen(1))
    freq = torch.bincount(x, minlength=4).double() / len(x)
    target = torch.tensor([0.625, 0.375, 0.0, 0.0], dtype=torch.float64)
    se = (target * (1 - target) / len(x)).sqrt()
    assert ((freq - target).abs() <= 5 * se + 1e-12).all()
    x = sample_next(logits, temperature=0.5, generator=gen(2))   # π^(1/τ) = π², renormalised
    target = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64) ** 2
    target /= target.sum()
    freq = torch.bincount(x, minlength=4).double() / len(x)
    assert ((freq - target).abs() <= 5 * (target * (1 - target) / len(x)).sqrt()).all()


def test_greedy_and_low_temperature():
    logits = torch.randn(50, 9, generator=gen(3))
    assert torch.equal(sample_next(logits, greedy=True), logits.argmax(-1))
    assert torch.equal(sample_next(logits, temperature=1e-4, generator=gen(4)),
                       logits.argmax(-1))
    assert torch.equal(sample_next(logits, top_k=1, generator=gen(5)), logits.argmax(-1))


@pytest.mark.parametrize("n_new", [5, 20])  # 20: past the block of 12
def test_kv_cache_equals_recompute(n_new):
    model = small()
    prompt = torch.tensor([1, 2, 3])
    a = generate(model, prompt, n_new, greedy=True, kv_cache=True)
    b = generate(model, prompt, n_new, greedy=True, kv_cache=False)
    assert torch.equal(a, b) and a.shape == (1, 3 + n_new)
    s1 = generate(model, prompt.repeat(4, 1), n_new, top_k=5, generator=gen(7), kv_cache=True)
    s2 = generate(model, prompt.repeat(4, 1), n_new, top_k=5, generator=gen(7), kv_cache=False)
    assert torch.equal(s1, s2)
    assert model.training  # restored


def test_greedy_generate_follows_argmax():
    model = small().eval()
    out = generate(model, torch.tensor([4]), 6, greedy=True)
    for t in range(1, 7):
        assert out[0, t] == model(out[:, :t])[0, -1].argmax()


def test_beam_search_against_exhaustive_search():
    model = small(vocab=4).double().eval()
    prompt = torch.tensor([1, 2])
    n = 3
    best_lp, best_seq = -math.inf, None
    with torch.no_grad():
        for tail in itertools.product(range(4), repeat=n):
            seq = torch.cat([prompt, torch.tensor(tail)])
            logp = torch.log_softmax(model(seq[None, :-1]).double(), -1)[0]
            lp = sum(logp[t - 1, seq[t]].item() for t in range(2, 2 + n))
            if lp > best_lp:
                best_lp, best_seq = lp, seq
    result = beam_search(model, prompt, n, beams=4 ** n, length_penalty=0.0)
    assert torch.equal(result.tokens[0], best_seq)
    assert result.log_prob[0].item() == pytest.approx(best_lp, abs=1e-9)
    narrow = beam_search(model, prompt, n, beams=3)
    assert narrow.log_prob[0] <= best_lp + 1e-9 and len(narrow.tokens) == 3
    greedy = beam_search(model, prompt, n, beams=1)
    assert torch.equal(greedy.tokens[0], generate(model, prompt, n, greedy=True)[0])


def test_beam_search_length_penalty_with_eos():
    """With an eos, α = 0 prefers the short finished sequences and a large α longer ones."""
    model = small(vocab=5).eval()
    prompt = torch.tensor([1])
    short = beam_search(model, prompt, 8, beams=4, eos=0, length_penalty=0.0)
    long = beam_search(model, prompt, 8, beams=4, eos=0, length_penalty=3.0)
    mean_len = lambda r: sum(len(t) for t in r.tokens) / len(r.tokens)  # noqa: E731
    assert mean_len(short) <= mean_len(long)
    assert (short.score[:-1] >= short.score[1:]).all()


def test_bad_input():
    logits = torch.zeros(2, 5)
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        filter_top_k(logits, 0)
    for p in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="top_p"):
            filter_top_p(logits, p)
    for t in (0.0, -1.0):
        with pytest.raises(ValueError, match="temperature"):
            sample_next(logits, temperature=t)
    with pytest.raises(ValueError, match=r"\(B, V\)"):
        sample_next(torch.zeros(5))
    model = small()
    with pytest.raises(ValueError, match="longer than the model's block_size"):
        generate(model, torch.zeros(13, dtype=torch.int64), 2)
    with pytest.raises(ValueError, match=r"\[0, 7\)"):
        generate(model, torch.tensor([9]), 2)
    with pytest.raises(ValueError, match="int64"):
        generate(model, torch.zeros(3), 2)
    with pytest.raises(ValueError, match="temperature"):
        generate(model, torch.tensor([1]), 2, temperature=0.0)
    with pytest.raises(ValueError, match="length_penalty"):
        beam_search(model, torch.tensor([1]), 2, length_penalty=-1.0)
    with pytest.raises(ValueError, match="one prompt"):
        beam_search(model, torch.zeros(2, 3, dtype=torch.int64), 2)
