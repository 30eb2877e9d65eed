"""Neuron-coverage-guided test generation on the teacher (DeepXplore, DLFuzz, ADAPT; used by ReMoS).

A *neuron* is the spatial mean of one output channel of an ``nn.Conv2d`` (read with
:func:`safereuse.slicing.capture`, hooks removed in ``finally``). Each of ``steps`` iterations:

1. forward the batch; update each input's coverage state (which neurons it has covered so far and
   how often) under the coverage criterion;
2. pick ``k`` neurons per input with the strategy;
3. take a signed-gradient step that increases the sum of their (raw) channel means, then project
   onto the L∞ ε-ball around the clean image and [0, 1].

Coverage criteria (per sample; the one implementation ReMoS's coverage profile uses too,
:func:`safereuse.slicing.channel_coverage`, ``shared/specs/remos.md``): each conv output is min-max
scaled over the whole ``[C, H, W]`` tensor of the sample, ``m_c`` = channel mean; a constant output
covers nothing:

- ``nc`` (Pei et al., SOSP 2017): covered when ``m_c > τ`` (τ = 0.5);
- ``tknc`` (Ma et al., ASE 2018): ``c`` is among the ``top_k`` (10) largest ``m_c`` of its layer;
- ``snac``: ``m_c > max − (max − min)/2`` with max/min over the layer's channel means of the sample
  (with the whole-tensor scaling, a threshold on the raw tensor's range would equal ``nc``).

Strategies (ADAPT, Lee et al., ISSTA 2020, which re-implements them):

- ``deepxplore`` (Pei et al., SOSP 2017): ``k`` random *uncovered* neurons (random covered ones if
  fewer remain);
- ``dlfuzz`` (Guo et al., FSE 2018): the ``k`` most-covered neurons (ties → most activated);
- ``dlfuzzrr``: DLFuzz's round-robin over most-covered, rarest-covered and highest-weight (RMS of
  the conv filter) neurons, one per iteration.

Each seed input is its own campaign, as the ReMoS artifact's DeepXplore / DLFuzz strategies keep it:
the state (which neurons the input has covered so far, and how often) is one row per input, and
random choices come from one generator per input seeded in input order, so the crafted set does not
depend on the batch size or on which inputs share a batch.

NC is an absolute threshold, so pushing uncovered neurons up raises the coverage of the generated
set. TKNC and SNAC are relative to the other channels of the layer: raising the chosen neurons can
push others out, and the final inputs may cover fewer neurons than the trajectory did.

Criteria are :data:`safereuse.slicing.CRITERIA`; strategies are plain functions in :data:`STRATEGIES`
(``(CoverageState, k) -> [N, k]`` neuron indices); add one there to make it selectable by name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, ClassVar, NamedTuple

import torch
from pydantic import Field
from torch import nn

from .. import metrics
from ..errors import SafeReuseError
from ..slicing import CRITERIA, Capture, Criterion, capture, channel_coverage, make_criterion, nc
from .attacks import DirForm, TransferredAttack, attack_mode, check_eps, model_device, project
from .base import DEFECTS

# -- neurons ----------------------------------------------------------------------------------------


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """All ``nn.Conv2d`` modules in definition order, with their names."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


class ConvNeurons(NamedTuple):
    """What :func:`capture_conv_outputs` records for one ``Conv2d`` call (``C`` = its channels).

    Attributes:
        raw: ``[N, C]`` spatial means of the output, differentiable (the quantity the attack raises).
        act: ``[N, C]`` channel means after min-max scaling each sample's ``[C, H, W]`` output, in
            ``[0, 1]`` (:func:`safereuse.slicing.scaled_channel_means`; no gradient).
        covered: ``bool [N, C]``, the criterion on ``act`` (:func:`safereuse.slicing.channel_coverage`).
    """

    raw: torch.Tensor
    act: torch.Tensor
    covered: torch.Tensor


@contextmanager
def capture_conv_outputs(model: nn.Module, criterion: Criterion | None = None) -> Iterator[Capture]:
    """Record a :class:`ConvNeurons` for every ``Conv2d`` call inside the block.

    Everything is computed inside the hook, before any in-place op downstream can change the output;
    the full output tensor is not kept. Hooks are removed on exit (:func:`safereuse.slicing.capture`).

    Args:
        model: any module with ``Conv2d`` layers.
        criterion: the coverage criterion (default: ``nc(0.5)``).

    Yields:
        A :class:`~safereuse.slicing.Capture`; ``cap.outputs()`` lists the records in call order.

    Raises:
        SafeReuseError: the model has no ``Conv2d`` layer.
    """
    convs = conv_layers(model)
    if not convs:
        raise SafeReuseError(
            f"{type(model).__name__} has no Conv2d layer to take neurons from",
            fix="use a convolutional teacher for nc-guided defects",
        )
    crit = criterion if criterion is not None else nc()

    def neurons(out: torch.Tensor) -> ConvNeurons:
        act, covered = channel_coverage(out.detach(), crit)
        return ConvNeurons(out.mean((2, 3)), act, covered)

    with capture(model, convs, grad=True, reduce=neurons) as cap:
        yield cap


