"""The Bitrix24 source: the CRM's outbound events on `POST /hooks/bitrix24`, the deals and
contacts they name fetched through the REST API.

Configured under `sources.bitrix24`:

```yaml
sources:
  bitrix24:
    rest_url: ${BITRIX24_REST_URL}               # inbound webhook: https://x.bitrix24.ru/rest/1/abc/
    application_token: ${BITRIX24_APP_TOKEN}     # of the outbound webhook; without it every event is refused
    stages: {WON: order.paid, LOSE: order.cancelled, "C1:WON": order.paid}
    requests_per_second: 2                       # Bitrix24's leaky bucket refills at about 2 a second
```

An outbound event is a form (`event=ONCRMDEALUPDATE`, `data[FIELDS][ID]=42`, `ts`,
`auth[application_token]`...). Its `auth[application_token]` must be the configured one
(compared in constant time), else 401.

The event carries only an id, and the rate limit makes fetching slow under a burst, so the
fetch happens after the answer, durably: the handler writes `deal-42.json` (or
`contact-7.json`) into the pending folder (`bitrix24-pending/` beside the database), fsyncs
it, and answers 200; the source's poller fetches what is pending in `batch` requests (a deal
and its contact in one command pair, 25 pending records a request), stores the events, and
only then deletes the files. A restart, or Bitrix24 down, leaves the files for the next
round (retried with a growing pause, up to 5 minutes). Several updates of one deal before it is
fetched are one file: the fetch reads the deal as it is now.

What a record becomes (the customer is the contact's first email and phone, with
`attributes.bitrix24_contact_id` and, for a deal, `attributes.bitrix24_deal_id`):
- a deal: `bitrix.deal.stage_changed` once per stage it enters (keyed on its `STAGE_ID` and
  `MOVED_TIME`; a new deal enters its first stage) with `data.deal` (`id`, `title`,
  `stage_id`, `category_id`, `opportunity`, `currency`, `assigned_by_id`), plus the events
  `stages` maps that stage to, once per deal, with `data.order` (`id`, `total`, `currency`);
- a contact: `customer.updated` (once per `DATE_MODIFY`).
A deal without a contact, or one deleted before it is fetched, is dropped with a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from boomerang import hookimpl
from boomerang.kinds import Ingest, Route, Source
from boomerang.plugin_api import Config, Event, EventError
from boomerang.plugins.sources.bitrix24_rest import (
    MAX_BATCH,
    TRANSIENT,
    Bitrix24Error,
    Bitrix24Rest,
    bucket_for,
)
from boomerang.plugins.sources.bitrix24_settings import read_settings
from boomerang.plugins.sources.signed_hooks import (
    Unheard,
    bad_request,
    customer,
    event,
    moment,
    number,
    refused,
    same_text,
    stored,
)

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger(__name__)

HOOK_PATH = "/hooks/bitrix24"
STAGE_CHANGED = "bitrix.deal.stage_changed"
# The outbound events fetched, by the kind of record they name.
KINDS = {
    "ONCRMDEALADD": "deal",
    "ONCRMDEALUPDATE": "deal",
    "ONCRMCONTACTADD": "contact",
    "ONCRMCONTACTUPDATE": "contact",
}
PENDING = re.compile(r"(deal|contact)-(\d{1,18})\.json")
PER_BATCH = MAX_BATCH // 2  # pending records a batch request fetches: a deal takes two commands
IDLE_CHECK = 60.0  # seconds between looks at the pending folder when no event wakes the poller
MAX_PAUSE = 300.0  # seconds: the longest pause after failed rounds


class Bitrix24Source(Source):
    """Deals and contacts of a Bitrix24 portal."""

    name = "bitrix24"
    verified = True  # what it stores comes from the CRM's own REST API
    event_types = (STAGE_CHANGED,)

    def __init__(
        self,
        rest: Bitrix24Rest,
        pending: Path,
        application_token: str | None = None,
        stages: dict[str, tuple[str, ...]] | None = None,
    ):
        self.rest = rest
        self.pending = pending
        self.application_token = application_token
        self.stages = stages or {}
        self.unheard = Unheard(self.name)
        self._wake = asyncio.Event()

    def routes(self) -> list[Route]:
        """`POST /hooks/bitrix24`."""
        return [Route("POST", HOOK_PATH, self.post_hook)]

    async def post_hook(self, request: web.Request, ingest: Ingest) -> web.Response:
        """Check the application token, note the record to fetch durably, answer."""
        from aiohttp import web

        try:
            form = await request.post()
        except (ValueError, UnicodeDecodeError):
            return bad_request("the body is not a form (application/x-www-form-urlencoded)")
        token = form.get("auth[application_token]")
        if not self.application_token or not same_text(self.application_token, _text(token)):
            return refused("wrong or missing auth[application_token]: see sources.bitrix24.application_token")
        name = (_text(form.get("event")) or "").upper()
        kind = KINDS.get(name)
        if kind is None:
            self.unheard.note(name)
            return stored(None, ignored=name[:80])
        record_id = _text(form.get("data[FIELDS][ID]")) or ""
        if not re.fullmatch(r"\d{1,18}", record_id):
            return bad_request(f"{name}: data[FIELDS][ID] must be the record's numeric id")
        note = json.dumps({"event": name, "ts": _text(form.get("ts"))}).encode()
        try:
            await asyncio.to_thread(_write_durably, self.pending, f"{kind}-{record_id}.json", note)
        except OSError as exc:
            log.error("bitrix24: cannot note %s %s as pending (%s): answering 503", kind, record_id, exc)
            return web.json_response(
                {"error": "the event cannot be stored now; try again"},
                status=503,
                headers={"Retry-After": "5"},
            )
        self._wake.set()
        return web.json_response({"pending": f"{kind}-{record_id}"})

    async def poll(self, ingest: Ingest, stop: asyncio.Event) -> None:
        """Fetch what is pending whenever an event arrives (and every minute), until `stop`."""
        pause = IDLE_CHECK
        failures = 0
        while not stop.is_set():
            self._wake.clear()
            try:
                while await self.fetch_pending(ingest) == PER_BATCH and not stop.is_set():
                    pass  # a full batch: there may be more
                failures, pause = 0, IDLE_CHECK
            except Exception as exc:  # noqa: BLE001 - the poller outlives a CRM or database outage
                failures += 1
                pause = min(MAX_PAUSE, 2.0**failures)
                log.warning("bitrix24: fetching pending records failed (%s); trying again in %gs", exc, pause)
            waits = [asyncio.ensure_future(stop.wait())]
            if not failures:
                waits.append(asyncio.ensure_future(self._wake.wait()))
            _, undone = await asyncio.wait(waits, timeout=pause, return_when=asyncio.FIRST_COMPLETED)
            for waiting in undone:
                waiting.cancel()

    async def fetch_pending(self, ingest: Ingest) -> int:
        """Fetch one batch of pending records, store their events, forget them; how many were
        fetched. Raises (keeping them pending) when Bitrix24 or the store cannot answer."""
        found = await asyncio.to_thread(_pending_records, self.pending, PER_BATCH)
        if not found:
            return 0
        commands: dict[str, str] = {}
        for _, _, kind, record_id in found:
            if kind == "deal":
                commands[f"d{record_id}"] = f"crm.deal.get?id={record_id}"
                commands[f"dc{record_id}"] = f"crm.contact.get?id=$result[d{record_id}][CONTACT_ID]"
            else:
                commands[f"c{record_id}"] = f"crm.contact.get?id={record_id}"
        results, errors = await self.rest.batch(commands)
        events: list[Event] = []
        done: list[tuple[Path, int]] = []
        busy = ""
        for path, mtime, kind, record_id in found:
            key = f"d{record_id}" if kind == "deal" else f"c{record_id}"
            error = errors.get(key) or (errors.get(f"dc{record_id}") if kind == "deal" else None)
            if error and str(error.get("error")) in TRANSIENT:
                busy = str(error.get("error"))  # the portal is busy: this one stays pending
                continue
            try:
                if error or not isinstance(results.get(key), dict):
                    what = "its contact" if key in results else "it"
                    log.info(
                        "bitrix24: %s %s dropped: cannot fetch %s (%s)", kind, record_id, what, _code(error)
                    )
                elif kind == "deal":
                    events += self.deal_events(results[key], results.get(f"dc{record_id}"))
                else:
                    events += contact_events(results[key])
            except EventError as exc:
                log.warning("bitrix24: %s %s dropped: %s", kind, record_id, exc)
            done.append((path, mtime))
        if events:
            await ingest(events, self.name)
        await asyncio.to_thread(_forget, done)
        if busy:
            raise Bitrix24Error(f"batch: Bitrix24 answered {busy} for some records; they stay pending")
        return len(found)

    def deal_events(self, deal: dict[str, Any], contact: Any) -> list[Event]:
        """The stage the deal entered, and the order events `stages` says that stage means."""
        deal_id = str(deal.get("ID") or "")
        stage = deal.get("STAGE_ID")
        if not deal_id.isdigit() or not isinstance(stage, str) or not stage:
            raise EventError("the deal has no ID or STAGE_ID")
        profile = (
            contact_profile(contact, {"bitrix24_deal_id": deal_id}) if isinstance(contact, dict) else None
        )
        if profile is None:
            log.info("bitrix24: deal %s has no contact with an email or phone: nothing to tie it to", deal_id)
            return []
        moved = moment(deal.get("MOVED_TIME"))
        at = moved or moment(deal.get("DATE_MODIFY"))
        view = {
            "id": deal_id,
            "title": deal.get("TITLE"),
            "stage_id": stage,
            "category_id": deal.get("CATEGORY_ID"),
            "opportunity": number(deal.get("OPPORTUNITY")),
            "currency": deal.get("CURRENCY_ID"),
            "assigned_by_id": deal.get("ASSIGNED_BY_ID"),
        }
        view = {key: value for key, value in view.items() if value is not None}
        found = [
            event(
                f"bitrix24:deal:{deal_id}:stage:{stage}:{moved or ''}",
                STAGE_CHANGED,
                at,
                profile,
                {"deal": view},
            )
        ]
        order = {"id": f"deal-{deal_id}", "total": view.get("opportunity"), "currency": view.get("currency")}
        order = {key: value for key, value in order.items() if value is not None}
        for type_ in self.stages.get(stage, ()):
            found.append(
                event(f"bitrix24:deal:{deal_id}:{type_}", type_, at, profile, {"deal": view, "order": order})
            )
        return found

    async def close(self) -> None:
        """Close the REST client's connections."""
        await self.rest.close()


