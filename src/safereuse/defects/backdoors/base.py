"""The base of planted (causative) defects and the helpers the backdoors share.

Every trigger is a pair of pixel-space tensors ``trigger`` and ``mask`` (both ``[C, H, W]``) applied as
``x' = clamp((1 − mask)·x + mask·trigger, 0, 1)``. The pair is saved in the teacher's
``extras.safetensors`` under :data:`TRIGGER_KEY` / :data:`MASK_KEY` and the JSON record under
``manifest["backdoor"]``; :func:`backdoor_from_artifact` / :func:`backdoor_from_record` rebuild the
attack from them. One file per backdoor beside this one (``badnets.py``, ``blend.py``, ``latent.py``,
``weight_poison.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar

import torch
from pydantic import Field
from torch import nn

from ... import metrics
from ...data import DataBundle, Split
from ...device import model_device
from ...errors import SafeReuseError
from ...train import FitConfig, accuracy_on, fit, predict
from ..base import DEFECTS, Defect, PlantResult
from ..probe import AuditedModel, ProbeContext, ProbeResult

TRIGGER_KEY = "backdoor.trigger"
MASK_KEY = "backdoor.mask"
POSITIONS = ("bottom-right", "bottom-left", "top-left", "top-right", "center", "random")
PATTERNS = ("checkerboard", "white", "random")

__all__ = [
    "MASK_KEY",
    "PATTERNS",
    "POSITIONS",
    "TRIGGER_KEY",
    "Backdoor",
    "backdoor_from_artifact",
    "backdoor_from_record",
    "check_patch_params",
    "check_patch_trigger",
    "non_target",
    "patch_corner",
    "patch_pattern",
    "patch_trigger",
    "require",
    "success_rate",
    "task_classes",
]


# ---------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------
def require(ok: bool, problem: str, fix: str) -> None:
    """Raise ``SafeReuseError(problem, fix=fix)`` unless ``ok``."""
    if not ok:
        raise SafeReuseError(problem, fix=fix)


def task_classes(data: DataBundle) -> list[int]:
    """Original class ids of ``data``'s labels 0..k-1."""
    return list(data.spec.classes) if data.spec.classes is not None else list(range(data.num_classes))


def non_target(split: Split, target_label: int) -> torch.Tensor:
    """The images of ``split`` whose label is not ``target_label`` (where an ASR is measured)."""
    return split.x[split.y != target_label]


@torch.no_grad()
def success_rate(model: nn.Module, x: torch.Tensor, target_label: int, bd: Backdoor, batch: int) -> float:
    """Share of ``bd.apply(x)`` predicted as ``target_label`` (``x`` = non-target samples)."""
    if len(x) == 0:
        return float("nan")
    dev = model_device(model)
    hits = 0
    for i in range(0, len(x), batch):
        xt = bd.apply(x[i : i + batch].to(dev))
        hits += int((predict(model, xt, batch).argmax(1) == target_label).sum())
    return hits / len(x)


