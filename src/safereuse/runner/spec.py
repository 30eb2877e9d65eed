"""Experiment specs: a YAML file validated with pydantic, with errors that name the key and its line.

A spec (see ``examples/*.yaml``)::

    name: my-experiment                 # optional, shown in reports
    scenarios:                          # one or more teacher → student settings
      - name: fmnist-to-digits
        teacher:
          arch: resnet8                 # safereuse list models
          arch_kwargs: {width: 16}
          data: fashion-mnist           # safereuse list datasets (or imagefolder:PATH)
          classes: 0-4                  # "0-4", "1,3,5" or a list
          train_size: 10000             # optional limit (total, or per class with per_class: true)
          # max_len: 32                 # text data only (minilm): token length, default 64
          epochs: 4                     # shorthand for fit: {epochs: 4}
          fit: {lr: 0.1}                # any FitConfig field (defaults: config.teacher_fit)
          backdoor: badnets             # optional: plant a backdoor while training
          backdoor_params: {poison_rate: 0.1}
          adversarial: false            # true: Madry PGD adversarial training (CARTL's source)
          adversarial_params: {}        # e.g. {at_eps: 0.0314, at_steps: 7, fdm_lambda: 0.64, fdm_k: 2}
          seed: 0                       # fixed teacher seed (omit: the cell's seed)
        student:
          data: digits
          classes: 0-9
          train_size: 20
          per_class: true
    methods:                            # a list value in params is a sweep
      - name: finetune
        params: {lr: [0.01, 0.001]}
      - name: all                       # every registered method (minus exclude), default params
        params: {epochs: 5}             # ... given to the methods that accept them
        exclude: [retrain]
      - name: finetune-last-k
        params: {k: 3}
        scenarios: [fmnist-to-digits]   # optional: only these scenarios (default: all)
    defects:                            # audited in every cell (backdoors: where the teacher has one)
      - name: penultimate
      - name: nc-guided
        params: {coverage: nc, strategy: dlfuzz}
        scenarios: [fmnist-to-digits]   # optional: audited only in these scenarios (default: all)
      - name: badnets
    seeds: [0, 1]
    audit: {max_samples: 500, batch_size: 256, seed: 0}

A defect must take its scenarios' inputs (``input_kind``: images or text): a word attack scheduled on
an image scenario, or an image attack on a text one, is refused when the spec loads (limit the entry
with ``scenarios:``).

**Seeds.** A cell's seed drives the student: its few-shot sample (the student ``DataSpec.seed``), its
new head, its data order. The teacher uses ``teacher.seed`` when given (one teacher shared by every
seed: the variance over seeds is then the variance of the transfer alone, which is what compares
methods) and the cell's seed otherwise (teacher training is then part of the variance). Crafted
defect sets use ``audit.seed`` (default 0; ``cell`` to use the cell's seed), so with a fixed value
every method and seed is probed with the same adversarial inputs (a paired comparison, and one
crafted set per scenario).

**Sweeps.** A list value in ``params`` of a method or defect is a sweep over its items; the cells are
the product of all sweeps. When the parameter itself takes a list (its annotation is a list or tuple),
a flat list is the value and a list of lists is the sweep.

**Selection** (optional). Without ``select:`` every sweep point is a cell of the report. With it, the
runner chooses each swept method's parameters on held-back data and reports only the chosen point,
on the test split (:mod:`safereuse.runner.select`)::

    select:
      holdout: 500                # images held back from every student's training pool
      rule: min-dir-within        # or max-acc
      defect: penultimate         # min-dir-within: the defect whose DIR is minimised ...
      within: 3                   # ... among points within 3 accuracy points of the best (default 3)
      scope: scenario             # choose per scenario × method, or `all`: one point per method
      pool: mean                  # how seeds are pooled
      defects: [penultimate]      # what the selection cells audit (default: every defect above)

Phase 1 trains every point of every swept method (a method with two or more points) and audits it on
the ``holdout`` images: stratified over the classes, taken out of the training pool before
``train_size`` sampling, the same for every seed, and disjoint from the student's train, validation
and test images (:attr:`safereuse.data.DataSpec.holdout`). The rule then picks one point per group
from the means over seeds — ties go to the higher accuracy, then to the earlier point of the spec —
and phase 2 runs the chosen points (labelled by the method's name) and every unswept method as the
report's cells, audited on the test split, which selection never reads. Every student of the spec,
swept or not, trains on the pool minus the holdout, so phase 2 reuses phase 1's students.
``RUNDIR/selection.md`` and ``selection.json`` keep the whole validation table, the rule and the
choices. Both phases resume through the ledger.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, is_dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_type_hints

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..config import arch_student_fit, student_params, teacher_fit
from ..data import DATASETS, DataSpec, check_max_len, parse_classes
from ..data.text import TEXT_DATASETS
from ..defects import DEFECTS
from ..defects.audit import AuditConfig
from ..defects.modality import defects_for
from ..errors import SafeReuseError
from ..methods import METHODS
from ..models import MODELS, create_model
from ..objectives import AdversarialTraining, fdm_site
from ..params import accepted_params, is_list_type, param_hints, validate_params
from ..registry import EXPERIMENTS
from ..train import FitConfig
from ..utils import config_hash, json_default

#: Bumped when the meaning of a resolved cell config changes (part of every cell id).
CELL_VERSION = 1

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


#: The :class:`~safereuse.data.DataSpec` fields a spec writes as they are (type, range and default
#: taken from DataSpec: declared once). DataSpec's ``name`` is the spec's ``data``; ``classes`` also
#: takes the spec's forms (``0-4``, ``1,3,5``); ``seed`` is the cell's, ``holdout`` comes from
#: ``select:``, ``data_dir`` from the run. ``max_len``: text data only (checked by ``check_max_len``).
_DATASPEC_FIELDS = ("train_size", "per_class", "val_fraction", "max_len")


def _dataspec_fields() -> dict[str, Any]:
    hints = get_type_hints(DataSpec, include_extras=True)
    default = {f.name: f.default for f in fields(DataSpec)}
    return {name: (hints[name], default[name]) for name in _DATASPEC_FIELDS}


DataCfg = pydantic.create_model(
    "DataCfg",
    __base__=_Strict,
    __doc__="A dataset slice: the fields of :class:`safereuse.data.DataSpec` a spec sets.",
    __module__=__name__,
    data=(str, ...),
    classes=(list[int] | str | int | None, None),
    **_dataspec_fields(),
)


class TeacherCfg(DataCfg):
    """How to make a scenario's teacher."""

    data: str = "fashion-mnist"
    arch: str = "resnet8"
    arch_kwargs: dict[str, Any] = Field(default_factory=dict)
    epochs: int | None = Field(default=None, ge=1)
    fit: dict[str, Any] = Field(default_factory=dict)
    backdoor: str | None = None
    backdoor_params: dict[str, Any] = Field(default_factory=dict)
    adversarial: bool = False
    adversarial_params: dict[str, Any] = Field(default_factory=dict)
    seed: int | None = None


