"""Comparing two groups, pure: conversion rates and revenue per entrant, with 95% intervals.

The report compares a scenario's treated entrants with its holdout (control) group, and the
variants of a split with each other. Each comparison is made from aggregates the store sums up
(entrants, conversions, revenue and revenue squared per group), never from rows:

- rates: the difference of two proportions with the unpooled Wald interval (the
  "two-proportion z interval"), and the relative uplift (the ratio less one) with the Katz
  log-ratio interval;
- revenue per entrant: the difference of two means with Welch's interval (Student's t at the
  Welch-Satterthwaite degrees of freedom, computed here: no scipy);
- incremental revenue: the revenue-per-entrant difference times the treated entrants, with the
  interval scaled the same way.

Below `MIN_ENTRANTS` entrants or `MIN_CONVERSIONS` conversions in either group the normal
approximations are not to be trusted, and a comparison says "not enough data yet" instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

CONFIDENCE = 0.95
MIN_ENTRANTS = 100  # per group
MIN_CONVERSIONS = 5  # per group: the usual n*p >= 5 rule for the normal approximation
NOT_ENOUGH = "not enough data yet"


@dataclass(frozen=True)
class Group:
    """One group's aggregates: entrants, how many converted, their revenue and its squares'
    sum (each entrant's revenue, zero for those who did not convert)."""

    entrants: int
    conversions: int
    revenue: float = 0.0
    revenue_squares: float = 0.0

    @property
    def rate(self) -> float:
        """The conversion rate (0 without entrants)."""
        return self.conversions / self.entrants if self.entrants else 0.0

    @property
    def revenue_per_entrant(self) -> float:
        """Mean revenue per entrant (0 without entrants)."""
        return self.revenue / self.entrants if self.entrants else 0.0

    @property
    def revenue_variance(self) -> float:
        """The sample variance of revenue per entrant (n - 1 in the denominator)."""
        if self.entrants < 2:
            return 0.0
        mean = self.revenue_per_entrant
        return max(0.0, (self.revenue_squares - self.entrants * mean * mean) / (self.entrants - 1))


@dataclass(frozen=True)
class Interval:
    """An estimate with its confidence interval."""

    estimate: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        """Plain data for JSON."""
        return {"estimate": self.estimate, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class Comparison:
    """Treatment against control: None in every interval, and `note` saying why, when the
    groups are too small to compare."""

    treatment: Group
    control: Group
    uplift: Interval | None = None  # conversion rate, absolute (treatment - control)
    relative_uplift: Interval | None = None  # conversion rate, treatment / control - 1
    revenue_uplift: Interval | None = None  # revenue per entrant, treatment - control
    incremental_revenue: Interval | None = None  # revenue_uplift x treated entrants
    note: str = ""

    @property
    def enough(self) -> bool:
        """Whether the groups were large enough for intervals."""
        return self.uplift is not None


def z_value(confidence: float = CONFIDENCE) -> float:
    """The two-sided standard normal critical value: 1.959964 for 95%."""
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def two_proportion_interval(x1: int, n1: int, x2: int, n2: int, confidence: float = CONFIDENCE) -> Interval:
    """p1 - p2 with the unpooled Wald interval: se = sqrt(p1(1-p1)/n1 + p2(1-p2)/n2)."""
    p1, p2 = x1 / n1, x2 / n2
    se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    margin = z_value(confidence) * se
    return Interval(p1 - p2, p1 - p2 - margin, p1 - p2 + margin)


def ratio_interval(x1: int, n1: int, x2: int, n2: int, confidence: float = CONFIDENCE) -> Interval:
    """p1 / p2 - 1 with the Katz log interval: se(log r) = sqrt((1-p1)/x1 + (1-p2)/x2).
    Needs x1, x2 > 0."""
    p1, p2 = x1 / n1, x2 / n2
    ratio = p1 / p2
    se = math.sqrt((1 - p1) / x1 + (1 - p2) / x2)
    margin = z_value(confidence) * se
    return Interval(ratio - 1, ratio * math.exp(-margin) - 1, ratio * math.exp(margin) - 1)


def welch_interval(
    n1: int, mean1: float, var1: float, n2: int, mean2: float, var2: float, confidence: float = CONFIDENCE
) -> Interval:
    """mean1 - mean2 with Welch's interval (unequal variances, Welch-Satterthwaite df)."""
    a, b = var1 / n1, var2 / n2
    se = math.sqrt(a + b)
    diff = mean1 - mean2
    if se == 0:
        return Interval(diff, diff, diff)
    df = (a + b) ** 2 / ((a * a / (n1 - 1) if n1 > 1 else 0) + (b * b / (n2 - 1) if n2 > 1 else 0))
    margin = t_quantile(0.5 + confidence / 2, df) * se
    return Interval(diff, diff - margin, diff + margin)


def compare(treatment: Group, control: Group, confidence: float = CONFIDENCE) -> Comparison:
    """Treatment against control, or "not enough data yet" below the minimum sample."""
    for name, group in (("treatment", treatment), ("control", control)):
        if group.entrants < MIN_ENTRANTS:
            return Comparison(
                treatment,
                control,
                note=f"{NOT_ENOUGH}: {name} has {group.entrants} entrants of the {MIN_ENTRANTS} needed",
            )
        if group.conversions < MIN_CONVERSIONS:
            return Comparison(
                treatment,
                control,
                note=f"{NOT_ENOUGH}: {name} has {group.conversions} conversions"
                f" of the {MIN_CONVERSIONS} needed",
            )
    t, c = treatment, control
    uplift = two_proportion_interval(t.conversions, t.entrants, c.conversions, c.entrants, confidence)
    relative = ratio_interval(t.conversions, t.entrants, c.conversions, c.entrants, confidence)
    revenue = welch_interval(
        t.entrants,
        t.revenue_per_entrant,
        t.revenue_variance,
        c.entrants,
        c.revenue_per_entrant,
        c.revenue_variance,
        confidence,
    )
    incremental = Interval(*(value * t.entrants for value in (revenue.estimate, revenue.low, revenue.high)))
    return Comparison(t, c, uplift, relative, revenue, incremental)


# Student's t, from the regularized incomplete beta function (Numerical Recipes' continued
# fraction), so that small groups get the right interval without scipy.


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` degrees of freedom (df > 0, not necessarily whole)."""
    x = df / (df + t * t)
    tail = 0.5 * _incomplete_beta(df / 2, 0.5, x)
    return 1 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p (0 < p < 1), by bisection on `t_cdf`; the normal's beyond 1e7 df."""
    if df > 1e7:
        return NormalDist().inv_cdf(p)
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        high *= 2
    for _ in range(200):
        middle = (low + high) / 2
        if t_cdf(middle, df) < p:
            low = middle
        else:
            high = middle
        if high - low < 1e-13 * max(1.0, high):
            break
    return (low + high) / 2


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularized incomplete beta function."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1) / (a + b + 2):
        return front * _beta_fraction(a, b, x) / a
    return 1 - front * _beta_fraction(b, a, 1 - x) / b


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1 + numerator * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return h
