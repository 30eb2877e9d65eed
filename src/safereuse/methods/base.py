"""The transfer-method interface: ``TransferMethod(**hyper).transfer(teacher, data) -> Student``.

Every method is a dataclass whose fields are its hyper-parameters, registered by name in
:data:`METHODS`, so ``--method finetune-last-k --param k=2`` (CLI), ``{method: finetune-last-k, k: 2}``
(YAML) and ``FinetuneLastK(k=2)`` (Python) are the same thing.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import torch
from pydantic import Field

from ..data import DataBundle
from ..errors import SafeReuseError
from ..models import ReusableModel, check_contract
from ..params import Validated
from ..registry import Registry
from ..train import FitConfig, FitResult, fit
from ..utils import seed_everything


@dataclass
class Student:
    """The result of a transfer: the model plus everything its manifest records."""

    model: ReusableModel
    method: str
    config: dict[str, Any]
    fit: FitResult | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class TransferMethod(Validated):
    """Base class: shared fine-tuning hyper-parameters (the ReMoS artifact's schedule by default).

    Args:
        epochs: fine-tuning epochs.
        lr: learning rate of the body (the head gets ``lr * head_lr_mult``).
        batch_size: examples per step.
        optimizer: ``sgd`` or ``adam``.
        momentum: SGD momentum.
        weight_decay: L2 weight decay.
        schedule: ``cosine``, ``step`` or ``constant``.
        label_smoothing: cross-entropy label smoothing.
        head_lr_mult: head learning-rate multiplier.
        patience: early-stopping patience in epochs (None: off; only with ``keep_epoch="best"``).
        min_steps_per_epoch: optimiser steps per epoch at least — few-shot data (a pass of one or two
            batches) is passed over several times per epoch, so ``epochs`` keeps meaning a schedule
            long enough to adapt the teacher (see ``docs/results/reuse-pays.md``).
        keep_epoch: ``last`` — the final (annealed) epoch's weights; ``best`` — the epoch with the
            best validation accuracy, which on a few-shot validation split (2 images per class at
            20 per class) ranks epochs by noise.
    """

    name: ClassVar[str] = ""
    epochs: Annotated[int, Field(ge=1)] = 20
    lr: Annotated[float, Field(gt=0)] = 0.01
    batch_size: Annotated[int, Field(ge=1)] = 64
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: Annotated[float, Field(ge=0, le=1)] = 0.9
    weight_decay: Annotated[float, Field(ge=0)] = 1e-4
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.1
    head_lr_mult: Annotated[float, Field(ge=0)] = 10.0
    patience: Annotated[int, Field(ge=0)] | None = None
    min_steps_per_epoch: Annotated[int, Field(ge=1)] = 8
    keep_epoch: Literal["best", "last"] = "last"

    def _what(self) -> str:
        # messages name the method; validation itself is Validated.__post_init__ (also before a
        # subclass's own ``__post_init__``, so no method can skip it)
        return f"method {self.name or type(self).__name__!r}"

    def config(self) -> dict[str, Any]:
        """Resolved hyper-parameters, recorded in the student's manifest."""
        return {"method": self.name, **asdict(self)}

    def fit_config(self, seed: int, device: str, progress: bool, **overrides: Any) -> FitConfig:
        base = {f.name: getattr(self, f.name) for f in fields(FitConfig) if hasattr(self, f.name)}
        base.update(seed=seed, device=device, progress=progress, **overrides)
        return FitConfig(**base)

    def transfer(
        self,
        teacher: ReusableModel,
        data: DataBundle,
        *,
        seed: int = 0,
        device: str = "auto",
        progress: bool = True,
        checkpoint_dir: str | Path | None = None,
    ) -> Student:
        """Produce a student for ``data`` from ``teacher`` (the teacher is never modified).

        Args:
            teacher: a model implementing the contract.
            data: the student's task (train / validation / test splits).
            seed: seed of the new head, re-initialisation and data order.
            device: ``auto``, ``cpu``, ``cuda``...
            progress: show progress bars.
            checkpoint_dir: resumable training state.

        Returns:
            A :class:`Student`.
        """
        check_contract(teacher)
        check_input_fits(teacher, data)
        seed_everything(seed)
        student = self.prepare(copy.deepcopy(teacher), data, seed)
        cfg = self.fit_config(seed, device, progress)
        result = self.train(student, data, cfg, checkpoint_dir)
        return Student(student.model, self.name, self.config(), result, student.extras, student.info)

    # Subclasses override these two steps.
    def prepare(self, model: ReusableModel, data: DataBundle, seed: int) -> Prepared:
        model.reset_head(data.num_classes, seed=seed)
        return Prepared(model)

    def train(
        self, prepared: Prepared, data: DataBundle, cfg: FitConfig, checkpoint_dir: str | Path | None
    ) -> FitResult:
        return fit(prepared.model, data.train, data.val, cfg, checkpoint_dir=checkpoint_dir)


@dataclass
class Prepared:
    """What :meth:`TransferMethod.prepare` hands to :meth:`TransferMethod.train`: the student before
    fine-tuning, plus the tensors and facts its artifact will record (``Student.extras`` / ``info``).
    Subclass it when ``train`` needs more (the baselines keep a frozen teacher copy)."""

    model: ReusableModel
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


def check_input_fits(model: ReusableModel, data: DataBundle) -> None:
    """Refuse data whose image shape differs from the model's input spec (text: token ids for a text
    model, images for an image model)."""
    spec = model.input_spec
    text_data = not data.train.x.is_floating_point()  # token ids [N, L] (safereuse.data.text)
    text_model = bool(getattr(model, "takes_text", False))
    if text_data or text_model:
        if text_data != text_model:
            raise SafeReuseError(
                f"{data.spec.name} is {'text' if text_data else 'images'} but the model takes "
                f"{'images' if text_data else 'token ids'}",
                fix="use data of the teacher's modality",
            )
        return
    got = (data.channels, data.image_size, data.image_size)
    want = (spec.channels, *spec.size)
    if got != tuple(want):
        raise SafeReuseError(
            f"{data.spec.name} images are {got[0]}×{got[1]}×{got[2]} but the model expects "
            f"{want[0]}×{want[1]}×{want[2]}",
            fix="use data with the teacher's input shape",
        )


METHODS: Registry[type[TransferMethod]] = Registry("method", "safereuse list methods")
