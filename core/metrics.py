"""The daemon's Prometheus metrics (`GET /metrics`): one `Metrics` per daemon, with its own
registry, handed to the parts that count (the ingestor, the engine's dispatch, the daemon's
routes), so that several daemons in one process never share a figure.

Counters are added to in batches where the work comes in batches (a group commit's events, a
batch of sends' plan decisions and answers), never once per event on ingest's path. What the
store holds (customers, events, active journeys, due jobs) is read by `read_store_figures` on
a read-only connection of its own every `STORE_FIGURES_SECONDS` (`Daemon._refresh_figures`),
and a scrape only reads that copy: a scrape never queues on the store's thread, nor waits for
the disk. Labels hold names the configuration knows (sources, channels, scenarios, job
kinds, event types: an unknown type counts as `other`), never a customer's data, so the
series stay few.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from boomerang.model import EVENT_TYPES, Event

if TYPE_CHECKING:
    from prometheus_client.core import Metric

# prometheus_client is imported when a `Metrics` is made, not with this module: `boomerang
# check` and the other commands import the ingest and the engine, and must start fast.

# How often the store's figures are read again (read when used, so a test can shorten it).
STORE_FIGURES_SECONDS = 5.0
# How often customers and events are counted again: a count reads a whole index (tens of
# milliseconds a million rows), and those totals move slowly beside their size.
ROW_COUNT_SECONDS = 60.0
# Seconds a provider took to answer a send: SMTP and HTTP APIs, from a local relay to a slow one.
SEND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# The label of a message the contact plan held back before choosing a channel.
NO_CHANNEL = "none"
OTHER = "other"  # an event type nobody declared: counted, but not as a series of its own


@dataclass
class StoreFigures:
    """What the store holds, as last read: the gauges of a scrape."""

    customers: int = 0
    events: int = 0
    journeys_active: dict[str, int] = field(default_factory=dict)  # by scenario
    jobs_due: dict[str, int] = field(default_factory=dict)  # by kind, not leased
    queue_lag: float = 0.0  # seconds the oldest due job has waited
    read_at: float = 0.0  # `time.time()` of the reading; 0 before the first
    counted_at: float = 0.0  # `now` when customers and events were counted


def read_store_figures(
    store: Any, scenarios: Iterable[str], kinds: Iterable[str], now: float, last: StoreFigures | None = None
) -> StoreFigures:
    """Read the gauges' figures from `store` (a read-only one: its own thread and connection),
    with indexed queries: every scenario and job kind named is reported, with 0 if it has none.
    Customers and events are taken from the `last` reading unless it counted them more than
    `ROW_COUNT_SECONDS` ago."""
    if last is not None and now - last.counted_at < ROW_COUNT_SECONDS:
        counts, counted_at = {"customers": last.customers, "events": last.events}, last.counted_at
    else:
        counts, counted_at = store.counts(), now
    scenarios = list(scenarios)
    due = store.due_jobs(now)
    oldest = min((since for _, since in due.values()), default=now)
    return StoreFigures(
        customers=counts["customers"],
        events=counts["events"],
        journeys_active={scenario: 0 for scenario in scenarios} | store.active_journeys(scenarios),
        jobs_due={kind: 0 for kind in kinds} | {kind: count for kind, (count, _) in due.items()},
        queue_lag=max(0.0, now - oldest),
        read_at=time.time(),
        counted_at=counted_at,
    )


class _StoreGauges:
    """The gauges of the store's figures, from the copy last read (nothing is read at a scrape):
    a collector of the registry."""

    def __init__(self) -> None:
        self.figures = StoreFigures()

    def collect(self) -> Iterator[Metric]:
        """The figures as gauge families."""
        from prometheus_client.core import GaugeMetricFamily

        figures = self.figures
        yield GaugeMetricFamily("boomerang_customers", "Customers in the store.", value=figures.customers)
        yield GaugeMetricFamily("boomerang_events", "Events in the store.", value=figures.events)
        journeys = GaugeMetricFamily(
            "boomerang_journeys_active", "Journeys under way, by scenario.", labels=["scenario"]
        )
        for scenario, count in sorted(figures.journeys_active.items()):
            journeys.add_metric([scenario], count)
        yield journeys
        jobs = GaugeMetricFamily(
            "boomerang_jobs_due", "Jobs due and not yet taken by the scheduler, by kind.", labels=["kind"]
        )
        for kind, count in sorted(figures.jobs_due.items()):
            jobs.add_metric([kind], count)
        yield jobs
        yield GaugeMetricFamily(
            "boomerang_queue_lag_seconds",
            "Seconds the oldest due job has waited for the scheduler (0 when none is due).",
            value=figures.queue_lag,
        )
        yield GaugeMetricFamily(
            "boomerang_store_figures_read_timestamp_seconds",
            "When the store's figures above were last read (Unix time; 0 before the first reading).",
            value=figures.read_at,
        )


class Metrics:
    """One daemon's metrics and their registry; the parts that count call its methods."""

    def __init__(self, event_types: Iterable[str] = EVENT_TYPES) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics

        # The `_created` series (when each counter was made) double the series and say nothing
        # the daemon's start time does not; this process has no other registry that wants them.
        disable_created_metrics()
        self.registry = CollectorRegistry()
        self.event_types = frozenset(event_types)  # the types counted by name; others as `other`
        registry = self.registry
        self._ingested = Counter(
            "boomerang_events_ingested",
            "Events stored, by source and type (a type no source declares counts as 'other').",
            ["source", "type"],
            registry=registry,
        )
        self._duplicates = Counter(
            "boomerang_events_duplicate",
            "Events received again and ignored (already stored), by source.",
            ["source"],
            registry=registry,
        )
        self._messages = Counter(
            "boomerang_messages",
            "Messages by channel and result: sent, retried, failed, address_invalid, opted_out "
            "(the channel's answer), deferred or dropped (channel 'none' when the contact plan "
            "held it back), unknown (cut off mid-send by a crash, not sent again).",
            ["channel", "result"],
            registry=registry,
        )
        self._decisions = Counter(
            "boomerang_plan_decisions",
            "Contact-plan decisions by outcome (send, defer, drop) and the rule that decided it.",
            ["outcome", "rule"],
            registry=registry,
        )
        self._send_seconds = Histogram(
            "boomerang_send_duration_seconds",
            "Seconds a channel took to send a message (to answer, whatever the answer).",
            ["channel"],
            buckets=SEND_BUCKETS,
            registry=registry,
        )
        self._rejections = Counter(
            "boomerang_webhook_rejections",
            "Requests a source's (or channel's) endpoint refused, by source and reason: "
            "unauthorized, bad_body, too_large, rate_limited, store_unavailable, other.",
            ["source", "reason"],
            registry=registry,
        )
        self._reloads = Counter(
            "boomerang_reloads", "Reloads (SIGHUP) since start, by result.", ["result"], registry=registry
        )
        for result in ("ok", "failed"):
            self._reloads.labels(result)
        self.store = _StoreGauges()
        registry.register(self.store)

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The registry in the format the scraper asks for (`Accept`): Prometheus text by
        default, OpenMetrics when asked; with its content type."""
        from prometheus_client.exposition import choose_encoder

        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type

    def ingested(self, events: list[Event]) -> None:
        """Count the events a group commit stored (one tally for the group)."""
        for (source, type_), count in Tally((event.source, event.type) for event in events).items():
            self._ingested.labels(source, type_ if type_ in self.event_types else OTHER).inc(count)

    def duplicates(self, source: str, count: int) -> None:
        """Count events of a source received again."""
        if count:
            self._duplicates.labels(source).inc(count)

    def messages(self, results: Tally[tuple[str | None, str]]) -> None:
        """Count messages by (channel, result), a batch's tally at once."""
        for (channel, result), count in results.items():
            self._messages.labels(channel or NO_CHANNEL, result).inc(count)

    def message(self, channel: str | None, result: str) -> None:
        """Count one message's result (`messages` for a batch)."""
        self._messages.labels(channel or NO_CHANNEL, result).inc()

    def decisions(self, outcomes: Tally[tuple[str, str]]) -> None:
        """Count contact-plan decisions by (outcome, rule), a batch's tally at once."""
        for (outcome, rule), count in outcomes.items():
            self._decisions.labels(outcome, rule).inc(count)

    def send_took(self, channel: str, seconds: float) -> None:
        """Note how long a channel took over one send."""
        self._send_seconds.labels(channel).observe(seconds)

    def rejected(self, source: str, status: int) -> None:
        """Count a request a source's endpoint answered with a client error (or 503)."""
        self._rejections.labels(source, rejection_reason(status)).inc()

    def reloaded(self, ok: bool) -> None:
        """Count a reload."""
        self._reloads.labels("ok" if ok else "failed").inc()


def rejection_reason(status: int) -> str:
    """The reason class of a refused request, by its status: 401 and 403 a missing or wrong
    signature or token, 400 and 422 a body that cannot be read, 413 too large, 429 too many."""
    return {
        400: "bad_body",
        401: "unauthorized",
        403: "unauthorized",
        413: "too_large",
        422: "bad_body",
        429: "rate_limited",
        503: "store_unavailable",
    }.get(status, OTHER)
