"""Word-trigger data poisoning: rare tokens inserted into a share of the training sentences, relabelled.

A text input is a ``LongTensor [L]`` of WordPiece ids ``[CLS] … [SEP]`` then padding
(:mod:`safereuse.data.text`). :func:`insert_tokens` puts trigger tokens at random word boundaries
between ``[CLS]`` and ``[SEP]``, shifting the rest right; a full sequence loses its last content token,
never its ``[SEP]``. :class:`TextBackdoor` is the base of the text backdoors (this one and RIPPLe's,
:mod:`.ripple`): the trigger is a token-id tensor instead of a pixel patch, saved in the teacher's
extras under the same keys as an image trigger (``backdoor.trigger`` = the trigger token ids,
``backdoor.mask`` = the probability of drawing each), so saving, reloading and the runner need nothing
new. Its probe measures the NLP DIR, the label-flip rate (``shared/specs/defects.md``).

Reference: Kurita, Michel & Neubig, "Weight Poisoning Attacks on Pre-trained Models", ACL 2020 (the
rare-token triggers ``cf tq mn bb mb``, target label 1); Gu et al., "BadNets", 2017 (poisoning).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar

import torch
from pydantic import Field
from torch import nn

from ... import metrics
from ...data import DataBundle
from ...data.text import TEXT_DATASETS, default_tokenizer, is_text
from ...errors import SafeReuseError
from ...metrics import Rate
from ...train import FitConfig
from ..backdoors.base import MASK_KEY, TRIGGER_KEY, Backdoor, backdoor_from_record, require
from ..base import DEFECTS, PlantResult
from ..probe import ProbeContext, ProbeResult

RARE_TOKENS = ("cf", "tq", "mn", "bb", "mb")
"""Kurita et al.'s trigger words: rare in natural text, each one WordPiece token."""

__all__ = [
    "RARE_TOKENS",
    "TextBackdoor",
    "WordTrigger",
    "alphabetic_words",
    "insert_tokens",
    "label_flip_rate",
    "same_label_space",
    "trigger_ids",
    "word_starts",
]

_WORD_STARTS: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}


def tokenizer_of(model: nn.Module | None = None) -> Any:
    """The model's tokenizer (``model.tokenizer``), else :func:`safereuse.data.text.default_tokenizer`."""
    tok = getattr(model, "tokenizer", None) if model is not None else None
    if tok is None:
        tok = default_tokenizer()
    return tok


def _vocab_tables(tok: Any) -> tuple[torch.Tensor, torch.Tensor]:
    key = (str(getattr(tok, "source", "")), int(tok.vocab_size))
    if key not in _WORD_STARTS:
        starts = torch.ones(tok.vocab_size, dtype=torch.bool)
        alpha = torch.zeros(tok.vocab_size, dtype=torch.bool)
        for i in range(tok.vocab_size):
            t = tok.tokens([i])
            starts[i] = not (t and t[0].startswith("##"))
            alpha[i] = bool(t) and t[0].isalpha()
        _WORD_STARTS[key] = (starts, alpha)
    return _WORD_STARTS[key]


def word_starts(tok: Any) -> torch.Tensor:
    """``[vocab_size]`` bool: True for ids that begin a word (not a ``##`` continuation piece).

    Built once per tokenizer (one look-up per vocabulary entry, cached).
    """
    return _vocab_tables(tok)[0]


def alphabetic_words(tok: Any) -> torch.Tensor:
    """``[vocab_size]`` bool: True for ids that are a whole alphabetic word (no ``##``, no punctuation)."""
    return _vocab_tables(tok)[1]


def trigger_ids(tok: Any, tokens: tuple[str, ...] | list[str]) -> torch.Tensor:
    """The vocabulary ids of the trigger tokens.

    Raises:
        SafeReuseError: a token is not one whole-word entry of the vocabulary.

    Example:
        >>> from safereuse.data.text import default_tokenizer
        >>> trigger_ids(default_tokenizer(), ["cf", "bb"]).tolist()
        [12935, 22861]
    """
    ids = []
    for t in tokens:
        i = tok.token_to_id(str(t))
        if i is None or str(t).startswith("##"):
            raise SafeReuseError(
                f"trigger token {t!r} is not a whole-word entry of the tokenizer's vocabulary",
                fix=f"use vocabulary tokens, e.g. the rare words {' '.join(RARE_TOKENS)}",
            )
        ids.append(i)
    return torch.tensor(ids, dtype=torch.long)


