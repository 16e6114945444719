"""`boomerang preview`: a template rendered as one customer would get it on one channel."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from boomerang import samples
from boomerang.bodies import loads
from boomerang.clock import WallClock
from boomerang.config import Config
from boomerang.context import context, store_scope
from boomerang.database_url import shown as database_shown
from boomerang.dispatch import promo_view
from boomerang.expressions import MESSAGE_SECONDS, evaluating
from boomerang.ingest import parse_profile
from boomerang.kinds import Channel
from boomerang.local_time import zone_named
from boomerang.model import Customer, Message
from boomerang.project import Project
from boomerang.recommendations import BUILTIN, Recommend, read_on_store, strategies
from boomerang.store import Store, StoreError, open_store
from boomerang.store.connection import NoDatabase
from boomerang.templates import wanted_locales
from boomerang.tracking import page_links


class PreviewError(ValueError):
    """What stops a preview: an unknown template, channel or customer, bad data."""


@dataclass
class Preview:
    """The rendered message and the channel's notes about it."""

    message: Message
    notes: list[str] = field(default_factory=list)

    def as_text(self) -> str:
        """Headers, the text, the HTML and the notes, for a terminal."""
        lines = [
            f"Channel:  {self.message.channel}",
            f"To:       {self.message.to or '-'}",
            f"Locale:   {self.message.locale}",
        ]
        if self.message.subject is not None:
            lines.append(f"Subject:  {self.message.subject}")
        lines += [
            f"{key.capitalize()}:{' ' * max(1, 9 - len(key))}{value}"
            for key, value in self.message.extra.items()
            if isinstance(value, str)
        ]
        lines += ["", self.message.body]
        if self.message.html:
            lines += ["", "--- HTML ---", self.message.html]
        if self.notes:
            lines += ["", *self.notes]
        return "\n".join(lines) + "\n"


def sample_customer(data: dict[str, Any], where: str) -> Customer:
    """A customer from the `customer` object of a preview data file."""
    profile = parse_profile(data.get("customer") or {"id": "preview"}, where)
    values = {key: value for key, value in vars(profile).items() if value not in (None, {}, [])}
    return Customer(**{"id": profile.id or "preview", **values})


def render_preview(
    project: Project,
    config: Config,
    template_name: str,
    channel_name: str,
    customer_id: str | None = None,
    data_file: Path | None = None,
    locale: str | None = None,
) -> Preview:
    """Render `template_name` for `channel_name` with a stored customer, a data file or else the
    sample data (core/samples.py), in `locale` when given (else the customer's, the default
    locale, `en`)."""
    template = project.templates.get(template_name)
    if template is None:
        raise PreviewError(
            f"no template named '{template_name}'; templates: {', '.join(project.templates.names())}"
        )
    if channel_name not in template.channels():
        raise PreviewError(
            f"template '{template_name}' has no {channel_name} version; it has: "
            f"{', '.join(sorted(template.channels()))}"
        )
    if locale is not None and locale not in template.locales(channel_name):
        raise PreviewError(
            f"template '{template_name}' has no {locale} {channel_name} version; it has: "
            f"{', '.join(template.locales(channel_name))}"
        )
    event: dict[str, Any] = {}
    no_database = PreviewError(
        f"no customer '{customer_id}': there is no database at {database_shown(config.database)} yet"
    )
    if customer_id and config.no_database():
        raise no_database
    try:
        # The daemon may be running on that database: read it, never migrate or write it.
        store = open_store(config, read_only=True) if customer_id else Store(":memory:")
    except NoDatabase:
        raise no_database from None
    except StoreError as exc:
        raise PreviewError(str(exc)) from None
    try:
        if customer_id:
            customer = store.find_customer(customer_id)
            if customer is None:
                raise PreviewError(f"no customer '{customer_id}' in {config.database}")
            latest = store.events_of(customer.id)[-1:] or [{}]
            event = latest[0]
        elif data_file is None:
            # No one named: the sample customer of the locale shown, with a sample event
            shown = template.pick_locale(channel_name, wanted_locales(locale, config.default_locale))
            shown = "en" if shown is None else shown
            customer, event = samples.sample_customer(shown), samples.sample_event(project, template_name)
        else:
            try:
                # bounded: a data file nested 100 000 deep is an error, not a crash
                data = loads(data_file.read_bytes())
            except (OSError, ValueError) as exc:
                raise PreviewError(f"{data_file}: {exc}") from None
            if not isinstance(data, dict):
                raise PreviewError(f"{data_file}: expected an object with customer and data")
            try:
                customer = sample_customer(data, str(data_file))
            except ValueError as exc:
                raise PreviewError(str(exc)) from None
            event = {"type": data.get("type", "preview"), "data": data.get("data") or {}}
        sample = customer_id is None  # no one's history: sample products to recommend
        return render_with(project, store, template_name, channel_name, customer, event, locale, sample)
    finally:
        store.close()


