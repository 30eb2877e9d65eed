"""Transfer methods (``safereuse list methods``): one class per method, one verb, ``transfer``."""

from __future__ import annotations

from .base import METHODS, Student, TransferMethod, check_input_fits
from .basic import Finetune, FinetuneLastK, LinearProbe, Retrain

__all__ = [
    "METHODS",
    "Finetune",
    "FinetuneLastK",
    "LinearProbe",
    "Retrain",
    "Student",
    "TransferMethod",
    "check_input_fits",
]
