"""Exploratory defects: adversarial inputs crafted against a fixed model.

Everything works in ``[0, 1]`` pixel space (models normalise internally, see
:mod:`safereuse.models.contract`), so ε and step sizes are pixel units.

- :func:`pgd_attack` — batched L∞ / L2 projected gradient ascent on any per-sample loss (Madry et al.,
  ICLR 2018); FGSM is its one-step case (Goodfellow et al., ICLR 2015). CARTL's adversarial training
  calls it directly.
- :class:`WhiteBoxAttack` — crafted on the model under evaluation (the *student* itself); probes
  DIR and *Rob*: :class:`PGD`, :class:`FGSM` (and the ART attacks of :mod:`.art_attacks`).
- :class:`TransferredAttack` — crafted on the *teacher*, transferred to the student; probes DIR
  (its :attr:`~TransferredAttack.dir_form`):
  :class:`Penultimate`, the task-agnostic penultimate-layer attack of Rezaei & Liu (ICLR 2020), as
  used by ReMoS / SeaM (PGD on the teacher's ``features()``), and :class:`Mimic`, the
  feature-mimicking attack of Wang et al. (USENIX Security 2018): move ``f(x')`` towards
  ``f(x_guide)`` of another class's image.

All crafting runs the model in eval mode with every parameter's ``requires_grad`` switched off and
restores both afterwards (:func:`attack_mode`); gradients are taken w.r.t. the input only, so no
parameter's ``.grad`` is touched. Loops run over iterations, never over samples.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import Annotated, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..device import model_device
from ..errors import SafeReuseError
from ..metrics import Rate, dir_adversarial, robust_accuracy
from ..models import check_contract
from ..utils import analysis_mode
from .base import DEFECTS, Defect
from .cache import craft_batched
from .checks import check_eps, check_norm, check_positive_int
from .probe import ProbeContext, ProbeResult

AttackLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
"""``loss(model, x_adv, y) -> [N]`` per-sample loss (or a scalar) that the attack *maximises*."""

Norm = Literal["linf", "l2"]

DirForm = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], Rate]
"""A DIR form of :mod:`safereuse.metrics`: ``form(y, s_clean, s_adv) -> Rate``."""


# -- shared machinery ------------------------------------------------------------------------------
def attack_mode(model: nn.Module) -> AbstractContextManager[nn.Module]:
    """Eval mode and frozen parameters while crafting, autograd on for input gradients
    (:func:`~safereuse.utils.analysis_mode` with ``grad=True``); flags restored on exit."""
    return analysis_mode(model, grad=True)


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    """Per-sample L2 norm, shaped ``[N, 1, 1, ...]`` for broadcasting."""
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (t.dim() - 1)))


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project ``x_adv`` onto the ε-ball around ``x`` (L∞ or L2) and the pixel range [0, 1]."""
    delta = x_adv - x
    delta = delta.clamp(-eps, eps) if norm == "linf" else delta * (eps / _flat_norm(delta)).clamp(max=1.0)
    return (x + delta).clamp(0.0, 1.0)


def random_init(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None) -> torch.Tensor:
    """A uniform random point of the ε-ball (L∞: per pixel; L2: random direction, uniform radius).

    Noise is drawn on the CPU with ``generator`` so results do not depend on the device.
    """
    if norm == "linf":
        noise = (torch.rand(x.shape, generator=generator) * 2 - 1) * eps
    else:
        d = torch.randn(x.shape, generator=generator)
        r = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), generator=generator)
        noise = d / _flat_norm(d) * r * eps
    return (x + noise.to(device=x.device, dtype=x.dtype)).clamp(0.0, 1.0)


