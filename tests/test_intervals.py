"""How many seeds would resolve a paired difference: hand-checked against Student's t tables, and
consistent with :func:`safereuse.metrics.seed_difference`'s own interval."""

from __future__ import annotations

import math
import random

import pytest

from safereuse.errors import SafeReuseError
from safereuse.metrics import seed_difference, seeds_to_resolve

Z2 = 1.96**2


def _ac_var(k: int, n: int) -> float:
    """Agresti–Coull binomial variance of one rate, as a fraction²."""
    p = (k + Z2 / 2) / (n + Z2)
    return p * (1 - p) / (n + Z2)


def test_seeds_to_resolve_hand_checked_from_t_tables():
    # sd = mean = 10 points, no image term: S resolves once t_{S−1} · 10/√S < 10, i.e. t_{S−1} < √S.
    # Tables (A&S 26.10, 97.5 %): t_4 = 2.7764 > √5 = 2.236, t_5 = 2.5706 > √6 = 2.449,
    # t_6 = 2.4469 < √7 = 2.646 → 7 seeds.
    assert seeds_to_resolve(10.0, 10.0) == 7
    assert seeds_to_resolve(-10.0, 10.0) == 7  # the sign does not matter
    # no seed spread, an image term of 4 points² (± 2 points): t_{S−1} · 2 < 5 ⇔ t_{S−1} < 2.5:
    # t_5 = 2.5706 no, t_6 = 2.4469 yes → 7; the image term is not divided by S, so the limit is
    # 1.96 · 2 = 3.92 points and an effect of 3.9 is never resolved by seeds.
    assert seeds_to_resolve(5.0, 0.0, 4.0) == 7
    assert seeds_to_resolve(3.9, 0.0, 4.0, max_seeds=10_000) is None
    # no noise at all: two seeds suffice for any non-zero effect
    assert seeds_to_resolve(0.1, 0.0, 0.0) == 2
    # a larger spread needs more seeds, beyond max_seeds it is not resolvable
    assert seeds_to_resolve(10.0, 20.0) > seeds_to_resolve(10.0, 10.0)
    assert seeds_to_resolve(10.0, 10.0, max_seeds=6) is None
    assert seeds_to_resolve(10.0, 10.0, max_seeds=7) == 7


def test_seeds_to_resolve_edges():
    assert seeds_to_resolve(0.0, 1.0) is None
    assert seeds_to_resolve(math.nan, 1.0) is None and seeds_to_resolve(5.0, math.inf) is None
    with pytest.raises(SafeReuseError, match="max_seeds"):
        seeds_to_resolve(5.0, 1.0, max_seeds=1)
    with pytest.raises(SafeReuseError, match="≥ 0"):
        seeds_to_resolve(5.0, -1.0)
    with pytest.raises(SafeReuseError, match="z"):
        seeds_to_resolve(5.0, 1.0, z=0.0)


def test_seed_difference_reports_its_image_term():
    d = seed_difference([(80, 100), (90, 100)], [(60, 100), (70, 100)])
    hand = 1e4 * ((_ac_var(80, 100) + _ac_var(60, 100)) + (_ac_var(90, 100) + _ac_var(70, 100))) / 2
    assert d.image_var == pytest.approx(hand)
    assert d.image_var == pytest.approx(34.754, abs=1e-3)  # (16.04 + 23.18 + 9.79 + 20.50) / 2
    assert not d.excludes_zero  # [−54.9, 94.9]
    assert math.isnan(seed_difference([None], [(1, 2)]).image_var)
    assert "image_var" in d.to_dict()


def test_seeds_to_resolve_agrees_with_seed_difference():
    """At the observed seeds, the answer is ≤ S exactly when seed_difference's interval excludes 0
    (the same half-width; clipping to ±100 cannot change a sign)."""
    rng = random.Random(0)
    agreed = {True: 0, False: 0}
    for _ in range(300):
        seeds, n = rng.randint(2, 8), rng.choice([50, 200, 1000])
        base, gap = rng.uniform(0.1, 0.9), rng.uniform(-0.3, 0.3)
        a, b = [], []
        for _ in range(seeds):
            pa = min(max(base + gap + rng.gauss(0, 0.05), 0.0), 1.0)
            pb = min(max(base + rng.gauss(0, 0.05), 0.0), 1.0)
            a.append((round(pa * n), n))
            b.append((round(pb * n), n))
        d = seed_difference(a, b)
        need = seeds_to_resolve(d.mean, d.std, d.image_var, max_seeds=1000)
        assert (need is not None and need <= seeds) == d.excludes_zero, (a, b, d, need)
        agreed[d.excludes_zero] += 1
    assert min(agreed.values()) > 20  # both outcomes were exercised