class StudentCfg(DataCfg):
    """The student's task: the data it is transferred to."""


class ScenarioCfg(_Strict):
    """A teacher and the student task it is reused for."""

    name: str
    teacher: TeacherCfg
    student: StudentCfg | None = None  # required by grids; an experiment spec has none

    @field_validator("name")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError("must be letters, digits, '-', '_' or '.' (no spaces)")
        return v


class MethodCfg(_Strict):
    """A transfer method (or ``all``) and its parameters (a list value is a sweep)."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    exclude: list[str] = Field(default_factory=list)
    scenarios: list[str] | None = None  # run only on these scenarios (default: all)


class DefectCfg(_Strict):
    """A defect to audit and its parameters (a list value is a sweep)."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    scenarios: list[str] | None = None  # audit only in these scenarios (default: all)


def _audit_fields() -> dict[str, Any]:
    hints = get_type_hints(AuditConfig, include_extras=True)
    out = {f.name: (hints[f.name], f.default) for f in fields(AuditConfig)}
    # a grid audits 500 images a cell unless told otherwise; its seed may follow the cell's
    out["max_samples"] = (hints["max_samples"], 500)
    out["seed"] = (int | Literal["cell"], 0)
    return out


#: The audit options of every cell: :class:`safereuse.defects.audit.AuditConfig`'s fields (types and
#: ranges declared there once), with a grid's own defaults.
AuditCfg = pydantic.create_model(
    "AuditCfg",
    __base__=_Strict,
    __doc__="Options of the inheritance audit run in every cell.",
    __module__=__name__,
    **_audit_fields(),
)


class SelectCfg(_Strict):
    """Hyper-parameter selection on a held-back split (the module docstring's "Selection")."""

    holdout: int = Field(ge=1)
    rule: str = "min-dir-within"
    defect: str | None = None
    within: float | None = Field(default=None, ge=0.0)
    scope: Literal["scenario", "all"] = "scenario"
    pool: Literal["mean"] = "mean"
    defects: list[str] | None = Field(default=None, min_length=1)


class ExperimentCfg(_Strict):
    """A study other than a transfer grid: a registered experiment kind
    (:data:`safereuse.registry.EXPERIMENTS`, e.g. :mod:`safereuse.applications.experiments`) run in
    one cell per scenario × seed on the scenario's teacher, dispatched to the runner task ``experiment``."""

    kind: str
    params: dict[str, Any] = Field(default_factory=dict)


class Spec(_Strict):
    """A whole experiment: scenarios × methods (× sweeps) × seeds, each audited for the defects."""

    name: str = "experiment"
    description: str = ""
    scenarios: list[ScenarioCfg] = Field(min_length=1)
    methods: list[MethodCfg] = Field(default_factory=list)  # required unless experiment: is given
    defects: list[DefectCfg] = Field(default_factory=list)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    audit: AuditCfg = Field(default_factory=AuditCfg)
    select: SelectCfg | None = None
    experiment: ExperimentCfg | None = None

    def spec_hash(self) -> str:
        """Hash of the validated content (formatting, comments and defaults left out)."""
        return config_hash(self.model_dump(mode="json", exclude_defaults=True), 16)


