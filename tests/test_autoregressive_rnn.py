"""Tests for autoregressive.rnn: the written-out RNN, LSTM and GRU cells and stacks against
torch.nn's with copied weights (float64, both ways, multi-layer, with and without bias),
gradcheck of each cell, the fused and written-out RecurrentLM as one function, the LM protocol
(chunks through the cache equal the full pass; decoding with and without the cache), a short
training run, and bad input."""

import pytest
import torch
from torch import nn

from autoregressive import generate, lm_step
from autoregressive.rnn import (
    GRUCell,
    LSTMCell,
    Recurrent,
    RecurrentCache,
    RecurrentLM,
    RNNCell,
)
from utils.training import fit

pytestmark = pytest.mark.usefixtures("one_thread")

F64 = torch.float64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=gen(seed), dtype=F64)


CELLS = [
    ("rnn-tanh", lambda i, h, **kw: RNNCell(i, h, **kw), lambda i, h, **kw: nn.RNNCell(i, h, **kw)),
    ("rnn-relu", lambda i, h, **kw: RNNCell(i, h, nonlinearity="relu", **kw),
     lambda i, h, **kw: nn.RNNCell(i, h, nonlinearity="relu", **kw)),
    ("lstm", LSTMCell, nn.LSTMCell),
    ("gru", GRUCell, nn.GRUCell),
]


@pytest.mark.parametrize("name,ours,theirs", CELLS, ids=[c[0] for c in CELLS])
@pytest.mark.parametrize("bias", [True, False])
def test_cells_equal_torch_over_a_sequence(name, ours, theirs, bias):
    torch.manual_seed(0)
    ref = theirs(5, 7, bias=bias).double()
    cell = ours(5, 7, bias=bias).double()
    assert [n for n, _ in cell.named_parameters()] == [n for n, _ in ref.named_parameters()]
    cell.load_state_dict(ref.state_dict())                   # strict: same names and shapes
    x = randn(12, 3, 5)                                      # T = 12 steps, B = 3
    lstm = name == "lstm"
    s_ref = (randn(3, 7, seed=1), randn(3, 7, seed=2)) if lstm else randn(3, 7, seed=1)
    s = s_ref
    for x_t in x:
        s, s_ref = cell(x_t, s), ref(x_t, s_ref)
        for a, b in zip(s if lstm else (s,), s_ref if lstm else (s_ref,)):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # the zero default state is torch's too
    for a, b in zip(cell(x[0]) if lstm else (cell(x[0]),), ref(x[0]) if lstm else (ref(x[0]),)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_parameter_shapes_and_init_match_torch():
    for ours, theirs, g in [(RNNCell, nn.RNNCell, 1), (LSTMCell, nn.LSTMCell, 4),
                            (GRUCell, nn.GRUCell, 3)]:
        cell, ref = ours(5, 8), theirs(5, 8)
        for (n, p), (m, q) in zip(cell.named_parameters(), ref.named_parameters()):
            assert n == m and p.shape == q.shape
        assert cell.weight_ih.shape == (g * 8, 5) and cell.weight_hh.shape == (g * 8, 8)
        for p in cell.parameters():                           # U(-1/sqrt(H), 1/sqrt(H))
            assert p.abs().max() <= 8 ** -0.5 and p.abs().max() > 0.5 * 8 ** -0.5


TORCH_STACKS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("layers,bias", [(1, True), (3, True), (2, False)])
def test_stack_equals_torch_multilayer(kind, layers, bias):
    torch.manual_seed(1)
    ref = TORCH_STACKS[kind](4, 6, layers, bias=bias, batch_first=True).double()
    ours = Recurrent(kind, 4, 6, layers, bias=bias).double()
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
    ours.load_state_dict(ref.state_dict())
    x = randn(3, 9, 4)
    h0 = randn(layers, 3, 6, seed=1)
    s0 = (h0, randn(layers, 3, 6, seed=2)) if kind == "lstm" else h0
    for state in (None, s0):
        y, s = ours(x, state)
        y_ref, s_ref = ref(x, state)
        torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
        for a, b in zip(s if kind == "lstm" else (s,), s_ref if kind == "lstm" else (s_ref,)):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # and the other way: our weights into torch's module
    ours2 = Recurrent(kind, 4, 6, layers, bias=bias).double()
    ref.load_state_dict(ours2.state_dict())
    torch.testing.assert_close(ours2(x)[0], ref(x)[0], rtol=1e-12, atol=1e-12)


def test_stack_continues_a_sequence_across_calls():
    torch.manual_seed(2)
    rnn = Recurrent("lstm", 3, 5, 2).double()
    x = randn(2, 10, 3)
    y, s = rnn(x)
    y1, s1 = rnn(x[:, :4])
    y2, s2 = rnn(x[:, 4:], s1)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s2[1], s[1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cell_cls", [RNNCell, LSTMCell, GRUCell])
def test_gradcheck_cells(cell_cls):
    torch.manual_seed(3)
    cell = cell_cls(3, 4).double()
    x = randn(2, 3).requires_grad_()
    h = randn(2, 4, seed=1).requires_grad_()
    c = randn(2, 4, seed=2).requires_grad_()
    names = [n for n, _ in cell.named_parameters()]

    def f(x, h, c, *params):
        out = torch.func.functional_call(cell, dict(zip(names, params)),
                                         (x, (h, c) if cell_cls is LSTMCell else h))
        return out if cell_cls is LSTMCell else (out,)

    params = [p.detach().clone().requires_grad_() for p in cell.parameters()]
    assert torch.autograd.gradcheck(f, (x, h, c, *params))


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_fused_and_written_out_lm_are_one_function(kind):
    torch.manual_seed(4)
    fused = RecurrentLM(11, 8, kind, layers=2, embed_dim=5, fused=True).double()
    ours = RecurrentLM(11, 8, kind, layers=2, embed_dim=5).double()
    ours.load_state_dict(fused.state_dict())
    idx = torch.randint(11, (3, 13), generator=gen(5))
    torch.testing.assert_close(ours(idx), fused(idx), rtol=1e-11, atol=1e-11)
    # gradients too (what training sees)
    fused(idx).logsumexp(-1).sum().backward()
    ours(idx).logsumexp(-1).sum().backward()
    for (n, p), (_, q) in zip(ours.named_parameters(), fused.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-10, atol=1e-10, msg=n)


@pytest.mark.parametrize("kind,fused", [("lstm", False), ("lstm", True), ("gru", False),
                                        ("rnn", True)])
def test_cache_chunks_equal_full_pass(kind, fused):
    torch.manual_seed(5)
    model = RecurrentLM(9, 6, kind, layers=2, fused=fused).double()
    assert model.block_size is None and model.vocab_size == 9
    idx = torch.randint(9, (4, 17), generator=gen(6))
    full = model(idx)
    assert full.shape == (4, 17, 9)
    cache = model.init_cache(4)
    assert isinstance(cache, RecurrentCache) and cache.length == 0 and cache.state is None
    parts, t = [], 0
    for n in (1, 5, 1, 10):
        parts.append(model(idx[:, t:t + n], cache=cache))
        t += n
        assert cache.length == t
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-12, atol=1e-12)


def test_generate_with_and_without_cache_agree():
    torch.manual_seed(6)
    model = RecurrentLM(7, 10, "lstm").eval()
    prompt = torch.tensor([[1, 2, 3], [4, 5, 6]])
    a = generate(model, prompt, 20, greedy=True, kv_cache=True)
    b = generate(model, prompt, 20, greedy=True, kv_cache=False)
    assert a.shape == (2, 23) and torch.equal(a, b) and torch.equal(a[:, :3], prompt)


def test_lstm_lm_learns_a_sequence_that_needs_memory():
    # "aaab" repeated: after "aa" the next letter is "a" or "b" depending on one more step back,
    # so a model must remember 3 tokens; a unigram model has 0.56 nats, a perfect one 0
    torch.manual_seed(7)
    stream = torch.tensor([0, 0, 0, 1] * 64)
    model = RecurrentLM(2, 16, "lstm")
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)

    def batch(s):
        o = torch.randint(4, (8,), generator=gen(s))
        return stream[o[:, None] + torch.arange(16)], stream[o[:, None] + torch.arange(1, 17)]

    result = fit(lm_step(model, opt), batch, 150, models=model, progress=False, guard=False,
                 device="cpu")
    assert result.history["loss"][0] > 0.4
    x, y = batch(10_000)
    with torch.no_grad():
        nll = torch.nn.functional.cross_entropy(model(x)[:, 4:].flatten(0, 1), y[:, 4:].flatten())
    assert nll < 0.02


