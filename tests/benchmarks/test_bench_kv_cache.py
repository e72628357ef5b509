"""Benchmark: generation with the KV cache vs recomputing the whole context at every step.

One GPT (4 layers, width 128, block 576; random weights: the cost of decoding does not depend on
what the model learned), one 64-token prompt, 512 new greedy tokens, both paths in the same
process, each timed best of two. Without the cache, step t runs the model on all 64 + t tokens
(Σ_t (64 + t) ≈ 164k token-positions, and attention over each); with it, step t runs one token
against t cached keys. Target (issue #12): ≥ 5× faster and the identical 512 tokens. Run with
``make bench``.
"""

import time

import torch

from autoregressive import GPT, GPTConfig, generate

PROMPT, NEW = 64, 512


def timed(model, prompt, kv_cache):
    best, out = float("inf"), None
    for _ in range(2):
        t0 = time.perf_counter()
        out = generate(model, prompt, NEW, greedy=True, kv_cache=kv_cache)
        best = min(best, time.perf_counter() - t0)
    return best, out


def test_kv_cache_vs_recompute():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=103, block_size=PROMPT + NEW, n_layer=4, n_head=4,
                          n_embd=128)).eval()
    prompt = torch.randint(103, (PROMPT,), generator=torch.Generator().manual_seed(1))
    t_cache, with_cache = timed(model, prompt, True)
    t_full, recompute = timed(model, prompt, False)
    ratio = t_full / t_cache
    print(f"\nKV cache vs recompute, {NEW} new tokens after a {PROMPT}-token prompt "
          f"({model.num_parameters():,} parameters, {torch.get_num_threads()} threads): "
          f"recompute {t_full:.2f} s, cache {t_cache:.2f} s: {ratio:.1f}x faster; "
          f"identical tokens: {torch.equal(with_cache, recompute)}")
    assert torch.equal(with_cache, recompute)
    assert ratio >= 5.0
