"""What a defect's :meth:`~safereuse.defects.Defect.probe` gets and returns.

The audit (:func:`safereuse.defects.audit`) prepares one :class:`ProbeContext` — both models with
their metadata, the audited images, the clean predictions, a predict function, the crafted-set cache
— and asks every defect to probe it. A defect answers with a :class:`ProbeResult`: its rates (DIR,
and ASR / Rob / the teacher reference where they apply, each a :class:`~safereuse.metrics.Rate`
with its count) plus what the report row says about it (where it was crafted, the backdoor target,
whether the set came from the cache). So the audit never asks what *kind* of defect it holds.

:class:`AuditedModel` is a model plus what the audit needs to know about it (its task, the backdoor
planted in it and the trigger tensors). An artifact is one source of that metadata
(:meth:`AuditedModel.from_artifact`); a model built in Python gets it from arguments
(:meth:`AuditedModel.from_model`).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import SafeReuseError
from ..metrics import Rate
from ..models import ReusableModel
from ..train import predict_labels
from .cache import CraftingDefect, DefectLike, cached_craft, model_hash


@dataclass
class AuditedModel:
    """A model under audit and its metadata.

    Attributes:
        model: the network (the model contract: ``input_spec``, ``features``, ``head``).
        path: where it was loaded from (None for a model built in Python).
        hash: SHA-256 of its saved weights (None for a model built in Python).
        arch: architecture name (``model.info.arch`` when known).
        data: its task as a :class:`~safereuse.data.DataSpec` dict (``name``, ``classes``, ...) or None
            when unknown.
        backdoor: the plant record of the backdoor planted in it (``PlantResult.record``) or None.
        extras: tensors saved beside it (the backdoor's ``backdoor.trigger`` / ``backdoor.mask``).
    """

    model: ReusableModel
    path: str | None = None
    hash: str | None = None
    arch: str | None = None
    data: dict[str, Any] | None = None
    backdoor: dict[str, Any] | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def from_artifact(cls, artifact: Any) -> AuditedModel:
        """The metadata of a loaded :class:`~safereuse.artifacts.Artifact` (its manifest and extras)."""
        m = artifact.manifest
        data = m.get("data")
        return cls(
            model=artifact.model,
            path=str(artifact.path),
            hash=artifact.hash,
            arch=m.get("arch"),
            data=dict(data) if isinstance(data, dict) else None,
            backdoor=m.get("backdoor") or None,
            extras=dict(artifact.extras or {}),
        )

    @classmethod
    def from_model(
        cls,
        model: ReusableModel,
        data: Any = None,
        backdoor: dict[str, Any] | None = None,
        extras: dict[str, torch.Tensor] | None = None,
    ) -> AuditedModel:
        """A model built in Python; ``data`` (a DataSpec or its dict) names its task when known."""
        info = getattr(model, "info", None)
        return cls(
            model=model,
            arch=info.arch if info is not None else type(model).__name__,
            data=spec_dict(data),
            backdoor=backdoor or None,
            extras=dict(extras or {}),
        )

    @property
    def where(self) -> str:
        """How error messages name it: its path, else its architecture."""
        return self.path if self.path is not None else f"({self.arch or type(self.model).__name__})"

    def info(self) -> dict[str, Any]:
        """The report's description: ``{"path", "hash", "arch", "data"}``."""
        return {"path": self.path, "hash": self.hash, "arch": self.arch, "data": self.data}


def spec_dict(data: Any) -> dict[str, Any] | None:
    """A task description as a dict: a DataSpec (``to_dict()``), a dict, or None."""
    if data is None:
        return None
    if isinstance(data, dict):
        return dict(data)
    if hasattr(data, "to_dict"):
        return data.to_dict()
    raise SafeReuseError(
        f"cannot read a task from {type(data).__name__}",
        fix="pass a DataSpec or a dict with name and classes",
    )


def target_label(
    target: int, teacher: AuditedModel, student: AuditedModel, data: dict[str, Any]
) -> int | None:
    """A backdoor target (original class id) as a label of the student's task, or None if it lacks it.

    Args:
        target: the original dataset class id the backdoor sends inputs to.
        teacher: the teacher (its ``data`` names the dataset the id refers to).
        student: the student (its ``data`` names its task; default ``data``).
        data: the audited data's DataSpec dict (the student's task when ``student.data`` is None).

    Example:
        >>> from safereuse.models import create_model
        >>> m = create_model("smallcnn", 3)
        >>> t = AuditedModel(m, data={"name": "digits", "classes": [0, 1, 2]})
        >>> s = AuditedModel(m, data={"name": "digits", "classes": [3, 0, 4]})
        >>> target_label(0, t, s, {}), target_label(1, t, s, {})
        (1, None)
    """
    t_data = teacher.data or {}
    s_data = student.data or {}
    t_name, s_name = t_data.get("name"), s_data.get("name", data.get("name"))
    if t_name and s_name and t_name != s_name:
        return None  # the target id refers to another dataset's classes
    classes = s_data.get("classes", data.get("classes"))
    if classes is None:
        return int(target) if 0 <= int(target) < student.model.num_classes else None
    classes = [int(c) for c in classes]
    return classes.index(int(target)) if int(target) in classes else None


@dataclass
class ProbeResult:
    """What :meth:`Defect.probe` returns: the rates and the row's extras.

    Attributes:
        rates: ``"dir"`` (always) and, where they apply, ``"asr"``, ``"rob"`` and ``"teacher"`` (the
            same DIR on the teacher, given only when teacher and student share the task); percent,
            each with its count and Wilson interval.
        crafted_on: ``teacher``, ``student`` or ``trigger``.
        target: backdoor target ``{"class": original id, "label": student label or None}``.
        cached: the crafted set came from the cache.
        defect: the defect the row reports, when it differs from the one requested (a backdoor is
            reported with the parameters it was planted with).
    """

    rates: dict[str, Rate]
    crafted_on: str
    target: dict[str, Any] | None = None
    cached: bool = False
    defect: DefectLike | None = None


@dataclass
class ProbeContext:
    """Everything a defect's probe may use; built once per audit by :func:`safereuse.defects.audit`.

    Attributes:
        teacher: the teacher and its metadata (backdoor record, trigger tensors, task).
        student: the student and its metadata.
        x: the audited images ``[N, C, H, W]`` (CPU).
        y: their labels ``[N]`` in the student's label space.
        student_clean: the student's clean predictions on ``x``.
        teacher_clean: the teacher's clean predictions when ``same_task``, else None.
        same_task: teacher and student share dataset, classes and head size (a teacher reference
            rate means something).
        data: the audited data's DataSpec dict.
        device: where the models run.
        batch_size: images per crafting / prediction batch.
        cache_dir: folder of the crafted-set cache (None: no cache).
        craft_lock: a context manager factory held while a set is crafted on the *teacher* (or read
            from the cache): a run's cells of one scenario share those sets, so the runner passes a
            file lock and the first cell crafts while the others wait for its cache entry instead of
            crafting the same set side by side (None: no lock).
    """

    teacher: AuditedModel
    student: AuditedModel
    x: torch.Tensor
    y: torch.Tensor
    student_clean: torch.Tensor
    teacher_clean: torch.Tensor | None
    same_task: bool
    data: dict[str, Any]
    device: torch.device
    batch_size: int = 256
    cache_dir: str | Path | None = None
    craft_lock: Callable[[], AbstractContextManager[Any]] | None = None
    _digests: dict[str, str] = field(default_factory=dict, repr=False)

    def model(self, role: str) -> nn.Module:
        """``"teacher"`` or ``"student"``."""
        if role not in ("teacher", "student"):
            raise ValueError(f"role {role!r} is neither teacher nor student")
        return self.teacher.model if role == "teacher" else self.student.model

    def predict(self, model: nn.Module, xs: torch.Tensor) -> torch.Tensor:
        """Predicted labels of ``model`` on ``xs`` (CPU), in batches on the audit's device."""
        return predict_labels(model, xs, self.batch_size, self.device)

    def digest(self, role: str) -> str | None:
        """Content hash of the teacher's or student's weights (cache key); None without a cache."""
        if self.cache_dir is None:
            return None
        if role not in self._digests:
            self._digests[role] = model_hash(self.model(role))
        return self._digests[role]

    def craft(self, defect: CraftingDefect, role: str) -> tuple[torch.Tensor, bool]:
        """Craft ``defect`` on the ``role`` model over ``x`` (through the cache when there is one).

        Returns:
            ``(x_adv on the CPU, cache hit)``.
        """
        lock = self.craft_lock if role == "teacher" and self.craft_lock is not None else nullcontext
        with lock():
            return cached_craft(
                defect,
                self.model(role),
                self.x,
                self.y,
                cache_dir=self.cache_dir,
                batch_size=self.batch_size,
                model_digest=self.digest(role),
            )

    def target_label(self, target: int) -> int | None:
        """A backdoor target (original class id) as a student label (:func:`target_label`)."""
        return target_label(target, self.teacher, self.student, self.data)


__all__ = ["AuditedModel", "ProbeContext", "ProbeResult", "predict_labels", "spec_dict", "target_label"]
