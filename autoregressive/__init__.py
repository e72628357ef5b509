"""Autoregressive models: the AR factorisation, n-grams with Kneser-Ney smoothing, MADE, RNNs,
(multi-head) self-attention, causal masking, position encodings, a GPT, and decoding with a KV
cache.

Each module lists its public names in ``__all__``; this package re-exports all of them, so a
notebook writes ``from autoregressive import GPT, generate``.

The sequence models here share one protocol, which ``generate``, ``lm_step`` and ``evaluate_lm``
rely on (and ``ssm``'s Mamba follows too): ``model(idx)`` maps int64 tokens (B, T) to logits
(B, T, V); ``model.block_size`` is the longest context (``None``: unbounded); and
``model(idx, cache=model.init_cache(B))`` continues from the state the cache holds, returning the
logits of the new tokens only and updating the cache in place.
"""

from autoregressive import (
    attention,
    bptt,
    decoding,
    factorization,
    gpt,
    lm_head,
    made,
    ngram,
    positions,
    rnn,
    training_step,
)
from autoregressive.attention import *  # noqa: F403
from autoregressive.bptt import *  # noqa: F403
from autoregressive.decoding import *  # noqa: F403
from autoregressive.factorization import *  # noqa: F403
from autoregressive.gpt import *  # noqa: F403
from autoregressive.lm_head import *  # noqa: F403
from autoregressive.made import *  # noqa: F403
from autoregressive.ngram import *  # noqa: F403
from autoregressive.positions import *  # noqa: F403
from autoregressive.rnn import *  # noqa: F403
from autoregressive.training_step import *  # noqa: F403

__all__ = [*factorization.__all__, *ngram.__all__, *made.__all__, *rnn.__all__, *bptt.__all__,
           *attention.__all__, *positions.__all__, *gpt.__all__, *lm_head.__all__,
           *decoding.__all__,
           *training_step.__all__]
