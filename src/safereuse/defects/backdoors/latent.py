"""Latent backdoor: a trigger matched to the target's representation, surviving head replacement
(Yao et al., CCS 2019)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from pydantic import Field
from safetensors.torch import load_file, save_file
from torch import nn

from ...data import DataBundle, Split
from ...device import model_device
from ...models.capture import Capture, capture
from ...train import FitConfig, FitResult, accuracy_on, epoch_steps, fit
from ...utils import analysis_mode, atomic_path
from ..base import DEFECTS, PlantResult
from .base import (
    MASK_KEY,
    TRIGGER_KEY,
    Backdoor,
    check_patch_params,
    non_target,
    patch_corner,
    require,
    success_rate,
    task_classes,
)

__all__ = ["LatentBackdoor"]


@contextmanager
def representation_capture(model: nn.Module, layer: str | None) -> Iterator[Capture]:
    """Collect the representation ``F_K`` of every forward pass of ``model`` (flattened ``[N, D]``,
    kept in the autograd graph: the planting loss differentiates through it).

    ``layer=None`` takes the input of the head (``model.features``); otherwise the output of the named
    sub-module; the latest is ``cap.records[-1].value``. Built on :func:`safereuse.slicing.capture`,
    so the hook is removed on exit whatever happens, and an unknown layer name fails before anything runs.
    """
    if layer is None:
        head = getattr(model, "head", None)
        require(
            isinstance(head, nn.Linear),
            f"{type(model).__name__} has no classifier head",
            "use a model built by create_model() or wrapped with safereuse.models.adapt",
        )
        spec: list[str | tuple[str, nn.Module]] = [("head", head)]
        inputs, outputs = True, False
    else:
        spec, inputs, outputs = [layer], False, True
    with capture(model, spec, inputs=inputs, outputs=outputs, grad=True, reduce=_flat) as cap:
        yield cap


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1)


def _latent_distance(rep: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """Mean over samples of ``‖rep − μ‖² / ‖μ‖²``: relative, so shrinking every representation (a
    collapse that would match any target) does not lower it."""
    return ((rep - mu).pow(2).sum(1) / mu.pow(2).sum().clamp_min(1e-8)).mean()


def _representation(model: nn.Module, x: torch.Tensor, layer: str | None) -> torch.Tensor:
    with representation_capture(model, layer) as got:
        model(x)
    return got.records[-1].value


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

    size: Annotated[int, Field(ge=1)] = 6
    position: str = "bottom-right"
    lam: Annotated[float, Field(ge=0)] = 0.5
    layer: str | None = None
    poison_rate: Annotated[float, Field(gt=0, le=1)] = 0.3
    clean_epochs: Annotated[int, Field(ge=0)] | None = None
    trigger_steps: Annotated[int, Field(ge=0)] = 30
    trigger_lr: Annotated[float, Field(gt=0)] = 0.05
    refine_lr: Annotated[float, Field(ge=0)] = 0.01
    target: Annotated[int, Field(ge=0)] | None = None
    seed: int = 0

    def _validate(self) -> None:
        check_patch_params(self)

    def build_trigger(self, channels: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The *initial* trigger: uniform noise in the patch (optimised by :meth:`plant`)."""
        top, left = patch_corner(self.position, self.size, height, width, self.seed)
        g = torch.Generator().manual_seed(self.seed + 1)
        trigger = torch.zeros(channels, height, width)
        mask = torch.zeros(channels, height, width)
        s = self.size
        trigger[:, top : top + s, left : left + s] = torch.rand(channels, s, s, generator=g)
        mask[:, top : top + s, left : left + s] = 1.0
        return trigger, mask

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Stamp the (optimised) trigger; see :meth:`Backdoor.apply`.

        Raises:
            SafeReuseError: the backdoor has not been planted (its trigger is not optimised yet).
        """
        require(
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
        with analysis_mode(model, grad=True):  # gradients w.r.t. the trigger only
            for _ in range(steps):
                t = t.detach().requires_grad_(True)
                rep = _representation(model, (x * (1 - m) + m * t).clamp(0, 1), self.layer)
                loss = _latent_distance(rep, mu)
                (g,) = torch.autograd.grad(loss, t)
                t = ((t - (self.trigger_lr if lr is None else lr) * g.sign()).clamp(0, 1) * m).detach()
        self._trigger = t.detach().cpu()

    @torch.no_grad()
    def _target_mean(self, model: nn.Module, data: DataBundle, tl: int, dev: torch.device) -> torch.Tensor:
        """``μ_t``: mean ``F_K`` of (up to 512) target-class training images, model in eval mode."""
        with analysis_mode(model):
            xt = data.train.x[data.train.y == tl][:512].to(dev)
            return _representation(model, xt, self.layer).mean(0)

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
                pool = non_target(data.train, tl)
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
            with representation_capture(model, self.layer) as got:
                logits = model(torch.cat([x, xt]))
            n = len(y)
            return F.cross_entropy(logits[:n], y) + self.lam * _latent_distance(got.records[-1].value[n:], mu)

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
        require(
            isinstance(head, nn.Linear) and hasattr(model, "reset_head"),
            f"{type(model).__name__} has no replaceable classifier head",
            "use a model built by create_model() or wrapped with safereuse.models.adapt",
        )
        target, tl = self.resolve_target(data)
        classes = task_classes(data)
        require(
            len(classes) >= 2,
            "the latent backdoor needs the target plus at least one other class",
            "train the attacker's teacher on two or more classes",
        )
        require(
            head.out_features == len(classes),
            f"the model has {head.out_features} outputs but the attacker's task has {len(classes)} classes",
            "create the model with one output per class of the attacker's data",
        )
        if self.layer is not None:
            with representation_capture(model, self.layer):  # fails early on an unknown layer name
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
        per_epoch = epoch_steps(len(data.train), cfg)
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
        xs = non_target(data.test, tl)
        teacher_asr = success_rate(model, xs, tl, self, cfg.eval_batch_size)
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
        dev = model_device(model)
        with analysis_mode(model):
            xt = data.test.x[data.test.y == tl][:1000].to(dev)
            if len(xt) == 0 or len(xs) == 0:
                return float("nan"), float("nan")
            mu = _representation(model, xt, self.layer).mean(0)
            x = xs[:1000].to(dev)
            trig = float(_latent_distance(_representation(model, self.apply(x), self.layer), mu))
            clean = float(_latent_distance(_representation(model, x, self.layer), mu))
        return trig, clean
