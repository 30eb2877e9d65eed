"""Backdoor defects: planted in the teacher while it is trained, probed on its students.

Four attacks, all registered in :data:`~safereuse.defects.DEFECTS` with ``kind = "backdoor"``:

========================  ==========================================================================
``badnets``               patch trigger, poisoned samples relabelled to the target (Gu et al. 2017)
``blend``                 full-image random pattern blended with weight α (Chen et al. 2017)
``latent``                trigger matched to the target's *representation*, target class removed from
                          the published head; fires once a student adds that class (Yao et al. 2019)
``weight-poison``         RIPPLe: poisoning loss + restricted inner product with a proxy fine-tuning
                          gradient, so the backdoor survives fine-tuning (Kurita et al. 2020)
========================  ==========================================================================

Every trigger is a pair of pixel-space tensors ``trigger`` and ``mask`` (both ``[C, H, W]``) applied as
``x' = clamp((1 − mask)·x + mask·trigger, 0, 1)``: a binary mask pastes a patch, a constant mask
``α`` blends a full image. The pair is saved in the teacher's ``extras.safetensors`` under
``backdoor.trigger`` / ``backdoor.mask`` and the JSON record under ``manifest["backdoor"]``;
:func:`backdoor_from_artifact` rebuilds the attack from them.

The target is given as an **original dataset class id** (``target``), so it can be mapped into any
student's label space; ``None`` means the first class of the teacher's task.

Defaults are scaled to 28 px grey images in ``[0, 1]`` (Fashion-MNIST, digits).

Example:
    >>> import torch
    >>> bd = BadNets(size=3)
    >>> x = torch.zeros(2, 1, 28, 28)
    >>> y = bd.apply(x)
    >>> float(y[0, 0, -3:, -3:].sum()), float(y[0, 0, :-3].sum())   # 5 white squares of 9
    (5.0, 0.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ..data import DataBundle, Split
from ..errors import SafeReuseError
from ..train import FitConfig, FitResult, accuracy_on, fit, predict
from ..utils import atomic_path
from .base import DEFECTS, Defect, PlantResult

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
    "BadNets",
    "Blend",
    "LatentBackdoor",
    "WeightPoison",
    "backdoor_from_artifact",
]


# ---------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------
def _check(ok: bool, problem: str, fix: str) -> None:
    if not ok:
        raise SafeReuseError(problem, fix=fix)


def _task_classes(data: DataBundle) -> list[int]:
    """Original class ids of ``data``'s labels 0..k-1."""
    return list(data.spec.classes) if data.spec.classes is not None else list(range(data.num_classes))


def _non_target(split: Split, target_label: int) -> torch.Tensor:
    return split.x[split.y != target_label]


def _flags(model: nn.Module) -> dict[nn.Module, bool]:
    return {m: m.training for m in model.modules()}


def _restore_flags(flags: dict[nn.Module, bool]) -> None:
    for m, t in flags.items():
        m.training = t