@dataclass(frozen=True)
class Cell:
    """One unit of work: a scenario × a method's parameter point × a seed.

    Attributes:
        id: stable id, the hash of ``config``.
        config: the resolved, JSON-able configuration (see :func:`expand`).
        order: position in the grid (the ledger keeps it so reports list cells in spec order).
        label: the method as reports name it: ``finetune``, or ``finetune(lr=0.01)`` when the spec
            has several points of that method (only the parameters that differ between them).
    """

    id: str
    config: dict[str, Any]
    order: int
    label: str

    @property
    def scenario(self) -> str:
        return self.config["scenario"]

    @property
    def method(self) -> str:
        return self.config["method"]["name"]

    @property
    def seed(self) -> int:
        return int(self.config["seed"])

    @property
    def teacher_key(self) -> str:
        """Hash of the teacher recipe: the name of its cached artifact directory."""
        return teacher_key(self.config["teacher"])


@dataclass
class LoadedSpec:
    """A validated spec with the YAML line of every key (for errors found after validation)."""

    spec: Spec
    path: str
    text: str
    lines: dict[tuple[Any, ...], int]

    def error(self, loc: tuple[Any, ...], problem: str, fix: str | None = None) -> SafeReuseError:
        """A :class:`SafeReuseError` naming ``loc`` and its line."""
        return SafeReuseError(f"{self.path}{_where(loc, self.lines)}: {problem}", fix=fix)


# -- loading ---------------------------------------------------------------------------------------
def _line_map(node: yaml.Node, path: tuple[Any, ...], out: dict[tuple[Any, ...], int], src: str) -> None:
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else str(k.value)
            if key in seen:
                raise SafeReuseError(
                    f"{src} line {k.start_mark.line + 1}: {_dotted(path + (key,))}: the key appears twice",
                    fix="keep one of them",
                )
            seen.add(key)
            out[path + (key,)] = k.start_mark.line + 1
            _line_map(v, path + (key,), out, src)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[path + (i,)] = item.start_mark.line + 1
            _line_map(item, path + (i,), out, src)


def _dotted(loc: tuple[Any, ...]) -> str:
    s = ""
    for part in loc:
        s += f"[{part}]" if isinstance(part, int) else (f".{part}" if s else str(part))
    return s or "(top level)"


