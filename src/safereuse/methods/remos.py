"""ReMoS: relevant model slicing, then fine-tuning.

Reference: Zhang, Li, Wang, Liu, Li, Guo, Chen, Liu, "ReMoS: Reducing Defect Inheritance in Transfer
Learning via Relevant Model Slicing", ICSE 2022 (spec: ``shared/specs/remos.md``).

A student fine-tuned from a teacher keeps the teacher's decision boundary and with it the teacher's
defects. ReMoS keeps the teacher weights that are *relevant* to the student's data (the slice),
resets the others, and fine-tunes:

1. **Coverage profile** of the teacher over the student's training set
   (:func:`safereuse.slicing.coverage_profile`): ``f_in[c]`` / ``f_out[c]`` per layer.
2. **Coverage score** of weight ``W[o, i, ...]``: ``s = f_in[i] + f_out[o]``.
3. Global, stable ranks over all sliced weights: ``R_cov`` by ``s``, ``R_mag`` by ``|w|``;
   relevance ``S = R_cov − R_mag``. Low coverage and large magnitude ⇒ low ``S`` ⇒ irrelevant.
4. **Slice**: the ``round(ratio · N)`` weights with the lowest ``S`` (ties: lower flat index first)
   are reset (to zero, or to a fresh initialisation); biases, BatchNorm and everything outside the
   sliced layers come from the teacher; the head is new.
5. **Fine-tune** every parameter with :func:`safereuse.train.fit`; with ``keep_mask=True`` the reset
   weights are pinned to their reset value after every optimiser step.

The flat order of "all weights" is the modules' definition order, each weight flattened
row-major. Steps 1–4 live in the shared slicing layer (:func:`safereuse.slicing.coverage_profile`,
:func:`safereuse.slicing.relevant_slice`; vectorised: about 0.5 s for the 11 M conv weights of an
ImageNet ResNet-18 on 2 CPU cores, ``benchmarks/bench_remos.py``; the artifact's Python loop: 32 s);
this module holds the method around them.

The slice is saved with the student (``Student.extras``): ``remos.keep.<param>`` (bool, True = kept
from the teacher, False = reset), ``remos.f_in.<layer>`` / ``remos.f_out.<layer>`` (int64 counts);
``Student.info`` holds the counts per layer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import Field
from torch import nn

from ..data import DataBundle
from ..device import resolve_device
from ..errors import SafeReuseError
from ..slicing import (
    CoverageProfile,
    KeepMask,
    LayerKind,
    apply_reset,
    coverage_profile,
    fresh_state,
    make_criterion,
    relevant_slice,
    slice_info,
    slice_layers,
    weight_masks,
)
from ..train import FitConfig, FitResult, fit
from .base import METHODS, Prepared, TransferMethod

# -- ReMoS -----------------------------------------------------------------------------------------


@dataclass
class RelevantSlice:
    """The result of :meth:`ReMoS.slice`.

    Attributes:
        keep: weight name (``<layer>.weight``) → bool mask, True = kept from the teacher.
        profile: the coverage profile it was computed from.
        info: counts (total, reset, per layer), layers without coverage, timings.
    """

    keep: dict[str, torch.Tensor]
    profile: CoverageProfile
    info: dict[str, Any] = field(default_factory=dict)

    def extras(self, prefix: str = "remos.") -> dict[str, torch.Tensor]:
        """Tensors for the student's artifact: ``remos.keep.<param>``, ``remos.f_in/f_out.<layer>``."""
        out = {f"{prefix}keep.{k}": v.cpu() for k, v in self.keep.items()}
        out.update(self.profile.to_tensors(prefix))
        return out


