"""The baselines ReMoS is judged against: magnitude pruning, DELTA, DELTA-R and Renofeation.

- ``mag-prune``: zero the globally smallest-``|w|`` weights of the sliced layers, then fine-tune
  (the ReMoS artifact's pruning baseline; 80 % of conv weights for CV, 30 % of Linear weights for NLP).
- ``delta`` (Li, Xiong, Wang, Huan, Chen, Liu, Bi, Wu, "DELTA: DEep Learning Transfer using Feature
  Map with Attention for Convolutional Networks", ICLR 2019): fine-tune with an L2 penalty between the
  student's and the teacher's feature maps at the block outputs, plus L2-SP (Li, Grandvalet, Davoine,
  ICML 2018) pulling the weights towards the teacher's.
- ``delta-r``: DELTA started from a re-initialised student (features still regularised to the teacher).
- ``renofeation`` (Chin, Zhang, Marculescu, "Renofeation: A Simple Transfer Learning Method for
  Improved Adversarial Robustness", CVPR Workshops 2021): re-initialise, then train with feature
  distillation to the teacher's block outputs, spatial dropout on the student's feature maps, and
  stochastic weight averaging (SWA, Izmailov et al., UAI 2018) over the last epochs.

All of them train through :func:`safereuse.train.fit`: the penalties come in through ``loss_fn``,
masks through ``after_step``; the feature maps are read with :func:`safereuse.slicing.capture` at
``model.blocks()`` (head excluded) of the student and of a frozen copy of the teacher.
"""

from __future__ import annotations

import copy
import dataclasses
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..data import DataBundle
from ..device import model_device
from ..errors import SafeReuseError
from ..models import ReusableModel
from ..slicing import (
    Capture,
    KeepMask,
    LayerKind,
    apply_reset,
    capture,
    magnitude_slice,
    reinit_body,
    slice_info,
    slice_layers,
    weight_masks,
)
from ..train import FitConfig, FitResult, accuracy_on, epoch_steps, fit
from .base import METHODS, Prepared, TransferMethod

# -- magnitude pruning -----------------------------------------------------------------------------


@METHODS.register("mag-prune", "zero the globally smallest-magnitude weights, then fine-tune")
@dataclass
class MagPrune(TransferMethod):
    """Global magnitude pruning of the teacher, then fine-tuning (the ReMoS paper's pruning baseline).

    Args:
        ratio: fraction of the sliced layers' weights set to zero; exactly ``round(ratio · N)``, the
            smallest ``|w|`` (ties: lower flat index). 0.8 is the artifact's CV setting (conv
            weights); it used 0.3 for the Linear layers of its NLP models. At 0.8 our few-shot
            resnet8 students kept their accuracy (−1.3 points against fine-tuning on average over
            three scenarios, 3 seeds), so the artifact's value stays the default.
        layers: ``auto`` (conv layers, or every Linear when the model has none), ``conv``,
            ``linear`` or ``all``; the head is never pruned.
        keep_mask: keep the pruned weights at zero throughout fine-tuning (the artifact does not).

    The pruning mask is saved as ``mag-prune.keep.<param>`` (True = kept) in ``Student.extras``.

    Example:
        >>> MagPrune(ratio=0.5, keep_mask=True).config()["keep_mask"]
        True
    """

    ratio: Annotated[float, Field(ge=0, le=1)] = 0.8
    layers: LayerKind = "auto"
    keep_mask: bool = False

    def prepare(self, model: ReusableModel, data: DataBundle, seed: int) -> Prepared:
        layers = slice_layers(model, self.layers)
        masks = magnitude_slice([m.weight for _, m in layers], self.ratio)
        keep = weight_masks(layers, masks)
        apply_reset(model, keep)
        model.reset_head(data.num_classes, seed=seed)
        extras = {f"mag-prune.keep.{k}": v for k, v in keep.items()}
        return Prepared(model, extras, slice_info([n for n, _ in layers], keep))

    def train(
        self, prepared: Prepared, data: DataBundle, cfg: FitConfig, checkpoint_dir: str | Path | None
    ) -> FitResult:
        keep = {k.removeprefix("mag-prune.keep."): v for k, v in prepared.extras.items()}
        after = KeepMask(keep) if self.keep_mask else None
        return fit(prepared.model, data.train, data.val, cfg, after_step=after, checkpoint_dir=checkpoint_dir)


