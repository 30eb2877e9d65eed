"""Synapse scores and synapse masks: what class-specific pruning and model protection share.

A *synapse* is one (output neuron, input neuron) pair of a weighted layer, at NNSlicer's granularity
(spec ``nnslicer.md``): for a conv layer the kernel slice ``W[o, i, :, :]``, for a linear layer the
single weight ``W[o, i]``. A *score* per layer is a ``[C_out, C_in]`` tensor (``weight.shape[:2]``);
the criteria of :data:`~safereuse.applications.criteria.CRITERIA` name the ways to get one (the
functions here compute them):

- ``nnslicer`` — |signed contribution| of the synapse to the slice of the inputs, each input sliced
  with its own class as the criterion (Zhang et al., "Dynamic Slicing for Deep Neural Networks",
  ESEC/FSE 2020), through :class:`safereuse.slicing.Slicer`;
- ``effectivepath`` — how many of the inputs' critical paths hold the synapse (Qiu et al., "Adversarial
  Defense Through Network Profiling Based Path Extraction", CVPR 2019;
  :mod:`safereuse.slicing.effective_path`);
- ``weight`` — the L1 norm of the synapse's weights (``|w|``; the mean over a kernel slice);
- ``channel`` — the mean ``|w|`` of the synapse's output neuron (whole neurons go first);
- ``random`` — seeded uniform noise (the protection baseline).

:func:`select_synapses` turns scores into per-layer masks (the ``r`` lowest or highest of every
layer, ties to the lower flat index), and :func:`weight_masks_of` expands them to the weights'
shapes (a :data:`~safereuse.slicing.masks.Masks` set).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import SafeReuseError
from ..slicing import Slicer
from ..slicing.effective_path import path_theta
from ..slicing.masks import Masks

Scores = dict[str, torch.Tensor]
"""Layer name → ``[C_out, C_in]`` score of every synapse of that layer (higher = more important)."""

_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def weighted_layers(model: nn.Module, include_head: bool = False) -> list[tuple[str, nn.Module]]:
    """The conv / linear layers whose synapses are scored, in definition order.

    Args:
        model: any network.
        include_head: also the model's ``head`` (the classifier); left out by default, as every
            slicer of :mod:`safereuse.slicing` leaves it out.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2, 2))
        >>> [n for n, _ in weighted_layers(net)]
        ['0', '2']
    """
    head = getattr(model, "head", None) if not include_head else None
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, _WEIGHTED) and m is not head]
    if not layers:
        raise SafeReuseError(
            f"{type(model).__name__} has no conv or linear layer to score", fix="use a model with weights"
        )
    return layers


def class_inputs(x: torch.Tensor, y: torch.Tensor, classes: list[int], per_class: int | None) -> list[
    tuple[int, torch.Tensor]
]:  # fmt: skip
    """``(class, its first per_class inputs)`` for every class of ``classes``.

    Raises:
        SafeReuseError: a class without any input.
    """
    out = []
    for c in classes:
        xc = x[y == c]
        if len(xc) == 0:
            raise SafeReuseError(
                f"no benign input of class {c} in the data", fix="use data that holds every target class"
            )
        out.append((c, xc[:per_class] if per_class else xc))
    return out


def weight_scores(model: nn.Module, include_head: bool = False, **_: Any) -> Scores:
    """Mean ``|w|`` of every synapse (a conv kernel slice, or one linear weight).

    Example:
        >>> lin = nn.Linear(2, 1, bias=False)
        >>> _ = lin.weight.data.copy_(torch.tensor([[-3.0, 1.0]]))
        >>> weight_scores(nn.Sequential(lin))["0"].tolist()
        [[3.0, 1.0]]
    """
    return {
        n: m.weight.detach().abs().flatten(2).mean(2) if m.weight.dim() > 2 else m.weight.detach().abs()
        for n, m in weighted_layers(model, include_head)
    }


def channel_scores(model: nn.Module, include_head: bool = False, **_: Any) -> Scores:
    """Every synapse scored by the mean ``|w|`` of its output channel (so whole channels rank together).

    Example:
        >>> lin = nn.Linear(2, 2, bias=False)
        >>> _ = lin.weight.data.copy_(torch.tensor([[-3.0, 1.0], [0.5, 0.5]]))
        >>> channel_scores(nn.Sequential(lin))["0"].tolist()
        [[2.0, 2.0], [0.5, 0.5]]
    """
    out = {}
    for n, m in weighted_layers(model, include_head):
        w = m.weight.detach().abs()
        out[n] = w.flatten(1).mean(1, keepdim=True).expand(w.shape[0], w.shape[1]).clone()
    return out


def random_scores(model: nn.Module, include_head: bool = False, seed: int = 0, **_: Any) -> Scores:
    """Uniform random scores from a generator seeded with ``seed`` (the same for the same model shape).

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 2))
        >>> torch.equal(random_scores(net, seed=1)["0"], random_scores(net, seed=1)["0"])
        True
    """
    gen = torch.Generator().manual_seed(int(seed))
    return {n: torch.rand(m.weight.shape[:2], generator=gen) for n, m in weighted_layers(model, include_head)}


def _slice_scores(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    classes: list[int],
    *,
    theta: float,
    reference: str,
    profile_x: torch.Tensor | None,
    per_class: int | None,
    batch_size: int,
    use_abs: bool,
    include_head: bool,
) -> Scores:
    s = Slicer(theta=theta, reference=reference)
    if reference == "mean":
        s.profile(model, profile_x if profile_x is not None else x, batch_size=batch_size)
    total: Scores = {}
    for c, xc in class_inputs(x, y, classes, per_class):
        r = s.slice(model, xc, criterion=int(c), per_input=False, batch_size=batch_size)
        for name in r.layers:
            t = (r.synapse_abs if use_abs else r.synapse)[name].detach().float().cpu()
            total[name] = total[name] + t if name in total else t
    keep = {n for n, _ in weighted_layers(model, include_head)}
    return {n: (t if use_abs else t.abs()) for n, t in total.items() if n in keep}


def nnslicer_scores(
    model: nn.Module,
    x: torch.Tensor | None = None,
    y: torch.Tensor | None = None,
    classes: list[int] | None = None,
    *,
    theta: float = 0.3,
    profile_x: torch.Tensor | None = None,
    per_class: int | None = None,
    batch_size: int = 256,
    include_head: bool = False,
    **_: Any,
) -> Scores:
    """NNSlicer's synapse contributions for a set of inputs: each class's inputs sliced with that
    class as the criterion, summed over the set (signed), ranked by magnitude (spec "Slice").

    Args:
        model: the network.
        x, y: inputs and their labels.
        classes: the classes whose inputs are sliced.
        theta: the slicer's θ.
        profile_x: the inputs whose mean behaviour is the reference (default: ``x``).
        per_class: at most this many inputs per class (None: all).
        batch_size: slicing batch.
        include_head: score the head too.
    """
    if x is None or y is None or not classes:
        raise SafeReuseError("nnslicer scores need inputs and classes", fix="pass the target classes' data")
    return _slice_scores(
        model, x, y, classes, theta=theta, reference="mean", profile_x=profile_x, per_class=per_class,
        batch_size=batch_size, use_abs=False, include_head=include_head,
    )  # fmt: skip


def effectivepath_scores(
    model: nn.Module,
    x: torch.Tensor | None = None,
    y: torch.Tensor | None = None,
    classes: list[int] | None = None,
    *,
    path_share: float = 0.5,
    per_class: int | None = None,
    batch_size: int = 256,
    include_head: bool = False,
    **_: Any,
) -> Scores:
    """EffectivePath's aggregated path: per synapse, the number of inputs whose critical path
    (:mod:`safereuse.slicing.effective_path`, share ``path_share`` of each neuron's value) holds it.
    """
    if x is None or y is None or not classes:
        raise SafeReuseError(
            "effectivepath scores need inputs and classes", fix="pass the target classes' data"
        )
    return _slice_scores(
        model, x, y, classes, theta=path_theta(path_share), reference="zero", profile_x=None,
        per_class=per_class, batch_size=batch_size, use_abs=True, include_head=include_head,
    )  # fmt: skip


def select_synapses(scores: Scores, ratio: float, lowest: bool = True) -> dict[str, torch.Tensor]:
    """Per layer, a bool ``[C_out, C_in]`` mask of the ``round(ratio · n)`` lowest (or highest) scores.

    At least one synapse of every layer stays unselected when ``lowest`` (a layer is never emptied);
    ties go to the lower flat index (a stable sort).

    Args:
        scores: layer → ``[C_out, C_in]`` scores.
        ratio: the share of every layer's synapses to select, in ``[0, 1]``.
        lowest: select the lowest scores (pruning) or the highest (protection).

    Returns:
        Layer → bool mask, True = selected.

    Example:
        >>> s = {"fc": torch.tensor([[0.3, 0.1], [0.2, 0.4]])}
        >>> select_synapses(s, 0.5)["fc"].tolist(), select_synapses(s, 0.5, lowest=False)["fc"].tolist()
        ([[False, True], [True, False]], [[True, False], [False, True]])
    """
    if not 0.0 <= float(ratio) <= 1.0:
        raise SafeReuseError(f"ratio {ratio} is outside [0, 1]", fix="pass e.g. 0.5")
    out = {}
    for name, s in scores.items():
        flat = s.detach().float().reshape(-1)
        n = flat.numel()
        k = int(round(float(ratio) * n))
        if lowest:
            k = min(k, n - 1)
        order = torch.argsort(flat if lowest else -flat, stable=True)
        sel = torch.zeros(n, dtype=torch.bool)
        sel[order[:k].cpu()] = True
        out[name] = sel.view(s.shape)
    return out


def weight_masks_of(model: nn.Module, synapses: dict[str, torch.Tensor], *, keep: bool) -> Masks:
    """Expand per-synapse masks to a mask set over the layers' weights (kernel slices for convs).

    Args:
        model: the network the masks were computed on.
        synapses: layer → bool ``[C_out, C_in]``.
        keep: the synapse mask marks the *kept* synapses (True = kept) when True; when False it marks
            the selected ones and is inverted (so the result is always True = kept).

    Returns:
        ``{"<layer>.weight": bool tensor shaped like the weight}``, on the CPU.

    Example:
        >>> conv = nn.Conv2d(2, 1, 3)
        >>> k = weight_masks_of(nn.Sequential(conv), {"0": torch.tensor([[True, False]])}, keep=False)
        >>> k["0.weight"].shape, bool(k["0.weight"][0, 0].any()), bool(k["0.weight"][0, 1].all())
        (torch.Size([1, 2, 3, 3]), False, True)
    """
    out: Masks = {}
    for name, sel in synapses.items():
        w = model.get_submodule(name).weight
        m = sel if keep else ~sel
        out[f"{name}.weight"] = m.view(*m.shape, *([1] * (w.dim() - 2))).expand(w.shape).clone().cpu()
    return out


__all__ = [
    "Scores",
    "channel_scores",
    "class_inputs",
    "effectivepath_scores",
    "nnslicer_scores",
    "random_scores",
    "select_synapses",
    "weight_masks_of",
    "weight_scores",
]