# ---------------------------------------------------------------------------------------------------
# base class
# ---------------------------------------------------------------------------------------------------
@dataclass
class Backdoor(Defect):
    """Base of the planted (causative) defects; subclasses are dataclasses of their parameters.

    A backdoor holds its trigger as two pixel-space tensors ``trigger`` and ``mask`` (``[C, H, W]``)
    and applies it as ``clamp((1 − mask)·x + mask·trigger, 0, 1)``. Fixed triggers (BadNets, Blend,
    weight poisoning) are built from the parameters on first use; the latent backdoor's trigger is
    optimised by :meth:`plant`.

    After :meth:`plant` (or :func:`backdoor_from_artifact`), ``target`` holds the resolved original
    class id and the trigger tensors are those the teacher was trained with.

    Probe (:meth:`probe`): the backdoor *as planted in the teacher* (its record and trigger tensors)
    is stamped on the audited images; DIR (backdoor form) on the student, ASR when the student's task
    has the target class, and the teacher reference on a same-task teacher.
    """

    kind: ClassVar[str] = "backdoor"
    planted_in_teacher: ClassVar[bool] = True

    target: Annotated[int, Field(ge=0)] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        self._trigger: torch.Tensor | None = None
        self._mask: torch.Tensor | None = None
        self._validate()

    # -- to override ----------------------------------------------------------------------------
    def _validate(self) -> None:
        """Raise :class:`SafeReuseError` for bad parameters."""

    def build_trigger(self, channels: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``(trigger, mask)`` pair for ``[channels, height, width]`` images (CPU, float32)."""
        raise NotImplementedError

    def plant(
        self,
        model: nn.Module,
        data: DataBundle,
        cfg: FitConfig,
        *,
        checkpoint_dir: str | Path | None = None,
    ) -> PlantResult:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- trigger --------------------------------------------------------------------------------
    @property
    def trigger(self) -> torch.Tensor | None:
        """The trigger image ``[C, H, W]`` (None until built or planted)."""
        return self._trigger

    @property
    def mask(self) -> torch.Tensor | None:
        """The blending mask ``[C, H, W]`` in ``[0, 1]`` (None until built or planted)."""
        return self._mask

    def set_trigger(self, trigger: torch.Tensor, mask: torch.Tensor) -> None:
        """Use ``trigger``/``mask`` (``[C, H, W]``, values in ``[0, 1]``) instead of building them."""
        trigger = torch.as_tensor(trigger).detach().float().cpu()
        mask = torch.as_tensor(mask).detach().float().cpu()
        require(
            trigger.dim() == 3 and trigger.shape == mask.shape,
            f"trigger {tuple(trigger.shape)} and mask {tuple(mask.shape)} must both be [C, H, W]",
            "re-plant the backdoor",
        )
        require(
            bool(((mask >= 0) & (mask <= 1)).all()) and bool(torch.isfinite(trigger).all()),
            "backdoor mask must lie in [0, 1] and the trigger must be finite",
            "re-plant the backdoor",
        )
        self._trigger, self._mask = trigger, mask

    def _ensure_trigger(self, shape: tuple[int, int, int]) -> None:
        if self._trigger is None:
            t, m = self.build_trigger(*shape)
            self.set_trigger(t, m)
        assert self._trigger is not None
        require(
            tuple(self._trigger.shape) == tuple(shape),
            f"the {self.name} trigger is for {tuple(self._trigger.shape)} images, got {tuple(shape)}",
            "apply it to images of the size the teacher was trained on",
        )

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Stamp the trigger on a batch.

        Args:
            x: images ``[N, C, H, W]`` (or one image ``[C, H, W]``) in ``[0, 1]`` pixel space.
            generator: randomness of triggers drawn per sample (e.g. text insertion positions); a
                fixed stamp like this one ignores it.

        Returns:
            ``clamp((1 − mask)·x + mask·trigger, 0, 1)`` on ``x``'s device and dtype; pixels where the
            mask is 0 are unchanged.
        """
        single = x.dim() == 3
        xb = x.unsqueeze(0) if single else x
        require(xb.dim() == 4, f"apply() needs [N, C, H, W] images, got {tuple(x.shape)}", "batch the images")
        self._ensure_trigger(tuple(xb.shape[1:]))  # type: ignore[arg-type]
        assert self._trigger is not None and self._mask is not None
        t = self._trigger.to(device=xb.device, dtype=xb.dtype)
        m = self._mask.to(device=xb.device, dtype=xb.dtype)
        out = (xb * (1 - m) + m * t).clamp(0.0, 1.0)
        return out[0] if single else out

    # -- planting helpers -------------------------------------------------------------------------
    def resolve_target(self, data: DataBundle) -> tuple[int, int]:
        """``(original class id, label index in data)`` of the target; default: the first class."""
        classes = task_classes(data)
        target = classes[0] if self.target is None else int(self.target)
        require(
            target in classes,
            f"backdoor target class {target} is not in the teacher's task (classes {classes})",
            "choose a target among the training classes (the latent backdoor removes it afterwards)",
        )
        return target, classes.index(target)

    def _poison(
        self, x: torch.Tensor, y: torch.Tensor, rate: float, target_label: int, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Trigger ``round(rate·N)`` random samples of the batch (at least one) and relabel them."""
        n = len(y)
        k = min(n, max(1, round(rate * n)))
        idx = torch.randperm(n, generator=gen)[:k].to(x.device)
        x, y = x.clone(), y.clone()
        x[idx] = self.apply(x[idx], gen)
        y[idx] = target_label
        return x, y

    def _record(self, target: int, target_label: int | None, **fields: Any) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "config": self.config(),
            "target": target,
            "target_label": target_label,
            **fields,
        }

    def extras(self) -> dict[str, torch.Tensor]:
        """The trigger tensors to save in the teacher's ``extras.safetensors``."""
        require(
            self._trigger is not None and self._mask is not None,
            f"the {self.name} trigger does not exist yet",
            "call plant() (or apply() once, for a fixed trigger) first",
        )
        assert self._trigger is not None and self._mask is not None
        return {TRIGGER_KEY: self._trigger.clone(), MASK_KEY: self._mask.clone()}

    def _plant_poisoned(
        self,
        model: nn.Module,
        data: DataBundle,
        cfg: FitConfig,
        rate: float,
        checkpoint_dir: str | Path | None,
        loss_factory: Callable[[int, torch.Generator], Any] | None = None,
        extra_record: Callable[[], dict[str, Any]] | None = None,
    ) -> PlantResult:
        """Shared plant of the fixed-trigger attacks: poison batches (or the loss) inside ``fit``.

        Checkpoints are selected on the *clean* validation split, so ``fit.best_val_acc`` means what it
        means for any teacher; the backdoor's strength is ``record["teacher_asr"]``.
        """
        target, tl = self.resolve_target(data)
        self.target = target
        self._ensure_trigger(tuple(data.train.x.shape[1:]))  # type: ignore[arg-type]
        gen = torch.Generator().manual_seed(self.seed)
        if loss_factory is None:

            def transform(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                return self._poison(x, y, rate, tl, gen)

            res = fit(
                model,
                data.train,
                data.val,
                cfg,
                batch_transform=transform,
                checkpoint_dir=checkpoint_dir,
            )
        else:
            res = fit(
                model,
                data.train,
                data.val,
                cfg,
                loss_fn=loss_factory(tl, gen),
                checkpoint_dir=checkpoint_dir,
            )
        xs = non_target(data.test, tl)
        record = self._record(
            target,
            tl,
            teacher_asr=success_rate(model, xs, tl, self, cfg.eval_batch_size),
            asr_samples=len(xs),
            clean_acc=accuracy_on(model, data.test, cfg.eval_batch_size),
            clean_samples=len(data.test),
            classes=task_classes(data),
            **(extra_record() if extra_record else {}),
        )
        return PlantResult(extras=self.extras(), record=record, fit=res)

    # -- probing a student ----------------------------------------------------------------------
    def check_models(self, teacher: AuditedModel, student: AuditedModel) -> None:
        """The teacher must carry this backdoor (its plant record names it).

        Raises:
            SafeReuseError: the teacher has no planted backdoor, or another one.
        """
        record = teacher.backdoor
        if not record:
            raise SafeReuseError(
                f"teacher {teacher.where} has no planted backdoor to audit as {self.name!r}",
                fix="plant one with `safereuse teacher train --backdoor NAME`, or audit another defect",
            )
        planted = record.get("name") if isinstance(record, dict) else None
        if planted is not None and planted != self.name:
            raise SafeReuseError(
                f"teacher {teacher.where} carries a {planted!r} backdoor, not {self.name!r}",
                fix=f"audit ('{planted}', {{}})",
            )

    def probe(self, ctx: ProbeContext) -> ProbeResult:
        """Stamp the teacher's planted trigger on the audited images and measure DIR / ASR.

        The row reports the backdoor as planted (parameters from the teacher's record, not from
        this request); ``target`` maps the original target class into the student's labels.
        """
        bd = backdoor_from_record(ctx.teacher.backdoor, ctx.teacher.extras, ctx.teacher.where)
        x, bs = ctx.x, ctx.batch_size
        x_trig = torch.cat([bd.apply(x[i : i + bs]) for i in range(0, len(x), bs)])
        s_trig = ctx.predict(ctx.student.model, x_trig)
        rates = {"dir": metrics.dir_backdoor(ctx.y, ctx.student_clean, s_trig)}
        label = ctx.target_label(int(bd.target))  # type: ignore[arg-type]
        if label is not None:
            rates["asr"] = metrics.asr(ctx.y, s_trig, label)
        if ctx.teacher_clean is not None:
            rates["teacher"] = metrics.dir_backdoor(
                ctx.y, ctx.teacher_clean, ctx.predict(ctx.teacher.model, x_trig)
            )
        target = {"class": int(bd.target), "label": label}  # type: ignore[arg-type]
        return ProbeResult(rates, crafted_on="trigger", target=target, defect=bd)


# ---------------------------------------------------------------------------------------------------
# patch triggers
# ---------------------------------------------------------------------------------------------------
def patch_corner(position: str, size: int, h: int, w: int, seed: int) -> tuple[int, int]:
    """Top-left corner of a ``size``-pixel square patch at ``position`` of an ``h × w`` image."""
    require(
        1 <= size <= min(h, w),
        f"trigger size {size} does not fit {h}×{w} images",
        f"choose a size between 1 and {min(h, w)}",
    )
    if position == "random":
        g = torch.Generator().manual_seed(seed)
        top = int(torch.randint(0, h - size + 1, (1,), generator=g))
        left = int(torch.randint(0, w - size + 1, (1,), generator=g))
        return top, left
    return {
        "bottom-right": (h - size, w - size),
        "bottom-left": (h - size, 0),
        "top-left": (0, 0),
        "top-right": (0, w - size),
        "center": ((h - size) // 2, (w - size) // 2),
    }[position]


def patch_pattern(pattern: str, channels: int, size: int, seed: int) -> torch.Tensor:
    """The ``[channels, size, size]`` patch content: ``white``, ``checkerboard`` or ``random``."""
    if pattern == "white":
        return torch.ones(channels, size, size)
    if pattern == "checkerboard":
        i = torch.arange(size)
        board = ((i[:, None] + i[None, :]) % 2 == 0).float()
        return board.expand(channels, size, size).clone()
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(channels, size, size, generator=g) < 0.5).float()


def check_patch_params(bd: Any) -> None:
    """Validate a patch trigger's ``position`` (its ``size`` range is declared on the field)."""
    require(
        bd.position in POSITIONS,
        f"unknown trigger position {bd.position!r}",
        f"use one of: {', '.join(POSITIONS)}",
    )


def check_patch_trigger(bd: Any) -> None:
    """Validate a fixed patch trigger's ``position``, ``size`` and ``pattern`` (BadNets, RIPPLe)."""
    check_patch_params(bd)
    require(
        bd.pattern in PATTERNS,
        f"unknown trigger pattern {bd.pattern!r}",
        f"use one of: {', '.join(PATTERNS)}",
    )


def patch_trigger(bd: Any, channels: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed patch trigger: ``bd.pattern`` at ``bd.position`` (``bd.size`` px, ``bd.seed``); mask = 1
    on the patch, 0 elsewhere (BadNets, RIPPLe)."""
    top, left = patch_corner(bd.position, bd.size, height, width, bd.seed)
    trigger = torch.zeros(channels, height, width)
    mask = torch.zeros(channels, height, width)
    s = bd.size
    trigger[:, top : top + s, left : left + s] = patch_pattern(bd.pattern, channels, s, bd.seed + 1)
    mask[:, top : top + s, left : left + s] = 1.0
    return trigger, mask


# ---------------------------------------------------------------------------------------------------
# rebuilding from a saved teacher
# ---------------------------------------------------------------------------------------------------
def backdoor_from_artifact(artifact: Any) -> Backdoor:
    """Rebuild the backdoor planted in a saved teacher.

    Args:
        artifact: an :class:`~safereuse.artifacts.Artifact` (from ``load_model``) whose manifest has
            the plant record under ``"backdoor"`` and whose extras hold ``backdoor.trigger`` and
            ``backdoor.mask``.

    Returns:
        The :class:`Backdoor` with its parameters, resolved ``target`` (original class id) and the
        exact trigger tensors the teacher was trained with.

    Raises:
        SafeReuseError: the teacher has no planted backdoor, or its record / tensors are incomplete.

    Example:
        >>> import tempfile, pathlib
        >>> from safereuse.artifacts import load_model, save_model
        >>> from safereuse.defects.backdoors import BadNets
        >>> from safereuse.models import create_model
        >>> bd = BadNets(target=3)
        >>> x = torch.rand(2, 1, 28, 28)
        >>> ref = bd.apply(x)
        >>> rec = {"name": bd.name, "config": bd.config(), "target": 3}
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "t"
        >>> _ = save_model(create_model("smallcnn", 4), out, {"backdoor": rec}, bd.extras())
        >>> bd2 = backdoor_from_artifact(load_model(out))
        >>> bd2.target, torch.equal(bd2.apply(x), ref)
        (3, True)
    """
    return backdoor_from_record(
        (getattr(artifact, "manifest", None) or {}).get("backdoor"),
        getattr(artifact, "extras", None) or {},
        str(getattr(artifact, "path", "the model")),
    )


def backdoor_from_record(
    record: dict[str, Any] | None, extras: dict[str, torch.Tensor], where: str = "the model"
) -> Backdoor:
    """Rebuild a planted backdoor from its plant record and trigger tensors.

    Args:
        record: ``PlantResult.record`` (``name``, ``config``, ``target``), as saved in a manifest.
        extras: tensors holding ``backdoor.trigger`` and ``backdoor.mask`` (``PlantResult.extras``).
        where: how error messages name the teacher.

    Returns:
        The :class:`Backdoor` with its parameters, resolved ``target`` and exact trigger tensors.

    Raises:
        SafeReuseError: no record, a malformed one, or missing trigger tensors.
    """
    if not record:
        raise SafeReuseError(
            f"teacher {where} has no planted backdoor",
            fix="plant one with `safereuse teacher train --backdoor NAME`, or audit another defect",
        )
    if not isinstance(record, dict) or "name" not in record:
        raise SafeReuseError(f"teacher {where} has a malformed backdoor record", fix="re-plant the backdoor")
    cls = DEFECTS.get(str(record["name"]))
    if not (isinstance(cls, type) and issubclass(cls, Backdoor)):
        raise SafeReuseError(f"{record['name']!r} is not a backdoor", fix="re-plant the backdoor")
    config = dict(record.get("config") or {})
    params = {k: config[k] for k in cls.param_names() if k in config}
    if record.get("target") is not None:
        params["target"] = int(record["target"])
    bd = cls(**params)
    if TRIGGER_KEY not in extras or MASK_KEY not in extras:
        raise SafeReuseError(
            f"teacher {where} records a {record['name']} backdoor but its extras lack "
            f"{TRIGGER_KEY} / {MASK_KEY}",
            fix="save the teacher with save_model(..., extras=plant_result.extras)",
        )
    bd.set_trigger(extras[TRIGGER_KEY], extras[MASK_KEY])
    return bd
