"""``gaussian-noise``: additive Gaussian noise, a natural corruption of NNSlicer's detection study."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from pydantic import Field

from ..base import DEFECTS
from .corruption import Corruption


@DEFECTS.register("gaussian-noise", "additive Gaussian noise (a natural corruption)")
@dataclass
class GaussianNoise(Corruption):
    """``x + N(0, σ²)``, clipped to [0, 1] (seeded).

    Args:
        sigma: noise standard deviation, pixel units.
        seed: noise seed.

    Example:
        >>> x = torch.full((2, 1, 4, 4), 0.5)
        >>> xa = GaussianNoise(sigma=0.1).craft(None, x, torch.zeros(2, dtype=torch.long))
        >>> xa.shape, bool((xa != x).any()), bool(((xa >= 0) & (xa <= 1)).all())
        (torch.Size([2, 1, 4, 4]), True, True)
    """

    sigma: Annotated[float, Field(ge=0, le=1)] = 0.2
    seed: int = 0

    def craft(self, model, x, y, generator=None):  # noqa: D102 - see ExploratoryDefect.craft
        noise = torch.randn(x.shape, generator=self._generator(generator)) * self.sigma
        return (x + noise.to(x.device, x.dtype)).clamp(0, 1)


__all__ = ["GaussianNoise"]
