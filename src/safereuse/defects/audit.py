"""The inheritance audit: what did a student inherit from its teacher?

Every requested defect probes the student itself (:meth:`Defect.probe`, ``shared/specs/defects.md``);
the audit prepares the inputs once (:class:`~safereuse.defects.probe.ProbeContext`) and never asks
what kind of defect it holds. The defects of this package, by the base class that gives them their
probe (``kind`` is the label shown in reports):

=====================  ===============  ============================  ===================================
base class             ``kind``         crafted / planted             measured on the student
=====================  ===============  ============================  ===================================
``TransferredAttack``  ``adversarial``  crafted on the teacher        DIR, adversarial form: flips away
                                        (penultimate, mimic) over     from y
                                        the student's test set
(same, ``nc-guided``)  ``nc-guided``    crafted on the teacher        DIR, NC form: flips away from s(x)
``WhiteBoxAttack``     ``whitebox``     crafted on the student itself *Rob* (accuracy under attack) and
                                        (PGD, FGSM, C&W, DeepFool,    DIR
                                        AutoAttack)
``Backdoor``           ``backdoor``     planted in the teacher        DIR, backdoor form, and ASR (target
                                        (``"backdoor"`` record +      class mapped into the student's
                                        trigger extras)               label space)
=====================  ===============  ============================  ===================================

A new defect is one class with a ``probe`` (usually inherited from one of these bases).

The models may be saved artifacts (``load_model``) or models built in Python (the model contract:
:class:`~safereuse.models.ReusableModel`, or :func:`~safereuse.models.adapt` around any module). What
the audit needs to know about them — input spec, task (dataset and classes), the planted backdoor and
its trigger — comes from the artifact's manifest and extras, or from the keyword arguments of
:func:`audit` (:class:`~safereuse.defects.probe.AuditedModel`).

ACC is the student's clean accuracy. Every rate is in percent with its count and 95 % Wilson interval
(:mod:`safereuse.metrics`). ``teacher_rate`` is the same DIR measured on the teacher itself (inputs
crafted on the teacher; for white-box rows, a white-box attack on the teacher) and is given only
when teacher and student share the task (same dataset, same classes, same head size) — it says how
strong the defect is before transfer.

JSON schema of :meth:`AuditReport.to_json` (``"schema": "safereuse-audit/1"``)::

    {
      "schema": "safereuse-audit/1",
      "teacher": {"path", "hash", "arch", "data", "backdoor"},     # backdoor: the plant record or null
      "student": {"path", "hash", "arch", "data"},                 # path, hash: null for Python models
      "data": {DataSpec fields}, "n_samples": int, "max_samples": int|null,
      "seed": int, "device": str, "batch_size": int,
      "acc": {"value", "k", "n", "ci_low", "ci_high"},             # student clean accuracy, percent
      "rows": [{
        "defect": str, "params": {...resolved parameters...}, "kind": str,
        "crafted_on": "teacher"|"student"|"trigger",
        "acc": float, "dir": float|null, "n": int, "ci_low": float|null, "ci_high": float|null,
        "teacher_rate": float|null, "teacher_n": int|null,
        "asr": float|null, "asr_n": int|null, "asr_ci_low": float|null, "asr_ci_high": float|null,
        "rob": float|null, "rob_n": int|null, "rob_ci_low": float|null, "rob_ci_high": float|null,
        "target": {"class": int, "label": int|null}|null,             # backdoor rows
        "cached": bool, "seconds": float
      }, ...]
    }

All rates are percentages; ``n`` is the size of the clean-correct set C the DIR is taken over;
``nan`` is written as ``null``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import Field

from .. import metrics
from ..artifacts import Artifact
from ..data import DataBundle
from ..device import resolve_device
from ..errors import SafeReuseError
from ..metrics import Rate
from ..models import ReusableModel
from ..params import Validated
from ..utils import atomic_path
from .attacks import model_device
from .backdoors import Backdoor
from .base import DEFECTS, Defect, PlantResult
from .probe import AuditedModel, ProbeContext, predict_labels, spec_dict

SCHEMA = "safereuse-audit/1"
DefectSpec = tuple[str, dict[str, Any]] | str | Defect
"""A defect to audit: ``(name, params)``, a bare name, or a :class:`Defect` instance."""


@dataclass
class AuditRow:
    """One defect's result. Rates are percentages (see :class:`~safereuse.metrics.Rate` in ``rates``).

    Attributes:
        defect: registry name.
        params: the resolved parameters (defaults included).
        kind: the defect's label (``adversarial``, ``nc-guided``, ``whitebox``, ``backdoor``, ...).
        acc: student clean accuracy.
        dir: defect inheritance rate (in the defect's own form); ``nan`` when C is empty.
        n: ``|C|``, the clean-correct inputs the DIR is taken over.
        ci_low: DIR's 95 % Wilson interval, low end (``nan`` when ``n = 0``).
        ci_high: high end.
        teacher_rate: the same DIR measured on the teacher (same task only, else None).
        asr: backdoor attack success rate on the student (None if not a backdoor or the student's task
            lacks the target class).
        rob: robust accuracy (white-box rows only).
        rates: the :class:`Rate` objects behind the numbers (``acc``, ``dir``, ``teacher``, ``asr``,
            ``rob``), each with its count and interval.
        crafted_on: ``teacher``, ``student`` or ``trigger`` (planted backdoor).
        target: backdoor target as ``{"class": original id, "label": student label or None}``.
        cached: the crafted set came from the cache.
        seconds: time spent crafting (0 on a cache hit) and probing.
    """

    defect: str
    params: dict[str, Any]
    kind: str
    acc: float
    dir: float
    n: int
    ci_low: float
    ci_high: float
    teacher_rate: float | None = None
    asr: float | None = None
    rob: float | None = None
    rates: dict[str, Rate] = field(default_factory=dict)
    crafted_on: str = "teacher"
    target: dict[str, Any] | None = None
    cached: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The flat JSON row of the module docstring's schema."""

        def val(name: str) -> tuple[Any, Any, Any, Any]:
            r = self.rates.get(name)
            if r is None:
                return None, None, None, None
            d = r.to_dict()
            return d["value"], d["n"], d["ci_low"], d["ci_high"]

        d, n, lo, hi = val("dir")
        t, tn, _, _ = val("teacher")
        a, an, alo, ahi = val("asr")
        r, rn, rlo, rhi = val("rob")
        return {
            "defect": self.defect,
            "params": self.params,
            "kind": self.kind,
            "crafted_on": self.crafted_on,
            "acc": _num(self.acc),
            "dir": d,
            "n": self.n if n is None else n,
            "ci_low": lo,
            "ci_high": hi,
            "teacher_rate": t,
            "teacher_n": tn,
            "asr": a,
            "asr_n": an,
            "asr_ci_low": alo,
            "asr_ci_high": ahi,
            "rob": r,
            "rob_n": rn,
            "rob_ci_low": rlo,
            "rob_ci_high": rhi,
            "target": self.target,
            "cached": self.cached,
            "seconds": round(self.seconds, 4),
        }


def _num(v: float | None) -> float | None:
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v


@dataclass
class AuditReport:
    """The result of :func:`audit`: rows plus what was audited (see the module docstring's schema)."""

    rows: list[AuditRow]
    acc: Rate
    teacher: dict[str, Any]
    student: dict[str, Any]
    data: dict[str, Any]
    n_samples: int
    max_samples: int | None
    seed: int
    device: str
    batch_size: int

    def to_dict(self) -> dict[str, Any]:
        """The report as a JSON-ready dict (``nan`` → ``None``)."""
        return {
            "schema": SCHEMA,
            "teacher": self.teacher,
            "student": self.student,
            "data": self.data,
            "n_samples": self.n_samples,
            "max_samples": self.max_samples,
            "seed": self.seed,
            "device": self.device,
            "batch_size": self.batch_size,
            "acc": self.acc.to_dict(),
            "rows": [r.to_dict() for r in self.rows],
        }

    def to_json(self, path: str | Path | None = None) -> str:
        """The report as JSON text; also written atomically to ``path`` when given."""
        import json

        text = json.dumps(self.to_dict(), indent=2, sort_keys=True, default=str) + "\n"
        if path is not None:
            with atomic_path(Path(path)) as tmp:
                tmp.write_text(text)
        return text

    def table(self) -> str:
        """A plain-text table: one line per defect, rates in percent with DIR's 95 % interval."""
        head = ["defect", "kind", "ACC", "DIR", "95% CI", "n", "ASR", "Rob", "teacher"]
        lines = []
        for r in self.rows:
            lines.append(
                [
                    r.defect + _short_params(r),
                    r.kind,
                    _fmt(r.acc),
                    _fmt(r.dir),
                    "-" if not math.isfinite(r.ci_low) else f"[{r.ci_low:.1f}, {r.ci_high:.1f}]",
                    str(r.n),
                    _fmt(r.asr),
                    _fmt(r.rob),
                    _fmt(r.teacher_rate),
                ]
            )
        widths = [
            max(len(h), *(len(row[i]) for row in lines)) if lines else len(h) for i, h in enumerate(head)
        ]
        fmt_row = "  ".join(("{:<%d}" if i == 0 else "{:>%d}") % w for i, w in enumerate(widths))
        out = [
            f"teacher {self.teacher.get('path') or '(in memory)'}  →  "
            f"student {self.student.get('path') or '(in memory)'}",
            f"data {self.data.get('name')} classes={self.data.get('classes')}  n={self.n_samples}  "
            f"student ACC {self.acc}",
            fmt_row.format(*head),
            fmt_row.format(*("-" * w for w in widths)),
        ]
        out += [fmt_row.format(*row) for row in lines]
        out.append(
            "rates in %; DIR over the student's clean-correct inputs (n); teacher = same DIR on the teacher"
        )
        return "\n".join(out)


def _fmt(v: float | None) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.2f}"


