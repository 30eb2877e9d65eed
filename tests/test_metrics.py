"""Metrics: hand-checked Wilson intervals, DIR / ASR on toy predictions, model-cost counters."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from safereuse import metrics
from safereuse.errors import SafeReuseError
from safereuse.metrics import (
    accuracy,
    asr,
    count_nonzero_weights,
    count_params,
    dir_adversarial,
    dir_backdoor,
    dir_nc,
    flops,
    latency,
    mean_std,
    robust_accuracy,
    wilson_interval,
)


def test_wilson_interval_matches_hand_computation():
    # p = 0.8, n = 10, z² = 3.8416: centre = (0.8 + 0.19208) / 1.38416 = 0.716738,
    # half = 1.96 · sqrt(0.016 + 0.009604) / 1.38416 = 0.226584
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.490154, abs=1e-5)
    assert hi == pytest.approx(0.943322, abs=1e-5)
    # k = 0: lower end 0, upper end z² / (n + z²)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(3.8416 / 13.8416, abs=1e-9)
    assert wilson_interval(10, 10)[1] == 1.0
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    with pytest.raises(SafeReuseError):
        wilson_interval(3, 2)


# Toy set: y, clean predictions, adversarial predictions.
#            0  1  2  3  4  5  6  7
Y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
S_CLEAN = torch.tensor([0, 1, 2, 0, 1, 0, 1, 1])  # C = {0, 1, 2, 3, 4, 7}, |C| = 6
S_ADV = torch.tensor([1, 1, 0, 0, 2, 0, 0, 1])  # flips inside C at 0, 2, 4 → 3 of 6


def test_accuracy_in_percent_with_count_and_interval():
    r = accuracy(S_CLEAN, Y)
    assert (r.k, r.n, r.value) == (6, 8, 75.0)
    lo, hi = wilson_interval(6, 8)
    assert r.ci_low == pytest.approx(100 * lo) and r.ci_high == pytest.approx(100 * hi)
    assert r.fraction == 0.75
    rob = robust_accuracy(Y, S_ADV)  # correct at 3, 5, 6, 7
    assert (rob.k, rob.n, rob.value) == (4, 8, 50.0)


def test_dir_forms_on_hand_computed_toy_set():
    r = dir_adversarial(Y, S_CLEAN, S_ADV)
    assert (r.k, r.n, r.value) == (3, 6, 50.0)
    # on C, s(x) = y, so "s(x_adv) ≠ s(x)" and "s(x_adv) ≠ y" count the same inputs
    assert dir_nc(Y, S_CLEAN, S_ADV) == r
    # outside C nothing counts: sample 5 (wrong clean) and 6 (wrong clean) flip but are excluded
    assert dir_backdoor(Y, S_CLEAN, S_ADV).value == 50.0
    lo, hi = wilson_interval(3, 6)
    assert (r.ci_low, r.ci_high) == pytest.approx((100 * lo, 100 * hi))


def test_asr_over_non_target_samples():
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    s_trig = torch.tensor([0, 0, 0, 1, 0, 2])
    r = asr(y, s_trig, target=0)  # non-target: 1, 2, 4, 5 → hits at 1, 2, 4
    assert (r.k, r.n, r.value) == (3, 4, 75.0)
    # target absent from the labels: every sample counts
    assert asr(y, s_trig, target=7).n == 6


def test_empty_clean_correct_set_gives_nan_with_zero_count():
    y = torch.tensor([0, 1])
    wrong = torch.tensor([1, 0])
    r = dir_adversarial(y, wrong, y)
    assert r.n == 0 and r.k == 0 and math.isnan(r.value) and math.isnan(r.ci_low)
    assert r.to_dict()["value"] is None
    assert str(r) == "n/a (n=0)"
    e = accuracy(torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long))
    assert e.n == 0 and math.isnan(e.value)


def test_bad_inputs_raise():
    with pytest.raises(SafeReuseError, match="lengths differ"):
        dir_adversarial(Y, S_CLEAN[:3], S_ADV)
    with pytest.raises(SafeReuseError, match="1-D"):
        accuracy(torch.zeros(4, 3), Y[:4])


def test_mean_std_across_seeds():
    assert mean_std([1.0, 2.0, 3.0]) == metrics.MeanStd(2.0, 1.0, 3)
    r = mean_std([metrics.rate(1, 2), None, float("nan"), 70.0])  # 50 and 70
    assert r.n == 2 and r.mean == 60.0 and r.std == pytest.approx(math.sqrt(200))
    assert mean_std([5.0]).std == 0.0
    assert mean_std([]).n == 0 and math.isnan(mean_std([]).mean)


# -- intervals across seeds ------------------------------------------------------------------------
# Student's t quantiles from the printed tables (e.g. Abramowitz & Stegun table 26.10).
@pytest.mark.parametrize(
    "p, df, t", [(0.975, 1, 12.7062), (0.975, 2, 4.3027), (0.975, 4, 2.7764), (0.975, 30, 2.0423),
                 (0.95, 9, 1.8331), (0.995, 3, 5.8409), (0.5, 5, 0.0), (0.025, 2, -4.3027)]
)  # fmt: skip
def test_student_t_quantile_matches_tables(p, df, t):
    assert metrics.student_t_quantile(p, df) == pytest.approx(t, abs=1e-4)
    assert metrics.student_t_cdf(metrics.student_t_quantile(p, df), df) == pytest.approx(p, abs=1e-9)


def test_student_t_bad_input():
    with pytest.raises(SafeReuseError, match="degrees of freedom"):
        metrics.student_t_cdf(1.0, 0)
    with pytest.raises(SafeReuseError, match="probability"):
        metrics.student_t_quantile(1.0, 3)


def test_seed_interval_hand_checked_three_seeds():
    """3 seeds at 20 / 30 / 40 % of n = 100 shared images."""
    r = metrics.seed_interval([(20, 100), (30, 100), (40, 100)])
    assert (r.seeds, r.k, r.n, r.method) == (3, 90, 300, metrics.CI_SEEDS_T)
    assert r.mean == pytest.approx(30.0) and r.std == pytest.approx(10.0)
    # SE² = s²/S + mean_s p̃(1−p̃)/(n+z²), p̃ = (k + z²/2)/(n + z²), z² = 3.8416
    z2 = 1.96**2
    v_img = sum(
        (k + z2 / 2) / (100 + z2) * (1 - (k + z2 / 2) / (100 + z2)) / (100 + z2) for k in (20, 30, 40)
    )
    se = math.sqrt(0.1**2 / 3 + v_img / 3)
    assert se == pytest.approx(0.072967, abs=1e-6)
    half = 4.3027 * se  # t quantile, 2 degrees of freedom
    assert r.ci_low == 0.0  # 30 − 31.4 clipped at 0
    assert r.ci_high == pytest.approx(100 * (0.3 + half), abs=0.01)  # 61.4
    # contains, and is wider than, the t-interval on the 3 seed means alone: 30 ± 4.3027 · 10/√3
    t_lo, t_hi = 30 - 4.3027 * 10 / math.sqrt(3), 30 + 4.3027 * 10 / math.sqrt(3)
    assert (t_lo, t_hi) == pytest.approx((5.16, 54.84), abs=0.01)
    assert r.ci_low <= t_lo and r.ci_high > t_hi
    # and far wider than the pooled Wilson interval of 90/300, which treats 300 draws as independent
    w_lo, w_hi = wilson_interval(90, 300)
    assert 100 * (w_hi - w_lo) == pytest.approx(10.4, abs=0.1)
    assert r.ci_high - r.ci_low > 5 * 100 * (w_hi - w_lo)


def test_seed_interval_counts_image_noise_when_seeds_agree():
    """Seeds that agree exactly still leave the image-sampling error: the interval is not a point,
    and it does not shrink with more seeds (the images are the same for every seed)."""
    three = metrics.seed_interval([(30, 100)] * 3)
    ten = metrics.seed_interval([(30, 100)] * 10)
    assert three.std == 0.0 and three.ci_low < 30 < three.ci_high
    pt = (30 + 1.96**2 / 2) / (100 + 1.96**2)
    se = math.sqrt(pt * (1 - pt) / (100 + 1.96**2))
    assert three.ci_high - 30 == pytest.approx(100 * 4.3027 * se, abs=0.01)
    assert ten.ci_high - 30 == pytest.approx(100 * metrics.student_t_quantile(0.975, 9) * se, abs=0.01)
    # at least as wide as one cell's Wilson interval scaled to the same normal quantile
    assert ten.ci_high - ten.ci_low > 0.9 * 100 * (wilson_interval(30, 100)[1] - wilson_interval(30, 100)[0])
    # zero events everywhere: still a non-empty interval above 0
    zero = metrics.seed_interval([(0, 50), (0, 60)])
    assert zero.mean == 0.0 and zero.ci_low == 0.0 and zero.ci_high > 0


def test_seed_interval_one_seed_is_the_cells_wilson_interval():
    r = metrics.seed_interval([metrics.rate(8, 10), (0, 0)])  # the empty seed is skipped
    cell = metrics.rate(8, 10)
    assert r.method == metrics.CI_ONE_SEED and r.seeds == 1 and r.std == 0.0
    assert (r.mean, r.ci_low, r.ci_high) == (cell.value, cell.ci_low, cell.ci_high)
    none = metrics.seed_interval([(0, 0)])
    assert none.method == metrics.CI_NONE and none.seeds == 0 and math.isnan(none.ci_low)
    assert none.to_dict()["mean"] is None and str(none) == "n/a (no seeds)"
    with pytest.raises(SafeReuseError, match="invalid proportion"):
        metrics.seed_interval([(5, 4)])


def _tiny() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(50, 3))


def test_param_and_nonzero_counts_follow_parametrized_masks():
    m = _tiny()
    assert count_params(m) == (2 * 9 + 2) + (50 * 3 + 3)
    m[0].bias.requires_grad_(False)
    assert count_params(m, trainable_only=True) == count_params(m) - 2
    assert count_nonzero_weights(m, total=True) == 18 + 150

    class Mask(nn.Module):
        def __init__(self, mask: torch.Tensor) -> None:
            super().__init__()
            self.register_buffer("mask", mask)

        def forward(self, w: torch.Tensor) -> torch.Tensor:
            return w * self.mask

    mask = torch.ones(3, 50)
    mask[:, :10] = 0  # 30 weights masked out
    parametrize.register_parametrization(m[2], "weight", Mask(mask))
    assert count_nonzero_weights(m) == 18 + 150 - 30


def test_flops_hand_counted_and_training_flag_restored():
    m = _tiny().train()
    # conv: 2·5·5 outputs × 9 MACs = 450 MACs; linear: 50·3 = 150 MACs; FLOPs = 2 × MACs
    assert flops(m, (1, 5, 5)) == 2 * (450 + 150)
    assert flops(m, (4, 1, 5, 5)) == 4 * 2 * (450 + 150)
    assert m.training
    with pytest.raises(SafeReuseError):
        flops(m, (5, 5))


def test_latency_reports_median_and_run_count():
    m = _tiny().train()
    lat = latency(m, (1, 5, 5), min_run_time=0.02)
    assert lat.median > 0 and lat.runs >= 1 and lat.batch == 1 and lat.device == "cpu"
    assert m.training


# -- detection statistics (scikit-learn / SciPy) ---------------------------------------------------
def test_roc_auc_and_f1_by_hand():
    # pairs (pos > neg): 0.9 beats both, 0.5 ties 0.5 (½) and beats 0.1 → (2 + 1.5) / 4
    assert metrics.roc_auc(np.array([0.9, 0.5]), np.array([0.1, 0.5])) == 0.875
    assert math.isnan(metrics.roc_auc(np.array([]), np.array([0.5])))
    # tp = 2, fn = 1, fp = 1: 2·2 / (2·2 + 1 + 1)
    assert metrics.f1(np.array([True, True, False]), np.array([True, False])) == pytest.approx(4 / 6)
    assert math.isnan(metrics.f1(np.array([], bool), np.array([False, False])))


def test_bootstrap_statistic_is_sklearns_f1_and_auc():
    """The vectorised statistic the bootstrap resamples (F1 from counts, AUC as Mann–Whitney U) is
    the same quantity as the scikit-learn point estimates, resample by resample."""
    from safereuse.metrics.detection import _resampled

    rng = np.random.default_rng(3)
    sa, sb = np.round(rng.random(30), 1), np.round(rng.random(40) * 0.8, 1)  # ties included
    fa, fb = sa > 0.5, sb > 0.5
    stat = _resampled(fa, sa, fb, sb)
    ia, ib = rng.integers(0, 30, (5, 30)), rng.integers(0, 40, (5, 40))
    got = stat(ia, ib)
    for j in range(5):
        assert got[0, j] == pytest.approx(metrics.f1(fa[ia[j]], fb[ib[j]]), abs=1e-12)
        assert got[1, j] == pytest.approx(metrics.roc_auc(sa[ia[j]], sb[ib[j]]), abs=1e-12)


def test_detection_summary_counts_intervals_and_single_inputs():
    m = metrics.detection_summary([False, True, False, False], [0.1, 0.9, 0.2, 0.0],
                                  [True, True, True, False, False, False], [1.0, 0.8, 0.7, 0.3, 0.1, 0.2],
                                  n_boot=200)  # fmt: skip
    assert (m["tp"], m["fp"], m["fn"], m["tn"], m["n_adversarial"], m["n_benign"]) == (3, 1, 3, 3, 6, 4)
    assert m["auc_ci"][0] <= m["auc"] <= m["auc_ci"][1] and m["f1_ci"][0] <= m["f1"] <= m["f1_ci"][1]
    again = metrics.detection_summary([False, True, False, False], [0.1, 0.9, 0.2, 0.0],
                                      [True, True, True, False, False, False], [1.0, 0.8, 0.7, 0.3, 0.1, 0.2],
                                      n_boot=200)  # fmt: skip
    assert again == m  # seeded
    # one input on a side: that side is the same in every resample (SciPy needs two to resample)
    one = metrics.detection_summary([True], [0.9], [True], [0.8], n_boot=20)
    assert one["f1_ci"] == [one["f1"], one["f1"]] and one["auc_ci"] == [0.0, 0.0]
    assert metrics.detection_summary([], [], [True], [0.8])["auc_ci"] == [None, None]


# -- cost comparison -------------------------------------------------------------------------------
def test_compare_cost_has_the_reengineer_manifest_keys():
    big = _tiny()
    small = _tiny()
    with torch.no_grad():
        small[2].weight[:, :25] = 0  # half of the linear's weights
    x = torch.rand(1, 1, 5, 5)
    c = metrics.compare_cost(big, small, x, threads=1, batch_sizes=(1, 4), min_run_time=0.01)
    assert list(c) == [
        "flops_original", "flops_reengineered", "latency_original_ms", "latency_reengineered_ms",
        "latency_threads", "latency_rounds",
    ]  # fmt: skip
    assert c["flops_original"] == metrics.sparse_flops(big, x) == 450 + 150
    assert c["flops_reengineered"] == 450 + 75
    assert sorted(c["latency_original_ms"]) == ["1", "4"] and c["latency_threads"] == 1
    assert all(v > 0 for v in c["latency_reengineered_ms"].values())
    assert c["latency_rounds"] == 5


def test_compare_cost_interleaves_rounds_and_takes_the_median(monkeypatch):
    import safereuse.metrics.cost as cost

    calls = []
    fake = iter([5.0, 1.0, 4.0, 2.0, 100.0, 3.0])  # original, reduced, original, ... (a burst: 100)

    def latency_ms(model, x, batch_sizes, threads, min_run_time):
        calls.append((model, min_run_time))
        return {b: next(fake) for b in batch_sizes}

    monkeypatch.setattr(cost, "latency_ms", latency_ms)
    a, b = _tiny(), _tiny()
    c = cost.compare_cost(a, b, torch.rand(1, 1, 5, 5), batch_sizes=(1,), min_run_time=0.3, rounds=3)
    assert [m is a for m, _ in calls] == [True, False] * 3  # alternating, not all of one model first
    assert all(t == pytest.approx(0.1) for _, t in calls)  # the time budget is split over the rounds
    assert c["latency_original_ms"] == {"1": 5.0} and c["latency_reengineered_ms"] == {"1": 2.0}
    with pytest.raises(SafeReuseError, match="rounds"):
        cost.compare_cost(a, b, torch.rand(1, 1, 5, 5), rounds=0)
