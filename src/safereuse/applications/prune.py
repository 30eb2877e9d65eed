"""Class-specific pruning (NNSlicer's second application) and its baselines.

Zhang et al., "Dynamic Slicing for Deep Neural Networks", ESEC/FSE 2020 (spec ``nnslicer.md``,
"Applications" 2): slice the model with the inputs of the target classes ``O^T``, rank every layer's
synapses by contribution and prune the ``r`` lowest; a neuron whose synapses are all pruned is
removed. Here a pruned synapse is a zeroed kernel slice (conv) or weight (linear), and the model is
materialised with Torch-Pruning (:func:`safereuse.slicing.materialize`), so removed neurons are gone
for real. Baselines by criterion (:data:`~safereuse.applications.criteria.CRITERIA`): ``weight``
(``|w|``), ``channel`` (mean ``|w|`` of the neuron), ``effectivepath``. The head is never pruned.

Target-class accuracy: on the test images of ``O^T``, the class is the argmax over the target
classes' logits only (the pruned model serves ``O^T``); ``acc_all_argmax`` is the strict rule (argmax
over every class) beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

import torch
from pydantic import Field
from torch import nn

from ..data import DataBundle, Split
from ..errors import SafeReuseError
from ..metrics import count_params
from ..slicing.masks import KeepMask, Masks
from ..slicing.materialize import materialize
from ..train import FitConfig, fit, predict
from .criteria import Criterion, CriterionScored
from .synapses import Scores, select_synapses, weight_masks_of


def check_target_classes(classes: list[int] | None, n_classes: int) -> list[int]:
    """``classes`` (label ids of the model) checked: non-empty, distinct, each in ``0..n_classes-1``.

    Example:
        >>> check_target_classes([2, 5], 10)
        [2, 5]
    """
    if not classes:
        raise SafeReuseError("no target class given", fix="pass e.g. --target-classes 2,5,7")
    bad = [c for c in classes if not 0 <= int(c) < n_classes]
    if bad:
        raise SafeReuseError(
            f"target class {bad[0]} is not a class of the model (it has classes 0..{n_classes - 1})",
            fix="choose target classes the model was trained on",
        )
    if len(set(classes)) != len(classes):
        raise SafeReuseError("a target class is listed twice", fix="list each class once")
    return [int(c) for c in classes]


def check_ratio(ratio: float, what: str = "ratio") -> float:
    """``ratio`` when it lies in (0, 1); else a one-line error."""
    r = float(ratio)
    if not 0.0 < r < 1.0:
        raise SafeReuseError(f"{what} {ratio} is outside (0, 1)", fix="pass e.g. 0.5")
    return r


def target_split(split: Split, classes: list[int]) -> Split:
    """The images of ``split`` whose label is one of ``classes`` (labels unchanged)."""
    keep = torch.isin(split.y, torch.tensor(classes, dtype=split.y.dtype))
    return Split(split.x[keep], split.y[keep])


def target_accuracy(
    model: nn.Module, split: Split, classes: list[int], batch_size: int = 512
) -> dict[str, Any]:
    """Accuracy on ``split``'s images of ``classes``: argmax over those classes' logits (``acc``) and
    over every class (``acc_all_argmax``), with ``n``.

    Example:
        >>> net = nn.Linear(2, 3)
        >>> s = Split(torch.eye(2), torch.tensor([0, 1]))
        >>> sorted(target_accuracy(net, s, [0, 1]))
        ['acc', 'acc_all_argmax', 'n']
    """
    t = target_split(split, classes)
    if len(t) == 0:
        return {"acc": float("nan"), "acc_all_argmax": float("nan"), "n": 0}
    logits = predict(model, t.x, batch_size)
    ids = torch.tensor(classes)
    sub = ids[logits[:, ids].argmax(1)]
    return {
        "acc": float((sub == t.y).float().mean()),
        "acc_all_argmax": float((logits.argmax(1) == t.y).float().mean()),
        "n": len(t),
    }


def zero_pattern(model: nn.Module, layers: list[str]) -> Masks:
    """``{"<layer>.weight": weight != 0}``: the masks a materialised pruned model keeps (for fine-tuning)."""
    return {f"{n}.weight": (model.get_submodule(n).weight.detach() != 0).cpu() for n in layers}


@dataclass
class PruneResult:
    """What :meth:`ClassPruning.prune` produced.

    Attributes:
        model: the materialised pruned model (fine-tuned when asked).
        masks: the weight masks on the original model (True = kept).
        metrics: target-class accuracy before / after (and after fine-tuning), parameters, synapses.
    """

    model: nn.Module
    masks: Masks
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class ClassPruning(CriterionScored):
    """Prune, per layer, the ``ratio`` synapses that matter least for the target classes.

    Args:
        criterion: what scores the synapses (:data:`~safereuse.applications.criteria.CRITERIA`):
            ``nnslicer`` (ours), ``weight``, ``channel`` or ``effectivepath``; an object, a name or
            ``{"name": "nnslicer", "theta": 0.3}``.
        ratio: share of every layer's synapses pruned, in (0, 1).
        finetune_epochs: epochs of fine-tuning the pruned model on the target classes (0: none).
        finetune_size: training images of the target classes used for fine-tuning (None: all).
        lr: fine-tuning learning rate (SGD, momentum 0.9, cosine).

    ``per_class``, ``profile_size``, ``batch_size`` and ``seed`` (the fine-tuning order) are
    :class:`~safereuse.applications.criteria.CriterionScored`'s.

    Example:
        >>> ClassPruning("weight", ratio=0.3).config()["ratio"]
        0.3
        >>> ClassPruning({"name": "nnslicer", "theta": 0.2}).config()["theta"]
        0.2
    """

    what: ClassVar[str] = "class-specific pruning"
    ratio: Annotated[float, Field(gt=0, lt=1)] = 0.5
    finetune_epochs: Annotated[int, Field(ge=0)] = 0
    finetune_size: Annotated[int, Field(ge=1)] | None = 2000
    lr: Annotated[float, Field(gt=0)] = 0.01

    def prune(
        self,
        model: nn.Module,
        data: DataBundle,
        classes: list[int],
        *,
        scores: Scores | None = None,
        progress: bool = False,
    ) -> PruneResult:
        """Prune ``model`` (left untouched) for ``classes`` (label ids of ``data``).

        Args:
            model: the trained model.
            data: its data (training images are sliced, test images score the result).
            classes: the target classes.
            scores: precomputed :meth:`scores` (default: computed here).
            progress: progress bars of the fine-tuning.

        Returns:
            A :class:`PruneResult`.
        """
        classes = check_target_classes(classes, int(getattr(model, "num_classes", 0) or data.num_classes))
        scores = scores if scores is not None else self.scores(model, data, classes)
        pruned_syn = select_synapses(scores, self.ratio, lowest=True)
        masks = weight_masks_of(model, pruned_syn, keep=False)
        before = target_accuracy(model, data.test, classes)
        small = materialize(model.cpu().eval(), masks, data.test.x[:1])
        after = target_accuracy(small, data.test, classes)
        syn_total = sum(m.numel() for m in pruned_syn.values())
        metrics: dict[str, Any] = {
            "criterion": self.criterion.name,
            "ratio": self.ratio,
            "target_classes": classes,
            "acc_before": before["acc"],
            "acc_pruned": after["acc"],
            "acc_pruned_all_argmax": after["acc_all_argmax"],
            "n": after["n"],
            "synapses_pruned": int(sum(int(m.sum()) for m in pruned_syn.values())),
            "synapses_total": int(syn_total),
            "params_before": count_params(model),
            "params_after": count_params(small),
        }
        if self.finetune_epochs:
            metrics.update(self._finetune(small, data, classes, list(pruned_syn), progress))
        return PruneResult(small, masks, metrics)

    def _finetune(
        self, small: nn.Module, data: DataBundle, classes: list[int], layers: list[str], progress: bool
    ) -> dict[str, Any]:
        train = target_split(data.train, classes)
        if self.finetune_size is not None:
            train = Split(train.x[: self.finetune_size], train.y[: self.finetune_size])
        keep = zero_pattern(small, layers)  # pruned synapses inside kept neurons stay pruned
        cfg = FitConfig(epochs=self.finetune_epochs, lr=self.lr, batch_size=min(self.batch_size, 128),
                        seed=self.seed, device="cpu", progress=progress)  # fmt: skip
        fit(small, train, None, cfg, after_step=KeepMask(keep))
        small.eval()
        acc = target_accuracy(small, data.test, classes)
        return {"acc_finetuned": acc["acc"], "acc_finetuned_all_argmax": acc["acc_all_argmax"],
                "finetune_images": len(train)}  # fmt: skip


def prune_curve(
    model: nn.Module,
    data: DataBundle,
    classes: list[int],
    *,
    criteria: list[Criterion | str | dict[str, Any]],
    ratios: list[float],
    finetune_epochs: int = 1,
    base: dict[str, Any] | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Target-class accuracy of every criterion at every ratio, with and without fine-tuning.

    The scores are computed once per criterion and reused across ratios.

    Returns:
        One metrics dict (:meth:`ClassPruning.prune`) per criterion × ratio.
    """
    rows = []
    for crit in criteria:
        pr = ClassPruning.from_params(crit, ratio=ratios[0], finetune_epochs=finetune_epochs, **(base or {}))
        scores = pr.scores(model, data, classes)
        for r in ratios:
            pr.ratio = check_ratio(r)
            rows.append(pr.prune(model, data, classes, scores=scores, progress=progress).metrics)
    return rows


__all__ = [
    "ClassPruning",
    "PruneResult",
    "check_ratio",
    "check_target_classes",
    "prune_curve",
    "target_accuracy",
    "target_split",
    "zero_pattern",
]
