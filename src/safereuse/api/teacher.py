"""Train a teacher (optionally with a planted backdoor, or adversarially) and save it."""

from __future__ import annotations

import inspect
import shutil
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from .. import train
from ..artifacts import Manifest, save_model
from ..config import DEFAULT_TEACHER_ARCH, DEFAULT_TEACHER_DATA, teacher_fit
from ..data import DataSpec, load_data
from ..defects import DEFECTS
from ..device import resolve_device
from ..errors import SafeReuseError
from ..methods import check_input_fits
from ..models import MODELS, create_model
from ..objectives import AdversarialTraining, robust_accuracy_on
from ..params import unknown_param_error, validate_params
from ..registry import check_kwargs
from ..train import FitConfig
from ..utils import seed_everything
from ._common import check_out, partial_dir, test_split_metrics


def _adversarial_training(
    adversarial: bool, params: dict[str, Any] | None, backdoor: str | None, seed: int
) -> AdversarialTraining | None:
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
    checked = validate_params(
        AdversarialTraining, dict(params or {}), "adversarial training", forbidden={"seed"}
    )
    return AdversarialTraining(**checked, seed=seed)


def split_teacher_params(arch: str, params: dict[str, Any], backdoor: str | None = None) -> dict[str, Any]:
    """Route one flat ``key → value`` set (the CLI's ``--param``) to :func:`train_teacher`'s arguments.

    A key goes to the first that takes it: adversarial training (:class:`AdversarialTraining`),
    training (:class:`FitConfig`), the architecture's factory, else the backdoor.

    Args:
        arch: the teacher's architecture (a model registry name).
        params: the flat parameters.
        backdoor: the backdoor planted, if any (without one, a key nobody takes is an error).

    Returns:
        ``{"fit_params", "arch_kwargs", "backdoor_params", "adversarial_params"}``.

    Raises:
        SafeReuseError: a key that nothing takes (with the accepted keys).

    Example:
        >>> r = split_teacher_params("resnet8", {"lr": 0.05, "width": 8, "at_eps": 0.1})
        >>> r["fit_params"], r["arch_kwargs"], r["adversarial_params"]
        ({'lr': 0.05}, {'width': 8}, {'at_eps': 0.1})
    """
    params = dict(params)
    at_keys = {f.name for f in fields(AdversarialTraining)} - {"seed"}
    at_params = {k: params.pop(k) for k in list(params) if k in at_keys}
    fit_keys = {f.name for f in fields(FitConfig)} - {"seed", "device", "progress"}
    fit_params = {k: v for k, v in params.items() if k in fit_keys}
    rest = {k: v for k, v in params.items() if k not in fit_keys}
    arch_sig = inspect.signature(MODELS.get(arch)).parameters
    arch_kwargs = {k: v for k, v in rest.items() if k in arch_sig}
    bd_params = {k: v for k, v in rest.items() if k not in arch_sig}
    if bd_params and not backdoor:
        takes = fit_keys | at_keys | set(arch_sig) - {"num_classes", "in_channels", "image_size"}
        raise unknown_param_error("teacher training", sorted(bd_params)[0], takes)
    return {
        "fit_params": fit_params,
        "arch_kwargs": arch_kwargs,
        "backdoor_params": bd_params,
        "adversarial_params": at_params,
    }


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

    Every name and parameter (architecture, fit, adversarial training, backdoor) is checked before
    the data is loaded.

    Args:
        arch: model registry name.
        data: the teacher's dataset slice.
        out: artifact directory to create.
        arch_kwargs: architecture options (e.g. ``{"width": 16}``).
        fit_params: overrides of :data:`~safereuse.config.TEACHER_FIT` and the architecture's own
            defaults (any :class:`FitConfig` field; :func:`safereuse.config.teacher_fit`).
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

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "t"
        >>> m = train_teacher("smallcnn", DataSpec("digits", classes=[0, 1]), out=out,
        ...                   fit_params={"epochs": 1}, progress=False)
        >>> m["role"], m["parent"], m["metrics"]["n_test"] > 0
        ('teacher', None, True)
    """
    out = check_out(out, overwrite)
    # an architecture may bring its own (minilm: AdamW at a small lr, like any pretrained transformer)
    params = teacher_fit(arch, fit_params)  # global < architecture < user defaults (config.py)
    check_kwargs(FitConfig, params, "teacher training")
    cfg = FitConfig(**params, seed=seed, device=device, progress=progress)
    at = _adversarial_training(adversarial, adversarial_params, backdoor, seed)
    if backdoor:  # name and parameters checked before the data loads; built after seeding, below
        if not DEFECTS.get(backdoor).planted_in_teacher:
            raise SafeReuseError(f"{backdoor!r} is not a backdoor", fix="run `safereuse list defects`")
        DEFECTS.create(backdoor, **(backdoor_params or {}))
    bundle = load_data(data)
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
    partial = partial_dir(out, recipe)
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
        defect = DEFECTS.create(backdoor, **(backdoor_params or {}))
        defect.check_input_kind(bundle.train.x)
        planted = defect.plant(model, bundle, cfg, checkpoint_dir=partial)
        result, extras, record = planted.fit, planted.extras, planted.record
    else:
        loss_fn = at.loss_fn(model) if at is not None else None
        result = train.fit(model, bundle.train, bundle.val, cfg, loss_fn=loss_fn, checkpoint_dir=partial)
    manifest = Manifest(
        "teacher",
        data=bundle.spec.to_dict(),
        class_names=bundle.class_names,
        seed=seed,
        method={"name": "train", "config": cfg.to_dict()},
        fit_result=result.to_dict() if result is not None else None,
        backdoor=record,
    )
    if record and record.get("published_classes") is not None:
        # A latent backdoor removes its target class from the published head.
        pub = record["published_classes"]
        names = dict(zip(bundle.spec.classes or range(bundle.num_classes), bundle.class_names, strict=False))
        manifest.class_names = [names[c] for c in pub]
        manifest.data = {**(manifest.data or {}), "classes": pub}
        manifest.metrics = {"test_acc_before_publish": record.get("clean_acc")}
        eval_bundle = load_data(replace(data, classes=pub))
        manifest.metrics.update(test_split_metrics(model, eval_bundle))
    else:
        manifest.metrics = {"val_acc": result.best_val_acc, **test_split_metrics(model, bundle)}
    if at is not None:
        manifest.extra["adversarial"] = at.record(model)
        manifest.metrics["test_rob"] = robust_accuracy_on(model, bundle.test, eps=at.at_eps, seed=seed)
    written = save_model(model, out, manifest, extras or None, overwrite=overwrite)
    shutil.rmtree(partial, ignore_errors=True)
    return written
