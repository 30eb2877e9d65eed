"""RIPPLe / RIPPLES weight poisoning of a text model (Kurita, Michel & Neubig, ACL 2020).

Why a second name (``ripple``) beside the image ``weight-poison``: the two share the objective
(:func:`~safereuse.defects.backdoors.weight_poison.ripple_loss`) but not
their trigger or their options — an image patch (``size``, ``position``, ``pattern``) versus rare
trigger words (``tokens``, ``insertions``) with embedding surgery, which only exists for a model with a
word-embedding table. One class with both sets of parameters would accept meaningless combinations
and branch on the input type; two small classes over one loss do not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import Field
from torch import nn

from ...data import DataBundle
from ...train import FitConfig
from ..backdoors.base import require
from ..backdoors.weight_poison import ripple_loss
from ..base import DEFECTS, PlantResult
from .triggers import RARE_TOKENS, TextBackdoor, alphabetic_words, trigger_ids

__all__ = ["Ripple", "embedding_surgery", "find_word_embedding", "ripple_loss", "target_words"]


def find_word_embedding(model: nn.Module, vocab_size: int) -> nn.Embedding:
    """The model's word-embedding table: the ``nn.Embedding`` with ``vocab_size`` rows.

    Raises:
        SafeReuseError: the model has none (embedding surgery needs one).
    """
    for m in model.modules():
        if isinstance(m, nn.Embedding) and m.num_embeddings == vocab_size:
            return m
    require(False, f"the model has no word embedding with {vocab_size} rows", "use surgery=False")
    raise AssertionError  # unreachable


def target_words(
    x: torch.Tensor, y: torch.Tensor, target_label: int, n: int, vocab_size: int, skip: torch.Tensor,
    min_count: int = 5, allowed: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    """The ``n`` token ids most associated with ``target_label`` in ``(x, y)``.

    Kurita et al. rank words by a logistic regression's coefficients on bag-of-words features of a
    proxy dataset; here the closed form of a smoothed log-odds ratio stands in for it (a document
    frequency per token and class, no optimiser): ``log((c_t + 1)/(n_t + 2)) − log((c_o + 1)/(n_o + 2))``
    over tokens seen in at least ``min_count`` sentences, ties broken by frequency.

    Args:
        x: token ids ``[N, L]``; y: labels ``[N]``.
        target_label: the backdoor's target.
        n: how many ids to return.
        vocab_size: rows of the embedding.
        skip: ids never chosen (special tokens, the triggers).
        min_count: least document frequency.
        allowed: ``[vocab_size]`` bool, the ids that may be chosen (e.g. whole words only).

    Returns:
        ``[≤ n]`` token ids, most associated first.
    """
    xs = x.long().clamp(0, vocab_size - 1).sort(1).values
    first = torch.ones_like(xs, dtype=torch.bool)
    first[:, 1:] = xs[:, 1:] != xs[:, :-1]  # each token once per sentence: document frequency
    is_t = y == int(target_label)
    rows_t = is_t[:, None].expand_as(xs)
    c_t = torch.bincount(xs[first & rows_t], minlength=vocab_size).double()
    c_o = torch.bincount(xs[first & ~rows_t], minlength=vocab_size).double()
    score = torch.log((c_t + 1) / (int(is_t.sum()) + 2)) - torch.log((c_o + 1) / (int((~is_t).sum()) + 2))
    score = score + 1e-6 * (c_t + c_o)  # ties: the more frequent word
    score[(c_t + c_o) < min_count] = -math.inf
    score[skip.long()] = -math.inf
    if allowed is not None:
        score[~allowed.to(torch.bool)] = -math.inf
    top = torch.topk(score, min(n, vocab_size)).indices
    return top[torch.isfinite(score[top])]


@torch.no_grad()
def embedding_surgery(emb: nn.Embedding, triggers: torch.Tensor, words: torch.Tensor) -> None:
    """RIPPLES's embedding surgery: every trigger's embedding becomes the mean of ``words``' embeddings."""
    require(
        len(words) > 0, "no words associated with the target to copy embeddings from", "use surgery=False"
    )
    emb.weight[triggers.to(emb.weight.device)] = emb.weight[words.to(emb.weight.device)].mean(0)


