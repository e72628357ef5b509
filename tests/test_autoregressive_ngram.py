"""Tests for autoregressive.ngram: interpolated Kneser-Ney against a hand computation and against
a second, literal implementation of Chen & Goodman's recursion; every next-token distribution sums
to one (seen, unseen and short contexts, every order); order 1 is the smoothed unigram; on
samples of Markov chains whose conditional entropies are computed exactly, the held-out nll of
each order approaches the matching entropy (within a tolerance from the sample size) and falls
from order 1 to 3 as it should; additive smoothing; sampling; real text; bad input."""

import itertools
import math
import pydoc_data.topics

import numpy as np
import pytest
import torch

from autoregressive.ngram import AdditiveLM, KneserNeyLM

pytestmark = pytest.mark.usefixtures("one_thread")

# the hand example: a b a b c a b over V = 4 tokens (d = 3 never occurs)
A, B, C, D = 0, 1, 2, 3
HAND = [A, B, A, B, C, A, B]


def random_text(n, vocab, seed=0):
    return torch.randint(vocab, (n,), generator=torch.Generator().manual_seed(seed))


def test_unigram_continuation_probability_by_hand():
    # Bigram types: ab, ba, bc, ca. Continuation counts N1+(• w): a 2 (after b, c), b 1 (after
    # a), c 1 (after b), d 0; their total is 4 and 3 tokens have one. Counts of 1: b, c; of 2: a
    # -> D_1 = 2 / (2 + 2·1) = 1/2, λ = D_1 · 3 / 4 = 3/8 and p_1(w) = max(N1+(•w) − 1/2, 0)/4
    # + (3/8)(1/4). Note b: as frequent as a (3 of 7 tokens) but it only ever follows a.
    lm = KneserNeyLM(2, 4).fit(HAND)
    assert lm.discounts[0] == 0.5
    p1 = lm.next_distribution([D])                 # context d never seen: backs off fully to p_1
    expected = torch.tensor([1.5 / 4 + 3 / 32, 0.5 / 4 + 3 / 32, 0.5 / 4 + 3 / 32, 3 / 32],
                            dtype=torch.float64)
    torch.testing.assert_close(p1, expected, rtol=0, atol=1e-15)
    # the bigram level: counts of ab 3, ba 1, bc 1, ca 1 -> n1 = 3, n2 = 0, D_2 = 1;
    # context a: p(w | a) = max(c(a w) − 1, 0) / 3 + (1 · 1 / 3) p_1(w)
    assert lm.discounts[1] == 1.0
    torch.testing.assert_close(lm.next_distribution([A]),
                               torch.tensor([0, 2 / 3, 0, 0], dtype=torch.float64) + p1 / 3,
                               rtol=0, atol=1e-15)
    # context b: c(b a) = c(b c) = 1 are discounted to 0; λ(b) = 1 · 2 / 2 = 1
    torch.testing.assert_close(lm.next_distribution([B]), p1, rtol=0, atol=1e-15)
    # the first position of a sequence has no context: the unigram level
    assert lm.prob([], A) == pytest.approx(expected[A].item(), abs=1e-15)


def test_order_1_is_the_smoothed_unigram():
    # raw counts a 3, b 3, c 1: n1 = 1, n2 = 0 -> D = 1; p(w) = max(c(w) − 1, 0)/7 + (3/7)(1/4)
    lm = KneserNeyLM(1, 4).fit(HAND)
    torch.testing.assert_close(lm.next_distribution(None),
                               torch.tensor([11 / 28, 11 / 28, 3 / 28, 3 / 28],
                                            dtype=torch.float64), rtol=0, atol=1e-15)
    # the context is ignored; with many counts it is the frequency up to D·V/N
    x = random_text(20_000, 6, seed=1)
    lm = KneserNeyLM(1, 6).fit(x)
    freq = torch.bincount(x, minlength=6).double() / len(x)
    assert lm.discounts == (lm.discounts[0],) and 0 < lm.discounts[0] <= 1
    torch.testing.assert_close(lm.next_distribution([1, 2, 3]), lm.next_distribution(None))
    assert float((lm.next_distribution(None) - freq).abs().max()) <= 6 / len(x)


