"""Decoding: turning next-token distributions into text.

All rules act on logits ℓ (B, V) of p(x_t | x_<t) = softmax(ℓ):

- **greedy**: argmax ℓ (the mode of each conditional; not the mode of the sequence).
- **temperature** τ > 0: sample from softmax(ℓ / τ); τ → 0 is greedy, τ = 1 the model, τ > 1
  flatter.
- **top-k**: keep the k largest logits, renormalise (k ≥ 1; ties at the k-th value are all kept).
- **top-p (nucleus)**, 0 < p ≤ 1: sort the probabilities π_(1) ≥ π_(2) ≥ …, keep the smallest
  prefix whose mass reaches p, i.e. token r is kept iff Σ_{s<r} π_(s) < p. The token that
  *crosses* the threshold is kept, so at least one token always survives (what the Hugging Face
  and nanoGPT-style implementations do; dropping it instead can leave nothing when π_(1) > p).
  Applied after temperature and top-k, in that order, as the common libraries do.
- **beam search**: keep the ``beams`` most likely partial sequences; the finished ones are ranked
  by log p / L^α with L the generated length and α = ``length_penalty`` (Hugging Face's
  convention; α = 0 ranks by log p, which favours short sequences).

:func:`generate` runs a model of this package's LM protocol (see the package docstring) with or
without its cache. Without it, step t re-runs the model on the last ``block_size`` tokens (O(T²)
work for T tokens with attention); with it, each step feeds one new token and attends to the
cached keys and values (O(T)). The two give the same logits. Beyond ``block_size`` tokens both
condition on the last ``block_size`` tokens only, and the cache path re-fills its cache from that
window at every step: exactly equal to the recompute path (absolute positions cannot slide), but
no faster there.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from tqdm import tqdm

from utils.validation import check_int, check_positive, shape_of

__all__ = ["BeamResult", "beam_search", "filter_top_k", "filter_top_p", "generate",
           "sample_next"]


def _check_logits(logits: object) -> torch.Tensor:
    if not isinstance(logits, torch.Tensor) or logits.ndim < 1 \
            or not logits.dtype.is_floating_point:
        raise ValueError(f"logits must be a float tensor (..., V), got {shape_of(logits)}")
    return logits


def filter_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """ℓ with every entry below the k-th largest (along the last dimension) set to −∞."""
    logits = _check_logits(logits)
    k = check_int("k", k, minimum=1)
    if k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def filter_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """ℓ with every token outside the nucleus of mass p set to −∞ (the crossing token kept)."""
    logits = _check_logits(logits)
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 < p <= 1.0:
        raise ValueError(f"top_p must lie in (0, 1], got {p!r}")
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    mass_before = probs.cumsum(-1) - probs                  # Σ_{s<r} π_(s)
    drop_sorted = mass_before >= p
    drop = drop_sorted.scatter(-1, order, drop_sorted)      # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def sample_next(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, greedy: bool = False,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row of logits (B, V): (B,) int64, by the rules of the module docstring.

    ``generator`` (on the logits' device) makes sampling reproducible."""
    logits = _check_logits(logits)
    if logits.ndim != 2:
        raise ValueError(f"logits must be (B, V), got {tuple(logits.shape)}")
    if greedy:
        return logits.argmax(-1)
    temperature = check_positive("temperature", temperature)
    logits = logits / temperature
    if top_k is not None:
        logits = filter_top_k(logits, top_k)
    if top_p is not None:
        logits = filter_top_p(logits, top_p)
    probs = torch.softmax(logits.float(), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _prompt(model: nn.Module, prompt: torch.Tensor) -> torch.Tensor:
    if not isinstance(prompt, torch.Tensor) or prompt.dtype != torch.int64 \
            or prompt.ndim not in (1, 2) or prompt.shape[-1] == 0:
        got = f"{tuple(prompt.shape)} {prompt.dtype}" if isinstance(prompt, torch.Tensor) \
            else type(prompt).__name__
        raise ValueError(f"prompt must be a non-empty int64 tensor (T,) or (B, T), got {got}")
    prompt = prompt[None] if prompt.ndim == 1 else prompt
    block = getattr(model, "block_size", None)
    if block is not None and prompt.shape[1] > block:
        raise ValueError(f"the prompt has {prompt.shape[1]} tokens, longer than the model's "
                         f"block_size = {block}; crop it to its last {block} tokens")
    vocab = model.vocab_size
    if int(prompt.min()) < 0 or int(prompt.max()) >= vocab:
        raise ValueError(f"prompt tokens must lie in [0, {vocab}), got "
                         f"[{int(prompt.min())}, {int(prompt.max())}]")
    return prompt


@torch.no_grad()
def generate(model: nn.Module, prompt: torch.Tensor, max_new_tokens: int, *,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             greedy: bool = False, generator: torch.Generator | None = None,
             kv_cache: bool = True, progress: bool = False) -> torch.Tensor:
    """Extend ``prompt`` (T,) or (B, T) by ``max_new_tokens`` tokens: (B, T + max_new_tokens).

    Each new token comes from :func:`sample_next` on the model's last logits. ``kv_cache=True``
    uses ``model.init_cache`` (one new token per step after the prompt); ``False`` recomputes the
    last ``block_size`` tokens (all of them when ``block_size`` is None) at every step. The model
    is put in eval mode for the call and restored after.
    """
    prompt = _prompt(model, prompt)
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, minimum=0)
    if not greedy:  # validate once, before any work
        check_positive("temperature", temperature)
    block = getattr(model, "block_size", None)
    was_training = model.training
    model.eval()
    out = prompt.to(next(model.parameters()).device)
    cache, fed = None, 0  # fed: how many tokens of `out` the cache holds
    try:
        for _ in tqdm(range(max_new_tokens), desc="generating", disable=not progress,
                      mininterval=1.0):
            full = block is not None and out.shape[1] > block
            if not kv_cache or cache is None or full:
                context = out if block is None else out[:, -block:]
                if kv_cache:  # (re-)fill the cache with the whole window
                    cache = model.init_cache(out.shape[0])
                    logits = model(context, cache=cache)[:, -1]
                else:
                    logits = model(context)[:, -1]
            else:             # feed only what the cache has not seen: one token
                logits = model(out[:, fed:], cache=cache)[:, -1]
            fed = out.shape[1]
            nxt = sample_next(logits, temperature=temperature, top_k=top_k, top_p=top_p,
                              greedy=greedy, generator=generator)
            out = torch.cat([out, nxt[:, None]], dim=1)
    finally:
        model.train(was_training)
    return out


