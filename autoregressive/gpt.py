"""A GPT: token embeddings + positions -> N transformer blocks -> a tied linear head.

The model computes p(x_t | x_<t) = softmax(h_t Wᵀ)_{x_t} for every t at once: the causal mask
keeps position t from seeing t' > t, so one forward pass over (B, T) tokens gives all T
next-token distributions, and training minimises their mean cross-entropy (teacher forcing).

A **pre-LN block** (GPT-2) normalises before each sublayer and adds the result to a residual
stream that no normalisation touches:

    x ← x + MHA(LN₁(x)),   x ← x + MLP(LN₂(x)),   MLP(u) = W₂ GELU(W₁ u)  (width 4 d)

and a last LN_f precedes the head. The **post-LN** block of the original transformer,
x ← LN₁(x + MHA(x)), x ← LN₂(x + MLP(x)), normalises the residual stream itself; it needs a
learning-rate warm-up to train stably and is kept here for the ablation. **Weight tying** (Press &
Wolf 2017) uses the token embedding matrix E (V, d) as the head, logits = h Eᵀ.

Initialisation as GPT-2: weights N(0, 0.02²), the two projections that write into the residual
stream scaled by 1/√(2 N), so the stream's variance does not grow with depth.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from autoregressive.attention import LayerKVCache, MultiHeadAttention
from autoregressive.positions import LearnedPositions, RotaryEmbedding, sinusoidal_positions
from utils.validation import check_choice, check_int

__all__ = ["GPT", "POSITIONS", "Block", "GPTConfig", "KVCache"]

POSITIONS = ("learned", "sinusoidal", "rotary", "none")
NORMS = ("pre", "post")


@dataclass
class GPTConfig:
    """Everything that defines a GPT (plain data: saved in checkpoints, compared on resume).

    vocab_size V, block_size (longest context), n_layer N, n_head H, n_embd d (H divides d),
    dropout, bias (in linears and LayerNorms), positions (one of ``POSITIONS``), norm ("pre" or
    "post"), tie_weights (head = token embedding), fused_attention (torch's fused SDPA, same
    numbers; see :class:`MultiHeadAttention`).
    """

    vocab_size: int
    block_size: int = 128
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True
    positions: str = "learned"
    norm: str = "pre"
    tie_weights: bool = True
    fused_attention: bool = True

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            check_int(name, getattr(self, name), minimum=1)
        if self.n_embd % self.n_head:
            raise ValueError(f"n_head must divide n_embd: n_embd = {self.n_embd}, "
                             f"n_head = {self.n_head}")
        check_choice("positions", self.positions, POSITIONS)
        check_choice("norm", self.norm, NORMS)
        if self.positions == "rotary" and (self.n_embd // self.n_head) % 2:
            raise ValueError(f"rotary positions need an even head width, got "
                             f"{self.n_embd // self.n_head}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout!r}")

    def to_dict(self) -> dict:
        return asdict(self)


class KVCache:
    """One :class:`LayerKVCache` per block and the number of positions already processed."""

    def __init__(self, config: GPTConfig, batch: int, *, device=None,
                 dtype: torch.dtype = torch.float32):
        head_dim = config.n_embd // config.n_head
        self.layers = [LayerKVCache(batch, config.n_head, config.block_size, head_dim,
                                    device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.batch = batch
        self.length = 0

    def advance(self, t_new: int) -> None:
        self.length += t_new
        for layer in self.layers:
            layer.length = self.length

    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows ``index`` (beam search)."""
        for layer in self.layers:
            layer.reorder(index)
        self.batch = len(index)


