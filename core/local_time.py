"""Times of day on a customer's wall clock: when "10:00 their time" is, pure functions.

A local day holds exactly one moment for a time of day, also on the days the clocks change:
a time that happens twice (clocks going back) is its first occurrence, and a time that does
not happen (clocks going forward over it) is the moment the clocks jump, the first moment at
or after it. So a wait never ends twice, nor on a different day than the one it names.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # `date.weekday()` order
DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
# Days looked at for the next moment: a week, the day it starts on, and a day a zone skipped
# altogether (Pacific/Apia had no 30 December 2011).
_DAYS_LOOKED_AT = 9


def zone_named(name: str | None, default: ZoneInfo) -> ZoneInfo:
    """The timezone `name` (a profile's `timezone`), or `default` for none or one that is no timezone."""
    try:
        return ZoneInfo(name) if name else default
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "Europe" is a folder
        return default


def weekday_of(word: str) -> int | None:
    """`mon`, `Thu`, `thurs` or `thursday` → its number (0 is Monday); None if not a day of the week."""
    word = word.strip().lower()
    if len(word) < 3:
        return None
    return next((index for index, name in enumerate(DAY_NAMES) if name.startswith(word)), None)


def moment_of(day: date, at: time, zone: ZoneInfo) -> datetime:
    """The moment (in UTC) when the wall clocks of `zone` read `at` on `day`: the first time
    if they read it twice, the moment they jump past it if they skip it."""
    wall = datetime.combine(day, at)
    first = wall.replace(tzinfo=zone).astimezone(UTC)  # fold=0: the earlier of two readings
    if _wall(first, zone) == wall:
        return first
    # Skipped: the two readings of the gap bound the jump; find it to the second (zone
    # offsets and their changes are whole seconds).
    low, high = sorted(int(wall.replace(tzinfo=zone, fold=fold).timestamp()) for fold in (0, 1))
    while high - low > 1:
        middle = (low + high) // 2
        if _wall(datetime.fromtimestamp(middle, UTC), zone) >= wall:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def next_local_time(
    earliest: datetime, at: time, zone: ZoneInfo, weekdays: frozenset[int] | None = None
) -> datetime:
    """The first moment at or after `earliest` when the wall clocks of `zone` read `at` (as
    `moment_of` reads a day of clock changes), on one of `weekdays` (0 is Monday; None: any)."""
    day = earliest.astimezone(zone).date()
    for _ in range(_DAYS_LOOKED_AT):
        moment = moment_of(day, at, zone)
        # A jump past the rest of the day lands on the next one, which has its own moment.
        if (
            moment >= earliest
            and _wall(moment, zone).date() == day
            and (weekdays is None or day.weekday() in weekdays)
        ):
            return moment
        day += timedelta(days=1)
    raise ValueError(f"no {at:%H:%M} on the chosen days of the week in {zone.key} after {earliest}")


def _wall(moment: datetime, zone: ZoneInfo) -> datetime:
    """What the wall clocks of `zone` read at `moment` (naive)."""
    return moment.astimezone(zone).replace(tzinfo=None)