def all_neurons(cap: Capture, convs: list[tuple[str, nn.Conv2d]], model: nn.Module) -> ConvNeurons:
    """One forward pass's :class:`ConvNeurons` of every conv, concatenated ``[N, M]`` in definition order.

    Definition order (not call order: a ResNet calls its downsampling conv before the block's convs)
    so neuron ``j`` is the same channel as entry ``j`` of per-filter quantities built from
    :func:`conv_layers`.

    Raises:
        SafeReuseError: a conv did not run exactly once in the pass.
    """
    recs = {}
    for r in cap.records:
        if r.site == "output":
            recs.setdefault(r.name, []).append(r.value)
    if len(cap.records) != len(convs) or any(len(recs.get(n, ())) != 1 for n, _ in convs):
        raise SafeReuseError(
            f"{type(model).__name__} calls its Conv2d layers {len(cap.records)} times per forward "
            f"but has {len(convs)} of them",
            fix="nc-guided needs every Conv2d to run exactly once per forward",
        )
    ordered = [recs[n][0] for n, _ in convs]
    return ConvNeurons(*(torch.cat(parts, 1) for parts in zip(*ordered, strict=True)))


# -- strategies: state → [N, k] neuron indices ----------------------------------------------------
@dataclass
class CoverageState:
    """Coverage bookkeeping of the inputs being crafted, one row per input (``M`` = all neurons).

    Each seed input is its own campaign, as in the ReMoS artifact's DeepXplore / DLFuzz code: what it
    has covered, and its random choices, never depend on the other inputs of the batch.

    Attributes:
        covered: ``bool [N, M]``, neuron covered by the input at some iteration so far.
        counts: ``[N, M]`` float, in how many iterations so far the input covered it.
        act: ``[N, M]`` current scaled channel means of each input (in [0, 1]).
        weight: ``[M]`` RMS of each neuron's conv filter.
        step: current iteration (0-based).
        generators: one CPU RNG per input, for random strategies (see :meth:`uniform`).
    """

    covered: torch.Tensor
    counts: torch.Tensor
    act: torch.Tensor
    weight: torch.Tensor
    step: int
    generators: list[torch.Generator]

    def uniform(self) -> torch.Tensor:
        """``[N, M]`` uniform noise in [0, 1), row ``n`` drawn from input ``n``'s own generator."""
        m = self.act.shape[1]
        rows = [torch.rand(m, generator=g, dtype=torch.float64) for g in self.generators]
        return torch.stack(rows).to(self.act.device)


StrategyFn = Callable[[CoverageState, int], torch.Tensor]


def _top(score: torch.Tensor, k: int) -> torch.Tensor:
    return score.topk(k, dim=1).indices


def most_covered(s: CoverageState, k: int) -> torch.Tensor:
    """DLFuzz: the input's most frequently covered neurons; ties → the most activated."""
    return _top(s.counts + 0.5 * s.act, k)


def rarest_covered(s: CoverageState, k: int) -> torch.Tensor:
    """DLFuzz: the input's least frequently covered neurons; ties → the most activated."""
    return _top(-s.counts + 0.5 * s.act, k)


def high_weight(s: CoverageState, k: int) -> torch.Tensor:
    """DLFuzz: neurons with the largest filter weights (RMS), same for every sample."""
    return _top(s.weight.expand_as(s.act), k)


def uncovered_random(s: CoverageState, k: int) -> torch.Tensor:
    """DeepXplore: random neurons the input has not covered yet, then random covered ones."""
    return _top((~s.covered).to(torch.float64) * 2 + s.uniform(), k)


def round_robin(s: CoverageState, k: int) -> torch.Tensor:
    """DLFuzzRR: most-covered, rarest-covered, high-weight in turn, one per iteration."""
    return (most_covered, rarest_covered, high_weight)[s.step % 3](s, k)


STRATEGIES: dict[str, StrategyFn] = {
    "deepxplore": uncovered_random,
    "dlfuzz": most_covered,
    "dlfuzzrr": round_robin,
}


# -- the defect -------------------------------------------------------------------------------------
def neuron_coverage(
    model: nn.Module, x: torch.Tensor, coverage: str = "nc", tau: float = 0.5, top_k: int = 10
) -> torch.Tensor:
    """Which conv neurons each input covers (no gradient; hooks removed; model state restored).

    Args:
        model: any module with ``Conv2d`` layers.
        x: images ``[N, C, H, W]`` in [0, 1].
        coverage: ``nc``, ``tknc`` or ``snac`` (:data:`safereuse.slicing.CRITERIA`).
        tau: NC threshold.
        top_k: TKNC's k.

    Returns:
        ``[N, M]`` bool, ``M`` = total conv output channels.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Conv2d(3, 2, 1))
        >>> neuron_coverage(net, torch.rand(4, 1, 6, 6)).shape
        torch.Size([4, 5])
    """
    crit = make_criterion(coverage, tau=tau, top_k=top_k)
    with attack_mode(model), capture_conv_outputs(model, crit) as cap, torch.no_grad():
        model(x.to(model_device(model)))
        return all_neurons(cap, conv_layers(model), model).covered.cpu()