def _short_params(row: AuditRow) -> str:
    """``(k=v, ...)`` for the parameters that differ from the defect's defaults (seed left out)."""
    cls = DEFECTS.get(row.defect) if row.defect in DEFECTS else None
    if cls is None or cls.planted_in_teacher:  # its parameters are the teacher's plant record
        return ""
    try:
        default = cls().config()
    except Exception:  # noqa: BLE001 - a class without defaults: show nothing
        return ""
    diff = {k: v for k, v in row.params.items() if k != "seed" and default.get(k) != v}
    if not diff:
        return ""
    return "(" + ",".join(f"{k}={_short(v)}" for k, v in sorted(diff.items())) + ")"


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


# -- helpers -------------------------------------------------------------------------------------
def audited(
    obj: Artifact | ReusableModel | AuditedModel,
    role: str,
    data: Any = None,
    backdoor: Backdoor | PlantResult | dict[str, Any] | None = None,
    extras: dict[str, torch.Tensor] | None = None,
) -> AuditedModel:
    """A model and its audit metadata, from an artifact or a contract model plus arguments.

    Args:
        obj: a loaded :class:`~safereuse.artifacts.Artifact`, a :class:`~safereuse.models.ReusableModel`
            (e.g. built by ``create_model`` or wrapped by ``adapt``), or an :class:`AuditedModel`.
        role: ``teacher`` or ``student`` (for error messages).
        data: its task (a DataSpec or its dict); overrides the artifact's manifest when given.
        backdoor: the backdoor planted in it: a planted :class:`Backdoor` (trigger set), the
            :class:`PlantResult` of planting it, or a plant record dict (then ``extras`` holds the
            trigger tensors); overrides the artifact's manifest when given.
        extras: tensors beside the model (trigger and mask), with a record given as ``backdoor``.

    Raises:
        SafeReuseError: ``obj`` is neither an artifact nor a contract model.
    """
    if isinstance(obj, AuditedModel):
        out = obj
    elif isinstance(obj, Artifact):
        out = AuditedModel.from_artifact(obj)
    elif isinstance(obj, ReusableModel):
        out = AuditedModel.from_model(obj)
    else:
        raise SafeReuseError(
            f"the {role} must be a loaded model (Artifact) or a contract model (ReusableModel), "
            f"got {type(obj).__name__}",
            fix="load it with safereuse.artifacts.load_model(path), or wrap it with safereuse.models.adapt",
        )
    if data is not None:
        out = replace(out, data=spec_dict(data))
    if backdoor is not None:
        if isinstance(backdoor, Backdoor):
            record = {"name": backdoor.name, "kind": backdoor.kind, "config": backdoor.config(),
                      "target": backdoor.target}  # fmt: skip
            out = replace(out, backdoor=record, extras={**out.extras, **backdoor.extras()})
        elif isinstance(backdoor, PlantResult):
            out = replace(out, backdoor=dict(backdoor.record), extras={**out.extras, **backdoor.extras})
        elif isinstance(backdoor, dict):
            out = replace(out, backdoor=dict(backdoor), extras={**out.extras, **(extras or {})})
        else:
            raise SafeReuseError(
                "backdoor must be a planted Backdoor, a PlantResult or a plant record, "
                f"got {type(backdoor).__name__}",
                fix="pass what Backdoor.plant() returned",
            )
    elif extras:
        out = replace(out, extras={**out.extras, **extras})
    return out


