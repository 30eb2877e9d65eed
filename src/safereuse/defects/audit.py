"""The inheritance audit: what did a student inherit from its teacher?

For each requested defect (``shared/specs/defects.md``):

===============  ====================================  =========================================
kind             crafted / planted                     measured on the student
===============  ====================================  =========================================
``adversarial``  crafted on the teacher (penultimate,  DIR, adversarial form: flips away from y
                 mimic) over the student's test set
``nc-guided``    crafted on the teacher                DIR, NC form: flips away from s(x)
``whitebox``     crafted on the student itself (PGD,   *Rob* (accuracy under attack) and DIR
                 FGSM, C&W, DeepFool, AutoAttack)
``backdoor``     planted in the teacher (manifest      DIR, backdoor form, and ASR (target class
                 ``"backdoor"`` record + extras)       mapped into the student's label space)
===============  ====================================  =========================================

ACC is the student's clean accuracy. Every rate is in percent with its count and 95 % Wilson interval
(:mod:`safereuse.metrics`). ``teacher_rate`` is the same DIR measured on the teacher itself (inputs
crafted on the teacher; for white-box rows, a white-box attack on the teacher) and is given only
when teacher and student share the task (same dataset, same classes, same head size) — it says how
strong the defect is before transfer.

JSON schema of :meth:`AuditReport.to_json` (``"schema": "safereuse-audit/1"``)::

    {
      "schema": "safereuse-audit/1",
      "teacher": {"path", "hash", "arch", "data", "backdoor"},     # backdoor: the plant record or null
      "student": {"path", "hash", "arch", "data"},
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import metrics
from ..artifacts import Artifact
from ..data import DataBundle
from ..device import resolve_device
from ..errors import SafeReuseError
from ..metrics import Rate
from ..train import predict
from ..utils import atomic_path
from .attacks import ExploratoryDefect, model_device
from .base import DEFECTS, Defect
from .cache import cached_craft, model_hash

SCHEMA = "safereuse-audit/1"
DefectSpec = tuple[str, dict[str, Any]] | str


@dataclass
class AuditRow:
    """One defect's result. Rates are percentages (see :class:`~safereuse.metrics.Rate` in ``rates``).

    Attributes:
        defect: registry name.
        params: the resolved parameters (defaults included).
        kind: ``adversarial``, ``nc-guided``, ``whitebox`` or ``backdoor``.
        acc: student clean accuracy.
        dir: defect inheritance rate (form by kind); ``nan`` when C is empty.
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
            f"teacher {self.teacher.get('path')}  →  student {self.student.get('path')}",
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
    if cls is None or row.kind == "backdoor":
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
def _artifact_info(a: Artifact) -> dict[str, Any]:
    m = a.manifest
    return {
        "path": str(a.path),
        "hash": a.hash,
        "arch": m.get("arch"),
        "data": m.get("data"),
    }


def _check_inputs(teacher: Artifact, student: Artifact, data: DataBundle) -> None:
    for what, a in (("teacher", teacher), ("student", student)):
        if not isinstance(a, Artifact):
            raise SafeReuseError(
                f"the {what} must be a loaded model (Artifact), got {type(a).__name__}",
                fix="load it with safereuse.artifacts.load_model(path)",
            )
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
    if x_shape != tuple(s_shape):
        raise SafeReuseError(
            f"the data's images are {x_shape} but the student takes {tuple(s_shape)}",
            fix="load the student's own dataset",
        )
    s_data = student.manifest.get("data")
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


def _same_task(teacher: Artifact, student: Artifact, data: DataBundle) -> bool:
    t = teacher.manifest.get("data")
    s = student.manifest.get("data") or data.spec.to_dict()
    if not isinstance(t, dict) or not isinstance(s, dict):
        return False
    return (
        t.get("name") == s.get("name")
        and t.get("classes") == s.get("classes")
        and teacher.model.num_classes == student.model.num_classes
    )


