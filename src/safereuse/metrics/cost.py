"""Model cost: parameter and weight counts, FLOPs, latency, and the cost comparison of an original
and a reduced model.

:func:`count_params`, :func:`count_nonzero_weights`, :func:`flops` (``torch.utils.flop_counter``),
:func:`latency` (``torch.utils.benchmark``), SeaM's :func:`sparse_flops` (multiplications with
non-zero weights) and :func:`latency_ms` (per batch size), and :func:`compare_cost` (what
``safereuse reengineer`` records for an original and its re-engineered model).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..errors import SafeReuseError
from ..utils import analysis_mode

_WEIGHTED = (nn.modules.conv._ConvNd, nn.Linear)


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (optionally only those with ``requires_grad``).

    Example:
        >>> count_params(nn.Linear(4, 2))
        10
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_nonzero_weights(model: nn.Module, *, total: bool = False) -> int:
    """Non-zero entries of the effective ``Conv*d`` / ``Linear`` weights (biases and BN excluded).

    Reads ``module.weight``, so masks applied through ``torch.nn.utils.parametrize`` are counted as
    the model uses them.

    Args:
        model: any module.
        total: count all entries of those weights instead (the denominator of a sparsity figure).

    Returns:
        The count.

    Example:
        >>> lin = nn.Linear(4, 2)
        >>> with torch.no_grad():
        ...     _ = lin.weight[0].zero_()
        >>> count_nonzero_weights(lin), count_nonzero_weights(lin, total=True)
        (4, 8)
    """
    n = 0
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, _WEIGHTED):
                w = m.weight
                n += w.numel() if total else int(torch.count_nonzero(w))
    return n


def _example_input(model: nn.Module, input_shape: Sequence[int], device: str | torch.device | None):
    shape = tuple(int(s) for s in input_shape)
    if getattr(model, "takes_text", False):  # a text model (minilm): (L,) or (N, L) token ids, no padding
        if len(shape) not in (1, 2):
            raise SafeReuseError(
                f"input_shape {shape} must be (L,) or (N, L) for a text model", fix="e.g. (64,)"
            )
        dev = next(model.parameters()).device
        high = int(getattr(model, "vocab_size", 2))  # any real (non-pad) token
        return torch.randint(1, high, shape if len(shape) == 2 else (1, *shape), device=device or dev)
    if len(shape) == 3:
        shape = (1, *shape)
    if len(shape) != 4:
        raise SafeReuseError(
            f"input_shape {tuple(input_shape)} must be (C, H, W) or (N, C, H, W)", fix="e.g. (1, 28, 28)"
        )
    try:
        p = next(model.parameters())
        dev, dtype = p.device, p.dtype
    except StopIteration:
        dev, dtype = torch.device("cpu"), torch.float32
    return torch.rand(shape, device=device or dev, dtype=dtype)


def flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Forward FLOPs of ``model`` on one input batch (a multiply-add counts as 2 FLOPs).

    Counted with ``torch.utils.flop_counter.FlopCounterMode`` in eval mode under ``no_grad``;
    the model's ``training`` flag is restored.

    Args:
        model: any module.
        input_shape: ``(C, H, W)`` (batch of one) or ``(N, C, H, W)``; for a text model
            (``minilm``) ``(L,)`` or ``(N, L)`` tokens (every position a real token).

    Returns:
        Total FLOPs of one forward pass.

    Example:
        >>> flops(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), (1, 2, 2))  # 8 multiply-adds
        16
    """
    x = _example_input(model, input_shape, None)
    counter = FlopCounterMode(display=False)
    with analysis_mode(model), counter:
        model(x)
    return int(counter.get_total_flops())


@dataclass(frozen=True)
class Latency:
    """Forward latency measured by ``torch.utils.benchmark``.

    Attributes:
        median: median seconds per forward pass.
        iqr: inter-quartile range, seconds.
        runs: number of timed measurements behind the median.
        batch: batch size of the timed input.
        device: where it ran.
    """

    median: float
    iqr: float
    runs: int
    batch: int
    device: str


def latency(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    min_run_time: float = 0.5,
    num_threads: int | None = None,
    device: str | torch.device | None = None,
) -> Latency:
    """Median wall time of one forward pass (eval mode, ``no_grad``), via ``benchmark.Timer``.

    Args:
        model: any module (moved nowhere: it runs where its parameters are unless ``device`` is given,
            in which case only the *input* is placed there; pass a model already on that device).
        input_shape: ``(C, H, W)`` (batch of one) or ``(N, C, H, W)``.
        min_run_time: seconds of measurement for ``blocked_autorange``.
        num_threads: CPU threads for the timer (default: ``torch.get_num_threads()``).
        device: device of the input tensor.

    Returns:
        :class:`Latency` with the median seconds and the number of measurements.

    Example:
        >>> lat = latency(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), (1, 2, 2), min_run_time=0.01)
        >>> lat.batch, lat.median > 0
        (1, True)
    """
    from torch.utils import benchmark  # deferred: ~0.2 s at import, only needed when timing

    x = _example_input(model, input_shape, device)
    with analysis_mode(model):
        model(x)  # warm-up (lazy init, allocator)
        timer = benchmark.Timer(
            stmt="model(x)",
            globals={"model": model, "x": x},
            num_threads=num_threads or torch.get_num_threads(),
        )
        m = timer.blocked_autorange(min_run_time=min_run_time)
    return Latency(float(m.median), float(m.iqr), len(m.times), int(x.shape[0]), str(x.device))


