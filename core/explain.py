"""`boomerang explain CUSTOMER`: a customer's profile, events, journeys and every decision
the engine and the contact plan made about them, on one timeline."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from boomerang.clock import parse_time, to_iso
from boomerang.context import context, store_scope
from boomerang.dispatch import promo_view
from boomerang.expressions import MESSAGE_SECONDS, evaluating
from boomerang.local_time import zone_named
from boomerang.model import Customer, JournalEntry, Journey, MessageRecord
from boomerang.project import Project
from boomerang.templates import wanted_locales
from boomerang.timeline_order import exits_last
from boomerang.tracking import page_links


@dataclass
class Explanation:
    """Everything `explain` shows about one customer."""

    customer: Customer
    events: list[dict[str, Any]]
    journeys: list[Journey]
    journal: list[JournalEntry]
    zone: ZoneInfo
    set_aside: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # unreadable rows
    # active journey id → when its next job (a resume, a queued send) falls due
    next_due: dict[str, datetime] = dataclasses.field(default_factory=dict)
    # message id → its subject and first line, rendered again from what was stored with it
    messages: dict[str, tuple[str | None, str]] = dataclasses.field(default_factory=dict)

    def timeline(self) -> list[dict[str, Any]]:
        """Events and journal lines merged in time order (an event first at the same moment)."""
        rows = [
            {
                "at": parse_time(e["at"]),
                "kind": "event",
                "scenario": None,
                "step": None,
                "template": None,
                "channel": None,
                "reason": f"{e['type']} ({e['id']})",
            }
            for e in self.events
        ]
        rows += [
            {
                "at": j.at,
                "kind": j.kind,
                "scenario": j.scenario,
                "step": j.step,
                "template": j.template,
                "channel": j.channel,
                "reason": j.reason,
                **self._message_fields(j),
            }
            for j in self.journal
        ]
        return sorted(rows, key=lambda row: (row["at"], row["kind"] != "event"))

    def _message_fields(self, entry: JournalEntry) -> dict[str, Any]:
        if entry.kind != "send" or entry.message_id not in self.messages:
            return {}
        subject, first_line = self.messages[entry.message_id]
        return {"subject": subject, "first_line": first_line}

    def as_json(self) -> str:
        """The explanation as one JSON document."""
        customer = dataclasses.asdict(self.customer)
        journeys = [
            {
                "id": j.id,
                "scenario": j.scenario,
                "status": j.status,
                "step": j.cursor,
                "holdout": j.holdout,
                "entered_at": j.entered_at,
                "ended_at": j.ended_at,
                "next_due": self.next_due.get(j.id),
            }
            for j in self.journeys
        ]
        timeline = [{**row, "at": _utc(row["at"])} for row in self.timeline()]
        return json.dumps(
            {"customer": customer, "journeys": journeys, "timeline": timeline, "set_aside": self.set_aside},
            ensure_ascii=False,
            indent=2,
            default=_json_default,
        )

    def as_text(self) -> str:
        """The explanation for a terminal."""
        c = self.customer
        lines = [f"Customer {c.id}" + (f" ({c.name})" if c.name else "")]
        reach = [
            f"email {c.email or '-'}",
            f"phone {c.phone or '-'}",
            f"push subscriptions {len(c.push_subscriptions)}",
            f"telegram {'linked' if c.telegram_chat_id else '-'}",
            *(f"{channel} {address}" for channel, address in sorted(c.addresses.items())),
        ]
        lines.append("  " + "; ".join(reach))
        lines.append(
            f"  locale {c.locale or '-'}, timezone {self.zone.key}; orders {c.orders_count}, "
            f"revenue {c.revenue:g}, last order {_utc(c.last_order_at) if c.last_order_at else '-'}"
        )
        if c.consents:
            lines.append(
                "  consents: " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in c.consents.items())
            )
        if c.opt_outs:
            lines.append("  opted out: " + ", ".join(f"{k} since {v[:10]}" for k, v in c.opt_outs.items()))
        if c.unreachable:
            lines.append("  known bad: " + ", ".join(f"{k} ({v})" for k, v in c.unreachable.items()))
        lines.append("")
        lines.append("Journeys:")
        for j in self.journeys or []:
            where = f"at step {j.cursor}" if j.status == "active" else f"ended {_utc(j.ended_at)}"
            due = self.next_due.get(j.id)
            if due is not None:
                where += (
                    f", next due {_utc(due)} ({due.astimezone(self.zone).strftime('%m-%d %H:%M')} theirs)"
                )
            group = " (holdout)" if j.holdout else ""
            lines.append(f"  {j.scenario:<24} {j.status:<9} entered {_utc(j.entered_at)}  {where}{group}")
        if not self.journeys:
            lines.append("  none")
        lines.append("")
        lines.append("Timeline (UTC, then the customer's time):")
        for row in self.timeline():
            local = row["at"].astimezone(self.zone).strftime("%m-%d %H:%M")
            what = " ".join(
                str(x) for x in (row["scenario"], row["step"], row["template"], row["channel"]) if x
            )
            lines.append(
                f"  {_utc(row['at'])}  {local}  {row['kind']:<7} {what + '  ' if what else ''}{row['reason']}"
            )
            lines += [f"      │ {text}" for text in (row.get("subject"), row.get("first_line")) if text]
        if self.set_aside:
            lines.append("")
            lines.append("Set aside (stored rows that cannot be read back; see the quarantine table):")
            for row in self.set_aside:
                lines.append(f"  {row['table']} {row['row_id']}: {row['reason']}")
        return "\n".join(lines) + "\n"


def explain(
    store: Any, identity: str, default_timezone: str, project: Project | None = None
) -> Explanation | None:
    """Gather what the store knows about a customer found by id, email or phone; with the
    `project`, each sent message's subject and first line too."""
    customer = store.find_customer(identity)
    if customer is None:
        return None
    zone = zone_named(customer.timezone, ZoneInfo(default_timezone))
    journeys = store.journeys_of(customer.id)
    journal = exits_last(store.journal(customer.id))
    active = [journey.id for journey in journeys if journey.status == "active"]
    next_due = {
        journey_id: datetime.fromtimestamp(due, UTC) for journey_id, due in store.next_due_of(active).items()
    }
    messages = {}
    if project is not None:
        sent = store.messages(
            [entry.message_id for entry in journal if entry.kind == "send" and entry.message_id]
        )
        by_id = {journey.id: journey for journey in journeys}
        for message_id, record in sent.items():
            shown = summary(project, store, customer, MessageRecord.from_row(record), by_id, zone)
            if shown is not None:
                messages[message_id] = shown
    return Explanation(
        customer,
        store.events_of(customer.id),
        journeys,
        journal,
        zone,
        store.set_aside(customer.id),
        next_due,
        messages,
    )


