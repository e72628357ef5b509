"""Autoregressive models: the AR factorisation, RNNs, transformers, (multi-head) self-attention,
causal masking and decoding.

Planned: this part of the book is not written yet; see the README's reading-order table.
"""

__all__: list[str] = []