def _check_inputs(teacher: AuditedModel, student: AuditedModel, data: DataBundle) -> None:
    ts, ss = teacher.model.input_spec, student.model.input_spec
    t_shape = (ts.channels, *ts.size)
    s_shape = (ss.channels, *ss.size)
    if tuple(t_shape) != tuple(s_shape):
        raise SafeReuseError(
            f"the student takes {tuple(s_shape)} inputs but the teacher takes {tuple(t_shape)}",
            fix="audit a student derived from this teacher (same channels and image size)",
        )
    if len(data.test) == 0:
        raise SafeReuseError(
            "the test split is empty: no images to audit", fix="choose a non-empty class set"
        )
    x_shape = tuple(data.test.x.shape[1:])
    if x_shape != tuple(s_shape) and data.test.x.is_floating_point():  # token ids: any length fits
        raise SafeReuseError(
            f"the data's images are {x_shape} but the student takes {tuple(s_shape)}",
            fix="load the student's own dataset",
        )
    s_data = student.data
    if isinstance(s_data, dict):
        spec = data.spec
        if s_data.get("name") not in (None, spec.name) or (
            "classes" in s_data and s_data.get("classes") != spec.classes
        ):
            raise SafeReuseError(
                f"the data ({spec.name}, classes {spec.classes}) is not the student's task "
                f"({s_data.get('name')}, classes {s_data.get('classes')})",
                fix="load the student's dataset with the classes in its manifest",
            )
    y_max = int(data.test.y.max())
    if y_max >= student.model.num_classes:
        raise SafeReuseError(
            f"test labels go up to {y_max} but the student has {student.model.num_classes} outputs",
            fix="load the student's dataset with the classes in its manifest",
        )


