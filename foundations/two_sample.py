"""Two-sample statistics: is a set of samples drawn from the same distribution as another?
(06_score_and_tweedie checks Langevin samples with them)."""

__all__: list[str] = []
