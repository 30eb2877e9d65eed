"""Transfer methods (``safereuse list methods``): one class per method, one verb, ``transfer``."""

from __future__ import annotations

from .base import METHODS, Student, TransferMethod, check_input_fits
from .baselines import Delta, DeltaR, MagPrune, Renofeation
from .basic import Finetune, FinetuneLastK, LinearProbe, Retrain
from .cartl import CARTL, apply_neft, fold_neft, neft, neft_layers, remove_neft
from .lwf import LwF
from .nnslicer import NNSlicerTransfer
from .remos import ReMoS
from .seam import SeaM, SeaMTransfer

__all__ = [
    "CARTL",
    "METHODS",
    "Delta",
    "DeltaR",
    "Finetune",
    "FinetuneLastK",
    "LinearProbe",
    "LwF",
    "MagPrune",
    "NNSlicerTransfer",
    "ReMoS",
    "Renofeation",
    "Retrain",
    "SeaM",
    "SeaMTransfer",
    "Student",
    "TransferMethod",
    "apply_neft",
    "check_input_fits",
    "fold_neft",
    "neft",
    "neft_layers",
    "remove_neft",
]
