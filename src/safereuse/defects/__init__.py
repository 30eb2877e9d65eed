"""Defects (adversarial inputs, backdoors) and the inheritance audit. ``safereuse list defects``."""

from __future__ import annotations

from . import backdoors  # noqa: F401  (registers badnets, blend, latent, weight-poison)
from .art_attacks import AutoAttackLite, CarliniWagner, DeepFoolAttack
from .attacks import FGSM, PGD, ExploratoryDefect, Mimic, Penultimate, craft_batched, fgsm_attack, pgd_attack
from .audit import AuditReport, AuditRow, audit
from .base import DEFECTS, Defect, PlantResult
from .coverage_attacks import NCGuided, neuron_coverage

for _cls, _summary in (
    (Penultimate, "penultimate-layer guided task-agnostic attack on the teacher (Rezaei & Liu 2020)"),
    (Mimic, "feature-mimicking attack towards another class's features (Wang et al. 2018)"),
    (NCGuided, "neuron-coverage-guided inputs: coverage nc|tknc|snac × strategy deepxplore|dlfuzz|dlfuzzrr"),
    (PGD, "white-box PGD on the student (L∞/L2), for robust accuracy"),
    (FGSM, "white-box fast gradient sign method on the student"),
    (CarliniWagner, "white-box Carlini & Wagner (L2/L∞) via ART"),
    (DeepFoolAttack, "white-box DeepFool via ART"),
    (AutoAttackLite, "white-box AutoAttack (APGD-CE + APGD-DLR, reduced) via ART"),
):
    DEFECTS.add(_cls.name, _cls, _summary)

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