def _where(loc: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> str:
    """`` line N: key`` for the longest prefix of ``loc`` that the YAML has."""
    known = tuple(loc)
    while known and known not in lines:
        known = known[:-1]
    line = lines.get(known)
    key = _dotted(tuple(p for p in loc if isinstance(p, (int, str))))
    return (f" line {line}" if line else "") + f": {key}"


def load_spec(path: str | Path | None = None, *, text: str | None = None) -> LoadedSpec:
    """Read, validate and check a spec against the registries.

    Args:
        path: the YAML file (its name is used in messages when ``text`` is given too).
        text: the YAML text (instead of reading ``path``).

    Returns:
        The :class:`LoadedSpec`.

    Raises:
        SafeReuseError: unreadable file, bad YAML, an unknown or mistyped key, an unknown
            model/dataset/method/defect, a bad parameter; the message names the key and its line.
    """
    src = str(path) if path is not None else "<spec>"
    if text is None:
        if path is None:
            raise SafeReuseError("no spec given", fix="pass a YAML file")
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise SafeReuseError(
                f"cannot read spec {src}: {exc.strerror or exc}", fix="check the path"
            ) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SafeReuseError(f"{src}{where}: invalid YAML: {problem}", fix="fix the YAML syntax") from None
    if not isinstance(raw, dict):
        raise SafeReuseError(
            f"{src}: a spec must be a mapping with scenarios, methods, defects",
            fix="see examples/default.yaml",
        )
    lines: dict[tuple[Any, ...], int] = {}
    _line_map(node, (), lines, src)
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = f"unknown key {loc[-1]!r}"
        elif err["type"] == "missing":
            msg = "required key is missing"
        more = f" (and {len(exc.errors()) - 1} more problems)" if len(exc.errors()) > 1 else ""
        raise SafeReuseError(
            f"{src}{_where(loc, lines)}: {msg}{more}", fix="see examples/default.yaml for the format"
        ) from None
    loaded = LoadedSpec(spec, src, text, lines)
    check_registries(loaded)
    return loaded


def bundled_spec(name: str) -> LoadedSpec:
    """A spec shipped with the package (``safereuse/examples/<name>.yaml``)."""
    res = resources.files("safereuse").joinpath("examples", f"{name}.yaml")
    if not res.is_file():
        raise SafeReuseError(f"no bundled spec {name!r}", fix="reinstall safereuse")
    return load_spec(f"{name}.yaml", text=res.read_text())


# -- registry checks -------------------------------------------------------------------------------
def _check_params(
    loaded: LoadedSpec,
    loc: tuple[Any, ...],
    factory: Any,
    params: dict[str, Any],
    what: str,
    forbidden: set[str] = frozenset(),  # type: ignore[assignment]
) -> dict[str, Any]:
    """Check names, types and ranges of ``params`` for ``factory`` (the one path of
    :mod:`safereuse.params`, so the message is the CLI's and Python's); return them validated."""
    out = {}
    for key, value in params.items():
        try:
            out.update(validate_params(factory, {key: value}, what, forbidden=forbidden))
        except SafeReuseError as exc:
            raise loaded.error(loc + (key,), exc.problem, exc.fix) from None
    return out


def _sweep_points(
    loaded: LoadedSpec, loc: tuple[Any, ...], factory: Any, params: dict[str, Any]
) -> list[dict[str, Any]]:
    """The product of the sweeps in ``params`` (see the module docstring)."""
    hints = param_hints(factory)
    axes: list[list[tuple[str, Any]]] = []
    for key, value in params.items():
        hint = hints.get(key)
        takes_list = hint is not None and is_list_type(hint)
        is_sweep = isinstance(value, list) and (
            not takes_list or (bool(value) and all(isinstance(v, list) for v in value))
        )
        if is_sweep:
            if not value:
                raise loaded.error(
                    loc + (key,), "an empty list sweeps over nothing", fix="give at least one value"
                )
            axes.append([(key, v) for v in value])
        else:
            axes.append([(key, value)])
    return [dict(p) for p in itertools.product(*axes)] if axes else [{}]


_RUN_FIT_KEYS = frozenset({"seed", "device", "progress"})  # FitConfig fields the runner sets itself


def check_registries(loaded: LoadedSpec) -> None:
    """Check every name against the registries and every parameter against its factory.

    Raises:
        SafeReuseError: naming the key and its line.
    """
    spec = loaded.spec
    if spec.experiment is None:  # a transfer grid needs its students, methods and defects
        for key in ("methods", "defects"):
            if not getattr(spec, key):
                raise loaded.error((key,), "required key is missing", fix="see examples/default.yaml")
        for i, sc in enumerate(spec.scenarios):
            if sc.student is None:
                raise loaded.error(("scenarios", i, "student"), "required key is missing",
                                   fix="see examples/default.yaml")  # fmt: skip
    seen: dict[str, int] = {}
    for i, sc in enumerate(spec.scenarios):
        loc = ("scenarios", i)
        if sc.name in seen:
            raise loaded.error(
                loc + ("name",),
                f"scenario name {sc.name!r} is used twice",
                fix="give every scenario its own name",
            )
        seen[sc.name] = i
        for role in ("teacher", "student"):
            part = getattr(sc, role)
            if part is None:
                continue
            if part.data not in DATASETS and not part.data.startswith("imagefolder:"):
                raise _registry_error(loaded, loc + (role, "data"), DATASETS, part.data)
            try:
                part.classes = parse_classes(part.classes)
            except SafeReuseError as exc:
                raise loaded.error(loc + (role, "classes"), exc.problem, exc.fix) from None
            try:
                check_max_len(part.data, part.max_len)
            except SafeReuseError as exc:
                raise loaded.error(loc + (role, "max_len"), exc.problem, exc.fix) from None
        t = sc.teacher
        if t.arch not in MODELS:
            raise _registry_error(loaded, loc + ("teacher", "arch"), MODELS, t.arch)
        t.arch_kwargs = _check_params(
            loaded,
            loc + ("teacher", "arch_kwargs"),
            MODELS.get(t.arch),
            t.arch_kwargs,
            f"model {t.arch!r}",
            forbidden={"num_classes", "in_channels", "image_size"},
        )
        t.fit = _check_params(
            loaded, loc + ("teacher", "fit"), FitConfig, t.fit, "teacher training", forbidden=_RUN_FIT_KEYS
        )
        if t.epochs is not None and "epochs" in t.fit and t.fit["epochs"] != t.epochs:
            raise loaded.error(loc + ("teacher", "epochs"), "epochs and fit.epochs disagree", fix="keep one")
        if t.backdoor is not None:
            if t.backdoor not in DEFECTS:
                raise _registry_error(loaded, loc + ("teacher", "backdoor"), DEFECTS, t.backdoor)
            cls = DEFECTS.get(t.backdoor)
            if not cls.planted_in_teacher:
                raise loaded.error(
                    loc + ("teacher", "backdoor"),
                    f"{t.backdoor!r} is not a backdoor",
                    fix="use a backdoor defect, e.g. badnets",
                )
            t.backdoor_params = _check_params(
                loaded,
                loc + ("teacher", "backdoor_params"),
                cls,
                t.backdoor_params,
                f"backdoor {t.backdoor!r}",
            )
            _instantiate(loaded, loc + ("teacher", "backdoor"), cls, t.backdoor_params)
        elif t.backdoor_params:
            raise loaded.error(
                loc + ("teacher", "backdoor_params"),
                "backdoor_params without a backdoor",
                fix="add backdoor: NAME or remove backdoor_params",
            )
        _check_adversarial(loaded, loc + ("teacher",), t)
    if spec.experiment is not None:
        check_experiment(loaded)
        return

    for i, m in enumerate(spec.methods):
        loc = ("methods", i)
        for j, ex in enumerate(m.exclude):
            if m.name != "all":
                raise loaded.error(loc + ("exclude",), "exclude only goes with name: all", fix="remove it")
            if ex not in METHODS:
                raise _registry_error(loaded, loc + ("exclude", j), METHODS, ex)
        if m.name != "all" and m.name not in METHODS:
            raise _registry_error(loaded, loc + ("name",), METHODS, m.name, extra="all")
    backdoors = {sc.teacher.backdoor for sc in spec.scenarios if sc.teacher.backdoor}
    for i, d in enumerate(spec.defects):
        loc = ("defects", i)
        if d.name not in DEFECTS:
            raise _registry_error(loaded, loc + ("name",), DEFECTS, d.name)
        if DEFECTS.get(d.name).planted_in_teacher and d.name not in backdoors:
            raise loaded.error(
                loc + ("name",),
                f"no scenario's teacher plants the backdoor {d.name!r}",
                fix=f"add backdoor: {d.name} to a scenario's teacher, or remove this defect",
            )
    _check_input_kinds(loaded)
    _method_points(loaded)  # names, types and values of every sweep point
    _defect_points(loaded, 0)
    if len(set(spec.seeds)) != len(spec.seeds):
        raise loaded.error(("seeds",), "a seed is listed twice", fix="list each seed once")
    for key, check in SECTION_CHECKS.items():
        if getattr(spec, key) is not None:
            check(loaded)


def _input_kind(data: str) -> str:
    """``text`` for a text dataset (token ids), else ``image``."""
    return "text" if data in TEXT_DATASETS else "image"


def _check_input_kinds(loaded: LoadedSpec) -> None:
    """Refuse a defect scheduled on a scenario whose inputs it cannot take (a word attack on images,
    an image attack on text), before any cell runs; the message names the defect's line."""
    spec = loaded.spec
    for i, sc in enumerate(spec.scenarios):
        bd = sc.teacher.backdoor
        if bd is not None and DEFECTS.get(bd).input_kind != _input_kind(sc.teacher.data):
            kind = _input_kind(sc.teacher.data)
            raise loaded.error(
                ("scenarios", i, "teacher", "backdoor"),
                f"backdoor {bd!r} takes {DEFECTS.get(bd).input_kind} inputs, but the teacher's data "
                f"{sc.teacher.data} holds {'images' if kind == 'image' else 'text'}",
                fix="use one of: "
                + ", ".join(n for n in defects_for(kind) if DEFECTS.get(n).planted_in_teacher),
            )
    for i, d in enumerate(spec.defects):
        cls = DEFECTS.get(d.name)
        kind = cls.input_kind
        for sc in spec.scenarios:
            if d.scenarios is not None and sc.name not in d.scenarios:
                continue
            if cls.planted_in_teacher and sc.teacher.backdoor != d.name:
                continue  # audited only where the teacher plants it (checked above)
            data = sc.student.data if sc.student is not None else sc.teacher.data
            if _input_kind(data) != kind:
                other = _input_kind(data)
                raise loaded.error(
                    ("defects", i, "name"),
                    f"defect {d.name!r} takes {kind} inputs, but scenario {sc.name!r} holds "
                    f"{'images' if other == 'image' else 'text'} ({data})",
                    fix=f"use one of: {', '.join(defects_for(other))}; or limit it with scenarios: [...]",
                )


#: Checks of optional spec sections that live with their feature (``select``: :mod:`.select`), run by
#: :func:`check_registries` when the section is given. The feature's module adds its check when it is
#: imported (``safereuse.runner`` imports them all), so this loader imports none of them: no circle.
SECTION_CHECKS: dict[str, Callable[[LoadedSpec], None]] = {}


def check_experiment(loaded: LoadedSpec) -> None:
    """Spec check of ``experiment:``: the kind is registered, its parameters are valid, and the grid
    keys (methods, defects, select, students) are absent.

    Raises:
        SafeReuseError: naming the key and its line.
    """
    spec = loaded.spec
    exp = spec.experiment
    assert exp is not None
    for key in ("methods", "defects", "select"):
        if getattr(spec, key):
            raise loaded.error(
                (key,), f"an experiment spec has no {key}", fix=f"remove {key}: or experiment:"
            )
    for i, sc in enumerate(spec.scenarios):
        if sc.student is not None:
            raise loaded.error(
                ("scenarios", i, "student"), "an experiment uses the teacher's own data; it has no student",
                fix="remove student:",
            )  # fmt: skip
    if not EXPERIMENTS.names():
        raise loaded.error(
            ("experiment", "kind"), f"unknown experiment kind {exp.kind!r}: none is registered",
            fix="import the package that defines it first (NNSlicer's slice-* kinds: safereuse.applications)",
        )  # fmt: skip
    try:
        EXPERIMENTS.create(exp.kind, **exp.params)
    except SafeReuseError as exc:
        raise loaded.error(("experiment",), exc.problem, exc.fix) from None


def _check_adversarial(loaded: LoadedSpec, loc: tuple[Any, ...], t: TeacherCfg) -> None:
    """``adversarial_params`` as :func:`safereuse.api.train_teacher` takes them; ``fdm_k`` against
    the architecture's blocks."""
    if not t.adversarial:
        if t.adversarial_params:
            raise loaded.error(
                loc + ("adversarial_params",),
                "adversarial_params without adversarial training",
                fix="add adversarial: true or remove adversarial_params",
            )
        return
    if t.backdoor is not None:
        raise loaded.error(
            loc + ("adversarial",),
            "adversarial training and a planted backdoor cannot be combined",
            fix="train either a robust teacher or a backdoored one",
        )
    t.adversarial_params = _check_params(
        loaded, loc + ("adversarial_params",), AdversarialTraining, t.adversarial_params,
        "adversarial training", forbidden={"seed"},
    )  # fmt: skip
    at = _instantiate(loaded, loc + ("adversarial_params",), AdversarialTraining, t.adversarial_params)
    if at.fdm_k is not None:
        try:  # the block count does not depend on the head size or the input
            fdm_site(create_model(t.arch, num_classes=2, **t.arch_kwargs), at.fdm_k)
        except SafeReuseError as exc:
            raise loaded.error(loc + ("adversarial_params", "fdm_k"), exc.problem, exc.fix) from None


def _registry_error(
    loaded: LoadedSpec, loc: tuple[Any, ...], reg: Any, name: str, extra: str = ""
) -> SafeReuseError:
    try:
        reg.get(name)
    except SafeReuseError as exc:
        fix = exc.fix or ""
        if extra:
            fix += f"; or `{extra}` for every one"
        return loaded.error(loc, exc.problem, fix)
    return loaded.error(loc, f"{name!r} is not valid here")  # pragma: no cover


def _instantiate(loaded: LoadedSpec, loc: tuple[Any, ...], cls: Any, params: dict[str, Any]) -> Any:
    try:
        return cls(**params)
    except SafeReuseError as exc:
        raise loaded.error(loc, exc.problem, exc.fix) from None
    except (TypeError, ValueError) as exc:
        raise loaded.error(loc, f"{type(exc).__name__}: {exc}") from None


# -- expansion -------------------------------------------------------------------------------------
def _data_dict(part: DataCfg, seed: int, holdout: int = 0) -> dict[str, Any]:
    return DataSpec(
        part.data,
        classes=parse_classes(part.classes),
        train_size=part.train_size,
        per_class=part.per_class,
        val_fraction=part.val_fraction,
        seed=seed,
        holdout=holdout,
        max_len=part.max_len,
    ).to_dict()


def teacher_recipe(t: TeacherCfg, cell_seed: int) -> dict[str, Any]:
    """The resolved teacher recipe (what :func:`safereuse.api.train_teacher` gets); its fit is
    :func:`safereuse.config.teacher_fit`'s, as on the CLI and in Python."""
    seed = cell_seed if t.seed is None else t.seed
    fit = teacher_fit(t.arch, {**t.fit, **({} if t.epochs is None else {"epochs": t.epochs})})
    recipe = {
        "arch": t.arch,
        "arch_kwargs": dict(t.arch_kwargs),
        "data": _data_dict(t, seed),
        "fit": fit,
        "backdoor": t.backdoor,
        "backdoor_params": dict(t.backdoor_params) if t.backdoor else None,
        "seed": seed,
    }
    if t.adversarial:  # only then: natural teachers keep their cache keys
        # resolved (defaults included), so a changed default is a new teacher
        resolved = AdversarialTraining(**t.adversarial_params).config()
        recipe["adversarial"] = True
        recipe["adversarial_params"] = {k: v for k, v in resolved.items() if k != "seed"}
    return recipe


def teacher_key(recipe: dict[str, Any]) -> str:
    """Content key of a teacher recipe (its cache directory name)."""
    return config_hash({"teacher": recipe, "v": CELL_VERSION}, 16)


def _method_points(loaded: LoadedSpec) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """``(name, given params, resolved config)`` for every method parameter point, in spec order."""
    return [p[:3] for p in _scoped_method_points(loaded)]


def _scoped_method_points(
    loaded: LoadedSpec,
) -> list[tuple[str, dict[str, Any], dict[str, Any], set[str] | None]]:
    """:func:`_method_points` plus the scenarios each point runs on (None: all)."""
    out: list[tuple[str, dict[str, Any], dict[str, Any], set[str] | None]] = []
    seen: dict[str, int] = {}
    archs = sorted({sc.teacher.arch for sc in loaded.spec.scenarios})
    for i, m in enumerate(loaded.spec.methods):
        loc = ("methods", i)
        scope = _scope(loaded, loc, m.scenarios)
        names = [e.name for e in METHODS if e.name not in m.exclude] if m.name == "all" else [m.name]
        if m.name == "all":
            takers = [accepted_params(METHODS.get(n)) for n in names]
            for key in m.params:
                if not any(t is None or key in t for t in takers):
                    raise loaded.error(
                        loc + ("params", key),
                        f"no transfer method has a parameter {key!r}",
                        fix="check the spelling (e.g. epochs, lr, batch_size)",
                    )
        for name in names:
            cls = METHODS.get(name)
            params = m.params
            if m.name == "all":
                ok = accepted_params(cls)
                params = {k: v for k, v in params.items() if ok is None or k in ok}
            for point in _sweep_points(loaded, loc + ("params",), cls, params):
                point = _check_params(loaded, loc + ("params",), cls, point, f"method {name!r}")
                obj = _instantiate(loaded, loc + ("name",), cls, point)
                resolved = obj.config() if hasattr(obj, "config") else dict(point)
                # the same point on every teacher architecture of the spec (its student defaults)
                key = config_hash([name, resolved, [arch_config(name, point, resolved, a) for a in archs]])
                if key in seen:  # "all" plus an explicit entry: one cell, not two; on both's scenarios
                    j = seen[key]
                    old = out[j][3]
                    out[j] = (*out[j][:3], None if old is None or scope is None else old | scope)
                    continue
                seen[key] = len(out)
                out.append((name, point, _jsonable(resolved), scope))
    return out


def arch_config(name: str, given: dict[str, Any], resolved: dict[str, Any], arch: str) -> dict[str, Any]:
    """A method point's resolved config on a teacher of ``arch``: the method's defaults < the
    architecture's student defaults < ``given`` (:func:`safereuse.config.student_params`, as
    :func:`safereuse.api.transfer` resolves them).

    Args:
        name: the method's registry name.
        given: the point's parameters as the spec gives them.
        resolved: the method's config under ``given`` alone (returned as it is when ``arch`` has no
            student defaults: every image model).
        arch: the teacher's architecture.

    Returns:
        The config the student is trained with (JSON values).

    Example:
        >>> from safereuse.methods import ReMoS
        >>> arch_config("remos", {}, ReMoS().config(), "resnet8")["ratio"]
        0.2
        >>> arch_config("remos", {}, ReMoS().config(), "minilm")["ratio"]
        0.1
    """
    if not arch_student_fit(arch, name):
        return resolved  # image models: exactly the method's defaults
    cls = METHODS.get(name)
    return _jsonable(cls(**student_params(arch, name, given, cls)).config())


def _label_config(
    loaded: LoadedSpec, name: str, given: dict[str, Any], resolved: dict[str, Any], scope: set[str] | None
) -> dict[str, Any]:
    """A point's config as its label shows it: :func:`arch_config` on the teachers of its scenarios
    (a key whose value differs between those architectures shows them all, ``0.01/3e-05``)."""
    archs = sorted({sc.teacher.arch for sc in loaded.spec.scenarios if scope is None or sc.name in scope})
    cfgs = [arch_config(name, given, resolved, a) for a in archs] or [resolved]
    same = {k for k in cfgs[0] if all(c.get(k) == cfgs[0][k] for c in cfgs)}
    return {k: cfgs[0][k] if k in same else "/".join(_short(c.get(k)) for c in cfgs) for k in cfgs[0]}


def _scope(loaded: LoadedSpec, loc: tuple[Any, ...], scenarios: list[str] | None) -> set[str] | None:
    """The scenarios a method or defect entry is limited to (None: all); an unknown name is an error."""
    names_sc = [sc.name for sc in loaded.spec.scenarios]
    for j, sc_name in enumerate(scenarios or []):
        if sc_name not in names_sc:
            raise loaded.error(
                loc + ("scenarios", j),
                f"no scenario is named {sc_name!r}",
                fix=f"use one of: {', '.join(names_sc)}",
            )
    return set(scenarios) if scenarios is not None else None


def _defect_points(
    loaded: LoadedSpec, cell_seed: int | None
) -> list[tuple[str, dict[str, Any], bool, set[str] | None]]:
    """``(name, resolved params, planted in the teacher, scenarios audited (None: all))`` for every
    defect point; ``seed`` is filled in."""
    audit_seed = cell_seed if loaded.spec.audit.seed == "cell" else loaded.spec.audit.seed
    out = []
    for i, d in enumerate(loaded.spec.defects):
        loc = ("defects", i)
        scope = _scope(loaded, loc, d.scenarios)
        cls = DEFECTS.get(d.name)
        for point in _sweep_points(loaded, loc + ("params",), cls, d.params):
            point = _check_params(loaded, loc + ("params",), cls, point, f"defect {d.name!r}")
            if is_dataclass(cls) and "seed" in {f.name for f in fields(cls)} and "seed" not in point:
                point["seed"] = audit_seed
            obj = _instantiate(loaded, loc + ("name",), cls, point)
            params = (
                {k: v for k, v in obj.config().items() if k != "defect"} if hasattr(obj, "config") else point
            )
            out.append((d.name, _jsonable(params), cls.planted_in_teacher, scope))
    return out


def _jsonable(obj: Any) -> Any:
    text = json.dumps(obj, sort_keys=True, default=json_default)
    return json.loads(text, parse_constant=lambda c: {"NaN": math.nan}.get(c, c))


def method_labels(
    points: list[tuple[str, dict[str, Any], dict[str, Any]]], scopes: list[set[str] | None] | None = None
) -> list[str]:
    """Report names of method points: the bare name, plus the parameters that tell apart the
    points of the same method (``finetune(lr=0.01)``, ``finetune(lr=0.1)``). With ``scopes`` (the
    scenarios of each point, None: all), only points that share a scenario need telling apart.

    Example:
        >>> pts = [("finetune", {"lr": 0.01, "epochs": 5}, {}),
        ...        ("finetune", {"lr": 0.1, "epochs": 5}, {}), ("retrain", {"epochs": 5}, {})]
        >>> method_labels(pts), method_labels(pts, [{"a"}, {"b"}, None])
        (['finetune(lr=0.01)', 'finetune(lr=0.1)', 'retrain'], ['finetune', 'finetune', 'retrain'])
    """
    scopes = scopes or [None] * len(points)
    out = []
    for (name, given, resolved), scope in zip(points, scopes, strict=True):
        same = [
            (g, r)
            for (n, g, r), sc in zip(points, scopes, strict=True)
            if n == name and (scope is None or sc is None or bool(scope & sc))
        ]
        if len(same) == 1:
            out.append(name)
            continue
        keys = sorted({k for g, _ in same for k in g} | {k for _, r in same for k in r})
        varying = [k for k in keys if len({_short(r.get(k, g.get(k))) for g, r in same}) > 1]
        parts = [f"{k}={_short(resolved.get(k, given.get(k)))}" for k in varying]
        out.append(f"{name}({','.join(parts)})")
    return out


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v).replace(" ", "")


