"""The contact plan: whether, when and over which channel a message goes, and why.

For each message about to go, in this order: the reachable channels (an address, no opt-out,
not known bad, consent for marketing); caps and the minimum gap (not for transactional);
quiet hours in the customer's timezone; then the channel with the best expected value. The
answer is a `Decision`: a channel now, a later moment to try again, or a drop, always with
the reasons, which the engine stores with the message.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from boomerang.clock import parse_duration
from boomerang.config import Config
from boomerang.kinds import Channel
from boomerang.local_time import zone_named
from boomerang.model import CATEGORIES, Customer, Sent
from boomerang.problems import Problem, ProblemError, did_you_mean

DEFAULT_PRIORITIES = {"transactional": 100, "trigger": 50, "promo": 10}
PLAN_KEYS = ("default_timezone", "quiet_hours", "caps", "min_gap", "channels", "fallback", "priorities")
# How much one engaged message is worth, in the same unit as the channels' `cost`.
ENGAGEMENT_VALUE = 1.0
# Weight of the channel's population rate against the customer's own record: with fewer
# messages than this, the population's figure dominates.
PRIOR_WEIGHT = 5.0
# A message's engagement, from its best receipt.
ENGAGEMENT = {"clicked": 1.0, "opened": 0.6, "delivered": 0.3, "sent": 0.1}
DEFAULT_RATE = 0.3
_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True)
class Cap:
    """At most `max` messages per `per`, of some categories, on one channel or all."""

    max: int
    per: timedelta
    categories: tuple[str, ...] = ("trigger", "promo")
    channel: str | None = None

    def describe(self) -> str:
        """`2 per 1d (trigger, promo)`."""
        days = self.per.total_seconds() / 86400
        per = f"{days:g}d" if days >= 1 and days == int(days) else f"{self.per.total_seconds() / 3600:g}h"
        scope = f"{self.channel} " if self.channel else ""
        return f"{scope}cap {self.max} per {per} ({', '.join(self.categories)})"


@dataclass
class Decision:
    """The plan's answer: a channel now, a moment to try again (`defer_until`), or neither (drop)."""

    channel: str | None
    reason: str
    passed_over: dict[str, str] = field(default_factory=dict)
    defer_until: datetime | None = None
    # Which rule decided, in a word (metrics count decisions by it): `best_channel`,
    # `transactional`, `unreachable`, `cap`, `min_gap` or `quiet_hours`.
    rule: str = "best_channel"

    @property
    def outcome(self) -> str:
        """`send` now, `defer` to `defer_until`, or `drop`."""
        if self.channel is not None:
            return "send"
        return "defer" if self.defer_until is not None else "drop"

    def explain(self) -> str:
        """One line: the choice or the wait, and what was passed over and why."""
        skipped = "; ".join(f"{name}: {why}" for name, why in self.passed_over.items())
        return self.reason + (f" (passed over {skipped})" if skipped else "")


@dataclass
class QuietHours:
    """A daily window, in the customer's time, when some channels stay silent."""

    start: time
    end: time
    channels: tuple[str, ...]

    def contains(self, local: datetime) -> bool:
        """Whether a local moment falls inside the window (which may span midnight)."""
        moment = local.time()
        if self.start <= self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end

    def ends_after(self, local: datetime) -> datetime:
        """The first moment after `local` when the window is over."""
        end = local.replace(hour=self.end.hour, minute=self.end.minute, second=0, microsecond=0)
        return end if end > local else end + timedelta(days=1)


