"""Interval statistics across seeds: mean ± std, Student's t (SciPy), the seed intervals of a
rate (:func:`seed_interval`) and of a paired difference of two rates (:func:`seed_difference`), and
how many seeds would resolve a difference of a given size (:func:`seeds_to_resolve`).

Every seed of a grid cell is audited on the **same** test images, so the intervals here count both
the seed-to-seed spread and the image-sampling error of one seed (see :func:`seed_interval`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

from ..errors import SafeReuseError
from .rates import Rate, check_counts, finite_or_none, wilson_interval


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
        """JSON-friendly dict (``nan`` becomes ``None``)."""
        return {k: finite_or_none(v) for k, v in asdict(self).items()}

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
CI_NORMAL_ONE_SEED = "normal-1-seed"
CI_NONE = "none"


def student_t_cdf(t: float, df: int) -> float:
    """``P(T ≤ t)`` for Student's t with ``df`` degrees of freedom (``scipy.stats.t.cdf``).

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
    from scipy.stats import t as student_t  # deferred: scipy.stats costs ~1 s at import

    return float(student_t.cdf(t, df))


def student_t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (``scipy.stats.t.ppf``).

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
    if df < 1:
        raise SafeReuseError(f"degrees of freedom {df} must be ≥ 1", fix="pass at least 2 values")
    from scipy.stats import t as student_t  # deferred: scipy.stats costs ~1 s at import

    return float(student_t.ppf(p, df))


def _counts(c: tuple[int, int] | Rate) -> tuple[int, int]:
    k, n = (c.k, c.n) if isinstance(c, Rate) else (int(c[0]), int(c[1]))
    check_counts(k, n)
    return k, n


