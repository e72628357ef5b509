"""Recurrent networks written out: the tanh RNN, LSTM and GRU cells, a stack of them run over
time, and a character-level recurrent language model.

A recurrent network carries a state h_t that summarises the prefix x_≤t through one update
h_t = f(h_{t-1}, x_t), applied at every step with the same weights. Every cell below first forms
pre-activations a = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh (G·H of them: G gates of width H) and
then (σ the logistic sigmoid, ⊙ the elementwise product, torch's gate order):

    RNN  (G = 1):  h_t = tanh(a)                        (or relu / identity: a linear RNN)
    LSTM (G = 4):  [i, f, g, o] = [σ(a_i), σ(a_f), tanh(a_g), σ(a_o)]
                   c_t = f ⊙ c_{t-1} + i ⊙ g,           h_t = o ⊙ tanh(c_t)
    GRU  (G = 3):  r = σ(a_r),  z = σ(a_z)
                   n = tanh(W_in x_t + b_in + r ⊙ (W_hn h_{t-1} + b_hn))
                   h_t = (1 − z) ⊙ n + z ⊙ h_{t-1}

(in the GRU the reset gate r multiplies W_hn h + b_hn, bias included, as in torch and cuDNN).
The parameters have torch's names and shapes, weight_ih (G·H, I), weight_hh (G·H, H),
bias_ih (G·H,), bias_hh (G·H,), with the gates stacked in that order, so weights copy both ways
with ``torch.nn.RNNCell/LSTMCell/GRUCell`` (``load_state_dict``); :class:`Recurrent`, a stack of
L cells, names them ``weight_ih_l{k}`` etc. as ``torch.nn.RNN/LSTM/GRU`` do.

Shapes: x_t (B, I); h, c (B, H); a sequence x (B, T, I) (batch first); a stack's state
(L, B, H), or the pair (h, c) of them for the LSTM, as torch's modules return it.
:class:`RecurrentLM` (tokens (B, T) → logits (B, T, V)) follows the LM protocol of the package
docstring, its cache being the recurrent state (unbounded context: ``block_size`` is None).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from utils.validation import check_choice, check_int, shape_of

__all__ = ["GRUCell", "LSTMCell", "RNNCell", "Recurrent", "RecurrentCache", "RecurrentLM",
           "RNN_KINDS"]

RNN_KINDS = ("rnn", "lstm", "gru")
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
NONLINEARITIES = {"tanh": torch.tanh, "relu": torch.relu, "identity": lambda a: a}


def _step(kind, a_x, state, weight_hh, bias_hh, nonlinearity="tanh"):
    """One update from the input's pre-activations a_x = W_ih x_t + b_ih ``(B, G·H)`` and the
    previous state (h ``(B, H)``, or (h, c) for the LSTM) to the next state (module docstring)."""
    if kind == "lstm":
        h, c = state
        a = a_x + F.linear(h, weight_hh, bias_hh)
        a_i, a_f, a_g, a_o = a.chunk(4, dim=-1)
        i, f, g, o = torch.sigmoid(a_i), torch.sigmoid(a_f), torch.tanh(a_g), torch.sigmoid(a_o)
        c = f * c + i * g
        return o * torch.tanh(c), c
    if kind == "gru":
        h = state
        x_r, x_z, x_n = a_x.chunk(3, dim=-1)
        h_r, h_z, h_n = F.linear(h, weight_hh, bias_hh).chunk(3, dim=-1)
        r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)
        return (1 - z) * n + z * h
    return NONLINEARITIES[nonlinearity](a_x + F.linear(state, weight_hh, bias_hh))


def _init_uniform(module: nn.Module, hidden_size: int) -> None:
    """torch's initialisation of every recurrent weight and bias: U(−1/√H, 1/√H)."""
    bound = 1.0 / math.sqrt(hidden_size)
    for p in module.parameters():
        nn.init.uniform_(p, -bound, bound)


def _float_input(name: str, x: object, ndim: int, last: int) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point or x.ndim != ndim \
            or x.shape[-1] != last or x.shape[0] < 1:
        want = "(B, I)" if ndim == 2 else "(B, T, I)"
        raise ValueError(f"{name} must be a float tensor {want} with I = {last}, got "
                         f"{shape_of(x)}" + (f" of dtype {x.dtype}"
                                             if isinstance(x, torch.Tensor) else ""))
    return x


