"""Text for the sequence models: two corpora, a character tokenizer, and a stateless sampler of
training windows.

Corpora (:func:`text_corpus`). ``"pydoc"`` is the English help text that ships with Python in
``pydoc_data.topics`` (about 465k characters; the exact text follows the Python version), always
available offline. ``"tinyshakespeare"`` is Karpathy's char-rnn file (1,115,394 characters), for the
gpu profile; it is read from ``data_root(root)/tinyshakespeare/input.txt`` and downloaded only when
asked. Either corpus x_1..x_N (N characters) is cut contiguously, never shuffled, so that held-out
text really follows the training text:

    train = x[0 : a],  val = x[a : b],  test = x[b : N],  a = floor(0.90 N), b = floor(0.95 N).

Characters (:class:`CharTokenizer`). The vocabulary is the V distinct characters of the fitted
text in code-point order, c_0 < c_1 < ... < c_{V-1}; encode maps c_i -> i, decode maps i -> c_i.

Windows (:func:`sequence_batches`). From a token stream t_0..t_{N-1} a batch of B windows of
length T = block starts at offsets o_b drawn uniformly from {0, ..., N - T - 1} (n_offsets = N - T
choices) and gives next-token pairs

    x[b, i] = t[o_b + i],   y[b, i] = t[o_b + i + 1] = x[b, i + 1]   (i = 0..T-1),  x, y: (B, T).

The offsets of step s come from a generator seeded by hashing (seed, s), so a batch depends on its
step alone (like :func:`utils.data.batches`): a resumed run needs no sampler state.
"""

from __future__ import annotations

import itertools
import os
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.error import URLError

import numpy as np
import torch

from utils.data.torchvision_sets import DATA_ENV_VAR, data_root
from utils.validation import check_choice, check_int, is_int, shape_of

__all__ = ["TEXT_CORPORA", "TEXT_SPLITS", "TINYSHAKESPEARE_URL", "CharTokenizer",
           "SequenceBatches", "sequence_batches", "text_corpus"]

TEXT_CORPORA = ("pydoc", "tinyshakespeare")
TEXT_SPLITS = ("train", "val", "test")
TINYSHAKESPEARE_URL = ("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/"
                       "tinyshakespeare/input.txt")
TINYSHAKESPEARE_FILE = Path("tinyshakespeare") / "input.txt"
_SPLIT_PERCENT = {"train": (0, 90), "val": (90, 95), "test": (95, 100)}
_OFFLINE = ('text_corpus("pydoc") (the ~465k characters of English help text that ship with '
            "Python in pydoc_data.topics)")