def ce_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy of ``model(x)`` against ``y`` (the default attack loss)."""
    return F.cross_entropy(model(x), y, reduction="none")


def pgd_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    alpha: float,
    steps: int,
    norm: Norm = "linf",
    random_start: bool = True,
    loss: Literal["ce"] | AttackLoss = "ce",
    generator: torch.Generator | None = None,
    keep: Literal["strongest", "last"] = "strongest",
) -> torch.Tensor:
    """Projected gradient ascent inside an ε-ball (Madry et al., ICLR 2018), batched.

    Each step: ``x ← Π_{B(x0, ε) ∩ [0,1]}(x + α · d)`` with ``d = sign(∇)`` for L∞ or
    ``∇ / ‖∇‖₂`` (per sample) for L2. The per-sample losses are summed, so every sample's trajectory
    is independent of the others in the batch (BatchNorm runs in eval mode).

    Which iterate is returned (``keep="strongest"``, the default): for each input, the *first
    iterate that flips its prediction* (``argmax ≠ y``, the loss ``"ce"`` only), else the iterate of
    *highest loss*; the candidates are the start point and every step's result. Since one more step
    only adds candidates along the same trajectory, more steps (same start, same ``alpha``) never
    give a weaker attack — the last iterate can be (PGD-100 came out weaker than PGD-20 before).
    A loss that returns a scalar has no per-input strength, so the last iterate is returned then.
    ``keep="last"`` returns the last iterate (adversarial training, which follows Madry et al.).

    The model runs in eval mode with frozen parameters (:func:`attack_mode`); its ``training`` flag
    and ``requires_grad`` flags are restored, and no parameter ``.grad`` is written. Safe to call
    from inside a training loop (CARTL's adversarial training).

    Args:
        model: maps pixel-space images to logits (or whatever ``loss`` consumes).
        x: clean images ``[N, C, H, W]`` in [0, 1], on the model's device.
        y: labels ``[N]`` (passed to ``loss``).
        eps: radius of the ball, pixel units (L∞: e.g. 8/255; L2: e.g. 1.0).
        alpha: step size, pixel units.
        steps: number of iterations (1 with ``alpha = eps`` and no random start is FGSM).
        norm: ``linf`` or ``l2``.
        random_start: start from a uniform random point of the ball.
        loss: ``"ce"`` (untargeted cross-entropy) or ``loss(model, x_adv, y) -> [N]`` to maximise.
        generator: CPU RNG for the random start (default: the global one).
        keep: ``strongest`` (each input's strongest iterate, see above) or ``last``.

    Returns:
        Adversarial images, same shape/device/dtype as ``x``, detached.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
        >>> x, y = torch.rand(16, 3, 2, 2), torch.randint(0, 3, (16,))
        >>> def robust_acc(steps):  # the same random start for every step count
        ...     x_adv = pgd_attack(model, x, y, 0.1, 0.02, steps, generator=torch.Generator().manual_seed(0))
        ...     return float((model(x_adv).argmax(1) == y).float().mean())
        >>> rob = [robust_acc(k) for k in (1, 5, 20)]
        >>> rob == sorted(rob, reverse=True)
        True
    """
    check_norm(norm)
    eps = check_eps(eps, norm=norm)
    if keep not in ("strongest", "last"):
        raise ValueError(f"keep={keep!r} is neither 'strongest' nor 'last'")
    ce = loss == "ce"
    loss_fn: AttackLoss = ce_loss if ce else loss  # type: ignore[assignment]
    x = x.detach()
    best = _Strongest(keep == "strongest")
    with attack_mode(model):
        x_adv = random_init(x, eps, norm, generator) if random_start else x.clone()
        for _ in range(steps):
            x_adv.requires_grad_(True)
            with torch.enable_grad():
                per, flipped = _losses(model, loss_fn, x_adv, y, ce)
                (grad,) = torch.autograd.grad(per.sum(), x_adv)
            best.offer(x_adv, per, flipped)
            with torch.no_grad():
                step = grad.sign() if norm == "linf" else grad / _flat_norm(grad)
                x_adv = project(x_adv.detach() + alpha * step, x, eps, norm)
        if best.active:  # the last step's result is a candidate too
            with torch.no_grad():
                best.offer(x_adv, *_losses(model, loss_fn, x_adv, y, ce))
    return best.result(x_adv)


def _losses(
    model: nn.Module, loss_fn: AttackLoss, x_adv: torch.Tensor, y: torch.Tensor, ce: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-input loss at ``x_adv`` and, for cross-entropy, which inputs' predictions differ from ``y``."""
    if not ce:
        return loss_fn(model, x_adv, y), None
    logits = model(x_adv)  # the same arithmetic as ce_loss, keeping the logits for the flip test
    return F.cross_entropy(logits, y, reduction="none"), logits.detach().argmax(1) != y


class _Strongest:
    """Each input's strongest PGD iterate so far: the first that flips it, else the highest loss."""

    def __init__(self, active: bool) -> None:
        self.active = active
        self.x: torch.Tensor | None = None

    def offer(self, x_adv: torch.Tensor, per: torch.Tensor, flipped: torch.Tensor | None) -> None:
        if not self.active:
            return
        if per.dim() != 1 or len(per) != len(x_adv):  # a scalar loss: no per-input strength
            self.active = False
            return
        per = per.detach()
        flipped = torch.zeros_like(per, dtype=torch.bool) if flipped is None else flipped
        if self.x is None:
            self.x, self.loss, self.done = x_adv.detach().clone(), per.clone(), flipped.clone()
            return
        take = ~self.done & (flipped | (per > self.loss))
        self.x[take] = x_adv.detach()[take]
        self.loss[take] = per[take]
        self.done |= flipped

    def result(self, last: torch.Tensor) -> torch.Tensor:
        return self.x if self.active and self.x is not None else last.detach()


def fgsm_attack(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: Norm = "linf",
    loss: Literal["ce"] | AttackLoss = "ce",
) -> torch.Tensor:  # fmt: skip
    """Fast gradient (sign) method (Goodfellow et al., ICLR 2015): one step of size ε, no random start.

    Args:
        model, x, y, norm, loss: as in :func:`pgd_attack`.
        eps: budget and step size.

    Returns:
        Adversarial images.
    """
    return pgd_attack(model, x, y, eps, eps, 1, norm, random_start=False, loss=loss)


# -- defect bases ----------------------------------------------------------------------------------
@dataclass
class ExploratoryDefect(Defect):
    """An input-crafting defect: ``craft(model, x, y) -> x_adv``.

    Subclass :class:`TransferredAttack` (crafted on the teacher, transferred to the student) or
    :class:`WhiteBoxAttack` (crafted on the model being evaluated) for the probe that goes with it.
    """

    def craft(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:  # pragma: no cover - abstract
        """Craft defect inputs for the batch ``x`` (labels ``y``) against ``model``.

        Args:
            model: the model to attack (teacher for transferred defects, student for white-box ones).
            x: images ``[N, C, H, W]`` in [0, 1] (any device: moved to the model's).
            y: labels ``[N]`` in the label space of ``x``'s dataset.
            generator: CPU RNG for random starts (default: one seeded with the defect's ``seed``).

        Returns:
            The crafted images, on ``x``'s device.
        """
        raise NotImplementedError

    def _generator(self, generator: torch.Generator | None) -> torch.Generator:
        if generator is not None:
            return generator
        return torch.Generator().manual_seed(int(getattr(self, "seed", 0)))


@dataclass
class TransferredAttack(ExploratoryDefect):
    """Crafted on the teacher over the audited images, then transferred black-box to the student.

    Probe: DIR = :attr:`dir_form` ``(y, s(x), s(x_adv))`` over the student's clean-correct set; the
    teacher reference is the same form on the teacher (same task only). The crafted set depends on the
    teacher and the images only, so every student of a teacher shares it (``crafted_on_teacher``).
    """

    kind: ClassVar[str] = "adversarial"
    crafted_on_teacher: ClassVar[bool] = True
    dir_form: ClassVar[DirForm] = staticmethod(dir_adversarial)
    """The DIR form: flips away from the label (adversarial) or from the clean prediction (NC)."""

    def probe(self, ctx: ProbeContext) -> ProbeResult:  # noqa: D102 - see Defect.probe
        x_adv, cached = ctx.craft(self, "teacher")
        rates = {"dir": self.dir_form(ctx.y, ctx.student_clean, ctx.predict(ctx.student.model, x_adv))}
        if ctx.teacher_clean is not None:
            rates["teacher"] = self.dir_form(ctx.y, ctx.teacher_clean, ctx.predict(ctx.teacher.model, x_adv))
        return ProbeResult(rates, crafted_on="teacher", cached=cached)

    def precraft(self, ctx: ProbeContext) -> None:  # noqa: D102 - see Defect.precraft
        ctx.craft(self, "teacher")


@dataclass
class WhiteBoxAttack(ExploratoryDefect):
    """Crafted on the model under evaluation itself (CARTL's robustness setting).

    Probe: crafted on the student; DIR (adversarial form) and *Rob*, the accuracy under attack. The
    teacher reference (same task only) is the same white-box attack on the teacher.
    """

    kind: ClassVar[str] = "whitebox"

    def probe(self, ctx: ProbeContext) -> ProbeResult:  # noqa: D102 - see Defect.probe
        ctx = subset_context(ctx, getattr(self, "max_samples", None))
        x_adv, cached = ctx.craft(self, "student")
        s_adv = ctx.predict(ctx.student.model, x_adv)
        rates = {
            "dir": dir_adversarial(ctx.y, ctx.student_clean, s_adv),
            "rob": robust_accuracy(ctx.y, s_adv),
        }
        if ctx.teacher_clean is not None:
            xt, _ = ctx.craft(self, "teacher")
            rates["teacher"] = dir_adversarial(ctx.y, ctx.teacher_clean, ctx.predict(ctx.teacher.model, xt))
        return ProbeResult(rates, crafted_on="student", cached=cached)


def subset_context(ctx: ProbeContext, max_samples: int | None) -> ProbeContext:
    """``ctx`` restricted to ``max_samples`` evenly spaced audited images (all when None or more).

    Lets an expensive attack (PGD-100, AutoAttack) run on a subset of the audit's images in the same
    audit as a cheaper one; the subset is deterministic, a subset of the audit's own, and the same
    for every model, so rows stay paired across students.

    Example:
        >>> from safereuse.defects.probe import ProbeContext
        >>> ctx = ProbeContext(None, None, torch.zeros(10, 1, 2, 2), torch.arange(10), torch.arange(10),
        ...                    None, False, {}, torch.device("cpu"))
        >>> subset_context(ctx, 4).y.tolist(), subset_context(ctx, None) is ctx
        ([0, 2, 5, 7], True)
    """
    n = len(ctx.x)
    if max_samples is None or max_samples >= n:
        return ctx
    idx = torch.arange(max_samples) * n // max_samples
    return replace(
        ctx,
        x=ctx.x[idx],
        y=ctx.y[idx],
        student_clean=ctx.student_clean[idx],
        teacher_clean=None if ctx.teacher_clean is None else ctx.teacher_clean[idx],
        _digests=ctx._digests,  # the models are the same: keep their content hashes
    )


# -- white-box ---------------------------------------------------------------------------------------
_DEFAULT_EPS = {"linf": 8 / 255, "l2": 1.0}


@DEFECTS.register("pgd", "white-box PGD on the student (L∞/L2), for robust accuracy")
@dataclass
class PGD(WhiteBoxAttack):
    """White-box PGD on the model under evaluation (CARTL's *Rob*; Madry et al., ICLR 2018).

    Args:
        norm: ``linf`` or ``l2``.
        eps: budget in pixel units; None → 8/255 for L∞ (CARTL's setting) or 1.0 for L2 (a 28×28
            grey image's L∞ 8/255 corner has L2 norm 0.88, so 1.0 is a comparable budget).
        alpha: step size; None → ε/4 for L∞ (= 2/255 at ε = 8/255, CARTL) or 2.5·ε/steps for L2
            (Madry's rule of thumb).
        steps: iterations (CARTL: 20 and 100).
        random_start: uniform random start inside the ball.
        seed: seed of the random start.
        max_samples: attack only this many of the audited images (evenly spaced, a subset of the
            audit's; None: all) — e.g. PGD-100 on a subset in the same audit as PGD-20 on all.
    """

    norm: Literal["linf", "l2"] = "linf"
    eps: float | None = None
    alpha: float | None = None
    steps: Annotated[int, Field(ge=1)] = 20
    random_start: bool = True
    seed: int = 0
    max_samples: Annotated[int, Field(ge=1)] | None = None

    def __post_init__(self) -> None:
        self.eps = check_eps(_DEFAULT_EPS[self.norm] if self.eps is None else self.eps, norm=self.norm)
        if self.alpha is None:
            self.alpha = self.eps / 4 if self.norm == "linf" else 2.5 * self.eps / self.steps
        self.alpha = check_eps(self.alpha, "alpha", self.norm)

    def craft(self, model, x, y, generator=None):  # noqa: D102 - see ExploratoryDefect.craft
        dev = model_device(model)
        out = pgd_attack(
            model, x.to(dev), y.to(dev), self.eps, self.alpha, self.steps, self.norm,  # type: ignore[arg-type]
            self.random_start, "ce", self._generator(generator),
        )  # fmt: skip
        return out.to(x.device)


@DEFECTS.register("fgsm", "white-box fast gradient sign method on the student")
@dataclass
class FGSM(WhiteBoxAttack):
    """White-box fast gradient sign method (Goodfellow et al., ICLR 2015): one ε-step, deterministic.

    Args:
        norm: ``linf`` or ``l2`` (fast gradient method with a normalised step).
        eps: budget = step, pixel units; None → 8/255 (L∞) or 1.0 (L2), as :class:`PGD`.
    """

    norm: Literal["linf", "l2"] = "linf"
    eps: float | None = None

    def __post_init__(self) -> None:
        self.eps = check_eps(_DEFAULT_EPS[self.norm] if self.eps is None else self.eps, norm=self.norm)

    def craft(self, model, x, y, generator=None):  # noqa: D102
        dev = model_device(model)
        return fgsm_attack(model, x.to(dev), y.to(dev), self.eps, self.norm).to(x.device)  # type: ignore[arg-type]


# -- transferred feature-space attacks -------------------------------------------------------------
def penultimate_loss(neuron: int = 0, target: float = 1000.0, others: float = 0.1) -> AttackLoss:
    """Rezaei & Liu's objective on ``features()``: ``−[(f_n − m)² + λ · mean_{k≠n} f_k²]`` per sample.

    Maximising it drives feature unit ``n`` towards ``m`` and the others towards zero.
    """

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        f = model.features(x).flatten(1)  # type: ignore[operator]
        rest = torch.cat([f[:, :neuron], f[:, neuron + 1 :]], dim=1)
        return -((f[:, neuron] - target) ** 2 + others * rest.pow(2).mean(1))

    return loss


@DEFECTS.register(
    "penultimate", "penultimate-layer guided task-agnostic attack on the teacher (Rezaei & Liu 2020)"
)
@dataclass
class Penultimate(TransferredAttack):
    """Penultimate-layer guided, task-agnostic attack (Rezaei & Liu, ICLR 2020; ReMoS, SeaM).

    White-box PGD-L∞ on the teacher's feature extractor only (no head), maximising
    ``−[(f_n(x') − m)² + 0.1 · mean_{k≠n} f_k(x')²]``: one penultimate unit is driven to ``m`` and
    the rest to zero, so any head fine-tuned on top sees an out-of-distribution feature vector.
    Then transferred black-box to the student.

    The artifact's settings are for ImageNet-normalised 224 px inputs: ε = 0.1, 40 iterations, step
    0.01, random start. In pixel space ε = 0.1 · σ ≈ 0.023 for ImageNet's σ ≈ 0.226; for 28 px grey
    images we use the conventional ε = 8/255 ≈ 0.031 and keep the artifact's ratios: step = ε/10
    and 40 iterations (4 ε of travel).

    Args:
        eps: L∞ budget in pixel units (default 8/255).
        alpha: step size; None → ε/10.
        steps: iterations (default 40).
        neuron: the feature unit driven high (the published code uses unit 0).
        target: the value ``m`` it is driven to (1000).
        others: weight λ of the other units' squared mean (0.1).
        random_start: start from a uniform point of the ε-ball (artifact: yes).
        seed: seed of the random start.
    """

    eps: float = 8 / 255
    alpha: float | None = None
    steps: Annotated[int, Field(ge=1)] = 40
    neuron: int = 0
    target: float = 1000.0
    others: float = 0.1
    random_start: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        self.eps = check_eps(self.eps)
        self.alpha = check_eps(self.eps / 10 if self.alpha is None else self.alpha, "alpha")
        if isinstance(self.neuron, bool) or not isinstance(self.neuron, int) or self.neuron < 0:
            raise SafeReuseError(f"neuron={self.neuron!r} must be a non-negative integer", fix="e.g. 0")

    def craft(self, model, x, y, generator=None):  # noqa: D102
        m = check_contract(model)
        if self.neuron >= m.feature_dim:
            raise SafeReuseError(
                f"neuron {self.neuron} does not exist: the penultimate layer has {m.feature_dim} units",
                fix=f"choose neuron between 0 and {m.feature_dim - 1}",
            )
        dev = model_device(m)
        out = pgd_attack(
            m, x.to(dev), y.to(dev), self.eps, self.alpha, self.steps, "linf", self.random_start,  # type: ignore[arg-type]
            penultimate_loss(self.neuron, self.target, self.others), self._generator(generator),
            keep="last",  # a transfer set: its recorded DIRs come from the last iterate (item 8 is PGD)
        )  # fmt: skip
        return out.to(x.device)


def guide_indices(y: torch.Tensor) -> torch.Tensor:
    """For each sample, the next sample (cyclically, in batch order) with a different label.

    Deterministic and vectorised (an ``[N, N]`` distance table). A sample whose label is the only one
    in the batch gets its cyclic neighbour ``i + 1`` (itself when ``N = 1``).

    Example:
        >>> guide_indices(torch.tensor([0, 0, 1, 2, 2])).tolist()
        [2, 2, 3, 0, 0]
    """
    n = len(y)
    i = torch.arange(n, device=y.device)
    dist = (i[None, :] - i[:, None]) % n  # dist[a, b]: steps from a forward to b
    dist = torch.where(dist == 0, n, dist)
    other = y[None, :] != y[:, None]
    dist = torch.where(other, dist, 2 * n + dist)  # prefer another class, else the next sample
    return dist.argmin(1)


@DEFECTS.register("mimic", "feature-mimicking attack towards another class's features (Wang et al. 2018)")
@dataclass
class Mimic(TransferredAttack):
    """Feature-mimicking attack (Wang et al., "With Great Training Comes Great Vulnerability",
    USENIX Security 2018): minimise ``‖f(x') − f(x_guide)‖₂`` on the teacher's penultimate features,
    so the student's head sees another class's representation.

    Guides are chosen deterministically from the batch (:func:`guide_indices`: the next sample of a
    different label). Budget and schedule as :class:`Penultimate`.

    Args:
        eps: L∞ budget, pixel units (8/255).
        alpha: step; None → ε/10.
        steps: iterations (40).
        random_start: uniform random start (yes).
        seed: seed of the random start.
    """

    eps: float = 8 / 255
    alpha: float | None = None
    steps: Annotated[int, Field(ge=1)] = 40
    random_start: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        self.eps = check_eps(self.eps)
        self.alpha = check_eps(self.eps / 10 if self.alpha is None else self.alpha, "alpha")

    def craft(self, model, x, y, generator=None):  # noqa: D102
        m = check_contract(model)
        dev = model_device(m)
        xd, yd = x.to(dev), y.to(dev)
        with analysis_mode(m):
            goal = m.features(xd[guide_indices(yd)]).flatten(1)

        def loss(model: nn.Module, xa: torch.Tensor, _y: torch.Tensor) -> torch.Tensor:
            return -(model.features(xa).flatten(1) - goal).norm(dim=1)  # type: ignore[operator]

        out = pgd_attack(
            m, xd, yd, self.eps, self.alpha, self.steps, "linf", self.random_start, loss,  # type: ignore[arg-type]
            self._generator(generator), keep="last",  # a transfer set, as Penultimate
        )  # fmt: skip
        return out.to(x.device)


__all__ = [
    "FGSM",
    "PGD",
    "AttackLoss",
    "DirForm",
    "ExploratoryDefect",
    "Mimic",
    "Penultimate",
    "TransferredAttack",
    "WhiteBoxAttack",
    "attack_mode",
    "ce_loss",
    "check_eps",
    "check_norm",
    "check_positive_int",
    "craft_batched",
    "subset_context",
    "fgsm_attack",
    "guide_indices",
    "model_device",
    "penultimate_loss",
    "pgd_attack",
    "project",
    "random_init",
]
