"""Metrics: pure functions on tensors, every rate with its sample count and a 95 % Wilson interval.

Conventions (see ``shared/specs/defects.md``):

- Every *rate* (:func:`accuracy`, :func:`robust_accuracy`, the DIR forms, :func:`asr`) is a
  :class:`Rate` in **percent** (0–100), as the ReMoS / CARTL / BackdoorBench papers report them,
  with ``k`` (events), ``n`` (the denominator) and the Wilson interval, also in percent.
- An empty denominator is not an error: the rate is ``nan`` with ``n = 0`` and a ``nan`` interval.
- :func:`wilson_interval` itself works on fractions (0–1), like any statistics routine.
- Predictions are class-id tensors ``[N]`` (take ``logits.argmax(1)`` first); labels likewise.

DIR (defect inheritance rate, Zhang et al., "ReMoS", ICSE 2022) is measured over the clean-correct
set ``C = {x : s(x) = y}`` of the student ``s``.

Model-cost helpers: :func:`count_params`, :func:`count_nonzero_weights`, :func:`flops`
(``torch.utils.flop_counter``) and :func:`latency` (``torch.utils.benchmark``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from .errors import SafeReuseError


@dataclass(frozen=True)
class Rate:
    """A proportion ``k / n`` in percent with its 95 % Wilson interval.

    Attributes:
        value: ``100 · k / n`` (``nan`` when ``n == 0``).
        k: number of events (e.g. flipped predictions).
        n: size of the set the rate is taken over (e.g. ``|C|``).
        ci_low: lower end of the 95 % Wilson interval, percent.
        ci_high: upper end of the 95 % Wilson interval, percent.
    """

    value: float
    k: int
    n: int
    ci_low: float
    ci_high: float

    @property
    def fraction(self) -> float:
        """The rate as a fraction in [0, 1]."""
        return self.value / 100.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (``nan`` becomes ``None``)."""
        return {k: _finite_or_none(v) for k, v in asdict(self).items()}

    def __str__(self) -> str:
        if self.n == 0:
            return "n/a (n=0)"
        return f"{self.value:.2f} [{self.ci_low:.1f}, {self.ci_high:.1f}] (n={self.n})"