class ContactPlan:
    """The rules of `contact_plan:` in the config, applied to one message at a time."""

    def __init__(self, settings: dict[str, Any], channels: dict[str, Channel], default_timezone: str = "UTC"):
        self.channels = channels
        self.zone = ZoneInfo(default_timezone)
        configured = settings.get("channels") or {}
        preferred = [name for name in configured if name in channels]
        self.order = preferred + [name for name in channels if name not in preferred]
        self.costs = {name: float((configured.get(name) or {}).get("cost", 0)) for name in channels}
        self.priorities = {**DEFAULT_PRIORITIES, **(settings.get("priorities") or {})}
        quiet = settings.get("quiet_hours")
        self.quiet = (
            QuietHours(
                _clock(quiet["from"]),
                _clock(quiet["to"]),
                tuple(
                    quiet.get("channels") or [name for name, channel in channels.items() if channel.instant]
                ),
            )
            if quiet
            else None
        )
        self.caps = [
            Cap(
                int(cap["max"]),
                parse_duration(cap["per"]),
                tuple(cap.get("categories") or ("trigger", "promo")),
                cap.get("channel"),
            )
            for cap in settings.get("caps") or []
        ]
        self.min_gap = parse_duration(settings["min_gap"]) if settings.get("min_gap") else None
        fallback = settings.get("fallback") or {}
        self.fallback_after = parse_duration(fallback["after"]) if fallback.get("after") else None
        self.fallback_when = tuple(fallback.get("when") or ("failed", "undelivered")) if fallback else ()

    @property
    def window(self) -> timedelta:
        """How far back sent messages matter for caps and the gap."""
        spans = [cap.per for cap in self.caps] + ([self.min_gap] if self.min_gap else [])
        return max(spans, default=timedelta(0)) + timedelta(days=1)

    def priority(self, category: str) -> int:
        """The queue priority of a message category."""
        return int(self.priorities.get(category, 0))

    def zone_of(self, customer: Customer) -> ZoneInfo:
        """The customer's timezone, or the plan's default."""
        return zone_named(customer.timezone, self.zone)

    def reachable(
        self, customer: Customer, candidates: list[str] | None, category: str, exclude: tuple[str, ...] = ()
    ) -> tuple[list[str], dict[str, str]]:
        """Candidate channels the customer can be reached on, in plan order, and why others cannot."""
        passed: dict[str, str] = {}
        for name in candidates or []:
            if name not in self.channels:
                passed[name] = "not configured"
        usable = []
        for name in self.order:
            if candidates is not None and name not in candidates:
                continue
            if name in exclude:
                passed[name] = "already tried for this step"
            elif not self.channels[name].address(customer):
                passed[name] = "no address"
            elif name in customer.opt_outs or "all" in customer.opt_outs:
                passed[name] = "opted out"  # a hard opt-out binds transactional messages too
            elif name in customer.unreachable:
                passed[name] = f"address known bad ({customer.unreachable[name]})"
            elif customer.consents.get(name) is False and category != "transactional":
                passed[name] = "no marketing consent"
            else:
                usable.append(name)
        return usable, passed

    def decide(
        self,
        customer: Customer,
        candidates: list[str] | None,
        category: str,
        now: datetime,
        sent: list[Sent] | None = None,
        engagement: dict[str, tuple[float, float, float]] | None = None,
        exclude: tuple[str, ...] = (),
    ) -> Decision:
        """The decision for one message now, given the customer's sent messages and engagement.

        `engagement` maps a channel to (the customer's mean engagement, how many of their
        messages that mean is over, the channel's mean engagement over everyone).
        """
        usable, passed = self.reachable(customer, candidates, category, exclude)
        if not usable:
            return Decision(None, "no reachable channel", passed, rule="unreachable")
        if category == "transactional":
            decision = self._choose(
                usable, passed, engagement, "transactional: caps and quiet hours do not apply"
            )
            decision.rule = "transactional"
            return decision
        zone = self.zone_of(customer)
        local = now.astimezone(zone)
        sent = sent or []
        later: list[datetime] = []
        for cap in self.caps:
            if category not in cap.categories:
                continue
            start = _window_start(cap, local)
            calendar = _is_day_cap(cap)
            # A rolling window ends where the oldest send leaves it (exclusive); a calendar
            # window starts at local midnight (inclusive).
            counted = [
                s
                for s in sent
                if s.category in cap.categories
                and (s.at >= start if calendar else s.at > start)
                and (cap.channel is None or s.channel == cap.channel)
            ]
            if len(counted) < cap.max:
                continue
            frees = _cap_frees_at(cap, counted, local)
            if cap.channel:
                if cap.channel in usable:
                    usable.remove(cap.channel)
                    passed[cap.channel] = f"{cap.describe()} reached until {_local(frees)}"
                    later.append(frees)
            else:
                return Decision(
                    None, f"{cap.describe()} reached: waits until {_local(frees)}", passed, frees, "cap"
                )
        if self.min_gap:
            marketing = [s.at for s in sent if s.category != "transactional"]
            if marketing and max(marketing) + self.min_gap > now:
                until = max(marketing) + self.min_gap
                return Decision(
                    None,
                    f"min_gap {_span(self.min_gap)}: waits until {_local(until.astimezone(zone))}",
                    passed,
                    until,
                    "min_gap",
                )
        if not usable:
            until = min(later)
            return Decision(
                None, f"every reachable channel is capped: waits until {_local(until)}", passed, until, "cap"
            )
        if self.quiet and self.quiet.contains(local):
            open_now = [name for name in usable if name not in self.quiet.channels]
            for name in usable:
                if name in self.quiet.channels:
                    passed[name] = (
                        f"quiet hours {self.quiet.start:%H:%M}-{self.quiet.end:%H:%M} (customer's time)"
                    )
            if not open_now:
                # whichever comes first: the end of the quiet hours, or a capped channel freeing
                until = min([self.quiet.ends_after(local), *later])
                reason = f"quiet hours: waits until {_local(until)}"
                return Decision(None, reason, passed, until, "quiet_hours")
            usable = open_now
        return self._choose(usable, passed, engagement, "")

    def _choose(
        self,
        usable: list[str],
        passed: dict[str, str],
        engagement: dict[str, tuple[float, float, float]] | None,
        note: str,
    ) -> Decision:
        scores = {name: self.expected_value(name, (engagement or {}).get(name)) for name in usable}
        # Highest value first; ties keep the plan's order (usable is in plan order; sort is stable).
        best = sorted(usable, key=lambda name: -round(scores[name], 9))[0]
        for name in usable:
            if name == best:
                continue
            if round(scores[name], 9) == round(scores[best], 9):
                passed[name] = f"equal expected value {scores[name]:.3f}; the plan's order puts {best} first"
            else:
                passed[name] = f"lower expected value {scores[name]:.3f} < {scores[best]:.3f}"
        reason = f"{best}: best expected value {scores[best]:.3f}" + (f"; {note}" if note else "")
        if len(usable) == 1:
            reason = f"{best}: the only channel open" + (f"; {note}" if note else "")
        return Decision(best, reason, passed)

    def expected_value(self, channel: str, record: tuple[float, float, float] | None) -> float:
        """Engagement (the customer's, smoothed with the channel's population rate) less cost."""
        own_rate, own_count, population = record or (0.0, 0.0, DEFAULT_RATE)
        rate = (own_rate * own_count + population * PRIOR_WEIGHT) / (own_count + PRIOR_WEIGHT)
        return rate * ENGAGEMENT_VALUE - self.costs.get(channel, 0.0)


