"""Coverage profiles: how often each channel of a layer is "covered" by a data set.

Used by ReMoS (Zhang et al., "ReMoS: Reducing Defect Inheritance in Transfer Learning via Relevant
Model Slicing", ICSE 2022) to decide which teacher weights the student's data exercises, and
reusable by any other slicer.

For every observed layer (``nn.Conv1d/2d/3d`` or ``nn.Linear``) and every sample, both the layer's
input and its output tensor are

1. min-max scaled over the whole per-sample tensor (``[C, H, W]`` for a conv, ``[T, D]`` or ``[D]``
   for a linear layer): ``(t - min) / (max - min)``;
2. reduced to one value per channel, ``m_c``: the spatial mean for a conv (channel dim 1), the mean
   over tokens for a linear layer (channel = last dim);
3. turned into a covered/not-covered flag per channel by a *criterion* (an injected callable
   ``[N, C] -> bool [N, C]``; see :data:`CRITERIA`):

   - ``nc`` (neuron coverage, Pei et al., SOSP 2017): ``m_c > τ`` (τ = 0.5);
   - ``tknc`` (top-k neuron coverage, Ma et al., ASE 2018): ``c`` is among the ``k`` (10) largest
     ``m_c`` of the sample;
   - ``snac`` (as ReMoS's artifact defines it): ``m_c > max_c m − (max_c m − min_c m) / 2``, i.e.
     above the midpoint of the sample's channel means.

Summed over samples this gives ``f_in[c]`` (input channels) and ``f_out[c]`` (output channels) per
layer. A sample whose tensor is constant (``max == min``) covers nothing. A layer called several
times per forward (weight sharing) counts every call.

Since the scaling is affine per sample, the scaled channel mean equals ``(mean_c - min) / (max -
min)`` computed from the raw channel means, so each tensor costs one mean and one min/max reduction —
nothing the size of the tensor is allocated. The forward hooks are removed in ``finally``, every
module's ``training`` flag is restored, and no gradient is recorded.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import SafeReuseError
from ..models.capture import capture
from ..utils import analysis_mode

Criterion = Callable[[torch.Tensor], torch.Tensor]
"""``scaled channel means [N, C] (in [0, 1]) -> covered flags bool [N, C]``."""

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def nc(tau: float = 0.5) -> Criterion:
    """Neuron coverage: channel covered when its scaled mean exceeds ``tau``.

    Example:
        >>> nc(0.5)(torch.tensor([[0.2, 0.6, 0.5]])).tolist()
        [[False, True, False]]
    """
    if not 0.0 <= tau < 1.0:
        raise SafeReuseError(f"nc threshold tau={tau} is outside [0, 1)", fix="choose e.g. tau=0.5")

    def criterion(m: torch.Tensor) -> torch.Tensor:
        return m > tau

    return criterion


def tknc(k: int = 10) -> Criterion:
    """Top-k neuron coverage: the ``k`` channels with the largest scaled means (all if fewer).

    Example:
        >>> tknc(2)(torch.tensor([[0.2, 0.6, 0.5]])).tolist()
        [[False, True, True]]
    """
    if int(k) < 1:
        raise SafeReuseError(f"tknc needs k ≥ 1 (got {k})", fix="choose e.g. top_k=10")

    def criterion(m: torch.Tensor) -> torch.Tensor:
        kk = min(int(k), m.shape[1])
        out = torch.zeros(m.shape, dtype=torch.bool, device=m.device)
        return out.scatter_(1, m.topk(kk, dim=1).indices, True)

    return criterion


def snac() -> Criterion:
    """Strong-activation coverage as ReMoS computes it: above the midpoint of the sample's channel means.

    Example:
        >>> snac()(torch.tensor([[0.2, 0.6, 0.5]])).tolist()
        [[False, True, True]]
    """

    def criterion(m: torch.Tensor) -> torch.Tensor:
        hi = m.amax(1, keepdim=True)
        lo = m.amin(1, keepdim=True)
        return m > hi - (hi - lo) / 2

    return criterion


CRITERIA: dict[str, Callable[..., Criterion]] = {"nc": nc, "tknc": tknc, "snac": snac}


def make_criterion(name: str, *, tau: float = 0.5, top_k: int = 10) -> Criterion:
    """The criterion ``name`` (``nc``, ``tknc``, ``snac``) with its parameter."""
    if name == "nc":
        return nc(tau)
    if name == "tknc":
        return tknc(top_k)
    if name == "snac":
        return snac()
    raise SafeReuseError(f"unknown coverage criterion {name!r}", fix=f"use one of {', '.join(CRITERIA)}")


def coverage_layers(model: nn.Module, kind: str = "conv") -> list[tuple[str, nn.Module]]:
    """Named ``Conv1d/2d/3d`` (``kind='conv'``), ``Linear`` (``'linear'``) or both (``'all'``) modules,
    in definition order."""
    types: tuple[type[nn.Module], ...] = {
        "conv": _CONV,
        "linear": (nn.Linear,),
        "all": (*_CONV, nn.Linear),
    }.get(kind, ())
    if not types:
        raise SafeReuseError(f"unknown layer kind {kind!r}", fix="use conv, linear or all")
    return [(n, m) for n, m in model.named_modules() if isinstance(m, types) and n]


@dataclass
class CoverageProfile:
    """Per-layer coverage counts of a data set.

    Attributes:
        f_in: layer name → ``int64 [C_in]``: for how many (sample, call) pairs each input channel was
            covered.
        f_out: layer name → ``int64 [C_out]``, the same for output channels.
        calls: layer name → number of forward calls observed (0: the layer never ran, e.g. an
            ``nn.MultiheadAttention.out_proj``, whose weight the functional attention reads directly).
        samples: number of samples profiled.
    """

    f_in: dict[str, torch.Tensor]
    f_out: dict[str, torch.Tensor]
    calls: dict[str, int] = field(default_factory=dict)
    samples: int = 0

    @property
    def layers(self) -> list[str]:
        return list(self.f_out)

    @property
    def not_called(self) -> list[str]:
        """Layers that were never called during profiling (no coverage information)."""
        return [n for n in self.layers if self.calls.get(n, 0) == 0]

    def to_tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Flat ``{prefix}f_in.<layer>`` / ``{prefix}f_out.<layer>`` tensors (for safetensors)."""
        out = {f"{prefix}f_in.{n}": t for n, t in self.f_in.items()}
        out.update({f"{prefix}f_out.{n}": t for n, t in self.f_out.items()})
        return out


