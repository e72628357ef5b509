"""State-space models: continuous and discrete SSMs, S4, Mamba, parallel scans vs convolutions.

Planned: this part of the book is not written yet; see the README's reading-order table.
"""

__all__: list[str] = []