def sparse_flops(
    model: nn.Module, example_input: torch.Tensor, masks: dict[str, torch.Tensor] | None = None
) -> int:
    """Multiplications of one forward pass at batch 1, counting only non-zero weights (SeaM's rule).

    SeaM (Qi et al., ICSE 2023) counts a conv as ``nnz(W) · H_out · W_out`` multiplications and a
    linear as ``nnz(W)``, head included. The dense count comes from
    ``torch.utils.flop_counter.FlopCounterMode`` (which counts a multiply-add as 2 FLOPs, hence the
    halving: the result is *multiplications*, ≈ MACs, not FLOPs); each conv / linear call is then
    scaled by ``nnz / numel`` of its effective weight — ``module.weight`` (so parametrize masks count),
    times ``masks[name + ".weight"]`` when given. Other ops that FlopCounterMode counts (matmuls,
    attention) stay dense; BN, activations, pooling and biases are not multiplications it counts.
    The model runs in eval mode under ``no_grad``; its ``training`` flags are restored and the
    counting hooks removed.

    Args:
        model: any module.
        example_input: an input batch (only its first sample is used).
        masks: parameter name → bool tensor (True = kept) applied on top of the weights.

    Returns:
        The number of multiplications.

    Example:
        >>> conv = nn.Conv2d(1, 2, 3, bias=False)  # 18 weights, 3 × 3 outputs per channel
        >>> keep = torch.ones(2, 1, 3, 3, dtype=torch.bool)
        >>> keep[0] = False
        >>> x = torch.zeros(1, 1, 5, 5)
        >>> sparse_flops(conv, x), sparse_flops(conv, x, {"weight": keep})
        (162, 81)
    """
    masks = masks or {}
    names = {m: n for n, m in model.named_modules()}
    counter = FlopCounterMode(display=False)
    starts: list[int] = []
    calls: list[tuple[int, int, int]] = []  # (dense FLOPs, nnz, numel) per conv / linear call

    def before(module: nn.Module, args: Any) -> None:
        starts.append(counter.get_total_flops())

    def after(module: nn.Module, args: Any, output: Any) -> None:
        dense = counter.get_total_flops() - starts.pop()
        w = module.weight.detach()
        k = masks.get(f"{names[module]}.weight" if names[module] else "weight")
        nz = w != 0 if k is None else (w != 0) & k.to(w.device)
        calls.append((dense, int(nz.sum()), w.numel()))

    handles = []
    try:
        for m in model.modules():
            if isinstance(m, _WEIGHTED):
                handles += [m.register_forward_pre_hook(before), m.register_forward_hook(after)]
        with analysis_mode(model), counter:
            model(example_input[:1])
    finally:
        for h in handles:
            h.remove()
    total = int(counter.get_total_flops())
    layered = sum(d for d, _, _ in calls)
    sparse = sum(d // 2 * nz // numel for d, nz, numel in calls)
    return (total - layered) // 2 + sparse


def latency_ms(
    model: nn.Module,
    example_input: torch.Tensor,
    batch_sizes: Sequence[int] = (1, 64),
    threads: int = 2,
    min_run_time: float = 0.5,
) -> dict[int, float]:
    """Median milliseconds per forward pass of a whole batch, per batch size, with fixed CPU threads.

    Each batch size is timed like :func:`latency` (``torch.utils.benchmark.Timer.blocked_autorange``,
    eval mode, ``no_grad``, one warm-up pass; ``training`` flags restored) on random inputs shaped
    like ``example_input``'s samples, all with ``threads`` intra-op threads — compare two models only
    within one run and with the same threads. torch's own thread setting is restored afterwards.

    Args:
        model: any module (runs where its parameters are; inputs go to ``example_input``'s device).
        example_input: an input batch giving the per-sample shape and the device.
        batch_sizes: the batch sizes to time.
        threads: intra-op CPU threads for the timer.
        min_run_time: seconds of measurement per batch size.

    Returns:
        ``{batch size: median ms per batch}``.

    Example:
        >>> lat = latency_ms(nn.Linear(4, 2), torch.zeros(1, 4), batch_sizes=(1, 8), min_run_time=0.01)
        >>> sorted(lat), all(v > 0 for v in lat.values())
        ([1, 8], True)
    """
    if threads < 1 or not batch_sizes or any(int(b) < 1 for b in batch_sizes):
        raise SafeReuseError(
            f"latency_ms needs threads >= 1 and positive batch sizes (got {threads}, {tuple(batch_sizes)})",
            fix="e.g. threads=2, batch_sizes=(1, 64)",
        )
    from torch.utils import benchmark  # deferred: ~0.2 s at import, only needed when timing

    before = torch.get_num_threads()
    gen = torch.Generator().manual_seed(0)
    out: dict[int, float] = {}
    try:
        with analysis_mode(model):
            for b in batch_sizes:
                x = torch.rand((int(b), *example_input.shape[1:]), generator=gen)
                x = x.to(example_input.device, example_input.dtype)
                model(x)  # warm-up (lazy init, allocator)
                timer = benchmark.Timer(
                    stmt="model(x)", globals={"model": model, "x": x}, num_threads=threads
                )
                out[int(b)] = 1000.0 * float(timer.blocked_autorange(min_run_time=min_run_time).median)
        return out
    finally:
        torch.set_num_threads(before)


def latency_rounds(
    models: Mapping[str, nn.Module],
    example_input: torch.Tensor,
    batch_sizes: Sequence[int] = (1, 64),
    *,
    threads: int = 2,
    round_time: float = 0.1,
    rounds: int = 5,
) -> dict[str, list[dict[int, float]]]:
    """:func:`latency_ms` of several models, round-robin: every round times each model once, so a
    burst of load on a shared machine hits all of them alike instead of one.

    Args:
        models: name → module.
        example_input: an input batch (gives the per-sample shape and the device).
        batch_sizes: the batch sizes to time.
        threads: intra-op CPU threads for every measurement.
        round_time: seconds of measurement per model, batch size and round.
        rounds: rounds (≥ 1).

    Returns:
        ``{name: [one {batch size: median ms} per round]}``.

    Example:
        >>> r = latency_rounds({"a": nn.Linear(4, 2)}, torch.zeros(1, 4), (1,), round_time=0.01, rounds=2)
        >>> len(r["a"]), sorted(r["a"][0])
        (2, [1])
    """
    if rounds < 1:
        raise SafeReuseError(f"latency rounds must be >= 1 (got {rounds})", fix="e.g. rounds=5")
    runs: dict[str, list[dict[int, float]]] = {k: [] for k in models}
    for _ in range(rounds):
        for key, model in models.items():
            lat = latency_ms(model, example_input, batch_sizes, threads=threads, min_run_time=round_time)
            runs[key].append(lat)
    return runs


def compare_cost(
    original: nn.Module,
    reduced: nn.Module,
    example_input: torch.Tensor,
    *,
    threads: int = 2,
    batch_sizes: Sequence[int] = (1, 64),
    min_run_time: float = 0.5,
    rounds: int = 5,
) -> dict[str, Any]:
    """The cost of an original and a reduced model side by side, as ``safereuse reengineer`` records it.

    SeaM's counts: :func:`sparse_flops` (multiplications with non-zero weights, batch 1) of each
    model, then :func:`latency_ms` of each, **interleaved**: ``rounds`` alternating rounds of
    ``min_run_time / rounds`` seconds per model and batch size, and the median over the rounds — so
    a burst of load on a shared machine hits both models alike instead of one (same ``threads`` for
    both; compare the two latencies with each other, not across runs). The keys and their order are
    those of the re-engineered model's manifest ``metrics``.

    Args:
        original: the model before re-engineering.
        reduced: the re-engineered (masked or materialised) model.
        example_input: an input batch (gives the per-sample shape and the device).
        threads: intra-op CPU threads for both latency measurements.
        batch_sizes: the batch sizes to time.
        min_run_time: seconds of measurement per model and batch size, over all rounds.
        rounds: alternating rounds (≥ 1).

    Returns:
        ``{"flops_original", "flops_reengineered"}`` (ints), ``{"latency_original_ms",
        "latency_reengineered_ms"}`` (``{str(batch size): median ms}``), ``latency_threads`` and
        ``latency_rounds``.

    Example:
        >>> big = nn.Linear(4, 2)
        >>> small = nn.Linear(4, 2)
        >>> with torch.no_grad():
        ...     _ = small.weight.zero_()
        >>> c = compare_cost(big, small, torch.zeros(1, 4), batch_sizes=(1,), min_run_time=0.01)
        >>> c["flops_original"], c["flops_reengineered"], sorted(c["latency_original_ms"])
        (8, 0, ['1'])
    """
    runs = latency_rounds(
        {"o": original, "r": reduced}, example_input, batch_sizes,
        threads=threads, round_time=min_run_time / max(rounds, 1), rounds=rounds,
    )  # fmt: skip
    flops_o = sparse_flops(original, example_input)
    flops_r = sparse_flops(reduced, example_input)

    def median(key: str) -> dict[str, float]:
        return {str(b): statistics.median(r[int(b)] for r in runs[key]) for b in batch_sizes}

    return {
        "flops_original": flops_o,
        "flops_reengineered": flops_r,
        "latency_original_ms": median("o"),
        "latency_reengineered_ms": median("r"),
        "latency_threads": threads,
        "latency_rounds": rounds,
    }


__all__ = [
    "Latency",
    "compare_cost",
    "count_nonzero_weights",
    "count_params",
    "flops",
    "latency",
    "latency_ms",
    "latency_rounds",
    "sparse_flops",
]
