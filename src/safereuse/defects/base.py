"""The defect interface: exploratory defects are *crafted* on the teacher, causative ones *planted*.

Both are *probed* on a student. See ``shared/specs/defects.md``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

import torch

from ..registry import Registry


@dataclass
class Defect:
    """Base of every defect; subclasses are dataclasses whose fields are the defect's parameters.

    ``kind`` is one of ``adversarial`` (crafted on the teacher, transferred), ``nc-guided``
    (coverage-guided inputs crafted on the teacher), ``whitebox`` (crafted on the student itself,
    e.g. PGD for robust accuracy) or ``backdoor`` (planted while training the teacher).
    """

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""

    def config(self) -> dict[str, Any]:
        """The resolved parameters (recorded with every result)."""
        return {"defect": self.name, **asdict(self)}

    @classmethod
    def param_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


@dataclass
class PlantResult:
    """What planting a backdoor produced: tensors for ``extras.safetensors`` and a JSON record."""

    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)
    fit: Any = None


DEFECTS: Registry[type[Defect]] = Registry("defect", "safereuse list defects")
