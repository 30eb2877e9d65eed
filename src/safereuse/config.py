"""Defaults shared by the CLI, YAML specs and Python, and the one order in which they resolve.

A teacher's fit configuration comes from three places, and every path (``safereuse teacher train``,
a spec's ``teacher:``, :func:`safereuse.api.train_teacher`) resolves it with :func:`teacher_fit`:

1. :data:`TEACHER_FIT` — the global defaults (small image models from scratch);
2. the architecture's own defaults — a model factory's ``teacher_fit`` attribute (``minilm``:
   :data:`safereuse.models.minilm.TEXT_FIT`, AdamW at a small lr like any pretrained transformer);
3. the user's values (``--param lr=...``, ``fit: {lr: ...}``, ``fit_params={"lr": ...}``).

Later ones win. This module sits below the API and the runner (it reads only the model registry and
the data spec), so both take their defaults from here.
"""

from __future__ import annotations

from typing import Any

from .data import DataSpec
from .models import MODELS

#: Teacher training defaults: reach ≥ 90 % on Fashion-MNIST with the default resnet8 in minutes on CPU.
TEACHER_FIT: dict[str, Any] = {
    "epochs": 6,
    "batch_size": 128,
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "schedule": "cosine",
}

#: Audited when no defect is named (plus the backdoor the teacher carries, if any): the transferred
#: attacks of ReMoS's evaluation (Zhang et al., ICSE 2022).
DEFAULT_DEFECTS = ("penultimate", "nc-guided")

#: The teacher ``safereuse teacher train`` and ``api.train_teacher`` build when none is named.
DEFAULT_TEACHER_ARCH = "resnet8"
DEFAULT_TEACHER_DATA = DataSpec("fashion-mnist", classes=[0, 1, 2, 3, 4])


def arch_fit(arch: str) -> dict[str, Any]:
    """The fit defaults an architecture brings (its factory's ``teacher_fit``; none for most).

    Args:
        arch: a model registry name.

    Returns:
        A copy of the architecture's defaults (empty when it has none).

    Example:
        >>> arch_fit("resnet8"), arch_fit("minilm")["optimizer"]
        ({}, 'adam')
    """
    return dict(getattr(MODELS.get(arch), "teacher_fit", None) or {})


def teacher_fit(arch: str, user_fit: dict[str, Any] | None = None) -> dict[str, Any]:
    """A teacher's fit parameters: global defaults < the architecture's defaults < the user's values.

    Args:
        arch: the teacher's architecture (a model registry name).
        user_fit: the user's :class:`~safereuse.train.FitConfig` values (validated by the caller).

    Returns:
        The merged parameters (a new dict).

    Example:
        >>> teacher_fit("resnet8", {"lr": 0.05})["lr"], teacher_fit("minilm")["lr"]
        (0.05, 5e-05)
        >>> teacher_fit("minilm", {"epochs": 1})["epochs"], teacher_fit("minilm")["momentum"]
        (1, 0.9)
    """
    return {**TEACHER_FIT, **arch_fit(arch), **(user_fit or {})}


__all__ = [
    "DEFAULT_DEFECTS",
    "DEFAULT_TEACHER_ARCH",
    "DEFAULT_TEACHER_DATA",
    "TEACHER_FIT",
    "arch_fit",
    "teacher_fit",
]