def _same_task(teacher: AuditedModel, student: AuditedModel, data: DataBundle) -> bool:
    t = teacher.data
    s = student.data or data.spec.to_dict()
    if not isinstance(t, dict) or not isinstance(s, dict):
        return False
    return (
        t.get("name") == s.get("name")
        and t.get("classes") == s.get("classes")
        and teacher.model.num_classes == student.model.num_classes
    )


def _resolve(defects: Sequence[DefectSpec], seed: int) -> list[Defect]:
    if not defects:
        raise SafeReuseError("no defects to audit", fix="name at least one, e.g. [('penultimate', {})]")
    out = []
    for spec in defects:
        if isinstance(spec, Defect):
            out.append(spec)
            continue
        if isinstance(spec, str):
            name, params = spec, {}
        else:
            try:
                name, params = spec
            except (TypeError, ValueError):
                raise SafeReuseError(
                    f"defect {spec!r} is not (name, params)", fix="write e.g. ('pgd', {'steps': 20})"
                ) from None
            params = dict(params or {})
        cls = DEFECTS.get(name)
        if "seed" in cls.param_names() and "seed" not in params:
            params["seed"] = seed
        out.append(DEFECTS.create(name, **params))
    return out


@dataclass
class AuditConfig(Validated):
    """The audit's own options, declared once: the CLI (``--max-samples``), a spec's ``audit:`` block
    and :func:`audit` / :func:`safereuse.api.audit` all check them here.

    Attributes:
        max_samples: audit only this many test images (evenly spaced; None: all).
        batch_size: images per crafting / prediction batch.
        seed: seed of random starts (for every defect with a ``seed`` parameter not given).

    Example:
        >>> AuditConfig(max_samples="500").max_samples
        500
        >>> AuditConfig(batch_size=0)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        safereuse.errors.SafeReuseError: audit: batch_size=0 is invalid (expected an integer ≥ 1) (fix: ...)
    """

    max_samples: Annotated[int, Field(ge=1)] | None = None
    batch_size: Annotated[int, Field(ge=1)] = 256
    seed: int = 0

    def _what(self) -> str:
        return "audit"