def _image_variance(k: int, n: int, z2: float) -> float:
    """Agresti–Coull binomial variance of one seed's rate: ``p̃ (1 − p̃) / (n + z²)``."""
    pt = (k + z2 / 2) / (n + z2)
    return pt * (1 - pt) / (n + z2)


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
        return {k: finite_or_none(v) for k, v in asdict(self).items()}

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
    pairs = [kn for kn in map(_counts, counts) if kn[1] > 0]
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
    var_images = sum(_image_variance(k, n, z * z) for k, n in pairs) / seeds
    se = math.sqrt(var_seeds / seeds + var_images)
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
        method: :data:`CI_SEEDS_T`, :data:`CI_NORMAL_ONE_SEED` or :data:`CI_NONE`.
        image_var: the image (binomial) term of the squared standard error, points² — the mean over
            seeds of both rates' Agresti–Coull variances; the part more seeds do not shrink
            (:func:`seeds_to_resolve` takes it as ``binomial_var``).
    """

    mean: float
    std: float
    ci_low: float
    ci_high: float
    seeds: int
    method: str
    image_var: float = math.nan

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies wholly above or wholly below 0 (the difference is resolved)."""
        return self.ci_low > 0 or self.ci_high < 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (``nan`` becomes ``None``)."""
        return {k: finite_or_none(v) for k, v in asdict(self).items()}


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
    degrees of freedom; with one seed it is ``z`` on the image term alone (:data:`CI_NORMAL_ONE_SEED`).

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
    z2 = z * z

    def one(c: tuple[int, int] | Rate | None) -> tuple[float, float] | None:
        if c is None:
            return None
        k, n = _counts(c)
        return (k / n, _image_variance(k, n, z2)) if n else None

    pairs = [(pa, pb) for pa, pb in ((one(x), one(y)) for x, y in zip(a, b, strict=True)) if pa and pb]
    seeds = len(pairs)
    nan = float("nan")
    if seeds == 0:
        return SeedDifference(nan, nan, nan, nan, 0, CI_NONE, nan)
    ds = [pa[0] - pb[0] for pa, pb in pairs]
    mean = sum(ds) / seeds
    var_images = sum(pa[1] + pb[1] for pa, pb in pairs) / seeds
    if seeds == 1:
        var_seeds, q, method = 0.0, z, CI_NORMAL_ONE_SEED
    else:
        var_seeds = sum((d - mean) ** 2 for d in ds) / (seeds - 1)
        q, method = student_t_quantile(NormalDist().cdf(z), seeds - 1), CI_SEEDS_T
    se = math.sqrt(var_seeds / seeds + var_images)
    lo, hi = max(-1.0, mean - q * se), min(1.0, mean + q * se)
    return SeedDifference(
        100 * mean, 100 * math.sqrt(var_seeds), 100 * lo, 100 * hi, seeds, method, 1e4 * var_images
    )


def seeds_to_resolve(
    mean: float, per_seed_sd: float, binomial_var: float = 0.0, z: float = 1.96, max_seeds: int = 100
) -> int | None:
    """The fewest seeds whose :func:`seed_difference` interval would exclude 0, were the mean
    difference and the spreads what was observed.

    The interval is formed exactly as :func:`seed_difference` forms it with ``S ≥ 2`` seeds: its
    half-width is ``h(S) = t_{S−1} · √(sd² / S + v)``, with ``t_{S−1}`` Student's quantile at ``Φ(z)``,
    ``sd`` the per-seed standard deviation of the differences and ``v`` the binomial (image) variance,
    which is *not* divided by ``S`` (every seed is scored on the same images). The answer is the
    smallest ``S`` with ``h(S) < |mean|``. ``h`` falls with ``S`` towards ``z · √v``: an effect no larger
    than that is not resolvable by more seeds at all (only by more test images), and one that needs
    more than ``max_seeds`` is reported as not resolvable too. One seed is never the answer: it has no
    seed spread to estimate (:func:`seed_difference` then uses the image term alone).

    This is a plan, not a power analysis: at the returned ``S`` a repeat of the experiment with the
    same true effect and spread resolves it about half the time (the observed mean is as likely to come
    out smaller as larger); it says whether more seeds are worth running and roughly how many.

    Args:
        mean: the observed mean difference, points (:attr:`SeedDifference.mean`).
        per_seed_sd: the sample standard deviation of the per-seed differences, points
            (:attr:`SeedDifference.std`).
        binomial_var: the image term of the squared standard error, points²
            (:attr:`SeedDifference.image_var`; 0 for a figure without image noise).
        z: normal quantile of the level (1.96 → 95 %), as in :func:`seed_difference`.
        max_seeds: the largest number of seeds worth considering (≥ 2).

    Returns:
        The number of seeds, or ``None`` when no ``S ≤ max_seeds`` resolves it (including a mean of 0
        or a non-finite input).

    Raises:
        SafeReuseError: ``max_seeds < 2``, a negative spread or ``z ≤ 0``.

    Example:
        With sd = mean = 10 points and no image noise, ``S`` seeds resolve it once ``t_{S−1} < √S``:
        ``t_5 = 2.571 > √6 = 2.449`` but ``t_6 = 2.447 < √7 = 2.646``. An image term of 30 points²
        alone is ``1.96 · √30 = 10.7`` points wide, more than the effect:

        >>> seeds_to_resolve(10.0, 10.0), seeds_to_resolve(-10.0, 10.0), seeds_to_resolve(10.0, 10.0, 30.0)
        (7, 7, None)
    """
    if max_seeds < 2:
        raise SafeReuseError(f"max_seeds {max_seeds} must be ≥ 2", fix="e.g. max_seeds=100")
    if z <= 0:
        raise SafeReuseError(f"z {z} must be > 0", fix="e.g. z=1.96 for 95 %")
    values = (mean, per_seed_sd, binomial_var)
    if not all(math.isfinite(float(v)) for v in values) or mean == 0:
        return None
    if per_seed_sd < 0 or binomial_var < 0:
        raise SafeReuseError(
            f"spreads must be ≥ 0 (sd {per_seed_sd}, binomial variance {binomial_var})",
            fix="pass SeedDifference.std and SeedDifference.image_var",
        )
    effect, p = abs(float(mean)), NormalDist().cdf(z)
    if z * math.sqrt(binomial_var) >= effect:  # the limit of the half-width as S grows
        return None

    def resolves(s: int) -> bool:
        return student_t_quantile(p, s - 1) * math.sqrt(per_seed_sd**2 / s + binomial_var) < effect

    if not resolves(max_seeds):
        return None
    lo, hi = 1, max_seeds  # the half-width falls with S: bisect for the first S that resolves
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if resolves(mid) else (mid, hi)
    return hi


__all__ = [
    "CI_NONE",
    "CI_NORMAL_ONE_SEED",
    "CI_ONE_SEED",
    "CI_SEEDS_T",
    "MeanStd",
    "SeedDifference",
    "SeedInterval",
    "mean_std",
    "seed_difference",
    "seed_interval",
    "seeds_to_resolve",
    "student_t_cdf",
    "student_t_quantile",
]