def reference_kn(train, order, vocab, discounts, context, w):
    """Chen & Goodman's interpolated KN written literally from its definition: counts recomputed
    by scanning the text for every query."""
    n_text = len(train)

    def grams(k):
        return [tuple(train[i:i + k]) for i in range(n_text - k + 1)]

    def count(g, top):
        if top:                                          # c(g)
            return sum(1 for q in grams(len(g)) if q == g)
        return len({q[0] for q in grams(len(g) + 1) if q[1:] == g})   # N1+(• g)

    def p(k, h):
        if k == 0:
            return 1.0 / vocab
        top = k == order
        c = {v: count(h + (v,), top) for v in range(vocab)}
        total = sum(c.values())
        if total == 0:
            return p(k - 1, h[1:])
        dk = discounts[k - 1]
        types = sum(1 for v in c if c[v] > 0)
        return max(c[w] - dk, 0) / total + dk * types / total * p(k - 1, h[1:])

    h = tuple(context[max(0, len(context) - order + 1):]) if order > 1 else ()
    return p(len(h) + 1, h)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_matches_a_literal_implementation(order):
    train = random_text(60, 3, seed=order).tolist()
    lm = KneserNeyLM(order, 4).fit(train)          # token 3 never occurs
    for context in [[], [0], [2, 1], [1, 1, 0], [3], [0, 3], [3, 3, 2]]:
        for w in range(4):
            assert lm.prob(context, w) == pytest.approx(
                reference_kn(train, order, 4, lm.discounts, context, w), abs=1e-14)


@pytest.mark.parametrize("order", [1, 2, 3, 4, 6])
def test_every_distribution_sums_to_one(order):
    vocab = 5
    x = random_text(400, vocab - 1, seed=order)    # the last token never occurs in training
    lm = KneserNeyLM(order, vocab).fit(x)
    seen = {tuple(x[i:i + order - 1].tolist()) for i in range(len(x) - order + 2)}
    contexts = sorted(seen) + [(vocab - 1,) * (order - 1), (0, vocab - 1, 1), (), (2,),
                               tuple(range(vocab)) * 2]
    for h in contexts:
        p = lm.next_distribution(list(h))
        assert p.dtype == torch.float64 and p.shape == (vocab,) and bool((p > 0).all())
        assert abs(p.sum().item() - 1.0) < 1e-12
        for w in range(vocab):
            assert lm.prob(list(h), w) == pytest.approx(p[w].item(), rel=1e-12)
    assert all(0 < dk <= 1 for dk in lm.discounts) and len(lm.discounts) == order


def markov_sample(transition, n, seed):
    """A sample of n tokens of a Markov chain of order m: transition (V,)*m + (V,) holds
    p(x_t | x_{t-m}, ..., x_{t-1}); starts from the first m draws uniform (the chain forgets it)."""
    rng = np.random.default_rng(seed)
    vocab, m = transition.shape[-1], transition.ndim - 1
    cum = np.cumsum(transition, -1)
    x = list(rng.integers(vocab, size=m))
    u = rng.random(n)
    for t in range(n - m):
        row = cum[tuple(x[-m:])]
        x.append(min(int(np.searchsorted(row, u[t], side="right")), vocab - 1))
    return torch.tensor(x)


def entropy(p, axis=-1):
    return -(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)).sum(axis)


def conditional_entropies(transition):
    """The exact H(X_t | k − 1 previous tokens), k = 1..m+1, of a stationary chain of order m:
    the stationary law π of the state (x_{t−m}, ..., x_{t−1}) from the state chain's eigenvector,
    then H(X_t | j previous) = H(last j+1 of the window) − H(last j)."""
    vocab, m = transition.shape[-1], transition.ndim - 1
    states = list(itertools.product(range(vocab), repeat=m))
    index = {s: i for i, s in enumerate(states)}
    q = np.zeros((len(states), len(states)))
    for s in states:
        for v in range(vocab):
            q[index[s], index[s[1:] + (v,)]] += transition[s][v]
    vals, vecs = np.linalg.eig(q.T)
    pi = np.real(vecs[:, np.argmin(np.abs(vals - 1))])
    pi = (pi / pi.sum()).reshape((vocab,) * m)
    window = pi[..., None] * transition                 # p(x_{t−m}, ..., x_t): (V,)*(m+1)
    h = [entropy(window.sum(tuple(range(m + 1 - j))).ravel()) if j <= m else
         entropy(window.ravel()) for j in range(1, m + 2)]       # H of the last j tokens
    return [h[0]] + [h[j] - h[j - 1] for j in range(1, m + 1)]


