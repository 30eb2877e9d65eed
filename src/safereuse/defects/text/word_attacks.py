"""Word-level adversarial attacks on text classifiers, crafted on the teacher and transferred.

Both substitute whole words (``tokenizer.words`` of the ids, re-encoded after a swap) with WordNet
synonyms (:mod:`.wordnet`), within a budget on the fraction of a sentence's words that may change,
and score candidates in batches: every candidate sentence of every input of a step goes through one
batched forward pass (trailing padding trimmed), never one pass per candidate.

- :class:`PWWS` — word importance ranking + synonym substitution (Ren et al., "Generating Natural
  Language Adversarial Examples through Probability Weighted Word Saliency", ACL 2019; the
  TextFooler family, Jin et al., AAAI 2020). Each word's saliency is the drop of the true-class
  probability when it becomes ``[UNK]``; its best synonym is the one that lowers that probability
  most; words are replaced in the order of ``softmax(saliency) × best drop`` until the prediction
  flips or the budget is spent.
- :class:`GreedySwap` — greedy word swap (Kuleshov et al., 2018; TextAttack's greedy search over
  WordNet swaps): at each step, over every not-yet-changed word and every synonym, apply the single
  swap that lowers the true-class probability most, until the prediction flips or the budget is spent.

Inputs the crafting model already misclassifies are returned unchanged, and a swap is kept only when
it lowers the true-class probability, so an attack never raises the accuracy of the model it was
crafted on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import torch
from pydantic import Field
from torch import nn

from ...errors import SafeReuseError
from ..attacks import TransferredAttack, attack_mode, model_device, subset_context
from ..base import DEFECTS
from .triggers import tokenizer_of
from .wordnet import synonyms as wordnet_synonyms

__all__ = ["GreedySwap", "PWWS", "WordAttack", "true_class_prob"]

SynonymFn = Callable[[str], Sequence[str]]


@torch.no_grad()
def true_class_prob(
    model: nn.Module, ids: torch.Tensor, labels: torch.Tensor, batch_size: int, pad_id: int = 0
) -> torch.Tensor:
    """``P(label | ids)`` for every row, in batches (each trimmed to its longest real sequence).

    Args:
        model: a text classifier on token ids, in eval mode.
        ids: ``[M, L]`` token ids (CPU or the model's device).
        labels: ``[M]`` the class whose probability is returned.
        batch_size: rows per forward pass.
        pad_id: the padding id (trailing all-padding columns are cut, which a masked encoder ignores).

    Returns:
        ``[M]`` probabilities on the CPU.
    """
    dev = model_device(model)
    out = torch.empty(len(ids))
    for i in range(0, len(ids), batch_size):
        xb = ids[i : i + batch_size]
        keep = int((xb != pad_id).sum(1).max()) if len(xb) else 1
        logits = model(xb[:, : max(keep, 1)].to(dev))
        p = torch.softmax(logits.float(), 1)
        out[i : i + len(xb)] = p.gather(1, labels[i : i + batch_size].to(dev).view(-1, 1)).squeeze(1).cpu()
    return out


@dataclass
class WordAttack(TransferredAttack):
    """Base of the word-substitution attacks (shared fields, scoring and the budget).

    Args:
        budget: largest fraction of a sentence's words that may change, in (0, 1] (a sentence of
            ``n`` words gets ``floor(budget · n)`` swaps; 0.25 by default).
        max_synonyms: synonyms tried per word (WordNet sense order).
        batch_size: candidate sentences per forward pass.
        seed: unused by the search (deterministic); kept so results record it.
        max_samples: craft and probe only this many of the audited sentences (evenly spaced, a
            subset of the audit's, the same for every student; None: all). The search costs about
            ``words × (1 + max_synonyms)`` forward passes per sentence, so a text scenario can
            audit the cheap defects on many sentences and a word attack on a few.

    After :meth:`craft`, ``stats`` holds ``sentences``, ``attacked`` (correct on the crafting model),
    ``flipped``, ``words`` and ``changed`` (words swapped), summed over calls.
    """

    kind: ClassVar[str] = "adversarial"
    input_kind: ClassVar[str] = "text"

    budget: Annotated[float, Field(gt=0, le=1)] = 0.25
    max_synonyms: Annotated[int, Field(ge=1)] = 20
    batch_size: Annotated[int, Field(ge=1)] = 256
    seed: int = 0
    max_samples: Annotated[int, Field(ge=1)] | None = None

    def __post_init__(self) -> None:
        self.synonym_fn: SynonymFn | None = None  # injected source (tests); default WordNet
        self.stats = {"sentences": 0, "attacked": 0, "flipped": 0, "words": 0, "changed": 0}

    def config(self) -> dict[str, Any]:
        """The resolved parameters; ``max_samples`` only when set (recorded results keep their ids)."""
        cfg = super().config()
        if cfg.get("max_samples") is None:
            cfg.pop("max_samples", None)
        return cfg

    def probe(self, ctx: Any) -> Any:  # noqa: D102 - see TransferredAttack.probe
        return super().probe(subset_context(ctx, self.max_samples))

    def precraft(self, ctx: Any) -> None:  # noqa: D102 - see Defect.precraft
        super().precraft(subset_context(ctx, self.max_samples))

    def _synonyms(self, word: str) -> list[str]:
        if self.synonym_fn is not None:
            return [s for s in self.synonym_fn(word) if s != word][: self.max_synonyms]
        return list(wordnet_synonyms(word.lower(), self.max_synonyms))

    def craft(self, model, x, y, generator=None):  # noqa: D102 - see ExploratoryDefect.craft
        if x.dim() != 2 or x.is_floating_point():
            raise SafeReuseError(
                f"{self.name} attacks token ids [N, L], got {x.dtype} {tuple(x.shape)}",
                fix="use it on text data (safereuse.data.text); image attacks: penultimate, pgd",
            )
        tok = tokenizer_of(model)
        length = x.shape[1]
        with attack_mode(model):
            labels = y.detach().cpu().long()
            xc = x.detach().cpu()
            p0 = true_class_prob(model, xc, labels, self.batch_size, tok.pad_id)
            pred = self._predict(model, xc)
            words = [tok.words(row) for row in xc]
            out = xc.clone()
            todo = [i for i in range(len(xc)) if int(pred[i]) == int(labels[i])]
            budgets = {i: math.floor(float(self.budget) * len(words[i]) + 1e-9) for i in todo}
            todo = [i for i in todo if budgets[i] >= 1]
            changed = self._search(model, tok, length, words, labels, p0, todo, budgets)
        flipped = 0
        for i, ws in changed.items():
            if ws is not None:
                out[i] = tok.encode([" ".join(ws)], length)[0]
        if changed:
            idx = torch.tensor(list(changed))
            flipped = int((self._predict_in_mode(model, out[idx]) != labels[idx]).sum())
        self.stats["sentences"] += len(xc)
        self.stats["attacked"] += sum(1 for i in range(len(xc)) if int(pred[i]) == int(labels[i]))
        self.stats["flipped"] += flipped
        self.stats["words"] += sum(len(w) for w in words)
        self.stats["changed"] += sum(
            sum(a != b for a, b in zip(ws, words[i], strict=True))
            for i, ws in changed.items()
            if ws is not None
        )
        return out.to(x.device)

    def _predict(self, model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
        dev = model_device(model)
        if len(ids) == 0:
            return torch.zeros(0, dtype=torch.long)
        with torch.no_grad():
            bs = self.batch_size
            return torch.cat([model(ids[i : i + bs].to(dev)).argmax(1).cpu() for i in range(0, len(ids), bs)])

    def _predict_in_mode(self, model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
        with attack_mode(model):
            return self._predict(model, ids)

    def _score(
        self,
        model: nn.Module,
        tok: Any,
        length: int,
        cands: list[tuple[int, list[str]]],
        labels: torch.Tensor,
    ) -> torch.Tensor:
        """True-class probability of every candidate ``(owner, words)``, one batched pass."""
        if not cands:
            return torch.zeros(0)
        ids = tok.encode([" ".join(ws) for _, ws in cands], length)
        owners = torch.tensor([o for o, _ in cands])
        return true_class_prob(model, ids, labels[owners], self.batch_size, tok.pad_id)

    def _search(
        self, model: nn.Module, tok: Any, length: int, words: list[list[str]], labels: torch.Tensor,
        p0: torch.Tensor, todo: list[int], budgets: dict[int, int],
    ) -> dict[int, list[str] | None]:  # fmt: skip
        """The new word lists of the attacked inputs (None: unchanged)."""
        raise NotImplementedError


@DEFECTS.register(
    "pwws", "word importance ranking + WordNet synonym substitution, transferred from the teacher (PWWS)"
)
@dataclass
class PWWS(WordAttack):
    """Probability-weighted word saliency (Ren et al., ACL 2019): rank words, then swap synonyms.

    Crafted on the teacher over the audited sentences, transferred black-box to the student (DIR,
    adversarial form). See the module docstring for the search; the budget caps the swaps.

    Args:
        budget, max_synonyms, batch_size, seed: see :class:`WordAttack`.

    Example:
        >>> PWWS(budget=0.1).config()["budget"]
        0.1
    """

    def _search(self, model, tok, length, words, labels, p0, todo, budgets):  # noqa: D102
        # 1. saliency (word → [UNK]) and every synonym of every word, all in one batched pass
        cands: list[tuple[int, list[str]]] = []
        meta: list[tuple[int, int, str | None]] = []  # (input, word position, synonym or None = [UNK])
        for i in todo:
            ws = words[i]
            for j, w in enumerate(ws):
                cands.append((i, ws[:j] + ["[UNK]"] + ws[j + 1 :]))
                meta.append((i, j, None))
                for s in self._synonyms(w):
                    cands.append((i, ws[:j] + [s] + ws[j + 1 :]))
                    meta.append((i, j, s))
        probs = self._score(model, tok, length, cands, labels)
        sal: dict[int, torch.Tensor] = {i: torch.zeros(len(words[i])) for i in todo}
        best: dict[int, list[tuple[float, str | None]]] = {i: [(0.0, None)] * len(words[i]) for i in todo}
        for (i, j, s), p in zip(meta, probs.tolist(), strict=True):
            drop = float(p0[i]) - p
            if s is None:
                sal[i][j] = drop
            elif drop > best[i][j][0]:
                best[i][j] = (drop, s)
        # 2. order by softmax(saliency) × best drop; swap in that order until flipped or out of budget
        plans: dict[int, list[tuple[int, str]]] = {}
        for i in todo:
            gain = torch.softmax(sal[i], 0) * torch.tensor([d for d, _ in best[i]])
            order = torch.argsort(gain, descending=True, stable=True).tolist()
            plans[i] = [(j, best[i][j][1]) for j in order if best[i][j][1] is not None]  # type: ignore[misc]
        current = {i: list(words[i]) for i in todo}
        done: set[int] = set()
        result: dict[int, list[str] | None] = {i: None for i in todo}
        for step in range(max(budgets.values(), default=0)):
            active = [i for i in todo if i not in done and step < min(budgets[i], len(plans[i]))]
            if not active:
                break
            cand = []
            for i in active:
                j, s = plans[i][step]
                cand.append((i, current[i][:j] + [s] + current[i][j + 1 :]))
            ids = tok.encode([" ".join(ws) for _, ws in cand], length)
            pred = self._predict(model, ids)
            for (i, ws), pr in zip(cand, pred.tolist(), strict=True):
                current[i] = ws
                result[i] = ws
                if pr != int(labels[i]):
                    done.add(i)
        return result


@DEFECTS.register("greedy-swap", "greedy word swap with WordNet synonyms, transferred from the teacher")
@dataclass
class GreedySwap(WordAttack):
    """Greedy word swap (Kuleshov et al., 2018): repeatedly apply the best single synonym swap.

    At each step every not-yet-swapped word of every still-correct input is tried with each of its
    synonyms, all candidates in one batched pass; the swap lowering the true-class probability most
    is kept (only if it lowers it). Crafted on the teacher, transferred to the student.

    Args:
        budget, max_synonyms, batch_size, seed: see :class:`WordAttack`.

    Example:
        >>> GreedySwap().config()["budget"]
        0.25
    """

    max_synonyms: int = 10

    def _search(self, model, tok, length, words, labels, p0, todo, budgets):  # noqa: D102
        current = {i: list(words[i]) for i in todo}
        p_cur = {i: float(p0[i]) for i in todo}
        used: dict[int, set[int]] = {i: set() for i in todo}
        syn = {i: [self._synonyms(w) for w in words[i]] for i in todo}
        active = list(todo)
        result: dict[int, list[str] | None] = {i: None for i in todo}
        for step in range(max(budgets.values(), default=0)):
            active = [i for i in active if step < budgets[i]]
            cands: list[tuple[int, list[str]]] = []
            meta: list[tuple[int, int]] = []
            for i in active:
                ws = current[i]
                for j, options in enumerate(syn[i]):
                    if j in used[i]:
                        continue
                    for s in options:
                        cands.append((i, ws[:j] + [s] + ws[j + 1 :]))
                        meta.append((i, j))
            if not cands:
                break
            probs = self._score(model, tok, length, cands, labels)
            owners = torch.tensor([i for i, _ in meta])
            moved: list[int] = []
            for i in active:
                rows = (owners == i).nonzero().flatten()
                if len(rows) == 0:
                    continue
                k = int(rows[probs[rows].argmin()])
                if float(probs[k]) >= p_cur[i]:
                    continue  # no swap lowers it: this input is done
                current[i] = cands[k][1]
                result[i] = current[i]
                used[i].add(meta[k][1])
                p_cur[i] = float(probs[k])
                moved.append(i)
            if not moved:
                break
            pred = self._predict(model, tok.encode([" ".join(current[i]) for i in moved], length))
            active = [i for i, pr in zip(moved, pred.tolist(), strict=True) if pr == int(labels[i])]
            if not active:
                break
        return result
