"""Monte Carlo estimation and importance sampling (04_law_of_large_numbers)."""

__all__: list[str] = []
