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
(``torch.utils.flop_counter``), :func:`latency` (``torch.utils.benchmark``), and SeaM's
:func:`sparse_flops` (multiplications with non-zero weights) and :func:`latency_ms` (per batch size).
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


# -- intervals across seeds ------------------------------------------------------------------------
CI_SEEDS_T = "t-seeds+binomial"
CI_ONE_SEED = "wilson-1-seed"
CI_NONE = "none"


def student_t_cdf(t: float, df: int) -> float:
    """``P(T ≤ t)`` for Student's t with an integer number of degrees of freedom.

    Exact finite series (Abramowitz & Stegun 26.7.3–26.7.4) in ``θ = atan(t / √df)``, so no SciPy.

    Args:
        t: the point.
        df: degrees of freedom, ``≥ 1``.

    Returns:
        The cumulative probability.

    Example:
        >>> round(student_t_cdf(12.7062, 1), 5), student_t_cdf(0.0, 7)
        (0.975, 0.5)
    """
    if df < 1:
        raise SafeReuseError(f"degrees of freedom {df} must be ≥ 1", fix="pass at least 2 values")
    theta = math.atan(abs(t) / math.sqrt(df))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2:  # odd: (2/π)(θ + sin θ cos θ (1 + 2/3 cos²θ + (2·4)/(3·5) cos⁴θ + …))
        term, total = 1.0, 1.0 if df > 1 else 0.0
        for j in range(1, (df - 1) // 2):
            term *= c2 * (2 * j) / (2 * j + 1)
            total += term
        a = 2 / math.pi * (theta + s * math.cos(theta) * total)
    else:  # even: sin θ (1 + 1/2 cos²θ + (1·3)/(2·4) cos⁴θ + …)
        term, total = 1.0, 1.0
        for j in range(1, df // 2):
            term *= c2 * (2 * j - 1) / (2 * j)
            total += term
        a = s * total
    a = min(1.0, max(0.0, a))  # A(|t|) = P(|T| ≤ |t|)
    return 0.5 + a / 2 if t >= 0 else 0.5 - a / 2


def student_t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on
    :func:`student_t_cdf`, to 1e-10).

    Args:
        p: probability in (0, 1).
        df: degrees of freedom, ``≥ 1``.

    Returns:
        ``t`` with ``P(T ≤ t) = p``.

    Example:
        >>> round(student_t_quantile(0.975, 1), 3), round(student_t_quantile(0.975, 2), 3)
        (12.706, 4.303)
    """
    if not 0.0 < p < 1.0:
        raise SafeReuseError(f"probability {p} must be in (0, 1)", fix="e.g. 0.975")
    if p < 0.5:
        return -student_t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while student_t_cdf(hi, df) < p:
        lo, hi = hi, 2 * hi
    while hi - lo > 1e-10 * max(1.0, hi):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if student_t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


@dataclass(frozen=True)
class SeedInterval:
    """A rate across seeds: mean ± std of the per-seed rates and a 95 % interval for their mean.

    Attributes:
        mean: mean of the per-seed rates, percent (``nan`` without seeds).
        std: sample standard deviation of the per-seed rates (``ddof = 1``; 0.0 for one seed).
        ci_low: lower end of the interval, percent.
        ci_high: upper end, percent.
        seeds: seeds with a non-empty denominator (the ones used).
        k: events summed over those seeds (reported, not used by the interval).
        n: denominators summed over those seeds.
        method: :data:`CI_SEEDS_T` (two or more seeds), :data:`CI_ONE_SEED` (the cell's Wilson
            interval) or :data:`CI_NONE` (no seed with ``n > 0``).
    """

    mean: float
    std: float
    ci_low: float
    ci_high: float
    seeds: int
    k: int
    n: int
    method: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (``nan`` becomes ``None``)."""
        return {k: _finite_or_none(v) for k, v in asdict(self).items()}

    def __str__(self) -> str:
        if self.seeds == 0:
            return "n/a (no seeds)"
        return (
            f"{self.mean:.2f} ± {self.std:.2f} [{self.ci_low:.1f}, {self.ci_high:.1f}] ({self.seeds} seeds)"
        )


def seed_interval(counts: Iterable[tuple[int, int] | Rate], z: float = 1.96) -> SeedInterval:
    """Mean ± std of a rate over seeds, and a 95 % interval that counts seed *and* image variation.

    Every seed of a grid cell is audited on the **same** test images. The pooled Wilson interval of
    ``Σk / Σn`` treats the ``S·n`` outcomes as independent draws, which they are not, twice over:
    (1) outcomes of one seed share that seed's training run, so the seeds are clusters and the
    seed-to-seed spread (often far larger than the binomial one) is ignored; (2) the seeds reuse the
    same images, so a lucky or unlucky image sample shifts every seed alike and pooling does not
    average it away — there are ``n`` images behind the pooled rate, not ``S·n``. The pooled interval
    is therefore too narrow by roughly ``√S`` and by the whole between-seed spread.

    This function takes the per-seed rates ``p_s = k_s / n_s`` as the observations and returns
    ``p̄ ± t_{S−1} · SE`` (clipped to [0, 100]) with

    ``SE² = s² / S + mean_s[ p̃_s (1 − p̃_s) / (n_s + z²) ]``,

    where ``s²`` is the sample variance of the ``p_s`` (seed variation, as seen on these images) and
    the second term is the binomial variance of one seed's rate (Agresti–Coull's ``p̃_s =
    (k_s + z²/2) / (n_s + z²)``, so a seed with 0/n or n/n still counts some image noise). That term is
    *not* divided by ``S``: the image-sampling error is shared by all seeds, so it does not shrink with
    more seeds (treating it as fully shared is the conservative bound). The quantile is Student's t
    with ``S − 1`` degrees of freedom for the whole SE — conservative again (a Welch–Satterthwaite
    df would be larger) and it guarantees the interval contains the plain t-interval of the seed
    means. A two-level bootstrap was not chosen: with the 2–5 seeds a grid has, resampling seeds
    cannot reach beyond the observed extremes and understates the seed spread, while the t quantile
    pays for estimating it from few seeds (12.7 for 2 seeds, 4.3 for 3: few seeds, wide intervals).

    With one seed there is no seed spread to estimate: the result is that cell's Wilson interval
    (``method = "wilson-1-seed"``), the same as the cell's own :func:`rate`.

    Args:
        counts: one ``(k, n)`` pair or :class:`Rate` per seed; seeds with ``n = 0`` are skipped.
        z: normal quantile of the level (1.96 → 95 %); the t quantile is taken at ``Φ(z)``.

    Returns:
        :class:`SeedInterval` in percent.

    Example:
        >>> r = seed_interval([(20, 100), (30, 100), (40, 100)])
        >>> round(r.mean, 1), round(r.std, 1), round(r.ci_low, 1), round(r.ci_high, 1), r.method
        (30.0, 10.0, 0.0, 61.4, 't-seeds+binomial')
        >>> seed_interval([(8, 10)]).method, round(seed_interval([(8, 10)]).ci_low, 2)
        ('wilson-1-seed', 49.02)
    """
    pairs: list[tuple[int, int]] = []
    for c in counts:
        k, n = (c.k, c.n) if isinstance(c, Rate) else (int(c[0]), int(c[1]))
        if n < 0 or k < 0 or k > n:
            raise SafeReuseError(f"invalid proportion {k}/{n}", fix="need 0 ≤ k ≤ n")
        if n > 0:
            pairs.append((k, n))
    seeds = len(pairs)
    k_sum, n_sum = sum(k for k, _ in pairs), sum(n for _, n in pairs)
    nan = float("nan")
    if seeds == 0:
        return SeedInterval(nan, nan, nan, nan, 0, 0, 0, CI_NONE)
    ps = [k / n for k, n in pairs]
    mean = sum(ps) / seeds
    if seeds == 1:
        lo, hi = wilson_interval(pairs[0][0], pairs[0][1], z)
        return SeedInterval(100 * mean, 0.0, 100 * lo, 100 * hi, 1, k_sum, n_sum, CI_ONE_SEED)
    var_seeds = sum((p - mean) ** 2 for p in ps) / (seeds - 1)
    z2 = z * z
    var_images = 0.0
    for k, n in pairs:
        pt = (k + z2 / 2) / (n + z2)
        var_images += pt * (1 - pt) / (n + z2)
    var_images /= seeds
    se = math.sqrt(var_seeds / seeds + var_images)
    from statistics import NormalDist

    q = student_t_quantile(NormalDist().cdf(z), seeds - 1)
    lo, hi = max(0.0, mean - q * se), min(1.0, mean + q * se)
    return SeedInterval(
        100 * mean, 100 * math.sqrt(var_seeds), 100 * lo, 100 * hi, seeds, k_sum, n_sum, CI_SEEDS_T
    )


@dataclass(frozen=True)
class SeedDifference:
    """A paired difference of two rates across seeds (percentage points), e.g. what reuse buys.

    Attributes:
        mean: mean over seeds of ``a_s − b_s``, points (``nan`` without a common seed).
        std: sample standard deviation of the per-seed differences (0.0 for one seed).
        ci_low: lower end of the 95 % interval for the mean difference, points (≥ −100).
        ci_high: upper end (≤ 100).
        seeds: seeds where both rates have a non-empty denominator.
        method: :data:`CI_SEEDS_T`, ``normal-1-seed`` or :data:`CI_NONE`.
    """

    mean: float
    std: float
    ci_low: float
    ci_high: float
    seeds: int
    method: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (``nan`` becomes ``None``)."""
        return {k: _finite_or_none(v) for k, v in asdict(self).items()}


def seed_difference(
    a: Iterable[tuple[int, int] | Rate | None], b: Iterable[tuple[int, int] | Rate | None], z: float = 1.96
) -> SeedDifference:
    """Mean of ``a_s − b_s`` over paired seeds and a 95 % interval, as :func:`seed_interval` does for
    one rate: the seeds are paired (seed ``s`` of ``a`` and of ``b`` share their training sample and
    test images), so the observations are the per-seed differences ``d_s``, and

    ``SE² = s_d² / S + mean_s[ v(a_s) + v(b_s) ]``

    with ``v`` the Agresti–Coull binomial variance of one rate. The image term is not divided by
    ``S`` (every seed is scored on the same images) and adds the two variances (ignoring their
    positive correlation on shared images: conservative). The quantile is Student's t with ``S − 1``
    degrees of freedom; with one seed it is ``z`` on the image term alone (``normal-1-seed``).

    Args:
        a: one ``(k, n)`` pair or :class:`Rate` per seed (None: the seed is missing).
        b: the same seeds, in the same order.
        z: normal quantile of the level (1.96 → 95 %).

    Returns:
        :class:`SeedDifference` in percentage points; seeds where either side is missing or has
        ``n = 0`` are skipped.

    Example:
        >>> d = seed_difference([(80, 100), (90, 100)], [(60, 100), (70, 100)])
        >>> round(d.mean, 1), d.std, round(d.ci_low, 1), round(d.ci_high, 1), d.seeds
        (20.0, 0.0, -54.9, 94.9, 2)
    """
    from statistics import NormalDist

    z2 = z * z

    def one(c: tuple[int, int] | Rate | None) -> tuple[float, float] | None:
        if c is None:
            return None
        k, n = (c.k, c.n) if isinstance(c, Rate) else (int(c[0]), int(c[1]))
        if n < 0 or k < 0 or k > n:
            raise SafeReuseError(f"invalid proportion {k}/{n}", fix="need 0 ≤ k ≤ n")
        if n == 0:
            return None
        pt = (k + z2 / 2) / (n + z2)
        return k / n, pt * (1 - pt) / (n + z2)

    pairs = [(pa, pb) for pa, pb in ((one(x), one(y)) for x, y in zip(a, b, strict=True)) if pa and pb]
    seeds = len(pairs)
    nan = float("nan")
    if seeds == 0:
        return SeedDifference(nan, nan, nan, nan, 0, CI_NONE)
    ds = [pa[0] - pb[0] for pa, pb in pairs]
    mean = sum(ds) / seeds
    var_images = sum(pa[1] + pb[1] for pa, pb in pairs) / seeds
    if seeds == 1:
        var_seeds, q, method = 0.0, z, "normal-1-seed"
    else:
        var_seeds = sum((d - mean) ** 2 for d in ds) / (seeds - 1)
        q, method = student_t_quantile(NormalDist().cdf(z), seeds - 1), CI_SEEDS_T
    se = math.sqrt(var_seeds / seeds + var_images)
    lo, hi = max(-1.0, mean - q * se), min(1.0, mean + q * se)
    return SeedDifference(100 * mean, 100 * math.sqrt(var_seeds), 100 * lo, 100 * hi, seeds, method)


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
    from torch.utils.flop_counter import FlopCounterMode

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
    flags = {n: m.training for n, m in model.named_modules()}
    try:
        for m in model.modules():
            if isinstance(m, _WEIGHTED):
                handles += [m.register_forward_pre_hook(before), m.register_forward_hook(after)]
        model.eval()
        with torch.no_grad(), counter:
            model(example_input[:1])
    finally:
        for h in handles:
            h.remove()
        for n, m in model.named_modules():
            m.training = flags[n]
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
    from torch.utils import benchmark

    before = torch.get_num_threads()
    flags = {n: m.training for n, m in model.named_modules()}
    gen = torch.Generator().manual_seed(0)
    out: dict[int, float] = {}
    try:
        model.eval()
        with torch.no_grad():
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
        for n, m in model.named_modules():
            m.training = flags[n]
        torch.set_num_threads(before)


__all__ = [
    "CI_NONE",
    "CI_ONE_SEED",
    "CI_SEEDS_T",
    "Latency",
    "MeanStd",
    "Rate",
    "SeedDifference",
    "SeedInterval",
    "accuracy",
    "asr",
    "count_nonzero_weights",
    "count_params",
    "dir_adversarial",
    "dir_backdoor",
    "dir_nc",
    "flops",
    "latency",
    "latency_ms",
    "mean_std",
    "rate",
    "robust_accuracy",
    "seed_difference",
    "seed_interval",
    "sparse_flops",
    "student_t_cdf",
    "student_t_quantile",
    "wilson_interval",
]