def _target_label(target: int, teacher: Artifact, student: Artifact, data: DataBundle) -> int | None:
    """The backdoor target (original class id) as a student label, or None if the task lacks it."""
    t_data = teacher.manifest.get("data") or {}
    s_data = student.manifest.get("data") or {}
    t_name, s_name = t_data.get("name"), s_data.get("name", data.spec.name)
    if t_name and s_name and t_name != s_name:
        return None  # the target id refers to another dataset's classes
    classes = s_data.get("classes", data.spec.classes)
    if classes is None:
        return int(target) if 0 <= int(target) < student.model.num_classes else None
    classes = [int(c) for c in classes]
    return classes.index(int(target)) if int(target) in classes else None


def _resolve(defects: list[DefectSpec], seed: int) -> list[Defect]:
    if not defects:
        raise SafeReuseError("no defects to audit", fix="name at least one, e.g. [('penultimate', {})]")
    out = []
    for spec in defects:
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


def _subset(n: int, max_samples: int | None) -> torch.Tensor | None:
    """Evenly spaced indices (deterministic, independent of the seed) or None for all."""
    if max_samples is None or max_samples >= n:
        return None
    if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1:
        raise SafeReuseError(f"max_samples={max_samples!r} must be a positive integer", fix="e.g. 500")
    return torch.arange(max_samples) * n // max_samples


def _params(defect: Defect) -> dict[str, Any]:
    return {k: v for k, v in defect.config().items() if k != "defect"}


