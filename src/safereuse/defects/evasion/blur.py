"""``gaussian-blur``: Gaussian blur, a natural corruption of NNSlicer's detection study."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field

from ..base import DEFECTS
from .corruption import Corruption


@DEFECTS.register("gaussian-blur", "Gaussian blur (a natural corruption)")
@dataclass
class GaussianBlur(Corruption):
    """Gaussian blur of every channel (kernel ``2·ceil(2σ)+1`` wide, reflect padding).

    Args:
        sigma: blur standard deviation, pixels.

    Example:
        >>> x = torch.zeros(1, 1, 5, 5)
        >>> x[0, 0, 2, 2] = 1.0
        >>> xa = GaussianBlur(sigma=1.0).craft(None, x, torch.zeros(1, dtype=torch.long))
        >>> xa.shape, 0 < float(xa[0, 0, 2, 2]) < 1, float(xa[0, 0, 2, 1]) > 0
        (torch.Size([1, 1, 5, 5]), True, True)
    """

    sigma: Annotated[float, Field(gt=0)] = 1.0

    def craft(self, model, x, y, generator=None):  # noqa: D102 - see ExploratoryDefect.craft
        r = max(1, math.ceil(2 * self.sigma))
        t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
        k = torch.exp(-(t**2) / (2 * self.sigma**2))
        k = k / k.sum()
        c = x.shape[1]
        h = F.conv2d(
            F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c
        )
        return F.conv2d(
            F.pad(h, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c
        )


__all__ = ["GaussianBlur"]
