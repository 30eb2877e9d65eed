"""Rates: pure functions on tensors, every rate with its sample count and a 95 % Wilson interval.

Conventions (see ``shared/specs/defects.md``):

- Every *rate* (:func:`accuracy`, :func:`robust_accuracy`, the DIR forms, :func:`asr`) is a
  :class:`Rate` in **percent** (0–100), as the ReMoS / CARTL / BackdoorBench papers report them,
  with ``k`` (events), ``n`` (the denominator) and the Wilson interval, also in percent.
- An empty denominator is not an error: the rate is ``nan`` with ``n = 0`` and a ``nan`` interval.
- :func:`wilson_interval` itself works on fractions (0–1), like any statistics routine; it is
  SciPy's (``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")``).
- Predictions are class-id tensors ``[N]`` (take ``logits.argmax(1)`` first); labels likewise.

DIR (defect inheritance rate, Zhang et al., "ReMoS", ICSE 2022) is measured over the clean-correct
set ``C = {x : s(x) = y}`` of the student ``s``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import torch

from ..errors import SafeReuseError


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
        return {k: finite_or_none(v) for k, v in asdict(self).items()}

    def __str__(self) -> str:
        if self.n == 0:
            return "n/a (n=0)"
        return f"{self.value:.2f} [{self.ci_low:.1f}, {self.ci_high:.1f}] (n={self.n})"


def finite_or_none(v: Any) -> Any:
    """``None`` for a non-finite float (JSON has no ``nan``), anything else unchanged.

    Example:
        >>> finite_or_none(float("nan")), finite_or_none(2.5), finite_or_none("x")
        (None, 2.5, 'x')
    """
    return None if isinstance(v, float) and not math.isfinite(v) else v


def check_counts(k: int, n: int) -> None:
    """Raise the one-line error unless ``0 ≤ k ≤ n``.

    Example:
        >>> check_counts(3, 4)
    """
    if n < 0 or k < 0 or k > n:
        raise SafeReuseError(f"invalid proportion {k}/{n}", fix="need 0 ≤ k ≤ n")


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (Wilson, JASA 1927), from SciPy.

    ``scipy.stats.binomtest(k, n).proportion_ci(level, method="wilson")`` with the level
    ``2 Φ(z) − 1``; its ends are exactly 0 at ``k = 0`` and 1 at ``k = n``.

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
    check_counts(k, n)
    if n == 0:  # binomtest needs n ≥ 1; an empty denominator is a nan rate here, not an error
        return float("nan"), float("nan")
    from scipy.stats import binomtest  # deferred: scipy.stats costs ~1 s at import

    ci = binomtest(int(k), int(n)).proportion_ci(2 * NormalDist().cdf(z) - 1, method="wilson")
    return float(ci.low), float(ci.high)


def rate(k: int, n: int, z: float = 1.96) -> Rate:
    """``k / n`` as a :class:`Rate` in percent with its Wilson interval (``nan`` for ``n = 0``).

    Example:
        >>> r = rate(8, 10)
        >>> r.value, r.n, round(r.ci_low, 2)
        (80.0, 10, 49.02)
    """
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

    Example:
        >>> r = accuracy(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]))
        >>> r.k, r.n, r.value
        (3, 4, 75.0)
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

    Example:
        >>> y = torch.tensor([0, 1, 2, 0])
        >>> r = dir_adversarial(y, s_clean=torch.tensor([0, 1, 2, 1]), s_adv=torch.tensor([1, 1, 0, 0]))
        >>> r.k, r.n  # C = {0, 1, 2}; the attack flips 0 and 2
        (2, 3)
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

    Example:
        >>> r = asr(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 0, 0, 2]), target=0)
        >>> r.k, r.n
        (2, 3)
    """
    y, s_trig = _same_length((y, "y"), (s_trig, "s_trig"))
    keep = y != int(target)
    return rate(int((keep & (s_trig == int(target))).sum()), int(keep.sum()))


__all__ = [
    "Rate",
    "accuracy",
    "asr",
    "check_counts",
    "dir_adversarial",
    "dir_backdoor",
    "dir_nc",
    "finite_or_none",
    "rate",
    "robust_accuracy",
    "wilson_interval",
]