def test_recurrent_lm_bad_input():
    with pytest.raises(ValueError, match="kind"):
        RecurrentLM(10, 8, kind="transformer")
    with pytest.raises(ValueError, match="hidden"):
        RecurrentLM(10, 0)
    with pytest.raises(ValueError, match="vocab_size"):
        RecurrentLM(1, 8)
    with pytest.raises(ValueError, match="layers"):
        RecurrentLM(10, 8, layers=0)
    model = RecurrentLM(10, 8)
    with pytest.raises(ValueError, match="int64"):
        model(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        model(torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        model(torch.zeros(2, 0, dtype=torch.int64))
    with pytest.raises(ValueError, match="0..9"):
        model(torch.tensor([[1, 10]]))
    with pytest.raises(ValueError, match="0..9"):
        model(torch.tensor([[-1, 2]]))
    with pytest.raises(ValueError, match="holds 3 sequences but idx has 2"):
        model(torch.zeros(2, 4, dtype=torch.int64), cache=model.init_cache(3))
    with pytest.raises(ValueError, match="init_cache"):
        model(torch.zeros(2, 4, dtype=torch.int64), cache=object())
    with pytest.raises(ValueError, match="batch_size"):
        model.init_cache(0)


def test_cells_and_stack_bad_input():
    with pytest.raises(ValueError, match="hidden_size"):
        LSTMCell(3, 0)
    with pytest.raises(ValueError, match="nonlinearity"):
        RNNCell(3, 4, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="kind"):
        Recurrent("lstm2", 3, 4)
    with pytest.raises(ValueError, match="kind='rnn' only"):
        Recurrent("gru", 3, 4, nonlinearity="relu")
    cell = LSTMCell(3, 4)
    with pytest.raises(ValueError, match=r"\(B, I\) with I = 3"):
        cell(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="pair"):
        cell(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"c must be a torch.float32 tensor of shape \(2, 4\)"):
        cell(torch.zeros(2, 3), (torch.zeros(2, 4), torch.zeros(1, 4)))
    with pytest.raises(ValueError, match="h must be"):
        GRUCell(3, 4)(torch.zeros(2, 3), torch.zeros(2, 4, dtype=F64))
    rnn = Recurrent("rnn", 3, 4, layers=2)
    with pytest.raises(ValueError, match=r"\(B, T, I\)"):
        rnn(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"shape \(2, 2, 4\)"):
        rnn(torch.zeros(2, 5, 3), torch.zeros(1, 2, 4))
    with pytest.raises(ValueError, match="detach_every"):
        rnn(torch.zeros(2, 5, 3), detach_every=0)