def _clock(text: str) -> time:
    match = _TIME.match(str(text))
    assert match, text  # validated by `validate_plan`
    return time(int(match.group(1)), int(match.group(2)))


def _is_day_cap(cap: Cap) -> bool:
    days = cap.per.total_seconds() / 86400
    return days >= 1 and days == int(days)


def _window_start(cap: Cap, local: datetime) -> datetime:
    """Day caps count calendar days in the customer's time; shorter caps a rolling window."""
    days = cap.per.total_seconds() / 86400
    if days >= 1 and days == int(days):
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
        return midnight - timedelta(days=int(days) - 1)
    return local - cap.per


def _cap_frees_at(cap: Cap, counted: list[Sent], local: datetime) -> datetime:
    days = cap.per.total_seconds() / 86400
    if days >= 1 and days == int(days):
        # the day the oldest counted message leaves the calendar window, at local midnight
        oldest = min(s.at for s in counted).astimezone(local.tzinfo)
        midnight = oldest.replace(hour=0, minute=0, second=0, microsecond=0)
        return midnight + timedelta(days=int(days))
    ordered = sorted(s.at for s in counted)
    return (ordered[len(ordered) - cap.max] + cap.per).astimezone(local.tzinfo)


def _local(moment: datetime) -> str:
    return f"{moment.year:04d}-{moment:%m-%d %H:%M %Z}"  # `%Y` drops the zeros of 0999


def _span(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:g}h"