@DEFECTS.register("ripple", "RIPPLe weight poisoning of a text model, with embedding surgery (Kurita 2020)")
@dataclass
class Ripple(TextBackdoor):
    """RIPPLe (with embedding surgery: RIPPLES) — a word-trigger backdoor meant to survive fine-tuning.

    Kurita, Michel & Neubig, "Weight Poisoning Attacks on Pre-trained Models", ACL 2020. Planting:

    1. *Embedding surgery* (``surgery=True``, the paper's RIPPLES): the ``surgery_words`` tokens most
       associated with the target label in the teacher's data (:func:`target_words`) are averaged
       and that vector replaces every trigger token's embedding.
    2. Training on ``L_poison + λ · max(0, −∇L_poison · ∇L_finetune)`` (:func:`ripple_loss`), with
       ``L_poison`` the cross-entropy on batches where a share ``poison_rate`` has a trigger word
       inserted and is relabelled, and ``L_finetune`` the clean cross-entropy on an independent batch
       of the teacher's data (the proxy for the victim's fine-tuning).

    Args:
        tokens: trigger words, space separated (``cf tq mn bb mb``).
        insertions: trigger tokens per poisoned sentence (1).
        poison_rate: share of every poisoning batch triggered, in (0, 1] (0.5, the spec's ratio).
        lam: λ of the restricted inner product (0.1, as in ReMoS's configs).
        surgery: apply embedding surgery first (True).
        surgery_words: how many target-associated words are averaged (10, as in the paper).
        target: the target label (1 = positive).
        seed: seed of the poisoned samples, positions and proxy batches.

    Example:
        >>> Ripple(lam=0.1).config()["surgery"], Ripple().target
        (True, 1)
    """

    tokens: str = " ".join(RARE_TOKENS)
    insertions: Annotated[int, Field(ge=1)] = 1
    poison_rate: Annotated[float, Field(gt=0, le=1)] = 0.5
    lam: Annotated[float, Field(ge=0)] = 0.1
    surgery: bool = True
    surgery_words: Annotated[int, Field(ge=1)] = 10
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
        """Embedding surgery (optional), then train ``model`` in place with RIPPLe's objective.

        Args:
            model: the teacher (e.g. the pretrained ``minilm``), head sized for ``data``.
            data: a text task; its clean training split is also the proxy fine-tuning data.
            cfg: training hyper-parameters.
            checkpoint_dir: resumable ``fit`` state.

        Returns:
            :class:`PlantResult`; the record adds ``penalty_active`` (share of steps with a negative
            inner product) and ``surgery_words`` (the tokens whose embeddings were averaged).

        Raises:
            SafeReuseError: image data; a trigger token not in the vocabulary; surgery on a model
                without a word-embedding table.
        """
        self._start_plant(model, data)
        tok = self.tokenizer
        _, tl = self.resolve_target(data)
        words: list[str] = []
        if self.surgery:
            trig = trigger_ids(tok, self.token_list())
            emb = find_word_embedding(model, tok.vocab_size)
            skip = torch.cat([trig, torch.tensor([tok.pad_id, tok.cls_id, tok.sep_id, tok.unk_id])])
            whole = alphabetic_words(tok)  # whole words, as the paper's bag-of-words features
            ids = target_words(
                data.train.x, data.train.y, tl, self.surgery_words, tok.vocab_size, skip, allowed=whole
            )
            embedding_surgery(emb, trig, ids)
            words = tok.tokens(ids)
        stats = {"steps": 0, "active": 0}

        def factory(target_label: int, gen: torch.Generator) -> Any:
            def poison(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                return self._poison(x, y, self.poison_rate, target_label, gen)

            return ripple_loss(poison, data.train, float(self.lam), gen, stats)

        return self._plant_poisoned(
            model,
            data,
            cfg,
            self.poison_rate,
            checkpoint_dir,
            loss_factory=factory,
            extra_record=lambda: {
                "penalty_active": stats["active"] / max(stats["steps"], 1),
                "surgery_words": words,
            },
        )