class BeamResult(NamedTuple):
    """``tokens``: list of the ``beams`` best sequences (prompt included), best first, as (T_i,)
    int64 tensors; ``log_prob``: their log-probabilities given the prompt (B,); ``score``: the
    length-penalised scores they were ranked by."""

    tokens: list[torch.Tensor]
    log_prob: torch.Tensor
    score: torch.Tensor


@torch.no_grad()
def beam_search(model: nn.Module, prompt: torch.Tensor, max_new_tokens: int, *,
                beams: int = 4, length_penalty: float = 1.0,
                eos: int | None = None) -> BeamResult:
    """Beam search from a single prompt (T,) for up to ``max_new_tokens`` tokens.

    Every step expands each live beam by every token, keeps the ``beams`` best extensions by
    log-probability, and retires those ending in ``eos`` (scored log p / L^α, α =
    ``length_penalty`` ≥ 0, L the number of generated tokens including eos). At the end the live
    beams are scored the same way; the ``beams`` best of all are returned. With ``beams=1`` and no
    eos it is greedy decoding. Recomputes each step (no cache), which keeps it model-agnostic.
    """
    prompt = _prompt(model, prompt)
    if prompt.shape[0] != 1:
        raise ValueError(f"beam_search takes one prompt (T,), got {tuple(prompt.shape)}")
    beams = check_int("beams", beams, minimum=1)
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, minimum=1)
    if isinstance(length_penalty, bool) or not isinstance(length_penalty, (int, float)) \
            or length_penalty < 0:
        raise ValueError(f"length_penalty must be a number >= 0, got {length_penalty!r}")
    if eos is not None:
        eos = check_int("eos", eos, minimum=0)
    block = getattr(model, "block_size", None)
    was_training = model.training
    model.eval()
    try:
        live = prompt.to(next(model.parameters()).device)        # (b, T)
        live_lp = torch.zeros(1, dtype=torch.float64, device=live.device)
        done: list[tuple[float, float, torch.Tensor]] = []      # (score, log p, tokens)
        for t in range(1, max_new_tokens + 1):
            context = live if block is None else live[:, -block:]
            logp = torch.log_softmax(model(context)[:, -1].double(), dim=-1)  # (b, V)
            total = (live_lp[:, None] + logp).flatten()
            top = torch.topk(total, min(2 * beams, total.numel()))
            vocab = logp.shape[-1]
            keep_rows, keep_tok, keep_lp = [], [], []
            for value, flat in zip(top.values.tolist(), top.indices.tolist()):
                row, tok = divmod(flat, vocab)
                if eos is not None and tok == eos:
                    seq = torch.cat([live[row], live.new_tensor([tok])])
                    done.append((value / t ** length_penalty, value, seq))
                else:
                    keep_rows.append(row)
                    keep_tok.append(tok)
                    keep_lp.append(value)
                if len(keep_rows) == beams:
                    break
            if not keep_rows:
                break
            rows = torch.tensor(keep_rows, device=live.device)
            live = torch.cat([live[rows], torch.tensor(keep_tok, device=live.device)[:, None]],
                             dim=1)
            live_lp = torch.tensor(keep_lp, dtype=torch.float64, device=live.device)
        n_new = live.shape[1] - prompt.shape[1]
        for lp, seq in zip(live_lp.tolist(), live):
            done.append((lp / max(n_new, 1) ** length_penalty, lp, seq))
    finally:
        model.train(was_training)
    done.sort(key=lambda d: -d[0])
    best = done[:beams]
    return BeamResult(tokens=[d[2] for d in best],
                      log_prob=torch.tensor([d[1] for d in best], dtype=torch.float64),
                      score=torch.tensor([d[0] for d in best], dtype=torch.float64))