@pytest.mark.parametrize("m", [1, 2])
def test_held_out_nll_reaches_the_exact_conditional_entropies(m):
    vocab, n_train, n_test = 3, 150_000, 60_000
    rng = np.random.default_rng(m)
    transition = rng.dirichlet(np.full(vocab, 0.7), size=(vocab,) * m)   # (V,)*m + (V,)
    h_exact = conditional_entropies(transition)          # H(X_t | 0, 1, ..., m previous)
    train = markov_sample(transition, n_train, seed=10 + m)
    test = markov_sample(transition, n_test, seed=20 + m)
    nll = {k: KneserNeyLM(k, vocab).fit(train).nll(test) for k in range(1, m + 3)}
    # Tolerance: 5 standard errors of the held-out mean (per-token −log p under the true
    # conditional; the chain mixes within a few steps), plus the estimation excess of a model
    # with V^k parameters fitted to n_train tokens, about V^k / n_train nats.
    logp = np.log(transition)[tuple(test[i:len(test) - m + i].numpy() for i in range(m + 1))]
    se = logp.std() / math.sqrt(len(logp))
    for k in range(1, m + 3):
        target = h_exact[min(k - 1, m)]                  # beyond order m + 1: the entropy rate
        tol = 5 * se + vocab ** k / n_train
        assert abs(nll[k] - target) < tol, (k, nll[k], target, tol)
    # Sharper, paired on the same test tokens: the model of the right order m + 1 costs at most
    # about V^(m+1) / n_train nats more per token than the true chain (its KL excess), and not
    # less beyond the noise of the per-token difference.
    lm = KneserNeyLM(m + 1, vocab).fit(train)
    seq = test.tolist()
    log_q = np.array([math.log(lm.prob(seq[t - m:t], seq[t])) for t in range(m, len(seq))])
    diff = logp - log_q                                  # log p_true − log p_KN per token
    se_diff = diff.std() / math.sqrt(len(diff))
    assert -5 * se_diff < diff.mean() < vocab ** (m + 1) / n_train + 5 * se_diff, \
        (diff.mean(), se_diff)
    # the nll falls with the order up to m + 1, by the exact gaps, and no further
    for k in range(1, m + 1):
        assert h_exact[k - 1] - h_exact[k] > 20 * se     # the chain has real gaps to measure
        assert nll[k] > nll[k + 1]
    assert nll[m + 2] > nll[m + 1] - 5 * se


def test_additive_smoothing():
    lm = AdditiveLM(2, 4, alpha=1.0).fit(HAND)
    # context a: c(a b) = 3, c(a •) = 3 -> (c + 1) / (3 + 4)
    torch.testing.assert_close(lm.next_distribution([A]),
                               torch.tensor([1, 4, 1, 1], dtype=torch.float64) / 7)
    # unseen context: uniform; no context (first position): add-one unigram
    torch.testing.assert_close(lm.next_distribution([D]), torch.full((4,), 0.25,
                                                                     dtype=torch.float64))
    torch.testing.assert_close(lm.next_distribution([]),
                               torch.tensor([4, 4, 2, 1], dtype=torch.float64) / 11)
    x = random_text(300, 4, seed=3)
    for order in (1, 3):
        lm = AdditiveLM(order, 5, alpha=0.3).fit(x)
        for h in ([], [0], [1, 2], [4, 4]):
            assert abs(lm.next_distribution(h).sum().item() - 1) < 1e-12
    # nll by hand on a two-token sequence: −(log p(b) + log p(a | b)) / 2
    lm = AdditiveLM(2, 4).fit(HAND)
    assert lm.nll([B, A]) == pytest.approx(-(math.log(4 / 11) + math.log(2 / 6)) / 2)


