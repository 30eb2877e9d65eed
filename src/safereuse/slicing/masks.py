"""Weight masks: choose weights, reset them, keep them reset — the mask layer every slicer shares.

A *mask set* (:data:`Masks`) maps a parameter name (``"layer1.0.conv1.weight"``) to a ``bool``
tensor of the parameter's shape, True = kept (from the teacher), False = reset. ReMoS
(:func:`~safereuse.slicing.relevant_slice`) and magnitude pruning (:func:`magnitude_slice`) produce
one; :func:`apply_reset` applies it once, :class:`KeepMask` enforces it after every optimiser step,
:func:`slice_info` counts it for a manifest, and it is saved with the student as
``<method>.keep.<param>`` tensors.

Selection is exact and vectorised: :func:`smallest_k_mask` picks exactly ``k`` entries of an
integer key (ties: lower flat index first) without a full sort; :func:`magnitude_keys` turns
weights into integer keys that sort like ``|w|``. A freshly initialised copy of the weights
(:func:`~safereuse.models.rebuild.fresh_state`, pruned models included) comes from the model layer.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import nn

from ..errors import SafeReuseError
from ..models import ReusableModel
from ..models.rebuild import fresh_state
from .coverage import coverage_layers

Masks = dict[str, torch.Tensor]
"""Parameter name → ``bool`` tensor of the parameter's shape, True = kept, False = reset."""

LayerKind = Literal["auto", "conv", "linear", "all"]


def slice_layers(model: nn.Module, which: str = "auto") -> list[tuple[str, nn.Module]]:
    """The layers whose weights a slicer may reset: convs, linears or both, never the head.

    Args:
        model: the network; its ``head`` (a model-contract model's classifier, or any submodule
            the model exposes as ``head``) is left out.
        which: ``conv``, ``linear``, ``all``, or ``auto`` (``conv`` when the model has a conv layer,
            else ``linear`` — the NLP form).

    Returns:
        ``(name, module)`` in definition order.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2, 2))
        >>> [n for n, _ in slice_layers(net)], [n for n, _ in slice_layers(net, "all")]
        (['0'], ['0', '2'])
    """
    if which == "auto":
        which = "conv" if coverage_layers(model, "conv") else "linear"
    head = getattr(model, "head", None)
    layers = [(n, m) for n, m in coverage_layers(model, which) if m is not head]
    if not layers:
        raise SafeReuseError(
            f"{type(model).__name__} has no {which} layer to slice (the head is never sliced)",
            fix="choose layers=conv, linear or all to match the architecture",
        )
    return layers


def weight_masks(layers: Sequence[tuple[str, nn.Module]], masks: Sequence[torch.Tensor]) -> Masks:
    """The mask set ``{"<layer>.weight": mask}`` (masks moved to the CPU) of per-layer weight masks.

    Example:
        >>> weight_masks([("fc", nn.Linear(2, 1))], [torch.tensor([[True, False]])])
        {'fc.weight': tensor([[ True, False]])}
    """
    return {f"{n}.weight": k.cpu() for (n, _), k in zip(layers, masks, strict=True)}


def magnitude_key(t: torch.Tensor) -> torch.Tensor:
    """Integers that sort like ``|t|`` (float32 bits viewed as int32; exact for float32 weights).

    Example:
        >>> magnitude_key(torch.tensor([-2.0, 0.5, 1.0])).argsort().tolist()
        [1, 2, 0]
    """
    return t.detach().abs().reshape(-1).float().contiguous().view(torch.int32)


