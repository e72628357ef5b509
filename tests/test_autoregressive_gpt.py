"""Tests for autoregressive.gpt: causality measured by autograd, the KV cache equal to the full
pass for every position encoding, weight tying, the GPT-2 parameter count formula, post-LN,
config validation, and that a small GPT learns a deterministic sequence."""

import pytest
import torch

from autoregressive import GPT, GPTConfig, lm_loss

pytestmark = pytest.mark.usefixtures("one_thread")


def small(**kw):
    base = dict(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=16)
    base.update(kw)
    torch.manual_seed(0)
    return GPT(GPTConfig(**base))


@pytest.mark.parametrize("positions", ["learned", "sinusoidal", "rotary", "none"])
def test_causal_by_autograd(positions):
    model = small(positions=positions).double()
    idx = torch.randint(11, (1, 9), generator=torch.Generator().manual_seed(1))
    emb = model.tok_emb(idx).detach().requires_grad_()
    # run the blocks on embeddings we can differentiate through
    x = emb
    if model.pos_emb is not None:
        x = x + model.pos_emb(9)
    elif positions == "sinusoidal":
        from autoregressive import sinusoidal_positions
        x = x + sinusoidal_positions(9, 16, dtype=x.dtype)
    for block in model.blocks:
        x = block(x, rotary=model.rotary)
    out = model.head(model.ln_f(x))
    for t in range(9):
        (g,) = torch.autograd.grad(out[0, t].sum(), emb, retain_graph=True)
        seen = g[0].abs().sum(-1) > 0
        assert seen[:t + 1].all() and not seen[t + 1:].any()


@pytest.mark.parametrize("positions,norm", [("learned", "pre"), ("sinusoidal", "pre"),
                                            ("rotary", "pre"), ("none", "pre"),
                                            ("learned", "post")])
def test_kv_cache_equals_full_pass(positions, norm):
    model = small(positions=positions, norm=norm).double().eval()
    idx = torch.randint(11, (3, 12), generator=torch.Generator().manual_seed(2))
    full = model(idx)
    cache = model.init_cache(3)
    pieces = [model(idx[:, a:b], cache=cache) for a, b in [(0, 5), (5, 6), (6, 7), (7, 12)]]
    assert cache.length == 12
    assert torch.allclose(torch.cat(pieces, 1), full, atol=1e-10)


def test_weight_tying_and_parameter_count():
    model = small()
    assert model.head.weight is model.tok_emb.weight
    c = model.config
    d, v, t, n = c.n_embd, c.vocab_size, c.block_size, c.n_layer
    per_block = 12 * d * d + 13 * d        # attention 4d²+4d, MLP 8d²+5d, two LayerNorms 4d
    assert model.num_parameters() == v * d + t * d + n * per_block + 2 * d
    assert model.num_parameters(non_embedding=True) == n * per_block + 2 * d
    untied = small(tie_weights=False)
    assert untied.num_parameters() == model.num_parameters() + v * d


def test_learns_a_deterministic_sequence():
    """A repeating pattern of period 5 is learned to near-zero loss: the model can copy."""
    model = small(block_size=20)
    pattern = torch.tensor([3, 1, 4, 1, 5] * 5)
    x, y = pattern[None, :20], pattern[None, 1:21]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = lm_loss(model(x), y).item()
    for _ in range(150):
        opt.zero_grad()
        loss = lm_loss(model(x), y)
        loss.backward()
        opt.step()
    assert first > 2.0 and loss.item() < 0.05


def test_attention_weights_are_kept_and_causal():
    model = small()
    model(torch.zeros(1, 6, dtype=torch.int64), need_weights=True)
    w = model.blocks[0].attn.last_weights
    assert w.shape == (1, 2, 6, 6)
    assert float(w.triu(1).abs().max()) == 0.0


def test_bad_input():
    with pytest.raises(ValueError, match="n_head must divide"):
        GPTConfig(vocab_size=5, n_embd=10, n_head=3)
    with pytest.raises(ValueError, match="positions"):
        GPTConfig(vocab_size=5, positions="alibi")
    with pytest.raises(ValueError, match="norm"):
        GPTConfig(vocab_size=5, norm="sandwich")
    with pytest.raises(ValueError, match="vocab_size"):
        GPTConfig(vocab_size=0)
    with pytest.raises(ValueError, match="even head width"):
        GPTConfig(vocab_size=5, n_embd=6, n_head=2, positions="rotary")
    with pytest.raises(ValueError, match="GPTConfig"):
        GPT({"vocab_size": 5})
    model = small()
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 17, dtype=torch.int64))
    with pytest.raises(ValueError, match="int64"):
        model(torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"\[0, 11\)"):
        model(torch.full((1, 3), 11))
    cache = model.init_cache(2)
    with pytest.raises(ValueError, match="batch 2"):
        model(torch.zeros(1, 3, dtype=torch.int64), cache=cache)
    model(torch.zeros(2, 10, dtype=torch.int64), cache=cache)
    with pytest.raises(ValueError, match="10 cached"):
        model(torch.zeros(2, 7, dtype=torch.int64), cache=cache)
