"""Gradient dynamics of two-player games: simultaneous, alternating, extragradient and
optimistic updates."""

__all__: list[str] = []
