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
row-major. The computation is vectorised: a stable sort of the (few) distinct per-(o, i) coverage
scores, one stable integer sort of the magnitudes (float bits viewed as integers, which sort like
the non-negative floats), and an exact selection of the ``k`` smallest ``S`` (a sampled bracket
around the k-th value, radix selection as fallback) — about 0.5 s for the 11 M conv weights of an
ImageNet ResNet-18 on 2 CPU cores (``benchmarks/bench_remos.py``; the artifact's Python loop: 32 s).

The slice is saved with the student (``Student.extras``): ``remos.keep.<param>`` (bool, True = kept
from the teacher, False = reset), ``remos.f_in.<layer>`` / ``remos.f_out.<layer>`` (int64 counts);
``Student.info`` holds the counts per layer.
"""

from __future__ import annotations

import copy
import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from ..data import DataBundle
from ..device import resolve_device
from ..errors import SafeReuseError
from ..models import ReusableModel, create_model
from ..slicing import CoverageProfile, coverage_layers, coverage_profile, make_criterion, nc, tknc
from ..train import FitConfig, FitResult, fit
from ..utils import config_hash, seed_everything
from .base import METHODS, TransferMethod, _Prepared

LayerKind = Literal["auto", "conv", "linear", "all"]

# -- helpers shared with the baselines -------------------------------------------------------------


def slice_layers(model: nn.Module, kind: str = "auto") -> list[tuple[str, nn.Module]]:
    """The layers whose weights a slicer may reset: convs, linears or both, never the head.

    Args:
        model: the network.
        kind: ``conv``, ``linear``, ``all``, or ``auto`` (``conv`` when the model has a conv layer,
            else ``linear`` — the NLP form).

    Returns:
        ``(name, module)`` in definition order.
    """
    if kind == "auto":
        kind = "conv" if coverage_layers(model, "conv") else "linear"
    head = model.head if isinstance(model, ReusableModel) else None
    layers = [(n, m) for n, m in coverage_layers(model, kind) if m is not head]
    if not layers:
        raise SafeReuseError(
            f"{type(model).__name__} has no {kind} layer to slice (the head is never sliced)",
            fix="choose layers=conv, linear or all to match the architecture",
        )
    return layers


def magnitude_key(t: torch.Tensor) -> torch.Tensor:
    """Integers that sort like ``|t|`` (float32 bits viewed as int32; exact for float32 weights)."""
    return t.detach().abs().reshape(-1).float().contiguous().view(torch.int32)


def _magnitude_keys(weights: Sequence[torch.Tensor], n: int) -> torch.Tensor:
    """:func:`magnitude_key` of all weights, concatenated, in one pass."""
    buf = torch.empty(n, dtype=torch.float32, device=weights[0].device)
    e0 = 0
    for w in weights:
        torch.abs(w.detach().reshape(-1).float(), out=buf[e0 : e0 + w.numel()])
        e0 += w.numel()
    return buf.view(torch.int32)


def smallest_k_mask(values: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the ``k`` smallest entries of an integer tensor; ties go to the lower index.

    Exact without a full sort: a random sample brackets the k-th smallest value and only the
    entries inside the bracket are sorted; if the bracket misses, ``bincount`` histograms narrow the
    k-th value down (radix selection). Ties at the k-th value are taken in index order.

    Args:
        values: integer tensor (any shape; flattened).
        k: how many entries to select (clamped to ``[0, numel]``).

    Returns:
        ``bool`` tensor of ``values``' shape with exactly ``k`` True entries.

    Example:
        >>> smallest_k_mask(torch.tensor([5, 1, 3, 1, 9]), 2).tolist()
        [False, True, False, True, False]
        >>> smallest_k_mask(torch.tensor([2, 2, 2]), 2).tolist()
        [True, True, False]
    """
    flat = values.reshape(-1)
    n = flat.numel()
    if k <= 0:
        return torch.zeros_like(values, dtype=torch.bool)
    if k >= n:
        return torch.ones_like(values, dtype=torch.bool)
    if flat.dtype.is_floating_point or flat.dtype == torch.bool:
        raise TypeError("smallest_k_mask needs integer values")
    mask = _select_by_sample(flat, k)
    if mask is None:
        mask = _select_by_radix(flat, k)
    return mask.reshape(values.shape)


def _select_by_sample(flat: torch.Tensor, k: int, m: int = 1 << 16) -> torch.Tensor | None:
    """Exact selection when a sample brackets the k-th value (almost always): the elements below the
    bracket, plus the smallest of the (≈1 %) elements inside it. None when the bracket misses."""
    n = flat.numel()
    if n <= 4 * m:
        return None
    gen = torch.Generator(device=flat.device).manual_seed(0)
    sample = flat[torch.randint(n, (m,), generator=gen, device=flat.device)].sort().values
    q = k / n
    margin = 4.0 * math.sqrt(m * q * (1 - q)) + 16
    lo = sample[max(int(q * m - margin), 0)]
    hi = sample[min(int(q * m + margin), m - 1)]
    mask = flat < lo
    below = int(mask.count_nonzero())
    band = ((flat >= lo) & (flat <= hi)).nonzero().squeeze(1)  # ascending index
    if not below <= k <= below + band.numel():
        return None
    order = torch.argsort(flat[band], stable=True)
    mask[band[order[: k - below]]] = True
    return mask


def _select_by_radix(flat: torch.Tensor, k: int) -> torch.Tensor:
    """Exact selection by narrowing down the k-th value with 2^16-bucket histograms (≤ 4 passes)."""
    lo, hi = (int(v) for v in torch.aminmax(flat))
    wide = flat.dtype == torch.int64 or hi - lo >= 1 << 31
    sub = flat.to(torch.int64) if wide else flat.to(torch.int32)
    base, need, top = lo, k, hi - lo
    while True:
        rel = sub - base
        if top < 1 << 16:
            counts = torch.bincount(rel, minlength=top + 1)
            threshold = base + int(
                torch.searchsorted(counts.cumsum(0), torch.tensor(need, device=counts.device))
            )
            break
        shift = top.bit_length() - 16
        bucket = rel >> shift
        del rel
        counts = torch.bincount(bucket)
        cum = counts.cumsum(0)
        b = int(torch.searchsorted(cum, torch.tensor(need, device=cum.device)))
        need -= int(cum[b] - counts[b])
        sub = sub[bucket == b]
        del bucket
        base += b << shift
        top = int(sub.max()) - base
    mask = flat < threshold
    tied = (flat == threshold).nonzero().squeeze(1)  # ascending flat index
    mask[tied[: k - int(mask.count_nonzero())]] = True
    return mask


def _pairs(w: torch.Tensor) -> tuple[int, int, int]:
    """``(out channels, input channels per group, elements per (o, i) pair)`` of a conv/linear weight."""
    return w.shape[0], w.shape[1], int(math.prod(w.shape[2:]))


def _one_cpu_thread(fn: Callable[..., list[torch.Tensor]]) -> Callable[..., list[torch.Tensor]]:
    """Run a slice computation with one intra-op thread when its weights are on the CPU.

    Its cost is two sorts (sequential either way) and a dozen memory-bound passes; on a machine
    whose cores are shared, every parallel region of a 2-thread pool can wait a whole scheduler
    slice for its second thread (measured: 1.7 s with 2 threads against 0.48 s with 1 for
    ResNet-18 at load 4 on 2 cores). The caller's thread count is restored afterwards.
    """

    @functools.wraps(fn)
    def wrapper(weights: Sequence[torch.Tensor], *args: object, **kwargs: object) -> list[torch.Tensor]:
        threads = torch.get_num_threads()
        if not weights or weights[0].device.type != "cpu" or threads == 1:
            return fn(weights, *args, **kwargs)
        torch.set_num_threads(1)
        try:
            return fn(weights, *args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    return wrapper


@_one_cpu_thread
def relevant_slice(
    weights: Sequence[torch.Tensor],
    f_in: Sequence[torch.Tensor],
    f_out: Sequence[torch.Tensor],
    ratio: float,
    groups: Sequence[int] | None = None,
) -> list[torch.Tensor]:
    """ReMoS's slice: which weights to keep, from coverage counts and magnitudes.

    Args:
        weights: conv (``[O, I/groups, *k]``) or linear (``[O, I]``) weights, in global order.
        f_in: per layer, coverage counts of the input channels (``[I]``).
        f_out: per layer, coverage counts of the output channels (``[O]``).
        ratio: fraction of all weights to reset; exactly ``round(ratio · N)`` are.
        groups: conv groups per layer (default 1): in a grouped conv, ``W[o, j]`` reads input channel
            ``(o // (O / groups)) · I/groups + j``.

    Returns:
        Per layer, a ``bool`` mask of the weight's shape: True = kept (in the slice), False = reset.

    Example:
        >>> w = [torch.tensor([[3.0, 0.1], [0.2, 0.3]])]  # one Linear(2, 2)
        >>> keep = relevant_slice(w, [torch.tensor([0, 9])], [torch.tensor([0, 9])], ratio=0.25)
        >>> keep[0].tolist()  # the large weight on the uncovered channels is reset
        [[False, True], [True, True]]
    """
    if not 0.0 <= ratio <= 1.0:
        raise SafeReuseError(f"ratio={ratio} is outside [0, 1]", fix="choose e.g. ratio=0.1")
    if not weights:
        raise SafeReuseError("no weights to slice", fix="choose layers that exist in the model")
    groups = list(groups) if groups is not None else [1] * len(weights)
    if not len(weights) == len(f_in) == len(f_out) == len(groups):
        raise ValueError("weights, f_in, f_out and groups must have one entry per layer")
    dev = weights[0].device
    shapes = [_pairs(w) for w in weights]
    # 1. coverage score per (o, i) pair: all elements of a kernel share it, and the elements of a
    #    pair are contiguous in the flat order, so the stable element ranking is a stable pair ranking
    vals, sizes = [], []
    for (o, ig, kk), fi, fo, g in zip(shapes, f_in, f_out, groups, strict=True):
        fi = fi.to(dev, torch.float64).reshape(-1)
        fo = fo.to(dev, torch.float64).reshape(-1)
        if fo.numel() != o or fi.numel() != ig * g or o % g:
            raise SafeReuseError(
                f"coverage counts ({fi.numel()} in, {fo.numel()} out) do not fit a weight with {o} outputs, "
                f"{ig * g} inputs and {g} groups",
                fix="profile the same layers that are sliced",
            )
        grp = torch.arange(o, device=dev) // (o // g)
        in_idx = grp[:, None] * ig + torch.arange(ig, device=dev)[None, :]
        vals.append((fi[in_idx] + fo[:, None]).reshape(-1))
        sizes.append(torch.full((o * ig,), kk, dtype=torch.int64, device=dev))
    v = torch.cat(vals)
    if bool((v == v.round()).all()) and float(v.abs().max()) < 2**31:
        v = v.to(torch.int32)  # integer counts: the integer sort is faster
    size = torch.cat(sizes)
    n = int(size.sum())
    idx = torch.int32 if n < 1 << 30 else torch.int64  # ranks and S = R_cov − R_mag fit int32
    order = torch.argsort(v, stable=True)
    del v
    size_sorted = size[order]
    start = torch.empty_like(size_sorted)
    start[order] = size_sorted.cumsum(0) - size_sorted
    start = start.to(idx)
    score = torch.empty(n, dtype=idx, device=dev)  # R_cov, then S = R_cov − R_mag
    p0 = e0 = 0
    for o, ig, kk in shapes:
        pairs = o * ig
        block = score[e0 : e0 + pairs * kk].view(pairs, kk)
        torch.add(start[p0 : p0 + pairs, None], torch.arange(kk, dtype=idx, device=dev)[None, :], out=block)
        p0, e0 = p0 + pairs, e0 + pairs * kk
    del start
    # 2. magnitude ranks: one stable integer sort
    order_m = torch.argsort(_magnitude_keys(weights, n), stable=True)
    r_mag = torch.empty(n, dtype=idx, device=dev).scatter_(0, order_m, torch.arange(n, dtype=idx, device=dev))
    del order_m
    score -= r_mag
    del r_mag
    # 3. the round(ratio·N) lowest S are reset
    reset = smallest_k_mask(score, round(ratio * n))
    keep = ~reset
    out, e0 = [], 0
    for w in weights:
        out.append(keep[e0 : e0 + w.numel()].view(w.shape))
        e0 += w.numel()
    return out


@_one_cpu_thread
def magnitude_slice(weights: Sequence[torch.Tensor], ratio: float) -> list[torch.Tensor]:
    """Global magnitude pruning: keep masks that drop exactly the ``round(ratio · N)`` smallest ``|w|``
    (ties: lower flat index first).

    Example:
        >>> magnitude_slice([torch.tensor([0.5, -0.1, 2.0, 0.1])], 0.5)[0].tolist()
        [True, False, True, False]
    """
    if not 0.0 <= ratio <= 1.0:
        raise SafeReuseError(f"ratio={ratio} is outside [0, 1]", fix="choose e.g. ratio=0.8")
    n = sum(w.numel() for w in weights)
    keep = ~smallest_k_mask(_magnitude_keys(weights, n), round(ratio * n))
    out, e0 = [], 0
    for w in weights:
        out.append(keep[e0 : e0 + w.numel()].view(w.shape))
        e0 += w.numel()
    return out


def fresh_state(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Parameters and buffers of a freshly initialised model of the same architecture (on the CPU).

    Built with :func:`~safereuse.models.create_model` when the model records its architecture
    (``model.info``), else by calling every submodule's ``reset_parameters`` on a copy. The seed is
    derived from ``seed`` so the run's seed does not reproduce the teacher's own initialisation.
    """
    seed_everything(int(config_hash({"reinit": seed}, 8), 16))
    info = getattr(model, "info", None)
    if info is not None:
        fresh = create_model(info.arch, **info.kwargs)
    else:
        fresh = copy.deepcopy(model).cpu()
        for m in fresh.modules():
            for attr in ("reset_parameters", "_reset_parameters"):
                fn = getattr(m, attr, None)
                if callable(fn):
                    fn()
                    break
    return {k: v.detach().cpu() for k, v in fresh.state_dict().items()}


def reinit_body(model: ReusableModel, seed: int) -> None:
    """Re-initialise every parameter and buffer except the head's (normalisation is kept)."""
    head = model.head_name + "."
    fresh = {k: v for k, v in fresh_state(model, seed).items() if not k.startswith(head)}
    model.load_state_dict(fresh, strict=False)


def apply_reset(
    model: nn.Module, keep: dict[str, torch.Tensor], values: dict[str, torch.Tensor] | None = None
) -> None:
    """Set the weights outside ``keep`` to zero (or to ``values``), in place."""
    with torch.no_grad():
        for name, k in keep.items():
            p = model.get_parameter(name)
            k = k.to(p.device)
            if values is None:
                p.masked_fill_(~k, 0.0)
            else:
                p.copy_(torch.where(k, p, values[name].to(p.device, p.dtype)))


class KeepMask:
    """``after_step`` callable for :func:`~safereuse.train.fit`: pins reset weights to their reset value.

    Args:
        keep: parameter name → bool mask (True = free, False = pinned).
        values: parameter name → the pinned values (default: zero).
    """

    def __init__(self, keep: dict[str, torch.Tensor], values: dict[str, torch.Tensor] | None = None) -> None:
        self.keep = keep
        self.values = values
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def __call__(self, model: nn.Module) -> None:
        with torch.no_grad():
            for name, k in self.keep.items():
                p = model.get_parameter(name)
                cached = self._cache.get(name)
                if cached is None or cached[0].device != p.device:
                    v = None if self.values is None else self.values[name].to(p.device, p.dtype)
                    cached = (~k.to(p.device), v)
                    self._cache[name] = cached
                reset, v = cached
                if v is None:
                    p.masked_fill_(reset, 0.0)
                else:
                    p.copy_(torch.where(reset, v, p))


def slice_info(layers: Sequence[str], keep: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Counts for the manifest: weights, reset weights, per layer and in total."""
    per_layer = {
        n: {"weights": int(k.numel()), "reset": int(k.numel() - k.sum())}
        for n, k in zip(layers, keep.values(), strict=True)
    }
    total = sum(v["weights"] for v in per_layer.values())
    reset = sum(v["reset"] for v in per_layer.values())
    return {"weights_total": total, "weights_reset": reset, "reset_fraction": reset / max(total, 1),
            "per_layer": per_layer}  # fmt: skip


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

    ratio: float = 0.2
    criterion: Literal["nc", "tknc", "snac"] = "tknc"
    tau: float = 0.5
    top_k: int = 10
    reset: Literal["zero", "reinit"] = "zero"
    keep_mask: bool = False
    layers: LayerKind = "auto"
    profile_batch_size: int = 256
    max_profile_samples: int | None = None

    def __post_init__(self) -> None:
        check_choice("reset", self.reset, ("zero", "reinit"))
        check_choice("layers", self.layers, ("auto", "conv", "linear", "all"))
        check_choice("criterion", self.criterion, ("nc", "tknc", "snac"))
        if not 0.0 <= float(self.ratio) <= 1.0:
            raise SafeReuseError(f"ratio={self.ratio} is outside [0, 1]", fix="choose e.g. ratio=0.1")
        nc(self.tau), tknc(self.top_k)  # validate both parameters, whichever criterion is used
        if self.profile_batch_size < 1:
            raise SafeReuseError("profile_batch_size must be ≥ 1", fix="choose e.g. 256")

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
        keep = {f"{n}.weight": k.cpu() for (n, _), k in zip(used, keep_list, strict=True)}
        info = slice_info([n for n, _ in used], keep)
        info.update(
            profile_samples=profile.samples,
            layers_not_called=profile.not_called,
            profile_seconds=round(t1 - t0, 4),
            slice_seconds=round(time.perf_counter() - t1, 4),
        )
        return RelevantSlice(keep, profile, info)

    def train(
        self, prepared: _Prepared, data: DataBundle, cfg: FitConfig, checkpoint_dir: str | Path | None
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


def check_choice(what: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise SafeReuseError(f"{what}={value!r} is not one of {', '.join(map(str, choices))}", fix="pick one")
