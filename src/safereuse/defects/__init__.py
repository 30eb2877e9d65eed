"""Defects (adversarial inputs, backdoors) and the inheritance audit. ``safereuse list defects``."""

from __future__ import annotations

from . import backdoors  # noqa: F401  (registers badnets, blend, latent, weight-poison)
from .art_attacks import AutoAttackLite, CarliniWagner, DeepFoolAttack
from .attacks import FGSM, PGD, ExploratoryDefect, Mimic, Penultimate, craft_batched, fgsm_attack, pgd_attack
from .audit import AuditReport, AuditRow, audit
from .base import DEFECTS, Defect, PlantResult
from .coverage_attacks import NCGuided, neuron_coverage

__all__ = [
    "DEFECTS",
    "AuditReport",
    "AuditRow",
    "FGSM",
    "PGD",
    "AutoAttackLite",
    "CarliniWagner",
    "DeepFoolAttack",
    "Defect",
    "ExploratoryDefect",
    "Mimic",
    "NCGuided",
    "Penultimate",
    "PlantResult",
    "audit",
    "craft_batched",
    "fgsm_attack",
    "neuron_coverage",
    "pgd_attack",
]
