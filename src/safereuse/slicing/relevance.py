"""Relevant model slicing: which teacher weights a student's data exercises (ReMoS's slice).

Reference: Zhang, Li, Wang, Liu, Li, Guo, Chen, Liu, "ReMoS: Reducing Defect Inheritance in Transfer
Learning via Relevant Model Slicing", ICSE 2022 (spec: ``shared/specs/remos.md``, steps 2–4).

From per-layer coverage counts (:func:`~safereuse.slicing.coverage_profile`) and the weights
themselves, :func:`relevant_slice` computes a mask set: weight ``W[o, i, ...]`` gets the coverage
score ``f_in[i] + f_out[o]``; ranks over all weights, ``S = R_cov − R_mag``; the ``round(ratio · N)``
lowest ``S`` are reset. The flat order of "all weights" is the layers' order, each weight flattened
row-major. The computation is vectorised: a stable sort of the (few) distinct per-(o, i) coverage
scores, one stable integer sort of the magnitudes (float bits viewed as integers, which sort like
the non-negative floats), and an exact selection of the ``k`` smallest ``S``
(:func:`~safereuse.slicing.smallest_k_mask`) — about 0.5 s for the 11 M conv weights of an ImageNet
ResNet-18 on 2 CPU cores (``benchmarks/bench_remos.py``; the artifact's Python loop: 32 s).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..errors import SafeReuseError
from .masks import magnitude_keys, one_cpu_thread, smallest_k_mask, split_like


def _pairs(w: torch.Tensor) -> tuple[int, int, int]:
    """``(out channels, input channels per group, elements per (o, i) pair)`` of a conv/linear weight."""
    return w.shape[0], w.shape[1], int(math.prod(w.shape[2:]))


@one_cpu_thread
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
    order_m = torch.argsort(magnitude_keys(weights), stable=True)
    r_mag = torch.empty(n, dtype=idx, device=dev).scatter_(0, order_m, torch.arange(n, dtype=idx, device=dev))
    del order_m
    score -= r_mag
    del r_mag
    # 3. the round(ratio·N) lowest S are reset
    reset = smallest_k_mask(score, round(ratio * n))
    return split_like(~reset, weights)
