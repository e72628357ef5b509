"""Tests for utils.data.bpe: the pre-tokenisation, merges computed by hand and by a naive
reference trainer, encoding against a reference encoder, lossless round trips on any Unicode, and
compression on held-out text."""

import json
import time
from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from utils.data import BPE_PATTERN, BPETokenizer, pretokenize, text_corpus

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def train_text():
    return text_corpus("pydoc", "train")


@pytest.fixture(scope="module")
def val_text():
    return text_corpus("pydoc", "val")


@pytest.fixture(scope="module")
def tokenizers(train_text):
    """vocab_size -> a tokenizer trained on the pydoc train split."""
    return {v: BPETokenizer.train(train_text, v, progress=False) for v in (256, 300, 512, 1024)}


def _merge(ids, pair, new):
    """The test's own left-to-right, non-overlapping replacement of ``pair`` by ``new``."""
    out, i = [], 0
    while i < len(ids):
        if tuple(ids[i:i + 2]) == pair:
            out.append(new)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _naive_train(text, n_merges):
    """Textbook BPE over every chunk occurrence, recounting all pairs before each merge."""
    words = [list(chunk.encode("utf-8")) for chunk in pretokenize(text)]
    merges = []
    for k in range(n_merges):
        counts = Counter(p for w in words for p in zip(w, w[1:]))
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        merges.append(best)
        words = [_merge(w, best, 256 + k) for w in words]
    return merges


def _reference_encode(merges, text):
    """Apply every merge in rank order to each chunk: equal to GPT-2's lowest-rank-first, since
    a merge only creates pairs that hold the new token, whose ranks come later."""
    out = []
    for chunk in pretokenize(text):
        ids = list(chunk.encode("utf-8"))
        for k, pair in enumerate(merges):
            ids = _merge(ids, pair, 256 + k)
        out += ids
    return out


def test_reference_merge_does_not_overlap():
    assert _merge([1, 1, 1], (1, 1), 9) == [9, 1]
    assert _merge([1, 1, 1, 1], (1, 1), 9) == [9, 9]
    assert _merge([2, 1, 3, 1, 3], (1, 3), 9) == [2, 9, 9]


@pytest.mark.parametrize("text, chunks", [
    ("Hello world", ["Hello", " world"]),
    ("it's we'll they're", ["it", "'s", " we", "'ll", " they", "'re"]),
    ("x = 42+7", ["x", " =", " 42", "+", "7"]),
    ("a  b\n\n  c", ["a", " ", " b", "\n\n ", " c"]),  # the last space goes with the word
    ("end.   ", ["end", ".", "   "]),
    ("__init__()", ["__", "init", "__()"]),  # "_" is a symbol, as in GPT-2
    ("Café 日本 ½", ["Café", " 日本", " ½"]),  # ½ (No) is a letter here, a number in GPT-2
])
def test_pretokenize_follows_gpt2_chunks(text, chunks):
    assert pretokenize(text) == chunks


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_chunks_concatenate_back_to_the_text(text):
    assert "".join(pretokenize(text)) == text


def test_merges_on_a_hand_made_text():
    # "aaabdaaabac" is one chunk. Pair counts (overlapping): aa 4, ab 2, others 1 -> (a, a) = 256.
    # Then [256 a b d 256 a b a c]: (256, a) 2 and (a, b) 2 tie -> (a, b) sorts first = 257.
    # [256 257 d 256 257 a c]: (256, 257) 2 = 258.  [258 d 258 a c]: all 1 -> (a, c) = 259.
    # [258 d 258 259]: (d, 258) = 260.  [258 260 259]: (258, 260) = 261.  [261 259]: 262. Done.
    a, b, c, d = (ord(ch) for ch in "abcd")
    tok = BPETokenizer.train("aaabdaaabac", 300, progress=False)
    assert tok.merges == [(a, a), (a, b), (256, 257), (a, c), (d, 258), (258, 260), (261, 259)]
    assert tok.vocab_size == 263 == len(tok.vocab)  # ran out of pairs before 300
    assert tok.vocab[262] == b"aaabdaaabac" and tok.vocab[258] == b"aaab"
    assert tok.encode("aaabdaaabac").tolist() == [262]
    assert tok.encode("aaab").tolist() == [258]


def test_merges_never_cross_a_chunk_boundary():
    # Chunks "ab", " ab", " ab", "!": (a, b) 3 -> 256; then (space, 256) 2 -> 257. The raw byte
    # pair (b, space) occurs twice too, but across chunks, so it is never counted.
    tok = BPETokenizer.train("ab ab ab!", 1000, progress=False)
    assert tok.merges == [(ord("a"), ord("b")), (ord(" "), 256)]
    # "x.x.x.x.yy": the most frequent raw pair (x, .) spans chunks; only (y, y) is inside one.
    assert BPETokenizer.train("x.x.x.x.yy", 1000, progress=False).merges == [(121, 121)]


def test_first_merge_is_the_most_frequent_pair(train_text, tokenizers):
    counts = Counter()
    for chunk in pretokenize(train_text):
        data = chunk.encode("utf-8")
        counts.update(zip(data, data[1:]))
    top = max(counts.values())
    assert tokenizers[512].merges[0] == min(p for p, n in counts.items() if n == top)


