"""Byte-level byte-pair encoding (BPE), trained by the book's own code, in GPT-2's scheme.

Text -> bytes. A string is encoded as UTF-8, so the 256 byte values are the first 256 tokens and
every string, in any script, has an encoding: a character never seen in training falls back to
its bytes.

Pre-tokenisation. The text is first cut into chunks by :data:`BPE_PATTERN` (:func:`pretokenize`),
and merges never cross a chunk boundary, so a token never glues a word to the punctuation or the
space after it. The pattern follows GPT-2's

    's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+

(contractions; an optional space then letters, or digits, or other symbols; runs of whitespace,
whose last space goes with the next word). The stdlib ``re`` has no ``\\p{...}`` classes, so we
write letters as ``[^\\W\\d_]`` (word characters that are neither decimal digits nor ``_``) and
digits as ``\\d`` (Unicode category Nd). The difference from GPT-2: numeric characters that are not
decimal digits (categories Nl, No: "²", "½", "Ⅻ") count as letters here and as numbers there.
The alternatives cover every character, so the chunks concatenate back to the text.

Training (:meth:`BPETokenizer.train`). With every chunk a sequence of token ids (its bytes at
first), count each adjacent pair (a, b) inside a chunk, weighted by how often the chunk occurs
(overlapping pairs count: "aaa" holds (a, a) twice); merge the most frequent pair, ties going to
the pair that sorts first, into the new token 256 + k, with bytes(256 + k) = bytes(a) + bytes(b);
repeat until ``vocab_size`` tokens (or no pair is left). Merge k has rank k. The work is done on
the unique chunks with their counts, and only the chunks holding the merged pair are updated.

Encoding (:meth:`BPETokenizer.encode`), as GPT-2 does: within each chunk, repeatedly merge every
occurrence (left to right) of the pair of lowest rank present, until no pair has a rank. Chunk
encodings are cached. Decoding joins the tokens' bytes and decodes UTF-8 (errors="replace").
"""

from __future__ import annotations

import heapq
import re
from collections import Counter, defaultdict
from collections.abc import Sequence

import torch
from tqdm import tqdm

from utils.data.text import _check_ids
from utils.validation import is_int

__all__ = ["BPE_PATTERN", "BPETokenizer", "pretokenize"]

BPE_PATTERN = r"""'(?:s|t|re|ve|m|ll|d)| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+"""
_CHUNK = re.compile(BPE_PATTERN)
N_BYTES = 256


def pretokenize(text: str) -> list[str]:
    """The chunks of ``text`` under :data:`BPE_PATTERN`; ``"".join(chunks) == text``."""
    return _CHUNK.findall(text)


