"""The order a timeline is shown in: a journey's `exit` after the sends it queued.

A journey that reaches its last step ends in the same moment its last `send` step queues the
message; the send is decided (and journaled) when its job runs, a moment later in the store's
order though at the same time. Shown as written, `exit` would come before the journey's last
send or defer. `ExitsLast` holds each `exit` back until the clock moves on (or the same journey
enters again), so it follows every line of its moment.
"""

from __future__ import annotations

from collections.abc import Iterable

from boomerang.model import JournalEntry


class ExitsLast:
    """Reorders a stream of timeline lines (in time order) page by page: `order()` each page,
    then `rest()` once at the end."""

    def __init__(self) -> None:
        self.held: list[JournalEntry] = []

    def order(self, entries: Iterable[JournalEntry]) -> list[JournalEntry]:
        """The lines that can be shown now, in order; exits of the latest moment are held back."""
        shown: list[JournalEntry] = []
        for entry in entries:
            if self.held and entry.at > self.held[0].at:
                shown += self.rest()
            elif entry.kind == "enter" and any(held.journey_id == entry.journey_id for held in self.held):
                shown += [held for held in self.held if held.journey_id == entry.journey_id]
                self.held = [held for held in self.held if held.journey_id != entry.journey_id]
            if entry.kind == "exit":
                self.held.append(entry)
            else:
                shown.append(entry)
        return shown

    def rest(self) -> list[JournalEntry]:
        """The exits still held back (at the end of the stream)."""
        held, self.held = self.held, []
        return held


def exits_last(entries: Iterable[JournalEntry]) -> list[JournalEntry]:
    """A whole timeline (in time order) with each exit after the lines of its moment."""
    ordering = ExitsLast()
    return ordering.order(entries) + ordering.rest()
