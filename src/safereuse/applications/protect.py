"""Model protection (NNSlicer's third application) and its baselines.

Zhang et al., "Dynamic Slicing for Deep Neural Networks", ESEC/FSE 2020 (spec ``nnslicer.md``,
"Applications" 3): hide the synapses that matter most (e.g. keep them in a secure enclave) and ship
the rest. An attacker who has the training data retrains exactly the hidden parameters (all others
frozen) for a fixed budget; the lower the accuracy they recover on the target classes, the better the
protection. Which synapses are hidden is a criterion of
:data:`~safereuse.applications.criteria.CRITERIA`: ``nnslicer`` (ours), ``weight``, ``random``,
``effectivepath``; per layer, the ``hide`` share with the highest scores (kernel slices of convs,
weights of linears; the head is never hidden). Hidden weights are replaced by zeros or by Gaussian
noise of the layer's weight standard deviation.

The attacker: :func:`safereuse.train.fit` on the training images (``attack_size`` of them, all
classes) for ``attack_epochs``, with every parameter frozen except the layers holding hidden
synapses, whose visible entries are pinned to their shipped values after every step
(:class:`~safereuse.slicing.masks.KeepMask`), and BatchNorm statistics frozen (``bn_stats=freeze``):
exactly the hidden weights change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from ..data import DataBundle, Split
from ..errors import SafeReuseError
from ..slicing.masks import KeepMask, Masks
from ..train import FitConfig, accuracy_on, fit
from ..utils import preserve_modes
from .criteria import CriterionScored
from .prune import check_target_classes, target_accuracy
from .synapses import Scores, select_synapses, weight_masks_of


@dataclass
class ProtectResult:
    """What :meth:`Protection.protect` produced.

    Attributes:
        model: the shipped model (hidden weights replaced).
        hidden: mask set, True = hidden.
        metrics: accuracies of the original, shipped and (after :meth:`Protection.attack`) recovered
            model, on the target classes and on all classes.
    """

    model: nn.Module
    hidden: Masks
    metrics: dict[str, Any] = field(default_factory=dict)


def _acc_all(model: nn.Module, split: Split) -> float:
    return accuracy_on(model, split)


@dataclass
class Protection(CriterionScored):
    """Hide the top-contribution synapses; measure what an attacker who retrains them recovers.

    Args:
        criterion: what scores the synapses (:data:`~safereuse.applications.criteria.CRITERIA`):
            ``nnslicer``, ``weight``, ``random`` or ``effectivepath``; an object, a name or
            ``{"name": "nnslicer", "theta": 0.3}``.
        hide: share of every layer's synapses hidden, in (0, 1).
        fill: what replaces hidden weights: ``zero`` or ``noise``.
        attack_epochs: the attacker's training epochs.
        attack_size: training images the attacker uses (None: all).
        attack_lr: the attacker's learning rate (SGD, momentum 0.9, cosine).
        attack_lrs: a learning-rate sweep instead (the strongest attacker, i.e. the rate with the
            highest recovered target-class accuracy on the data's *validation* split, is kept;
            the test split only scores it). A diverged rate counts as the weakest.

    ``per_class``, ``profile_size``, ``batch_size`` and ``seed`` (the noise, the random baseline and
    the attacker's data order) are :class:`~safereuse.applications.criteria.CriterionScored`'s.

    Example:
        >>> Protection("random", hide=0.5).config()["fill"]
        'zero'
    """

    what: ClassVar[str] = "model protection"
    hide: Annotated[float, Field(gt=0, lt=1)] = 0.5
    fill: Literal["zero", "noise"] = "zero"
    attack_epochs: Annotated[int, Field(ge=1)] = 1
    attack_size: Annotated[int, Field(ge=1)] | None = 5000
    attack_lr: Annotated[float, Field(gt=0)] = 0.01
    attack_lrs: list[float] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.attack_lrs is not None and (not self.attack_lrs or any(not lr > 0 for lr in self.attack_lrs)):
            raise SafeReuseError(
                f"attack_lrs must be a non-empty list of positive learning rates, got {self.attack_lrs}",
                fix="e.g. attack_lrs=[0.003, 0.01, 0.03]",
            )

    def protect(
        self,
        model: nn.Module,
        data: DataBundle,
        classes: list[int] | None = None,
        *,
        scores: Scores | None = None,
    ) -> ProtectResult:
        """Hide the ``hide`` share of each layer's most important synapses of a copy of ``model``.

        Args:
            model: the trained model (left untouched).
            data: its data.
            classes: the target classes (label ids; None: all classes).
            scores: precomputed :meth:`scores`.

        Returns:
            A :class:`ProtectResult` (the shipped copy, the hidden mask, accuracies).
        """
        import copy

        n_classes = int(getattr(model, "num_classes", 0) or data.num_classes)
        classes = check_target_classes(list(range(n_classes)) if classes is None else classes, n_classes)
        scores = scores if scores is not None else self.scores(model, data, classes)
        sel = select_synapses(scores, self.hide, lowest=False)
        hidden = {k: ~v for k, v in weight_masks_of(model, sel, keep=False).items()}  # True = hidden
        shipped = copy.deepcopy(model).cpu().eval()
        gen = torch.Generator().manual_seed(self.seed)
        with torch.no_grad():
            for name, h in hidden.items():
                p = shipped.get_parameter(name)
                if self.fill == "noise":
                    fillv = torch.randn(p.shape, generator=gen) * float(p.detach().std())
                else:
                    fillv = torch.zeros_like(p)
                p.copy_(torch.where(h, fillv.to(p.dtype), p))
        t_orig = target_accuracy(model, data.test, classes)
        t_ship = target_accuracy(shipped, data.test, classes)
        metrics = {
            "criterion": self.criterion.name,
            "hide": self.hide,
            "fill": self.fill,
            "target_classes": classes,
            "acc_target_original": t_orig["acc_all_argmax"],
            "acc_all_original": _acc_all(model, data.test),
            "acc_target_shipped": t_ship["acc_all_argmax"],
            "acc_all_shipped": _acc_all(shipped, data.test),
            "n_target": t_orig["n"],
            "n_all": len(data.test),
            "weights_hidden": int(sum(int(h.sum()) for h in hidden.values())),
            "weights_in_hidden_layers": int(sum(h.numel() for h in hidden.values())),
        }
        return ProtectResult(shipped, hidden, metrics)

    def attack(self, result: ProtectResult, data: DataBundle, *, progress: bool = False) -> ProtectResult:
        """The attacker retrains exactly the hidden weights of ``result.model`` (in place); the
        recovered accuracies join ``result.metrics``.

        Args:
            result: what :meth:`protect` returned.
            data: the training data the attacker has (and the test split to score).
            progress: progress bars.

        Returns:
            ``result``, its model retrained.
        """
        if self.attack_lrs is None:
            self._retrain(result, data, self.attack_lr, progress)
        else:
            self._strongest(result, data, progress)
        model = result.model
        model.eval()
        classes = result.metrics["target_classes"]
        t = target_accuracy(model, data.test, classes)
        result.metrics.update(
            {
                "acc_target_recovered": t["acc_all_argmax"],
                "acc_all_recovered": _acc_all(model, data.test),
            }  # fmt: skip
        )
        return result

    def _strongest(self, result: ProtectResult, data: DataBundle, progress: bool) -> None:
        """Retrain a copy per rate of ``attack_lrs``; keep the one that recovers the most target-class
        accuracy on the validation split (a diverged rate is the weakest), in place in ``result``."""
        import copy

        if data.val is None or len(data.val) == 0:
            raise SafeReuseError("attack_lrs needs a validation split", fix="use data with val_fraction > 0")
        classes = result.metrics["target_classes"]
        best: tuple[float, float, ProtectResult] | None = None
        sweep: dict[str, float | None] = {}
        for lr in self.attack_lrs or []:
            trial = ProtectResult(copy.deepcopy(result.model), result.hidden, dict(result.metrics))
            try:
                self._retrain(trial, data, lr, progress)
                sweep[f"{lr:g}"] = target_accuracy(trial.model.eval(), data.val, classes)["acc_all_argmax"]
            except SafeReuseError:  # diverged
                sweep[f"{lr:g}"] = None
            score = sweep[f"{lr:g}"]
            if score is not None and (best is None or score > best[0]):
                best = (score, lr, trial)
        if best is None:
            raise SafeReuseError("every attacker learning rate diverged", fix="pass smaller attack_lrs")
        result.model = best[2].model
        result.metrics.update({**best[2].metrics, "attack_lr": best[1], "val_target_recovered_by_lr": sweep,
                               "n_val": len(data.val)})  # fmt: skip

    def _retrain(self, result: ProtectResult, data: DataBundle, lr: float, progress: bool) -> None:
        """Retrain exactly the hidden weights of ``result.model`` in place at learning rate ``lr``."""
        model = result.model
        train = data.train
        if self.attack_size is not None:
            train = Split(train.x[: self.attack_size], train.y[: self.attack_size])
        values = {k: model.get_parameter(k).detach().clone() for k in result.hidden}
        with preserve_modes(model):
            for n, p in model.named_parameters():
                p.requires_grad_(n in result.hidden)
            cfg = FitConfig(
                epochs=self.attack_epochs, lr=lr, batch_size=min(self.batch_size, 128),
                weight_decay=0.0, bn_stats="freeze", seed=self.seed, device="cpu", progress=progress,
            )  # fmt: skip
            fit(model, train, None, cfg, after_step=KeepMask(result.hidden, values))
        result.metrics.update({"attack_images": len(train), "attack_epochs": self.attack_epochs})


__all__ = ["ProtectResult", "Protection"]
