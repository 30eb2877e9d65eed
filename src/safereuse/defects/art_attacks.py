"""White-box attacks from the Adversarial Robustness Toolbox (ART; Nicolae et al., 2018).

Wrapped through ``art.estimators.classification.PyTorchClassifier`` with ``clip_values=(0, 1)`` (our
models take [0, 1] pixels and normalise internally). ART is imported inside :meth:`craft`, so
``import safereuse`` stays fast; its logging is silenced and its progress bars are off unless
``verbose=True``.

Defaults are cut down so that a few hundred 28 px images attack in seconds to minutes on a CPU:

- ``cw`` — Carlini & Wagner (IEEE S&P 2017), L2 by default (5 binary-search steps × 10 iterations
  instead of ART's 10 × 10); ``norm="linf"`` uses ART's C&W-L∞ (10 iterations);
- ``deepfool`` — Moosavi-Dezfooli et al. (CVPR 2016), at most 50 iterations, overshoot 0.02;
- ``autoattack`` — Croce & Hein (ICML 2020), reduced: APGD-CE then APGD-DLR (DLR needs ≥ 3 classes),
  20 iterations and 1 restart each (the standard version runs 100 iterations × 5 restarts plus FAB
  and Square, hours on a CPU).

C&W and DeepFool are *minimal-perturbation* attacks with no budget; give ``eps`` to project their
result onto an ε-ball (then *Rob* is accuracy under that budget). ART returns the clean input for a
sample it fails on, so none of these attacks can raise accuracy.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from ..errors import SafeReuseError
from .attacks import (
    WhiteBoxAttack,
    attack_mode,
    check_eps,
    model_device,
    project,
)
from .base import DEFECTS


@contextmanager
def _quiet(verbose: bool) -> Iterator[None]:
    """Silence ART's logger (and its warnings) for the duration, unless ``verbose``."""
    if verbose:
        yield
        return
    log = logging.getLogger("art")
    old = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(old)


def art_classifier(model: nn.Module, input_shape: tuple[int, ...], nb_classes: int) -> Any:
    """An ART ``PyTorchClassifier`` around ``model`` (logits, cross-entropy, ``clip_values=(0, 1)``)."""
    from art.estimators.classification import PyTorchClassifier

    dev = model_device(model)
    return PyTorchClassifier(
        model=model,
        loss=nn.CrossEntropyLoss(),
        input_shape=tuple(input_shape),
        nb_classes=int(nb_classes),
        clip_values=(0.0, 1.0),
        device_type="gpu" if dev.type == "cuda" else "cpu",
    )


@dataclass
class ArtAttack(WhiteBoxAttack):
    """Common driver: build the ART estimator, run ``generate`` on the batch, restore the model.

    A white-box attack (:class:`~safereuse.defects.attacks.WhiteBoxAttack`): crafted on the student,
    probed for DIR and *Rob*.
    """

    def _attack(self, clf: Any, batch: int, nb_classes: int) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _ball(self) -> tuple[float | None, str]:
        return None, "linf"

    def _labels(self, y: np.ndarray, nb_classes: int) -> np.ndarray:
        """The ``y`` ART's ``generate`` gets: the true labels (untargeted attacks)."""
        return y

    def craft(self, model, x, y, generator=None):  # noqa: D102 - see ExploratoryDefect.craft
        if len(x) == 0:
            return x.detach().clone()
        dev = model_device(model)
        x0 = x.detach().to(dev)
        np_state = np.random.get_state()  # ART draws from numpy's global RNG: seed it, then restore
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=self._generator(generator)))
        try:
            with attack_mode(model), _quiet(bool(getattr(self, "verbose", False))):
                with torch.no_grad():
                    nb_classes = int(model(x0[:1]).shape[1])
                np.random.seed(seed)
                clf = art_classifier(model, tuple(x0.shape[1:]), nb_classes)
                attack = self._attack(clf, len(x0), nb_classes)
                labels = self._labels(y.detach().cpu().numpy().astype(np.int64), nb_classes)
                adv = attack.generate(x=x0.cpu().numpy().astype(np.float32), y=labels)
        finally:
            np.random.set_state(np_state)
            model.to(dev)  # ART may move the model to its own default device
        out = torch.from_numpy(np.asarray(adv, dtype=np.float32)).to(device=dev, dtype=x0.dtype)
        eps, norm = self._ball()
        out = project(out, x0, eps, norm) if eps is not None else out.clamp(0.0, 1.0)
        return out.to(x.device)