def test_merges_equal_a_naive_reference_trainer(train_text):
    text = train_text[:30_000]
    assert BPETokenizer.train(text, 256 + 60, progress=False).merges == _naive_train(text, 60)


def test_encode_equals_the_reference_encoder(tokenizers, val_text):
    tok = tokenizers[512]
    text = val_text[:8000]
    assert tok.encode(text).tolist() == _reference_encode(tok.merges, text)


def test_vocab_size_is_respected_and_vocab_is_consistent(tokenizers):
    for v, tok in tokenizers.items():
        assert tok.vocab_size == len(tok.vocab) == v == 256 + len(tok.merges)
        assert len(set(tok.merges)) == len(tok.merges)
        for k, (a, b) in enumerate(tok.merges):
            assert a < 256 + k and b < 256 + k
            assert tok.vocab[256 + k] == tok.vocab[a] + tok.vocab[b]
    assert tokenizers[512].merges == tokenizers[1024].merges[:256]  # greedy: a prefix


@pytest.mark.parametrize("vocab_size", [255, 0, -1, 512.0, "512", True, None])
def test_bad_vocab_size_is_a_value_error(vocab_size):
    with pytest.raises(ValueError, match="vocab_size"):
        BPETokenizer.train("some text", vocab_size, progress=False)


def test_round_trip_on_the_corpus(tokenizers, train_text, val_text):
    tok = tokenizers[1024]
    for text in (train_text, val_text):
        ids = tok.encode(text)
        assert ids.dtype == torch.int64 and ids.ndim == 1
        assert int(ids.min()) >= 0 and int(ids.max()) < tok.vocab_size
        assert tok.decode(ids) == text


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=80)
       | st.text(alphabet=st.characters(min_codepoint=0x80, codec="utf-8"), max_size=40))
def test_round_trip_on_arbitrary_unicode(tokenizers, text):
    tok = tokenizers[512]
    ids = tok.encode(text)
    assert len(ids) <= len(text.encode("utf-8"))
    assert tok.decode(ids) == text


def test_unseen_characters_fall_back_to_bytes(tokenizers, train_text):
    tok = tokenizers[512]
    text = "日本語 🙂 Ωμέγα"
    assert not set(text) - {" "} & set(train_text)  # never seen in training
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.encode("🙂").tolist() == list("🙂".encode("utf-8"))  # four byte tokens
    assert tok.decode([0xF0, 0x9F]) == "\ufffd"  # a cut-off character is replaced, not an error


def test_compression_grows_with_vocab_size_on_held_out_text(tokenizers, val_text):
    ratios = [tokenizers[v].compression_ratio(val_text) for v in (256, 300, 512, 1024)]
    assert ratios[0] == 1.0  # byte tokens only: one byte per token
    assert 1.0 < ratios[1] < ratios[2] < ratios[3]
    assert ratios[1] == len(val_text.encode("utf-8")) / len(tokenizers[300].encode(val_text))


def test_training_and_encoding_are_fast_enough(train_text, val_text):
    start = time.perf_counter()
    tok = BPETokenizer.train(train_text, 512, progress=False)
    trained = time.perf_counter() - start
    start = time.perf_counter()
    tok.encode(val_text)  # a fresh tokenizer: no chunk is cached yet
    encoded = time.perf_counter() - start
    assert trained < 30 and encoded < 5, (trained, encoded)  # the targets, on one core


def test_progress_bar_only_when_asked_and_nothing_printed(capsys):
    BPETokenizer.train("ab ab ab ab", 260, progress=False)
    assert capsys.readouterr() == ("", "")
    BPETokenizer.train("ab ab ab ab", 260, progress=True)
    out, err = capsys.readouterr()
    assert out == "" and "BPE merges" in err


def test_to_dict_from_dict_round_trip(tokenizers, val_text):
    tok = tokenizers[512]
    d = json.loads(json.dumps(tok.to_dict()))  # plain data
    assert d["pattern"] == BPE_PATTERN
    restored = BPETokenizer.from_dict(d)
    assert restored == tok and restored.vocab == tok.vocab
    assert torch.equal(restored.encode(val_text[:3000]), tok.encode(val_text[:3000]))


@pytest.mark.parametrize("d, match", [
    ({"kind": "char", "chars": "ab"}, "to_dict"),
    ({"kind": "bpe", "merges": [[97, 256]]}, "merge 0"),
    ({"kind": "bpe", "merges": [[97, 98], [256, 300]]}, "merge 1"),
    ({"kind": "bpe", "merges": [[97]]}, "merge 0"),
    ({"kind": "bpe", "merges": [], "pattern": r"\w+"}, "pattern"),
])
def test_bad_dict_is_a_value_error(d, match):
    with pytest.raises(ValueError, match=match):
        BPETokenizer.from_dict(d)


def test_bad_text_and_ids_are_value_errors(tokenizers):
    tok = tokenizers[300]
    with pytest.raises(ValueError, match="not valid Unicode"):
        tok.encode("lone \ud800 surrogate")
    with pytest.raises(ValueError, match="needs a str"):
        tok.encode(b"bytes")
    with pytest.raises(ValueError, match="non-empty"):
        tok.compression_ratio("")
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 300\)"):
        tok.decode([300])
    with pytest.raises(ValueError, match="ids must"):
        tok.decode(torch.tensor([1.0]))
