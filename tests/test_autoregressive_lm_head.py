"""Tests for autoregressive.lm_head: tying (one matrix, counted once), the readout equals
norm(h) Eᵀ, RMSNorm against its formula, token checks, and bad input."""

import pytest
import torch

from autoregressive import LMHead, RMSNorm, check_tokens


def test_tied_readout_is_the_embedding_transposed():
    torch.manual_seed(0)
    head = LMHead(11, 8)
    assert head.head.weight is head.tok_emb.weight
    assert sum(p.numel() for p in head.parameters()) == 11 * 8 + 2 * 8  # E, LayerNorm g and b
    h = torch.randn(3, 5, 8)
    expected = torch.nn.functional.layer_norm(h, (8,)) @ head.tok_emb.weight.T
    torch.testing.assert_close(head(h), expected)


def test_untied_has_its_own_readout():
    head = LMHead(11, 8, tie_weights=False, norm="none")
    assert head.head.weight is not head.tok_emb.weight
    h = torch.randn(2, 8)
    torch.testing.assert_close(head(h), h @ head.head.weight.T)


def test_rms_norm_formula():
    torch.manual_seed(1)
    norm = RMSNorm(6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
    x = torch.randn(4, 6, dtype=torch.float64)
    norm = norm.double()
    expected = x / (x.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt() * norm.weight
    torch.testing.assert_close(norm(x), expected)
    head = LMHead(5, 6, norm="rms")
    assert isinstance(head.ln_f, RMSNorm)


def test_embed_checks_tokens():
    head = LMHead(5, 4)
    assert head.embed(torch.tensor([[0, 4]])).shape == (1, 2, 4)
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        head.embed(torch.tensor([[0, 5]]))
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        check_tokens(torch.tensor([[-1]]), 5)
    with pytest.raises(ValueError, match="int64"):
        head.embed(torch.tensor([[0.0, 1.0]]))
    with pytest.raises(ValueError, match="int64"):
        head.embed(torch.tensor([0, 1]))


@pytest.mark.parametrize("kw", [dict(vocab_size=1, d=4), dict(vocab_size=5, d=0),
                                dict(vocab_size=5, d=4, norm="batch")])
def test_bad_arguments(kw):
    with pytest.raises(ValueError):
        LMHead(**kw)


def test_bad_hidden_width():
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        LMHead(5, 4)(torch.randn(2, 3))
