"""Jensen and variational bounds: the ELBO and the importance-weighted bound
(03_jensen_and_variational_bounds)."""

__all__: list[str] = []
