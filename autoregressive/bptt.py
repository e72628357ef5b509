"""Backpropagation through time: how far gradients reach back in a recurrent network, and the
truncated version that trains on a long stream in chunks.

Unrolled over T steps, h_t = f(h_{t-1}, x_t) is a T-layer network with shared weights, and for a
loss L_T = ℓ(h_T) at the last step the chain rule gives

    ∂L_T/∂h_t = (∂h_{t+1}/∂h_t)ᵀ ⋯ (∂h_T/∂h_{T-1})ᵀ ∂L_T/∂h_T = J_{t+1}ᵀ ⋯ J_Tᵀ g,

with J_s = ∂h_s/∂h_{s-1} = diag(φ'(a_s)) W_hh for the RNN h_s = φ(a_s). For a linear RNN (φ the
identity) every J_s = W_hh, so ∂L_T/∂h_t = (W_hhᵀ)^{T-t} g, which shrinks or grows like
ρ(W_hh)^{T-t} (ρ the spectral radius): gradients *vanish* for ρ < 1 and *explode* for ρ > 1. A
tanh only shrinks them further (|tanh'| ≤ 1). The LSTM's cell state adds a path along which
∂c_t/∂c_{t-1} = diag(f_t), so with forget gates near one the gradient survives many steps.
:func:`gradient_norms_through_time` measures ||∂L_T/∂h_t|| for t = 1..T.

Truncated BPTT (Williams & Peng 1990, in its common k1 = k2 = k form) cuts a long stream into
chunks of k steps: the state is carried from one chunk to the next (forward information flows
over the whole stream), but detached at each boundary, so a gradient reaches back at most k steps
and the memory of backpropagation is that of k steps. :class:`StreamChunks` lays out B
contiguous streams and yields their consecutive chunks; :func:`tbptt_step` is the matching step
for ``utils.training.fit``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from autoregressive.rnn import GRUCell, LSTMCell, RecurrentCache, RNNCell
from autoregressive.training_step import lm_loss
from utils.training import check_finite
from utils.validation import check_int, check_positive, shape_of

__all__ = ["StreamChunk", "StreamChunks", "gradient_norms_through_time", "tbptt_step"]


def gradient_norms_through_time(cell: RNNCell | LSTMCell | GRUCell, x: torch.Tensor, *,
                                g: torch.Tensor | None = None,
                                state: torch.Tensor | tuple | None = None) -> torch.Tensor:
    """||∂L_T/∂h_t|| for t = 1..T, for the loss L_T = Σ_b g_b · h_{T,b} at the last step.

    The cell is run over x from ``state`` (None: zeros) and autograd gives ∂L_T/∂h_t, which for
    this L_T is J_{t+1}ᵀ ⋯ J_Tᵀ g: the gradient g = ∂L_T/∂h_T carried back T − t steps (a loss
    that depends on h_T only through g; the weights are not updated).

    Args:
        cell: an :class:`RNNCell`, :class:`LSTMCell` or :class:`GRUCell` (input I, hidden H).
        x: the inputs ``(B, T, I)``.
        g: ∂L_T/∂h_T ``(B, H)``; default every entry 1/√H (a unit vector per sequence).
        state: the initial state (h, or (h, c) for the LSTM, each ``(B, H)``).

    Returns:
        ``(B, T)``: entry [b, t − 1] is ||∂L_T/∂h_t|| of sequence b (the last column is ||g_b||).
    """
    if not isinstance(cell, (RNNCell, LSTMCell, GRUCell)):
        raise ValueError(f"cell must be an RNNCell, LSTMCell or GRUCell, got "
                         f"{type(cell).__name__}")
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point or x.ndim != 3 \
            or x.shape[0] < 1 or x.shape[1] < 1 or x.shape[2] != cell.input_size:
        raise ValueError(f"x must be a float tensor (B, T, {cell.input_size}) with B, T >= 1, "
                         f"got {shape_of(x)}")
    b, h = x.shape[0], cell.hidden_size
    if g is None:
        g = x.new_full((b, h), h ** -0.5)
    elif not isinstance(g, torch.Tensor) or tuple(g.shape) != (b, h):
        raise ValueError(f"g must be a tensor of shape ({b}, {h}), got {shape_of(g)}")
    lstm = isinstance(cell, LSTMCell)
    with torch.enable_grad():
        s = state
        hs = []
        for x_t in x.unbind(1):
            s = cell(x_t, s)
            hs.append(s[0] if lstm else s)
        if not hs[-1].requires_grad:
            raise ValueError("the cell's parameters must require gradients (the graph from h_t "
                             "to h_T is what is measured)")
        grads = torch.autograd.grad((g.to(hs[-1].dtype) * hs[-1]).sum(), hs)
    return torch.stack([gr.norm(dim=-1) for gr in grads], dim=1)


class StreamChunk(NamedTuple):
    """One chunk of the streams: inputs x and targets y ``(B, k)`` (y[:, t] = x[:, t + 1]
    within the stream), and whether it is the first chunk of a pass (the state restarts)."""

    x: torch.Tensor
    y: torch.Tensor
    first: bool


class StreamChunks:
    """A token stream laid out as B contiguous streams, read k tokens at a time, in order.

    With N tokens, stream b is tokens[b·L : b·L + L + 1], L = (N − 1) // B (one extra token for
    the last target); chunk j holds x = stream[:, j·k : (j+1)·k] and y shifted by one. Step s of
    a run reads chunk s mod ``n_chunks`` (``n_chunks`` = L // k; the tail is dropped), so it is
    stateless by step; the hidden state that links chunk j − 1 to chunk j lives in the step
    (:func:`tbptt_step`). The tokens stay on their device.
    """

    def __init__(self, tokens: torch.Tensor, batch_size: int, k: int):
        if not isinstance(tokens, torch.Tensor) or tokens.dtype != torch.int64 \
                or tokens.ndim != 1:
            raise ValueError(f"tokens must be a 1-D int64 tensor, got {shape_of(tokens)}")
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.k = check_int("k", k, minimum=1)
        self.stream_length = (tokens.numel() - 1) // self.batch_size
        self.n_chunks = self.stream_length // self.k
        if self.n_chunks < 1:
            raise ValueError(f"{tokens.numel()} tokens make {self.batch_size} streams of "
                             f"{self.stream_length}, shorter than one chunk of k = {self.k}")
        starts = torch.arange(self.batch_size, device=tokens.device) * self.stream_length
        self.streams = tokens[starts[:, None] + torch.arange(self.stream_length + 1,
                                                            device=tokens.device)]

    def __len__(self) -> int:
        return self.n_chunks

    def __call__(self, step: int) -> StreamChunk:
        step = check_int("step", step, minimum=0)
        j = step % self.n_chunks
        o = j * self.k
        return StreamChunk(self.streams[:, o:o + self.k], self.streams[:, o + 1:o + 1 + self.k],
                           j == 0)


def tbptt_step(model, optimizer, *, clip: float | None = 1.0, scheduler=None):
    """A step for ``utils.training.fit`` on :class:`StreamChunks`: truncated BPTT.

    Each call continues the recurrent state from the previous chunk (the model's cache, kept in
    ``step.cache``; a fresh one at a chunk with ``first``), computes the mean next-token
    cross-entropy over the chunk, backpropagates (k steps at most: the state arrived detached),
    clips the gradient norm to ``clip`` (None: no clipping), updates, and detaches the state for
    the next chunk. Returns ``{"loss": mean nats per token}``. A run resumed from a checkpoint
    restarts the state at zeros (the state is not checkpointed).

    ``model`` follows the LM protocol with a :class:`RecurrentCache` (a :class:`RecurrentLM`).
    """
    if clip is not None:
        clip = check_positive("clip", clip)

    def step(batch):
        if not isinstance(batch, StreamChunk):
            raise ValueError(f"tbptt_step takes the StreamChunk batches of StreamChunks, got "
                             f"{type(batch).__name__}")
        x, y, first = batch
        if first or step.cache is None or step.cache.batch_size != x.shape[0]:
            step.cache = model.init_cache(x.shape[0])
        if not isinstance(step.cache, RecurrentCache):
            raise ValueError("tbptt_step needs a model whose cache holds a recurrent state")
        logits = model(x, cache=step.cache)
        loss = lm_loss(logits, y)
        value = check_finite("loss", loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        step.cache.detach_()
        return {"loss": value}

    step.cache = None
    return step
