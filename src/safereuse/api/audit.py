"""Audit what a student inherited from its teacher: the defect list, parameter routing, the call."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..artifacts import Artifact, load_model
from ..config import DEFAULT_DEFECTS
from ..data import DataBundle, DataSpec, load_data
from ..defects import DEFECTS, AuditReport, Backdoor, Defect, PlantResult
from ..defects.audit import audit as run_audit
from ..defects.audit import audited
from ..defects.modality import defects_for, input_kind_of
from ..errors import SafeReuseError
from ..models import ReusableModel


def audit_defects(
    defects: Sequence[str | tuple[str, dict[str, Any]] | Defect] | None = None,
    params: dict[str, Any] | None = None,
    backdoor: str | None = None,
) -> list[tuple[str, dict[str, Any]] | Defect]:
    """The defects an audit runs, with their parameters: the default list and parameter routing.

    Args:
        defects: names, ``(name, params)`` pairs or :class:`~safereuse.defects.Defect` instances; None
            or empty: :data:`~safereuse.config.DEFAULT_DEFECTS` plus ``backdoor``.
        params: ``key → value`` for every named defect that has the parameter ``key``, or
            ``"DEFECT.key" → value`` for that defect only (what ``--param`` gives). A pair's own
            params win over routed ones.
        backdoor: the name of the backdoor planted in the teacher (joins the default list).

    Returns:
        ``(name, params)`` pairs (and the given Defect instances), in order.

    Raises:
        SafeReuseError: a ``DEFECT.key`` names a defect not audited; no audited defect has ``key``; an
            unknown defect name.

    Example:
        >>> audit_defects(None, {"steps": 3, "nc-guided.k": 5}, backdoor="badnets")
        [('penultimate', {'steps': 3}), ('nc-guided', {'steps': 3, 'k': 5}), ('badnets', {})]
    """
    entries: list[Any] = list(defects or [])
    if not entries:
        entries = [*DEFAULT_DEFECTS, *([backdoor] if backdoor else [])]
    out: list[Any] = []
    named: list[tuple[str, dict[str, Any], dict[str, Any]]] = []  # (name, routed, own)
    for e in entries:
        if isinstance(e, Defect):
            out.append(e)
            continue
        name, own = (e, {}) if isinstance(e, str) else (e[0], dict(e[1] or {}))
        DEFECTS.get(name)  # an unknown name fails here, with its close match
        item = (name, {}, own)
        named.append(item)
        out.append(item)
    for key, value in (params or {}).items():
        if "." in key:
            target, _, sub = key.partition(".")
            # --param keys come with "-" spelt "_" (nc-guided.k arrives as nc_guided.k)
            hits = [n for n in named if n[0].replace("-", "_") == target.replace("-", "_")]
            if not hits:
                raise SafeReuseError(
                    f"--param {key}: {target!r} is not among the audited defects",
                    fix="add it with --defect, or check the spelling",
                )
            for n in hits:
                n[1][sub] = value
            continue
        takers = [n for n in named if key in DEFECTS.get(n[0]).param_names()]
        if not takers:
            raise SafeReuseError(
                f"no audited defect has a parameter {key!r}", fix="see `safereuse list defects`"
            )
        for n in takers:
            n[1][key] = value
    return [e if isinstance(e, Defect) else (e[0], {**e[1], **e[2]}) for e in out]


def _check_input_kinds(entries: Sequence[Any], model: Any) -> None:
    """Refuse a named defect of the other input kind than the student's, before any data loads."""
    kind = input_kind_of(model)
    for e in entries:
        if isinstance(e, Defect):
            continue
        own = DEFECTS.get(e[0]).input_kind
        if own != kind:
            what = "text token ids" if kind == "text" else "images"
            raise SafeReuseError(
                f"{e[0]} is a defect of {own} models, but the student takes {what}",
                fix=f"use a defect for {kind} models: {', '.join(defects_for(kind))}",
            )


def audit(
    teacher: str | Path | Artifact | ReusableModel,
    student: str | Path | Artifact | ReusableModel,
    data: DataSpec | DataBundle | None = None,
    defects: Sequence[str | tuple[str, dict[str, Any]] | Defect] | None = None,
    *,
    params: dict[str, Any] | None = None,
    teacher_data: DataSpec | dict[str, Any] | None = None,
    student_data: DataSpec | dict[str, Any] | None = None,
    backdoor: Backdoor | PlantResult | dict[str, Any] | None = None,
    cache_dir: str | Path | None = None,
    max_samples: int | None = None,
    batch_size: int = 256,
    device: str = "auto",
    seed: int = 0,
) -> AuditReport:
    """Audit what a student inherited from its teacher (:func:`safereuse.defects.audit`).

    Works on saved artifacts and on models built in Python alike. The metadata the audit needs comes
    from an artifact's manifest and extras, or, for a contract model, from the keyword arguments:
    the input spec from the model itself, the tasks from ``teacher_data`` / ``student_data`` (and
    ``data``), the backdoor from ``backdoor``.

    Args:
        teacher: artifact directory, loaded :class:`Artifact`, or contract model
            (:class:`~safereuse.models.ReusableModel`, e.g. from ``create_model`` or ``adapt``).
        student: the same for the student.
        data: the student's data (a DataSpec to load, or a loaded DataBundle); None: the slice in the
            student's manifest (or ``student_data``).
        defects: names, ``(name, params)`` pairs or Defect instances; None:
            :data:`~safereuse.config.DEFAULT_DEFECTS` plus the backdoor the teacher carries
            (:func:`audit_defects`).
        params: parameters routed to the named defects (``key`` or ``"DEFECT.key"``, as ``--param``).
        teacher_data: the teacher's task (DataSpec or dict), for a teacher without a manifest.
        student_data: the student's task, for a student without a manifest.
        backdoor: the backdoor planted in the teacher: a planted ``Backdoor``, the ``PlantResult`` of
            planting it, or a plant record; default: the teacher artifact's.
        cache_dir: crafted-set cache folder (None: no cache).
        max_samples: audit only this many test images (evenly spaced).
        batch_size: images per crafting / prediction batch.
        device: ``auto``, ``cpu``, ``cuda``...
        seed: seed of the defects' random starts.

    Returns:
        The :class:`~safereuse.defects.AuditReport`.

    Raises:
        SafeReuseError: no data to audit on; bad defects or parameters; and what
            :func:`safereuse.defects.audit` raises.
    """
    t_art = load_model(teacher, device="cpu") if isinstance(teacher, (str, Path)) else teacher
    s_art = load_model(student, device="cpu") if isinstance(student, (str, Path)) else student
    t_meta = audited(t_art, "teacher", teacher_data, backdoor)
    s_meta = audited(s_art, "student", student_data)
    if data is None:
        if not s_meta.data or not s_meta.data.get("name"):
            raise SafeReuseError(
                f"the student {s_meta.where} records no dataset to audit on",
                fix="pass data (a DataSpec), or student_data",
            )
        data = DataSpec(**s_meta.data)
    planted = (t_meta.backdoor or {}).get("name")
    # the defect names and their parameter routing are checked before the data loads
    entries = audit_defects(defects, params, str(planted) if planted else None)
    _check_input_kinds(entries, s_meta.model)
    bundle = data if isinstance(data, DataBundle) else load_data(data)
    return run_audit(
        t_meta,
        s_meta,
        bundle,
        entries,
        cache_dir=cache_dir,
        max_samples=max_samples,
        batch_size=batch_size,
        device=device,
        seed=seed,
    )
