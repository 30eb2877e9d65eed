"""``spatial``: the spatial transformation attack (Engstrom et al., ICML 2019) via ART."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..art_attacks import ArtAttack
from ..base import DEFECTS


@DEFECTS.register("spatial", "spatial transformation (rotation + translation) via ART")
@dataclass
class Spatial(ArtAttack):
    """Spatial transformation attack via ART: the worst of a grid of rotations and translations.

    Args:
        max_translation: largest shift, percent of the image side.
        num_translations: shifts tried per direction.
        max_rotation: largest rotation, degrees.
        num_rotations: rotations tried.
        verbose: ART's progress bars.
    """

    max_translation: float = 10.0
    num_translations: int = 3
    max_rotation: float = 30.0
    num_rotations: int = 5
    verbose: bool = False

    def _attack(self, clf: Any, batch: int, nb_classes: int) -> Any:
        from art.attacks.evasion import SpatialTransformation  # deferred: ART is slow to import

        return SpatialTransformation(
            clf, max_translation=self.max_translation, num_translations=self.num_translations,
            max_rotation=self.max_rotation, num_rotations=self.num_rotations, verbose=self.verbose,
        )  # fmt: skip


__all__ = ["Spatial"]
