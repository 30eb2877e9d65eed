"""BadNets: a patch trigger pasted on a share of the training images, relabelled (Gu et al. 2017)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import torch
from pydantic import Field
from torch import nn

from ...data import DataBundle
from ...train import FitConfig
from ..base import DEFECTS, PlantResult
from .base import Backdoor, check_patch_trigger, patch_trigger

__all__ = ["BadNets"]


@DEFECTS.register("badnets", "BadNets patch-trigger data poisoning (Gu et al. 2017)")
@dataclass
class BadNets(Backdoor):
    """BadNets: a small patch pasted on a share of the training images, relabelled to the target.

    Gu, Dolan-Gavitt & Garg, "BadNets: Identifying Vulnerabilities in the Machine Learning Model
    Supply Chain", 2017. All-to-one attack; poisoned samples of the target class are poisoned too.

    Args:
        size: side of the square patch in pixels (4 px for 28 px images ≈ the artifact's 40 px on
            224 px inputs, scaled down and rounded up so it survives two 2×2 poolings).
        position: ``bottom-right`` (default, as in the artifact), ``bottom-left``, ``top-left``,
            ``top-right``, ``center`` or ``random`` (one location drawn from ``seed``, the same for
            every image).
        pattern: ``checkerboard`` (default; white/black squares, visible on both light and dark
            images), ``white``, or ``random`` (binary pixels drawn from ``seed``).
        poison_rate: share of every training batch triggered and relabelled, in (0, 1]. Default 0.1
            (BackdoorBench's default; ≥ 99 % ASR at about 1 point of clean accuracy on
            small data). The ReMoS artifact used 0.2: pass ``poison_rate=0.2`` to reproduce it.
        target: original dataset class id of the target (None: the first class of the task).
        seed: seed of the random pattern/position and of which samples are poisoned.

    Example:
        >>> from safereuse.data import load_data
        >>> from safereuse.models import create_model
        >>> data = load_data("digits", classes=[0, 1, 2], train_size=90)
        >>> bd = BadNets(size=4, poison_rate=0.2)
        >>> res = bd.plant(create_model("smallcnn", 3), data, FitConfig(epochs=1, progress=False))
        >>> res.record["target"], sorted(res.extras)
        (0, ['backdoor.mask', 'backdoor.trigger'])
    """

    size: Annotated[int, Field(ge=1)] = 4
    position: str = "bottom-right"
    pattern: str = "checkerboard"
    poison_rate: Annotated[float, Field(gt=0, le=1)] = 0.1
    target: Annotated[int, Field(ge=0)] | None = None
    seed: int = 0

    def _validate(self) -> None:
        check_patch_trigger(self)

    def build_trigger(self, channels: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch ``pattern`` at ``position``; mask = 1 on the patch, 0 elsewhere."""
        return patch_trigger(self, channels, height, width)

    def plant(
        self,
        model: nn.Module,
        data: DataBundle,
        cfg: FitConfig,
        *,
        checkpoint_dir: str | Path | None = None,
    ) -> PlantResult:
        """Train ``model`` in place on ``data`` with poisoned batches (through ``train.fit``).

        Args:
            model: the teacher (any state; typically freshly created), head sized for ``data``.
            data: the teacher's task; ``target`` must be one of its classes.
            cfg: training hyper-parameters.
            checkpoint_dir: resumable ``fit`` state (a resumed run draws other poisoned samples).

        Returns:
            :class:`PlantResult` with the trigger/mask extras and the record (``teacher_asr`` over the
            non-target test samples, ``clean_acc`` on the clean test split).
        """
        return self._plant_poisoned(model, data, cfg, self.poison_rate, checkpoint_dir)
