"""Defects (adversarial inputs, backdoors) and the inheritance audit. ``safereuse list defects``.

Every defect is one class that answers for itself: ``probe(ctx)`` returns its rates on a student
(:mod:`.probe`). Bases: :class:`TransferredAttack` (crafted on the teacher), :class:`WhiteBoxAttack`
(crafted on the model under evaluation), :class:`~.backdoors.Backdoor` (planted in the teacher).
"""

from __future__ import annotations

# importing these registers their defects: badnets, blend, latent, weight-poison (backdoors); jsma,
# boundary, spatial, pixel, deepfool-linf, gaussian-noise/-blur (evasion); word-trigger, ripple, pwws,
# greedy-swap (text)
from . import backdoors, evasion, text  # noqa: F401
from .art_attacks import AutoAttackLite, CarliniWagner, DeepFoolAttack
from .attacks import (
    FGSM,
    PGD,
    ExploratoryDefect,
    Mimic,
    Penultimate,
    TransferredAttack,
    WhiteBoxAttack,
    craft_batched,
    fgsm_attack,
    pgd_attack,
)
from .audit import AuditConfig, AuditReport, AuditRow, audit, precraft
from .backdoors import Backdoor
from .base import DEFECTS, Defect, PlantResult
from .coverage_attacks import NCGuided, neuron_coverage
from .probe import AuditedModel, ProbeContext, ProbeResult

__all__ = [
    "DEFECTS",
    "AuditConfig",
    "AuditReport",
    "AuditRow",
    "AuditedModel",
    "Backdoor",
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
    "ProbeContext",
    "ProbeResult",
    "TransferredAttack",
    "WhiteBoxAttack",
    "audit",
    "craft_batched",
    "fgsm_attack",
    "neuron_coverage",
    "pgd_attack",
    "precraft",
]