def _check_state(name: str, h: object, shape: tuple[int, ...], like: torch.Tensor) -> None:
    if not isinstance(h, torch.Tensor) or tuple(h.shape) != shape or h.dtype != like.dtype:
        raise ValueError(f"{name} must be a {like.dtype} tensor of shape {shape}, got "
                         f"{shape_of(h)}" + (f" of dtype {h.dtype}"
                                             if isinstance(h, torch.Tensor) else ""))


class _Cell(nn.Module):
    kind = "rnn"

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True):
        super().__init__()
        self.input_size = check_int("input_size", input_size, minimum=1)
        self.hidden_size = check_int("hidden_size", hidden_size, minimum=1)
        gh = GATES[self.kind] * self.hidden_size
        self.weight_ih = nn.Parameter(torch.empty(gh, self.input_size))
        self.weight_hh = nn.Parameter(torch.empty(gh, self.hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(gh)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(gh)) if bias else None
        _init_uniform(self, self.hidden_size)

    def _inputs(self, x, state):
        x = _float_input("x", x, 2, self.input_size)
        shape = (x.shape[0], self.hidden_size)
        if state is None:
            zero = x.new_zeros(shape)
            state = (zero, zero.clone()) if self.kind == "lstm" else zero
        elif self.kind == "lstm":
            if not isinstance(state, (tuple, list)) or len(state) != 2:
                raise ValueError(f"an LSTM cell's state must be a pair (h, c), got "
                                 f"{shape_of(state)}")
            _check_state("h", state[0], shape, x)
            _check_state("c", state[1], shape, x)
        else:
            _check_state("h", state, shape, x)
        return F.linear(x, self.weight_ih, self.bias_ih), state

    def forward(self, x, state=None):
        a_x, state = self._inputs(x, state)
        return _step(self.kind, a_x, state, self.weight_hh, self.bias_hh,
                     getattr(self, "nonlinearity", "tanh"))


class RNNCell(_Cell):
    """h_t = φ(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), φ = tanh (default), relu or identity (a
    linear RNN, for the gradient analysis; torch has no such option).

    ``cell(x (B, I), h (B, H) or None = zeros) -> h_t (B, H)``."""

    kind = "rnn"

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 nonlinearity: str = "tanh"):
        self.nonlinearity = check_choice("nonlinearity", nonlinearity, tuple(NONLINEARITIES))
        super().__init__(input_size, hidden_size, bias)


class LSTMCell(_Cell):
    """The LSTM update (gates i, f, g, o, in torch's order):

        i = σ(W_ii x + b_ii + W_hi h + b_hi),  f = σ(W_if x + b_if + W_hf h + b_hf),
        g = tanh(W_ig x + b_ig + W_hg h + b_hg),  o = σ(W_io x + b_io + W_ho h + b_ho),
        c_t = f ⊙ c_{t-1} + i ⊙ g,  h_t = o ⊙ tanh(c_t).

    ``cell(x (B, I), (h, c) each (B, H), or None = zeros) -> (h_t, c_t)``."""

    kind = "lstm"


class GRUCell(_Cell):
    """The GRU update (gates r, z, n, in torch's order):

        r = σ(W_ir x + b_ir + W_hr h + b_hr),  z = σ(W_iz x + b_iz + W_hz h + b_hz),
        n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)),  h_t = (1 − z) ⊙ n + z ⊙ h.

    ``cell(x (B, I), h (B, H) or None = zeros) -> h_t (B, H)``."""

    kind = "gru"