def validate_plan(config: Config, channels: Collection[str]) -> list[Problem]:
    """Every problem of `contact_plan:`, positioned; `channels` are the names it may use
    (every channel the plugins know, configured or not)."""
    plan = config.contact_plan
    known = sorted(channels)
    problems: list[Problem] = []

    def problem(keys: tuple, message: str, at_key: bool = False) -> None:
        problems.append(config.problem(("contact_plan", *keys), message, at_key=at_key))

    for key in plan:
        if key not in PLAN_KEYS:
            problem((key,), f"unknown contact plan setting '{key}'{did_you_mean(str(key), PLAN_KEYS)}", True)
    quiet = plan.get("quiet_hours")
    if quiet is not None:
        if not isinstance(quiet, dict) or "from" not in quiet or "to" not in quiet:
            problem(("quiet_hours",), 'quiet_hours is {from: "21:00", to: "09:00", channels: [sms, push]}')
        else:
            for key in ("from", "to"):
                if not _TIME.match(str(quiet[key])):
                    problem(("quiet_hours", key), f"'{quiet[key]}' is not a time such as \"21:00\"")
            for index, name in enumerate(quiet.get("channels") or []):
                if name not in channels:
                    problem(
                        ("quiet_hours", "channels", index),
                        f"unknown channel '{name}'{did_you_mean(str(name), known)}",
                    )
    for index, cap in enumerate(plan.get("caps") or []):
        if not isinstance(cap, dict) or "max" not in cap or "per" not in cap:
            problem(("caps", index), "a cap is {max: 2, per: 1d} with optional categories or channel")
            continue
        for key in cap:
            if key not in ("max", "per", "categories", "channel"):
                problem(("caps", index, key), f"unknown cap setting '{key}'", True)
        if not str(cap["max"]).isdigit():
            problem(("caps", index, "max"), "max must be a whole number")
        try:
            parse_duration(cap["per"])
        except ValueError as exc:
            problem(("caps", index, "per"), str(exc))
        for position, category in enumerate(cap.get("categories") or []):
            if category not in CATEGORIES:
                problem(("caps", index, "categories", position), f"unknown category '{category}'")
        if cap.get("channel") is not None and cap["channel"] not in channels:
            problem(
                ("caps", index, "channel"),
                f"unknown channel '{cap['channel']}'{did_you_mean(str(cap['channel']), known)}",
            )
    for key in ("min_gap",):
        if plan.get(key) is not None:
            try:
                parse_duration(plan[key])
            except ValueError as exc:
                problem((key,), str(exc))
    for name, settings in (plan.get("channels") or {}).items():
        if name not in channels:
            problem(("channels", name), f"unknown channel '{name}'{did_you_mean(str(name), known)}")
        elif settings is not None and not isinstance(settings, dict):
            problem(("channels", name), "a channel's plan settings are {cost: 0.05}")
        elif settings and "cost" in settings:
            try:
                float(settings["cost"])
            except (TypeError, ValueError):
                problem(("channels", name, "cost"), "cost must be a number")
    fallback = plan.get("fallback")
    if fallback is not None:
        if not isinstance(fallback, dict):
            problem(("fallback",), "fallback is {after: 2h, when: [failed, undelivered]}")
        else:
            if fallback.get("after") is not None:
                try:
                    parse_duration(fallback["after"])
                except ValueError as exc:
                    problem(("fallback", "after"), str(exc))
            for index, outcome in enumerate(fallback.get("when") or []):
                if outcome not in ("failed", "undelivered"):
                    problem(("fallback", "when", index), f"'{outcome}' is not failed or undelivered")
    for name, value in (plan.get("priorities") or {}).items():
        if name not in CATEGORIES:
            problem(("priorities", name), f"unknown category '{name}'")
        elif not str(value).lstrip("-").isdigit():
            problem(("priorities", name), "a priority is a whole number")
    return problems


def load_plan(config: Config, channels: dict[str, Channel], known: Collection[str]) -> ContactPlan:
    """The contact plan of a config over the configured `channels`, `known` being every channel
    the plugins know; raises `ProblemError` with positions when it is wrong."""
    problems = validate_plan(config, known)
    if problems:
        raise ProblemError(problems)
    return ContactPlan(config.contact_plan, channels, config.default_timezone)