def text_corpus(name: str = "pydoc", split: str = "train", *, root: str | os.PathLike | None = None,
                download: bool = False) -> str:
    """One split of a text corpus, as a string.

    Args:
        name: ``"pydoc"`` (offline, ships with Python) or ``"tinyshakespeare"``.
        split: ``"train"`` (first 90% of the characters), ``"val"`` (next 5%) or ``"test"``
            (last 5%); the three concatenate back to the whole corpus.
        root: data folder for tinyshakespeare (see :func:`utils.data.data_root`); unused by pydoc.
        download: fetch tinyshakespeare from ``TINYSHAKESPEARE_URL`` if its file is missing.

    Raises:
        ValueError: unknown name or split, or a corpus too short to have this split.
        FileNotFoundError: tinyshakespeare is missing and ``download`` is False.
        RuntimeError: its download failed; both errors name the offline corpus.
    """
    name = check_choice("name", name, TEXT_CORPORA)
    split = check_choice("split", split, TEXT_SPLITS)
    if not isinstance(download, bool):
        raise ValueError(f"download must be a bool, got {download!r}")
    if name == "pydoc":
        import pydoc_data.topics

        topics = pydoc_data.topics.topics
        text, source = "".join(topics[k] for k in sorted(topics)), "pydoc_data.topics"
    else:
        path = data_root(root) / TINYSHAKESPEARE_FILE
        if not path.is_file():
            _download_tinyshakespeare(path, download)
        with open(path, encoding="utf-8", newline="") as f:  # newline="": keep the text exact
            text, source = f.read(), str(path)
    n = len(text)
    start, stop = (n * lo // 100 for lo in _SPLIT_PERCENT[split])
    if start == stop:
        raise ValueError(f"the {name} corpus ({source}) has only {n} characters: too short for a "
                         f"non-empty {split!r} split (characters [{start}, {stop}))")
    return text[start:stop]


def _download_tinyshakespeare(path: Path, download: bool) -> None:
    """Fetch Karpathy's file into ``path`` (written whole, then renamed), or explain why not."""
    if not download:
        raise FileNotFoundError(
            f"TinyShakespeare not found at {path}. Download it once with utils.data.text_corpus("
            f'"tinyshakespeare", download=True) (needs internet), or point root / ${DATA_ENV_VAR} '
            f"at a folder that has {TINYSHAKESPEARE_FILE}; offline, use {_OFFLINE} instead.")
    try:
        with urllib.request.urlopen(TINYSHAKESPEARE_URL, timeout=60) as response:
            data = response.read()
    except (URLError, OSError) as error:  # URLError is an OSError; so are timeouts
        raise RuntimeError(
            f"could not download TinyShakespeare from {TINYSHAKESPEARE_URL} "
            f"({type(error).__name__}: {error}). Without network, use {_OFFLINE} instead."
        ) from error
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    partial.write_bytes(data)
    partial.replace(path)


class CharTokenizer:
    """Characters <-> ids: c_i <-> i over the sorted distinct characters of a text.

    Build with :meth:`fit` (or :meth:`from_dict`). Attributes: ``chars``, the tuple
    (c_0, ..., c_{V-1}) in code-point order; ``vocab_size``, V.
    """

    def __init__(self, chars: Sequence[str]) -> None:
        chars = tuple(chars)
        if not chars or not all(isinstance(c, str) and len(c) == 1 for c in chars):
            raise ValueError(f"chars must be a non-empty sequence of single characters, got "
                             f"{chars[:10]!r}")
        if list(chars) != sorted(set(chars)):
            raise ValueError("chars must be distinct and sorted by code point")
        self.chars = chars
        self.vocab_size = len(chars)
        self._index = {c: i for i, c in enumerate(chars)}

    @classmethod
    def fit(cls, text: str) -> CharTokenizer:
        """The tokenizer whose vocabulary is the distinct characters of ``text`` (non-empty)."""
        if not isinstance(text, str) or not text:
            raise ValueError(f"fit needs a non-empty str, got {text!r:.40}")
        return cls(sorted(set(text)))

    def encode(self, text: str) -> torch.Tensor:
        """``text`` of length N -> ids (N,) int64; a character outside the vocabulary is a
        ``ValueError`` that names it."""
        if not isinstance(text, str):
            raise ValueError(f"encode needs a str, got {type(text).__name__}")
        try:
            ids = [self._index[c] for c in text]
        except KeyError as error:
            c = error.args[0]
            raise ValueError(f"character {c!r} (U+{ord(c):04X}, first at position "
                             f"{text.index(c)}) is not in this tokenizer's {self.vocab_size} "
                             f"characters") from None
        return torch.tensor(ids, dtype=torch.int64)

    def decode(self, ids: torch.Tensor | Sequence[int]) -> str:
        """ids (N,) (a 1-D integer tensor or a sequence of ints) -> the text of N characters."""
        return "".join(self.chars[i] for i in _check_ids(ids, self.vocab_size))

    def to_dict(self) -> dict:
        """Plain data (JSON-able) that :meth:`from_dict` turns back into this tokenizer."""
        return {"kind": "char", "chars": "".join(self.chars)}

    @classmethod
    def from_dict(cls, d: dict) -> CharTokenizer:
        """The tokenizer that :meth:`to_dict` described."""
        if not isinstance(d, dict) or d.get("kind") != "char" \
                or not isinstance(d.get("chars"), str):
            raise ValueError(f"expected a dict {{'kind': 'char', 'chars': str}} from "
                             f"CharTokenizer.to_dict(), got {d!r:.80}")
        return cls(d["chars"])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharTokenizer) and self.chars == other.chars

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