def merge_pair(ids: list[int], pair: tuple[int, int], new: int) -> list[int]:
    """``ids`` with every occurrence of ``pair``, scanned left to right, replaced by ``new``."""
    a, b = pair
    out, i, n = [], 0, len(ids)
    while i < n:
        if i + 1 < n and ids[i] == a and ids[i + 1] == b:
            out.append(new)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _utf8(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise ValueError(f"{what} needs a str, got {type(text).__name__}")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as error:  # lone surrogates have no UTF-8 form
        raise ValueError(f"{what}: the text is not valid Unicode ({error})") from None


class BPETokenizer:
    """A byte-level BPE tokenizer: ``merges`` in rank order and the ``vocab`` they define.

    Build with :meth:`train` (or :meth:`from_dict`). Attributes: ``merges``, list of pairs
    (a, b), merge k making token 256 + k; ``vocab``, dict id -> bytes; ``vocab_size``,
    256 + len(merges).
    """

    def __init__(self, merges: Sequence[tuple[int, int]] = ()) -> None:
        self.merges: list[tuple[int, int]] = []
        self.vocab: dict[int, bytes] = {i: bytes([i]) for i in range(N_BYTES)}
        for k, pair in enumerate(merges):
            new = N_BYTES + k
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2
                    and all(is_int(t) and 0 <= t < new for t in pair)):
                raise ValueError(f"merge {k} must be a pair of token ids in [0, {new}), got "
                                 f"{pair!r}")
            a, b = int(pair[0]), int(pair[1])
            self.merges.append((a, b))
            self.vocab[new] = self.vocab[a] + self.vocab[b]
        self.vocab_size = len(self.vocab)
        self.ranks = {pair: k for k, pair in enumerate(self.merges)}
        self._cache: dict[str, list[int]] = {}  # chunk -> its ids: a cache, not state

    @classmethod
    def train(cls, text: str, vocab_size: int, *, progress: bool = True) -> BPETokenizer:
        """Learn vocab_size - 256 merges from ``text`` (fewer if its chunks run out of pairs).

        Args:
            text: the training text (a str).
            vocab_size: an integer >= 256 (the byte tokens come first).
            progress: show a tqdm bar over the merges.
        """
        if not is_int(vocab_size) or vocab_size < N_BYTES:
            raise ValueError(f"vocab_size must be an integer >= {N_BYTES} (the byte tokens), got "
                             f"{vocab_size!r}")
        _utf8(text, "train")
        chunk_counts = Counter(pretokenize(text))
        words = [list(chunk.encode("utf-8")) for chunk in chunk_counts]  # unique chunks
        freq = list(chunk_counts.values())
        counts: defaultdict[tuple[int, int], int] = defaultdict(int)  # pair -> weighted count
        where: defaultdict[tuple[int, int], set[int]] = defaultdict(set)  # pair -> chunks
        for j, ids in enumerate(words):
            for pair in zip(ids, ids[1:]):
                counts[pair] += freq[j]
                where[pair].add(j)
        # Max-heap on (count, then the smaller pair) with lazy deletion: an entry is current
        # only if its count still equals counts[pair].
        heap = [(-c, pair) for pair, c in counts.items()]
        heapq.heapify(heap)
        merges: list[tuple[int, int]] = []
        bar = tqdm(total=int(vocab_size) - N_BYTES, desc="BPE merges", disable=not progress,
                   mininterval=1.0, dynamic_ncols=True)
        try:
            while len(merges) < vocab_size - N_BYTES:
                best = None
                while heap:
                    c, pair = heapq.heappop(heap)
                    if c < 0 and counts.get(pair) == -c:
                        best = pair
                        break
                if best is None:  # no adjacent pair left inside any chunk
                    break
                new = N_BYTES + len(merges)
                merges.append(best)
                changed = set()
                for j in where.pop(best):
                    ids = words[j]
                    merged = merge_pair(ids, best, new)
                    if len(merged) == len(ids):
                        continue
                    for pair in zip(ids, ids[1:]):  # take the chunk's old pairs out ...
                        counts[pair] -= freq[j]
                        changed.add(pair)
                    for pair in zip(merged, merged[1:]):  # ... and its new ones in
                        counts[pair] += freq[j]
                        where[pair].add(j)
                        changed.add(pair)
                    words[j] = merged
                counts.pop(best, None)
                for pair in changed:
                    c = counts.get(pair, 0)
                    if c > 0:
                        heapq.heappush(heap, (-c, pair))
                    else:
                        counts.pop(pair, None)
                bar.update(1)
        finally:
            bar.close()
        return cls(merges)

    def _encode_chunk(self, chunk: str) -> list[int]:
        ids = self._cache.get(chunk)
        if ids is None:
            ids = list(chunk.encode("utf-8"))
            while len(ids) > 1:
                pair = min(zip(ids, ids[1:]), key=lambda p: self.ranks.get(p, len(self.ranks)))
                if pair not in self.ranks:
                    break
                ids = merge_pair(ids, pair, N_BYTES + self.ranks[pair])
            self._cache[chunk] = ids
        return ids

    def encode(self, text: str) -> torch.Tensor:
        """``text`` -> token ids (N,) int64, N <= len(text.encode("utf-8"))."""
        _utf8(text, "encode")
        ids = [i for chunk in pretokenize(text) for i in self._encode_chunk(chunk)]
        return torch.tensor(ids, dtype=torch.int64)

    def decode(self, ids: torch.Tensor | Sequence[int]) -> str:
        """Token ids (N,) (a 1-D integer tensor or a sequence of ints) -> text; bytes that are
        not valid UTF-8 (a cut-off character) become U+FFFD."""
        data = b"".join(self.vocab[i] for i in _check_ids(ids, self.vocab_size))
        return data.decode("utf-8", errors="replace")

    def compression_ratio(self, text: str) -> float:
        """UTF-8 bytes per token on ``text`` (non-empty): len(text.encode()) / len(encode(text));
        1 with no merges, larger the more the merges fit the text."""
        n_bytes = len(_utf8(text, "compression_ratio"))
        if n_bytes == 0:
            raise ValueError("compression_ratio needs a non-empty text")
        return n_bytes / len(self.encode(text))

    def to_dict(self) -> dict:
        """Plain data (JSON-able) that :meth:`from_dict` turns back into this tokenizer."""
        return {"kind": "bpe", "pattern": BPE_PATTERN, "merges": [list(p) for p in self.merges]}

    @classmethod
    def from_dict(cls, d: dict) -> BPETokenizer:
        """The tokenizer that :meth:`to_dict` described (with the same pre-tokenisation)."""
        if not isinstance(d, dict) or d.get("kind") != "bpe" or not isinstance(d.get("merges"),
                                                                                list):
            raise ValueError(f"expected a dict {{'kind': 'bpe', 'merges': [...]}} from "
                             f"BPETokenizer.to_dict(), got {d!r:.80}")
        if d.get("pattern", BPE_PATTERN) != BPE_PATTERN:
            raise ValueError(f"this tokenizer was trained with the pre-tokenisation pattern "
                             f"{d['pattern']!r}, not this module's {BPE_PATTERN!r}")
        return cls([tuple(p) if isinstance(p, list) else p for p in d["merges"]])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BPETokenizer) and self.merges == other.merges

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size})"