def _subset(n: int, max_samples: int | None) -> torch.Tensor | None:
    """Evenly spaced indices (deterministic, independent of the seed) or None for all."""
    if max_samples is None or max_samples >= n:
        return None
    return torch.arange(max_samples) * n // max_samples


def _params(defect: Defect) -> dict[str, Any]:
    return {k: v for k, v in defect.config().items() if k != "defect"}


# -- the audit -------------------------------------------------------------------------------------
def audit(
    teacher: Artifact | ReusableModel | AuditedModel,
    student: Artifact | ReusableModel | AuditedModel,
    data: DataBundle,
    defects: Sequence[DefectSpec],
    *,
    teacher_data: Any = None,
    student_data: Any = None,
    backdoor: Backdoor | PlantResult | dict[str, Any] | None = None,
    cache_dir: str | Path | None = None,
    max_samples: int | None = None,
    batch_size: int = 256,
    device: str = "auto",
    seed: int = 0,
    craft_lock: Callable[[], AbstractContextManager[Any]] | None = None,
) -> AuditReport:
    """Measure how often defects crafted on / planted in the teacher fire on the student.

    Args:
        teacher: the teacher: an artifact (``load_model``) or a contract model built in Python. For
            backdoor rows it must carry the plant record and trigger (manifest ``"backdoor"`` and
            extras, or ``backdoor``).
        student: the student: an artifact (its manifest's ``data`` names its task) or a contract model.
        data: the student's dataset; its test split is audited.
        defects: ``(name, params)`` pairs, bare names (``safereuse list defects``) or :class:`Defect`
            instances.
        teacher_data: the teacher's task (DataSpec or dict) for a model without a manifest: it decides
            whether the teacher reference is measured (same task) and which dataset a backdoor's
            target id refers to. Overrides the artifact's when given.
        student_data: the student's task (default: the manifest's, else ``data``'s).
        backdoor: the backdoor planted in the teacher (a planted :class:`Backdoor`, its
            :class:`PlantResult`, or a plant record); default: the artifact's.
        cache_dir: folder caching crafted sets by content (None: no cache).
        max_samples: audit only this many test images (evenly spaced, independent of ``seed``).
        batch_size: images per crafting / prediction batch.
        device: ``auto``, ``cpu``, ``cuda``...; the models are moved there and back.
        seed: seed of random starts (used for every defect with a ``seed`` parameter not given in
            its params).
        craft_lock: held while a set is crafted on the teacher or read from the cache
            (:attr:`ProbeContext.craft_lock`; the runner's file lock, so concurrent audits of one
            teacher craft each set once). None: no lock.

    Returns:
        An :class:`AuditReport` (``.rows``, ``.table()``, ``.to_json()``).

    Raises:
        SafeReuseError: a model is neither an artifact nor a contract model; input shapes differ; the
            data is not the student's task or is empty; a defect is unknown or has bad parameters
            (e.g. ε outside [0, 1]); a defect cannot be probed on these models (e.g. a backdoor
            requested for a teacher without one, or with another one).

    Example:
        >>> from safereuse.data import load_data
        >>> from safereuse.models import create_model
        >>> data = load_data("digits", classes=[0, 1, 2])
        >>> t, s = create_model("smallcnn", 3), create_model("smallcnn", 3)
        >>> rep = audit(t, s, data, [("fgsm", {})], max_samples=8, device="cpu")
        >>> [(r.defect, r.kind, r.crafted_on, r.rates["rob"].n) for r in rep.rows]
        [('fgsm', 'whitebox', 'student', 8)]
    """
    cfg = AuditConfig(max_samples=max_samples, batch_size=batch_size, seed=seed)
    max_samples, batch_size, seed = cfg.max_samples, cfg.batch_size, cfg.seed
    t_meta = audited(teacher, "teacher", teacher_data, backdoor)
    s_meta = audited(student, "student", student_data)
    _check_inputs(t_meta, s_meta, data)
    resolved = _resolve(defects, seed)
    for d in resolved:
        d.check_input_kind(data.test.x)
        d.check_models(t_meta, s_meta)

    idx = _subset(len(data.test), max_samples)
    x = data.test.x if idx is None else data.test.x[idx]
    y = data.test.y if idx is None else data.test.y[idx]
    dev = resolve_device(device)
    t_model, s_model = t_meta.model, s_meta.model
    homes = (model_device(t_model), model_device(s_model))
    same_task = _same_task(t_meta, s_meta, data)

    rows: list[AuditRow] = []
    try:
        t_model.to(dev)
        s_model.to(dev)
        s_clean = predict_labels(s_model, x, batch_size, dev)
        acc = metrics.accuracy(s_clean, y)
        ctx = ProbeContext(
            teacher=t_meta,
            student=s_meta,
            x=x,
            y=y,
            student_clean=s_clean,
            teacher_clean=predict_labels(t_model, x, batch_size, dev) if same_task else None,
            same_task=same_task,
            data=data.spec.to_dict(),
            device=dev,
            batch_size=batch_size,
            cache_dir=cache_dir,
            craft_lock=craft_lock,
        )

        for d in resolved:
            t0 = time.perf_counter()
            res = d.probe(ctx)
            if "dir" not in res.rates:
                raise SafeReuseError(
                    f"defect {d.name!r} returned no DIR from probe()",
                    fix="return ProbeResult({'dir': Rate, ...}, ...) from its probe()",
                )
            shown = res.defect or d
            rates: dict[str, Rate] = {"acc": acc, **res.rates}
            dr = rates["dir"]
            rows.append(
                AuditRow(
                    defect=shown.name,
                    params=_params(shown),
                    kind=shown.kind,
                    acc=acc.value,
                    dir=dr.value,
                    n=dr.n,
                    ci_low=dr.ci_low,
                    ci_high=dr.ci_high,
                    teacher_rate=rates["teacher"].value if "teacher" in rates else None,
                    asr=rates["asr"].value if "asr" in rates else None,
                    rob=rates["rob"].value if "rob" in rates else None,
                    rates=rates,
                    crafted_on=res.crafted_on,
                    target=res.target,
                    cached=res.cached,
                    seconds=time.perf_counter() - t0,
                )
            )
    finally:
        t_model.to(homes[0])
        s_model.to(homes[1])

    t_info = t_meta.info()
    t_info["backdoor"] = t_meta.backdoor or None
    return AuditReport(
        rows=rows,
        acc=acc,
        teacher=t_info,
        student=s_meta.info(),
        data=data.spec.to_dict(),
        n_samples=len(x),
        max_samples=max_samples,
        seed=seed,
        device=str(dev),
        batch_size=batch_size,
    )