@DEFECTS.register(
    "nc-guided", "neuron-coverage-guided inputs: coverage nc|tknc|snac × strategy deepxplore|dlfuzz|dlfuzzrr"
)
@dataclass
class NCGuided(TransferredAttack):
    """Neuron-coverage-guided inputs crafted on the teacher (ReMoS's 3 coverages × 3 strategies).

    The spec's values (α = 0.01, ε = 0.1, 40 iterations, no random start) are for ImageNet-normalised
    inputs, where ε = 0.1 is ≈ 0.023 in pixels. For 28 px grey images in [0, 1] we use ε = 8/255 (as
    for the penultimate attack, so the two DIRs are comparable) and keep the ratio α = ε/10.

    Args:
        coverage: ``nc`` | ``tknc`` | ``snac`` (see module docstring).
        strategy: ``deepxplore`` | ``dlfuzz`` | ``dlfuzzrr``.
        k: neurons whose mean is increased at each step (20).
        tau: NC threshold on the scaled channel mean (0.5).
        top_k: TKNC's per-layer k (10).
        eps: L∞ budget in pixel units (8/255).
        alpha: step size; None → ε/10.
        steps: iterations (40).
        seed: seed of DeepXplore's random neuron choice (each input gets its own stream, seeded from
            this one in input order, so the crafted set does not depend on the batch size).
    """

    kind: ClassVar[str] = "nc-guided"
    dir_form: ClassVar[DirForm] = staticmethod(metrics.dir_nc)

    coverage: str = "nc"
    strategy: str = "deepxplore"
    k: Annotated[int, Field(ge=1)] = 20
    tau: float = 0.5
    top_k: Annotated[int, Field(ge=1)] = 10
    eps: float = 8 / 255
    alpha: float | None = None
    steps: Annotated[int, Field(ge=1)] = 40
    seed: int = 0

    def __post_init__(self) -> None:
        if self.coverage not in CRITERIA:
            raise SafeReuseError(
                f"coverage {self.coverage!r} is unknown", fix=f"use one of {', '.join(CRITERIA)}"
            )
        if self.strategy not in STRATEGIES:
            raise SafeReuseError(
                f"strategy {self.strategy!r} is unknown", fix=f"use one of {', '.join(STRATEGIES)}"
            )
        self.eps = check_eps(self.eps)
        self.alpha = check_eps(self.eps / 10 if self.alpha is None else self.alpha, "alpha")

    def craft(self, model, x, y, generator=None):  # noqa: D102 - see ExploratoryDefect.craft
        gen = self._generator(generator)
        dev = model_device(model)
        x0 = x.detach().to(dev)
        crit = make_criterion(self.coverage, tau=self.tau, top_k=self.top_k)
        strategy = STRATEGIES[self.strategy]
        # One RNG per input, seeded from the shared stream in input order: an input's random choices
        # then do not depend on the batch it is crafted in (craft_batched passes one stream along).
        seeds = [int(torch.randint(2**62, (1,), generator=gen)) for _ in range(len(x0))]
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        with attack_mode(model), capture_conv_outputs(model, crit) as cap:
            convs = conv_layers(model)
            weight = torch.cat([m.weight.detach().flatten(1).pow(2).mean(1).sqrt() for _, m in convs]).to(dev)
            k = min(self.k, weight.numel())
            covered = counts = None
            x_adv = x0.clone()
            for step in range(self.steps):
                x_adv.requires_grad_(True)
                cap.clear()
                with torch.enable_grad():
                    model(x_adv)
                    neurons = all_neurons(cap, convs, model)  # [N, M]; .raw differentiable
                    with torch.no_grad():
                        now = neurons.covered
                        covered = now if covered is None else covered | now
                        counts = now.float() if counts is None else counts + now
                        state = CoverageState(covered, counts, neurons.act, weight, step, generators)
                        idx = strategy(state, k)
                    (grad,) = torch.autograd.grad(neurons.raw.gather(1, idx).sum(), x_adv)
                with torch.no_grad():
                    x_adv = project(x_adv.detach() + self.alpha * grad.sign(), x0, self.eps, "linf")
            cap.clear()
        return x_adv.detach().to(x.device)


__all__ = [
    "STRATEGIES",
    "ConvNeurons",
    "CoverageState",
    "NCGuided",
    "all_neurons",
    "capture_conv_outputs",
    "conv_layers",
    "neuron_coverage",
]
