"""Neuron-coverage-guided test generation on the teacher (DeepXplore, DLFuzz, ADAPT; used by ReMoS).

A *neuron* is the spatial mean of one output channel of an ``nn.Conv2d`` (read with forward hooks,
removed in ``finally``). Each of ``steps`` iterations:

1. forward the batch; update the batch's coverage state (which neurons it has covered so far and
   how often) under the coverage criterion;
2. pick ``k`` neurons per input with the strategy;
3. take a signed-gradient step that increases the sum of their (raw) channel means, then project
   onto the L∞ ε-ball around the clean image and [0, 1].

Coverage criteria (per sample; as ReMoS's coverage profile, ``shared/specs/remos.md``): each conv
output is min-max scaled over the whole ``[C, H, W]`` tensor of the sample, ``m_c`` = channel mean:

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

Coverage is a property of a test *set*: the state (which neurons the batch has covered so far, and how
often) is kept per batch as two ``[M]`` vectors, as DeepXplore / DLFuzz keep it per campaign, so the
inputs of a batch steer each other and the result depends on the batch composition (the audit
records its ``batch_size``, and the cache keys on it).

NC is an absolute threshold, so pushing uncovered neurons up raises the coverage of the generated
set. TKNC and SNAC are relative to the other channels of the layer: raising the chosen neurons can
push others out, and the final inputs may cover fewer neurons than the trajectory did.

Criteria and strategies are plain functions in :data:`COVERAGES` / :data:`STRATEGIES`; add one there
to make it selectable by name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..errors import SafeReuseError
from .attacks import ExploratoryDefect, attack_mode, check_eps, model_device, project
from .base import DEFECTS

# -- neurons ----------------------------------------------------------------------------------------


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """All ``nn.Conv2d`` modules in definition order, with their names."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