def render_with(
    project: Project,
    store: Store,
    template_name: str,
    channel_name: str,
    customer: Customer,
    event: dict[str, Any],
    locale: str | None = None,
    sample: bool = True,
) -> Preview:
    """Render a template for `customer` and `event` (`type` and `data`), reading the customer's
    history from `store`; a promo comes from `data.promo`, else the step that sends the template
    with a sample code; `recommendations()` gives sample products if `sample`, else reads the
    store (a plugin's strategy, which only a send asks, gives the sample products). Raises
    PreviewError if it cannot render."""
    template = project.templates.get(template_name)
    assert template is not None
    now = WallClock().now()
    names = context(customer, None, now, event)
    names["promo"] = data_promo(event) or sample_promo(project, template_name, now)
    category = category_of(project, template_name)
    names.update(page_links(None, "m-preview", category, project.config.public_url, sample=True))
    locales = wanted_locales(locale, customer.locale, project.config.default_locale)
    known = strategies(project.registry.recommenders)
    if sample:
        recommend = samples.sample_recommend(known)
    else:
        read = read_on_store(store.recommend, customer.id, now, project.config.cross_sell, known)
        recommend = _plugins_as_samples(read, known)
    within = store_scope(
        store.events_of_types, customer.id, now, project.segments, MESSAGE_SECONDS, recommend
    )
    within.strict = True  # a name the template cannot get is an error, not an empty string
    within.zone = zone_named(customer.timezone, ZoneInfo(project.config.default_timezone))
    try:
        with evaluating(within):
            rendered = template.render(channel_name, locales, names)
    except Exception as exc:  # noqa: BLE001 - Jinja's runtime errors are many; report the one that happened
        raise PreviewError(f"cannot render: {type(exc).__name__}: {exc}") from None
    channel = project.registry.channels.get(channel_name) or unconfigured(project, channel_name)
    message = Message(
        id="m-preview",
        customer_id=customer.id,
        channel=channel_name,
        to=(channel.address(customer) if channel else None) or "",
        template=template_name,
        body=rendered.body,
        subject=rendered.subject,
        html=rendered.html,
        locale=rendered.locale,
        extra=rendered.extra,
    )
    notes = channel.describe(message) if channel else [f"note: channel '{channel_name}' is not configured"]
    return Preview(message, notes)


def _plugins_as_samples(read: Recommend, known: list[str]) -> Recommend:
    """A store's recommendations, with sample products for a plugin's strategy: a preview asks
    no plugin (it may call a service) and only shows how the list reads."""
    sampled = samples.sample_recommend(known)

    def recommend(strategy: str, limit: int) -> list[dict[str, Any]]:
        return read(strategy, limit) if strategy in BUILTIN else sampled(strategy, limit)

    return recommend


def unconfigured(project: Project, channel_name: str) -> Channel | None:
    """The channel of a kind a plugin declares but the config does not set up, as far as a
    preview needs it: its address and notes (SMS segments) depend on the message alone, and the
    configuration `__init__` would read is skipped. None if no plugin declares the kind."""
    kind = project.registry.channel_kinds.get(channel_name)
    if not isinstance(kind, type):
        return kind
    channel = kind.__new__(kind)
    channel.name = channel_name
    return channel


def sample_promo(project: Project, template_name: str, now: datetime) -> dict[str, Any]:
    """The promo of the first step that sends the template, as the message would show it,
    with a sample code where a real one is issued per message; {} if no step has one."""
    for scenario in project.scenarios:
        for step in scenario.walk():
            if step.kind == "send" and step.template == template_name and step.promo:
                promo = {
                    key: value.total_seconds() if isinstance(value, timedelta) else value
                    for key, value in step.promo.items()
                }
                provider = promo.pop("provider", None)
                known = project.registry.promo_providers.get(provider) if provider else None
                sample = known.sample(promo, template_name) if known else None
                promo.setdefault("code", sample or (f"SAMPLE-{provider.upper()}" if provider else "SAMPLE10"))
                return promo_view(promo, now)
    return {}


def category_of(project: Project, template_name: str) -> str:
    """The category of the first scenario that sends the template (marketing if none does):
    a transactional message has no unsubscribe link to show."""
    for scenario in project.scenarios:
        if any(step.kind == "send" and step.template == template_name for step in scenario.walk()):
            return scenario.category
    return "trigger"


def data_promo(event: dict[str, Any]) -> dict[str, Any]:
    """A data file may carry `data.promo` to show how a promo reads."""
    promo = (event.get("data") or {}).get("promo")
    return promo if isinstance(promo, dict) else {}


def email_page(message: Message) -> str:
    """An email as a page a browser opens: its HTML (a template's is a fragment; the page says
    it is UTF-8, which a file opened from disk cannot), or its text as it reads."""
    if message.html and "<html" in message.html[:500].lower():
        return message.html
    title = html.escape(message.subject or message.template)
    body = message.html or f'<pre style="white-space:pre-wrap">{html.escape(message.body)}</pre>'
    return (
        f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{title}</title></head>\n'
        f"<body>\n{body}\n</body></html>\n"
    )