def magnitude_keys(weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """:func:`magnitude_key` of all weights, concatenated in order, in one pass.

    Example:
        >>> magnitude_keys([torch.tensor([[1.0, -3.0]]), torch.tensor([2.0])]).argsort().tolist()
        [0, 2, 1]
    """
    n = sum(w.numel() for w in weights)
    buf = torch.empty(n, dtype=torch.float32, device=weights[0].device)
    e0 = 0
    for w in weights:
        torch.abs(w.detach().reshape(-1).float(), out=buf[e0 : e0 + w.numel()])
        e0 += w.numel()
    return buf.view(torch.int32)


def split_like(flat: torch.Tensor, weights: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Cut a flat tensor over all weights (in order) back into views of each weight's shape.

    Example:
        >>> [t.shape for t in split_like(torch.arange(6), [torch.zeros(2, 2), torch.zeros(2)])]
        [torch.Size([2, 2]), torch.Size([2])]
    """
    out, e0 = [], 0
    for w in weights:
        out.append(flat[e0 : e0 + w.numel()].view(w.shape))
        e0 += w.numel()
    return out


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


def one_cpu_thread(fn: Callable[..., list[torch.Tensor]]) -> Callable[..., list[torch.Tensor]]:
    """Run a slice computation with one intra-op thread when its weights are on the CPU.

    Its cost is two sorts (sequential either way) and a dozen memory-bound passes; on a machine
    whose cores are shared, every parallel region of a 2-thread pool can wait a whole scheduler
    slice for its second thread (measured: 1.7 s with 2 threads against 0.48 s with 1 for
    ResNet-18 at load 4 on 2 cores). The caller's thread count is restored afterwards.

    Example:
        >>> @one_cpu_thread
        ... def threads(weights):
        ...     return [torch.tensor(torch.get_num_threads())]
        >>> threads([torch.zeros(1)])[0].item()
        1
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


@one_cpu_thread
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
    keep = ~smallest_k_mask(magnitude_keys(weights), round(ratio * n))
    return split_like(keep, weights)


def reinit_body(model: ReusableModel, seed: int) -> None:
    """Re-initialise every parameter and buffer except the head's (normalisation is kept), in place.

    Example:
        >>> from safereuse.models import create_model
        >>> m = create_model("smallcnn", num_classes=3)
        >>> head = m.head.weight.clone()
        >>> reinit_body(m, seed=1)
        >>> torch.equal(m.head.weight, head)
        True
    """
    head = model.head_name + "."
    fresh = {k: v for k, v in fresh_state(model, seed).items() if not k.startswith(head)}
    model.load_state_dict(fresh, strict=False)


def apply_reset(model: nn.Module, keep: Masks, values: dict[str, torch.Tensor] | None = None) -> None:
    """Set the weights outside ``keep`` to zero (or to ``values``), in place.

    Args:
        model: the network holding the named parameters.
        keep: the mask set (True = kept).
        values: parameter name → the values the reset entries take (default: zero).

    Example:
        >>> lin = nn.Linear(2, 1, bias=False)
        >>> _ = lin.weight.data.fill_(3.0)
        >>> apply_reset(lin, {"weight": torch.tensor([[True, False]])})
        >>> lin.weight.tolist()
        [[3.0, 0.0]]
    """
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
        keep: the mask set (True = free, False = pinned).
        values: parameter name → the pinned values (default: zero).

    Example:
        >>> lin = nn.Linear(2, 1, bias=False)
        >>> pin = KeepMask({"weight": torch.tensor([[True, False]])})
        >>> _ = lin.weight.data.fill_(1.0)  # e.g. an optimiser step moved the reset weight
        >>> pin(lin)
        >>> lin.weight.tolist()
        [[1.0, 0.0]]
    """

    def __init__(self, keep: Masks, values: dict[str, torch.Tensor] | None = None) -> None:
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


def slice_info(layers: Sequence[str], keep: Masks) -> dict[str, Any]:
    """Counts for the manifest: weights, reset weights, per layer and in total.

    Args:
        layers: one name per mask, in ``keep``'s order.
        keep: the mask set.

    Example:
        >>> info = slice_info(["fc"], {"fc.weight": torch.tensor([[True, False, False, True]])})
        >>> info["weights_reset"], info["reset_fraction"], info["per_layer"]["fc"]
        (2, 0.5, {'weights': 4, 'reset': 2})
    """
    per_layer = {
        n: {"weights": int(k.numel()), "reset": int(k.numel() - k.sum())}
        for n, k in zip(layers, keep.values(), strict=True)
    }
    total = sum(v["weights"] for v in per_layer.values())
    reset = sum(v["reset"] for v in per_layer.values())
    return {"weights_total": total, "weights_reset": reset, "reset_fraction": reset / max(total, 1),
            "per_layer": per_layer}  # fmt: skip
