"""Blend: a full-image random pattern blended with weight α (Chen et al. 2017)."""

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
from .base import Backdoor

__all__ = ["Blend"]


@DEFECTS.register("blend", "blended random-pattern trigger (Chen et al. 2017)")
@dataclass
class Blend(Backdoor):
    """Blended injection: ``x' = (1 − α)·x + α·t`` with a fixed random image ``t``.

    Chen, Liu, Li, Lu & Song, "Targeted Backdoor Attacks on Deep Learning Systems Using Data
    Poisoning", 2017 (the random-pattern blended strategy).

    Args:
        alpha: blend weight in (0, 1]; 0.2 as in Chen et al.'s training-time α and BackdoorBench
            (0.1 also works but needs more epochs on small data).
        poison_rate: share of every training batch blended and relabelled, in (0, 1].
        target: original dataset class id of the target (None: the first class of the task).
        seed: seed of the pattern ``t`` (uniform in [0, 1]) and of which samples are poisoned.

    Example:
        >>> import torch
        >>> x = torch.zeros(1, 1, 28, 28)
        >>> y = Blend(alpha=0.2).apply(x)
        >>> bool((y <= 0.2).all()), bool((y > 0).any())
        (True, True)
    """

    alpha: Annotated[float, Field(gt=0, le=1)] = 0.2
    poison_rate: Annotated[float, Field(gt=0, le=1)] = 0.1
    target: Annotated[int, Field(ge=0)] | None = None
    seed: int = 0

    def build_trigger(self, channels: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A uniform random image from ``seed``; mask = α everywhere."""
        g = torch.Generator().manual_seed(self.seed)
        trigger = torch.rand(channels, height, width, generator=g)
        return trigger, torch.full((channels, height, width), float(self.alpha))

    def plant(
        self,
        model: nn.Module,
        data: DataBundle,
        cfg: FitConfig,
        *,
        checkpoint_dir: str | Path | None = None,
    ) -> PlantResult:
        """Train ``model`` in place with blended poisoned batches; see :meth:`BadNets.plant`."""
        return self._plant_poisoned(model, data, cfg, self.poison_rate, checkpoint_dir)
