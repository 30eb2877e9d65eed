"""Transfer methods (``safereuse list methods``): one class per method, one verb, ``transfer``."""

from __future__ import annotations

from .base import METHODS, Student, TransferMethod, check_input_fits
from .baselines import Delta, DeltaR, MagPrune, Renofeation
from .basic import Finetune, FinetuneLastK, LinearProbe, Retrain
from .remos import ReMoS
from .seam import SeaM, SeaMTransfer

__all__ = [
    "METHODS",
    "Delta",
    "DeltaR",
    "Finetune",
    "FinetuneLastK",
    "LinearProbe",
    "MagPrune",
    "ReMoS",
    "Renofeation",
    "Retrain",
    "SeaM",
    "SeaMTransfer",
    "Student",
    "TransferMethod",
    "check_input_fits",
]
