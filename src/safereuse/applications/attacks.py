"""The attacks NNSlicer's detection is evaluated on, beyond the audit's defects.

The paper (spec ``nnslicer.md``, "Applications" 1) uses 17 attacks. Those safereuse already has are
the defects of :data:`safereuse.defects.DEFECTS` (``fgsm``, ``pgd``, ``deepfool`` (L2), ``cw``,
``penultimate``); the others are here, as white-box attacks crafted on the model under test, in
:data:`ATTACKS` (not defects: they serve the detection study only):

- ``jsma`` — Jacobian saliency map (Papernot et al., EuroS&P 2016), ART ``SaliencyMapMethod``;
- ``boundary`` — decision-based boundary attack (Brendel et al., ICLR 2018), ART ``BoundaryAttack``;
- ``spatial`` — rotation + translation search (Engstrom et al., ICML 2019), ART
  ``SpatialTransformation``;
- ``pixel`` — few-pixel differential evolution (Su et al., 2019), ART ``PixelAttack``;
- ``deepfool-linf`` — DeepFool's L∞ form (Moosavi-Dezfooli et al., CVPR 2016, §3.3: the step
  ``|f'_l| / ‖w'_l‖₁ · sign(w'_l)``), ours, batched;
- ``gaussian-noise`` / ``gaussian-blur`` — the paper's natural-corruption "attacks".

:func:`make_attack` resolves a name here first, then in the defect registry, and
:data:`PAPER_ATTACKS` is the default list of the detection experiment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ..defects.art_attacks import ArtAttack
from ..defects.attacks import (
    ExploratoryDefect,
    WhiteBoxAttack,
    attack_mode,
    check_eps,
    check_positive_int,
    model_device,
)
from ..errors import SafeReuseError
from ..registry import Registry

ATTACKS: Registry[type[ExploratoryDefect]] = Registry("attack", "safereuse slice detect --help")

#: The default attack points of the detection experiment: ``(label, name, params)``.
PAPER_ATTACKS: list[tuple[str, str, dict[str, Any]]] = [
    ("fgsm-2", "fgsm", {"eps": 2 / 255}),
    ("fgsm-4", "fgsm", {"eps": 4 / 255}),
    ("fgsm-8", "fgsm", {"eps": 8 / 255}),
    ("pgd-2", "pgd", {"eps": 2 / 255, "steps": 10}),
    ("pgd-4", "pgd", {"eps": 4 / 255, "steps": 10}),
    ("pgd-8", "pgd", {"eps": 8 / 255, "steps": 10}),
    ("deepfool-l2", "deepfool", {}),
    ("deepfool-linf", "deepfool-linf", {}),
    ("cw-l2", "cw", {"norm": "l2"}),
    ("penultimate", "penultimate", {}),
    ("jsma", "jsma", {}),
    ("boundary", "boundary", {}),
    ("spatial", "spatial", {}),
    ("pixel", "pixel", {}),
    ("gaussian-noise", "gaussian-noise", {}),
    ("gaussian-blur", "gaussian-blur", {}),
]

#: Attacks that take seconds per input on a CPU (iterative minimal-perturbation, saliency and
#: decision-based searches): the detection experiment can craft them from fewer sources.
SLOW_ATTACKS: frozenset[str] = frozenset({"cw", "deepfool", "deepfool-linf", "jsma", "boundary", "pixel"})


def make_attack(name: str, params: dict[str, Any] | None = None) -> ExploratoryDefect:
    """The attack ``name`` (:data:`ATTACKS`, else an exploratory defect of ``DEFECTS``) with ``params``.

    Raises:
        SafeReuseError: an unknown name, a defect that crafts nothing (a backdoor), a bad parameter.

    Example:
        >>> type(make_attack("fgsm", {"eps": 0.01})).__name__, type(make_attack("gaussian-noise")).__name__
        ('FGSM', 'GaussianNoise')
    """
    from ..defects import DEFECTS

    if name in ATTACKS:
        return ATTACKS.create(name, **(params or {}))
    if name not in DEFECTS:
        names = sorted(set(ATTACKS.names()) | {n for n in DEFECTS.names() if _crafts(DEFECTS.get(n))})
        raise SafeReuseError(f"unknown attack {name!r}", fix=f"use one of: {', '.join(names)}")
    obj = DEFECTS.create(name, **(params or {}))
    if not isinstance(obj, ExploratoryDefect):
        raise SafeReuseError(
            f"{name!r} is not an attack (it crafts no inputs)", fix="name an adversarial attack"
        )
    return obj


def _crafts(cls: Any) -> bool:
    return isinstance(cls, type) and issubclass(cls, ExploratoryDefect)


# -- ART attacks -----------------------------------------------------------------------------------
@ATTACKS.register("jsma", "Jacobian saliency map attack (Papernot et al. 2016) via ART")
@dataclass
class JSMA(ArtAttack):
    """JSMA via ART, towards a random wrong class per input (JSMA is a targeted attack).

    ART's ``SaliencyMapMethod`` reads the ``y`` it is given as *target* classes, so the true labels
    would ask it to reach the class the input already has; each input's target is instead drawn
    uniformly from the other classes, seeded (numpy's global RNG, which :class:`ArtAttack` seeds).

    Args:
        theta: change of each modified pixel.
        gamma: the largest share of pixels that may change.
        seed: seed of the random targets.
        verbose: ART's progress bars.
    """

    theta: float = 1.0
    gamma: float = 0.1
    seed: int = 0
    verbose: bool = False

    def _labels(self, y: Any, nb_classes: int) -> Any:
        import numpy as np

        if nb_classes < 2:
            raise SafeReuseError("JSMA needs a model with at least 2 classes", fix="use another attack")
        return (y + np.random.randint(1, nb_classes, size=len(y))) % nb_classes

    def _attack(self, clf: Any, batch: int, nb_classes: int) -> Any:
        from art.attacks.evasion import SaliencyMapMethod

        return SaliencyMapMethod(
            clf, theta=self.theta, gamma=self.gamma, batch_size=batch, verbose=self.verbose
        )


def _float32_queries(clf: Any) -> Any:
    """``clf`` with its ``predict`` fed float32: ART's decision-based attacks build their proposals in
    float64, which the float32 model refuses (``expected scalar type Double but found Float``)."""
    import numpy as np

    predict = clf.predict

    def predict32(x: Any, *args: Any, **kwargs: Any) -> Any:
        return predict(np.asarray(x, dtype=np.float32), *args, **kwargs)

    clf.predict = predict32
    return clf


@ATTACKS.register("boundary", "decision-based boundary attack (Brendel et al. 2018) via ART")
@dataclass
class Boundary(ArtAttack):
    """Boundary attack via ART, cut down for CPUs (``max_iter`` walks, ``num_trial`` proposals).

    Args:
        max_iter: iterations of the walk along the boundary.
        num_trial: proposals per step.
        init_size: random draws to find an adversarial start.
        seed: seed of ART's random draws.
        verbose: ART's progress bars.
    """

    param_ranges: ClassVar[dict[str, str]] = {"max_iter": ">= 0", "num_trial": ">= 1", "init_size": ">= 1"}
    max_iter: int = 50
    num_trial: int = 10
    init_size: int = 50
    seed: int = 0
    verbose: bool = False

    def _attack(self, clf: Any, batch: int, nb_classes: int) -> Any:
        from art.attacks.evasion import BoundaryAttack

        return BoundaryAttack(
            _float32_queries(clf), targeted=False, max_iter=self.max_iter, num_trial=self.num_trial,
            init_size=self.init_size, batch_size=batch, verbose=self.verbose,
        )  # fmt: skip


@ATTACKS.register("spatial", "spatial transformation (rotation + translation) via ART")
@dataclass
class Spatial(ArtAttack):
    """Spatial transformation attack via ART: the worst of a grid of rotations and translations.

    Args:
        max_translation: largest shift, percent of the image side.
        num_translations: shifts tried per direction.
        max_rotation: largest rotation, degrees.
        num_rotations: rotations tried.
        verbose: ART's progress bars.
    """

    max_translation: float = 10.0
    num_translations: int = 3
    max_rotation: float = 30.0
    num_rotations: int = 5
    verbose: bool = False

    def _attack(self, clf: Any, batch: int, nb_classes: int) -> Any:
        from art.attacks.evasion import SpatialTransformation

        return SpatialTransformation(
            clf, max_translation=self.max_translation, num_translations=self.num_translations,
            max_rotation=self.max_rotation, num_rotations=self.num_rotations, verbose=self.verbose,
        )  # fmt: skip


@ATTACKS.register("pixel", "few-pixel attack by differential evolution (Su et al. 2019) via ART")
@dataclass
class Pixel(ArtAttack):
    """Pixel attack via ART (differential evolution; slow: use few inputs).

    Args:
        pixels: pixels changed (1 = the one-pixel attack).
        max_iter: evolution iterations.
        seed: seed of ART's random draws.
        verbose: ART's progress bars.
    """

    pixels: int = 1
    max_iter: int = 20
    seed: int = 0
    verbose: bool = False

    def _attack(self, clf: Any, batch: int, nb_classes: int) -> Any:
        from art.attacks.evasion import PixelAttack

        return PixelAttack(
            clf, th=self.pixels, es=1, max_iter=self.max_iter, targeted=False, verbose=self.verbose
        )


# -- ours ------------------------------------------------------------------------------------------
@ATTACKS.register("deepfool-linf", "DeepFool's L∞ form (Moosavi-Dezfooli et al. 2016), batched")
@dataclass
class DeepFoolLinf(WhiteBoxAttack):
    """DeepFool for the L∞ norm: at each step move to the nearest linearised boundary in L∞,
    ``r = (|f'_l| + 1e-4) / ‖w'_l‖₁ · sign(w'_l)``, until the class changes; overshoot ``1 + overshoot``.

    Args:
        max_iter: steps.
        overshoot: overshoot factor (0.02 as in the paper).
        nb_grads: classes considered (the highest logits; None: all).
    """

    max_iter: int = 50
    overshoot: float = 0.02
    nb_grads: int | None = 10

    def __post_init__(self) -> None:
        check_positive_int(self.max_iter, "max_iter")

    def craft(self, model, x, y, generator=None):  # noqa: D102 - see ExploratoryDefect.craft
        dev = model_device(model)
        x0 = x.detach().to(dev)
        with attack_mode(model):
            with torch.no_grad():
                logits0 = model(x0)
            k = logits0.shape[1] if self.nb_grads is None else min(self.nb_grads, logits0.shape[1])
            cand = logits0.topk(k, 1).indices  # [N, k]; column 0 = the original class
            orig = cand[:, 0]
            r_tot = torch.zeros_like(x0)
            active = torch.ones(len(x0), dtype=torch.bool, device=dev)
            for _ in range(self.max_iter):
                xa = (x0 + (1 + self.overshoot) * r_tot).clamp(0, 1).requires_grad_(True)
                with torch.enable_grad():
                    out = model(xa)
                    picked = [out.gather(1, cand[:, j : j + 1]).sum() for j in range(k)]
                    grads = [
                        torch.autograd.grad(o, xa, retain_graph=j < k - 1)[0] for j, o in enumerate(picked)
                    ]
                active &= out.argmax(1) == orig
                if not bool(active.any()):
                    break
                g = torch.stack(grads, 1)  # [N, k, ...]
                f = out.gather(1, cand).detach()
                w = g[:, 1:] - g[:, :1]
                fd = (f[:, 1:] - f[:, :1]).abs()
                dist = (fd + 1e-4) / w.flatten(2).abs().sum(2).clamp_min(1e-12)
                best = dist.argmin(1)
                wb = w[torch.arange(len(x0), device=dev), best]
                step = dist.gather(1, best[:, None]).view(-1, *([1] * (x0.dim() - 1))) * wb.sign()
                r_tot = r_tot + step * active.view(-1, *([1] * (x0.dim() - 1)))
        return (x0 + (1 + self.overshoot) * r_tot).clamp(0, 1).detach().to(x.device)


@ATTACKS.register("gaussian-noise", "additive Gaussian noise (a natural corruption)")
@dataclass
class GaussianNoise(WhiteBoxAttack):
    """``x + N(0, σ²)``, clipped to [0, 1] (seeded).

    Args:
        sigma: noise standard deviation, pixel units.
        seed: noise seed.
    """

    sigma: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        self.sigma = check_eps(self.sigma, "sigma")

    def craft(self, model, x, y, generator=None):  # noqa: D102
        noise = torch.randn(x.shape, generator=self._generator(generator)) * self.sigma
        return (x + noise.to(x.device, x.dtype)).clamp(0, 1)


@ATTACKS.register("gaussian-blur", "Gaussian blur (a natural corruption)")
@dataclass
class GaussianBlur(WhiteBoxAttack):
    """Gaussian blur of every channel (kernel ``2·ceil(2σ)+1`` wide, reflect padding).

    Args:
        sigma: blur standard deviation, pixels.
    """

    param_ranges: ClassVar[dict[str, str]] = {"sigma": "> 0"}
    sigma: float = 1.0

    def craft(self, model, x, y, generator=None):  # noqa: D102
        import math

        r = max(1, math.ceil(2 * self.sigma))
        t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
        k = torch.exp(-(t**2) / (2 * self.sigma**2))
        k = k / k.sum()
        c = x.shape[1]
        h = F.conv2d(
            F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c
        )
        return F.conv2d(
            F.pad(h, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c
        )


__all__ = [
    "ATTACKS",
    "PAPER_ATTACKS",
    "SLOW_ATTACKS",
    "Boundary",
    "DeepFoolLinf",
    "GaussianBlur",
    "GaussianNoise",
    "JSMA",
    "Pixel",
    "Spatial",
    "make_attack",
]
