"""Scores, Langevin dynamics, Tweedie's formula, denoising score matching (06_score_and_tweedie)."""

__all__: list[str] = []
