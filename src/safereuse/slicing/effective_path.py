"""EffectivePath's critical paths (Qiu et al., CVPR 2019), on the NNSlicer engine.

Qiu, Leng, Guo, Chen, Li, Guo, Zhu. "Adversarial Defense Through Network Profiling Based Path
Extraction", CVPR 2019. For one input, the *effective (critical) path* starts at the predicted
output neuron; for every neuron on the path, the synapses with the largest contributions ``w_i x_i``
whose sum first reaches a share ``θ_EP`` of the neuron's value join the path, and so do the neurons
they come from. The binary vector "synapse on the path or not" is the path.

This is the NNSlicer walk (:class:`~safereuse.slicing.Slicer`) with the profile replaced by zero
(``reference="zero"``: Δ = the raw value, as EffectivePath uses raw activations) and the engine's
prefix rule: it drops the weakest inputs whose cumulative ``|w_i x_i|`` stays below ``θ · |y|``, so
it keeps the strongest ones that make up the remaining ``1 − θ`` share — ``θ = 1 − θ_EP``. The
paper's ``θ_EP = 0.5`` gives ``θ = 0.5``. Unlike the paper (per-weight, per-position paths of a
conv) the granularity is NNSlicer's: channels and kernel slices.

:func:`positive_paths` is Qiu et al.'s own rule instead (positive contributions only, the share
taken of the neuron's summed input, the authors' tie-breaking at residual adds); see its docstring.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..device import model_device
from ..errors import SafeReuseError
from ..utils import analysis_mode
from .dataflow import Dataflow, Recorder, Step, describe, trace
from .nnslicer import Slicer, SliceResult


def path_theta(share: float) -> float:
    """The engine's θ for EffectivePath's share ``θ_EP`` of a neuron's value (``1 − θ_EP``).

    Example:
        >>> path_theta(0.5), path_theta(0.9)
        (0.5, 0.09999999999999998)
    """
    share = float(share)
    if not 0.0 < share <= 1.0:
        raise SafeReuseError(f"the path share {share} is outside (0, 1]", fix="pass e.g. 0.5 (the paper's)")
    return 1.0 - share


def effective_paths(
    model: nn.Module,
    x: torch.Tensor,
    *,
    share: float = 0.5,
    criterion: Any = "predicted",
    per_input: bool = True,
    batch_size: int = 256,
) -> Any:
    """The critical paths of ``x`` (a :class:`~safereuse.slicing.SliceResult` of the zero-reference
    walk): a synapse is on input ``n``'s path where ``result.synapse[layer][n] != 0``.

    Args:
        model: the network.
        x: inputs ``[N, ...]``.
        share: EffectivePath's ``θ_EP``, the share of a neuron's value its critical inputs reach.
        criterion: the output neurons the paths start from (default: each input's predicted class).
        per_input: one path per input (``[N, C_out, C_in]``) or the summed path counts.
        batch_size: slicing batch.

    Returns:
        The slice result.
    """
    s = Slicer(theta=path_theta(share), reference="zero")
    return s.slice(model, x, criterion=criterion, per_input=per_input, batch_size=batch_size)


def path_vectors(result: Any) -> torch.Tensor:
    """The binary path vector of every input of a per-input result: ``[N, D]`` uint8, 1 = on the path."""
    return (result.vector() != 0).to(torch.uint8)


def select_positive(terms: torch.Tensor, share: float) -> torch.Tensor:
    """Qiu et al.'s selection at one neuron, for every row of ``terms`` at once.

    ``terms[..., i] = w_i x_i`` (oriented so the neuron's value counts as positive). The selected
    inputs are the smallest set of the *largest* terms whose sum reaches ``share · Σ_i terms``; as
    the largest terms come first, only positive terms are ever selected. Where the sum is ``≤ 0``,
    or where one input already is a ``share`` of the row (``1 / n_inputs ≥ share``), only the
    largest term is selected. This is ``arg_approx`` of the authors' code (``nninst.utils.numpy``
    in github.com/Ptolemy-DL/Ptolemy, which ships EffectivePath's implementation).

    Args:
        terms: ``[..., n_inputs]`` float.
        share: ``θ_EP`` in (0, 1].

    Returns:
        ``[..., n_inputs]`` bool, the selected inputs.

    Example:
        >>> select_positive(torch.tensor([[3.0, -1.0, 1.0, 2.0]]), 0.5).int().tolist()  # 0.5·5 → 3
        [[1, 0, 0, 0]]
        >>> select_positive(torch.tensor([[1.0, -4.0, 1.0, 1.0]]), 0.5).int().tolist()  # sum ≤ 0
        [[1, 0, 0, 0]]
    """
    n = terms.shape[-1]
    top = terms.argmax(-1, keepdim=True)
    only_top = torch.zeros_like(terms, dtype=torch.bool).scatter_(-1, top, True)
    if n == 0 or 1.0 / n >= share:
        return only_top
    total = terms.sum(-1, keepdim=True)
    srt = terms.sort(-1, descending=True).values
    # how many of the sorted terms stay below the target: the kept ones are those plus one
    k = (srt.double().cumsum(-1) < share * total.double()).sum(-1, keepdim=True).clamp(max=n - 1)
    keep = terms >= srt.gather(-1, k)
    return torch.where(total > 0, keep, only_top)


def _sign(t: torch.Tensor) -> torch.Tensor:
    """``sign`` with 0 → +1 (the authors' convention for an orientation)."""
    return torch.where(t < 0, -1.0, 1.0).to(t.dtype)


def positive_paths(
    model: nn.Module,
    x: torch.Tensor,
    *,
    share: float = 0.5,
    criterion: Any = "predicted",
    rank: int = 1,
    batch_size: int = 256,
) -> SliceResult:
    """Qiu et al.'s effective paths (CVPR 2019) of ``x``, one per input, at channel granularity.

    The walk starts at one output neuron (the ``rank``-th highest logit, or the class ``criterion``
    names) and goes backward through the model's real dataflow (:mod:`.dataflow`). At a weighted
    layer, every output neuron ``o`` on the path selects its inputs with :func:`select_positive`
    on the terms ``w_oi x_i`` (the smallest set of the largest, positive terms that reaches
    ``share`` of their sum); the selected synapses ``(o, i)`` and input neurons join the path.
    What the rule takes from the authors' code (``nninst/trace.py``): terms are oriented by the sign
    the path wants the neuron to have (``flip_sign``: it starts at +1, a BatchNorm multiplies it by
    ``sign(in)·sign(out)``, a neuron whose value has the other sign has its terms negated); a
    residual add selects among its two addends with the same rule (so at ``share ≤ 0.5`` only the
    larger one is followed); activations, pooling, reshapes pass the path on unchanged.

    Granularity (unlike the paper, which works per weight and position): a neuron is a channel
    (its value the feature map's mean, as in :mod:`.nnslicer`), a conv synapse ``(o, i)`` is the
    kernel slice ``W[o, i]`` with ``w_oi`` its spatial sum, so ``Σ_i w_oi x̄_i`` is the channel mean
    of the conv's output less its bias (exact for Linear layers, up to the border for convs).

    Args:
        model: any traceable classifier (left as it was).
        x: inputs ``[N, ...]``.
        share: ``θ_EP`` in (0, 1] (the paper: 0.5).
        criterion: ``"predicted"`` (the ``rank``-th highest logit), a class id, or a 1-d integer
            tensor of one class per input.
        rank: with ``"predicted"``, which logit the path starts from (1 = the model's class, 2 =
            the runner-up, as in the paper's rank-2 similarity).
        batch_size: inputs per forward pass.

    Returns:
        A per-input :class:`~safereuse.slicing.SliceResult`: ``synapse[layer]`` ``[N, C_out, C_in]``
        int8 in {0, 1} (1 = on the path), ``neuron[layer]`` ``[N, C_out]`` in {0, 1};
        ``meta["seed"]`` the class each path starts from.

    Raises:
        SafeReuseError: a bad share, rank or criterion, a grouped conv, an operator without a rule.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2, bias=False), nn.ReLU(), nn.Linear(2, 2, bias=False))
        >>> with torch.no_grad():
        ...     _ = net[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        ...     _ = net[2].weight.copy_(torch.tensor([[3.0, 1.0], [0.0, 1.0]]))
        >>> r = positive_paths(net, torch.tensor([[1.0, 1.0]]), criterion=0)
        >>> r.synapse["2"][0].tolist(), r.synapse["0"][0].tolist()
        ([[1, 0], [0, 0]], [[1, 0], [0, 0]])
    """
    share = float(share)
    if not 0.0 < share <= 1.0:
        raise SafeReuseError(f"the path share {share} is outside (0, 1]", fix="pass e.g. 0.5 (the paper's)")
    if not isinstance(rank, int) or rank < 1:
        raise SafeReuseError(f"rank={rank!r} is not a positive integer", fix="use 1 (the model's class) or 2")
    if isinstance(criterion, torch.Tensor):
        if criterion.dim() != 1 or criterion.dtype.is_floating_point or len(criterion) != len(x):
            raise SafeReuseError(
                f"a criterion tensor must hold one integer class per input ({len(x)})",
                fix="pass e.g. the labels as a LongTensor",
            )
        criterion = criterion.long().cpu()
    elif not (criterion == "predicted" or (isinstance(criterion, int) and not isinstance(criterion, bool))):
        raise SafeReuseError(f"unknown criterion {criterion!r}", fix="use predicted, a class id or a tensor")
    if len(x) == 0:
        raise SafeReuseError("the input set is empty", fix="extract paths of at least one input")
    dev = model_device(model)
    syn: dict[str, list[torch.Tensor]] = {}
    neu: dict[str, list[torch.Tensor]] = {}
    seeds: list[torch.Tensor] = []
    with analysis_mode(model):
        graph = trace(model)
        flow = Dataflow.build(model, graph)
        weights = {
            s.layer: s.module.weight.detach().float().flatten(2).sum(2)  # type: ignore[union-attr]
            if s.module.weight.dim() > 2  # type: ignore[union-attr]
            else s.module.weight.detach().float()  # type: ignore[union-attr]
            for s in flow.steps
            if s.rule == "weighted"
        }
        for start in range(0, len(x), batch_size):
            rec = Recorder(model, graph, flow.needed, flow.rules)
            rec.run(x[start : start + batch_size].to(dev))
            part = criterion[start : start + batch_size] if isinstance(criterion, torch.Tensor) else criterion
            s, n, seed = _walk_positive(model, flow, rec, part, rank, share, weights)
            seeds.append(seed.cpu())
            for k in s:  # noqa: PLC0206 - keys only
                syn.setdefault(k, []).append(s[k].cpu())
                neu.setdefault(k, []).append(n[k].cpu())
    layers = list(dict.fromkeys(st.layer for st in flow.steps if st.layer in syn))
    synapse = {k: torch.cat(syn[k]) for k in layers}
    neuron = {k: torch.cat(neu[k]) for k in layers}
    meta = {"share": share, "rank": rank, "rule": "qiu-positive", "seed": torch.cat(seeds).tolist()}
    return SliceResult(layers, neuron, dict(neuron), synapse, dict(synapse), len(x), True, meta)


def _walk_positive(
    model: nn.Module,
    flow: Dataflow,
    rec: Recorder,
    crit: Any,
    rank: int,
    share: float,
    weights: dict[str | None, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
    """One batch's walk: ``(synapses per layer [N, C_out, C_in] int8, neurons [N, C_out], seeds [N])``."""
    views = rec.views
    out = views.get(flow.criterion)
    if out is None or out.dim() != 2:
        raise SafeReuseError(
            "the model's output is not a [N, K] tensor", fix="use a classifier returning logits"
        )
    n, k = out.shape
    if isinstance(crit, torch.Tensor):
        seed = crit.to(out.device)
    elif crit == "predicted":
        if rank > k:
            raise SafeReuseError(f"rank {rank} of {k} outputs", fix=f"use a rank ≤ {k}")
        seed = out.topk(rank, dim=1).indices[:, rank - 1]
    else:
        seed = torch.full((n,), int(crit), dtype=torch.long, device=out.device)
    if len(seed) and not 0 <= int(seed.min()) <= int(seed.max()) < k:
        raise SafeReuseError(f"criterion classes fall outside the model's {k} outputs", fix=f"use 0..{k - 1}")
    on0 = torch.zeros_like(out, dtype=torch.bool)
    on0[torch.arange(n, device=out.device), seed] = True
    # per node: (neurons on the path [N, C] bool, the sign each should have [N, C] ±1)
    state: dict[str, tuple[torch.Tensor, torch.Tensor]] = {flow.criterion: (on0, torch.ones_like(out))}
    synapse: dict[str, torch.Tensor] = {}
    neuron: dict[str, torch.Tensor] = {}
    for step in reversed(flow.steps):
        got = state.pop(step.name, None)
        if got is None or step.name not in views:
            continue
        for name, on, sgn in _route_positive(model, step, got, views, rec, share, weights, synapse, neuron):
            if name in flow.receive:
                state[name] = _merge(state[name], (on, sgn)) if name in state else (on, sgn)
    return synapse, neuron, seed


def _merge(
    a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two consumers' paths into one node: union; a sign of −1 only where every claim says −1
    (the authors resolve a conflict to +1)."""
    on = a[0] | b[0]
    neg = torch.where(a[0] & b[0], (a[1] < 0) & (b[1] < 0), torch.where(a[0], a[1] < 0, b[1] < 0))
    return on, torch.where(neg, -1.0, 1.0).to(a[1].dtype)


def _route_positive(
    model: nn.Module,
    step: Step,
    got: tuple[torch.Tensor, torch.Tensor],
    views: dict[str, torch.Tensor],
    rec: Recorder,
    share: float,
    weights: dict[str | None, torch.Tensor],
    synapse: dict[str, torch.Tensor],
    neuron: dict[str, torch.Tensor],
) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """``(input node, its neurons on the path, their signs)`` of one step (records weighted layers)."""
    on, sgn = got
    y = views[step.name]
    ins = [a for a in step.inputs if a in views]

    def bad(why: str) -> SafeReuseError:
        return SafeReuseError(
            f"the effective path cannot pass {describe(step.node, model)} (node {step.node.name}): {why}",
            fix="extract paths of a model built from conv/linear/BN/activation/pool/add/cat/flatten",
        )

    if step.rule == "weighted":
        if not ins:
            raise bad("its input is not a traced tensor")
        if int(getattr(step.module, "groups", 1)) != 1:
            raise bad("grouped convolutions have no rule here")
        xin = views[ins[0]]
        w = weights[step.layer].to(xin.device)
        if xin.shape[1] != w.shape[1]:
            raise bad(f"{xin.shape[1]} input neurons for a weight of {w.shape[1]}")
        # the authors negate the terms of a neuron whose value has the other sign than wanted
        # only the (input, output neuron) rows on the path are sorted: paths are sparse
        nidx, oidx = on.nonzero(as_tuple=True)
        orient = _sign(y[nidx, oidx] * sgn[nidx, oidx])
        terms = w[oidx] * xin[nidx] * orient[:, None]  # [R, C_in]
        sel = torch.zeros(*on.shape, w.shape[1], dtype=torch.bool, device=on.device)
        sel[nidx, oidx] = select_positive(terms, share)
        layer = step.layer or ""
        synapse[layer] = sel.to(torch.int8) if layer not in synapse else synapse[layer] | sel.to(torch.int8)
        neuron[layer] = on.float() if layer not in neuron else torch.maximum(neuron[layer], on.float())
        on_in = sel.any(1)
        # an input keeps a sign of −1 only where every neuron selecting it wants −1 and all its terms are
        # negative (the authors' new_flip_sign)
        neg_o = torch.zeros_like(on)
        if len(nidx):
            neg_o[nidx, oidx] = (sgn[nidx, oidx] < 0) & (terms.amax(-1) < 0)
        all_neg = ~(sel & ~neg_o[..., None]).any(1)
        return [(ins[0], on_in, torch.where(on_in & all_neg, -1.0, 1.0))]
    if step.rule in ("bn", "scale"):
        xin = views[ins[0]]
        return [(ins[0], on, sgn * _sign(xin) * _sign(y))]
    if step.rule in ("act", "pool", "identity"):
        return [(ins[0], on, sgn)]
    if step.rule == "reshape":
        xin, shape = views[ins[0]], rec.shapes[ins[0]]
        if xin.shape == y.shape:
            return [(ins[0], on, sgn)]
        hw = 1
        for d in shape[2:]:
            hw *= d
        if len(shape) > 2 and y.shape[1] == xin.shape[1] * hw:
            nb, c = xin.shape
            on3, neg3 = on.view(nb, c, hw), (sgn < 0).view(nb, c, hw)
            on_in = on3.any(2)
            neg = ~(on3 & ~neg3).any(2)
            return [(ins[0], on_in, torch.where(on_in & neg, -1.0, 1.0))]
        raise bad(f"reshapes {tuple(shape[1:])} to {rec.shapes[step.name][1:]}")
    if step.rule in ("add", "sub"):
        args = [getattr(a, "name", None) for a in list(step.node.args)[:2]]
        names = [a for a in args if a in views]
        if len(names) == 1:
            return [(names[0], on, sgn)]
        if len(names) != 2:
            raise bad("an add of something other than two activations")
        a, b = views[names[0]], views[names[1]]
        if step.rule == "sub":
            b = -b
        orient = _sign(y * sgn)
        terms = torch.stack([a, b], -1) * orient[..., None]  # [N, C, 2]
        sel = select_positive(terms, share) & on[..., None]
        neg = (sgn < 0) & (terms.amax(-1) < 0)
        sign_in = torch.where(neg, -1.0, 1.0)
        return [(names[0], sel[..., 0], sign_in), (names[1], sel[..., 1], sign_in)]
    if step.rule == "cat":
        parts = [getattr(a, "name", None) for a in step.node.args[0]]  # type: ignore[union-attr]
        if any(p not in views for p in parts):
            raise bad("a concatenated part is not a traced activation")
        sizes = [views[p].shape[1] for p in parts]
        return [(p, o, s) for p, o, s in zip(parts, on.split(sizes, 1), sgn.split(sizes, 1), strict=True)]
    raise bad("no rule")


__all__ = ["effective_paths", "path_theta", "path_vectors", "positive_paths", "select_positive"]
