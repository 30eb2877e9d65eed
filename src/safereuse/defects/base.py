"""The defect interface: exploratory defects are *crafted* on the teacher, causative ones *planted*.

Both are *probed* on a student (:meth:`Defect.probe`, the design's verb): given the teacher, the
student and the audited inputs (a :class:`~safereuse.defects.probe.ProbeContext`), a defect returns
its own rates. Shared behaviour lives in intermediate classes — a transferred attack crafted on the
teacher (:class:`~safereuse.defects.attacks.TransferredAttack`), a white-box attack crafted on the
model under evaluation (:class:`~safereuse.defects.attacks.WhiteBoxAttack`), a backdoor planted in
the teacher (:class:`~safereuse.defects.backdoors.Backdoor`) — and what the audit, the runner and
the spec checker need to know is declared as class attributes (:attr:`Defect.crafted_on_teacher`,
:attr:`Defect.planted_in_teacher`), so nothing switches on a defect's ``kind``.
See ``shared/specs/defects.md``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

import torch

from ..errors import SafeReuseError
from ..params import Validated
from ..registry import Registry
from .probe import AuditedModel, ProbeContext, ProbeResult


@dataclass
class Defect(Validated):
    """Base of every defect; subclasses are dataclasses whose fields are the defect's parameters.

    Class attributes (declared by each subclass, read by the audit, the runner and the spec checker):

    - ``kind`` — a descriptive label shown in reports and JSON (``adversarial``, ``nc-guided``,
      ``whitebox``, ``backdoor``, ...); the report groups by it, nothing branches on it.
    - ``crafted_on_teacher`` — the probe crafts its inputs on the teacher only, so the crafted set is
      the same for every student of a teacher (the runner crafts it once, under a lock).
    - ``planted_in_teacher`` — the defect is planted while the teacher is trained (``plant``) and can
      be probed only on students of a teacher that carries it.
    - ``input_kind`` — ``image`` (float pixels) or ``text`` (integer token ids): the inputs it can
      craft on or plant into; :func:`check_input_kind` refuses the other kind with one line.
    """

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    crafted_on_teacher: ClassVar[bool] = False
    planted_in_teacher: ClassVar[bool] = False
    input_kind: ClassVar[str] = "image"

    def _what(self) -> str:
        # the fields are checked (types, declared ranges) before any subclass __post_init__
        return f"defect {self.name or type(self).__name__!r}"

    def config(self) -> dict[str, Any]:
        """The resolved parameters (recorded with every result)."""
        return {"defect": self.name, **asdict(self)}

    @classmethod
    def param_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def check_models(self, teacher: AuditedModel, student: AuditedModel) -> None:
        """Raise :class:`~safereuse.errors.SafeReuseError` when this defect cannot be probed on these
        models (called for every defect before anything is crafted); the default accepts any."""

    def check_input_kind(self, x: torch.Tensor) -> None:
        """Refuse inputs of the other modality (pixels vs token ids) before anything is crafted.

        Example:
            >>> from safereuse.defects import DEFECTS
            >>> DEFECTS.create("fgsm").check_input_kind(torch.zeros(2, 8, dtype=torch.long))
            Traceback (most recent call last):
            ...
            safereuse.errors.SafeReuseError: fgsm is a defect of image models, but these inputs are text...
        """
        kind = "image" if x.is_floating_point() else "text"
        if kind != self.input_kind:
            fits = sorted(n for n in DEFECTS.names() if DEFECTS.get(n).input_kind == kind)
            what = "text token ids" if kind == "text" else "images"
            raise SafeReuseError(
                f"{self.name} is a defect of {self.input_kind} models, but these inputs are {what}",
                fix=f"use a defect for {kind} models: {', '.join(fits)}",
            )

    def probe(self, ctx: ProbeContext) -> ProbeResult:  # pragma: no cover - abstract
        """Measure how often this defect fires on the student (and on the teacher, same task only).

        Args:
            ctx: the models, the audited images, the clean predictions and the crafting cache.

        Returns:
            The rates (``"dir"`` always; ``"asr"``, ``"rob"``, ``"teacher"`` where they apply) and the
            row's extras.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement probe()")

    def precraft(self, ctx: ProbeContext) -> None:
        """Craft into ``ctx``'s cache, on the teacher, what :meth:`probe` will craft there — before any
        student exists (the runner does it once per teacher × audited data, while students train).

        Only the teacher and the audited inputs of ``ctx`` are read. The default crafts nothing (a
        defect crafted on the student, or planted); ``crafted_on_teacher`` defects override it. Results
        never depend on it: the cache is keyed by content, so a probe whose inputs differ crafts anew.
        """


@dataclass
class PlantResult:
    """What planting a backdoor produced: tensors for ``extras.safetensors`` and a JSON record."""

    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)
    fit: Any = None


DEFECTS: Registry[type[Defect]] = Registry("defect", "safereuse list defects")