def expand(loaded: LoadedSpec) -> list[Cell]:
    """All cells of the spec, in order: seed-major, then method point, then scenario.

    Scenarios vary fastest so that parallel workers start on different teachers' crafted sets.

    Each cell's ``config`` is::

        {"v", "scenario", "seed",
         "teacher": teacher_recipe(...),
         "student": {"data": DataSpec dict with seed = cell seed},
         "method": {"name", "params" (as given), "config" (resolved, defaults included: the
                    method's, under the teacher architecture's student defaults: arch_config)},
         "defects": [{"name", "params" (resolved)}, ...],     # backdoors only where the teacher has one
         "audit": {"max_samples", "batch_size"}}

    and its id is the hash of that config: the same spec always gives the same ids, and a changed
    setting gives new ones.
    """
    spec = loaded.spec
    if spec.experiment is not None:
        return expand_experiment(loaded)
    scoped = _scoped_method_points(loaded)
    # labelled by what runs: the configs on the teachers of each point's scenarios
    methods = [(n, g, _label_config(loaded, n, g, r, sc)) for n, g, r, sc in scoped]
    labels = method_labels(methods, [p[3] for p in scoped])
    # with a select: section every student trains on the pool minus the holdout, in both phases
    holdout = spec.select.holdout if spec.select is not None else 0
    cells: list[Cell] = []
    for seed in spec.seeds:
        defects = _defect_points(loaded, seed)
        for (name, given, resolved, scope), label in zip(scoped, labels, strict=True):
            for sc in spec.scenarios:
                if scope is not None and sc.name not in scope:
                    continue
                bd = sc.teacher.backdoor
                cell_defects = [
                    {"name": n, "params": p}
                    for n, p, planted, d_scope in defects
                    if (not planted or n == bd) and (d_scope is None or sc.name in d_scope)
                ]
                config = {
                    "v": CELL_VERSION,
                    "scenario": sc.name,
                    "seed": seed,
                    "teacher": teacher_recipe(sc.teacher, seed),
                    "student": {"data": _data_dict(sc.student, seed, holdout)},
                    "method": {
                        "name": name,
                        "params": _jsonable(given),
                        "config": arch_config(name, given, resolved, sc.teacher.arch),
                    },
                    "defects": cell_defects,
                    "audit": {"max_samples": spec.audit.max_samples, "batch_size": spec.audit.batch_size},
                }
                config = _jsonable(config)
                cells.append(Cell(config_hash(config, 12), config, len(cells), label))
    ids = [c.id for c in cells]
    if len(set(ids)) != len(ids):  # pragma: no cover - only if two scenarios are identical incl. name
        raise SafeReuseError("two cells of the spec are identical", fix="remove the duplicate entry")
    return cells