def _check_ids(ids: torch.Tensor | Sequence[int], vocab_size: int) -> list[int]:
    """``ids`` as a list of ints in [0, vocab_size); else a ``ValueError`` (for decoders)."""
    if isinstance(ids, torch.Tensor):
        if ids.ndim != 1 or ids.dtype.is_floating_point or ids.dtype.is_complex \
                or ids.dtype == torch.bool:
            raise ValueError(f"ids must be a 1-D integer tensor, got shape {tuple(ids.shape)} "
                             f"{ids.dtype}")
        ids = ids.tolist()
    elif isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence) \
            or not all(is_int(i) for i in ids):
        raise ValueError(f"ids must be a 1-D integer tensor or a sequence of ints, got "
                         f"{shape_of(ids)}")
    bad = [i for i in ids if not 0 <= i < vocab_size]
    if bad:
        raise ValueError(f"ids must lie in [0, {vocab_size}), got {bad[0]} ({len(bad)} out of "
                         f"range)")
    return [int(i) for i in ids]


class SequenceBatches:
    """Callable ``step -> (x, y)`` over a token stream; see :func:`sequence_batches`.

    Attributes:
        tokens: the stream (N,), on its own device.
        block: T, the window length.
        batch_size: B.
        seed: as given.
        n_offsets: N - T, the number of valid offsets 0..N-T-1.
    """

    def __init__(self, tokens: torch.Tensor, block: int, batch_size: int, seed: int) -> None:
        if not isinstance(tokens, torch.Tensor) or tokens.ndim != 1 \
                or tokens.dtype.is_floating_point or tokens.dtype.is_complex \
                or tokens.dtype == torch.bool:
            dtype = f" {tokens.dtype}" if isinstance(tokens, torch.Tensor) else ""
            raise ValueError(f"tokens must be a 1-D integer tensor (N,), got "
                             f"{shape_of(tokens)}{dtype}")
        self.block = check_int("block", block, minimum=1)
        if self.block >= len(tokens):
            raise ValueError(f"block must be < len(tokens) = {len(tokens)} (a window needs "
                             f"block + 1 tokens), got {self.block}")
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.seed = check_int("seed", seed, minimum=0)
        self.tokens = tokens
        self.n_offsets = len(tokens) - self.block
        self._window = torch.arange(self.block + 1, device=tokens.device)  # 0..T

    def offsets(self, step: int) -> torch.Tensor:
        """The window starts o of step ``step`` (an integer >= 0): (B,) int64 on the CPU,
        uniform on {0, ..., n_offsets - 1}, drawn by a generator seeded with the first 64-bit
        word of ``numpy.random.SeedSequence([seed, step])``."""
        step = check_int("step", step, minimum=0)
        derived = int(np.random.SeedSequence([self.seed, step]).generate_state(1, np.uint64)[0])
        generator = torch.Generator().manual_seed(derived)
        return torch.randint(self.n_offsets, (self.batch_size,), generator=generator)

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) of step ``step``: int64 (B, T) each on the tokens' device, y[:, i] = x[:, i+1]
        continued one token past the window."""
        o = self.offsets(step).to(self.tokens.device)
        window = self.tokens[o[:, None] + self._window].to(torch.int64)  # (B, T + 1)
        return window[:, :-1], window[:, 1:]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of steps 0, 1, 2, ... forever."""
        return (self(step) for step in itertools.count())

    def __repr__(self) -> str:
        return (f"SequenceBatches(n_tokens={len(self.tokens)}, block={self.block}, "
                f"batch_size={self.batch_size}, seed={self.seed}, n_offsets={self.n_offsets}, "
                f"device={self.tokens.device})")


def sequence_batches(tokens: torch.Tensor, block: int, batch_size: int,
                     seed: int = 0) -> SequenceBatches:
    """A deterministic, stateless, infinite sampler of next-token windows for language models.

    ``b = sequence_batches(tokens, block=T, batch_size=B)``; ``b(s)`` is the pair (x, y) of
    global step s: x[k] = tokens[o_k : o_k + T], y[k] = tokens[o_k + 1 : o_k + 1 + T], with the
    B offsets o = ``b.offsets(s)`` uniform on {0, ..., N - T - 1} (with replacement). The same
    step gives the same batch, in this object or a fresh one, so ``utils.training.fit`` resumes
    exactly.

    Args:
        tokens: the token stream (N,), any integer dtype, on any device (indexed there).
        block: T, an integer in [1, N - 1].
        batch_size: B, an integer >= 1.
        seed: integer >= 0; picks the sequence of offsets.

    Returns:
        A :class:`SequenceBatches`; calling it with a step gives (x, y), int64 (B, T) each.
    """
    return SequenceBatches(tokens, block, batch_size, seed)
