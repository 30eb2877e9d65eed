"""The one training engine: :func:`fit`.

Every method (teacher training, fine-tuning, ReMoS, SeaM, CARTL, ...) trains through ``fit`` and
changes its behaviour only through :class:`FitConfig` and injected callables (``loss_fn``,
``after_step``), never by copying the loop.

Freezing policies (used by "fine-tune the last k blocks" and CARTL's BatchNorm study):

- ``train_last_k``: only parameters of the last ``k`` blocks (``model.blocks()``) are trained;
- ``bn_stats``: ``update`` — BatchNorm layers whose parameters are all frozen still update their
  running statistics on the new data; ``freeze`` — they keep (reuse) the source statistics;
- ``bn_affine``: ``train`` or ``freeze`` the BatchNorm weight/bias inside the trained part.

Training state (model, optimiser, schedule, best checkpoint, RNG) is written after every epoch when
``checkpoint_dir`` is given, as safetensors + JSON (never pickle), and a later call resumes from it.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from .data import Split
from .device import model_device, resolve_device
from .errors import SafeReuseError
from .models import ReusableModel, last_k_parameters
from .params import Validated
from .utils import analysis_mode, atomic_path, config_hash, preserve_modes, write_json_atomic

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
StepHook = Callable[[nn.Module], None]
BatchTransform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass
class FitConfig(Validated):
    """Hyper-parameters of :func:`fit`.

    Args:
        epochs: passes over the training split.
        batch_size: examples per step.
        optimizer: ``sgd`` (with ``momentum``) or ``adam``.
        lr: base learning rate.
        momentum: SGD momentum.
        weight_decay: L2 weight decay (decoupled for adam → AdamW).
        schedule: ``cosine`` (per step), ``step`` (×``gamma`` every ``step_size`` epochs) or ``constant``.
        warmup_epochs: linear warm-up length (cosine schedule only).
        step_size: epochs between decays (step schedule).
        gamma: decay factor (step schedule).
        label_smoothing: cross-entropy label smoothing.
        head_lr_mult: learning-rate multiplier for the classifier head.
        train_last_k: train only the last k blocks (None: all parameters).
        bn_stats: ``update`` or ``freeze`` running statistics of fully frozen BatchNorm layers.
        bn_affine: ``train`` or ``freeze`` BatchNorm affine parameters of the trained part.
        patience: stop after this many epochs without validation improvement (None: never; only
            with ``keep_epoch="best"``).
        min_steps_per_epoch: optimiser steps per epoch at least; a training split smaller than
            ``min_steps_per_epoch · batch_size`` is passed over several times per epoch (fresh
            shuffles, full batches), so that few-shot data does not shrink a schedule of
            ``epochs`` to as many optimiser steps (1 (the default): one pass, as usual).
        keep_epoch: ``best`` — the weights of the epoch with the best validation accuracy;
            ``last`` — the final epoch's (a few-shot validation split of a handful of images
            cannot rank epochs, and the cosine schedule ends annealed).
        eval_batch_size: batch size for validation.
        seed: seed of the data order.
        device: ``auto``, ``cpu``, ``cuda``...
        progress: show tqdm bars.
    """

    epochs: Annotated[int, Field(ge=1)] = 10
    batch_size: Annotated[int, Field(ge=1)] = 128
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: Annotated[float, Field(gt=0)] = 0.05
    momentum: Annotated[float, Field(ge=0, le=1)] = 0.9
    weight_decay: Annotated[float, Field(ge=0)] = 5e-4
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    warmup_epochs: Annotated[float, Field(ge=0)] = 0.0
    step_size: Annotated[int, Field(ge=1)] = 30
    gamma: Annotated[float, Field(gt=0)] = 0.1
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.0
    head_lr_mult: Annotated[float, Field(ge=0)] = 1.0
    train_last_k: Annotated[int, Field(ge=1)] | None = None
    bn_stats: Literal["update", "freeze"] = "update"
    bn_affine: Literal["train", "freeze"] = "train"
    patience: Annotated[int, Field(ge=0)] | None = None
    eval_batch_size: Annotated[int, Field(ge=1)] = 512
    min_steps_per_epoch: Annotated[int, Field(ge=1)] = 1
    keep_epoch: Literal["best", "last"] = "best"
    seed: int = 0
    device: str = "auto"
    progress: bool = True

    def _what(self) -> str:
        # types (Literal choices included) and the declared ranges: Validated.__post_init__
        return "training"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("progress")
        d.pop("device")
        # left out at their defaults, so configs (teacher recipes, resume keys) made before keep their ids
        if d["min_steps_per_epoch"] == 1:
            d.pop("min_steps_per_epoch")
        if d["keep_epoch"] == "best":
            d.pop("keep_epoch")
        return d


@dataclass
class FitResult:
    """What :func:`fit` did: the best validation accuracy, when, and the per-epoch history."""

    best_val_acc: float
    best_epoch: int
    epochs_run: int
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_loss(label_smoothing: float = 0.0) -> LossFn:
    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(x), y, label_smoothing=label_smoothing)

    return loss


def predict(
    model: nn.Module, x: torch.Tensor, batch_size: int = 512, device: str | torch.device = "auto"
) -> torch.Tensor:
    """Logits of ``model`` on ``x`` (on the CPU), in batches, in :func:`~safereuse.utils.analysis_mode`.

    Args:
        model: any classifier.
        x: inputs ``[N, ...]`` (moved to the device batch by batch).
        batch_size: inputs per forward pass.
        device: where to run (``auto``: where the model is).

    Returns:
        ``[N, classes]`` float logits; an empty tensor for no inputs. Every module's training flag and
        parameter's ``requires_grad`` are as before.

    Example:
        >>> predict(nn.Linear(3, 2), torch.zeros(5, 3), batch_size=2).shape
        torch.Size([5, 2])
    """
    dev = resolve_device(device) if device != "auto" else model_device(model)
    with analysis_mode(model):
        outs = [model(x[i : i + batch_size].to(dev)).float().cpu() for i in range(0, len(x), batch_size)]
    if not outs:
        return torch.empty(0)
    return torch.cat(outs)


def predict_labels(
    model: nn.Module, x: torch.Tensor, batch_size: int = 512, device: str | torch.device = "auto"
) -> torch.Tensor:
    """Predicted classes of ``model`` on ``x`` (on the CPU): :func:`predict`'s argmax.

    Args:
        model, x, batch_size, device: as in :func:`predict`.

    Returns:
        ``[N]`` int64 labels (empty for no inputs, e.g. an attack without one successful example).

    Example:
        >>> predict_labels(nn.Linear(3, 2), torch.zeros(0, 3)).tolist()
        []
    """
    if len(x) == 0:
        return torch.empty(0, dtype=torch.long)
    return predict(model, x, batch_size, device).argmax(1)


def accuracy_on(model: nn.Module, split: Split, batch_size: int = 512) -> float:
    if len(split) == 0:
        return float("nan")
    pred = predict(model, split.x, batch_size).argmax(1)
    return float((pred == split.y).float().mean())


def trainable_names(model: nn.Module, cfg: FitConfig) -> set[str]:
    """Parameter names that ``fit`` will update under ``cfg``'s freezing policy."""
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    if cfg.train_last_k is not None:
        if not isinstance(model, ReusableModel):
            raise SafeReuseError("train_last_k needs a model with blocks()", fix="use safereuse.models.adapt")
        names &= set(last_k_parameters(model, cfg.train_last_k))
    if cfg.bn_affine == "freeze":
        bn_params = {
            f"{mn}.{pn}" if mn else pn
            for mn, m in model.named_modules()
            if isinstance(m, _BN)
            for pn, _ in m.named_parameters(recurse=False)
        }
        names -= bn_params
    return names


