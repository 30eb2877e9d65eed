"""The Python API behind every CLI command: train a teacher, transfer, evaluate, audit.

Each function takes plain values (names, dicts, paths), writes an artifact atomically and returns its
manifest (:func:`audit` returns its report), so the CLI, the experiment runner and user scripts all do
the same thing. :func:`audit` also takes models built in Python (the model contract), not only saved
artifacts.

Example:
    >>> import tempfile, pathlib
    >>> from safereuse.data import DataSpec
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> t = train_teacher("smallcnn", DataSpec("digits", classes=[0, 1, 2]), out=tmp / "t",
    ...                   fit_params={"epochs": 1}, progress=False)
    >>> s = transfer(tmp / "t", DataSpec("digits", classes=[3, 4], train_size=20), "finetune",
    ...              {"epochs": 1}, out=tmp / "s", progress=False)
    >>> sorted(evaluate(tmp / "s"))[:2]
    ['acc', 'ci']
    >>> rep = audit(tmp / "t", tmp / "s", defects=["fgsm"], max_samples=8, device="cpu")
    >>> [(r.defect, r.crafted_on) for r in rep.rows]
    [('fgsm', 'student')]
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .artifacts import Artifact, load_model, save_model
from .data import DataBundle, DataSpec, load_data
from .device import resolve_device
from .errors import SafeReuseError
from .methods import METHODS, check_input_fits
from .metrics import wilson_interval
from .models import MODELS, ReusableModel, create_model
from .registry import check_kwargs
from .train import FitConfig, accuracy_on, predict
from .utils import config_hash, seed_everything

if TYPE_CHECKING:
    from .defects import AuditReport, Backdoor, Defect, PlantResult

#: Teacher training defaults: reach ≥ 90 % on Fashion-MNIST with the default resnet8 in minutes on CPU.
TEACHER_FIT = {
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

DEFAULT_TEACHER_ARCH = "resnet8"
DEFAULT_TEACHER_DATA = DataSpec("fashion-mnist", classes=[0, 1, 2, 3, 4])


def _data_manifest(data: DataBundle) -> dict[str, Any]:
    return {"data": data.spec.to_dict(), "class_names": data.class_names}


def _partial_dir(out: Path, recipe: dict[str, Any]) -> Path:
    """Where interrupted training keeps its state; keyed by the whole recipe so reruns resume."""
    return out.parent / f".{out.name}.{config_hash(recipe, 10)}.partial"


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise SafeReuseError(f"output directory {out} already exists", fix="choose a new --out or delete it")


def _test_split_metrics(model, data: DataBundle) -> dict[str, Any]:
    acc = accuracy_on(model, data.test)
    n = len(data.test)
    return {"test_acc": acc, "n_test": n, "test_acc_ci": list(wilson_interval(round(acc * n), n))}


def _adversarial_training(
    adversarial: bool, params: dict[str, Any] | None, backdoor: str | None, seed: int
) -> Any:
    """The :class:`~safereuse.objectives.AdversarialTraining` of a teacher recipe, or None."""
    if not adversarial:
        if params:
            raise SafeReuseError(
                f"adversarial training parameters ({', '.join(sorted(params))}) without adversarial training",
                fix="add --adversarial (YAML: adversarial: true) or drop them",
            )
        return None
    if backdoor:
        raise SafeReuseError(
            "adversarial training and a planted backdoor cannot be combined",
            fix="train either a robust teacher or a backdoored one",
        )
    from .objectives import AdversarialTraining
    from .params import validate_params

    checked = validate_params(
        AdversarialTraining, dict(params or {}), "adversarial training", forbidden={"seed"}
    )
    return AdversarialTraining(**checked, seed=seed)


def train_teacher(
    arch: str = DEFAULT_TEACHER_ARCH,
    data: DataSpec = DEFAULT_TEACHER_DATA,
    *,
    out: str | Path,
    arch_kwargs: dict[str, Any] | None = None,
    fit_params: dict[str, Any] | None = None,
    backdoor: str | None = None,
    backdoor_params: dict[str, Any] | None = None,
    adversarial: bool = False,
    adversarial_params: dict[str, Any] | None = None,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train a teacher (optionally with a planted backdoor, or adversarially) and save it as an artifact.

    Args:
        arch: model registry name.
        data: the teacher's dataset slice.
        out: artifact directory to create.
        arch_kwargs: architecture options (e.g. ``{"width": 16}``).
        fit_params: overrides of :data:`TEACHER_FIT` (any :class:`FitConfig` field).
        backdoor: name of a backdoor defect to plant while training (e.g. ``badnets``).
        backdoor_params: its parameters.
        adversarial: train with Madry PGD adversarial training (CARTL's robust source model;
            :class:`~safereuse.objectives.AdversarialTraining`); the manifest records the budget
            under ``adversarial`` and the PGD-20 robust accuracy under ``metrics.test_rob``.
        adversarial_params: its parameters (``at_eps``, ``at_alpha``, ``at_steps``,
            ``at_random_start``, ``fdm_lambda``, ``fdm_k``).
        seed: seed of initialisation, data order, planting and attack random starts.
        device: ``auto``, ``cpu``, ``cuda``...
        progress: show progress bars.
        overwrite: replace an existing ``out``.

    Returns:
        The written manifest (with ``metrics.test_acc``).
    """
    out = Path(out)
    _check_out(out, overwrite)
    bundle = load_data(data)
    # an architecture may bring its own (minilm: AdamW at a small lr, like any pretrained transformer)
    params = {**TEACHER_FIT, **getattr(MODELS.get(arch), "teacher_fit", {}), **(fit_params or {})}
    check_kwargs(FitConfig, params, "teacher training")
    cfg = FitConfig(**params, seed=seed, device=device, progress=progress)
    at = _adversarial_training(adversarial, adversarial_params, backdoor, seed)
    recipe = {
        "arch": arch,
        "arch_kwargs": arch_kwargs,
        "data": data.to_dict(),
        "fit": cfg.to_dict(),
        "backdoor": backdoor,
        "backdoor_params": backdoor_params,
    }
    if at is not None:  # only then, so natural teachers keep their resume keys
        recipe["adversarial"] = at.config()
    partial = _partial_dir(out, recipe)
    seed_everything(seed)
    model = create_model(
        arch,
        num_classes=bundle.num_classes,
        in_channels=bundle.channels,
        image_size=bundle.image_size,
        **(arch_kwargs or {}),
    )
    check_input_fits(model, bundle)  # text data for an image architecture, or the reverse
    model.set_normalization(bundle.mean, bundle.std)
    model.to(resolve_device(device))
    if at is not None:
        at.check(model)  # fdm_k against the model's blocks, before any training
    extras: dict[str, Any] = {}
    record = None
    if backdoor:
        from .defects import DEFECTS

        if not DEFECTS.get(backdoor).planted_in_teacher:
            raise SafeReuseError(f"{backdoor!r} is not a backdoor", fix="run `safereuse list defects`")
        defect = DEFECTS.create(backdoor, **(backdoor_params or {}))
        defect.check_input_kind(bundle.train.x)
        planted = defect.plant(model, bundle, cfg, checkpoint_dir=partial)
        result, extras, record = planted.fit, planted.extras, planted.record
    else:
        from .train import fit

        loss_fn = at.loss_fn(model) if at is not None else None
        result = fit(model, bundle.train, bundle.val, cfg, loss_fn=loss_fn, checkpoint_dir=partial)
    manifest = {
        "role": "teacher",
        **_data_manifest(bundle),
        "seed": seed,
        "parent": None,
        "method": {"name": "train", "config": cfg.to_dict()},
        "fit_result": result.to_dict() if result is not None else None,
        "backdoor": record,
    }
    if record and record.get("published_classes") is not None:
        # A latent backdoor removes its target class from the published head.
        pub = record["published_classes"]
        names = dict(zip(bundle.spec.classes or range(bundle.num_classes), bundle.class_names, strict=False))
        manifest["class_names"] = [names[c] for c in pub]
        manifest["data"] = {**manifest["data"], "classes": pub}
        manifest["metrics"] = {"test_acc_before_publish": record.get("clean_acc")}
        eval_bundle = load_data(DataSpec(**{**data.__dict__, "classes": pub}))
        manifest["metrics"].update(_test_split_metrics(model, eval_bundle))
    else:
        manifest["metrics"] = {"val_acc": result.best_val_acc, **_test_split_metrics(model, bundle)}
    if at is not None:
        from .objectives import robust_accuracy_on

        manifest["adversarial"] = at.record(model)
        manifest["metrics"]["test_rob"] = robust_accuracy_on(model, bundle.test, eps=at.at_eps, seed=seed)
    written = save_model(model, out, manifest, extras or None, overwrite=overwrite)
    shutil.rmtree(partial, ignore_errors=True)
    return written


