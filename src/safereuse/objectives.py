"""Training objectives injected into :func:`safereuse.train.fit`: adversarial training and FDM.

Robust teachers for CARTL (Chen et al., "Cooperative and Adversarially-Robust Transfer Learning",
ICML 2021) are trained by the one ``fit()`` with a different ``loss_fn`` (DESIGN principle 11), so
resumability, progress bars and best-epoch selection are the same as for every other model.

- **Madry adversarial training** (Madry et al., "Towards Deep Learning Models Resistant to
  Adversarial Attacks", ICLR 2018): each batch is replaced by its L∞ PGD adversary — crafted with the
  model in eval mode and frozen parameters (:func:`safereuse.defects.attacks.pgd_attack`), every
  module's training flag restored afterwards — and the loss is the cross-entropy on the adversarial
  inputs only.
- **FDM** (feature distance minimisation, CARTL §4.1): ``+ (λ/√d) · ‖φ(x) − φ(x')‖₂`` where φ is the
  input of block ``L − k + 1`` of ``model.blocks()`` — the output of the part that a last-``k``
  transfer freezes — and ``d`` its size per sample. Both passes run in train mode and the clean
  features are *not* detached (as the original code).

**Per-sample mean, not the batch sum.** The original code sums ``‖Δ‖₂/√d`` over the batch
(``λ · Σ_batch ‖Δ_i‖₂ / √d``), so its λ silently scales with the batch size. Here the term is the
mean over the batch, ``λ · mean_i ‖Δ_i‖₂ / √d``: the original's λ at batch size B is our ``λ · B``,
e.g. the paper's λ = 0.005 and 0.01 at B = 128 are ``fdm_lambda`` = 0.64 and 1.28.

**Budget for [0, 1] grey images.** Everything is in pixel units (the models normalise inside). The
default is CARTL's CIFAR budget in pixel space: ε = 8/255, step 2/255 (ε/4), 7 steps, uniform random
start — the same ε as the ``pgd`` audit's default, so the teacher is trained for the budget its
*Rob* is measured at. The original code's MNIST budget (ε = 0.15, step 0.01 in pixel units) is
``at_eps=0.15 at_alpha=0.01``; with 7 steps it travels only 0.07, so it relies on the random start.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from .data import Split
from .defects.attacks import PGD, craft_batched, pgd_attack
from .errors import SafeReuseError
from .metrics import wilson_interval
from .models import ReusableModel
from .models.capture import capture
from .params import Validated
from .train import LossFn, predict_labels

#: CARTL's L∞ training budget in pixel units (ε = 8/255, step ε/4 = 2/255, PGD-7).
DEFAULT_AT_EPS = 8 / 255
DEFAULT_AT_STEPS = 7


def fdm_term(clean: torch.Tensor, adv: torch.Tensor, lam: float) -> torch.Tensor:
    """FDM's penalty ``(λ/√d) · mean_i ‖φ(x_i) − φ(x'_i)‖₂`` (per-sample mean over the batch).

    Args:
        clean: features of the clean inputs ``[N, ...]``.
        adv: features of the adversarial inputs, same shape.
        lam: λ (per-sample-mean scale: the original's batch-sum λ times the batch size).

    Returns:
        A scalar tensor (0 when ``adv`` equals ``clean``), differentiable w.r.t. both.

    Example:
        >>> a = torch.ones(2, 4)
        >>> float(fdm_term(a, a, 1.0)), float(fdm_term(a, torch.zeros(2, 4), 0.5))
        (0.0, 0.5)
    """
    d = clean[0].numel() if len(clean) else 1
    diff = (clean - adv).flatten(1)
    # sqrt of the squared norm plus 0 would have an infinite slope at Δ = 0; vector_norm's gradient
    # there is defined as 0, so an x' = x batch trains like plain CE
    return lam / math.sqrt(d) * torch.linalg.vector_norm(diff, dim=1).mean()


def fdm_site(model: nn.Module, k: int) -> tuple[str, nn.Module]:
    """The module whose *input* is FDM's φ for a last-``k`` transfer: the first module of block
    ``L − k + 1`` (1-based) of ``model.blocks()``.

    Args:
        model: a :class:`~safereuse.models.ReusableModel`.
        k: the number of blocks the transfer fine-tunes (1: the head only, φ = the penultimate
            features), between 1 and ``L − 1`` (at least one block must stay frozen).

    Returns:
        ``(block name, module)``.

    Raises:
        SafeReuseError: not a contract model, or ``k`` out of range.

    Example:
        >>> from safereuse.models import create_model
        >>> fdm_site(create_model("smallcnn", num_classes=3), 1)[0]
        'fc'
    """
    if not isinstance(model, ReusableModel):
        raise SafeReuseError(
            f"FDM needs a model with blocks(); {type(model).__name__} has none",
            fix="wrap it with safereuse.models.adapt(module, head=..., blocks=[...])",
        )
    blocks = model.blocks()
    n = len(blocks)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n - 1:
        raise SafeReuseError(
            f"fdm_k={k!r} is out of range for {type(model).__name__} with {n} blocks",
            fix=f"choose fdm_k between 1 and {n - 1} (the number of blocks the transfer fine-tunes)",
        )
    name = blocks[n - k][0]
    first = name.split("+")[0]
    return name, model.get_submodule(first)


@dataclass
class AdversarialTraining(Validated):
    """Madry PGD adversarial training, optionally with CARTL's FDM term, as a ``fit`` loss.

    Args:
        at_eps: L∞ budget in pixel units (default 8/255; see the module docstring).
        at_alpha: PGD step; None → ``at_eps / 4`` (2/255 at the default ε).
        at_steps: PGD iterations while training (CARTL: 7).
        at_random_start: start each attack from a uniform point of the ε-ball (Madry: yes).
        fdm_lambda: FDM weight λ (per-sample mean, see the module docstring; 0: no FDM).
        fdm_k: blocks the later transfer fine-tunes; φ is the input of block ``L − k + 1``.
            Required when ``fdm_lambda > 0``.
        seed: seed of the random starts (a resumed run restarts this stream, so it is not bit-identical
            to an uninterrupted one).

    Example:
        >>> from safereuse.data import load_data
        >>> from safereuse.models import create_model
        >>> from safereuse.train import FitConfig, fit
        >>> data = load_data("digits", classes=[0, 1], train_size=40)
        >>> m = create_model("smallcnn", num_classes=2)
        >>> at = AdversarialTraining(at_steps=2, fdm_lambda=0.5, fdm_k=1)
        >>> fit(m, data.train, None, FitConfig(epochs=1, progress=False), loss_fn=at.loss_fn(m)).epochs_run
        1
        >>> at.record(m)["fdm"]["layer"]
        'fc'
    """

    at_eps: Annotated[float, Field(ge=0, le=1)] = DEFAULT_AT_EPS
    at_alpha: Annotated[float, Field(ge=0, le=1)] | None = None
    at_steps: Annotated[int, Field(ge=1)] = DEFAULT_AT_STEPS
    at_random_start: bool = True
    fdm_lambda: Annotated[float, Field(ge=0)] = 0.0
    fdm_k: Annotated[int, Field(ge=1)] | None = None
    seed: int = 0

    def _what(self) -> str:
        return "adversarial training"

    def __post_init__(self) -> None:  # runs after Validated's field checks
        if self.at_alpha is None:
            self.at_alpha = self.at_eps / 4
        if self.fdm_lambda > 0 and self.fdm_k is None:
            raise SafeReuseError(
                f"fdm_lambda={self.fdm_lambda} needs fdm_k",
                fix="add fdm_k=K, the number of blocks the transfer fine-tunes",
            )

    def config(self) -> dict[str, Any]:
        """The resolved settings (α filled in)."""
        return asdict(self)

    def check(self, model: nn.Module) -> None:
        """Fail early (before training) when FDM's ``fdm_k`` does not fit ``model``."""
        if self.fdm_k is not None:
            fdm_site(model, self.fdm_k)

    def record(self, model: nn.Module) -> dict[str, Any]:
        """What a manifest keeps: the attack budget and FDM (with φ's block name and reduction)."""
        rec: dict[str, Any] = {
            "name": "madry-pgd",
            "norm": "linf",
            "eps": self.at_eps,
            "alpha": self.at_alpha,
            "steps": self.at_steps,
            "random_start": self.at_random_start,
            "loss": "cross-entropy on adversarial inputs only",
            "pixel_units": True,
            "fdm": None,
        }
        if self.fdm_k is not None:
            name, _ = fdm_site(model, self.fdm_k)
            rec["fdm"] = {"lambda": self.fdm_lambda, "k": self.fdm_k, "layer": name, "reduction": "mean"}
        return rec

    def loss_fn(self, model: nn.Module) -> LossFn:
        """``loss(model, x, y)`` for :func:`~safereuse.train.fit`: CE on PGD inputs (+ FDM).

        Raises:
            SafeReuseError: ``fdm_k`` out of range for ``model``.
        """
        site = fdm_site(model, self.fdm_k) if self.fdm_k is not None and self.fdm_lambda > 0 else None
        gen = torch.Generator().manual_seed(int(self.seed))
        eps, alpha, steps, lam = self.at_eps, float(self.at_alpha or 0.0), self.at_steps, self.fdm_lambda
        rs = self.at_random_start

        def loss(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            # pgd_attack restores every module's flag (fit may hold frozen BatchNorm layers in eval);
            # adversarial training follows Madry et al.: the last iterate, not the strongest
            x_adv = pgd_attack(m, x, y, eps, alpha, steps, "linf", rs, "ce", gen, keep="last")
            if site is None:
                return F.cross_entropy(m(x_adv), y)
            with capture(m, [site], inputs=True, outputs=False, grad=True) as cap:
                m(x)  # clean pass, train mode (its BN statistics update, as the original)
                logits = m(x_adv)
            clean, adv = cap.inputs()
            return F.cross_entropy(logits, y) + fdm_term(clean, adv, lam)

        return loss


def robust_accuracy_on(
    model: nn.Module,
    split: Split,
    *,
    eps: float = DEFAULT_AT_EPS,
    steps: int = 20,
    max_samples: int | None = 500,
    batch_size: int = 256,
    seed: int = 0,
) -> dict[str, Any]:
    """CARTL's *Rob*: accuracy under white-box L∞ PGD (random start, step ε/4) on a split's first
    ``max_samples`` images — the :class:`~safereuse.defects.attacks.PGD` defect of the audit.

    Args:
        model: the classifier (pixel-space input).
        split: images and labels (the test split).
        eps: L∞ budget in pixel units.
        steps: PGD iterations (CARTL evaluates 20 and 100).
        max_samples: images attacked (None: all).
        batch_size: images per attack batch.
        seed: seed of the random starts.

    Returns:
        ``{"value", "n", "ci", "attack": {the PGD defect's resolved parameters}}``; ``value`` in [0, 1].

    Example:
        >>> from safereuse.data import load_data
        >>> from safereuse.models import create_model
        >>> test = load_data("digits", classes=[0, 1]).test
        >>> r = robust_accuracy_on(create_model("smallcnn", num_classes=2), test, steps=2, max_samples=8)
        >>> r["n"], r["attack"]["steps"], 0.0 <= r["value"] <= 1.0
        (8, 2, True)
    """
    attack = PGD(eps=eps, steps=steps, seed=seed)
    x, y = split.x[:max_samples], split.y[:max_samples]
    x_adv = craft_batched(attack, model, x, y, batch_size=batch_size, seed=seed)
    correct = int((predict_labels(model, x_adv, batch_size) == y).sum())
    n = len(y)
    return {
        "value": correct / n if n else float("nan"),
        "n": n,
        "ci": list(wilson_interval(correct, n)),
        "attack": attack.config(),
    }


__all__ = [
    "DEFAULT_AT_EPS",
    "DEFAULT_AT_STEPS",
    "AdversarialTraining",
    "fdm_site",
    "fdm_term",
    "robust_accuracy_on",
]