# -- the audit -------------------------------------------------------------------------------------
def audit(
    teacher: Artifact,
    student: Artifact,
    data: DataBundle,
    defects: list[DefectSpec],
    *,
    cache_dir: str | Path | None = None,
    max_samples: int | None = None,
    batch_size: int = 256,
    device: str = "auto",
    seed: int = 0,
) -> AuditReport:
    """Measure how often defects crafted on / planted in the teacher fire on the student.

    Args:
        teacher: the teacher artifact (``load_model``); for backdoor rows its manifest must carry the
            ``"backdoor"`` record and its extras the trigger.
        student: the student artifact; its manifest's ``data`` names its task.
        data: the student's dataset; its test split is audited.
        defects: ``(name, params)`` pairs (or bare names) from ``safereuse list defects``.
        cache_dir: folder caching crafted sets by content (None: no cache).
        max_samples: audit only this many test images (evenly spaced, independent of ``seed``).
        batch_size: images per crafting / prediction batch.
        device: ``auto``, ``cpu``, ``cuda``...; the models are moved there and back.
        seed: seed of random starts (used for every defect with a ``seed`` parameter not given in
            its params).

    Returns:
        An :class:`AuditReport` (``.rows``, ``.table()``, ``.to_json()``).

    Raises:
        SafeReuseError: input shapes differ; the data is not the student's task or is empty; a defect is
            unknown or has bad parameters (e.g. ε outside [0, 1]); a backdoor is requested for a teacher
            without one (or with another one).
    """
    _check_inputs(teacher, student, data)
    resolved = _resolve(defects, seed)
    if batch_size < 1:
        raise SafeReuseError(f"batch_size={batch_size} must be ≥ 1", fix="e.g. 256")

    record = teacher.manifest.get("backdoor")
    for d in resolved:
        if d.kind != "backdoor":
            continue
        if not record:
            raise SafeReuseError(
                f"teacher {teacher.path} has no planted backdoor to audit as {d.name!r}",
                fix="plant one with `safereuse teacher train --backdoor NAME`, or audit another defect",
            )
        planted = record.get("name") if isinstance(record, dict) else None
        if planted is not None and planted != d.name:
            raise SafeReuseError(
                f"teacher {teacher.path} carries a {planted!r} backdoor, not {d.name!r}",
                fix=f"audit ('{planted}', {{}})",
            )

    idx = _subset(len(data.test), max_samples)
    x = data.test.x if idx is None else data.test.x[idx]
    y = data.test.y if idx is None else data.test.y[idx]
    dev = resolve_device(device)
    t_model, s_model = teacher.model, student.model
    homes = (model_device(t_model), model_device(s_model))
    same_task = _same_task(teacher, student, data)
    digests: dict[str, str] = {}

    def digest(which: str) -> str | None:
        if cache_dir is None:
            return None
        if which not in digests:
            digests[which] = model_hash(t_model if which == "teacher" else s_model)
        return digests[which]

    def preds(model: torch.nn.Module, xs: torch.Tensor) -> torch.Tensor:
        return predict(model, xs, batch_size, dev).argmax(1)

    rows: list[AuditRow] = []
    try:
        t_model.to(dev)
        s_model.to(dev)
        s_clean = preds(s_model, x)
        acc = metrics.accuracy(s_clean, y)
        t_clean = preds(t_model, x) if same_task else None

        for d in resolved:
            t0 = time.perf_counter()
            rates: dict[str, Rate] = {"acc": acc}
            row_extra: dict[str, Any] = {}
            cached = False
            if d.kind in ("adversarial", "nc-guided"):
                assert isinstance(d, ExploratoryDefect)
                x_adv, cached = cached_craft(
                    d,
                    t_model,
                    x,
                    y,
                    cache_dir=cache_dir,
                    batch_size=batch_size,
                    model_digest=digest("teacher"),
                )
                form = metrics.dir_nc if d.kind == "nc-guided" else metrics.dir_adversarial
                rates["dir"] = form(y, s_clean, preds(s_model, x_adv))
                if t_clean is not None:
                    rates["teacher"] = form(y, t_clean, preds(t_model, x_adv))
                crafted_on = "teacher"
            elif d.kind == "whitebox":
                assert isinstance(d, ExploratoryDefect)
                x_adv, cached = cached_craft(
                    d,
                    s_model,
                    x,
                    y,
                    cache_dir=cache_dir,
                    batch_size=batch_size,
                    model_digest=digest("student"),
                )
                s_adv = preds(s_model, x_adv)
                rates["dir"] = metrics.dir_adversarial(y, s_clean, s_adv)
                rates["rob"] = metrics.robust_accuracy(y, s_adv)
                if t_clean is not None:
                    xt, _ = cached_craft(
                        d, t_model, x, y, cache_dir=cache_dir, batch_size=batch_size,
                        model_digest=digest("teacher"),
                    )  # fmt: skip
                    rates["teacher"] = metrics.dir_adversarial(y, t_clean, preds(t_model, xt))
                crafted_on = "student"
            elif d.kind == "backdoor":
                from .backdoors import backdoor_from_artifact

                bd = backdoor_from_artifact(teacher)
                x_trig = torch.cat([bd.apply(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
                s_trig = preds(s_model, x_trig)
                rates["dir"] = metrics.dir_backdoor(y, s_clean, s_trig)
                label = _target_label(int(bd.target), teacher, student, data)  # type: ignore[arg-type]
                if label is not None:
                    rates["asr"] = metrics.asr(y, s_trig, label)
                if t_clean is not None:
                    rates["teacher"] = metrics.dir_backdoor(y, t_clean, preds(t_model, x_trig))
                row_extra["target"] = {"class": int(bd.target), "label": label}  # type: ignore[arg-type]
                d = bd
                crafted_on = "trigger"
            else:
                raise SafeReuseError(
                    f"defect {d.name!r} has kind {d.kind!r}, which the audit cannot probe",
                    fix="use an adversarial, nc-guided, whitebox or backdoor defect",
                )
            dr = rates["dir"]
            rows.append(
                AuditRow(
                    defect=d.name,
                    params=_params(d),
                    kind=d.kind,
                    acc=acc.value,
                    dir=dr.value,
                    n=dr.n,
                    ci_low=dr.ci_low,
                    ci_high=dr.ci_high,
                    teacher_rate=rates["teacher"].value if "teacher" in rates else None,
                    asr=rates["asr"].value if "asr" in rates else None,
                    rob=rates["rob"].value if "rob" in rates else None,
                    rates=rates,
                    crafted_on=crafted_on,
                    cached=cached,
                    seconds=time.perf_counter() - t0,
                    **row_extra,
                )
            )
    finally:
        t_model.to(homes[0])
        s_model.to(homes[1])

    t_info = _artifact_info(teacher)
    t_info["backdoor"] = record or None
    return AuditReport(
        rows=rows,
        acc=acc,
        teacher=t_info,
        student=_artifact_info(student),
        data=data.spec.to_dict(),
        n_samples=len(x),
        max_samples=max_samples,
        seed=seed,
        device=str(dev),
        batch_size=batch_size,
    )


__all__ = ["SCHEMA", "AuditReport", "AuditRow", "audit"]
