"""Defaults shared by the CLI, YAML specs and Python, and the one order in which they resolve.

A teacher's fit configuration comes from three places, and every path (``safereuse teacher train``,
a spec's ``teacher:``, :func:`safereuse.api.train_teacher`) resolves it with :func:`teacher_fit`:

1. :data:`TEACHER_FIT` — the global defaults (small image models from scratch);
2. the architecture's own defaults — a model factory's ``teacher_fit`` attribute (``minilm``:
   :data:`safereuse.models.minilm.TEXT_FIT`, AdamW at a small lr like any pretrained transformer);
3. the user's values (``--param lr=...``, ``fit: {lr: ...}``, ``fit_params={"lr": ...}``).

Later ones win. A student's transfer-method parameters resolve in the same order, with
:func:`student_params`, on every path (``safereuse transfer``, a spec's ``methods:``,
:func:`safereuse.api.transfer`; the runner also records the resolved values in each cell's config):

1. the method's own defaults — its dataclass fields (``finetune``: SGD lr 0.01, 20 epochs, the image
   recipe of the ReMoS artifact);
2. the architecture of the TEACHER (a student is its teacher's architecture) — a model factory's
   ``student_fit`` attribute, given to every method that takes the key, then its
   ``student_method_fit[method]`` (``minilm`` / ``mpnet`` / ``hf-encoder``:
   :data:`safereuse.models.hf_encoder.TEXT_STUDENT_FIT`, Adam at lr 3e-5 for 3 epochs, and
   :data:`~safereuse.models.hf_encoder.TEXT_STUDENT_METHODS`, e.g. ``remos`` ratio 0.1); image models
   have none, so they resolve exactly as the method's defaults;
3. the user's values (``--param lr=...``, ``params: {lr: ...}``, ``params={"lr": ...}``).

This module sits below the methods, the API and the runner (it reads only the model registry, the
data spec and the parameter helpers), so they all take their defaults from here.
"""

from __future__ import annotations

from typing import Any

from .data import DataSpec
from .models import MODELS
from .params import accepted_params

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


def arch_student_fit(arch: str | None, method: str) -> dict[str, Any]:
    """The transfer settings an architecture brings for ``method``'s students (none for most).

    Its factory's ``student_fit`` (every method) updated by ``student_method_fit[method]`` (this
    method's own, e.g. retrain's lr, remos's ratio).

    Args:
        arch: the teacher's model registry name (None or unregistered: no defaults).
        method: a transfer method's registry name.

    Returns:
        A new dict (empty when the architecture has no student defaults).

    Example:
        >>> arch_student_fit("resnet8", "remos"), arch_student_fit("minilm", "remos")["ratio"]
        ({}, 0.1)
        >>> arch_student_fit("minilm", "retrain")["lr"], arch_student_fit("minilm", "finetune")["lr"]
        (0.0001, 3e-05)
    """
    if arch is None or arch not in MODELS:
        return {}
    factory = MODELS.get(arch)
    common = getattr(factory, "student_fit", None) or {}
    own = (getattr(factory, "student_method_fit", None) or {}).get(method) or {}
    return {**common, **own}


def student_params(
    arch: str | None, method: str, user: dict[str, Any] | None = None, factory: Any = None
) -> dict[str, Any]:
    """A transfer method's parameters: its own defaults < the teacher architecture's < the user's.

    The method's own defaults are not written out: they fill in what the returned dict leaves out
    when the method is built (``METHODS.create(method, **student_params(...))``), so an architecture
    without student defaults (every image model) gives the user's values unchanged.

    Args:
        arch: the teacher's architecture (a model registry name; None: no architecture defaults).
        method: the transfer method's registry name.
        user: the user's parameters (validated when the method is built); they always win.
        factory: the method class; when given, architecture defaults it does not take are left out
            (``ratio`` for ``finetune``). Without it, every default is returned.

    Returns:
        The parameters to build the method with (a new dict).

    Example:
        >>> from safereuse.methods import METHODS
        >>> student_params("resnet8", "remos", {"lr": 0.05})
        {'lr': 0.05}
        >>> p = student_params("minilm", "remos", {"ratio": 0.3}, METHODS.get("remos"))
        >>> p["optimizer"], p["lr"], p["ratio"]
        ('adam', 3e-05, 0.3)
        >>> "ratio" in student_params("minilm", "finetune", None, METHODS.get("finetune"))
        False
    """
    defaults = arch_student_fit(arch, method)
    takes = accepted_params(factory) if factory is not None else None
    if takes is not None:
        defaults = {k: v for k, v in defaults.items() if k in takes}
    return {**defaults, **(user or {})}


__all__ = [
    "DEFAULT_DEFECTS",
    "DEFAULT_TEACHER_ARCH",
    "DEFAULT_TEACHER_DATA",
    "TEACHER_FIT",
    "arch_fit",
    "arch_student_fit",
    "student_params",
    "teacher_fit",
]