@DEFECTS.register("cw", "white-box Carlini & Wagner (L2/L∞) via ART")
@dataclass
class CarliniWagner(ArtAttack):
    """Carlini & Wagner attack (IEEE S&P 2017) via ART; untargeted, minimal perturbation.

    Args:
        norm: ``l2`` (``CarliniL2Method``) or ``linf`` (``CarliniLInfMethod``).
        confidence: κ, the logit margin asked for.
        learning_rate: Adam step of the inner optimisation.
        binary_search_steps: searches over the constant c (L2 only; ART default 10, ours 5).
        max_iter: inner iterations (10).
        initial_const: starting c (L2).
        eps: optional budget (pixel units, in ``norm``) the result is projected onto; None = unbounded.
        verbose: show ART's logging / progress bars.
    """

    norm: Literal["linf", "l2"] = "l2"
    confidence: float = 0.0
    learning_rate: float = 0.01
    binary_search_steps: Annotated[int, Field(ge=1)] = 5
    max_iter: Annotated[int, Field(ge=1)] = 10
    initial_const: float = 0.01
    eps: float | None = None
    verbose: bool = False

    def __post_init__(self) -> None:
        if self.eps is not None:
            self.eps = check_eps(self.eps, norm=self.norm)

    def _ball(self) -> tuple[float | None, str]:
        return self.eps, self.norm

    def _attack(self, clf: Any, batch: int, nb_classes: int) -> Any:
        from art.attacks.evasion import CarliniL2Method, CarliniLInfMethod

        if self.norm == "l2":
            return CarliniL2Method(
                clf, confidence=self.confidence, learning_rate=self.learning_rate,
                binary_search_steps=self.binary_search_steps, max_iter=self.max_iter,
                initial_const=self.initial_const, batch_size=batch, verbose=self.verbose,
            )  # fmt: skip
        return CarliniLInfMethod(
            clf, confidence=self.confidence, learning_rate=self.learning_rate, max_iter=self.max_iter,
            batch_size=batch, verbose=self.verbose,
        )  # fmt: skip


@DEFECTS.register("deepfool", "white-box DeepFool via ART")
@dataclass
class DeepFoolAttack(ArtAttack):
    """DeepFool (Moosavi-Dezfooli et al., CVPR 2016) via ART; minimal L2 perturbation to the boundary.

    Args:
        max_iter: iterations (ART default 100; ours 50 — most inputs cross in a handful).
        overshoot: ART's ``epsilon``, the overshoot factor (0.02 as in the paper).
        nb_grads: classes whose gradients are used (None → min(10, number of classes)).
        eps: optional L2 budget the result is projected onto; None = unbounded.
        verbose: show ART's logging / progress bars.
    """

    max_iter: Annotated[int, Field(ge=1)] = 50
    overshoot: float = 0.02
    nb_grads: int | None = None
    eps: float | None = None
    verbose: bool = False

    def __post_init__(self) -> None:
        if self.eps is not None:
            self.eps = check_eps(self.eps, norm="l2")

    def _ball(self) -> tuple[float | None, str]:
        return self.eps, "l2"

    def _attack(self, clf: Any, batch: int, nb_classes: int) -> Any:
        from art.attacks.evasion import DeepFool

        return DeepFool(
            clf, max_iter=self.max_iter, epsilon=self.overshoot,
            nb_grads=min(self.nb_grads or 10, nb_classes), batch_size=batch, verbose=self.verbose,
        )  # fmt: skip


@DEFECTS.register("autoattack", "white-box AutoAttack (APGD-CE + APGD-DLR, reduced) via ART")
@dataclass
class AutoAttackLite(ArtAttack):
    """AutoAttack (Croce & Hein, ICML 2020) via ART, reduced for CPUs: APGD-CE then APGD-DLR.

    Each attack runs only on the inputs the previous ones did not fool.

    Args:
        norm: ``linf`` or ``l2``.
        eps: budget; None → 8/255 (L∞) or 1.0 (L2).
        steps: APGD iterations per attack (20; standard AutoAttack: 100).
        restarts: APGD random restarts (1; standard: 5).
        dlr: also run APGD-DLR (skipped automatically for fewer than 3 classes).
        seed: seed of APGD's random starts.
        verbose: show ART's logging / progress bars.
        max_samples: attack only this many of the audited images (evenly spaced, a subset of the
            audit's; None: all) — the stronger check on a subset next to PGD on all.
    """

    norm: Literal["linf", "l2"] = "linf"
    eps: float | None = None
    steps: Annotated[int, Field(ge=1)] = 20
    restarts: Annotated[int, Field(ge=1)] = 1
    dlr: bool = True
    seed: int = 0
    verbose: bool = False
    max_samples: Annotated[int, Field(ge=1)] | None = None

    def __post_init__(self) -> None:
        default = 8 / 255 if self.norm == "linf" else 1.0
        self.eps = check_eps(default if self.eps is None else self.eps, norm=self.norm)

    def _ball(self) -> tuple[float | None, str]:
        return self.eps, self.norm

    def _attack(self, clf: Any, batch: int, nb_classes: int) -> Any:
        from art.attacks.evasion import AutoAttack, AutoProjectedGradientDescent

        if self.eps == 0:
            raise SafeReuseError("autoattack needs eps > 0", fix="pass e.g. eps=0.0314")
        norm = np.inf if self.norm == "linf" else 2
        losses = ["cross_entropy"] + (["difference_logits_ratio"] if self.dlr and nb_classes >= 3 else [])
        common = dict(norm=norm, eps=self.eps, eps_step=2 * self.eps, max_iter=self.steps, targeted=False,
                      nb_random_init=self.restarts, batch_size=batch, verbose=self.verbose)  # fmt: skip
        attacks = [AutoProjectedGradientDescent(clf, loss_type=lt, **common) for lt in losses]
        return AutoAttack(
            clf, norm=norm, eps=self.eps, eps_step=2 * self.eps, attacks=attacks, batch_size=batch
        )


__all__ = ["ArtAttack", "AutoAttackLite", "CarliniWagner", "DeepFoolAttack", "art_classifier"]