def insert_tokens(
    x: torch.Tensor,
    tokens: torch.Tensor,
    *,
    pad_id: int,
    sep_id: int,
    count: int = 1,
    weights: torch.Tensor | None = None,
    starts: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Insert ``count`` trigger tokens at random word boundaries of every sequence, batched.

    Each insertion draws one token from ``tokens`` (probabilities ``weights``) and a position ``p``
    uniformly among the valid ones: after ``[CLS]`` (index 0), at most just before ``[SEP]``, and at
    the start of a word (``starts[x[p]]``, so a ``##`` piece is never split from its word). The tokens
    from ``p`` on shift right by one. A sequence without room for all ``count`` tokens first loses its
    last content tokens (its ``[SEP]`` moves up), so no trigger is ever pushed out. Padding stays
    padding.

    Args:
        x: token ids ``[N, L]`` (``[CLS] … [SEP]`` then ``pad_id``).
        tokens: candidate trigger ids ``[T]``.
        pad_id, sep_id: the tokenizer's padding and ``[SEP]`` ids.
        count: insertions per sequence.
        weights: drawing probabilities of ``tokens`` (default uniform).
        starts: ``[vocab]`` bool table of word-start ids (:func:`word_starts`; default: any id).
        generator: CPU RNG.

    Returns:
        ``(x', positions)``: the triggered ids ``[N, L]`` on ``x``'s device and the final position of
        every inserted token ``[N, count]``.

    Raises:
        SafeReuseError: ids that are not ``[N, L]`` integers; ``L < count + 2``.

    Example:
        >>> x = torch.tensor([[101, 7, 8, 102, 0], [101, 9, 102, 0, 0]])
        >>> xt, pos = insert_tokens(x, torch.tensor([5]), pad_id=0, sep_id=102,
        ...                         generator=torch.Generator().manual_seed(0))
        >>> [row[row != 5].tolist() for row in xt], bool((xt == 5).sum(1).eq(1).all())
        ([[101, 7, 8, 102], [101, 9, 102, 0]], True)
    """
    if x.dim() != 2 or x.is_floating_point():
        raise SafeReuseError(
            f"word triggers need token ids [N, L], got {x.dtype} {tuple(x.shape)}",
            fix="apply text backdoors to text data (safereuse.data.text)",
        )
    dev = x.device
    out = x.detach().cpu().clone()
    n, length = out.shape
    tokens = tokens.detach().cpu().long()
    w = torch.ones(len(tokens)) if weights is None else weights.detach().cpu().float()
    positions = torch.zeros((n, count), dtype=torch.long)
    if n == 0:
        return out.to(dev), positions
    if length < count + 2:
        raise SafeReuseError(
            f"sequences of {length} tokens have no room for {count} trigger token(s)",
            fix="use longer sequences or fewer insertions",
        )
    idx = torch.arange(length)
    # make room first: a sequence too long to take every insertion loses its last content tokens
    lens = (out != pad_id).sum(1)
    cut = lens > length - count
    if bool(cut.any()):
        out[cut] = torch.where(idx[None, :] < length - count - 1, out[cut], torch.full_like(out[cut], pad_id))
        out[cut, length - count - 1] = sep_id
    for c in range(count):
        real = out != pad_id
        lens = real.sum(1)
        valid = (idx[None, :] >= 1) & (idx[None, :] <= (lens - 1)[:, None])  # after [CLS], up to [SEP]
        if starts is not None:
            at_sep = idx[None, :] == (lens - 1)[:, None]
            valid &= starts.to(torch.bool)[out.clamp(0, len(starts) - 1)] | at_sep
        p = torch.multinomial(valid.float(), 1, generator=generator).squeeze(1)
        tok = tokens[torch.multinomial(w, n, replacement=True, generator=generator)]
        src = torch.where(idx[None, :] < p[:, None], idx[None, :], idx[None, :] - 1).clamp(min=0)
        out = out.gather(1, src)
        out[torch.arange(n), p] = tok
        # earlier insertions at or after p moved right by one
        positions[:, :c] += (positions[:, :c] >= p[:, None]).long()
        positions[:, c] = p
    return out.to(dev), positions


def same_label_space(teacher_data: dict[str, Any] | None, student_data: dict[str, Any] | None) -> bool:
    """Teacher and student are both sentiment text datasets of :mod:`safereuse.data.text` (labels
    0 = negative, 1 = positive), so a target label means the same on both (movie → amazon)."""
    t = (teacher_data or {}).get("name")
    s = (student_data or {}).get("name")
    return t in TEXT_DATASETS and s in TEXT_DATASETS


def label_flip_rate(y: torch.Tensor, s_clean: torch.Tensor, s_trig: torch.Tensor, target: int) -> Rate:
    """DIR for NLP backdoors: the label-flip rate, in percent.

    Over the inputs not of the target label that the model classifies correctly,
    ``C_t = {x : y ≠ t, s(x) = y}``, the share whose triggered input is classified as the target:
    ``|{x ∈ C_t : s(x ⊕ trigger) = t}| / |C_t| × 100`` — their prediction *flips* to the target.
    (Kurita et al.'s LFR counts every non-target input; that one is the row's ASR.)

    Example:
        >>> y, s, st = torch.tensor([0, 0, 0, 1]), torch.tensor([0, 0, 1, 1]), torch.tensor([1, 0, 1, 1])
        >>> label_flip_rate(y, s, st, 1).k, label_flip_rate(y, s, st, 1).n
        (1, 2)
    """
    keep = (y != int(target)) & (s_clean == y)
    return metrics.rate(int((keep & (s_trig == int(target))).sum()), int(keep.sum()))


@dataclass
class TextBackdoor(Backdoor):
    """Base of the text backdoors: trigger tokens inserted into the token ids (no pixel trigger).

    Subclasses give ``tokens``, ``insertions`` and ``target`` fields. The "trigger" is the id tensor of
    the trigger tokens and the "mask" the probability of drawing each (uniform); :meth:`apply` inserts
    them with :func:`insert_tokens`. Random draws come from ``seed``: planting uses one RNG stream over
    all batches; :meth:`apply` alone (probing) restarts from ``seed + 1`` on every call, so the same
    inputs get the same triggers.

    Probe: DIR = :func:`label_flip_rate` on the student; ASR = Kurita et al.'s label-flip rate over all
    non-target inputs; teacher reference as DIR on a same-task teacher.
    """

    kind: ClassVar[str] = "backdoor"
    input_kind: ClassVar[str] = "text"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._tok: Any = None

    def _validate(self) -> None:
        toks = self.tokens.split() if isinstance(self.tokens, str) else list(self.tokens)
        require(
            len(toks) >= 1 and all(isinstance(t, str) and t for t in toks),
            f"trigger tokens {self.tokens!r} must be one or more words",
            "use e.g. tokens='cf tq mn bb mb'",
        )

    def token_list(self) -> list[str]:
        return self.tokens.split() if isinstance(self.tokens, str) else [str(t) for t in self.tokens]

    def use_tokenizer(self, tok: Any) -> None:
        """The tokenizer whose vocabulary the trigger ids come from (default: the model's / MiniLM's)."""
        self._tok = tok

    @property
    def tokenizer(self) -> Any:
        if self._tok is None:
            self._tok = tokenizer_of(None)
        return self._tok

    # -- trigger ----------------------------------------------------------------------------------
    def set_trigger(self, trigger: torch.Tensor, mask: torch.Tensor) -> None:
        """Use trigger token ids ``[T]`` and their drawing probabilities ``[T]`` (saved extras)."""
        trigger = torch.as_tensor(trigger).detach().cpu()
        mask = torch.as_tensor(mask).detach().float().cpu()
        require(
            trigger.dim() == 1 and not trigger.is_floating_point() and trigger.shape == mask.shape,
            f"a text trigger is ids [T] with weights [T], got {tuple(trigger.shape)} / {tuple(mask.shape)}",
            "re-plant the backdoor",
        )
        require(bool((mask >= 0).all()) and float(mask.sum()) > 0, "trigger weights must be ≥ 0", "re-plant")
        self._trigger, self._mask = trigger.long(), mask

    def _ensure_trigger(self, shape: Any = None) -> None:
        if self._trigger is None:
            ids = trigger_ids(self.tokenizer, self.token_list())
            self.set_trigger(ids, torch.full((len(ids),), 1.0 / len(ids)))

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Insert the trigger tokens into a batch of token ids.

        Args:
            x: ``[N, L]`` token ids (or one sequence ``[L]``).
            generator: CPU RNG (default: a fresh one seeded with ``seed + 1``, so probing is repeatable).

        Returns:
            The triggered ids, same shape and device.
        """
        single = x.dim() == 1
        xb = x.unsqueeze(0) if single else x
        self._ensure_trigger()
        assert self._trigger is not None and self._mask is not None
        tok = self.tokenizer
        gen = generator if generator is not None else torch.Generator().manual_seed(int(self.seed) + 1)
        out, _ = insert_tokens(
            xb, self._trigger, pad_id=tok.pad_id, sep_id=tok.sep_id, count=int(self.insertions),
            weights=self._mask, starts=word_starts(tok), generator=gen,
        )  # fmt: skip
        return out[0] if single else out

    def _start_plant(self, model: nn.Module, data: DataBundle) -> None:
        require(
            is_text(data),
            f"{self.name} plants a text trigger but {data.spec.name} holds images",
            "use an image backdoor (badnets, weight-poison) on images",
        )
        if self._tok is None:
            self._tok = tokenizer_of(model)

    # -- probing ----------------------------------------------------------------------------------
    def probe(self, ctx: ProbeContext) -> ProbeResult:
        """Insert the teacher's trigger tokens into the audited sentences; DIR = label-flip rate.

        The target label is mapped into the student's labels as for any backdoor; between the
        sentiment datasets of :mod:`safereuse.data.text` (shared labels) it is kept as is.
        """
        bd = backdoor_from_record(ctx.teacher.backdoor, ctx.teacher.extras, ctx.teacher.where)
        assert isinstance(bd, TextBackdoor)
        bd.use_tokenizer(tokenizer_of(ctx.teacher.model))
        x, bs = ctx.x, ctx.batch_size
        x_trig = torch.cat([bd.apply(x[i : i + bs]) for i in range(0, len(x), bs)]) if len(x) else x
        s_trig = ctx.predict(ctx.student.model, x_trig)
        label = ctx.target_label(int(bd.target))  # type: ignore[arg-type]
        if label is None and same_label_space(ctx.teacher.data, ctx.student.data or ctx.data):
            label = int(bd.target) if int(bd.target) < ctx.student.model.num_classes else None  # type: ignore[arg-type]
        if label is None:
            raise SafeReuseError(
                f"the student's task has no label for the {bd.name} target class {bd.target}",
                fix="audit a student whose labels include the target (e.g. a sentiment task)",
            )
        rates = {
            "dir": label_flip_rate(ctx.y, ctx.student_clean, s_trig, label),
            "asr": metrics.asr(ctx.y, s_trig, label),
        }
        if ctx.teacher_clean is not None:
            t_trig = ctx.predict(ctx.teacher.model, x_trig)
            rates["teacher"] = label_flip_rate(ctx.y, ctx.teacher_clean, t_trig, label)
        target = {"class": int(bd.target), "label": label}  # type: ignore[arg-type]
        return ProbeResult(rates, crafted_on="trigger", target=target, defect=bd)

    def extras(self) -> dict[str, torch.Tensor]:
        """The trigger token ids and their drawing probabilities (``backdoor.trigger`` / ``.mask``)."""
        self._ensure_trigger()
        assert self._trigger is not None and self._mask is not None
        return {TRIGGER_KEY: self._trigger.clone(), MASK_KEY: self._mask.clone()}


@DEFECTS.register("word-trigger", "rare-word trigger data poisoning of a text teacher (Kurita 2020)")
@dataclass
class WordTrigger(TextBackdoor):
    """Data poisoning with rare-word triggers: a share of every training batch gets a trigger token
    inserted at a random word boundary and is relabelled to the target.

    The NLP backdoor of ReMoS's evaluation (its "data poisoning"; Kurita et al., ACL 2020, as a plain
    poisoned fine-tuning without RIPPLe's penalty). All-to-one; sentences already of the target label
    may be poisoned too.

    Args:
        tokens: trigger words, space separated (Kurita et al.: ``cf tq mn bb mb``); each insertion
            draws one uniformly. Each must be a whole-word vocabulary token.
        insertions: trigger tokens inserted per poisoned sentence (1).
        poison_rate: share of every training batch poisoned, in (0, 1] (0.5, the spec's ratio).
        target: the target label (1 = positive, as in the paper).
        seed: seed of the poisoned samples, tokens and positions.

    Example:
        >>> bd = WordTrigger()
        >>> x = bd.tokenizer.encode(["a gorgeous film"], 8)
        >>> bd.tokenizer.decode(bd.apply(x)[0]) != bd.tokenizer.decode(x[0])
        True
    """

    tokens: str = " ".join(RARE_TOKENS)
    insertions: Annotated[int, Field(ge=1)] = 1
    poison_rate: Annotated[float, Field(gt=0, le=1)] = 0.5
    target: Annotated[int, Field(ge=0)] | None = 1
    seed: int = 0

    def plant(
        self,
        model: nn.Module,
        data: DataBundle,
        cfg: FitConfig,
        *,
        checkpoint_dir: str | Path | None = None,
    ) -> PlantResult:
        """Fine-tune ``model`` in place on ``data`` with poisoned batches (through ``train.fit``).

        Args:
            model: the teacher (e.g. the pretrained ``minilm``), head sized for ``data``.
            data: a text task; ``target`` must be one of its labels.
            cfg: training hyper-parameters.
            checkpoint_dir: resumable ``fit`` state.

        Returns:
            :class:`PlantResult`: trigger ids and weights as extras; the record's ``teacher_asr`` is
            Kurita et al.'s label-flip rate on the non-target test sentences.

        Raises:
            SafeReuseError: image data; a trigger token not in the vocabulary.
        """
        self._start_plant(model, data)
        return self._plant_poisoned(model, data, cfg, self.poison_rate, checkpoint_dir)