def _per_sample(t: torch.Tensor, n: int, channel_last: bool, where: str) -> torch.Tensor:
    """``t`` with the sample dimension first."""
    if t.dim() >= 1 and t.shape[0] == n:
        return t
    if channel_last and t.dim() >= 3:
        for d in range(1, t.dim() - 1):
            if t.shape[d] == n:  # e.g. a sequence-first [T, N, D] transformer
                return t.movedim(d, 0)
    raise SafeReuseError(
        f"cannot find the sample dimension of {where} (shape {tuple(t.shape)}, batch of {n})",
        fix="profile a layer whose tensors keep the batch as a dimension",
    )


def scaled_channel_means(
    t: torch.Tensor, channel_last: bool = False, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Channel means of each sample's min-max scaled tensor, and whether the sample's tensor is non-constant.

    Args:
        t: ``[N, C, *spatial]`` (``channel_last=False``) or ``[N, *tokens, C]`` (``channel_last=True``).
        channel_last: channel dimension is the last one (linear layers).
        mask: ``bool [N, T]`` real tokens of a ``[N, T, C]`` tensor (padding left out of the mean, the
            min and the max); ignored for other shapes.

    Returns:
        ``(m, valid)``: ``[N, C]`` in ``[0, 1]`` (float32, float64 for float64 input) and ``bool [N]``.

    Example:
        >>> m, valid = scaled_channel_means(torch.tensor([[[0.0, 2.0], [4.0, 4.0]]]))
        >>> m.tolist(), valid.tolist()
        ([[0.25, 1.0]], [True])
    """
    n = t.shape[0]
    dtype = torch.promote_types(t.dtype, torch.float32)
    if mask is not None and channel_last and t.dim() == 3 and mask.shape[0] == n:
        mask = mask.to(device=t.device, dtype=torch.bool)
        if mask.shape[1] > t.shape[1] and not mask[:, t.shape[1] :].any():
            mask = mask[:, : t.shape[1]]  # the model trimmed trailing padding columns
        if mask.shape[1] == t.shape[1]:
            return _masked_scaled_means(t, mask, dtype)
    if channel_last:
        means = t.reshape(n, -1, t.shape[-1]).mean(1, dtype=dtype)
    else:
        means = t.reshape(n, t.shape[1], -1).mean(2, dtype=dtype)
    flat = t.reshape(n, -1)
    # (torch.aminmax with dim is ~30× slower on CPU)
    lo, hi = flat.amin(1).to(dtype), flat.amax(1).to(dtype)
    span = hi - lo
    valid = span > 0
    m = (means - lo[:, None]) / torch.where(valid, span, torch.ones_like(span))[:, None]
    return m.clamp_(0.0, 1.0), valid


def _masked_scaled_means(
    t: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    # Padding positions of a transformer still produce activations; they are not the sample's.
    # A batched [1, T] @ [T, C] product for the means and per-token extremes first keep this ~10×
    # cheaper than an einsum and full-size masked copies (benchmarks/bench_nlp.py).
    t = t.to(dtype)
    w = mask.to(dtype)
    means = torch.bmm(w[:, None, :], t).squeeze(1) / w.sum(1).clamp(min=1.0)[:, None]
    lo = t.amin(2).masked_fill(~mask, float("inf")).amin(1)
    hi = t.amax(2).masked_fill(~mask, float("-inf")).amax(1)
    span = hi - lo
    valid = torch.isfinite(span) & (span > 0)
    m = (means - lo[:, None]) / torch.where(valid, span, torch.ones_like(span))[:, None]
    return torch.where(valid[:, None], m, torch.zeros_like(m)).clamp_(0.0, 1.0), valid


def channel_coverage(
    t: torch.Tensor, criterion: Criterion, channel_last: bool = False, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled channel means and covered flags of each sample of one layer's tensor.

    The one definition of "covered" in safereuse: ReMoS's profile sums these flags over samples,
    the nc-guided generator steers towards them. A constant sample tensor covers nothing.

    Args:
        t: a layer's input or output, samples first (see :func:`scaled_channel_means`).
        criterion: a :class:`Criterion` (e.g. ``nc(0.5)``).
        channel_last: channel dimension is the last one (linear layers).
        mask: ``bool [N, T]`` real tokens (see :func:`scaled_channel_means`).

    Returns:
        ``(m, covered)``: scaled channel means ``[N, C]`` and ``bool [N, C]``.

    Example:
        >>> t = torch.tensor([[[0.0, 2.0], [4.0, 4.0]], [[1.0, 1.0], [1.0, 1.0]]])
        >>> channel_coverage(t, nc(0.5))[1].tolist()  # the constant second sample covers nothing
        [[False, True], [False, False]]
    """
    m, valid = scaled_channel_means(t, channel_last, mask)
    return m, criterion(m) & valid[:, None]


@contextmanager
def _inference_state(model: nn.Module) -> Iterator[None]:
    """Analysis mode (:func:`~safereuse.utils.analysis_mode`) and the slow (hookable) transformer
    path; everything restored on exit."""
    mha = getattr(torch.backends, "mha", None)
    fast = mha.get_fastpath_enabled() if mha is not None else None
    try:
        if mha is not None:
            mha.set_fastpath_enabled(False)  # the fused encoder path never calls the Linear modules
        with analysis_mode(model):
            yield
    finally:
        if mha is not None and fast is not None:
            mha.set_fastpath_enabled(fast)


def coverage_profile(
    model: nn.Module,
    x: torch.Tensor,
    layers: Sequence[str] | None = None,
    criterion: Criterion | str = "nc",
    *,
    batch_size: int = 256,
    token_mask: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> CoverageProfile:
    """Count, over the samples ``x``, how often each input/output channel of each layer is covered.

    Args:
        model: any ``nn.Module``; it runs on its own device, in eval mode, without gradients.
        x: the samples (e.g. the student's training images in ``[0, 1]``), batched along dim 0.
        layers: names of the ``Conv*``/``Linear`` modules to observe (default: every conv layer).
        criterion: a :class:`Criterion` or a name in :data:`CRITERIA` (default parameters).
        batch_size: samples per forward pass.
        token_mask: ``x batch -> [N, T]`` real tokens of a text model's input, so padding positions
            are left out of its Linear layers' ``[N, T, C]`` tensors (default: the model's own
            ``attention_mask`` method when it has one, e.g. ``minilm``; else none).

    Returns:
        A :class:`CoverageProfile` (counts on the CPU).

    Example:
        >>> conv = nn.Conv2d(1, 2, 1, bias=False)
        >>> _ = conv.weight.data.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
        >>> p = coverage_profile(nn.Sequential(conv), torch.rand(4, 1, 3, 3), ["0"], "nc")
        >>> p.f_out["0"].shape, p.samples
        (torch.Size([2]), 4)
    """
    crit = make_criterion(criterion) if isinstance(criterion, str) else criterion
    names = list(layers) if layers is not None else [n for n, _ in coverage_layers(model, "conv")]
    if not names:
        raise SafeReuseError(f"{type(model).__name__} has no layer to profile", fix="name the layers")
    mods: dict[str, nn.Module] = {}
    for name in names:
        try:
            mod = model.get_submodule(name)
        except AttributeError:
            raise SafeReuseError(
                f"the model has no layer {name!r}", fix="use names from named_modules()"
            ) from None
        if not isinstance(mod, (*_CONV, nn.Linear)):
            raise SafeReuseError(
                f"layer {name!r} is a {type(mod).__name__}", fix="profile Conv1d/2d/3d or Linear layers"
            )
        mods[name] = mod
    if batch_size < 1:
        raise SafeReuseError("batch_size must be ≥ 1", fix="choose e.g. 256")
    try:
        param = next(model.parameters())
        dev = param.device
    except StopIteration:
        dev = x.device
    f_in: dict[str, torch.Tensor] = {}
    f_out: dict[str, torch.Tensor] = {}
    for name, mod in mods.items():
        w = mod.weight
        c_in = w.shape[-1] if isinstance(mod, nn.Linear) else w.shape[1] * mod.groups  # type: ignore[union-attr]
        f_in[name] = torch.zeros(c_in, dtype=torch.int64, device=dev)
        f_out[name] = torch.zeros(w.shape[0], dtype=torch.int64, device=dev)
    calls = dict.fromkeys(mods, 0)
    n_batch = 0
    mask_of = token_mask if token_mask is not None else getattr(model, "attention_mask", None)
    mask_of = mask_of if callable(mask_of) else None
    tokens: torch.Tensor | None = None
    # an input read by several layers (a conv and its residual shortcut) is reduced once per batch
    shared: dict[tuple[int, bool], tuple[weakref.ref, torch.Tensor]] = {}

    def counts(name: str, channel_last: bool) -> Callable[[torch.Tensor], torch.Tensor]:
        def reduce(t: torch.Tensor) -> torch.Tensor:
            key = (id(t), channel_last)
            hit = shared.get(key)
            if hit is not None and hit[0]() is t:
                return hit[1]
            x = _per_sample(t, n_batch, channel_last, f"{name}'s tensors")
            c = channel_coverage(x, crit, channel_last, tokens)[1].sum(0)
            shared[key] = (weakref.ref(t), c)
            return c

        return reduce

    with ExitStack() as stack:
        stack.enter_context(_inference_state(model))
        caps = [
            stack.enter_context(
                capture(model, [(name, mod)], inputs=True, reduce=counts(name, isinstance(mod, nn.Linear)))
            )
            for name, mod in mods.items()
        ]
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size].to(dev, non_blocking=True)
            n_batch = len(xb)
            tokens = mask_of(xb) if mask_of is not None else None
            shared.clear()
            model(xb)
            for cap in caps:
                for r in cap.records:
                    (f_in if r.site == "input" else f_out)[r.name].add_(r.value)
                    calls[r.name] += r.site == "output"
                cap.clear()
    return CoverageProfile(
        f_in={k: v.cpu() for k, v in f_in.items()},
        f_out={k: v.cpu() for k, v in f_out.items()},
        calls=calls,
        samples=len(x),
    )
