"""``jsma``: the Jacobian saliency map attack (Papernot et al., EuroS&P 2016) via ART."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import SafeReuseError
from ..art_attacks import ArtAttack
from ..base import DEFECTS


@DEFECTS.register("jsma", "Jacobian saliency map attack (Papernot et al. 2016) via ART")
@dataclass
class JSMA(ArtAttack):
    """JSMA via ART, towards a random wrong class per input (JSMA is a targeted attack).

    ART's ``SaliencyMapMethod`` reads the ``y`` it is given as *target* classes, so the true labels
    would ask it to reach the class the input already has; each input's target is instead drawn
    uniformly from the other classes, seeded (numpy's global RNG, which :class:`ArtAttack` seeds).

    Args:
        theta: change of each modified pixel.
        gamma: the largest share of pixels that may change.
        seed: seed of the random targets.
        verbose: ART's progress bars.
    """

    theta: float = 1.0
    gamma: float = 0.1
    seed: int = 0
    verbose: bool = False

    def _labels(self, y: Any, nb_classes: int) -> Any:
        if nb_classes < 2:
            raise SafeReuseError("JSMA needs a model with at least 2 classes", fix="use another attack")
        return (y + np.random.randint(1, nb_classes, size=len(y))) % nb_classes

    def _attack(self, clf: Any, batch: int, nb_classes: int) -> Any:
        from art.attacks.evasion import SaliencyMapMethod  # deferred: ART is slow to import

        return SaliencyMapMethod(
            clf, theta=self.theta, gamma=self.gamma, batch_size=batch, verbose=self.verbose
        )


__all__ = ["JSMA"]