class Recurrent(nn.Module):
    """L cells of one kind stacked and run over time, batch first: layer k reads the outputs h_t
    of layer k − 1 (layer 0 reads x_t). A drop-in for ``torch.nn.RNN/LSTM/GRU(...,
    batch_first=True)``: the same parameter names (``weight_ih_l{k}``, ``weight_hh_l{k}``,
    ``bias_ih_l{k}``, ``bias_hh_l{k}``), the same call and the same state layout.

    ``rnn(x (B, T, I), state=None, *, detach_every=None) -> (y (B, T, H), state)``: y are the
    last layer's h_1..h_T; state h (L, B, H) (the pair (h, c) for the LSTM) is the last step's, to
    pass to the next call to continue the sequence (None: zeros). ``detach_every=k`` cuts the
    graph every k steps (h_t detached at t = k, 2k, …: truncated BPTT inside one call).

    Each layer is computed for all steps at once where it can: W_ih x_t + b_ih for every t in one
    matrix product, then the T updates one after another (a recurrence cannot be parallelised
    over t).
    """

    def __init__(self, kind: str, input_size: int, hidden_size: int, layers: int = 1, *,
                 bias: bool = True, nonlinearity: str = "tanh"):
        super().__init__()
        self.kind = check_choice("kind", kind, RNN_KINDS)
        self.input_size = check_int("input_size", input_size, minimum=1)
        self.hidden_size = check_int("hidden_size", hidden_size, minimum=1)
        self.num_layers = check_int("layers", layers, minimum=1)
        self.nonlinearity = check_choice("nonlinearity", nonlinearity, tuple(NONLINEARITIES))
        if kind != "rnn" and nonlinearity != "tanh":
            raise ValueError(f"nonlinearity applies to kind='rnn' only, got {nonlinearity!r} "
                             f"for kind={kind!r}")
        self.bias = bool(bias)
        gh = GATES[kind] * self.hidden_size
        for k in range(self.num_layers):
            i = self.input_size if k == 0 else self.hidden_size
            setattr(self, f"weight_ih_l{k}", nn.Parameter(torch.empty(gh, i)))
            setattr(self, f"weight_hh_l{k}", nn.Parameter(torch.empty(gh, self.hidden_size)))
            if self.bias:
                setattr(self, f"bias_ih_l{k}", nn.Parameter(torch.empty(gh)))
                setattr(self, f"bias_hh_l{k}", nn.Parameter(torch.empty(gh)))
        _init_uniform(self, self.hidden_size)

    def _weights(self, k: int):
        b = (getattr(self, f"bias_ih_l{k}"), getattr(self, f"bias_hh_l{k}")) if self.bias \
            else (None, None)
        return getattr(self, f"weight_ih_l{k}"), getattr(self, f"weight_hh_l{k}"), *b

    def _initial_state(self, x, state):
        shape = (self.num_layers, x.shape[0], self.hidden_size)
        if state is None:
            zero = x.new_zeros(shape)
            return (zero, zero.clone()) if self.kind == "lstm" else zero
        if self.kind == "lstm":
            if not isinstance(state, (tuple, list)) or len(state) != 2:
                raise ValueError(f"an LSTM's state must be a pair (h, c), got {shape_of(state)}")
            _check_state("h", state[0], shape, x)
            _check_state("c", state[1], shape, x)
            return tuple(state)
        _check_state("h", state, shape, x)
        return state

    def forward(self, x, state=None, *, detach_every: int | None = None):
        x = _float_input("x", x, 3, self.input_size)
        if detach_every is not None:
            detach_every = check_int("detach_every", detach_every, minimum=1)
        state = self._initial_state(x, state)
        lstm = self.kind == "lstm"
        finals = []
        for k in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = self._weights(k)
            s = (state[0][k], state[1][k]) if lstm else state[k]
            a_x = F.linear(x, w_ih, b_ih).unbind(1)   # W_ih x_t + b_ih for every t: T × (B, GH)
            ys = []
            for t in range(x.shape[1]):
                if detach_every is not None and t > 0 and t % detach_every == 0:
                    s = tuple(v.detach() for v in s) if lstm else s.detach()
                s = _step(self.kind, a_x[t], s, w_hh, b_hh, self.nonlinearity)
                ys.append(s[0] if lstm else s)
            x = torch.stack(ys, dim=1)                         # this layer's h_1..h_T (B, T, H)
            finals.append(s)
        if lstm:
            return x, (torch.stack([s[0] for s in finals]), torch.stack([s[1] for s in finals]))
        return x, torch.stack(finals)

    def extra_repr(self) -> str:
        rnn = f", nonlinearity={self.nonlinearity!r}" if self.kind == "rnn" else ""
        return (f"{self.kind!r}, {self.input_size}, {self.hidden_size}, "
                f"layers={self.num_layers}{rnn}")