def transfer(
    teacher: str | Path | Artifact,
    data: DataSpec,
    method: str,
    params: dict[str, Any] | None = None,
    *,
    out: str | Path,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Produce a student from a teacher artifact with a registered transfer method.

    Args:
        teacher: the teacher's artifact directory (or a loaded :class:`Artifact`).
        data: the student's dataset slice.
        method: transfer method name (``safereuse list methods``).
        params: the method's hyper-parameters.
        out: artifact directory to create.
        seed: seed of the new head, re-initialisation and data order.
        device: ``auto``, ``cpu``, ``cuda``...
        progress: show progress bars.
        overwrite: replace an existing ``out``.

    Returns:
        The student's manifest.
    """
    out = Path(out)
    _check_out(out, overwrite)
    art = teacher if isinstance(teacher, Artifact) else load_model(teacher, device="cpu")
    method_obj = METHODS.create(method, **(params or {}))
    bundle = load_data(data)
    recipe = {"teacher": art.hash, "data": data.to_dict(), "method": method_obj.config(), "seed": seed}
    partial = _partial_dir(out, recipe)
    student = method_obj.transfer(
        art.model, bundle, seed=seed, device=device, progress=progress, checkpoint_dir=partial
    )
    manifest = {
        "role": "student",
        **_data_manifest(bundle),
        "seed": seed,
        "parent": {
            "hash": art.hash,
            "path": str(art.path),
            "arch": art.manifest.get("arch"),
            "data": art.manifest.get("data"),
            "backdoor": bool(art.manifest.get("backdoor")),
        },
        "method": {"name": method, "config": student.config},
        "fit_result": student.fit.to_dict() if student.fit is not None else None,
        "info": student.info,
        "metrics": {
            "val_acc": student.fit.best_val_acc if student.fit else None,
            **_test_split_metrics(student.model, bundle),
        },
    }
    written = save_model(student.model, out, manifest, student.extras or None, overwrite=overwrite)
    shutil.rmtree(partial, ignore_errors=True)
    return written


def _recorded_data(art: Artifact) -> DataSpec:
    """The data slice an artifact's manifest records (its task)."""
    d = dict(art.manifest.get("data") or {})
    if not d:
        raise SafeReuseError(f"{art.path} records no dataset", fix="pass --data")
    return DataSpec(**d)


def _class_ids(classes: list[int] | None, n: int) -> list[int]:
    """The original class ids of a data slice's labels ``0..n-1``."""
    return list(classes) if classes is not None else list(range(n))


def evaluate(
    model: str | Path | Artifact, data: DataSpec | None = None, batch_size: int = 512
) -> dict[str, Any]:
    """Clean test accuracy of a saved model.

    Args:
        model: artifact directory or loaded :class:`Artifact`.
        data: dataset slice (default: the one in the model's manifest).
        batch_size: evaluation batch size.

    Returns:
        ``{"acc", "n", "correct", "ci", "data"}`` with a 95 % Wilson interval.
    """
    art = model if isinstance(model, Artifact) else load_model(model)
    if data is None:
        data = _recorded_data(art)
    bundle = load_data(data)
    check_input_fits(art.model, bundle)
    x, y = bundle.test.x, bundle.test.y
    head = art.manifest.get("target_head") or {}
    if head.get("binary") and bundle.num_classes != art.model.num_classes:
        # A binary re-engineered model answers "target vs the others": rebuild that problem (its
        # "others" sample is drawn with a fixed seed, so it is the one the model was scored on).
        from .data.targets import target_problem

        ids = _class_ids(bundle.spec.classes, bundle.num_classes)
        missing = [c for c in head.get("target_classes", []) if c not in ids]
        if missing or not head.get("target_classes"):
            raise SafeReuseError(
                f"the data slice lacks the model's target class {missing[0] if missing else '?'}",
                fix="evaluate on the data the model was re-engineered from (the default)",
            )
        problem = target_problem(bundle, [ids.index(c) for c in head["target_classes"]], True)
        x, y = problem.test.x, problem.test.y
    elif bundle.num_classes != art.model.num_classes:
        raise SafeReuseError(
            f"the model has {art.model.num_classes} classes but the data slice has {bundle.num_classes}",
            fix="pass --classes matching the model's task",
        )
    pred = predict(art.model, x, batch_size).argmax(1)
    correct = int((pred == y).sum())
    n = len(y)
    return {
        "acc": correct / n if n else float("nan"),
        "n": n,
        "correct": correct,
        "ci": list(wilson_interval(correct, n)),
        "data": data.to_dict(),
        "model_hash": art.hash,
    }


def audit_defects(
    defects: Sequence[str | tuple[str, dict[str, Any]] | Defect] | None = None,
    params: dict[str, Any] | None = None,
    backdoor: str | None = None,
) -> list[tuple[str, dict[str, Any]] | Defect]:
    """The defects an audit runs, with their parameters: the default list and parameter routing.

    Args:
        defects: names, ``(name, params)`` pairs or :class:`~safereuse.defects.Defect` instances; None
            or empty: :data:`DEFAULT_DEFECTS` plus ``backdoor``.
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
    from .defects import DEFECTS, Defect

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
        defects: names, ``(name, params)`` pairs or Defect instances; None: :data:`DEFAULT_DEFECTS`
            plus the backdoor the teacher carries (:func:`audit_defects`).
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
    from .defects.audit import audit as run_audit
    from .defects.audit import audited

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
    bundle = data if isinstance(data, DataBundle) else load_data(data)
    planted = (t_meta.backdoor or {}).get("name")
    return run_audit(
        t_meta,
        s_meta,
        bundle,
        audit_defects(defects, params, str(planted) if planted else None),
        cache_dir=cache_dir,
        max_samples=max_samples,
        batch_size=batch_size,
        device=device,
        seed=seed,
    )


def import_model(
    weights: str | Path,
    arch: str | None = None,
    *,
    out: str | Path,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    in_channels: int | None = None,
    image_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    parent: str | Path | Artifact | None = None,
    data: DataSpec | None = None,
    evaluate: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Turn a checkpoint made elsewhere into an artifact: a teacher, or with ``parent`` a student.

    The weights are read without running code and mapped from torchvision's, RobustBench's, the
    robustness library's or safereuse's key layout (:mod:`safereuse.importing`). The manifest records
    the file's SHA-256, format and layout (``source``) and the input normalisation chosen. A student
    fine-tuned with the user's own code imports with ``parent`` (the teacher's artifact): its manifest
    then names the teacher as a transferred student's does, so :func:`audit` works on the pair.

    Args:
        weights: ``.safetensors`` or ``.pth`` / ``.pt`` / ``.bin`` (``torch.save`` of a state dict,
            possibly inside ``{"state_dict": ...}`` / ``{"model": ...}`` / ``{"net": ...}``).
        arch: zoo architecture (``safereuse list models``); default: the parent's.
        out: artifact directory to create.
        num_classes: outputs of the head (default: read from the head's weights).
        class_names: the class names, in label order (their count must fit the head).
        in_channels: input channels (default: read from the stem's weights).
        image_size: side of the square input (default: the parent's, else the architecture's).
        mean: per-channel input mean in ``[0, 1]`` pixels; with ``std``, overrides the checkpoint's
            and the defaults (the parent's, else the layout's: ImageNet statistics for torchvision's
            layouts, raw pixels for RobustBench's).
        std: per-channel input standard deviation.
        arch_kwargs: other architecture options (default: the parent's when the architecture is its).
        parent: the teacher's artifact directory (or loaded :class:`Artifact`): import a student.
        data: the model's task (dataset and classes); needed to audit or evaluate it.
        evaluate: with ``data``, measure the test accuracy (a wrong normalisation shows here).
        overwrite: replace an existing ``out``.

    Returns:
        The written manifest (``role`` teacher or student, ``source``, ``metrics``).

    Raises:
        SafeReuseError: an existing ``out``, an unreadable or unsafe file, keys or a class count that
            do not fit the architecture, data whose images or classes do not fit the model.

    Example:
        >>> import tempfile, pathlib, torch
        >>> tmp = pathlib.Path(tempfile.mkdtemp())
        >>> torch.save(create_model("smallcnn", num_classes=4).state_dict(), tmp / "w.pth")
        >>> m = import_model(tmp / "w.pth", "smallcnn", out=tmp / "t",
        ...                  data=DataSpec("digits", classes=[0, 1, 2, 3]))
        >>> m["role"], m["num_classes"], m["source"]["layout"], m["metrics"]["n_test"]
        ('teacher', 4, 'safereuse', 176)
    """
    from .importing import import_weights

    out = Path(out)
    _check_out(out, overwrite)
    p_art = None
    if parent is not None:
        p_art = parent if isinstance(parent, Artifact) else load_model(parent, device="cpu")
    if arch is None:
        if p_art is None:
            raise SafeReuseError("no architecture given", fix="pass --arch (see `safereuse list models`)")
        arch = str(p_art.manifest["arch"])
    base: dict[str, Any] = {}
    default_norm = None
    if p_art is not None:
        spec = p_art.model.input_spec
        base = {"image_size": spec.size[0]}
        if p_art.manifest.get("arch") == arch:
            base = {**dict(p_art.manifest.get("arch_kwargs") or {}), **base}
            base.pop("num_classes", None)
            base.pop("in_channels", None)  # read from the student's own stem
        default_norm = (spec.mean, spec.std)
    if data is not None:
        from .data import DATASETS

        if not data.name.startswith("imagefolder:"):
            DATASETS.get(data.name)  # an unknown name fails here, with its close match
    if class_names is not None:
        class_names = [str(c) for c in class_names]
        if num_classes is not None and num_classes != len(class_names):
            raise SafeReuseError(
                f"{num_classes} classes were given but the class names list {len(class_names)}",
                fix="give one of them, or make them agree",
            )
        num_classes = len(class_names)
    if data is not None and data.classes is not None:
        if num_classes is not None and num_classes != len(data.classes):
            raise SafeReuseError(
                f"--classes names {len(data.classes)} classes but {num_classes} were given",
                fix="make the class list and the class count agree",
            )
        num_classes = len(data.classes)
    kwargs = {**base, **(arch_kwargs or {})}
    image_size = image_size if image_size is not None else kwargs.pop("image_size", None)
    kwargs.pop("image_size", None)
    imported = import_weights(
        weights,
        arch,
        num_classes=num_classes,
        in_channels=in_channels,
        image_size=image_size,
        mean=mean,
        std=std,
        arch_kwargs=kwargs,
        default_normalization=default_norm,
        default_origin="parent",
    )
    model = imported.model
    metrics: dict[str, Any] = {}
    if data is not None and evaluate:
        bundle = load_data(data)
        check_input_fits(model, bundle)
        if bundle.num_classes != model.num_classes:
            raise SafeReuseError(
                f"{data.name} {data.classes or 'all classes'} has {bundle.num_classes} classes but the "
                f"model's head has {model.num_classes}",
                fix="pass --classes with the classes the model was trained on, in its label order",
            )
        class_names = class_names or bundle.class_names
        metrics = _test_split_metrics(model, bundle)
    parent_record = None
    if p_art is not None:
        parent_record = {
            "hash": p_art.hash,
            "path": str(p_art.path),
            "arch": p_art.manifest.get("arch"),
            "data": p_art.manifest.get("data"),
            "backdoor": bool(p_art.manifest.get("backdoor")),
        }
    manifest = {
        "role": "student" if p_art is not None else "teacher",
        "data": data.to_dict() if data is not None else None,
        "class_names": list(class_names) if class_names is not None else None,
        "seed": None,
        "parent": parent_record,
        "method": {"name": "import", "config": {"arch": arch, "arch_kwargs": model.info.kwargs}},
        "source": imported.source,
        "fit_result": None,
        "backdoor": None,
        "metrics": metrics,
    }
    return save_model(model, out, manifest, overwrite=overwrite)


def reengineer(
    model: str | Path | Artifact,
    target_classes: str | int | Sequence[int],
    *,
    out: str | Path,
    binary: bool = False,
    params: dict[str, Any] | None = None,
    data: DataSpec | None = None,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    overwrite: bool = False,
    threads: int = 2,
) -> dict[str, Any]:
    """Re-engineer a model for a target problem with SeaM and save it (direct reuse).

    SeaM (Qi et al., ICSE 2023) searches the weights the target problem needs
    (:class:`safereuse.methods.SeaM`), selecting on the problem's validation split. With
    ``granularity=channel`` the artifact is the materialised model (channels whose masks are all
    zero removed for real, :func:`safereuse.slicing.materialize.materialize`). The artifact holds the
    (masked or materialised) model, the masks (``seam.keep.<param>``) and the stacked head
    (``manifest["target_head"]``, :class:`safereuse.models.stacked.TargetHeadModel`).

    Args:
        model: the trained model's artifact directory (or a loaded :class:`Artifact`).
        target_classes: dataset class ids of the target problem (``"5-9"``, ``3``, ``[1, 4]``),
            among the classes the model was trained on.
        out: artifact directory to create.
        binary: one class against an equal-sized sample of the others.
        params: :class:`~safereuse.methods.SeaM` parameters (``lr_mask``, ``alpha``, ``epochs``,
            ``granularity``...).
        data: the data slice (default: the one the model was trained on, from its manifest).
        seed: seed of the head and the data order.
        device: ``auto``, ``cpu``, ``cuda``...
        progress: show progress bars.
        overwrite: replace an existing ``out``.
        threads: CPU threads of the latency measurement (both models, same run).

    Returns:
        The metrics (``acc_original``, ``acc_reengineered``, ``n``, ``weights_kept``,
        ``flops_original``, ``flops_reengineered``, ``latency_original_ms``,
        ``latency_reengineered_ms`` per batch size 1 and 64, ...) and ``out``; the manifest's
        ``metrics`` hold the same numbers. The multi-class score of the original model is argmax over
        all its classes, exact class only: it favours SeaM (``original_rule`` says which rule).
    """
    from .data import parse_classes
    from .data.targets import target_problem
    from .methods import SeaM
    from .metrics import latency_ms, sparse_flops
    from .models.stacked import TargetHeadModel
    from .params import validate_params
    from .slicing.materialize import materialize

    out = Path(out)
    _check_out(out, overwrite)
    method = SeaM(**validate_params(SeaM, dict(params or {}), "reengineer"))
    art = model if isinstance(model, Artifact) else load_model(model, device="cpu")
    if data is None:
        data = _recorded_data(art)
    wanted = parse_classes(target_classes)
    if not wanted:
        raise SafeReuseError("the target problem names no class", fix="pass e.g. --target-classes 3")
    ids = _class_ids(data.classes, art.model.num_classes)
    outside = [c for c in wanted if c not in ids]
    if outside:
        raise SafeReuseError(
            f"target class {outside[0]} is outside the model's classes ({', '.join(map(str, ids))})",
            fix="choose target classes the model was trained on",
        )
    bundle = load_data(data)
    check_input_fits(art.model, bundle)
    if bundle.num_classes != art.model.num_classes:
        raise SafeReuseError(
            f"the model has {art.model.num_classes} classes but the data slice has {bundle.num_classes}",
            fix="pass the data the model was trained on",
        )
    problem = target_problem(bundle, [ids.index(c) for c in wanted], binary, art.model.num_classes)
    recipe = {"model": art.hash, "data": data.to_dict(), "classes": wanted, "binary": binary,
              "seam": method.config(), "seed": seed}  # fmt: skip
    partial = _partial_dir(out, recipe)
    r = method.reengineer(
        art.model, problem, seed=seed, device=device, progress=progress, checkpoint_dir=partial
    )
    result = r.model.cpu().eval()
    example = problem.test.x[:1].cpu()
    if method.granularity == "channel":
        inner = materialize(result.inner, r.masks, example)
        head = result.target_head
        result = TargetHeadModel(inner, problem.num_classes)
        result.target_head.load_state_dict(head.state_dict())
        result.eval()
        pred = predict(result, problem.test.x).argmax(1)
        acc = float((pred == problem.test.y).float().mean())
    else:
        acc = r.acc_reengineered
    original = art.model.cpu().eval()
    flops_o = sparse_flops(original, example)
    flops_r = sparse_flops(result, example)
    lat_o = latency_ms(original, example, threads=threads)
    lat_r = latency_ms(result, example, threads=threads)
    metrics = {
        "acc_original": r.acc_original,
        "acc_reengineered": acc,
        "n": r.n,
        "weights_kept": r.weights_kept,
        "flops_original": flops_o,
        "flops_reengineered": flops_r,
        "latency_original_ms": {str(k): v for k, v in lat_o.items()},
        "latency_reengineered_ms": {str(k): v for k, v in lat_r.items()},
        "latency_threads": threads,
        "val_acc_original": r.val_acc_original,
        "val_acc_reengineered": r.val_acc,
        "selected_epoch": r.search.epoch,
        "original_rule": (
            "binary: correct iff (pred == target) == (label == target)"
            if binary
            else "multi-class: argmax over all the model's classes, exact class only (favours SeaM)"
        ),
    }
    extras = {f"seam.keep.{k}": v for k, v in r.masks.items()}
    extras.update(result.head_tensors())
    manifest = {
        "role": "reengineered",
        # a multi-class problem is the data slice of its classes (so `safereuse evaluate` scores it)
        "data": data.to_dict() if binary else {**data.to_dict(), "classes": wanted},
        "class_names": problem.class_names,
        "seed": seed,
        "parent": {"hash": art.hash, "path": str(art.path), "arch": art.manifest.get("arch"),
                   "data": art.manifest.get("data"), "backdoor": bool(art.manifest.get("backdoor"))},
        "method": {"name": "seam-reengineer", "config": method.config()},
        "target_head": {"num_classes": problem.num_classes, "kind": problem.problem_type,
                        "binary": binary, "target_classes": wanted, "head": "relu-linear"},
        "search": {"history": r.search.history, "seconds": r.search.seconds},
        "metrics": metrics,
    }  # fmt: skip
    save_model(result.inner, out, manifest, extras, overwrite=overwrite)
    shutil.rmtree(partial, ignore_errors=True)
    return {**metrics, "out": str(out), "target_classes": wanted, "binary": binary}


def slice_model(
    model: str | Path | Artifact,
    *,
    out: str | Path,
    data: DataSpec | None = None,
    split: str = "test",
    criterion: str | int | Sequence[int] = "predicted",
    theta: float = 0.3,
    reference: str = "mean",
    limit: int | None = None,
    batch_size: int = 256,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """NNSlicer's dynamic slice of a saved model on a data split (Zhang et al., FSE 2020).

    The neuron means are profiled on the data slice's training split; then every input of
    ``split`` is sliced and the contributions summed (:class:`safereuse.slicing.Slicer`).

    Args:
        model: the model's artifact directory (or a loaded :class:`Artifact`).
        out: the ``.safetensors`` file to write (its summary goes beside it as ``.json``).
        data: the data slice (default: the one the model was trained on).
        split: ``train``, ``val`` or ``test``: the inputs to slice.
        criterion: ``predicted``, ``penultimate``, an output neuron (label index) or a list of them.
        theta: θ ∈ [0, 1).
        reference: ``mean`` (Δ from the profiled mean) or ``zero``.
        limit: slice only the first ``limit`` inputs of the split.
        batch_size: inputs per batch.
        device: ``auto``, ``cpu``, ``cuda``...
        progress: show progress bars.

    Returns:
        The slice's :meth:`~safereuse.slicing.SliceResult.summary` plus ``out``, ``model`` and
        ``split``.
    """
    from .slicing import Slicer

    slicer = Slicer(theta=theta, reference=reference)  # type: ignore[arg-type]
    if split not in ("train", "val", "test"):
        raise SafeReuseError(f"unknown split {split!r}", fix="use train, val or test")
    art = model if isinstance(model, Artifact) else load_model(model, device="cpu")
    bundle = load_data(data if data is not None else _recorded_data(art))
    check_input_fits(art.model, bundle)
    x = getattr(bundle, split).x
    if limit is not None:
        x = x[:limit]
    net = art.model.to(resolve_device(device))
    slicer.profile(net, bundle.train.x, batch_size=batch_size, progress=progress)
    result = slicer.slice(net, x, criterion=criterion, batch_size=batch_size, progress=progress)
    path = result.save(out)
    return {**result.summary(), "out": str(path), "model": str(art.path), "split": split}
