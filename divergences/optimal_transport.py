"""Discrete optimal transport: the exact linear program and log-domain Sinkhorn."""

__all__: list[str] = []
