"""The synthetic sequence tasks of the Mamba paper (Gu & Dao 2023, §4.1, Appendix E.1), scaled
down: selective copying and induction heads. Fresh examples at every step (the data are
infinite, as in the paper), deterministic given a seed.

**Selective copying.** ``n_data`` data tokens (values 0 … n_values − 1, drawn uniformly) sit at
random distinct positions among ``n_slots`` slots; every other slot holds the noise token
``NOISE = n_values``. Then come ``n_data`` copies of the marker ``MARKER = n_values + 1``; at
the k-th marker the model must output the k-th data token. So x has length n_slots + n_data,
and y is ``IGNORE`` (−100, not scored) except at the markers, where it is the data tokens in
order. Where the data sit changes from example to example, so a model must decide from the
*content* of each token whether to keep it: what a time-invariant (LTI) filter cannot do.

**Induction heads** (associative recall with one key). A sequence of ``seq_len`` tokens drawn
uniformly from 0 … n_values − 1 holds the trigger ``TRIGGER = n_values`` once, at a random
position p ≤ seq_len − 3, followed by a value b = x[p + 1]; the last token is the trigger again,
and the model must output b there (y is ``IGNORE`` everywhere else).

For either task chance is 1 / n_values per scored token, a cross-entropy of ln n_values.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch

from utils.validation import check_choice, check_int, shape_of

__all__ = ["IGNORE", "TASKS", "SequenceTask", "TaskBatches", "answer_accuracy",
           "induction_heads", "selective_copying", "task_batches"]

IGNORE = -100  # a target that is not scored (the value of autoregressive.IGNORE)
TASKS = ("selective_copying", "induction_heads")


class SequenceTask(NamedTuple):
    """x (n, T) int64 inputs; y (n, T) int64 targets, IGNORE where not scored; vocab_size V
    of x (the data values, then the task's special tokens)."""

    x: torch.Tensor
    y: torch.Tensor
    vocab_size: int


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(check_int("seed", seed, minimum=0))


def selective_copying(n: int, *, n_slots: int = 64, n_data: int = 8, n_values: int = 8,
                      seed: int = 0) -> SequenceTask:
    """``n`` selective-copying examples (see the module docstring); V = n_values + 2."""
    n = check_int("n", n, minimum=1)
    n_slots = check_int("n_slots", n_slots, minimum=1)
    n_data = check_int("n_data", n_data, minimum=1)
    n_values = check_int("n_values", n_values, minimum=2)
    if n_data > n_slots:
        raise ValueError(f"n_data ({n_data}) data tokens do not fit in n_slots = {n_slots}")
    g = _generator(seed)
    noise, marker = n_values, n_values + 1
    # the data positions: the n_data smallest of a random permutation of the slots, in order
    positions = torch.rand(n, n_slots, generator=g).argsort(-1)[:, :n_data].sort(-1).values
    values = torch.randint(n_values, (n, n_data), generator=g)
    x = torch.full((n, n_slots + n_data), noise, dtype=torch.int64)
    x.scatter_(1, positions, values)
    x[:, n_slots:] = marker
    y = torch.full_like(x, IGNORE)
    y[:, n_slots:] = values
    return SequenceTask(x, y, n_values + 2)


def induction_heads(n: int, *, seq_len: int = 64, n_values: int = 16,
                    seed: int = 0) -> SequenceTask:
    """``n`` induction-head examples (see the module docstring); V = n_values + 1."""
    n = check_int("n", n, minimum=1)
    seq_len = check_int("seq_len", seq_len, minimum=4)
    n_values = check_int("n_values", n_values, minimum=2)
    g = _generator(seed)
    trigger = n_values
    x = torch.randint(n_values, (n, seq_len), generator=g)
    p = torch.randint(seq_len - 2, (n,), generator=g)          # 0 … seq_len − 3
    rows = torch.arange(n)
    x[rows, p] = trigger
    x[:, -1] = trigger
    y = torch.full_like(x, IGNORE)
    y[:, -1] = x[rows, p + 1]
    return SequenceTask(x, y, n_values + 1)


_MAKERS = {"selective_copying": selective_copying, "induction_heads": induction_heads}


class TaskBatches:
    """Callable ``step -> (x, y)``: a fresh batch of the task for every step, drawn with the
    seed ``numpy.random.SeedSequence([seed, step])`` gives (stateless, so a resumed run sees
    the batches an uninterrupted one would). ``vocab_size`` is the task's V."""

    def __init__(self, task: str, batch_size: int, *, seed: int = 0, **task_kwargs) -> None:
        self.task = check_choice("task", task, TASKS)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.seed = check_int("seed", seed, minimum=0)
        self.task_kwargs = task_kwargs
        self.vocab_size = _MAKERS[task](1, **task_kwargs).vocab_size   # checks the kwargs

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        step = check_int("step", step, minimum=0)
        derived = int(np.random.SeedSequence([self.seed, step]).generate_state(1, np.uint32)[0])
        data = _MAKERS[self.task](self.batch_size, seed=derived, **self.task_kwargs)
        return data.x, data.y

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        step = 0
        while True:
            yield self(step)
            step += 1


def task_batches(task: str, batch_size: int, *, seed: int = 0, **task_kwargs) -> TaskBatches:
    """A stateless batch sampler of ``task`` ("selective_copying" or "induction_heads") for
    :func:`utils.training.fit`; ``task_kwargs`` go to the task's generator."""
    return TaskBatches(task, batch_size, seed=seed, **task_kwargs)


def answer_accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """The fraction of scored targets (y ≠ IGNORE) whose argmax logit is right; logits
    (B, T, V), y (B, T)."""
    if not isinstance(logits, torch.Tensor) or not isinstance(y, torch.Tensor) \
            or logits.ndim != 3 or y.shape != logits.shape[:2]:
        raise ValueError(f"logits must be (B, T, V) and y (B, T), got {shape_of(logits)} and "
                         f"{shape_of(y)}")
    scored = y != IGNORE
    if not bool(scored.any()):
        raise ValueError("y scores no position (every target is IGNORE)")
    return float((logits.argmax(-1)[scored] == y[scored]).double().mean())
