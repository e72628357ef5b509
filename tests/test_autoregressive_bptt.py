"""Tests for autoregressive.bptt: gradient norms through time against (Wᵀ)^{T−t} g for a linear
RNN and against the explicit product of Jacobians for a tanh RNN, the contraction bound
||∂L/∂h_t|| ≤ ||W||^{T−t} ||g||, the LSTM's forget-gate path; truncation (the gradient of the
last output reaches back exactly k steps, zero beyond); the stream layout; tbptt_step carrying
the state (equal to one long pass) while its gradients stop at the chunk boundary; bad input."""

import pytest
import torch

from autoregressive.bptt import StreamChunk, StreamChunks, gradient_norms_through_time, tbptt_step
from autoregressive.rnn import GRUCell, LSTMCell, Recurrent, RecurrentLM, RNNCell
from utils.training import fit

pytestmark = pytest.mark.usefixtures("one_thread")

F64 = torch.float64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=gen(seed), dtype=F64)


def test_linear_rnn_norms_are_powers_of_w_transpose():
    torch.manual_seed(0)
    cell = RNNCell(3, 5, nonlinearity="identity").double()
    x, g = randn(2, 15, 3), randn(2, 5, seed=1)
    norms = gradient_norms_through_time(cell, x, g=g)
    assert norms.shape == (2, 15)
    w_t = cell.weight_hh.detach().T
    expected = torch.stack([(torch.linalg.matrix_power(w_t, 15 - t) @ g.T).norm(dim=0)
                            for t in range(1, 16)], dim=1)
    torch.testing.assert_close(norms, expected, rtol=1e-12, atol=1e-14)


def test_tanh_rnn_norms_are_the_product_of_jacobians():
    torch.manual_seed(1)
    cell = RNNCell(2, 4).double()
    x = randn(1, 8, 2)
    g = randn(1, 4, seed=2)
    norms = gradient_norms_through_time(cell, x, g=g)
    with torch.no_grad():                      # J_s = diag(1 − h_s²) W_hh, h_s from a forward run
        h, hs = torch.zeros(1, 4, dtype=F64), []
        for x_t in x.unbind(1):
            h = cell(x_t, h)
            hs.append(h[0])
        v, expected = g[0], [g[0].norm()]
        for s in range(7, 0, -1):               # ∂L/∂h_{s-1} = J_sᵀ ∂L/∂h_s
            v = (torch.diag(1 - hs[s] ** 2) @ cell.weight_hh).T @ v
            expected.append(v.norm())
    torch.testing.assert_close(norms[0], torch.stack(expected[::-1]), rtol=1e-12, atol=1e-14)


def test_contraction_bound_and_lstm_forget_gate():
    torch.manual_seed(2)
    h, t = 16, 40
    x = 0.5 * randn(4, t, 3)
    q, _ = torch.linalg.qr(randn(h, h, seed=3))
    rnn = RNNCell(3, h).double()
    with torch.no_grad():
        rnn.weight_hh.copy_(0.8 * q)                       # every singular value 0.8
    norms = gradient_norms_through_time(rnn, x)
    bound = 0.8 ** torch.arange(t - 1, -1, -1, dtype=F64)  # ||g|| = 1
    assert (norms <= bound + 1e-12).all()
    assert norms[:, 0].max() < 1e-3                         # vanished over 39 steps
    lstm = LSTMCell(3, h).double()
    with torch.no_grad():
        lstm.bias_ih[h:2 * h] = 5.0                         # f ≈ σ(5) = 0.993: remember
        lstm.bias_hh[h:2 * h] = 0.0
    lstm_norms = gradient_norms_through_time(lstm, x)
    assert (lstm_norms[:, 0] > 100 * norms[:, 0]).all()


def test_gru_and_lstm_last_norm_is_g():
    for cell in (GRUCell(2, 3).double(), LSTMCell(2, 3).double()):
        norms = gradient_norms_through_time(cell, randn(2, 4, 2), g=randn(2, 3, seed=4))
        torch.testing.assert_close(norms[:, -1], randn(2, 3, seed=4).norm(dim=-1))


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_detach_every_k_cuts_the_gradient_after_k_steps(kind):
    torch.manual_seed(3)
    k, t = 4, 11
    rnn = Recurrent(kind, 2, 5, layers=2).double()
    x = randn(3, t, 2).requires_grad_()
    y, _ = rnn(x, detach_every=k)
    torch.testing.assert_close(y, rnn(x)[0], rtol=0, atol=0)   # the forward pass is unchanged
    (grad,) = torch.autograd.grad(y[:, -1].sum(), x, retain_graph=True)
    reach = grad.abs().sum((0, 2)) > 0
    # h is detached at t = 4 and 8 (0-based steps), so the last output (step 10) sees steps 8-10
    assert reach.tolist() == [False] * 8 + [True] * 3
    (grad,) = torch.autograd.grad(y[:, 7].sum(), x)           # the last step of a chunk
    reach = grad.abs().sum((0, 2)) > 0
    assert reach.tolist() == [False] * 4 + [True] * k + [False] * 3  # exactly k steps back
    (grad,) = torch.autograd.grad(rnn(x)[0][:, 7].sum(), x)   # untruncated: all the way
    assert (grad.abs().sum((0, 2))[:8] > 0).all()


