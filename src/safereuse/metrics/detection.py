"""Detection statistics: ROC-AUC and F1 (scikit-learn), and a detector's scores on benign and
adversarial inputs with Wilson intervals (recall, precision) and percentile-bootstrap intervals
(F1, AUC; ``scipy.stats.bootstrap``).

The convention is that of :mod:`safereuse.applications.detect`: adversarial inputs are the positives,
benign inputs the negatives; a *flag* says the detector calls the input adversarial and a *score*
grows with its belief that it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .rates import rate


def roc_auc(scores_pos: np.ndarray, scores_neg: np.ndarray) -> float:
    """ROC-AUC = P(score of a positive > score of a negative), ties counting ½ (Mann–Whitney),
    by ``sklearn.metrics.roc_auc_score``.

    Args:
        scores_pos: scores of the positives (adversarial inputs).
        scores_neg: scores of the negatives (benign inputs).

    Returns:
        The AUC in [0, 1]; ``nan`` when either side is empty.

    Example:
        >>> roc_auc(np.array([0.9, 0.5]), np.array([0.1, 0.5]))
        0.875
    """
    if len(scores_pos) == 0 or len(scores_neg) == 0:
        return math.nan
    from sklearn.metrics import roc_auc_score  # deferred: scikit-learn costs ~0.6 s at import

    y = np.r_[np.ones(len(scores_pos)), np.zeros(len(scores_neg))]
    return float(roc_auc_score(y, np.r_[np.asarray(scores_pos), np.asarray(scores_neg)]))


def f1(flags_pos: np.ndarray, flags_neg: np.ndarray) -> float:
    """F1 of the flags (``sklearn.metrics.f1_score``), positives = the flags of the positives.

    Args:
        flags_pos: the detector's flags on the positives (True = flagged).
        flags_neg: its flags on the negatives.

    Returns:
        ``2 tp / (2 tp + fp + fn)``; ``nan`` when that denominator is 0.

    Example:
        >>> f1(np.array([True, True, False]), np.array([False, True, False, False]))
        0.6666666666666666
    """
    from sklearn.metrics import f1_score  # deferred: scikit-learn costs ~0.6 s at import

    y = np.r_[np.ones(len(flags_pos), bool), np.zeros(len(flags_neg), bool)]
    pred = np.r_[np.asarray(flags_pos, bool), np.asarray(flags_neg, bool)]
    return float(f1_score(y, pred, zero_division=np.nan)) if len(y) else math.nan


def _resampled(
    fa: np.ndarray, sa: np.ndarray, fb: np.ndarray, sb: np.ndarray
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The bootstrap statistic: F1 and AUC of index resamples ``ia`` (positives) and ``ib``
    (negatives), vectorised over the leading axes (the resample batch). The same two quantities as
    :func:`f1` and :func:`roc_auc`, batched: F1 from the resampled counts, AUC as SciPy's Mann–Whitney
    ``U / (n₁ n₀)`` (sklearn's scorers take one sample at a time)."""
    from scipy.stats import mannwhitneyu  # deferred: scipy.stats costs ~1 s at import

    def stat(ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
        tp, fp = fa[ia].sum(-1), fb[ib].sum(-1)
        f1s = 2 * tp / (2 * tp + fp + (ia.shape[-1] - tp))
        u = mannwhitneyu(sa[ia], sb[ib], axis=-1, method="asymptotic").statistic
        return np.stack([f1s, u / (ia.shape[-1] * ib.shape[-1])])

    return stat


def _bootstrap_ci(
    fa: np.ndarray, sa: np.ndarray, fb: np.ndarray, sb: np.ndarray, n_boot: int, seed: int
) -> tuple[list[float | None], list[float | None]]:
    """Percentile-bootstrap 95 % intervals of F1 and AUC, each set resampled on its own."""
    from scipy.stats import bootstrap  # deferred: scipy.stats costs ~1 s at import

    stat = _resampled(fa, sa, fb, sb)
    idx = [np.arange(len(fa)), np.arange(len(fb))]
    # scipy resamples only samples of ≥ 2; a set of one input is the same in every resample
    moving = [i for i in (0, 1) if len(idx[i]) > 1]
    if not moving:
        lo = hi = stat(idx[0][None], idx[1][None])[:, 0]
    else:

        def statistic(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
            full = list(idx)
            for i, smp in zip(moving, samples, strict=True):
                full[i] = np.moveaxis(smp, axis, -1)
            batch = full[moving[0]].shape[:-1]
            for i in set((0, 1)) - set(moving):
                full[i] = np.broadcast_to(full[i], (*batch, len(full[i])))
            return stat(full[0], full[1])

        res = bootstrap(
            tuple(idx[i] for i in moving), statistic, n_resamples=n_boot, vectorized=True,
            paired=False, confidence_level=0.95, method="percentile", rng=np.random.default_rng(seed),
        )  # fmt: skip
        lo, hi = res.confidence_interval.low, res.confidence_interval.high

    def pair(i: int) -> list[float | None]:
        ok = math.isfinite(lo[i]) and math.isfinite(hi[i])
        return [float(lo[i]), float(hi[i])] if ok else [None, None]

    return pair(0), pair(1)


def detection_summary(
    flags_benign: np.ndarray,
    scores_benign: np.ndarray,
    flags_adversarial: np.ndarray,
    scores_adversarial: np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Recall, precision, F1 and ROC-AUC of a detector on benign (negative) and adversarial (positive)
    inputs, with counts and 95 % intervals.

    Recall (``tp / adversarial``) and precision (``tp / flagged``) carry Wilson intervals
    (:func:`~safereuse.metrics.rate`, percent); F1 and AUC (fractions) a percentile bootstrap
    (``scipy.stats.bootstrap``, ``n_boot`` resamples, seed ``seed``) that resamples the benign and the
    adversarial set each on its own.

    Args:
        flags_benign: the detector's flags on benign inputs ``[N_b]`` (bool-like).
        scores_benign: its scores on them ``[N_b]``.
        flags_adversarial: flags on adversarial inputs ``[N_a]``.
        scores_adversarial: scores on them ``[N_a]``.
        n_boot: bootstrap resamples.
        seed: bootstrap seed.

    Returns:
        ``{"recall", "precision"}`` (Rate dicts), ``f1``, ``f1_ci``, ``auc``, ``auc_ci`` (``None``
        where undefined), and the counts ``tp, fp, fn, tn, n_adversarial, n_benign``.

    Example:
        >>> m = detection_summary([False, False, True, False], [0.0, 0.1, 0.8, 0.2],
        ...                       [True, True, False], [0.9, 0.7, 0.15], n_boot=50)
        >>> (m["tp"], m["fp"], m["fn"], m["tn"]), round(m["recall"]["value"], 1), round(m["f1"], 3)
        ((2, 1, 1, 3), 66.7, 0.667)
        >>> round(m["auc"], 3), m["auc_ci"][0] <= m["auc"] <= m["auc_ci"][1]
        (0.75, True)
    """
    fb, fa = np.asarray(flags_benign, bool), np.asarray(flags_adversarial, bool)
    sb, sa = np.asarray(scores_benign, np.float64), np.asarray(scores_adversarial, np.float64)
    tp, fn = int(fa.sum()), int((~fa).sum())
    fp, tn = int(fb.sum()), int((~fb).sum())
    f1_ci: list[float | None] = [None, None]
    auc_ci: list[float | None] = [None, None]
    if len(fa) and len(fb):
        f1_ci, auc_ci = _bootstrap_ci(fa, sa, fb, sb, n_boot, seed)
    f1_v, auc = f1(fa, fb), roc_auc(sa, sb)
    return {
        "recall": rate(tp, tp + fn).to_dict(),
        "precision": rate(tp, tp + fp).to_dict(),
        "f1": f1_v if math.isfinite(f1_v) else None,
        "f1_ci": f1_ci,
        "auc": auc if math.isfinite(auc) else None,
        "auc_ci": auc_ci,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "n_adversarial": tp + fn,
        "n_benign": fp + tn,
    }


__all__ = ["detection_summary", "f1", "roc_auc"]