class RecurrentCache:
    """The cache of :class:`RecurrentLM`: the recurrent state after the tokens fed so far.

    ``state`` is None (empty: zeros at the next call) or what the stack returned, h (L, B, H) or
    (h, c); ``length`` counts the tokens it has seen; ``batch_size`` is fixed at creation. Unlike
    a KV cache it does not grow with the length: the state is the whole summary of the prefix.
    """

    def __init__(self, batch_size: int):
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.state = None
        self.length = 0

    def detach_(self) -> RecurrentCache:
        """Cut the graph behind the state (keep its value): truncated BPTT between chunks."""
        if self.state is not None:
            self.state = tuple(s.detach() for s in self.state) \
                if isinstance(self.state, tuple) else self.state.detach()
        return self


class RecurrentLM(nn.Module):
    """Embedding → L recurrent layers → linear head: p(x_t | x_<t) = softmax(W h_{t-1}^{(L)} + b)
    where h_t^{(L)} is the top layer's state after reading x_t.

    Args:
        vocab_size: V ≥ 2 tokens; hidden: H ≥ 1, the width of every layer.
        kind: "lstm" (default), "gru" or "rnn" (tanh); layers: L ≥ 1.
        embed_dim: the embedding width (default H).
        fused: run the stack with ``torch.nn.LSTM/GRU/RNN`` (one fused kernel; the same
            function with the same parameter names as :class:`Recurrent`, checked equal in the
            tests, so a state_dict moves between the two) instead of the written-out cells.

    ``model(idx (B, T) int64) -> logits (B, T, V)``; with ``cache=model.init_cache(B)`` each call
    continues from the state the cache holds, returns the logits of its new tokens only and
    updates the cache in place.
    """

    block_size = None  # unbounded context: the state summarises the whole prefix

    def __init__(self, vocab_size: int, hidden: int, kind: str = "lstm", layers: int = 1, *,
                 embed_dim: int | None = None, fused: bool = False):
        super().__init__()
        self.vocab_size = check_int("vocab_size", vocab_size, minimum=2)
        self.hidden = check_int("hidden", hidden, minimum=1)
        self.kind = check_choice("kind", kind, RNN_KINDS)
        self.layers = check_int("layers", layers, minimum=1)
        self.embed_dim = self.hidden if embed_dim is None else check_int("embed_dim", embed_dim,
                                                                         minimum=1)
        self.fused = bool(fused)
        self.embed = nn.Embedding(self.vocab_size, self.embed_dim)
        if self.fused:
            module = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[kind]
            self.rnn = module(self.embed_dim, self.hidden, self.layers, batch_first=True)
        else:
            self.rnn = Recurrent(kind, self.embed_dim, self.hidden, self.layers)
        self.head = nn.Linear(self.hidden, self.vocab_size)

    def init_cache(self, batch_size: int) -> RecurrentCache:
        """An empty cache for ``batch_size`` sequences (the state starts at zeros)."""
        return RecurrentCache(batch_size)

    def forward(self, idx: torch.Tensor, cache: RecurrentCache | None = None) -> torch.Tensor:
        if not isinstance(idx, torch.Tensor) or idx.dtype != torch.int64 or idx.ndim != 2 \
                or idx.shape[0] < 1 or idx.shape[1] < 1:
            raise ValueError(f"idx must be an int64 tensor (B, T) with B, T >= 1, got "
                             f"{shape_of(idx)}" + (f" of dtype {idx.dtype}"
                                                   if isinstance(idx, torch.Tensor) else ""))
        if idx.min() < 0 or idx.max() >= self.vocab_size:
            raise ValueError(f"idx must hold tokens in 0..{self.vocab_size - 1}, got values in "
                             f"{idx.min().item()}..{idx.max().item()}")
        state = None
        if cache is not None:
            if not isinstance(cache, RecurrentCache):
                raise ValueError(f"cache must come from init_cache, got {type(cache).__name__}")
            if cache.batch_size != idx.shape[0]:
                raise ValueError(f"the cache holds {cache.batch_size} sequences but idx has "
                                 f"{idx.shape[0]} rows")
            state = cache.state
        y, state = self.rnn(self.embed(idx), state)
        if cache is not None:
            cache.state = state
            cache.length += idx.shape[1]
        return self.head(y)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, fused={self.fused}, block_size=None"