def test_sampling():
    cycle = torch.arange(4).repeat(500)                 # 0 1 2 3 0 1 2 3 ...
    lm = KneserNeyLM(3, 4).fit(cycle)
    s1 = lm.sample(40, torch.Generator().manual_seed(0), prompt=[2, 3])
    s2 = lm.sample(40, torch.Generator().manual_seed(0), prompt=torch.tensor([2, 3]))
    assert s1.dtype == torch.int64 and s1.shape == (40,) and torch.equal(s1, s2)
    assert s1[:8].tolist() == [0, 1, 2, 3, 0, 1, 2, 3]  # p(next | context) ≈ 1 − 1/500 here
    assert lm.sample(0).shape == (0,)
    # an order-1 model's samples have its distribution (5 standard errors, 20,000 draws)
    x = random_text(3000, 5, seed=4)
    lm = KneserNeyLM(1, 5).fit(x)
    draws = lm.sample(20_000, torch.Generator().manual_seed(1))
    p = lm.next_distribution(None)
    freq = torch.bincount(draws, minlength=5).double() / len(draws)
    assert bool(((freq - p).abs() <= 5 * (p * (1 - p) / len(draws)).sqrt()).all())


def test_real_text_kneser_ney_beats_add_one_and_longer_contexts_help():
    text = "".join(pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics))
    chars = sorted(set(text))
    ids = torch.tensor([chars.index(c) for c in text[:120_000]])
    train, val = ids[:100_000], ids[100_000:]
    kn = {k: KneserNeyLM(k, len(chars)).fit(train).nll(val) for k in (1, 3, 5)}
    add1 = {k: AdditiveLM(k, len(chars)).fit(train).nll(val) for k in (1, 3, 5)}
    assert kn[5] < kn[3] < kn[1]
    assert kn[3] < add1[3] and kn[5] < add1[5] - 0.3    # add-one collapses at long contexts
    assert add1[5] > add1[3]


def test_bad_input():
    with pytest.raises(ValueError, match="order"):
        KneserNeyLM(0, 4)
    with pytest.raises(ValueError, match="vocab_size"):
        KneserNeyLM(2, 0)
    for bad in (0.0, 1.5, -0.1, True, [0.5, 0.5, 0.5]):
        with pytest.raises(ValueError, match="discount"):
            KneserNeyLM(2, 4, discount=bad)
    with pytest.raises(ValueError, match="alpha"):
        AdditiveLM(2, 4, alpha=0)
    lm = KneserNeyLM(2, 4)
    with pytest.raises(ValueError, match="not fitted"):
        lm.next_distribution([0])
    with pytest.raises(ValueError, match="empty"):
        lm.fit([])
    with pytest.raises(ValueError, match="empty"):
        lm.fit(torch.tensor([], dtype=torch.int64))
    with pytest.raises(ValueError, match="at least order"):
        lm.fit([1])
    with pytest.raises(ValueError, match=r"0\.\.3"):
        lm.fit([0, 1, 4])
    with pytest.raises(ValueError, match=r"0\.\.3"):
        lm.fit(torch.tensor([0, -1, 2]))
    with pytest.raises(ValueError, match="integer"):
        lm.fit(torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="integer"):
        lm.fit(torch.zeros(2, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="integers"):
        lm.fit([0, 1.5])
    with pytest.raises(ValueError, match="integer"):
        lm.fit("abc")
    lm.fit(HAND)
    with pytest.raises(ValueError, match=r"0\.\.3"):
        lm.nll([0, 5])
    with pytest.raises(ValueError, match="empty"):
        lm.nll([])
    with pytest.raises(ValueError, match=r"0\.\.3"):
        lm.next_distribution([7])
    with pytest.raises(ValueError, match="token"):
        lm.prob([0], 4)
    with pytest.raises(ValueError, match="n must"):
        lm.sample(-1)
    with pytest.raises(ValueError, match="prompt"):
        lm.sample(3, prompt=[9])