# -- feature-map regularisation (DELTA, DELTA-R, Renofeation) ---------------------------------------


def feature_modules(model: ReusableModel) -> list[tuple[str, nn.Module]]:
    """The module whose output is each block's output (``model.blocks()`` without the head).

    A block joined from siblings (``"conv1+bn1"``) outputs what its last part outputs.
    """
    names = [n for n, _ in model.blocks()][:-1]
    if not names:
        raise SafeReuseError(
            f"{type(model).__name__} has no block before its head to regularise",
            fix="adapt the model with blocks=[...] naming its stages",
        )
    return [(n, model.get_submodule(n.split("+")[-1])) for n in names]


@dataclass
class _TeacherPrepared(Prepared):
    teacher: nn.Module | None = None
    reference: dict[str, torch.Tensor] = field(default_factory=dict)


class FeatureRegulariser:
    """Forward hooks and the loss of feature-map regularisation towards a frozen teacher.

    ``loss(model, x, y)`` = cross-entropy + ``feature_weight`` · Σ_blocks mean((F_s − F_t)²) / mean(F_t²)
    + ``sp_weight`` · Σ ‖w − w_teacher‖² (L2-SP over every non-head parameter in ``reference``).
    The feature maps are read at the block outputs (clones, so later in-place activations do not
    change them); with ``dropout > 0`` the student's block outputs then go through spatial dropout
    (``F.dropout2d`` on 4-D maps, plain dropout otherwise) in training mode — the teacher's never do.
    Use as a context manager: the hooks exist only inside ``with``.

    Args:
        teacher: the frozen teacher copy (kept in eval mode, moved to the batch's device).
        student: the model being trained (same block structure).
        feature_weight: coefficient of the feature-map term.
        sp_weight: coefficient of the L2-SP term.
        reference: parameter name → the teacher's value (for L2-SP).
        dropout: spatial-dropout probability on the student's block outputs (0: off).
        label_smoothing: of the cross-entropy.
    """

    def __init__(
        self,
        teacher: nn.Module,
        student: ReusableModel,
        feature_weight: float,
        sp_weight: float = 0.0,
        reference: dict[str, torch.Tensor] | None = None,
        dropout: float = 0.0,
        label_smoothing: float = 0.0,
    ) -> None:
        self.teacher = teacher
        self.student = student
        self.feature_weight = feature_weight
        self.sp_weight = sp_weight
        self.reference = reference or {}
        self.dropout = dropout
        self.label_smoothing = label_smoothing
        self._stack: ExitStack | None = None
        self._teacher_cap: Capture | None = None
        self._student_cap: Capture | None = None
        self._ref_dev: dict[str, torch.Tensor] = {}

    def __enter__(self) -> FeatureRegulariser:
        assert isinstance(self.teacher, ReusableModel)
        with ExitStack() as stack:
            # clones: later in-place activations must not change the recorded maps
            self._teacher_cap = stack.enter_context(
                capture(self.teacher, feature_modules(self.teacher), reduce=torch.clone)
            )
            self._student_cap = stack.enter_context(
                capture(
                    self.student,
                    feature_modules(self.student),
                    grad=True,
                    reduce=torch.clone,
                    transform=self._drop if self.dropout > 0 else None,
                )
            )
            for cap in (self._teacher_cap, self._student_cap):
                cap.active = False  # recording only inside loss(): fit's evaluation passes are not kept
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove the hooks (idempotent)."""
        if self._stack is not None:
            self._stack.close()
            self._stack = None
        self._teacher_cap = self._student_cap = None

    def _drop(self, m: nn.Module, out: torch.Tensor) -> torch.Tensor | None:
        if not m.training:
            return None
        if out.dim() == 4:
            return F.dropout2d(out, self.dropout, training=True)
        return F.dropout(out, self.dropout, training=True)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t_cap, s_cap = self._teacher_cap, self._student_cap
        if t_cap is None or s_cap is None:
            raise RuntimeError("FeatureRegulariser.loss is only available inside its with block")
        record = bool(self.feature_weight)
        t_cap.clear()
        s_cap.clear()
        t_cap.active = s_cap.active = record
        try:
            if record:
                if model_device(self.teacher) != x.device:
                    self.teacher.to(x.device)
                with torch.no_grad():
                    self.teacher(x)
            logits = model(x)
        finally:
            t_cap.active = s_cap.active = False
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        if record:
            s_feats, t_feats = s_cap.outputs(), t_cap.outputs()
            t_cap.clear()
            s_cap.clear()
            if len(s_feats) != len(t_feats):
                raise SafeReuseError(
                    "student and teacher produced different numbers of block outputs",
                    fix="use a student with the teacher's architecture",
                )
            feat = sum(
                F.mse_loss(s, t) / t.pow(2).mean().clamp_min(1e-8)
                for s, t in zip(s_feats, t_feats, strict=True)
            )
            loss = loss + self.feature_weight * feat
        if self.sp_weight and self.reference:
            sp = torch.zeros((), device=x.device)
            for name, ref in self.reference.items():
                p = model.get_parameter(name)
                r = self._ref_dev.get(name)
                if r is None or r.device != p.device:
                    r = self._ref_dev[name] = ref.to(p.device)
                sp = sp + (p - r).pow(2).sum()
            loss = loss + self.sp_weight * sp
        return loss


def frozen_teacher(model: ReusableModel) -> ReusableModel:
    """A private copy of the teacher for feature targets: no gradients, eval mode except BatchNorm.

    BatchNorm normalises with the batch's statistics, as the student's does in training, so a
    student equal to the teacher has exactly zero feature loss (with running statistics, the
    train/eval difference alone would push a fine-tuned student away from the teacher). Only this
    copy's running statistics change; it is discarded after training.

    Example:
        >>> from safereuse.models import create_model
        >>> t = frozen_teacher(create_model("smallcnn", num_classes=3))
        >>> t.training, t.bn1.training, any(p.requires_grad for p in t.parameters())
        (False, True, False)
    """
    teacher = copy.deepcopy(model)
    teacher.eval()
    for m in teacher.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@METHODS.register(
    "delta", "fine-tune with feature-map (block outputs) and L2-SP regularisation to the teacher"
)
@dataclass
class Delta(TransferMethod):
    """DELTA (Li et al., ICLR 2019): fine-tuning regularised towards the teacher's behaviour.

    loss = CE + ``feature_weight`` · Σ_blocks mean((F_student − F_teacher)²) / mean(F_teacher²)
    + ``sp_weight`` · Σ_params ‖w − w_teacher‖².

    The feature maps are the outputs of ``model.blocks()`` (the ResNet stages' blocks), compared
    with a frozen copy of the teacher on the same batch. Each block's squared distance is divided by
    the teacher's feature energy on the batch (a relative error: 1 = as far as zero features), so
    blocks of different scale weigh alike and one coefficient fits any architecture; a raw mean
    squared error on an unnormalised 1,568 → 64 Linear block made SGD unstable at lr 0.01 already
    for coefficients of ~20. DELTA's supervised channel attention (weights
    per channel from the loss increase when the channel is removed) is not implemented: every channel
    weighs the same (the paper's ``fea_map`` variant). L2-SP covers every non-head parameter; the
    ordinary ``weight_decay`` still applies on top (it is small).

    Args:
        feature_weight: coefficient of the feature-map term (mean squared distance per block).
        sp_weight: coefficient of the L2-SP term (sum of squared distances to the teacher's weights).
            With SGD keep ``lr · sp_weight`` well below 1 or the term oscillates.

    Example:
        >>> Delta(feature_weight=0.5).config()["sp_weight"]
        0.01
    """

    feature_weight: Annotated[float, Field(ge=0)] = 1.0
    sp_weight: Annotated[float, Field(ge=0)] = 0.01
    reinit: ClassVar[bool] = False

    def prepare(self, model: ReusableModel, data: DataBundle, seed: int) -> Prepared:
        teacher = frozen_teacher(model)
        head = model.head_name + "."
        reference = (
            {n: p.detach().clone() for n, p in model.named_parameters() if not n.startswith(head)}
            if self.sp_weight
            else {}
        )
        if self.reinit:
            reinit_body(model, seed)
        model.reset_head(data.num_classes, seed=seed)
        info = {"reinit": self.reinit, "blocks": [n for n, _ in feature_modules(model)]}
        return _TeacherPrepared(model, teacher=teacher, reference=reference, info=info)

    def regulariser(self, prepared: Prepared, cfg: FitConfig) -> FeatureRegulariser:
        assert isinstance(prepared, _TeacherPrepared) and prepared.teacher is not None
        return FeatureRegulariser(
            prepared.teacher,
            prepared.model,
            self.feature_weight,
            self.sp_weight,
            prepared.reference,
            label_smoothing=cfg.label_smoothing,
        )

    def train(
        self, prepared: Prepared, data: DataBundle, cfg: FitConfig, checkpoint_dir: str | Path | None
    ) -> FitResult:
        with self.regulariser(prepared, cfg) as reg:
            return fit(
                prepared.model, data.train, data.val, cfg, loss_fn=reg.loss, checkpoint_dir=checkpoint_dir
            )


@METHODS.register(
    "delta-r", "DELTA from a re-initialised student (features still regularised to the teacher)"
)
@dataclass
class DeltaR(Delta):
    """DELTA-R: the DELTA objective, started from re-initialised weights.

    The student gets a fresh initialisation of the teacher's architecture (input normalisation kept,
    so its block outputs stay comparable with the teacher's), and is trained with the feature-map
    term towards the teacher. ``sp_weight`` defaults to 0: pulling random weights towards the
    teacher's would re-import exactly what the re-initialisation removed; set it to get the full
    DELTA objective.

    Example:
        >>> DeltaR().config()["sp_weight"]
        0.0
    """

    sp_weight: Annotated[float, Field(ge=0)] = 0.0
    lr: Annotated[float, Field(gt=0)] = 0.05
    head_lr_mult: Annotated[float, Field(ge=0)] = 1.0
    reinit: ClassVar[bool] = True


@METHODS.register("renofeation", "re-init + feature distillation + spatial dropout + weight averaging")
@dataclass
class Renofeation(TransferMethod):
    """Renofeation (Chin et al., CVPR-W 2021): train a re-initialised student with feature distillation
    to the teacher, spatial dropout and stochastic weight averaging.

    - re-initialisation of every non-head parameter (teacher's input normalisation kept);
    - feature distillation: ``feature_weight`` · Σ_blocks mean((F_s − F_t)²) / mean(F_t²) at the block
      outputs (``model.blocks()`` without the head), against a frozen teacher copy;
    - spatial dropout (``Dropout2d``, probability ``dropout``) on the student's block outputs during
      training (forward hooks, removed afterwards — the saved model is a plain model);
    - SWA: the parameters at the end of each epoch after ``swa_start · epochs`` (at least the last
      epoch) are averaged, then the BatchNorm statistics are recomputed on the training set
      (``torch.optim.swa_utils.update_bn``). The averaged model is returned instead of the
      best-validation epoch, and ``fit.best_val_acc`` reports its validation accuracy. The SWA
      average follows the run's cosine schedule (no separate SWA learning rate); a resumed run
      averages only the epochs it ran itself.

    Args:
        feature_weight: coefficient of the distillation term.
        dropout: spatial-dropout probability.
        swa_start: fraction of the epochs after which the weights are averaged.

    Example:
        >>> Renofeation(dropout=0.2).config()["swa_start"]
        0.75
    """

    lr: Annotated[float, Field(gt=0)] = 0.05
    head_lr_mult: Annotated[float, Field(ge=0)] = 1.0
    feature_weight: Annotated[float, Field(ge=0)] = 1.0
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1
    swa_start: Annotated[float, Field(ge=0, le=1)] = 0.75

    def prepare(self, model: ReusableModel, data: DataBundle, seed: int) -> Prepared:
        teacher = frozen_teacher(model)
        reinit_body(model, seed)
        model.reset_head(data.num_classes, seed=seed)
        return _TeacherPrepared(
            model, teacher=teacher, info={"blocks": [n for n, _ in feature_modules(model)]}
        )

    def train(
        self, prepared: Prepared, data: DataBundle, cfg: FitConfig, checkpoint_dir: str | Path | None
    ) -> FitResult:
        assert isinstance(prepared, _TeacherPrepared) and prepared.teacher is not None
        model = prepared.model
        steps_per_epoch = epoch_steps(len(data.train), cfg)
        first = min(int(self.swa_start * cfg.epochs), cfg.epochs - 1)  # average epochs first+1 .. epochs
        swa = WeightAverage(model, steps_per_epoch, first)  # before the regulariser's hooks go on
        reg = FeatureRegulariser(
            prepared.teacher,
            model,
            self.feature_weight,
            dropout=self.dropout,
            label_smoothing=cfg.label_smoothing,
        )
        with reg:
            result = fit(model, data.train, data.val, cfg, loss_fn=reg.loss, after_step=swa,
                         checkpoint_dir=checkpoint_dir)  # fmt: skip
        prepared.info["swa_epochs"] = swa.count
        if swa.count == 0:  # stopped early before the averaging window
            return result
        swa.load_into(model)
        dev = next(model.parameters()).device
        batches = (data.train.x[i : i + cfg.batch_size] for i in range(0, len(data.train), cfg.batch_size))
        torch.optim.swa_utils.update_bn(batches, model, device=dev)
        model.eval()
        val = accuracy_on(model, data.val, cfg.eval_batch_size) if len(data.val) else float("nan")
        prepared.info["best_epoch_val_acc"] = result.best_val_acc
        return dataclasses.replace(result, best_val_acc=val, best_epoch=result.epochs_run)


class WeightAverage:
    """``after_step`` callable: the average of the parameters at the end of each epoch > ``first``.

    The average is ``torch.optim.swa_utils.AveragedModel``'s (equal weights, parameters only: the
    buffers are not averaged, Renofeation recomputes the BatchNorm statistics afterwards with
    ``update_bn``). Build it before hooks go on the model: ``AveragedModel`` keeps a deep copy.

    Args:
        model: the model whose parameters are averaged (copied once here).
        steps_per_epoch: optimiser steps per epoch (the call counts steps).
        first: the last epoch *not* averaged; the ends of epochs ``first + 1 …`` are.

    Example:
        >>> lin = torch.nn.Linear(1, 1, bias=False)
        >>> swa = WeightAverage(lin, steps_per_epoch=1, first=0)
        >>> for w in (2.0, 4.0):
        ...     _ = lin.weight.data.fill_(w)
        ...     swa(lin)
        >>> swa.load_into(lin)
        >>> swa.count, lin.weight.item()
        (2, 3.0)
    """

    def __init__(self, model: nn.Module, steps_per_epoch: int, first: int) -> None:
        self.steps_per_epoch = steps_per_epoch
        self.first = first
        self.steps = 0
        self.averaged = torch.optim.swa_utils.AveragedModel(model)

    @property
    def count(self) -> int:
        """Epoch ends averaged so far."""
        return int(self.averaged.n_averaged)

    def __call__(self, model: nn.Module) -> None:
        self.steps += 1
        if self.steps % self.steps_per_epoch or self.steps // self.steps_per_epoch <= self.first:
            return
        self.averaged.update_parameters(model)

    def load_into(self, model: nn.Module) -> None:
        """Copy the averaged parameters into ``model`` (its buffers are left as they are)."""
        with torch.no_grad():
            for p, avg in zip(model.parameters(), self.averaged.module.parameters(), strict=True):
                p.copy_(avg)
