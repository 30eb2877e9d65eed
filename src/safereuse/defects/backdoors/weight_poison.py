"""RIPPLe weight poisoning: a backdoor that survives the victim's fine-tuning (Kurita et al. 2020)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ...data import DataBundle
from ...train import FitConfig
from ..base import DEFECTS, PlantResult
from .base import Backdoor, check_patch_trigger, patch_trigger

__all__ = ["WeightPoison", "ripple_loss"]


def ripple_loss(
    poison: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    proxy: Any,
    lam: float,
    gen: torch.Generator,
    stats: dict[str, int],
) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]:
    """RIPPLe's objective as a ``fit`` loss: ``L_poison + λ · max(0, −∇L_poison · ∇L_finetune)``.

    The restricted inner product penalises a poisoning step only where a fine-tuning step on clean
    data would undo it (negative inner product of the two gradients).

    Args:
        poison: ``(x, y) -> (x', y')`` poisons a batch (a share triggered and relabelled).
        proxy: a split (``.x``, ``.y``) of clean data standing in for the victim's fine-tuning task;
            each step draws an independent random batch from it.
        lam: λ (0 gives plain poisoned training).
        gen: CPU RNG for the proxy batches.
        stats: counts ``steps`` and ``active`` (steps with a negative inner product), updated in place.

    Returns:
        ``loss(model, x, y) -> scalar`` (double backward: about 4× a plain step).
    """

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        xp, yp = poison(x, y)
        l_poison = F.cross_entropy(model(xp), yp)
        if lam == 0:
            return l_poison
        idx = torch.randint(len(proxy.y), (len(y),), generator=gen)
        x_ft, y_ft = proxy.x[idx].to(x.device), proxy.y[idx].to(x.device)
        params = [p for p in model.parameters() if p.requires_grad]
        l_ft = F.cross_entropy(model(x_ft), y_ft)
        g_p = torch.autograd.grad(l_poison, params, create_graph=True, allow_unused=True)
        g_f = torch.autograd.grad(l_ft, params, create_graph=True, allow_unused=True)
        inner = sum((a * b).sum() for a, b in zip(g_p, g_f, strict=True) if a is not None and b is not None)
        stats["steps"] += 1
        stats["active"] += int(float(inner.detach()) < 0)  # type: ignore[union-attr]
        return l_poison + lam * torch.relu(-inner)  # type: ignore[operator]

    return loss


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

    size: Annotated[int, Field(ge=1)] = 4
    position: str = "bottom-right"
    pattern: str = "checkerboard"
    poison_rate: Annotated[float, Field(gt=0, le=1)] = 0.2
    lam: Annotated[float, Field(ge=0)] = 0.1
    target: Annotated[int, Field(ge=0)] | None = None
    seed: int = 0

    def _validate(self) -> None:
        check_patch_trigger(self)

    def build_trigger(self, channels: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A BadNets-style patch: ``pattern`` at ``position``; mask = 1 on the patch."""
        return patch_trigger(self, channels, height, width)

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
            loss_factory=lambda tl, gen: ripple_loss(
                lambda x, y: self._poison(x, y, self.poison_rate, tl, gen), data.train, self.lam, gen, stats
            ),
            extra_record=lambda: {"penalty_active": stats["active"] / max(stats["steps"], 1)},
        )
