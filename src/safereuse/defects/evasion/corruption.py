"""The base of natural corruptions (noise, blur): probed like a white-box attack, but not an attack."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..attacks import WhiteBoxAttack


@dataclass
class Corruption(WhiteBoxAttack):
    """A natural corruption of the input, applied whatever the model (the model is not consulted).

    Probed as a white-box attack (DIR and *Rob*, the accuracy under the corruption), but unlike an
    attack it may also turn a wrong prediction into a right one, so it declares
    ``raises_no_accuracy = False`` (the defect contract checks the claim of the attacks only).
    """

    kind: ClassVar[str] = "corruption"
    raises_no_accuracy: ClassVar[bool] = False
