"""``pixel``: the few-pixel attack by differential evolution (Su et al., 2019) via ART."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..art_attacks import ArtAttack
from ..base import DEFECTS


@DEFECTS.register("pixel", "few-pixel attack by differential evolution (Su et al. 2019) via ART")
@dataclass
class Pixel(ArtAttack):
    """Pixel attack via ART (differential evolution; slow: use few inputs).

    Args:
        pixels: pixels changed (1 = the one-pixel attack).
        max_iter: evolution iterations.
        seed: seed of ART's random draws.
        verbose: ART's progress bars.
    """

    pixels: int = 1
    max_iter: int = 20
    seed: int = 0
    verbose: bool = False

    def _attack(self, clf: Any, batch: int, nb_classes: int) -> Any:
        from art.attacks.evasion import PixelAttack  # deferred: ART is slow to import

        return PixelAttack(
            clf, th=self.pixels, es=1, max_iter=self.max_iter, targeted=False, verbose=self.verbose
        )


__all__ = ["Pixel"]
