"""Tests for alignment.reward_model: the hidden states read from the GPT's readout, the reward
read at the last real token (padding after it changes nothing), a features callable, and the
pairwise loss training it on a toy preference."""

import pytest
import torch
from torch import nn

from alignment import (
    RewardModel,
    lm_hidden_states,
    lm_readout,
    pairwise_loss,
    preference_accuracy,
)
from autoregressive import GPT, GPTConfig, LMHead

V, T = 5, 8


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def tiny_gpt(seed=0, **kwargs):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=V, block_size=T, n_layer=1, n_head=2, n_embd=16,
                         **kwargs))


class CumsumLM(nn.Module):
    """A causal toy LM whose readout sits inside an LMHead (as in ssm's S4 and Mamba LMs)."""

    def __init__(self):
        super().__init__()
        self.lm = LMHead(V, 6)
        self.vocab_size = V

    def forward(self, idx):
        return self.lm(self.lm.embed(idx).cumsum(1))


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_hidden_states_are_the_readout_input(norm):
    gpt = tiny_gpt(norm=norm).eval()
    idx = torch.randint(V, (3, T))
    h = lm_hidden_states(gpt, idx)
    assert h.shape == (3, T, 16)
    torch.testing.assert_close(gpt.head(h), gpt(idx))
    # the same, by hand: embeddings + positions -> blocks -> final norm
    x = gpt.tok_emb(idx) + gpt.pos_emb(T, 0)
    for block in gpt.blocks:
        x = block(x)
    torch.testing.assert_close(h, gpt.ln_f(x))
    assert not gpt.head._forward_pre_hooks                    # the hook was removed
    toy = CumsumLM()
    assert lm_readout(toy) is toy.lm.head
    torch.testing.assert_close(lm_hidden_states(toy, idx), toy.lm.ln_f(toy.lm.embed(idx).cumsum(1)))


def test_reward_is_read_at_the_last_real_token():
    rm = RewardModel(tiny_gpt(seed=1), 16).eval()
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(V, (4, T), generator=g)
    lengths = torch.tensor([1, 3, 5, 8])
    r = rm(idx, lengths)
    assert r.shape == (4,) and r.dtype == torch.float32
    h = lm_hidden_states(rm.backbone, idx)
    by_hand = torch.stack([rm.score(h[b, lengths[b] - 1]).squeeze() for b in range(4)])
    torch.testing.assert_close(r, by_hand)
    # changing the tokens after each length (the padding) leaves the reward unchanged
    other = idx.clone()
    for b, n in enumerate(lengths.tolist()):
        other[b, n:] = (other[b, n:] + 1 + torch.randint(V - 1, (T - n,), generator=g)) % V
    assert bool((other[:3] != idx[:3]).any())
    torch.testing.assert_close(rm(other, lengths), r)
    # ... while a change at the last real token moves it
    moved = idx.clone()
    moved[torch.arange(4), lengths - 1] = (idx[torch.arange(4), lengths - 1] + 1) % V
    assert bool(((rm(moved, lengths) - r).abs() > 1e-6).all())
    # no lengths: the last position
    torch.testing.assert_close(rm(idx), rm(idx, torch.full((4,), T)))


def test_features_callable_backbone():
    emb = nn.Embedding(V, 3)
    rm = RewardModel(emb, 3, features=lambda idx: emb(idx).cumsum(1))
    idx = torch.randint(V, (2, T))
    lengths = torch.tensor([2, 6])
    expected = rm.score(emb(idx).cumsum(1)[torch.arange(2), lengths - 1]).squeeze(-1)
    torch.testing.assert_close(rm(idx, lengths), expected)
    assert any(p is emb.weight for p in rm.parameters())


def toy_preferences(n, seed):
    """Pairs of random sequences of random lengths; the gold reward is the fraction of the
    token 1 among the real tokens; the pair's winner is the higher one (ties dropped)."""
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randint(V, (n, T), generator=g), torch.randint(V, (n, T), generator=g)
    la, lb = torch.randint(2, T + 1, (n,), generator=g), torch.randint(2, T + 1, (n,), generator=g)
    pos = torch.arange(T)

    def gold(x, n_):
        return ((x == 1) & (pos < n_[:, None])).double().sum(1) / n_

    ga, gb = gold(a, la), gold(b, lb)
    keep = ga != gb
    a_wins = (ga > gb)[keep]
    a, b, la, lb = a[keep], b[keep], la[keep], lb[keep]
    chosen = torch.where(a_wins[:, None], a, b)
    rejected = torch.where(a_wins[:, None], b, a)
    return chosen, rejected, torch.where(a_wins, la, lb), torch.where(a_wins, lb, la)


def test_the_pairwise_loss_trains_the_reward_model():
    rm = RewardModel(tiny_gpt(seed=2), 16)
    train, test = toy_preferences(256, 0), toy_preferences(256, 1)

    def loss_and_acc(data):
        c, r, lc, lr = data
        rc, rr = rm(c, lc), rm(r, lr)
        return pairwise_loss(rc, rr), preference_accuracy(rc, rr)

    with torch.no_grad():
        first, _ = loss_and_acc(train)
    assert float(first) == pytest.approx(0.6931, abs=0.02)   # a near-zero head: ≈ log 2
    opt = torch.optim.Adam(rm.parameters(), lr=3e-3)
    for _ in range(60):
        loss, _ = loss_and_acc(train)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        last, _ = loss_and_acc(train)
        _, acc = loss_and_acc(test)
    assert float(last) < 0.5 * float(first)
    assert acc > 0.85                                         # chance is 1/2 on held-out pairs


@pytest.mark.parametrize("fn, match", [
    (lambda: RewardModel(nn.Linear(3, 3), 3), "no readout"),
    (lambda: RewardModel(tiny_gpt(), 8), "readout takes 16"),
    (lambda: RewardModel(tiny_gpt(), 0), "d_model"),
    (lambda: RewardModel("gpt", 16), "nn.Module"),
    (lambda: RewardModel(nn.Linear(3, 3), 3, features=3), "callable"),
    (lambda: RewardModel(tiny_gpt(), 16)(torch.zeros(2, 3)), "int64"),
    (lambda: RewardModel(tiny_gpt(), 16)(torch.zeros(2, 3, dtype=torch.int64),
                                         torch.tensor([0, 3])), r"1\.\.3"),
    (lambda: RewardModel(tiny_gpt(), 16)(torch.zeros(2, 3, dtype=torch.int64),
                                         torch.tensor([4, 3])), r"1\.\.3"),
    (lambda: RewardModel(tiny_gpt(), 16)(torch.zeros(2, 3, dtype=torch.int64),
                                         torch.tensor([3])), r"\(2,\)"),
    (lambda: RewardModel(nn.Identity(), 4, features=lambda idx: torch.zeros(2, 3, 5))(
        torch.zeros(2, 3, dtype=torch.int64)), r"\(B, T, d\)"),
])
def test_bad_input(fn, match):
    with pytest.raises(ValueError, match=match):
        fn()
