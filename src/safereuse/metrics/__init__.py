"""Metrics: rates with counts and Wilson intervals, interval statistics across seeds, detection
statistics, and model cost.

- :mod:`.rates` — every *rate* (:func:`accuracy`, :func:`robust_accuracy`, the DIR forms of ReMoS,
  :func:`asr`) is a :class:`Rate` in percent with ``k``, ``n`` and its 95 % Wilson interval
  (:func:`wilson_interval`, SciPy's); an empty denominator gives ``nan`` with ``n = 0``.
- :mod:`.intervals` — :func:`mean_std`, Student's t (:func:`student_t_quantile`, SciPy's), and the
  across-seed intervals :func:`seed_interval` (one rate) and :func:`seed_difference` (a paired
  difference of two rates), which count seed and image variation, and :func:`seeds_to_resolve` (how
  many seeds would make a paired difference's interval exclude 0).
- :mod:`.detection` — :func:`roc_auc`, :func:`f1` (scikit-learn) and :func:`detection_summary`
  (recall / precision with Wilson intervals, F1 / AUC with a ``scipy.stats.bootstrap`` interval).
- :mod:`.cost` — :func:`count_params`, :func:`count_nonzero_weights`, :func:`flops`,
  :func:`latency`, SeaM's :func:`sparse_flops` and :func:`latency_ms`, and :func:`compare_cost`.

Every public name is importable from ``safereuse.metrics`` directly.

Example:
    >>> from safereuse import metrics
    >>> metrics.rate(3, 4).value, metrics.seed_difference([(8, 10)], [(6, 10)]).seeds
    (75.0, 1)
"""

from __future__ import annotations

from .cost import (
    Latency,
    compare_cost,
    count_nonzero_weights,
    count_params,
    flops,
    latency,
    latency_ms,
    latency_rounds,
    sparse_flops,
)
from .detection import detection_summary, f1, roc_auc
from .intervals import (
    CI_NONE,
    CI_NORMAL_ONE_SEED,
    CI_ONE_SEED,
    CI_SEEDS_T,
    MeanStd,
    SeedDifference,
    SeedInterval,
    mean_std,
    seed_difference,
    seed_interval,
    seeds_to_resolve,
    student_t_cdf,
    student_t_quantile,
)
from .rates import (
    Rate,
    accuracy,
    asr,
    check_counts,
    dir_adversarial,
    dir_backdoor,
    dir_nc,
    finite_or_none,
    rate,
    robust_accuracy,
    wilson_interval,
)

__all__ = [
    "CI_NONE",
    "CI_NORMAL_ONE_SEED",
    "CI_ONE_SEED",
    "CI_SEEDS_T",
    "Latency",
    "MeanStd",
    "Rate",
    "SeedDifference",
    "SeedInterval",
    "accuracy",
    "asr",
    "check_counts",
    "compare_cost",
    "count_nonzero_weights",
    "count_params",
    "detection_summary",
    "dir_adversarial",
    "dir_backdoor",
    "dir_nc",
    "f1",
    "finite_or_none",
    "flops",
    "latency",
    "latency_ms",
    "latency_rounds",
    "mean_std",
    "rate",
    "robust_accuracy",
    "roc_auc",
    "seed_difference",
    "seed_interval",
    "seeds_to_resolve",
    "sparse_flops",
    "student_t_cdf",
    "student_t_quantile",
    "wilson_interval",
]
