"""Benchmark: Mamba's recurrent generation (the O(1)-per-token cache) vs re-running the sequence.

One MambaLM (7 layers, width 128, d_state 16: the notebook's ~0.83M-parameter model; random
weights: the cost of decoding does not depend on what the model learned), one 64-token prompt,
256 new greedy tokens, both paths in the same process on one thread. With the cache each new
token is one :meth:`ssm.MambaBlock.step` per layer (conv window + state, a fixed size); without
it, step t re-runs the whole 64 + t tokens (Σ_t (64 + t) ≈ 49k token-positions). The tokens must
be identical; the ratio must be at least 5× (the KV-cache benchmark's target for the GPT).
Run with ``make bench``.
"""

import time

import torch

from autoregressive import generate
from ssm import MambaLM

PROMPT, NEW, TARGET = 64, 256, 5.0


def test_recurrent_generation_vs_rerunning():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = MambaLM(103, 128, 7).eval()
    prompt = torch.randint(103, (PROMPT,), generator=torch.Generator().manual_seed(1))
    t_cache = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        with_cache = generate(model, prompt, NEW, greedy=True, kv_cache=True)
        t_cache = min(t_cache, time.perf_counter() - t0)
    t0 = time.perf_counter()
    rerun = generate(model, prompt, NEW, greedy=True, kv_cache=False)
    t_full = time.perf_counter() - t0
    ratio = t_full / t_cache
    print(f"\nMamba generation, {NEW} new tokens after a {PROMPT}-token prompt "
          f"({model.num_parameters():,} parameters, 1 thread): re-running {t_full:.2f} s, "
          f"recurrent cache {t_cache:.2f} s ({NEW / t_cache:.0f} tokens/s): {ratio:.1f}x faster; "
          f"identical tokens: {torch.equal(with_cache, rerun)}")
    assert torch.equal(with_cache, rerun)
    assert ratio >= TARGET