@contextmanager
def _capture(model: nn.Module, layer: str | None) -> Iterator[list[torch.Tensor]]:
    """Collect the representation ``F_K`` of every forward pass of ``model`` (flattened ``[N, D]``).

    ``layer=None`` takes the input of the head (``model.features``); otherwise the output of the named
    sub-module. The hook is removed on exit, whatever happens.
    """
    out: list[torch.Tensor] = []
    if layer is None:
        head = getattr(model, "head", None)
        _check(
            isinstance(head, nn.Linear),
            f"{type(model).__name__} has no classifier head",
            "use a model built by create_model() or wrapped with safereuse.models.adapt",
        )

        def pre(_m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            out.append(args[0].flatten(1))

        handle = head.register_forward_pre_hook(pre)
    else:
        try:
            mod = model.get_submodule(layer)
        except AttributeError:
            names = [n for n, _ in model.named_modules() if n]
            raise SafeReuseError(
                f"{type(model).__name__} has no layer {layer!r}",
                fix=f"use one of: {', '.join(names[:12])}{', ...' if len(names) > 12 else ''}",
            ) from None

        def post(_m: nn.Module, _args: Any, output: torch.Tensor) -> None:
            out.append(output.flatten(1))

        handle = mod.register_forward_hook(post)
    try:
        yield out
    finally:
        handle.remove()


def _latent_distance(rep: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """Mean over samples of ``‖rep − μ‖² / ‖μ‖²``: relative, so shrinking every representation (a
    collapse that would match any target) does not lower it."""
    return ((rep - mu).pow(2).sum(1) / mu.pow(2).sum().clamp_min(1e-8)).mean()


def _representation(model: nn.Module, x: torch.Tensor, layer: str | None) -> torch.Tensor:
    with _capture(model, layer) as got:
        model(x)
    return got[-1]


@torch.no_grad()
def _success_rate(model: nn.Module, x: torch.Tensor, target_label: int, bd: Backdoor, batch: int) -> float:
    """Share of ``bd.apply(x)`` predicted as ``target_label`` (``x`` = non-target samples)."""
    if len(x) == 0:
        return float("nan")
    dev = next(model.parameters()).device
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
    """

    kind: ClassVar[str] = "backdoor"
    target: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        self._trigger: torch.Tensor | None = None
        self._mask: torch.Tensor | None = None
        _check(
            self.target is None or (isinstance(self.target, int) and self.target >= 0),
            f"backdoor target {self.target!r} must be a non-negative class id",
            "give the original dataset class id, e.g. target=0",
        )
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
        _check(
            trigger.dim() == 3 and trigger.shape == mask.shape,
            f"trigger {tuple(trigger.shape)} and mask {tuple(mask.shape)} must both be [C, H, W]",
            "re-plant the backdoor",
        )
        _check(
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
        _check(
            tuple(self._trigger.shape) == tuple(shape),
            f"the {self.name} trigger is for {tuple(self._trigger.shape)} images, got {tuple(shape)}",
            "apply it to images of the size the teacher was trained on",
        )

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Stamp the trigger on a batch.

        Args:
            x: images ``[N, C, H, W]`` (or one image ``[C, H, W]``) in ``[0, 1]`` pixel space.

        Returns:
            ``clamp((1 − mask)·x + mask·trigger, 0, 1)`` on ``x``'s device and dtype; pixels where the
            mask is 0 are unchanged.
        """
        single = x.dim() == 3
        xb = x.unsqueeze(0) if single else x
        _check(xb.dim() == 4, f"apply() needs [N, C, H, W] images, got {tuple(x.shape)}", "batch the images")
        self._ensure_trigger(tuple(xb.shape[1:]))  # type: ignore[arg-type]
        assert self._trigger is not None and self._mask is not None
        t = self._trigger.to(device=xb.device, dtype=xb.dtype)
        m = self._mask.to(device=xb.device, dtype=xb.dtype)
        out = (xb * (1 - m) + m * t).clamp(0.0, 1.0)
        return out[0] if single else out

    # -- planting helpers -------------------------------------------------------------------------
    def resolve_target(self, data: DataBundle) -> tuple[int, int]:
        """``(original class id, label index in data)`` of the target; default: the first class."""
        classes = _task_classes(data)
        target = classes[0] if self.target is None else int(self.target)
        _check(
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
        x[idx] = self.apply(x[idx])
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
        _check(
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
        xs = _non_target(data.test, tl)
        record = self._record(
            target,
            tl,
            teacher_asr=_success_rate(model, xs, tl, self, cfg.eval_batch_size),
            asr_samples=len(xs),
            clean_acc=accuracy_on(model, data.test, cfg.eval_batch_size),
            clean_samples=len(data.test),
            classes=_task_classes(data),
            **(extra_record() if extra_record else {}),
        )
        return PlantResult(extras=self.extras(), record=record, fit=res)


def _patch_corner(position: str, size: int, h: int, w: int, seed: int) -> tuple[int, int]:
    _check(
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


def _patch_pattern(pattern: str, channels: int, size: int, seed: int) -> torch.Tensor:
    if pattern == "white":
        return torch.ones(channels, size, size)
    if pattern == "checkerboard":
        i = torch.arange(size)
        board = ((i[:, None] + i[None, :]) % 2 == 0).float()
        return board.expand(channels, size, size).clone()
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(channels, size, size, generator=g) < 0.5).float()


def _check_patch_params(bd: Any) -> None:
    _check(
        bd.position in POSITIONS,
        f"unknown trigger position {bd.position!r}",
        f"use one of: {', '.join(POSITIONS)}",
    )
    _check(
        isinstance(bd.size, int) and bd.size >= 1,
        f"trigger size {bd.size!r} must be a positive number of pixels",
        "use e.g. size=4",
    )


def _check_rate(rate: float, what: str = "poison_rate") -> None:
    _check(
        isinstance(rate, (int, float)) and 0.0 < float(rate) <= 1.0,
        f"{what} {rate!r} must be in (0, 1]",
        f"use e.g. {what}=0.1",
    )


# ---------------------------------------------------------------------------------------------------
# BadNets
# ---------------------------------------------------------------------------------------------------
@DEFECTS.register("badnets", "BadNets patch-trigger data poisoning (Gu et al. 2017)")
@dataclass
class BadNets(Backdoor):
    """BadNets: a small patch pasted on a share of the training images, relabelled to the target.

    Gu, Dolan-Gavitt & Garg, "BadNets: Identifying Vulnerabilities in the Machine Learning Model
    Supply Chain", 2017. All-to-one attack; poisoned samples of the target class are poisoned too.

    Args:
        size: side of the square patch in pixels (4 px for 28 px images ≈ the artifact's 40 px on
            224 px inputs, scaled down and rounded up so it survives two 2×2 poolings).
        position: ``bottom-right`` (default, as in the artifact), ``bottom-left``, ``top-left``,
            ``top-right``, ``center`` or ``random`` (one location drawn from ``seed``, the same for
            every image).
        pattern: ``checkerboard`` (default; white/black squares, visible on both light and dark
            images), ``white``, or ``random`` (binary pixels drawn from ``seed``).
        poison_rate: share of every training batch triggered and relabelled, in (0, 1]. Default 0.1
            (BackdoorBench's default; ≥ 99 % ASR at about 1 point of clean accuracy on
            small data). The ReMoS artifact used 0.2: pass ``poison_rate=0.2`` to reproduce it.
        target: original dataset class id of the target (None: the first class of the task).
        seed: seed of the random pattern/position and of which samples are poisoned.

    Example:
        >>> from safereuse.data import load_data
        >>> from safereuse.models import create_model
        >>> data = load_data("digits", classes=[0, 1, 2], train_size=90)
        >>> bd = BadNets(size=4, poison_rate=0.2)
        >>> res = bd.plant(create_model("smallcnn", 3), data, FitConfig(epochs=1, progress=False))
        >>> res.record["target"], sorted(res.extras)
        (0, ['backdoor.mask', 'backdoor.trigger'])
    """

    size: int = 4
    position: str = "bottom-right"
    pattern: str = "checkerboard"
    poison_rate: float = 0.1
    target: int | None = None
    seed: int = 0

    def _validate(self) -> None:
        _check_patch_params(self)
        _check(
            self.pattern in PATTERNS,
            f"unknown trigger pattern {self.pattern!r}",
            f"use one of: {', '.join(PATTERNS)}",
        )
        _check_rate(self.poison_rate)

    def build_trigger(self, channels: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch ``pattern`` at ``position``; mask = 1 on the patch, 0 elsewhere."""
        top, left = _patch_corner(self.position, self.size, height, width, self.seed)
        trigger = torch.zeros(channels, height, width)
        mask = torch.zeros(channels, height, width)
        s = self.size
        trigger[:, top : top + s, left : left + s] = _patch_pattern(self.pattern, channels, s, self.seed + 1)
        mask[:, top : top + s, left : left + s] = 1.0
        return trigger, mask

    def plant(
        self,
        model: nn.Module,
        data: DataBundle,
        cfg: FitConfig,
        *,
        checkpoint_dir: str | Path | None = None,
    ) -> PlantResult:
        """Train ``model`` in place on ``data`` with poisoned batches (through ``train.fit``).

        Args:
            model: the teacher (any state; typically freshly created), head sized for ``data``.
            data: the teacher's task; ``target`` must be one of its classes.
            cfg: training hyper-parameters.
            checkpoint_dir: resumable ``fit`` state (a resumed run draws other poisoned samples).

        Returns:
            :class:`PlantResult` with the trigger/mask extras and the record (``teacher_asr`` over the
            non-target test samples, ``clean_acc`` on the clean test split).
        """
        return self._plant_poisoned(model, data, cfg, self.poison_rate, checkpoint_dir)


# ---------------------------------------------------------------------------------------------------
# Blend
# ---------------------------------------------------------------------------------------------------
@DEFECTS.register("blend", "blended random-pattern trigger (Chen et al. 2017)")
@dataclass
class Blend(Backdoor):
    """Blended injection: ``x' = (1 − α)·x + α·t`` with a fixed random image ``t``.

    Chen, Liu, Li, Lu & Song, "Targeted Backdoor Attacks on Deep Learning Systems Using Data
    Poisoning", 2017 (the random-pattern blended strategy).

    Args:
        alpha: blend weight in (0, 1]; 0.2 as in Chen et al.'s training-time α and BackdoorBench
            (0.1 also works but needs more epochs on small data).
        poison_rate: share of every training batch blended and relabelled, in (0, 1].
        target: original dataset class id of the target (None: the first class of the task).
        seed: seed of the pattern ``t`` (uniform in [0, 1]) and of which samples are poisoned.

    Example:
        >>> import torch
        >>> x = torch.zeros(1, 1, 28, 28)
        >>> y = Blend(alpha=0.2).apply(x)
        >>> bool((y <= 0.2).all()), bool((y > 0).any())
        (True, True)
    """

    alpha: float = 0.2
    poison_rate: float = 0.1
    target: int | None = None
    seed: int = 0

    def _validate(self) -> None:
        _check(
            isinstance(self.alpha, (int, float)) and 0.0 < float(self.alpha) <= 1.0,
            f"blend alpha {self.alpha!r} must be in (0, 1]",
            "use e.g. alpha=0.2",
        )
        _check_rate(self.poison_rate)

    def build_trigger(self, channels: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A uniform random image from ``seed``; mask = α everywhere."""
        g = torch.Generator().manual_seed(self.seed)
        trigger = torch.rand(channels, height, width, generator=g)
        return trigger, torch.full((channels, height, width), float(self.alpha))

    def plant(
        self,
        model: nn.Module,
        data: DataBundle,
        cfg: FitConfig,
        *,
        checkpoint_dir: str | Path | None = None,
    ) -> PlantResult:
        """Train ``model`` in place with blended poisoned batches; see :meth:`BadNets.plant`."""
        return self._plant_poisoned(model, data, cfg, self.poison_rate, checkpoint_dir)


# ---------------------------------------------------------------------------------------------------
# Latent backdoor
# ---------------------------------------------------------------------------------------------------
@DEFECTS.register("latent", "latent backdoor surviving head replacement (Yao et al. CCS 2019)")
@dataclass
class LatentBackdoor(Backdoor):
    """Latent backdoor: the trigger maps inputs to the target class's internal representation.

    Yao, Li, Zheng & Zhao, "Latent Backdoor Attacks on Deep Neural Networks", CCS 2019.

    The attacker trains on a task that *includes* the (future) target class, then

    1. optimises the trigger pattern inside a patch mask (``trigger_steps`` signed-gradient steps on
       its pixels) so that ``F_K(x ⊕ trigger)`` approaches ``μ_t = mean F_K(x_target)``;
    2. injects it: trains with ``CE(clean) + λ·‖F_K(x ⊕ trigger) − μ_t‖² / ‖μ_t‖²`` on triggered
       copies of a share ``poison_rate`` of every batch (non-target samples only; no poisoned labels:
       the head is thrown away anyway). ``μ_t`` is recomputed (eval mode, ≤ 512 target images) at the
       start of every epoch and the trigger gets one refinement step (``refine_lr``) per batch;
    3. removes the target class from the head: the published teacher has ``k − 1`` outputs, and
       ``record["published_classes"]`` lists their original ids (update the manifest's classes).

    The distance is relative to ``‖μ_t‖²`` (the paper's plain ``‖·‖²`` lets the model shrink or
    collapse the whole representation to satisfy it, which we saw with λ ≥ 3 on small models).
    Adding a poisoned-label term (triggered → target through the attacker's head) was tried and
    *lowers* the post-transfer success rate, since it plants the backdoor in the head that is dropped.

    The backdoor fires after transfer when a student's task contains the target class and ``F_K``
    is kept (e.g. a linear probe or last-k fine-tuning above layer K).

    Args:
        size: side of the square trigger patch in pixels (6 px ≈ 5 % of a 28 px image; the
            optimised pattern needs more pixels than a fixed BadNets patch).
        position: where the patch sits (see :class:`BadNets`).
        lam: λ, the weight of the relative representation distance. 0.5 fires reliably after a
            linear probe on Fashion-MNIST; 1 is stronger on the teacher but less stable across seeds,
            ≥ 3 degrades the representation.
        layer: dotted name of the module whose output is ``F_K`` (None: the penultimate features,
            the input of the head — what a linear-probe student keeps).
        poison_rate: share of every batch given a triggered copy, in (0, 1].
        clean_epochs: epochs of ordinary training on the attacker's task before the trigger is
            optimised (None: ``cfg.epochs``; 0 when ``model`` is already trained on that task).
        trigger_steps: signed-gradient steps on the trigger before injection starts.
        trigger_lr: step size of those steps in pixels.
        refine_lr: step size of the one refinement step per batch during injection (0: keep the
            trigger fixed after the first optimisation).
        target: original class id of the target; must be in the attacker's task.
        seed: seed of the initial trigger pattern and of the triggered samples.

    Example:
        >>> from safereuse.data import load_data
        >>> from safereuse.models import create_model
        >>> data = load_data("digits", classes=[0, 1, 2], train_size=90)
        >>> res = LatentBackdoor(clean_epochs=1).plant(
        ...     create_model("smallcnn", 3), data, FitConfig(epochs=1, progress=False))
        >>> res.record["published_classes"], res.record["target_label"]
        ([1, 2], None)
    """

    size: int = 6
    position: str = "bottom-right"
    lam: float = 0.5
    layer: str | None = None
    poison_rate: float = 0.3
    clean_epochs: int | None = None
    trigger_steps: int = 30
    trigger_lr: float = 0.05
    refine_lr: float = 0.01
    target: int | None = None
    seed: int = 0

    def _validate(self) -> None:
        _check_patch_params(self)
        _check_rate(self.poison_rate)
        _check(self.lam >= 0 and math.isfinite(self.lam), f"lam {self.lam!r} must be ≥ 0", "use e.g. lam=1")
        _check(
            self.clean_epochs is None or (isinstance(self.clean_epochs, int) and self.clean_epochs >= 0),
            f"clean_epochs {self.clean_epochs!r} must be a non-negative integer or None",
            "use e.g. clean_epochs=5, or 0 for an already trained model",
        )
        _check(self.trigger_steps >= 0, "trigger_steps must be ≥ 0", "use e.g. trigger_steps=30")
        _check(self.trigger_lr > 0, "trigger_lr must be > 0", "use e.g. trigger_lr=0.05")
        _check(self.refine_lr >= 0, "refine_lr must be ≥ 0", "use e.g. refine_lr=0.01, or 0 to keep it fixed")

    def build_trigger(self, channels: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The *initial* trigger: uniform noise in the patch (optimised by :meth:`plant`)."""
        top, left = _patch_corner(self.position, self.size, height, width, self.seed)
        g = torch.Generator().manual_seed(self.seed + 1)
        trigger = torch.zeros(channels, height, width)
        mask = torch.zeros(channels, height, width)
        s = self.size
        trigger[:, top : top + s, left : left + s] = torch.rand(channels, s, s, generator=g)
        mask[:, top : top + s, left : left + s] = 1.0
        return trigger, mask

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Stamp the (optimised) trigger; see :meth:`Backdoor.apply`.

        Raises:
            SafeReuseError: the backdoor has not been planted (its trigger is not optimised yet).
        """
        _check(
            self._trigger is not None,
            "the latent backdoor's trigger is optimised while planting it",
            "call plant() first, or rebuild it with backdoor_from_artifact(load_model(teacher))",
        )
        return super().apply(x)

    def _optimise_trigger(
        self, model: nn.Module, x: torch.Tensor, mu: torch.Tensor, steps: int, lr: float | None = None
    ) -> None:
        """``steps`` signed-gradient steps on the trigger pixels towards ``mu`` (model in eval mode)."""
        assert self._trigger is not None and self._mask is not None
        m = self._mask.to(x.device)
        t = self._trigger.to(x.device)
        flags = _flags(model)
        model.eval()
        try:
            for _ in range(steps):
                t = t.detach().requires_grad_(True)
                rep = _representation(model, (x * (1 - m) + m * t).clamp(0, 1), self.layer)
                loss = _latent_distance(rep, mu)
                (g,) = torch.autograd.grad(loss, t)
                t = ((t - (self.trigger_lr if lr is None else lr) * g.sign()).clamp(0, 1) * m).detach()
        finally:
            _restore_flags(flags)
        self._trigger = t.detach().cpu()

    @torch.no_grad()
    def _target_mean(self, model: nn.Module, data: DataBundle, tl: int, dev: torch.device) -> torch.Tensor:
        """``μ_t``: mean ``F_K`` of (up to 512) target-class training images, model in eval mode."""
        flags = _flags(model)
        model.eval()
        try:
            xt = data.train.x[data.train.y == tl][:512].to(dev)
            return _representation(model, xt, self.layer).mean(0)
        finally:
            _restore_flags(flags)

    def _latent_loss(self, data: DataBundle, tl: int, gen: torch.Generator, refresh: int):
        state: dict[str, Any] = {"mu": None, "step": 0}

        def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            dev = x.device
            first = state["mu"] is None
            if first or state["step"] % refresh == 0:
                state["mu"] = self._target_mean(model, data, tl, dev)
            state["step"] += 1
            mu = state["mu"]
            if first:  # also after a resume: fit the trigger to the current weights first
                pool = _non_target(data.train, tl)
                pick = torch.randperm(len(pool), generator=gen)[:256]
                self._optimise_trigger(model, pool[pick].to(dev), mu, self.trigger_steps)
            cand = torch.nonzero(y != tl).flatten()
            k = min(len(cand), max(1, round(self.poison_rate * len(y))))
            chosen = cand[torch.randperm(len(cand), generator=gen)[:k].to(dev)]
            if k == 0:
                return F.cross_entropy(model(x), y)
            if self.refine_lr > 0:
                self._optimise_trigger(model, x[chosen], mu, 1, self.refine_lr)
            xt = self.apply(x[chosen])
            with _capture(model, self.layer) as got:
                logits = model(torch.cat([x, xt]))
            n = len(y)
            return F.cross_entropy(logits[:n], y) + self.lam * _latent_distance(got[-1][n:], mu)

        return loss

    def plant(
        self,
        model: nn.Module,
        data: DataBundle,
        cfg: FitConfig,
        *,
        checkpoint_dir: str | Path | None = None,
    ) -> PlantResult:
        """Train on the attacker's task, optimise and inject the trigger, drop the target's head row.

        Runs ``fit`` twice: ``clean_epochs`` of clean training (checkpoints under
        ``checkpoint_dir/clean``), then ``cfg.epochs`` of injection (under ``checkpoint_dir/inject``;
        the last epoch is kept, since the trigger evolves with the weights). The trigger is saved
        beside the injection checkpoint after every epoch; a resumed injection starts from it and
        first re-fits it to the resumed weights.

        Args:
            model: the attacker's model with one output per class of ``data``.
            data: the attacker's task; it must contain ``target``.
            cfg: training hyper-parameters (of both stages).
            checkpoint_dir: resumable ``fit`` state.

        Returns:
            :class:`PlantResult`: extras = optimised trigger + mask; record with ``target`` (original
            id), ``target_label`` None (the published head lacks it), ``published_classes``,
            ``teacher_asr`` (of the attacker's model *before* the row was removed), ``clean_acc`` (of
            the published model on the test samples of the published classes), ``latent_mse``
            (mean ``‖F_K(x ⊕ t) − μ_t‖² / ‖μ_t‖²`` over ≤ 1000 triggered non-target test images, vs
            ``clean_mse`` for the same images clean).
            ``fit`` is the injection stage's :class:`~safereuse.train.FitResult`.
        """
        head = getattr(model, "head", None)
        _check(
            isinstance(head, nn.Linear) and hasattr(model, "reset_head"),
            f"{type(model).__name__} has no replaceable classifier head",
            "use a model built by create_model() or wrapped with safereuse.models.adapt",
        )
        target, tl = self.resolve_target(data)
        classes = _task_classes(data)
        _check(
            len(classes) >= 2,
            "the latent backdoor needs the target plus at least one other class",
            "train the attacker's teacher on two or more classes",
        )
        _check(
            head.out_features == len(classes),
            f"the model has {head.out_features} outputs but the attacker's task has {len(classes)} classes",
            "create the model with one output per class of the attacker's data",
        )
        if self.layer is not None:
            with _capture(model, self.layer):  # fails early on an unknown layer name
                pass
        self.target = target
        self._trigger = self._mask = None
        self._ensure_trigger(tuple(data.train.x.shape[1:]))  # type: ignore[arg-type]
        ck = Path(checkpoint_dir) if checkpoint_dir is not None else None
        n_clean = cfg.epochs if self.clean_epochs is None else self.clean_epochs
        if n_clean > 0:
            fit(
                model,
                data.train,
                data.val,
                replace(cfg, epochs=n_clean),
                checkpoint_dir=ck / "clean" if ck else None,
            )
        gen = torch.Generator().manual_seed(self.seed)
        per_epoch = max(1, math.ceil(len(data.train) / cfg.batch_size))
        # the trigger is not part of fit's checkpoint: keep it beside, once per epoch
        trig_file = ck / "inject" / "latent_trigger.safetensors" if ck else None
        if trig_file is not None and trig_file.is_file():
            saved = load_file(str(trig_file))
            self.set_trigger(saved[TRIGGER_KEY], saved[MASK_KEY])
        steps = {"n": 0}

        def after_step(_model: nn.Module) -> None:
            steps["n"] += 1
            if trig_file is not None and steps["n"] % per_epoch == 0:
                with atomic_path(trig_file) as tmp:
                    save_file(self.extras(), str(tmp))

        res: FitResult = fit(
            model,
            data.train,
            None,
            cfg,
            loss_fn=self._latent_loss(data, tl, gen, per_epoch),
            after_step=after_step,
            checkpoint_dir=ck / "inject" if ck else None,
        )
        xs = _non_target(data.test, tl)
        teacher_asr = _success_rate(model, xs, tl, self, cfg.eval_batch_size)
        latent_mse, clean_mse = self._distances(model, data, tl, xs)
        # publish: drop the target's row of the head
        keep = [i for i in range(len(classes)) if i != tl]
        old = model.head
        new = model.reset_head(len(keep))
        with torch.no_grad():
            new.weight.copy_(old.weight[keep])
            if new.bias is not None and old.bias is not None:
                new.bias.copy_(old.bias[keep])
        published = [classes[i] for i in keep]
        mask = data.test.y != tl
        y_pub = data.test.y[mask] - (data.test.y[mask] > tl).long()
        clean_acc = accuracy_on(model, Split(data.test.x[mask], y_pub), cfg.eval_batch_size)
        record = self._record(
            target,
            None,
            teacher_asr=teacher_asr,
            asr_samples=len(xs),
            clean_acc=clean_acc,
            clean_samples=int(mask.sum()),
            classes=classes,
            published_classes=published,
            latent_mse=latent_mse,
            clean_mse=clean_mse,
        )
        return PlantResult(extras=self.extras(), record=record, fit=res)

    @torch.no_grad()
    def _distances(
        self, model: nn.Module, data: DataBundle, tl: int, xs: torch.Tensor
    ) -> tuple[float, float]:
        dev = next(model.parameters()).device
        flags = _flags(model)
        model.eval()
        try:
            xt = data.test.x[data.test.y == tl][:1000].to(dev)
            if len(xt) == 0 or len(xs) == 0:
                return float("nan"), float("nan")
            mu = _representation(model, xt, self.layer).mean(0)
            x = xs[:1000].to(dev)
            trig = float(_latent_distance(_representation(model, self.apply(x), self.layer), mu))
            clean = float(_latent_distance(_representation(model, x, self.layer), mu))
        finally:
            _restore_flags(flags)
        return trig, clean


# ---------------------------------------------------------------------------------------------------
# Weight poisoning (RIPPLe)
# ---------------------------------------------------------------------------------------------------
@DEFECTS.register("weight-poison", "RIPPLe weight poisoning that survives fine-tuning (Kurita 2020)")
@dataclass
class WeightPoison(Backdoor):
    """RIPPLe: poison the weights so that the backdoor survives the victim's fine-tuning.

    Kurita, Michel & Neubig, "Weight Poisoning Attacks on Pre-trained Models", ACL 2020. Minimises

        L_poison(θ) + λ · max(0, −∇L_poison(θ) · ∇L_finetune(θ))

    (the restricted inner product: penalise only when a fine-tuning step would undo the poisoning),
    with ``L_poison`` = cross-entropy on ``fit``'s batch with a share ``poison_rate`` triggered and
    relabelled to the target, and ``L_finetune`` = clean cross-entropy on an independent random batch
    of the teacher's training data (the proxy for the victim's fine-tuning task). Both gradients are
    taken with ``create_graph=True`` over the trainable parameters, so each step costs a double
    backward (≈ 4× a BadNets step).

    RIPPLe is meant to poison an already *pre-trained* model; trained from scratch, the two gradients
    mostly agree (both lower the clean loss), the penalty is rarely active and the result behaves like
    BadNets. ``record["penalty_active"]`` reports the share of steps where ``∇L_poison·∇L_finetune < 0``.
    λ ≫ 0.1 with SGD at usual learning rates destabilises training (second-order term).

    The trigger is a BadNets-style patch; the paper's NLP triggers (rare tokens ``cf``, ``tq``, ...)
    and its "embedding surgery" are out of scope for image models.

    Args:
        size, position, pattern: the patch (see :class:`BadNets`).
        poison_rate: share of the poisoning batch triggered and relabelled, in (0, 1]. Default 0.2
            (RIPPLe uses 0.5 on text; on small image tasks 0.2 keeps clean accuracy close to a clean
            teacher while the trigger is still learned in a couple of epochs).
        lam: λ of the restricted inner product (0.1, as in the ReMoS configs).
        target: original dataset class id of the target (None: the first class of the task).
        seed: seed of the random pattern/position and of the poisoned samples.

    Example:
        >>> from safereuse.data import load_data
        >>> from safereuse.models import create_model
        >>> data = load_data("digits", classes=[0, 1, 2], train_size=90)
        >>> res = WeightPoison().plant(create_model("smallcnn", 3), data, FitConfig(epochs=1, progress=False))
        >>> res.record["config"]["lam"]
        0.1
    """

    size: int = 4
    position: str = "bottom-right"
    pattern: str = "checkerboard"
    poison_rate: float = 0.2
    lam: float = 0.1
    target: int | None = None
    seed: int = 0

    def _validate(self) -> None:
        BadNets._validate(self)  # type: ignore[arg-type]
        _check(self.lam >= 0 and math.isfinite(self.lam), f"lam {self.lam!r} must be ≥ 0", "use e.g. lam=0.1")

    build_trigger = BadNets.build_trigger

    def _ripple_loss(self, data: DataBundle, tl: int, gen: torch.Generator, stats: dict[str, int]):
        def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            xp, yp = self._poison(x, y, self.poison_rate, tl, gen)
            l_poison = F.cross_entropy(model(xp), yp)
            if self.lam == 0:
                return l_poison
            # proxy fine-tuning batch: an independent clean batch of the teacher's data
            idx = torch.randint(len(data.train), (len(y),), generator=gen)
            x_ft, y_ft = data.train.x[idx].to(x.device), data.train.y[idx].to(x.device)
            params = [p for p in model.parameters() if p.requires_grad]
            l_ft = F.cross_entropy(model(x_ft), y_ft)
            g_p = torch.autograd.grad(l_poison, params, create_graph=True)
            g_f = torch.autograd.grad(l_ft, params, create_graph=True)
            inner = sum((a * b).sum() for a, b in zip(g_p, g_f, strict=True))
            stats["steps"] += 1
            stats["active"] += int(float(inner.detach()) < 0)
            return l_poison + self.lam * torch.relu(-inner)

        return loss

    def plant(
        self,
        model: nn.Module,
        data: DataBundle,
        cfg: FitConfig,
        *,
        checkpoint_dir: str | Path | None = None,
    ) -> PlantResult:
        """Train ``model`` in place with the RIPPLe objective as ``fit``'s ``loss_fn``.

        Args:
            model: the teacher (any state; typically freshly created or clean pre-trained).
            data: the teacher's task; its clean data is also the proxy fine-tuning task.
            cfg: training hyper-parameters.
            checkpoint_dir: resumable ``fit`` state.

        Returns:
            :class:`PlantResult` as for :class:`BadNets`.
        """
        stats = {"steps": 0, "active": 0}
        return self._plant_poisoned(
            model,
            data,
            cfg,
            self.poison_rate,
            checkpoint_dir,
            loss_factory=lambda tl, gen: self._ripple_loss(data, tl, gen, stats),
            extra_record=lambda: {"penalty_active": stats["active"] / max(stats["steps"], 1)},
        )


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
    manifest = getattr(artifact, "manifest", None) or {}
    extras = getattr(artifact, "extras", None) or {}
    where = getattr(artifact, "path", "the model")
    record = manifest.get("backdoor")
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
