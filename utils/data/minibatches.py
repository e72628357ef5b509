"""A stateless minibatch sampler: the batch of global step s depends on s alone.

Step s lies in epoch e = s // steps_per_epoch at position i = s mod steps_per_epoch; epoch e
shuffles the N examples with its own permutation pi_e, drawn by ``torch.randperm`` from a
generator seeded with a number derived from (seed, e), and step s takes the slice
pi_e[i B : (i + 1) B] (B = batch_size). So a run resumed at step s asks for ``batches(s)`` and gets
exactly the batch an uninterrupted run would have had there; no sampler state needs saving.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import torch

from utils.validation import check_int, is_int

__all__ = ["Batches", "batches", "epoch_permutation"]


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffle pi_e of epoch ``epoch``: (n,) int64, a permutation of 0..n-1.

    Drawn by ``torch.randperm(n)`` from ``torch.Generator().manual_seed(s)``, with s the first
    64-bit word of ``numpy.random.SeedSequence([seed, epoch])``: a hash of the pair, so that
    (seed, epoch + 1) and (seed + 1, epoch) do not share a shuffle as with s = seed + epoch.
    """
    n = check_int("n", n, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    epoch = check_int("epoch", epoch, minimum=0)
    derived = int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0])
    return torch.randperm(n, generator=torch.Generator().manual_seed(derived))


class Batches:
    """Callable ``step -> batch`` over fixed tensors; see :func:`batches`.

    Attributes:
        n: number of examples N (the tensors' common first dimension).
        batch_size: B.
        steps_per_epoch: N // B with ``drop_last``, else ceil(N / B).
        seed, drop_last: as given.
    """

    def __init__(self, tensors: tuple[torch.Tensor, ...], batch_size: int, seed: int,
                 drop_last: bool) -> None:
        if len(tensors) == 0:
            raise ValueError("batches needs at least one tensor, got none")
        for position, t in enumerate(tensors):
            if not isinstance(t, torch.Tensor) or t.ndim == 0:
                got = "a 0-d tensor" if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"tensor {position} must be a torch.Tensor with a first "
                                 f"(example) dimension, got {got}")
        lengths = [len(t) for t in tensors]
        if len(set(lengths)) != 1:
            raise ValueError(f"all tensors must have the same first dimension, got {lengths}")
        self.n = lengths[0]
        if self.n == 0:
            raise ValueError("the tensors hold no examples (first dimension 0)")
        if not is_int(batch_size) or not 1 <= batch_size <= self.n:
            raise ValueError(f"batch_size must be an integer in [1, N = {self.n}], got "
                             f"{batch_size!r}")
        if not isinstance(drop_last, bool):
            raise ValueError(f"drop_last must be a bool, got {drop_last!r}")
        self.tensors = tensors
        self.batch_size = int(batch_size)
        self.seed = check_int("seed", seed, minimum=0)
        self.drop_last = drop_last
        full, rest = divmod(self.n, self.batch_size)
        self.steps_per_epoch = full if drop_last or rest == 0 else full + 1
        self._cache: tuple[int, torch.Tensor] | None = None  # (epoch, pi_e): a cache, not state

    def index(self, step: int) -> torch.Tensor:
        """The example indices of global step ``step`` (an integer >= 0): (B,) int64, or fewer
        than B at the end of an epoch when ``drop_last`` is False."""
        step = check_int("step", step, minimum=0)
        epoch, i = divmod(step, self.steps_per_epoch)
        if self._cache is None or self._cache[0] != epoch:
            self._cache = (epoch, epoch_permutation(self.n, self.seed, epoch))
        return self._cache[1][i * self.batch_size:(i + 1) * self.batch_size]

    def __call__(self, step: int) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """The batch of global step ``step``: each tensor indexed by :meth:`index`; a single
        tensor when one was given, else a tuple in the given order."""
        index = self.index(step)
        batch = tuple(t[index.to(t.device)] for t in self.tensors)
        return batch[0] if len(batch) == 1 else batch

    def __iter__(self) -> Iterator[torch.Tensor | tuple[torch.Tensor, ...]]:
        """The batches of steps 0, 1, 2, ... forever."""
        return (self(step) for step in itertools.count())

    def __repr__(self) -> str:
        return (f"Batches(n={self.n}, batch_size={self.batch_size}, seed={self.seed}, "
                f"drop_last={self.drop_last}, steps_per_epoch={self.steps_per_epoch})")


def batches(*tensors: torch.Tensor, batch_size: int, seed: int = 0,
            drop_last: bool = True) -> Batches:
    """A deterministic, stateless, infinite minibatch sampler for the training loop.

    ``b = batches(x, y, batch_size=256)``; ``b(s)`` is the batch ``(x[idx], y[idx])`` of global
    step s, with idx = pi_e[i B : (i + 1) B], e = s // b.steps_per_epoch, i = s mod
    b.steps_per_epoch and pi_e = :func:`epoch_permutation` (N, seed, e). Every epoch visits every
    example once (all but the N mod B left over when ``drop_last``). ``iter(b)`` yields the
    batches of steps 0, 1, 2, ... forever.

    Args:
        *tensors: one or more tensors with the same first dimension N >= 1 (any device).
        batch_size: B, an integer in [1, N].
        seed: integer >= 0; picks the sequence of permutations.
        drop_last: True: N // B steps per epoch, all of size B; False: ceil(N / B) steps, the
            last one of size N - (ceil(N / B) - 1) B.

    Returns:
        A :class:`Batches`; calling it with a step gives a tensor (B, ...) when one tensor was
        given, else a tuple of them.
    """
    return Batches(tensors, batch_size, seed, drop_last)