def precraft(
    teacher: Artifact | ReusableModel | AuditedModel,
    data: DataBundle,
    defects: Sequence[DefectSpec],
    *,
    cache_dir: str | Path,
    max_samples: int | None = None,
    batch_size: int = 256,
    device: str = "auto",
    seed: int = 0,
    craft_lock: Callable[[], AbstractContextManager[Any]] | None = None,
) -> list[str]:
    """Craft into the cache, on the teacher, the sets :func:`audit` will craft there for any student
    on ``data`` with the same options — before a student exists.

    The runner calls it once per teacher × audited data while the students train, so no cell waits
    for another to craft. The audited inputs are chosen exactly as :func:`audit` chooses them, and
    each defect crafts what its probe crafts (:meth:`~safereuse.defects.Defect.precraft`); the cache
    is keyed by content, so the audit's results are the same with or without this step.

    Args:
        teacher: the teacher (artifact, contract model or :class:`AuditedModel`).
        data: the students' dataset; its test split is audited.
        defects: as in :func:`audit`; only ``crafted_on_teacher`` ones craft anything.
        cache_dir: the crafted-set cache.
        max_samples, batch_size, device, seed, craft_lock: as in :func:`audit`.

    Returns:
        The names of the defects crafted (or found in the cache).

    Example:
        >>> import tempfile
        >>> from safereuse.data import load_data
        >>> from safereuse.models import create_model
        >>> data, t = load_data("digits", classes=[0, 1, 2]), create_model("smallcnn", 3)
        >>> cache = tempfile.mkdtemp()
        >>> precraft(t, data, [("penultimate", {"steps": 2}), "fgsm"], cache_dir=cache, max_samples=8,
        ...          device="cpu")
        ['penultimate']
        >>> s = create_model("smallcnn", 3)
        >>> [r.cached for r in audit(t, s, data, [("penultimate", {"steps": 2})], cache_dir=cache,
        ...                          max_samples=8, device="cpu").rows]
        [True]
    """
    cfg = AuditConfig(max_samples=max_samples, batch_size=batch_size, seed=seed)
    t_meta = audited(teacher, "teacher")
    resolved = [d for d in _resolve(defects, cfg.seed) if d.crafted_on_teacher]
    if not resolved or len(data.test) == 0:
        return []
    idx = _subset(len(data.test), cfg.max_samples)
    x = data.test.x if idx is None else data.test.x[idx]
    y = data.test.y if idx is None else data.test.y[idx]
    for d in resolved:
        d.check_input_kind(x)
    dev = resolve_device(device)
    home = model_device(t_meta.model)
    ctx = ProbeContext(
        teacher=t_meta,
        student=t_meta,  # never read: precraft() touches the teacher and the inputs only
        x=x,
        y=y,
        student_clean=torch.zeros(len(x), dtype=torch.long),
        teacher_clean=None,
        same_task=False,
        data=data.spec.to_dict(),
        device=dev,
        batch_size=cfg.batch_size,
        cache_dir=cache_dir,
        craft_lock=craft_lock,
    )
    try:
        t_meta.model.to(dev)
        for d in resolved:
            d.precraft(ctx)
    finally:
        t_meta.model.to(home)
    return [d.name for d in resolved]


__all__ = [
    "SCHEMA",
    "AuditConfig",
    "AuditReport",
    "AuditRow",
    "AuditedModel",
    "DefectSpec",
    "audit",
    "audited",
    "precraft",
]