def _finite_or_none(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (Wilson, JASA 1927).

    Args:
        k: successes, ``0 ≤ k ≤ n``.
        n: trials.
        z: normal quantile (1.96 → 95 %).

    Returns:
        ``(low, high)`` as **fractions** in [0, 1]; ``(nan, nan)`` when ``n == 0``.

    Example:
        >>> lo, hi = wilson_interval(8, 10)
        >>> round(lo, 4), round(hi, 4)
        (0.4902, 0.9433)
    """
    if n < 0 or k < 0 or k > n:
        raise SafeReuseError(f"invalid proportion {k}/{n}", fix="need 0 ≤ k ≤ n")
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # the ends are exactly 0 / 1 at k = 0 / k = n; avoid 0.9999999999 from rounding
    return (0.0 if k == 0 else max(0.0, centre - half)), (1.0 if k == n else min(1.0, centre + half))


def rate(k: int, n: int, z: float = 1.96) -> Rate:
    """``k / n`` as a :class:`Rate` in percent with its Wilson interval (``nan`` for ``n = 0``)."""
    lo, hi = wilson_interval(int(k), int(n), z)
    value = 100.0 * k / n if n else float("nan")
    return Rate(value, int(k), int(n), 100.0 * lo, 100.0 * hi)


def _labels(t: torch.Tensor, what: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        t = torch.as_tensor(t)
    if t.dim() != 1:
        raise SafeReuseError(
            f"{what} must be a 1-D tensor of class ids, got shape {tuple(t.shape)}",
            fix="pass logits.argmax(1)",
        )
    return t.detach().cpu().long()


def _same_length(*pairs: tuple[torch.Tensor, str]) -> list[torch.Tensor]:
    out = [_labels(t, name) for t, name in pairs]
    lengths = {len(t) for t in out}
    if len(lengths) > 1:
        desc = ", ".join(f"{name}={len(t)}" for t, (_, name) in zip(out, pairs, strict=True))
        raise SafeReuseError(f"prediction/label lengths differ ({desc})", fix="pass aligned tensors")
    return out


def accuracy(pred: torch.Tensor, y: torch.Tensor) -> Rate:
    """Top-1 accuracy in percent: ``|{pred = y}| / N × 100``.

    Args:
        pred: predicted class ids ``[N]``.
        y: true class ids ``[N]``.

    Returns:
        :class:`Rate` with ``k`` correct out of ``n = N``.
    """
    pred, y = _same_length((pred, "pred"), (y, "y"))
    return rate(int((pred == y).sum()), len(y))


def robust_accuracy(y: torch.Tensor, s_adv: torch.Tensor) -> Rate:
    """Robust accuracy (CARTL's *Rob*) in percent: accuracy on white-box adversarial inputs.

    Args:
        y: true class ids ``[N]``.
        s_adv: the model's predictions on the adversarial inputs ``[N]``.

    Returns:
        :class:`Rate` over all ``N`` inputs.
    """
    return accuracy(s_adv, y)


def dir_adversarial(y: torch.Tensor, s_clean: torch.Tensor, s_adv: torch.Tensor) -> Rate:
    """DIR, adversarial form (ReMoS, penultimate-layer guided attack), in percent.

    ``|{x ∈ C : s(x_adv) ≠ y}| / |C| × 100`` with ``C = {x : s(x) = y}``.

    Args:
        y: true labels ``[N]``.
        s_clean: student predictions on clean inputs ``[N]``.
        s_adv: student predictions on the inputs crafted on the teacher ``[N]``.

    Returns:
        :class:`Rate` with ``n = |C|`` (``nan`` when ``C`` is empty).
    """
    y, s_clean, s_adv = _same_length((y, "y"), (s_clean, "s_clean"), (s_adv, "s_adv"))
    c = s_clean == y
    return rate(int((c & (s_adv != y)).sum()), int(c.sum()))


def dir_nc(y: torch.Tensor, s_clean: torch.Tensor, s_adv: torch.Tensor) -> Rate:
    """DIR, neuron-coverage-guided form (ReMoS), in percent.

    ``|{x ∈ C : s(x_adv) ≠ s(x)}| / |C| × 100`` with ``C = {x : s(x) = y}``.

    On ``C`` the student's clean prediction *is* ``y``, so this counts the same inputs as
    :func:`dir_adversarial`; it is kept as its own function to mirror the spec's definitions.

    Args:
        y: true labels ``[N]``.
        s_clean: student predictions on clean inputs ``[N]``.
        s_adv: student predictions on the coverage-guided inputs ``[N]``.

    Returns:
        :class:`Rate` with ``n = |C|``.
    """
    y, s_clean, s_adv = _same_length((y, "y"), (s_clean, "s_clean"), (s_adv, "s_adv"))
    c = s_clean == y
    return rate(int((c & (s_adv != s_clean)).sum()), int(c.sum()))


def dir_backdoor(y: torch.Tensor, s_clean: torch.Tensor, s_trig: torch.Tensor) -> Rate:
    """DIR, backdoor form (ReMoS, untargeted), in percent.

    ``|{x ∈ C : s(x ⊕ trigger) ≠ y}| / |C| × 100`` with ``C = {x : s(x) = y}``.

    Args:
        y: true labels ``[N]``.
        s_clean: student predictions on clean inputs ``[N]``.
        s_trig: student predictions on triggered inputs ``[N]``.

    Returns:
        :class:`Rate` with ``n = |C|``.
    """
    return dir_adversarial(y, s_clean, s_trig)


def asr(y: torch.Tensor, s_trig: torch.Tensor, target: int) -> Rate:
    """Attack success rate (BackdoorBench convention), in percent.

    Over the non-target-class samples ``{x : y ≠ target}``: the share whose triggered input is
    classified as ``target``.

    Args:
        y: true labels ``[N]``.
        s_trig: predictions on triggered inputs ``[N]``.
        target: the backdoor's target class, in the same label space as ``y``.

    Returns:
        :class:`Rate` with ``n`` = number of non-target samples.
    """
    y, s_trig = _same_length((y, "y"), (s_trig, "s_trig"))
    keep = y != int(target)
    return rate(int((keep & (s_trig == int(target))).sum()), int(keep.sum()))


@dataclass(frozen=True)
class MeanStd:
    """Mean ± sample standard deviation of a figure across seeds.

    Attributes:
        mean: arithmetic mean (``nan`` when ``n == 0``).
        std: sample standard deviation (``ddof = 1``; 0.0 for a single value, ``nan`` for none).
        n: number of values used.
    """

    mean: float
    std: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {k: _finite_or_none(v) for k, v in asdict(self).items()}

    def __str__(self) -> str:
        return f"{self.mean:.2f} ± {self.std:.2f} (n={self.n})"


def mean_std(values: Iterable[float | Rate | None]) -> MeanStd:
    """Mean ± std across seeds; ``None`` and ``nan`` entries are skipped (and not counted).

    Args:
        values: numbers or :class:`Rate` objects (their ``value`` is used).

    Returns:
        :class:`MeanStd` (sample std, ``ddof = 1``).

    Example:
        >>> mean_std([1.0, 2.0, 3.0, None])
        MeanStd(mean=2.0, std=1.0, n=3)
    """
    xs = []
    for v in values:
        if v is None:
            continue
        f = float(v.value if isinstance(v, Rate) else v)
        if math.isfinite(f):
            xs.append(f)
    n = len(xs)
    if n == 0:
        return MeanStd(float("nan"), float("nan"), 0)
    m = sum(xs) / n
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    return MeanStd(m, sd, n)


# -- model cost ------------------------------------------------------------------------------------
_WEIGHTED = (nn.modules.conv._ConvNd, nn.Linear)


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (optionally only those with ``requires_grad``)."""
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
        input_shape: ``(C, H, W)`` (batch of one) or ``(N, C, H, W)``.

    Returns:
        Total FLOPs of one forward pass.
    """
    from torch.utils.flop_counter import FlopCounterMode

    x = _example_input(model, input_shape, None)
    was = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(x)
    finally:
        model.train(was)
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
    """
    from torch.utils import benchmark

    x = _example_input(model, input_shape, device)
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)  # warm-up (lazy init, allocator)
            timer = benchmark.Timer(
                stmt="model(x)",
                globals={"model": model, "x": x},
                num_threads=num_threads or torch.get_num_threads(),
            )
            m = timer.blocked_autorange(min_run_time=min_run_time)
    finally:
        model.train(was)
    return Latency(float(m.median), float(m.iqr), len(m.times), int(x.shape[0]), str(x.device))


__all__ = [
    "Latency",
    "MeanStd",
    "Rate",
    "accuracy",
    "asr",
    "count_nonzero_weights",
    "count_params",
    "dir_adversarial",
    "dir_backdoor",
    "dir_nc",
    "flops",
    "latency",
    "mean_std",
    "rate",
    "robust_accuracy",
    "wilson_interval",
]
