"""``boundary``: the decision-based boundary attack (Brendel et al., ICLR 2018) via ART."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from pydantic import Field

from ..art_attacks import ArtAttack
from ..base import DEFECTS


def float32_queries(clf: Any) -> Any:
    """``clf`` with its ``predict`` fed float32: ART's decision-based attacks build their proposals in
    float64, which the float32 model refuses (``expected scalar type Double but found Float``)."""
    predict = clf.predict

    def predict32(x: Any, *args: Any, **kwargs: Any) -> Any:
        return predict(np.asarray(x, dtype=np.float32), *args, **kwargs)

    clf.predict = predict32
    return clf


@DEFECTS.register("boundary", "decision-based boundary attack (Brendel et al. 2018) via ART")
@dataclass
class Boundary(ArtAttack):
    """Boundary attack via ART, cut down for CPUs (``max_iter`` walks, ``num_trial`` proposals).

    Args:
        max_iter: iterations of the walk along the boundary.
        num_trial: proposals per step.
        init_size: random draws to find an adversarial start.
        seed: seed of ART's random draws.
        verbose: ART's progress bars.
    """

    max_iter: Annotated[int, Field(ge=0)] = 50
    num_trial: Annotated[int, Field(ge=1)] = 10
    init_size: Annotated[int, Field(ge=1)] = 50
    seed: int = 0
    verbose: bool = False

    def _attack(self, clf: Any, batch: int, nb_classes: int) -> Any:
        from art.attacks.evasion import BoundaryAttack  # deferred: ART is slow to import

        return BoundaryAttack(
            float32_queries(clf), targeted=False, max_iter=self.max_iter, num_trial=self.num_trial,
            init_size=self.init_size, batch_size=batch, verbose=self.verbose,
        )  # fmt: skip


__all__ = ["Boundary", "float32_queries"]