def expand_experiment(loaded: LoadedSpec) -> list[Cell]:
    """The cells of an experiment spec: one per seed × scenario (task ``experiment``), the kind's
    resolved parameters (its dataclass fields) in the config. A kind with a ``split()`` method (it
    returns ``[(label, params), ...]``, parts of its parameters) gets one cell per part as well, so an
    interrupted run redoes at most one part."""
    spec = loaded.spec
    assert spec.experiment is not None
    kind, params = spec.experiment.kind, dict(spec.experiment.params)
    exp = EXPERIMENTS.create(kind, **params)
    split = getattr(exp, "split", None)
    parts = [(kind, params, exp)]
    if callable(split):
        parts = [(label, part, EXPERIMENTS.create(kind, **part)) for label, part in split()]
    cells = []
    for seed in spec.seeds:
        for sc in spec.scenarios:
            for label, part, one in parts:
                config = json.loads(json.dumps({
                    "v": CELL_VERSION, "task": "experiment", "scenario": sc.name, "seed": seed,
                    "teacher": teacher_recipe(sc.teacher, seed),
                    "method": {"name": kind, "params": part, "config": asdict(one)},
                    "defects": [], "audit": {},
                }, default=json_default))  # fmt: skip
                cells.append(Cell(config_hash(config, 12), config, len(cells), label))
    return cells


__all__ = [
    "SECTION_CHECKS",
    "AuditCfg",
    "Cell",
    "DefectCfg",
    "ExperimentCfg",
    "LoadedSpec",
    "MethodCfg",
    "ScenarioCfg",
    "SelectCfg",
    "Spec",
    "StudentCfg",
    "TeacherCfg",
    "arch_config",
    "bundled_spec",
    "check_experiment",
    "check_registries",
    "expand",
    "expand_experiment",
    "load_spec",
    "method_labels",
    "teacher_key",
    "teacher_recipe",
]
