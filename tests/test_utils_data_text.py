"""Tests for utils.data.text: the corpora and their splits (never touching the network), the
character tokenizer, and the stateless window sampler."""

import io
import json
import pydoc_data.topics
import urllib.request
from urllib.error import URLError

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from utils.data import (
    TEXT_CORPORA,
    TEXT_SPLITS,
    TINYSHAKESPEARE_URL,
    CharTokenizer,
    SequenceBatches,
    sequence_batches,
    text_corpus,
)

pytestmark = pytest.mark.usefixtures("one_thread")

PYDOC = "".join(pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics))
OFFLINE = 'text_corpus("pydoc")'


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any download attempt fails the test instead of touching the network."""
    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to download")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


@pytest.fixture(scope="module")
def pydoc_splits():
    return {split: text_corpus("pydoc", split) for split in TEXT_SPLITS}


def test_constants():
    assert TEXT_CORPORA == ("pydoc", "tinyshakespeare")
    assert TEXT_SPLITS == ("train", "val", "test")


def test_pydoc_splits_are_contiguous_90_5_5_and_concatenate_to_the_corpus(pydoc_splits):
    n = len(PYDOC)
    assert n > 400_000  # ~465k characters of English
    train, val, test = (pydoc_splits[s] for s in TEXT_SPLITS)
    assert train + val + test == PYDOC
    assert len(train) == n * 90 // 100
    assert len(train) + len(val) == n * 95 // 100
    assert abs(len(val) - 0.05 * n) <= 1 and abs(len(test) - 0.05 * n) <= 1
    assert text_corpus() == train  # the defaults: pydoc, train
    assert text_corpus("pydoc", "val") == val  # deterministic


@pytest.mark.parametrize("bad", [dict(name="wikitext"), dict(name="PYDOC"),
                                 dict(split="validation"), dict(split=0),
                                 dict(download="yes")])
def test_unknown_name_split_or_bad_download_is_a_value_error(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        text_corpus(**bad)


def _write_shakespeare(root, text):
    path = root / "tinyshakespeare" / "input.txt"
    path.parent.mkdir(parents=True)
    path.write_bytes(text.encode("utf-8"))
    return path


def test_tinyshakespeare_loads_a_file_in_the_real_layout(tmp_path):
    text = ("First Citizen:\nBefore we proceed any further, hear me speak.\r\n\nAll:\n"
            "Speak, speak.\n")
    text = text * 3 + "Ünïcode ‘quotes’ stay.\n"
    _write_shakespeare(tmp_path, text)
    splits = [text_corpus("tinyshakespeare", s, root=tmp_path) for s in TEXT_SPLITS]
    assert "".join(splits) == text  # exact, "\r\n" and non-ASCII included
    n = len(text)
    assert [len(s) for s in splits] == [n * 90 // 100, n * 95 // 100 - n * 90 // 100,
                                        n - n * 95 // 100]


def test_tinyshakespeare_root_defaults_to_dgm_data(tmp_path, monkeypatch):
    _write_shakespeare(tmp_path, "x" * 100)
    monkeypatch.setenv("DGM_DATA", str(tmp_path))
    assert text_corpus("tinyshakespeare", "test") == "x" * 5


def test_a_corpus_too_short_for_a_split_is_a_value_error(tmp_path):
    _write_shakespeare(tmp_path, "tiny text")  # 9 characters: val would be empty
    assert text_corpus("tinyshakespeare", "train", root=tmp_path) == "tiny tex"
    with pytest.raises(ValueError, match="too short"):
        text_corpus("tinyshakespeare", "val", root=tmp_path)


def test_missing_tinyshakespeare_names_file_download_and_offline_corpus(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        text_corpus("tinyshakespeare", root=tmp_path)
    message = str(error.value)
    assert str(tmp_path / "tinyshakespeare" / "input.txt") in message
    assert "download=True" in message and OFFLINE in message


def test_failed_download_is_a_runtime_error_naming_the_offline_corpus(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(RuntimeError, match="could not download") as error:
        text_corpus("tinyshakespeare", root=tmp_path, download=True)
    assert OFFLINE in str(error.value)
    assert isinstance(error.value.__cause__, URLError)
    assert not (tmp_path / "tinyshakespeare").exists()  # nothing half-written


def test_download_writes_the_file_then_loads_it(tmp_path, monkeypatch):
    text = "ROMEO:\nBut, soft! what light through yonder window breaks?\n" * 4
    asked = []

    def fake_urlopen(url, timeout=None):
        asked.append(url)
        return io.BytesIO(text.encode("utf-8"))  # a context manager with .read(), as urlopen's

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    train = text_corpus("tinyshakespeare", "train", root=tmp_path, download=True)
    assert asked == [TINYSHAKESPEARE_URL]
    assert (tmp_path / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8") == text
    assert train == text[:len(text) * 90 // 100]
    text_corpus("tinyshakespeare", "val", root=tmp_path, download=True)  # present: no download
    assert asked == [TINYSHAKESPEARE_URL]


# CharTokenizer ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def char_tok():
    return CharTokenizer.fit(PYDOC)


def test_char_vocabulary_is_the_sorted_distinct_characters(char_tok):
    assert char_tok.chars == tuple(sorted(set(PYDOC)))
    assert char_tok.vocab_size == len(set(PYDOC))
    tok = CharTokenizer.fit("banana")
    assert tok.chars == ("a", "b", "n") and tok.vocab_size == 3
    assert tok.encode("banana").tolist() == [1, 0, 2, 0, 2, 0]


def test_char_round_trip_on_the_corpus(char_tok, pydoc_splits):
    ids = char_tok.encode(pydoc_splits["val"])
    assert ids.dtype == torch.int64 and ids.shape == (len(pydoc_splits["val"]),)
    assert char_tok.decode(ids) == pydoc_splits["val"]
    assert char_tok.decode(ids.tolist()) == pydoc_splits["val"]
    assert char_tok.encode("").shape == (0,) and char_tok.decode([]) == ""


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_char_round_trip_on_random_strings_over_the_alphabet(char_tok, data):
    text = data.draw(st.text(alphabet=st.sampled_from(char_tok.chars), max_size=200))
    ids = char_tok.encode(text)
    assert ids.shape == (len(text),)
    assert all(0 <= i < char_tok.vocab_size for i in ids.tolist())
    assert char_tok.decode(ids) == text


def test_unknown_character_is_a_value_error_naming_it():
    tok = CharTokenizer.fit("hello world")
    with pytest.raises(ValueError, match=r"'é' \(U\+00E9, first at position 3\)"):
        tok.encode("helé")
    with pytest.raises(ValueError, match="needs a str"):
        tok.encode(b"hello")


@pytest.mark.parametrize("ids", [[0, 8], [-1], torch.tensor([[0, 1]]), torch.tensor([0.0]),
                                 [0.5], "01", 3])
def test_bad_ids_are_a_value_error(ids):
    tok = CharTokenizer.fit("abcdefgh")  # ids 0..7
    with pytest.raises(ValueError, match="ids must"):
        tok.decode(ids)


def test_char_to_dict_from_dict_round_trip(char_tok):
    d = char_tok.to_dict()
    restored = CharTokenizer.from_dict(json.loads(json.dumps(d)))  # plain data
    assert restored == char_tok and restored.chars == char_tok.chars
    assert torch.equal(restored.encode(PYDOC[:1000]), char_tok.encode(PYDOC[:1000]))
    with pytest.raises(ValueError, match="to_dict"):
        CharTokenizer.from_dict({"kind": "bpe", "merges": []})
    with pytest.raises(ValueError, match="sorted"):
        CharTokenizer.from_dict({"kind": "char", "chars": "ba"})


@pytest.mark.parametrize("text", ["", None, ["a"]])
def test_fit_needs_a_non_empty_string(text):
    with pytest.raises(ValueError, match="non-empty str"):
        CharTokenizer.fit(text)


# sequence_batches ------------------------------------------------------------------------------

def test_y_is_x_shifted_by_one_against_the_stream():
    tokens = torch.randint(0, 50, (1000,), generator=torch.Generator().manual_seed(0))
    b = sequence_batches(tokens, block=16, batch_size=8, seed=3)
    x, y = b(5)
    assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    for o, xk, yk in zip(b.offsets(5).tolist(), x, y):
        assert torch.equal(xk, tokens[o:o + 16]) and torch.equal(yk, tokens[o + 1:o + 17])


def test_same_step_same_batch_across_fresh_objects_and_steps_differ():
    tokens = torch.arange(10_000)
    first = sequence_batches(tokens, 32, 4, seed=7)
    second = sequence_batches(tokens.clone(), 32, 4, seed=7)  # as after a restart
    for step in [0, 11, 3, 11]:
        assert torch.equal(first(step)[0], second(step)[0])
    assert not torch.equal(first(0)[0], first(1)[0])
    assert not torch.equal(first(0)[0], sequence_batches(tokens, 32, 4, seed=8)(0)[0])
    # hashed (seed, step): step 1 of seed 0 is not step 0 of seed 1
    assert not torch.equal(sequence_batches(tokens, 32, 4, seed=0)(1)[0],
                           sequence_batches(tokens, 32, 4, seed=1)(0)[0])


def test_offsets_cover_the_whole_valid_range():
    n, block = 12, 5  # valid offsets 0..6: the last window is tokens[6:11], its y tokens[7:12]
    b = sequence_batches(torch.arange(n), block, batch_size=4)
    assert b.n_offsets == n - block == 7
    offsets = torch.stack([b.offsets(s) for s in range(200)])  # (steps, B)
    assert set(offsets.flatten().tolist()) == set(range(7))  # 800 draws: one missed w.p. ~1e-53
    step, row = torch.nonzero(offsets == 6)[0].tolist()
    x, y = b(step)
    assert torch.equal(y[row], torch.arange(7, 12))  # the last token is a target
    assert x.min() >= 0 and y.max() <= n - 1


def test_iteration_repr_and_small_integer_dtypes():
    tokens = torch.arange(100, dtype=torch.int16)
    b = sequence_batches(tokens, 8, 2, seed=1)
    assert isinstance(b, SequenceBatches)
    x0, _ = next(iter(b))
    assert torch.equal(x0, b(0)[0]) and x0.dtype == torch.int64
    assert repr(b) == ("SequenceBatches(n_tokens=100, block=8, batch_size=2, seed=1, "
                       "n_offsets=92, device=cpu)")


@pytest.mark.parametrize("tokens, block, batch_size, seed, match", [
    (torch.arange(10), 10, 2, 0, "block must be < len"),
    (torch.arange(10), 11, 2, 0, "block must be < len"),
    (torch.arange(10), 0, 2, 0, "block"),
    (torch.arange(10).reshape(2, 5), 2, 2, 0, "1-D"),
    (torch.tensor(3), 1, 2, 0, "1-D"),
    (torch.rand(10), 2, 2, 0, "integer"),
    ([1, 2, 3, 4], 2, 2, 0, "1-D"),
    (torch.arange(10), 2, 0, 0, "batch_size"),
    (torch.arange(10), 2.0, 2, 0, "block"),
    (torch.arange(10), 2, 2, -1, "seed"),
])
def test_bad_arguments_are_value_errors(tokens, block, batch_size, seed, match):
    with pytest.raises(ValueError, match=match):
        sequence_batches(tokens, block, batch_size, seed)


def test_bad_step_is_a_value_error():
    b = sequence_batches(torch.arange(10), 2, 2)
    for step in [-1, 1.0, "0"]:
        with pytest.raises(ValueError, match="step"):
            b(step)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_tokens_on_the_gpu_are_indexed_there():
    tokens = torch.arange(1000)
    b_cpu, b_gpu = sequence_batches(tokens, 16, 4), sequence_batches(tokens.cuda(), 16, 4)
    x, y = b_gpu(3)
    assert x.device.type == "cuda" and torch.equal(x.cpu(), b_cpu(3)[0])
    assert torch.equal(y.cpu(), b_cpu(3)[1])
