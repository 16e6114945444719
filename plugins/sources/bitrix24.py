"""The Bitrix24 source: the CRM's outbound events on `POST /hooks/bitrix24`, the deals,
smart-process items and contacts they name fetched through the REST API.

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
`contact-7.json`, `item-1032-5.json`) into the pending folder (`bitrix24-pending/` beside the
database), fsyncs it, and answers 200; the source's poller fetches what is pending in `batch` requests (a deal
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
- an item of a smart process (`ONCRMDYNAMICITEMADD`/`UPDATE`, with `ENTITY_TYPE_ID`, fetched
  with `crm.item.get`): the same as a deal, as `bitrix.item.stage_changed` with `data.item`
  (and `entity_type_id`), `attributes.bitrix24_item_id` `<type>-<id>`;
- a contact: `customer.updated` (once per `DATE_MODIFY`).
A deal or item without a contact, or deleted before it is fetched, is dropped with a log line.
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
from boomerang.plugin_api import Config, Event, EventError, RateLimits
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
STAGE_CHANGED = {"deal": "bitrix.deal.stage_changed", "item": "bitrix.item.stage_changed"}
# The outbound events fetched, by the kind of record they name.
KINDS = {
    "ONCRMDEALADD": "deal",
    "ONCRMDEALUPDATE": "deal",
    "ONCRMCONTACTADD": "contact",
    "ONCRMCONTACTUPDATE": "contact",
    "ONCRMDYNAMICITEMADD": "item",  # an item of a smart process (its type in ENTITY_TYPE_ID)
    "ONCRMDYNAMICITEMUPDATE": "item",
}
# A pending record's file: `deal-42.json`, `contact-7.json`, `item-1032-5.json` (type, then id).
PENDING = re.compile(r"(deal|contact)-(\d{1,18})\.json|(item)-(\d{1,9}-\d{1,18})\.json")
PER_BATCH = MAX_BATCH // 2  # pending records a batch request fetches: a deal takes two commands
IDLE_CHECK = 60.0  # seconds between looks at the pending folder when no event wakes the poller
MAX_PAUSE = 300.0  # seconds: the longest pause after failed rounds


class Bitrix24Source(Source):
    """Deals and contacts of a Bitrix24 portal."""

    name = "bitrix24"
    verified = True  # what it stores comes from the CRM's own REST API
    event_types = tuple(STAGE_CHANGED.values())

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
        if kind == "item":
            entity_type = _text(form.get("data[FIELDS][ENTITY_TYPE_ID]")) or ""
            if not re.fullmatch(r"\d{1,9}", entity_type):
                return bad_request(
                    f"{name}: data[FIELDS][ENTITY_TYPE_ID] must be the smart process's type id"
                )
            record_id = f"{entity_type}-{record_id}"
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
        wanted = {(kind, record_id): _commands(kind, record_id) for _, _, kind, record_id in found}
        results, errors = await self.rest.batch(
            {k: v for commands in wanted.values() for k, v in commands.items()}
        )
        events: list[Event] = []
        done: list[tuple[Path, int]] = []
        busy = ""
        for path, mtime, kind, record_id in found:
            main, *contact = wanted[kind, record_id]
            error = next((errors[key] for key in (main, *contact) if key in errors), None)
            if error and str(error.get("error")) in TRANSIENT:
                busy = str(error.get("error"))  # the portal is busy: this one stays pending
                continue
            try:
                if error or not isinstance(results.get(main), dict):
                    what = "its contact" if main in results else "it"
                    log.info(
                        "bitrix24: %s %s dropped: cannot fetch %s (%s)", kind, record_id, what, _code(error)
                    )
                elif kind == "contact":
                    events += contact_events(results[main])
                else:
                    view, moved, modified = (_deal_view if kind == "deal" else _item_view)(results[main])
                    events += self.stage_events(kind, view, moved or modified, moved, results.get(contact[0]))
            except EventError as exc:
                log.warning("bitrix24: %s %s dropped: %s", kind, record_id, exc)
            done.append((path, mtime))
        if events:
            await ingest(events, self.name)
        await asyncio.to_thread(_forget, done)
        if busy:
            raise Bitrix24Error(f"batch: Bitrix24 answered {busy} for some records; they stay pending")
        return len(found)

    def stage_events(
        self, kind: str, view: dict[str, Any], at: str | None, moved: str | None, contact: Any
    ) -> list[Event]:
        """The stage a deal or item entered, and the order events `stages` says that stage means."""
        stage = view["stage_id"]
        # a deal is `42`, an item `1032-5` (its smart process's type, then its id)
        record = view["id"] if kind == "deal" else f"{view['entity_type_id']}-{view['id']}"
        attributes = {f"bitrix24_{kind}_id": record}
        profile = contact_profile(contact, attributes) if isinstance(contact, dict) else None
        if profile is None:
            log.info(
                "bitrix24: %s %s has no contact with an email or phone: nothing to tie it to", kind, record
            )
            return []
        prefix = f"bitrix24:{kind}:{record.replace('-', ':')}"
        found = [
            event(f"{prefix}:stage:{stage}:{moved or ''}", STAGE_CHANGED[kind], at, profile, {kind: view})
        ]
        order = {"id": f"{kind}-{record}", "total": view.get("opportunity"), "currency": view.get("currency")}
        order = {key: value for key, value in order.items() if value is not None}
        for type_ in self.stages.get(stage, ()):
            found.append(event(f"{prefix}:{type_}", type_, at, profile, {kind: view, "order": order}))
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


def _commands(kind: str, record_id: str) -> dict[str, str]:
    """The batch commands that fetch a pending record: the record, then its contact (a
    reference to the record's result, so both come in one request)."""
    if kind == "deal":
        return {
            f"d{record_id}": f"crm.deal.get?id={record_id}",
            f"dc{record_id}": f"crm.contact.get?id=$result[d{record_id}][CONTACT_ID]",
        }
    if kind == "item":
        entity_type, item_id = record_id.split("-")
        key = f"i{entity_type}_{item_id}"
        return {
            key: f"crm.item.get?entityTypeId={entity_type}&id={item_id}",
            f"c{key}": f"crm.contact.get?id=$result[{key}][item][contactId]",
        }
    return {f"c{record_id}": f"crm.contact.get?id={record_id}"}


def _deal_view(deal: dict[str, Any]) -> tuple[dict[str, Any], str | None, str | None]:
    """A deal (`crm.deal.get`) as events carry it, with when it moved and when it changed."""
    view = {
        "id": str(deal.get("ID") or ""),
        "title": deal.get("TITLE"),
        "stage_id": deal.get("STAGE_ID"),
        "category_id": deal.get("CATEGORY_ID"),
        "opportunity": number(deal.get("OPPORTUNITY")),
        "currency": deal.get("CURRENCY_ID"),
        "assigned_by_id": deal.get("ASSIGNED_BY_ID"),
    }
    return _checked(view), moment(deal.get("MOVED_TIME")), moment(deal.get("DATE_MODIFY"))


def _item_view(answer: dict[str, Any]) -> tuple[dict[str, Any], str | None, str | None]:
    """A smart process's item (`crm.item.get`, camelCase fields) as events carry it."""
    item = answer.get("item") if isinstance(answer.get("item"), dict) else {}
    view = {
        "entity_type_id": str(item.get("entityTypeId") or ""),
        "id": str(item.get("id") or ""),
        "title": item.get("title"),
        "stage_id": item.get("stageId"),
        "category_id": item.get("categoryId"),
        "opportunity": number(item.get("opportunity")),
        "currency": item.get("currencyId"),
        "assigned_by_id": item.get("assignedById"),
    }
    if not view["entity_type_id"].isdigit():
        raise EventError("the item has no entityTypeId")
    return _checked(view), moment(item.get("movedTime")), moment(item.get("updatedTime"))


def _checked(view: dict[str, Any]) -> dict[str, Any]:
    """The view without empty fields; `EventError` when it has no numeric id or no stage."""
    if not view["id"].isdigit() or not isinstance(view["stage_id"], str) or not view["stage_id"]:
        raise EventError("the record has no ID or stage")
    return {key: value for key, value in view.items() if value is not None}


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
                kind, record_id = (match[1], match[2]) if match[1] else (match[3], match[4])
                with contextlib.suppress(FileNotFoundError):
                    found.append((Path(entry.path), entry.stat().st_mtime_ns, kind, record_id))
    found.sort(key=lambda item: item[1])
    return found[:limit]


def _forget(done: list[tuple[Path, int]]) -> None:
    """Delete the fetched records, except one a newer event rewrote meanwhile."""
    for path, mtime in done:
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_mtime_ns == mtime:
                path.unlink()


def make_source(config: Config, rate_limits: RateLimits) -> Bitrix24Source:
    """The source of `sources.bitrix24`, its requests in the portal's bucket of `rate_limits`;
    raises `ProblemError` pointing at every wrong setting."""
    settings = read_settings(config)
    bucket = bucket_for(settings.rest_url, settings.requests_per_second, rate_limits)
    rest = Bitrix24Rest(settings.rest_url, bucket)
    return Bitrix24Source(rest, settings.pending, settings.application_token, settings.stages)


@hookimpl
def register_sources(config: Config, rate_limits: RateLimits) -> list[Source]:
    """The Bitrix24 source, when `sources.bitrix24` is configured."""
    if "bitrix24" not in config.sources:
        return []
    return [make_source(config, rate_limits)]