def test_stream_chunks_layout():
    tokens = torch.arange(103)
    chunks = StreamChunks(tokens, batch_size=4, k=5)
    assert chunks.stream_length == 25 and len(chunks) == 5
    c0, c1 = chunks(0), chunks(1)
    assert isinstance(c0, StreamChunk) and c0.first and not c1.first
    assert c0.x.shape == (4, 5) and torch.equal(c0.x[:, 0], torch.tensor([0, 25, 50, 75]))
    assert torch.equal(c1.x[:, 0], c0.x[:, -1] + 1)           # chunk 1 continues chunk 0
    assert torch.equal(c0.y, c0.x + 1)                        # targets: the next token
    assert torch.equal(chunks(5).x, c0.x) and chunks(5).first  # step 5 starts a new pass
    assert torch.equal(chunks(4).y[:, -1], torch.tensor([25, 50, 75, 100]))


def test_tbptt_step_carries_the_state_and_truncates_the_gradient():
    torch.manual_seed(4)
    model = RecurrentLM(7, 6, "lstm").double()
    tokens = torch.randint(7, (2 * 3 * 4 + 1,), generator=gen(5))
    chunks = StreamChunks(tokens, batch_size=2, k=4)           # 3 chunks of 4
    opt = torch.optim.SGD(model.parameters(), lr=0.0)          # weights stay: compare passes
    step = tbptt_step(model, opt, clip=None)
    step(chunks(0))
    full = model.init_cache(2)
    model(torch.cat([chunks(0).x, chunks(1).x], 1), cache=full)
    out = step(chunks(1))
    # the carried state after two chunks is the state of one pass over both
    torch.testing.assert_close(step.cache.state[1], full.state[1], rtol=1e-12, atol=1e-12)
    assert step.cache.length == 8 and not step.cache.state[0].requires_grad
    # chunk 1's gradient: its loss from the carried state, taken as a constant
    grads = [p.grad.clone() for p in model.parameters()]
    c0 = model.init_cache(2)
    model(chunks(0).x, cache=c0)
    c0.detach_()
    model.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(chunks(1).x, cache=c0).flatten(0, 1),
                                             chunks(1).y.flatten())
    loss.backward()
    assert out["loss"] == pytest.approx(loss.item(), rel=1e-12)
    for g, p in zip(grads, model.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=1e-12, atol=1e-12)
    # untruncated, the gradient would differ (it would reach into chunk 0)
    model.zero_grad()
    y_all = model(torch.cat([chunks(0).x, chunks(1).x], 1))[:, 4:]
    torch.nn.functional.cross_entropy(y_all.flatten(0, 1), chunks(1).y.flatten()).backward()
    assert not torch.allclose(model.embed.weight.grad, grads[0])
    step(chunks(2))
    step(chunks(3))                                          # chunk 0 again: a fresh state
    assert step.cache.length == 4


def test_tbptt_trains_with_fit():
    torch.manual_seed(5)
    tokens = torch.tensor([0, 1, 2, 1] * 200)
    model = RecurrentLM(3, 12, "gru")
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    chunks = StreamChunks(tokens, batch_size=4, k=10)
    result = fit(tbptt_step(model, opt), chunks, 60, models=model, progress=False, guard=False,
                 device="cpu")
    assert result.history["loss"][0] > 0.8 and result.history["loss"][-1] < 0.05


def test_bad_input():
    with pytest.raises(ValueError, match="RNNCell, LSTMCell or GRUCell"):
        gradient_norms_through_time(torch.nn.Linear(2, 2), torch.zeros(1, 3, 2))
    cell = RNNCell(2, 3)
    with pytest.raises(ValueError, match=r"\(B, T, 2\)"):
        gradient_norms_through_time(cell, torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"g must be a tensor of shape \(1, 3\)"):
        gradient_norms_through_time(cell, torch.zeros(1, 4, 2), g=torch.zeros(3))
    frozen = RNNCell(2, 3).requires_grad_(False)
    with pytest.raises(ValueError, match="require gradients"):
        gradient_norms_through_time(frozen, torch.zeros(1, 4, 2))
    with pytest.raises(ValueError, match="1-D int64"):
        StreamChunks(torch.zeros(10), 2, 3)
    with pytest.raises(ValueError, match="shorter than one chunk"):
        StreamChunks(torch.arange(10), 4, 3)
    with pytest.raises(ValueError, match="k must be"):
        StreamChunks(torch.arange(10), 2, 0)
    model = RecurrentLM(5, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="clip"):
        tbptt_step(model, opt, clip=0)
    with pytest.raises(ValueError, match="StreamChunk"):
        tbptt_step(model, opt)((torch.zeros(2, 3, dtype=torch.int64),) * 2)