def _frozen_bn(model: nn.Module, cfg: FitConfig) -> list[nn.Module]:
    """BatchNorm layers outside the trained part, kept in eval mode when ``bn_stats='freeze'``."""
    if cfg.bn_stats != "freeze":
        return []
    structural = trainable_names(model, replace(cfg, bn_affine="train"))
    return [
        m
        for mn, m in model.named_modules()
        if isinstance(m, _BN)
        and not any(f"{mn}.{pn}" in structural for pn, _ in m.named_parameters(recurse=False))
    ]


def make_optimizer(model: nn.Module, trainable: set[str], cfg: FitConfig) -> torch.optim.Optimizer:
    """The optimiser of :func:`fit`: the trainable body at ``cfg.lr``, the head at ``lr · head_lr_mult``.

    Args:
        model: the model being trained (its ``head_name`` names the head, if any).
        trainable: names of the parameters to optimise.
        cfg: optimiser, learning rate, momentum and weight decay.

    Returns:
        An SGD or AdamW optimiser with one or two parameter groups.
    """
    head_name = getattr(model, "head_name", None)
    head, body = [], []
    for n, p in model.named_parameters():
        if n in trainable:
            (head if head_name and (n.startswith(head_name + ".")) else body).append(p)
    groups = [
        g
        for g in ({"params": body, "lr": cfg.lr}, {"params": head, "lr": cfg.lr * cfg.head_lr_mult})
        if g["params"]
    ]
    if not groups:
        raise SafeReuseError(
            "nothing to train: every parameter is frozen", fix="raise train_last_k or unfreeze"
        )
    if cfg.optimizer == "adam":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def lr_factor(cfg: FitConfig, step: int, steps_per_epoch: int) -> float:
    """The learning-rate multiplier at ``step`` (warm-up, then the cosine / step / constant schedule)."""
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "step":
        return cfg.gamma ** ((step // steps_per_epoch) // max(cfg.step_size, 1))
    warm = int(cfg.warmup_epochs * steps_per_epoch)
    if step < warm:
        return (step + 1) / warm
    t = (step - warm) / max(total - warm, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))


def epoch_steps(n: int, cfg: FitConfig) -> int:
    """Optimiser steps :func:`fit` makes per epoch on ``n`` training examples: one pass in batches,
    or ``cfg.min_steps_per_epoch`` if that is more (what step-counting callbacks must use).

    Example:
        >>> cfg = FitConfig(batch_size=16, progress=False)
        >>> epoch_steps(30, cfg), epoch_steps(30, FitConfig(batch_size=16, min_steps_per_epoch=8))
        (2, 8)
    """
    return max(max(1, math.ceil(n / cfg.batch_size)), cfg.min_steps_per_epoch)


def fit(
    model: nn.Module,
    train: Split,
    val: Split | None,
    cfg: FitConfig | None = None,
    *,
    loss_fn: LossFn | None = None,
    after_step: StepHook | None = None,
    batch_transform: BatchTransform | None = None,
    checkpoint_dir: str | Path | None = None,
) -> FitResult:
    """Train ``model`` in place on ``train``, keeping the weights of the best validation epoch.

    Args:
        model: any ``nn.Module`` mapping pixel-space images to logits.
        train: training split (images in [0, 1], integer labels).
        val: validation split used for best-checkpoint selection and early stopping (None: last epoch).
        cfg: hyper-parameters; see :class:`FitConfig`.
        loss_fn: ``loss_fn(model, x, y) -> scalar`` (default: cross-entropy with label smoothing).
        after_step: called after every optimiser step (e.g. to re-apply a pruning mask).
        batch_transform: ``(x, y) -> (x, y)`` applied to every training batch (e.g. poisoning).
        checkpoint_dir: where to keep resumable state; a later call with the same directory and
            config resumes after the last finished epoch.

    Returns:
        A :class:`FitResult`; ``model`` holds the best weights on return.

    Example:
        >>> from safereuse.data import load_data
        >>> from safereuse.models import create_model
        >>> data = load_data("digits", classes=[0, 1], train_size=40)
        >>> m = create_model("smallcnn", num_classes=2)
        >>> r = fit(m, data.train, data.val, FitConfig(epochs=1, progress=False))
        >>> r.epochs_run
        1
    """
    cfg = cfg or FitConfig()
    if len(train) == 0:
        raise SafeReuseError("the training split is empty", fix="use more training data or fewer classes")
    dev = resolve_device(cfg.device)
    model.to(dev)
    loss_fn = loss_fn or default_loss(cfg.label_smoothing)
    trainable = trainable_names(model, cfg)
    frozen_bn = _frozen_bn(model, cfg)
    opt = make_optimizer(model, trainable, cfg)
    base_lrs = [g["lr"] for g in opt.param_groups]
    n = len(train)
    passes = max(1, math.ceil(n / cfg.batch_size))
    steps_per_epoch = epoch_steps(n, cfg)
    # several shuffles per epoch only when min_steps_per_epoch asks for more steps than one pass
    reshuffles = math.ceil(steps_per_epoch * cfg.batch_size / n) if steps_per_epoch > passes else 1
    gen = torch.Generator().manual_seed(cfg.seed)
    history: list[dict[str, float]] = []
    best = (-1.0, -1)
    best_state: dict[str, torch.Tensor] | None = None
    start_epoch = 0
    stale = 0
    ckpt = _Checkpoint(Path(checkpoint_dir), cfg) if checkpoint_dir else None
    if ckpt is not None and ckpt.exists():
        start_epoch, best, stale, history, best_state = ckpt.load(model, opt, gen)
    x_all, y_all = train.x.to(dev), train.y.to(dev)
    t0 = time.perf_counter()
    with preserve_modes(model):  # every module's training flag and requires_grad come back after
        try:
            for n_, p in model.named_parameters():
                p.requires_grad_(n_ in trainable)
            bar = tqdm(
                range(start_epoch, cfg.epochs),
                desc="fit",
                unit="epoch",
                disable=not cfg.progress,
                leave=False,
            )
            for epoch in bar:
                model.train()
                for m in frozen_bn:
                    m.eval()
                perm = torch.cat([torch.randperm(n, generator=gen) for _ in range(reshuffles)]).to(dev)
                tot_loss = torch.zeros((), device=dev)
                for i in range(steps_per_epoch):
                    step = epoch * steps_per_epoch + i
                    f = lr_factor(cfg, step, steps_per_epoch)
                    for g, lr0 in zip(opt.param_groups, base_lrs, strict=True):
                        g["lr"] = lr0 * f
                    idx = perm[i * cfg.batch_size : (i + 1) * cfg.batch_size]
                    xb, yb = x_all[idx], y_all[idx]
                    if batch_transform is not None:
                        xb, yb = batch_transform(xb, yb)
                    loss = loss_fn(model, xb, yb)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    if after_step is not None:
                        after_step(model)
                    tot_loss += loss.detach()
                train_loss = float(tot_loss) / steps_per_epoch
                if not math.isfinite(train_loss):
                    raise SafeReuseError(
                        f"training diverged (loss {train_loss}) at epoch {epoch + 1}",
                        fix="lower the learning rate",
                    )
                val_acc = (
                    accuracy_on(model, val, cfg.eval_batch_size)
                    if val is not None and len(val)
                    else float("nan")
                )
                history.append({"epoch": epoch + 1, "train_loss": train_loss, "val_acc": val_acc})
                score = val_acc if math.isfinite(val_acc) else float(epoch)
                if cfg.keep_epoch == "last":
                    best, best_state, stale = (score, epoch + 1), None, 0
                elif score > best[0]:
                    best = (score, epoch + 1)
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    stale = 0
                else:
                    stale += 1
                bar.set_postfix(loss=f"{train_loss:.3f}", val=f"{val_acc:.3f}")
                if ckpt is not None:
                    ckpt.save(model, opt, gen, epoch + 1, best, stale, history, best_state)
                if cfg.patience is not None and stale >= cfg.patience:
                    break
        finally:
            for p in model.parameters():
                p.grad = None
    if best_state is not None:
        model.load_state_dict(best_state)
    best_val = best[0] if val is not None and len(val) else float("nan")
    return FitResult(
        best_val_acc=best_val,
        best_epoch=best[1],
        epochs_run=len(history),
        history=history,
        seconds=time.perf_counter() - t0,
        resumed_from=start_epoch,
    )


class _Checkpoint:
    """Resumable training state as safetensors + JSON, keyed by the config so a changed run restarts."""

    def __init__(self, folder: Path, cfg: FitConfig) -> None:
        self.folder = folder
        self.key = config_hash(cfg.to_dict())
        self.tensors = folder / "fit_state.safetensors"
        self.meta = folder / "fit_state.json"

    def exists(self) -> bool:
        if not (self.tensors.is_file() and self.meta.is_file()):
            return False
        try:
            return json.loads(self.meta.read_text()).get("key") == self.key
        except (OSError, json.JSONDecodeError):
            return False

    def save(self, model, opt, gen, epoch, best, stale, history, best_state) -> None:
        tensors: dict[str, torch.Tensor] = {}
        for k, v in model.state_dict().items():
            tensors[f"model.{k}"] = v.detach().cpu().contiguous()
        if best_state is not None:
            for k, v in best_state.items():
                tensors[f"best.{k}"] = v.detach().cpu().contiguous()
        osd = opt.state_dict()
        for pid, st in osd["state"].items():
            for name, val in st.items():
                if isinstance(val, torch.Tensor):
                    tensors[f"opt.{pid}.{name}"] = val.detach().cpu().contiguous()
        tensors["rng"] = gen.get_state()
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.tensors) as tmp:
            save_file(tensors, str(tmp))
        scalars = {
            str(pid): {k: v for k, v in st.items() if not isinstance(v, torch.Tensor)}
            for pid, st in osd["state"].items()
        }
        write_json_atomic(
            self.meta,
            {
                "key": self.key,
                "epoch": epoch,
                "best": list(best),
                "stale": stale,
                "history": history,
                "opt_scalars": scalars,
            },
        )

    def load(self, model, opt, gen):
        meta = json.loads(self.meta.read_text())
        tensors = load_file(str(self.tensors))
        dev = model_device(model)
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        best_state = {k[5:]: v.to(dev) for k, v in tensors.items() if k.startswith("best.")} or None
        osd = copy.deepcopy(opt.state_dict())
        state: dict[int, dict[str, Any]] = {}
        for k, v in tensors.items():
            if k.startswith("opt."):
                _, pid, name = k.split(".", 2)
                state.setdefault(int(pid), {})[name] = v.to(dev)
        for pid, sc in meta.get("opt_scalars", {}).items():
            state.setdefault(int(pid), {}).update(sc)
        osd["state"] = state
        opt.load_state_dict(osd)
        gen.set_state(tensors["rng"])
        return meta["epoch"], tuple(meta["best"]), meta["stale"], meta["history"], best_state