def summary(
    project: Project,
    store: Any,
    customer: Customer,
    record: MessageRecord,
    journeys: dict[str, Journey],
    zone: ZoneInfo,
) -> tuple[str | None, str] | None:
    """A sent message's subject and first line, rendered again as it was sent: its template on
    its channel with the journey's context and promo stored with it (the customer as they are
    now); None if its template or channel is gone or it no longer renders."""
    template = project.templates.get(record.template)
    if template is None or record.channel not in template.channels() or record.sent_at is None:
        return None
    at = parse_time(record.sent_at)
    journey = journeys.get(record.journey_id or "")
    if journey is not None:
        journey = dataclasses.replace(journey, context=record.context or journey.context)
    names = context(customer, journey, at, None if journey else (record.context or {}).get("event") or {})
    names["promo"] = promo_view(record.promo, at.astimezone(zone))
    names.update(page_links(None, record.id, record.category, project.config.public_url, sample=True))
    locales = wanted_locales(customer.locale, project.config.default_locale)
    within = store_scope(store.events_of_types, customer.id, at, project.segments, MESSAGE_SECONDS)
    within.zone = zone
    try:
        with evaluating(within):
            rendered = template.render(record.channel, locales, names)
    except Exception:  # noqa: BLE001 - a template changed since may fail in any of Jinja's ways: shown without
        return None
    title = rendered.extra.get("title")
    subject = rendered.subject or (title if isinstance(title, str) else None)
    first = next((line.strip() for line in rendered.body.splitlines() if line.strip()), "")
    return subject, first


def _utc(moment: datetime | None) -> str:
    return to_iso(moment)[:16].replace("T", " ") if moment else "-"


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return to_iso(value)[:19] + "Z"
    raise TypeError(f"cannot encode {type(value).__name__}")
