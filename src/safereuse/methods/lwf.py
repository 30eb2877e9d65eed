"""LwF-style robust transfer: fine-tuning with a penultimate-feature distance to the source.

Reference: Shafahi, Saadatpanah, Zhu, Ghiasi, Studer, Jacobs, Goldstein, "Adversarially Robust
Transfer Learning", ICLR 2020 (§5, the learning-without-forgetting objective); CARTL (Chen et al.,
ICML 2021) uses it as the *LwF* baseline (spec: ``shared/specs/cartl.md``).

End-to-end fine-tuning with ``L = CE + λ_d · mean_batch ‖f(x; θ) − f(x; θ*)‖₁``, where ``f`` is the
penultimate representation (``model.features``, after pooling) and ``θ*`` a frozen copy of the
(robust) teacher: the student may change its features only as far as the penalty allows, which keeps
part of the teacher's robustness. Schedule of the original: lr 0.001 constant, momentum 0.9, weight
decay 2e-4, about 50 epochs of which the first half trains the new fc only (here
``head_fraction`` of ``epochs``, the body frozen with its BatchNorm statistics), then everything.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..data import DataBundle
from ..device import model_device
from ..models import ReusableModel
from ..train import FitConfig, FitResult, LossFn, fit
from .base import METHODS, Prepared, TransferMethod
from .baselines import frozen_teacher


def feature_distance_loss(teacher: ReusableModel, weight: float, label_smoothing: float = 0.0) -> LossFn:
    """``loss(model, x, y) = CE + weight · mean_batch ‖model.features(x) − teacher.features(x)‖₁``.

    Args:
        teacher: the frozen source (no gradients; moved to the batch's device when needed).
        weight: λ_d.
        label_smoothing: of the cross-entropy.

    Returns:
        A ``loss_fn`` for :func:`safereuse.train.fit`.

    Example:
        >>> from safereuse.models import create_model
        >>> m = create_model("smallcnn", num_classes=3)
        >>> loss = feature_distance_loss(frozen_teacher(m), weight=1.0)
        >>> x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 0])
        >>> bool(torch.isclose(loss(m, x, y), F.cross_entropy(m(x), y)))  # same weights: no distance
        True
    """

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        assert isinstance(model, ReusableModel)
        feats = model.features(x)
        out = F.cross_entropy(model.head(feats), y, label_smoothing=label_smoothing)
        if not weight:
            return out
        if model_device(teacher) != x.device:
            teacher.to(x.device)
        with torch.no_grad():
            target = teacher.features(x)
        return out + weight * (feats - target).abs().sum(1).mean()

    return loss


@dataclass
class _LwFPrepared(Prepared):
    teacher: ReusableModel | None = None


@METHODS.register("lwf", "fine-tune end to end with an L1 penalty to the teacher's penultimate features")
@dataclass
class LwF(TransferMethod):
    """LwF robust transfer (Shafahi et al., ICLR 2020), CARTL's *LwF* baseline.

    Args:
        feature_weight: λ_d, coefficient of the L1 feature distance (paper sweep 0.1 … 0.001).
        head_fraction: share of ``epochs`` that trains the new head only (body and its BatchNorm
            statistics frozen) before end-to-end training (original: one half).

    The defaults are the original schedule (lr 0.001 constant, momentum 0.9, weight decay 2e-4, no
    separate head learning rate). The feature targets come from a frozen teacher copy whose
    BatchNorm layers use batch statistics like the student's in training
    (:func:`~safereuse.methods.baselines.frozen_teacher`), so the penalty measures weight drift only.

    Example:
        >>> LwF(feature_weight=0.1).config()["lr"]
        0.001
    """

    feature_weight: Annotated[float, Field(ge=0)] = 0.01
    head_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.5
    lr: Annotated[float, Field(gt=0)] = 0.001
    weight_decay: Annotated[float, Field(ge=0)] = 2e-4
    schedule: Literal["cosine", "step", "constant"] = "constant"
    head_lr_mult: Annotated[float, Field(ge=0)] = 1.0

    def prepare(self, model: ReusableModel, data: DataBundle, seed: int) -> Prepared:
        teacher = frozen_teacher(model)
        model.reset_head(data.num_classes, seed=seed)
        return _LwFPrepared(model, teacher=teacher)

    def train(
        self, prepared: Prepared, data: DataBundle, cfg: FitConfig, checkpoint_dir: str | Path | None
    ) -> FitResult:
        assert isinstance(prepared, _LwFPrepared) and prepared.teacher is not None
        model = prepared.model
        head_epochs = int(cfg.epochs * self.head_fraction)
        ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
        if head_epochs:
            head_cfg = dataclasses.replace(cfg, epochs=head_epochs, train_last_k=1, bn_stats="freeze")
            head = fit(model, data.train, data.val, head_cfg, checkpoint_dir=ckpt and ckpt / "head")
            prepared.info["head_phase"] = {"epochs": head_epochs, "best_val_acc": head.best_val_acc}
        loss = feature_distance_loss(prepared.teacher, self.feature_weight, cfg.label_smoothing)
        body_cfg = dataclasses.replace(cfg, epochs=cfg.epochs - head_epochs)
        return fit(model, data.train, data.val, body_cfg, loss_fn=loss, checkpoint_dir=ckpt and ckpt / "all")
