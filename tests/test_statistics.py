"""The report's statistics against values worked out by hand (and, for Student's t, the
published table), and on synthetic data with a known effect."""

from __future__ import annotations

import math
import random

import pytest

from boomerang.statistics import (
    MIN_ENTRANTS,
    NOT_ENOUGH,
    Group,
    compare,
    ratio_interval,
    t_quantile,
    two_proportion_interval,
    welch_interval,
    z_value,
)


@pytest.mark.parametrize(
    ("df", "expected"),
    # t(0.975) from the tables (R: qt(0.975, df))
    [
        (1, 12.706204736),
        (2, 4.302652730),
        (5, 2.570581836),
        (10, 2.228138852),
        (30, 2.042272456),
        (19.1906, 2.092),
    ],
)
def test_student_t_quantiles(df: float, expected: float) -> None:
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=5e-4 if df == 19.1906 else 1e-8)
    assert t_quantile(0.025, df) == pytest.approx(-expected, abs=5e-4 if df == 19.1906 else 1e-8)


def test_the_normal_critical_value() -> None:
    assert z_value() == pytest.approx(1.959964, abs=1e-6)


def test_two_proportion_interval_by_hand() -> None:
    # p1 = .12, p2 = .10; se = sqrt(.12 * .88 / 1000 + .10 * .90 / 1000) = sqrt(.0001956) = .01398571
    # margin = 1.959964 * .01398571 = .02741148
    found = two_proportion_interval(120, 1000, 100, 1000)
    assert found.estimate == pytest.approx(0.02)
    assert found.low == pytest.approx(0.02 - 0.02741148, abs=1e-7)
    assert found.high == pytest.approx(0.02 + 0.02741148, abs=1e-7)


def test_relative_uplift_by_hand() -> None:
    # r = 1.2; se(log r) = sqrt(.88 / 120 + .90 / 100) = sqrt(.01633333) = .12780193
    # interval: 1.2 * exp(-/+ 1.959964 * .12780193) - 1 = 1.2 * (0.77842 .. 1.28465) - 1
    found = ratio_interval(120, 1000, 100, 1000)
    assert found.estimate == pytest.approx(0.2)
    assert found.low == pytest.approx(1.2 * math.exp(-1.959964 * 0.12780193) - 1, abs=1e-6)
    assert found.high == pytest.approx(1.2 * math.exp(1.959964 * 0.12780193) - 1, abs=1e-6)
    assert found.low == pytest.approx(-0.0658942, abs=1e-6)


def test_welch_interval_by_hand() -> None:
    # a = 4 / 10 = .4, b = 9 / 12 = .75; se = sqrt(1.15) = 1.0723805
    # df = 1.15^2 / (.4^2 / 9 + .75^2 / 11) = 19.1906; t(.975, 19.19) = 2.0917
    found = welch_interval(10, 5.0, 4.0, 12, 3.0, 9.0)
    assert found.estimate == pytest.approx(2.0)
    assert found.high - found.estimate == pytest.approx(2.0917 * 1.0723805, abs=1e-3)
    assert found.low == pytest.approx(-0.24301, abs=1e-4)


def test_group_variance_from_sums() -> None:
    values = [0, 0, 10, 30, 0]
    group = Group(len(values), 2, sum(values), sum(v * v for v in values))
    mean = sum(values) / len(values)
    assert group.revenue_per_entrant == mean == 8
    assert group.revenue_variance == pytest.approx(sum((v - mean) ** 2 for v in values) / 4)


def test_small_groups_get_no_numbers() -> None:
    small = compare(Group(MIN_ENTRANTS - 1, 20), Group(500, 20))
    assert not small.enough and small.uplift is None and small.note.startswith(NOT_ENOUGH)
    assert "treatment has 99 entrants" in small.note
    few = compare(Group(500, 30), Group(500, 4))
    assert not few.enough and "control has 4 conversions" in few.note
    assert compare(Group(500, 30), Group(500, 5)).enough


def test_a_known_effect_is_covered_by_the_interval() -> None:
    # 20 synthetic experiments with a true uplift of +3 points (8% vs 5%) and revenue 50 per
    # conversion: the 95% intervals miss the truth about once in 20, so at least 16 cover it.
    rng = random.Random(15)
    covered_rate = covered_revenue = 0
    for _ in range(20):
        groups = []
        for rate, n in ((0.08, 4000), (0.05, 1000)):
            conversions = sum(rng.random() < rate for _ in range(n))
            revenues = [rng.uniform(20, 80) for _ in range(conversions)]
            groups.append(Group(n, conversions, sum(revenues), sum(r * r for r in revenues)))
        found = compare(*groups)
        assert found.enough
        covered_rate += found.uplift.low <= 0.03 <= found.uplift.high
        covered_revenue += found.revenue_uplift.low <= 0.03 * 50 <= found.revenue_uplift.high
        assert found.incremental_revenue.estimate == pytest.approx(found.revenue_uplift.estimate * 4000)
    assert covered_rate >= 16 and covered_revenue >= 16
