"""Time: parsing and printing timestamps and durations, and the two clocks.

The daemon runs on the wall clock; `simulate` runs the same engine on a virtual clock that
jumps straight to the next due job.
"""

from __future__ import annotations

import functools
import re
import time
from datetime import UTC, datetime, timedelta

_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str | int) -> timedelta:
    """`30s`, `20m`, `2h`, `1d`, `3w` → timedelta; raises ValueError with the accepted forms."""
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(f"'{text}' is not a duration; write a number and a unit: 30s, 20m, 2h, 1d, 3w")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def parse_time(text: str) -> datetime:
    """An ISO-8601 timestamp with a timezone (`Z` or an offset) → aware UTC datetime.

    Raises ValueError for anything else, including a moment that has no UTC year 1 to 9999
    (`9999-12-31T23:00:00-05:00`).
    """
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise ValueError(f"'{text}' is not an ISO-8601 timestamp such as 2026-03-02T10:00:00Z") from None
    if moment.tzinfo is None:
        raise ValueError(f"'{text}' has no timezone; add Z for UTC or an offset such as +03:00")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"'{text}' is outside the years 0001 to 9999 in UTC") from None


@functools.lru_cache(maxsize=4096)  # the same moment is written many times (an event, a tick)
def to_iso(moment: datetime) -> str:
    """A UTC timestamp in one fixed width, so that stored timestamps sort as text.

    The year is written with four digits whatever the platform: `%Y` gives `999` for 999 on
    glibc, which `parse_time` (rightly) cannot read back.
    """
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    # Fields one by one rather than strftime: this runs several times for every event stored.
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:{moment.minute:02d}"
        f":{moment.second:02d}.{moment.microsecond:06d}Z"
    )


class WallClock:
    """The real time, for the daemon."""

    def now(self) -> datetime:
        """The current moment in UTC."""
        return datetime.now(UTC)

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back, for timeouts."""
        return time.monotonic()


class VirtualClock:
    """A clock that stands still until told to move, for `simulate` and tests."""

    def __init__(self, start: datetime):
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        """The virtual present."""
        return self._now

    def monotonic(self) -> float:
        """Virtual seconds since the epoch."""
        return self._now.timestamp()

    def advance_to(self, moment: datetime) -> None:
        """Move the present forward (never back)."""
        if moment > self._now:
            self._now = moment.astimezone(UTC)

    def advance(self, delta: timedelta) -> None:
        """Move the present forward by `delta`."""
        self.advance_to(self._now + delta)