def contact_profile(
    contact: dict[str, Any], attributes: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """An event's `customer` from a Bitrix24 contact: its first email and phone, its name."""
    contact_id = str(contact.get("ID") or "")
    name = " ".join(str(contact.get(key) or "").strip() for key in ("NAME", "LAST_NAME")).strip()
    return customer(
        email=_first_value(contact.get("EMAIL")),
        phone=_first_value(contact.get("PHONE")),
        name=name or None,
        attributes={"bitrix24_contact_id": contact_id, **(attributes or {})},
    )


def contact_events(contact: dict[str, Any]) -> list[Event]:
    """`customer.updated` for a contact (once per DATE_MODIFY)."""
    profile = contact_profile(contact)
    if profile is None:
        return []
    at = moment(contact.get("DATE_MODIFY"))
    return [event(f"bitrix24:contact:{contact.get('ID')}:{at or ''}", "customer.updated", at, profile, {})]


def _first_value(values: Any) -> str | None:
    """The first `VALUE` of a contact's multi-field (`EMAIL`, `PHONE`)."""
    if isinstance(values, list):
        for item in values:
            if isinstance(item, dict) and isinstance(item.get("VALUE"), str) and item["VALUE"].strip():
                return item["VALUE"]
    return None


def _text(value: Any) -> str | None:
    """A form field's text; a file part (multipart) is no text."""
    return value if isinstance(value, str) else None


def _code(error: dict | None) -> str:
    if not error:
        return "not found"
    return f"{error.get('error')}: {error.get('error_description')}"


def _write_durably(folder: Path, name: str, content: bytes) -> None:
    """Write `folder/name` (0600) and fsync it and the folder: it survives a power cut."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = folder / f".{name}.{secrets.token_hex(4)}.tmp"  # two deliveries may write at once
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(descriptor, content)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    os.replace(temporary, folder / name)
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _pending_records(folder: Path, limit: int) -> list[tuple[Path, int, str, str]]:
    """Up to `limit` pending records, oldest first: (file, its mtime, kind, id)."""
    found = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            match = PENDING.fullmatch(entry.name)
            if match:
                with contextlib.suppress(FileNotFoundError):
                    found.append((Path(entry.path), entry.stat().st_mtime_ns, match[1], match[2]))
    found.sort(key=lambda item: item[1])
    return found[:limit]


def _forget(done: list[tuple[Path, int]]) -> None:
    """Delete the fetched records, except one a newer event rewrote meanwhile."""
    for path, mtime in done:
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_mtime_ns == mtime:
                path.unlink()


def make_source(config: Config) -> Bitrix24Source:
    """The source of `sources.bitrix24`; raises `ProblemError` pointing at every wrong setting."""
    settings = read_settings(config)
    rest = Bitrix24Rest(settings.rest_url, bucket_for(settings.rest_url, settings.requests_per_second))
    return Bitrix24Source(rest, settings.pending, settings.application_token, settings.stages)


@hookimpl
def register_sources(config: Config) -> list[Source]:
    """The Bitrix24 source, when `sources.bitrix24` is configured."""
    if "bitrix24" not in config.sources:
        return []
    return [make_source(config)]