class Block(nn.Module):
    """One transformer block, pre-LN (default) or post-LN; see the module docstring."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        d = config.n_embd
        self.norm = config.norm
        self.ln_1 = nn.LayerNorm(d, bias=config.bias)
        self.attn = MultiHeadAttention(d, config.n_head, bias=config.bias,
                                       dropout=config.dropout, fused=config.fused_attention)
        self.ln_2 = nn.LayerNorm(d, bias=config.bias)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d, bias=config.bias), nn.GELU(),
                                 nn.Linear(4 * d, d, bias=config.bias), nn.Dropout(config.dropout))
        self.resid_drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, *, cache: LayerKVCache | None = None,
                rotary: RotaryEmbedding | None = None, start: int = 0,
                need_weights: bool = False) -> torch.Tensor:
        def attn(u):
            return self.resid_drop(self.attn(u, cache=cache, rotary=rotary, start=start,
                                             need_weights=need_weights))
        if self.norm == "pre":
            x = x + attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))
        x = self.ln_1(x + attn(x))
        return self.ln_2(x + self.mlp(x))


class GPT(nn.Module):
    """A decoder-only transformer language model (the LM protocol of this package).

    ``model(idx)``: idx (B, T) int64 with T ≤ block_size -> logits (B, T, V).
    ``model(idx, cache=model.init_cache(B))``: continues after the cache's ``length`` positions
    (the new tokens sit at positions length … length + T − 1) and returns the new tokens'
    logits, equal to the last T rows of a full pass over the whole sequence (tested).
    ``need_weights=True`` keeps every layer's attention weights in ``block.attn.last_weights``.
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise ValueError(f"config must be a GPTConfig, got {type(config).__name__}")
        self.config = config
        c = config
        self.tok_emb = nn.Embedding(c.vocab_size, c.n_embd)
        self.pos_emb = LearnedPositions(c.block_size, c.n_embd) if c.positions == "learned" \
            else None
        self.rotary = RotaryEmbedding(c.n_embd // c.n_head) if c.positions == "rotary" else None
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layer))
        self.ln_f = nn.LayerNorm(c.n_embd, bias=c.bias) if c.norm == "pre" else nn.Identity()
        self.head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        self.apply(self._init)
        for name, p in self.named_parameters():
            if name.endswith("attn.out_proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * c.n_layer))
        if c.tie_weights:
            self.head.weight = self.tok_emb.weight

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, 0.0, 0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    @property
    def block_size(self) -> int:
        return self.config.block_size

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    def num_parameters(self, *, non_embedding: bool = False) -> int:
        """Trainable parameters, counted once when tied; ``non_embedding`` leaves out the token
        and learned position embeddings (the count scaling laws use)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.tok_emb.weight.numel()
            if self.pos_emb is not None:
                n -= self.pos_emb.weight.numel()
        return n

    def init_cache(self, batch_size: int) -> KVCache:
        p = self.tok_emb.weight
        return KVCache(self.config, check_int("batch_size", batch_size, minimum=1),
                       device=p.device, dtype=p.dtype)

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None, *,
                need_weights: bool = False) -> torch.Tensor:
        if not isinstance(idx, torch.Tensor) or idx.ndim != 2 or idx.dtype != torch.int64:
            got = f"{tuple(idx.shape)} {idx.dtype}" if isinstance(idx, torch.Tensor) \
                else type(idx).__name__
            raise ValueError(f"idx must be an int64 tensor (B, T), got {got}")
        b, t = idx.shape
        start = 0 if cache is None else cache.length
        if start + t > self.config.block_size:
            raise ValueError(f"{start + t} positions exceed block_size = "
                             f"{self.config.block_size}" + (f" ({start} cached + {t} new)"
                                                            if cache is not None else ""))
        if cache is not None and cache.batch != b:
            raise ValueError(f"the cache was made for batch {cache.batch}, got idx of batch {b}")
        if t and (int(idx.min()) < 0 or int(idx.max()) >= self.config.vocab_size):
            raise ValueError(f"tokens must lie in [0, {self.config.vocab_size}), got "
                             f"[{int(idx.min())}, {int(idx.max())}]")
        x = self.tok_emb(idx)
        if self.pos_emb is not None:
            x = x + self.pos_emb(t, start)
        elif self.config.positions == "sinusoidal":
            x = x + sinusoidal_positions(t, self.config.n_embd, start=start, dtype=x.dtype,
                                         device=x.device)
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, cache=None if cache is None else cache.layers[i], rotary=self.rotary,
                      start=start, need_weights=need_weights)
        if cache is not None:
            cache.advance(t)
        return self.head(self.ln_f(x))
