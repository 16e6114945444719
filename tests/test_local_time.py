"""When "10:00 their time" is: the pure functions of `local_time`, on ordinary days, across
midnight and timezones, on the days the clocks change, and on chosen days of the week."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from boomerang.local_time import moment_of, next_local_time, weekday_of
from conftest import t

MOSCOW = ZoneInfo("Europe/Moscow")  # +03:00 all year
VLADIVOSTOK = ZoneInfo("Asia/Vladivostok")  # +10:00
KALININGRAD = ZoneInfo("Europe/Kaliningrad")  # +02:00
BERLIN = ZoneInfo("Europe/Berlin")  # +01:00, +02:00 from the last Sunday of March to October's
TEN = time(10, 0)
WORKDAYS = frozenset(range(5))


def local(moment: datetime, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).strftime("%a %Y-%m-%d %H:%M")


@pytest.mark.parametrize(
    ("now", "wait", "expected"),
    [
        # The case: an order at 21:30 their time goes at 10:00 the next day.
        ("2026-03-02 21:30+03:00", timedelta(0), "Tue 2026-03-03 10:00"),
        ("2026-03-02 09:00+03:00", timedelta(0), "Mon 2026-03-02 10:00"),
        ("2026-03-02 10:00+03:00", timedelta(0), "Mon 2026-03-02 10:00"),  # at or after
        ("2026-03-02 10:00:01+03:00", timedelta(0), "Tue 2026-03-03 10:00"),
        # {for: 1d, at: "10:00"}: at least a day, then the next 10:00.
        ("2026-03-02 09:00+03:00", timedelta(days=1), "Tue 2026-03-03 10:00"),
        ("2026-03-02 21:30+03:00", timedelta(days=1), "Wed 2026-03-04 10:00"),
        ("2026-03-02 21:30+03:00", timedelta(hours=12), "Tue 2026-03-03 10:00"),
    ],
)
def test_the_next_ten_o_clock_in_moscow(now: str, wait: timedelta, expected: str) -> None:
    start = t(now)
    assert local(next_local_time(start + wait, TEN, MOSCOW), MOSCOW) == expected


def test_across_midnight() -> None:
    assert local(next_local_time(t("2026-03-02 23:50+03:00"), time(0, 30), MOSCOW), MOSCOW) == (
        "Tue 2026-03-03 00:30"
    )
    assert local(next_local_time(t("2026-03-03 00:10+03:00"), time(23, 0), MOSCOW), MOSCOW) == (
        "Tue 2026-03-03 23:00"
    )
    # 31 December to 1 January, and the last day of February.
    assert next_local_time(t("2026-12-31 22:00+03:00"), TEN, MOSCOW) == t("2027-01-01 07:00")
    assert next_local_time(t("2028-02-28 11:00+03:00"), TEN, MOSCOW) == t("2028-02-29 07:00")


def test_one_moment_two_customers_two_timezones() -> None:
    """21:00 UTC is 07:00 the next morning in Vladivostok and 23:00 the same evening in Kaliningrad."""
    now = t("2026-03-02 21:00")
    assert next_local_time(now, TEN, VLADIVOSTOK) == t("2026-03-03 00:00")
    assert next_local_time(now, TEN, KALININGRAD) == t("2026-03-03 08:00")
    # Four hours later it is past 10:00 in Vladivostok (the next 10:00 is the day after), not in Kaliningrad.
    assert next_local_time(now + timedelta(hours=4), TEN, VLADIVOSTOK) == t("2026-03-04 00:00")
    assert next_local_time(now + timedelta(hours=4), TEN, KALININGRAD) == t("2026-03-03 08:00")


@pytest.mark.parametrize(
    ("zone", "day", "at", "expected"),
    [
        # Clocks forward 02:00 → 03:00: 02:30 does not happen; the jump is the first moment after it.
        ("Europe/Berlin", date(2026, 3, 29), time(2, 30), "2026-03-29 01:00"),
        ("Europe/Berlin", date(2026, 3, 29), time(2, 0), "2026-03-29 01:00"),
        ("Europe/Berlin", date(2026, 3, 29), time(3, 0), "2026-03-29 01:00"),
        ("America/New_York", date(2026, 3, 8), time(2, 15), "2026-03-08 07:00"),
        # Lord Howe moves its clocks by half an hour: 02:00 → 02:30.
        ("Australia/Lord_Howe", date(2026, 10, 4), time(2, 15), "2026-10-03 15:30"),
        # Clocks back 03:00 → 02:00: 02:30 happens twice; the first one counts.
        ("Europe/Berlin", date(2026, 10, 25), time(2, 30), "2026-10-25 00:30"),
        ("America/New_York", date(2026, 11, 1), time(1, 30), "2026-11-01 05:30"),
        # An ordinary time on those days is untouched.
        ("Europe/Berlin", date(2026, 3, 29), time(10, 0), "2026-03-29 08:00"),
        ("Europe/Berlin", date(2026, 10, 25), time(10, 0), "2026-10-25 09:00"),
    ],
)
def test_days_the_clocks_change(zone: str, day: date, at: time, expected: str) -> None:
    assert moment_of(day, at, ZoneInfo(zone)) == t(expected)


def test_a_wait_on_the_night_the_clocks_go_back() -> None:
    # At 02:10 the second time round (01:10 UTC), the day's 02:30 (00:30 UTC) is past: the next day's.
    assert next_local_time(t("2026-10-25 01:10"), time(2, 30), BERLIN) == t("2026-10-26 01:30")
    # At 02:10 the first time round, it is twenty minutes away.
    assert next_local_time(t("2026-10-25 00:10"), time(2, 30), BERLIN) == t("2026-10-25 00:30")
    # Before the jump forward, a skipped time goes at the jump; just after it, the next day.
    assert next_local_time(t("2026-03-29 00:59"), time(2, 30), BERLIN) == t("2026-03-29 01:00")
    assert next_local_time(t("2026-03-29 01:00:01"), time(2, 30), BERLIN) == t("2026-03-30 00:30")


def test_a_day_a_zone_skipped_is_no_day_of_the_week() -> None:
    """Samoa went from 29 December 2011 straight to the 31st: that week had no Friday there."""
    apia = ZoneInfo("Pacific/Apia")
    after = t("2011-12-29 12:00-10:00")
    assert local(next_local_time(after, TEN, apia), apia) == "Sat 2011-12-31 10:00"
    assert local(next_local_time(after, TEN, apia, frozenset({4})), apia) == "Fri 2012-01-06 10:00"


def test_chosen_days_of_the_week_skip_the_weekend() -> None:
    friday_evening = t("2026-03-06 21:30+03:00")
    assert local(next_local_time(friday_evening, TEN, MOSCOW, WORKDAYS), MOSCOW) == "Mon 2026-03-09 10:00"
    saturday = t("2026-03-07 08:00+03:00")
    assert local(next_local_time(saturday, TEN, MOSCOW, WORKDAYS), MOSCOW) == "Mon 2026-03-09 10:00"
    assert local(next_local_time(saturday, TEN, MOSCOW, frozenset({5, 6})), MOSCOW) == "Sat 2026-03-07 10:00"
    # A day of the week is the customer's: Sunday 23:00 UTC is already Monday in Vladivostok.
    sunday_night = t("2026-03-08 23:00")
    assert local(next_local_time(sunday_night, TEN, VLADIVOSTOK, WORKDAYS), VLADIVOSTOK) == (
        "Mon 2026-03-09 10:00"
    )
    assert local(next_local_time(sunday_night, TEN, KALININGRAD, WORKDAYS), KALININGRAD) == (
        "Mon 2026-03-09 10:00"
    )
    # Only Wednesdays, from a Wednesday just past 10:00: a week later.
    assert local(next_local_time(t("2026-03-04 10:01+03:00"), TEN, MOSCOW, frozenset({2})), MOSCOW) == (
        "Wed 2026-03-11 10:00"
    )


@pytest.mark.parametrize(
    ("word", "day"),
    [("mon", 0), ("Tue", 1), ("wednesday", 2), ("thurs", 3), ("FRI", 4), ("sat", 5), ("sun", 6)],
)
def test_days_of_the_week_by_name(word: str, day: int) -> None:
    assert weekday_of(word) == day


@pytest.mark.parametrize("word", ["mo", "mnday", "weekend", "", "sundays"])
def test_what_is_not_a_day_of_the_week(word: str) -> None:
    assert weekday_of(word) is None


ZONES = [
    "UTC",
    "Europe/Moscow",
    "Europe/Berlin",
    "Europe/Kaliningrad",
    "Asia/Vladivostok",
    "America/New_York",
    "America/St_Johns",
    "Australia/Lord_Howe",
    "Asia/Kathmandu",
    "Pacific/Apia",
    "Pacific/Chatham",
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    now=st.datetimes(datetime(2000, 1, 1), datetime(2040, 1, 1), timezones=st.just(UTC)),
    wait=st.timedeltas(timedelta(0), timedelta(days=10)),
    zone=st.sampled_from(ZONES).map(ZoneInfo),
    at=st.times(),
    days=st.none() | st.frozensets(st.integers(0, 6), min_size=1),
)
def test_the_wait_ends_after_its_minimum_at_the_wanted_time_on_an_allowed_day(
    now: datetime, wait: timedelta, zone: ZoneInfo, at: time, days: frozenset[int] | None
) -> None:
    at = at.replace(microsecond=0)
    earliest = now + wait
    result = next_local_time(earliest, at, zone, days)
    assert result >= earliest
    assert result < earliest + timedelta(days=9)
    wall = result.astimezone(zone).replace(tzinfo=None)
    assert days is None or wall.weekday() in days
    wanted = datetime.combine(wall.date(), at)
    if wanted.replace(tzinfo=zone).astimezone(UTC).astimezone(zone).replace(tzinfo=None) == wanted:
        assert wall == wanted  # the wanted time exists that day: it is the time
    else:  # skipped by the clocks: the moment they jumped over it
        before = (result - timedelta(seconds=1)).astimezone(zone).replace(tzinfo=None)
        assert before < wanted < wall
    # No earlier allowed day of the customer's had its moment at or after `earliest`.
    day = earliest.astimezone(zone).date()
    while day < wall.date():
        if days is None or day.weekday() in days:
            moment = moment_of(day, at, zone)
            assert moment < earliest or moment.astimezone(zone).date() != day
        day += timedelta(days=1)