@METHODS.register("remos", "ReMoS: reset the teacher weights the student's data does not cover, fine-tune")
@dataclass
class ReMoS(TransferMethod):
    """ReMoS (Zhang et al., ICSE 2022): relevant model slicing, then fine-tuning.

    Args:
        ratio: fraction of the sliced layers' weights to reset (default 0.2, chosen on validation
            data — see below; artifact: 0.1 for ResNet-18 adversarial defects, 0.03 for ResNet-50
            backdoors; ablation 0.005–0.1).
        criterion: coverage criterion ``tknc`` (top-k, default — see below), ``nc`` (τ) or ``snac``.
        tau: ``nc`` threshold on the min-max scaled channel mean.
        top_k: ``tknc``'s k.
        reset: ``zero`` (the artifact) or ``reinit`` (values of a fresh initialisation).
        keep_mask: pin the reset weights to their reset value throughout fine-tuning (the artifact
            does not).
        layers: ``auto`` (conv layers, or every Linear when the model has no conv — the NLP form),
            ``conv``, ``linear`` or ``all``. The head is never sliced.
        profile_batch_size: samples per forward pass of the coverage profile.
        max_profile_samples: profile only the first n training samples (None: all).

    The fine-tuning hyper-parameters are :class:`TransferMethod`'s, the same schedule as
    ``finetune`` (SGD lr 0.01, momentum 0.9, weight decay 1e-4, head ×10, label smoothing 0.1,
    20 epochs, cosine), so the comparison isolates the slicing. The artifact's schedule (lr 5e-3,
    momentum 0) underfits our few-shot students: 20 epochs of 2 steps leave fine-tuning at 46 %
    instead of 72 % validation accuracy on held-out Fashion-MNIST classes (3 seeds).

    Defaults, from a validation sweep (resnet8-w16 Fashion-MNIST 0-4 teachers; students with 20
    images per class on digits 0-9, Fashion-MNIST 5-9, and Fashion-MNIST 0-4 from a BadNets
    teacher; ACC and DIR on 500 held-out training-pool images; 3 seeds; ratio ∈ {0.03 … 0.5} ×
    {nc, tknc, snac} × {zero, reinit}): ``tknc`` at ratio 0.2 cut the DIR of fine-tuning by 51 % on
    average over the six scenario × defect pairs (penultimate, nc-guided, BadNets: 18–80 % per
    pair, the backdoor by 78 %) while keeping accuracy (+2.6 points on average, −7.2 at worst).
    ``nc`` at the artifact's 0.1 cut 38 % on average and did not reduce the backdoor; ``snac`` never
    covers the single channel of a grayscale stem input (it is its own max and min), so 67–76 % of
    the stem is reset, and accuracy fell by 17 and 57 points on the two Fashion-MNIST students;
    ``nc`` at ratios ≥ 0.3 cost them 20–55 points.

    Example:
        >>> m = ReMoS(ratio=0.05, criterion="nc")
        >>> m.config()["ratio"], m.config()["reset"]
        (0.05, 'zero')
    """

    ratio: Annotated[float, Field(ge=0, le=1)] = 0.2
    criterion: Literal["nc", "tknc", "snac"] = "tknc"
    tau: Annotated[float, Field(ge=0, lt=1)] = 0.5
    top_k: Annotated[int, Field(ge=1)] = 10
    reset: Literal["zero", "reinit"] = "zero"
    keep_mask: bool = False
    layers: LayerKind = "auto"
    profile_batch_size: Annotated[int, Field(ge=1)] = 256
    max_profile_samples: Annotated[int, Field(ge=1)] | None = None

    def slice(self, model: nn.Module, data: DataBundle | torch.Tensor) -> RelevantSlice:
        """Compute the slice of ``model`` for ``data`` (the model is not modified).

        Args:
            model: the teacher (on the device to profile on).
            data: the student's task (its training images are profiled) or the images themselves.

        Returns:
            A :class:`RelevantSlice`.
        """
        x = data.train.x if isinstance(data, DataBundle) else data
        if self.max_profile_samples is not None:
            x = x[: self.max_profile_samples]
        if len(x) == 0:
            raise SafeReuseError("no samples to profile coverage on", fix="give the student training data")
        layers = slice_layers(model, self.layers)
        crit = make_criterion(self.criterion, tau=self.tau, top_k=self.top_k)
        t0 = time.perf_counter()
        profile = coverage_profile(model, x, [n for n, _ in layers], crit, batch_size=self.profile_batch_size)
        t1 = time.perf_counter()
        used = [(n, m) for n, m in layers if profile.calls[n] > 0]
        if not used:
            raise SafeReuseError(
                "none of the sliced layers ran during the forward pass",
                fix="choose layers=conv, linear or all",
            )
        keep_list = relevant_slice(
            [m.weight for _, m in used],
            [profile.f_in[n] for n, _ in used],
            [profile.f_out[n] for n, _ in used],
            self.ratio,
            [getattr(m, "groups", 1) for _, m in used],
        )
        keep = weight_masks(used, keep_list)
        info = slice_info([n for n, _ in used], keep)
        info.update(
            profile_samples=profile.samples,
            layers_not_called=profile.not_called,
            profile_seconds=round(t1 - t0, 4),
            slice_seconds=round(time.perf_counter() - t1, 4),
        )
        return RelevantSlice(keep, profile, info)

    def train(
        self, prepared: Prepared, data: DataBundle, cfg: FitConfig, checkpoint_dir: str | Path | None
    ) -> FitResult:
        # The slice is computed here rather than in ``prepare`` because only now is the training
        # device known: the profile is a forward pass over the whole training set.
        model = prepared.model
        model.to(resolve_device(cfg.device))
        sl = self.slice(model, data)
        values = None
        if self.reset == "reinit":
            fresh = fresh_state(model, cfg.seed)
            values = {k: fresh[k] for k in sl.keep}
        apply_reset(model, sl.keep, values)
        prepared.extras.update(sl.extras())
        prepared.info.update(sl.info)
        after = KeepMask(sl.keep, values) if self.keep_mask else None
        return fit(model, data.train, data.val, cfg, after_step=after, checkpoint_dir=checkpoint_dir)