@contextmanager
def capture_conv_outputs(model: nn.Module) -> Iterator[list[tuple[torch.Tensor, torch.Tensor]]]:
    """Forward hooks recording, for every ``Conv2d`` call, ``(raw, scaled)`` channel means.

    ``raw`` is the differentiable ``[N, C]`` spatial mean of the output; ``scaled`` (no gradient) the
    channel means after min-max scaling each sample's whole ``[C, H, W]`` output. Both are taken inside
    the hook, before any in-place op downstream can change the output. Hooks are removed on exit.

    Raises:
        SafeReuseError: the model has no ``Conv2d`` layer.
    """
    convs = conv_layers(model)
    if not convs:
        raise SafeReuseError(
            f"{type(model).__name__} has no Conv2d layer to take neurons from",
            fix="use a convolutional teacher for nc-guided defects",
        )
    outs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def hook(_m: nn.Module, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        outs.append((out.mean((2, 3)), scaled_channel_means(out)))

    handles = [m.register_forward_hook(hook) for _, m in convs]
    try:
        yield outs
    finally:
        for h in handles:
            h.remove()


def scaled_channel_means(out: torch.Tensor) -> torch.Tensor:
    """``[N, C]`` channel means of a conv output min-max scaled per sample over ``[C, H, W]``."""
    o = out.detach()
    flat = o.flatten(1)
    lo = flat.min(1).values.view(-1, 1, 1, 1)
    hi = flat.max(1).values.view(-1, 1, 1, 1)
    return ((o - lo) / (hi - lo).clamp_min(1e-12)).mean((2, 3))


# -- coverage criteria: list of [N, C_l] scaled means → [N, M] bool ----------------------------------
CoverageFn = Callable[[list[torch.Tensor], "NCGuided"], torch.Tensor]


def cover_nc(means: list[torch.Tensor], p: NCGuided) -> torch.Tensor:
    """NC: scaled channel mean above ``tau``."""
    return torch.cat(means, 1) > p.tau


def cover_tknc(means: list[torch.Tensor], p: NCGuided) -> torch.Tensor:
    """TKNC: among the ``top_k`` channel means of its layer (all channels if the layer has fewer)."""
    out = []
    for m in means:
        k = min(p.top_k, m.shape[1])
        mask = torch.zeros_like(m, dtype=torch.bool)
        mask.scatter_(1, m.topk(k, dim=1).indices, True)
        out.append(mask)
    return torch.cat(out, 1)


def cover_snac(means: list[torch.Tensor], p: NCGuided) -> torch.Tensor:
    """SNAC (per sample): above the midpoint of the layer's channel-mean range."""
    out = []
    for m in means:
        hi, lo = m.max(1, keepdim=True).values, m.min(1, keepdim=True).values
        out.append(m > hi - (hi - lo) / 2)
    return torch.cat(out, 1)


COVERAGES: dict[str, CoverageFn] = {"nc": cover_nc, "tknc": cover_tknc, "snac": cover_snac}


# -- strategies: state → [N, k] neuron indices ----------------------------------------------------
@dataclass
class CoverageState:
    """Coverage bookkeeping of one batch during generation (a batch is one test campaign).

    Attributes:
        covered: ``[M]`` bool, neuron covered by some input of the batch at some iteration so far.
        counts: ``[M]`` float, how many (input, iteration) pairs covered it.
        act: ``[N, M]`` current scaled channel means of each input (in [0, 1]).
        weight: ``[M]`` RMS of each neuron's conv filter.
        step: current iteration (0-based).
        generator: CPU RNG for random strategies.
    """

    covered: torch.Tensor
    counts: torch.Tensor
    act: torch.Tensor
    weight: torch.Tensor
    step: int
    generator: torch.Generator


StrategyFn = Callable[[CoverageState, int], torch.Tensor]


def _top(score: torch.Tensor, k: int) -> torch.Tensor:
    return score.topk(k, dim=1).indices


def most_covered(s: CoverageState, k: int) -> torch.Tensor:
    """DLFuzz: the batch's most frequently covered neurons; ties → the input's most activated."""
    return _top(s.counts + 0.5 * s.act, k)


def rarest_covered(s: CoverageState, k: int) -> torch.Tensor:
    """DLFuzz: the batch's least frequently covered neurons; ties → the input's most activated."""
    return _top(-s.counts + 0.5 * s.act, k)


def high_weight(s: CoverageState, k: int) -> torch.Tensor:
    """DLFuzz: neurons with the largest filter weights (RMS), same for every sample."""
    return _top(s.weight.expand_as(s.act), k)


def uncovered_random(s: CoverageState, k: int) -> torch.Tensor:
    """DeepXplore: per input, random neurons the batch has not covered yet, then random covered ones."""
    noise = torch.rand(s.act.shape, generator=s.generator).to(s.act.device)
    return _top((~s.covered).float() * 2 + noise, k)


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
        coverage: ``nc``, ``tknc`` or ``snac``.
        tau: NC threshold.
        top_k: TKNC's k.

    Returns:
        ``[N, M]`` bool, ``M`` = total conv output channels.
    """
    p = NCGuided(coverage=coverage, tau=tau, top_k=top_k)
    with attack_mode(model), capture_conv_outputs(model) as outs, torch.no_grad():
        model(x.to(model_device(model)))
        return COVERAGES[p.coverage]([sc for _, sc in outs], p).cpu()


@DEFECTS.register(
    "nc-guided", "neuron-coverage-guided inputs: coverage nc|tknc|snac × strategy deepxplore|dlfuzz|dlfuzzrr"
)
@dataclass
class NCGuided(ExploratoryDefect):
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
        seed: seed of DeepXplore's random neuron choice.
    """

    kind: ClassVar[str] = "nc-guided"

    coverage: str = "nc"
    strategy: str = "deepxplore"
    k: int = 20
    tau: float = 0.5
    top_k: int = 10
    eps: float = 8 / 255
    alpha: float | None = None
    steps: int = 40
    seed: int = 0

    def __post_init__(self) -> None:
        if self.coverage not in COVERAGES:
            raise SafeReuseError(
                f"coverage {self.coverage!r} is unknown", fix=f"use one of {', '.join(COVERAGES)}"
            )
        if self.strategy not in STRATEGIES:
            raise SafeReuseError(
                f"strategy {self.strategy!r} is unknown", fix=f"use one of {', '.join(STRATEGIES)}"
            )
        for what in ("k", "top_k", "steps"):
            v = getattr(self, what)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise SafeReuseError(f"{what}={v!r} must be a positive integer", fix="e.g. 20")
        self.eps = check_eps(self.eps)
        self.alpha = check_eps(self.eps / 10 if self.alpha is None else self.alpha, "alpha")

    def craft(self, model, x, y, generator=None):  # noqa: D102 - see ExploratoryDefect.craft
        gen = self._generator(generator)
        dev = model_device(model)
        x0 = x.detach().to(dev)
        cover, strategy = COVERAGES[self.coverage], STRATEGIES[self.strategy]
        with attack_mode(model), capture_conv_outputs(model) as outs:
            weight = torch.cat(
                [m.weight.detach().flatten(1).pow(2).mean(1).sqrt() for _, m in conv_layers(model)]
            ).to(dev)
            k = min(self.k, weight.numel())
            covered = counts = None
            x_adv = x0.clone()
            for step in range(self.steps):
                x_adv.requires_grad_(True)
                outs.clear()
                with torch.enable_grad():
                    model(x_adv)
                    raw = torch.cat([r for r, _ in outs], 1)  # [N, M], differentiable
                    if raw.shape[1] != weight.numel():
                        raise SafeReuseError(
                            f"{type(model).__name__} calls its Conv2d layers {len(outs)} times per forward "
                            f"but has {len(conv_layers(model))} of them",
                            fix="nc-guided needs every Conv2d to run exactly once per forward",
                        )
                    with torch.no_grad():
                        act_l = [sc for _, sc in outs]
                        now = cover(act_l, self)
                        covered = now.any(0) if covered is None else covered | now.any(0)
                        counts = now.sum(0).float() if counts is None else counts + now.sum(0)
                        state = CoverageState(covered, counts, torch.cat(act_l, 1), weight, step, gen)
                        idx = strategy(state, k)
                    (grad,) = torch.autograd.grad(raw.gather(1, idx).sum(), x_adv)
                with torch.no_grad():
                    x_adv = project(x_adv.detach() + self.alpha * grad.sign(), x0, self.eps, "linf")
            outs.clear()
        return x_adv.detach().to(x.device)


__all__ = [
    "COVERAGES",
    "STRATEGIES",
    "CoverageState",
    "NCGuided",
    "capture_conv_outputs",
    "conv_layers",
    "neuron_coverage",
    "scaled_channel_means",
]
