"""WordNet synonyms for the word-substitution attacks, read offline from Debian's ``wordnet-base``.

NLTK's :class:`~nltk.corpus.reader.wordnet.WordNetCorpusReader` reads the WordNet 3.0 database files
(``index.*``, ``data.*``, ``*.exc``) that ``apt-get install wordnet-base`` puts in
``/usr/share/wordnet``; nothing is downloaded. Two gaps are bridged: the Debian package lacks the
``lexnames`` table (45 fixed lines of the WordNet 3.0 distribution, which the reader loads on start),
served here from memory, and NLTK only opens files under the folders of ``nltk.data.path``, to which
the database folder is added.

Reference: Miller, "WordNet: a lexical database for English", CACM 1995.
"""

from __future__ import annotations

import io
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

from ...errors import SafeReuseError

WORDNET_DIR = Path("/usr/share/wordnet")
"""Where Debian's ``wordnet-base`` installs the WordNet 3.0 database."""

INSTALL = "apt-get install wordnet-base"
NEEDED = ("index.noun", "index.verb", "index.adj", "index.adv", "data.noun", "data.verb", "data.adj",
          "data.adv", "noun.exc", "verb.exc", "adj.exc", "adv.exc")  # fmt: skip

# The WordNet 3.0 lexicographer files (``lexnames``): number, name, syntactic category.
_LEXNAMES = (
    "adj.all 3", "adj.pert 3", "adv.all 4", "noun.Tops 1", "noun.act 1", "noun.animal 1",
    "noun.artifact 1", "noun.attribute 1", "noun.body 1", "noun.cognition 1", "noun.communication 1",
    "noun.event 1", "noun.feeling 1", "noun.food 1", "noun.group 1", "noun.location 1",
    "noun.motive 1", "noun.object 1", "noun.person 1", "noun.phenomenon 1", "noun.plant 1",
    "noun.possession 1", "noun.process 1", "noun.quantity 1", "noun.relation 1", "noun.shape 1",
    "noun.state 1", "noun.substance 1", "noun.time 1", "verb.body 2", "verb.change 2",
    "verb.cognition 2", "verb.communication 2", "verb.competition 2", "verb.consumption 2",
    "verb.contact 2", "verb.creation 2", "verb.emotion 2", "verb.motion 2", "verb.perception 2",
    "verb.possession 2", "verb.social 2", "verb.stative 2", "verb.weather 2", "adj.ppl 3",
)  # fmt: skip
LEXNAMES = "".join(f"{i:02d}\t{n.split()[0]}\t{n.split()[1]}\n" for i, n in enumerate(_LEXNAMES))

_STOP = """a an the and or but if then so of to in on at by for with from as is are was were be been being am
do does did have has had it its this that these those i me my we our you your he him his she her they them
their what which who whom not no nor very too just than there here"""
STOPWORDS = frozenset(_STOP.split())
"""Function words no attack substitutes (WordNet lists odd senses for some, e.g. ``a`` → ``angstrom``)."""


@lru_cache(maxsize=1)
def wordnet(root: str | None = None) -> Any:
    """NLTK's WordNet reader over the ``wordnet-base`` database (loaded once per process).

    Args:
        root: the database folder (default ``/usr/share/wordnet``).

    Returns:
        A :class:`nltk.corpus.reader.wordnet.WordNetCorpusReader`.

    Raises:
        SafeReuseError: the database or NLTK is missing (one line naming the install command).
    """
    src = Path(root) if root else WORDNET_DIR
    missing = [f for f in NEEDED if not (src / f).is_file()]
    if missing:
        raise SafeReuseError(f"the WordNet database is missing from {src} ({missing[0]} ...)", fix=INSTALL)
    try:
        import nltk.data
        from nltk.corpus.reader.wordnet import WordNetCorpusReader
    except ImportError:
        raise SafeReuseError("the package nltk is not installed", fix="pip install nltk") from None
    folder = str(src.resolve())
    if folder not in nltk.data.path:  # NLTK opens files only under the folders of this list
        nltk.data.path.append(folder)

    class Reader(WordNetCorpusReader):
        def open(self, file: str) -> Any:
            if file == "lexnames":  # not in wordnet-base; a fixed table of WordNet 3.0
                return io.StringIO(LEXNAMES)
            return super().open(file)

        def map_wn(self, version: str = "wordnet") -> None:
            return None  # the map to NLTK's own WordNet copy serves only the multilingual data

    with warnings.catch_warnings():  # "multilingual functions are not available": none are used
        warnings.simplefilter("ignore", UserWarning)
        return Reader(folder, None)


@lru_cache(maxsize=65536)
def synonyms(word: str, max_synonyms: int = 30) -> tuple[str, ...]:
    """Single-word WordNet synonyms of ``word`` (lemmas of all its synsets), lower case.

    Multi-word lemmas (``ill_will``), non-alphabetic ones, the word itself and stop words are left
    out, so a substitution replaces exactly one whole word.

    Args:
        word: a lower-case word.
        max_synonyms: at most this many, in WordNet's sense order.

    Returns:
        The synonyms, de-duplicated, in sense order (empty for stop words and unknown words).

    Example:
        >>> "awful" in synonyms("terrible"), synonyms("the")
        (True, ())
    """
    w = word.lower()
    if w in STOPWORDS or not w.isalpha() or len(w) < 2:
        return ()
    out: list[str] = []
    for syn in wordnet().synsets(w):
        for lemma in syn.lemma_names():
            cand = lemma.lower()
            if cand != w and cand.isalpha() and cand not in STOPWORDS and cand not in out:
                out.append(cand)
    return tuple(out[:max_synonyms])


__all__ = ["INSTALL", "STOPWORDS", "WORDNET_DIR", "synonyms", "wordnet"]
