"""`boomerang init`: a new project that runs at once, with no credentials.

The reference scenarios and templates shipped in the package are copied in; the config
writes messages to `outbox/` instead of sending them, configures every built-in channel (with
placeholder credentials, which the outbox never hands to a provider, and a fresh VAPID key for
push), and gets fresh random secrets as defaults that the environment overrides. `events.jsonl`
holds a few customers' events for `boomerang simulate`, one per channel the plan can choose.
"""

from __future__ import annotations

import json
import secrets
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from boomerang.private_files import write_private

CONFIG_TEMPLATE = """\
# Boomerang configuration. Every ${{VAR}} comes from the environment; ${{VAR:-x}} gives a
# default. The random defaults below make this demo run at once: in production set
# BOOMERANG_SECRET, BOOMERANG_API_TOKEN and BOOMERANG_ADMIN_TOKEN in the environment instead.
database: ./boomerang.db
listen:
  host: 127.0.0.1
  port: ${{BOOMERANG_PORT:-8080}}
# The base of the links in messages; empty, it is http://<listen host>:<port>, following
# BOOMERANG_PORT. Behind a proxy set BOOMERANG_PUBLIC_URL, e.g. https://track.shop.example
public_url: ${{BOOMERANG_PUBLIC_URL:-}}
secret: ${{BOOMERANG_SECRET:-{secret}}}
api_token: ${{BOOMERANG_API_TOKEN:-{api_token}}}
# GET /report, the web report of `boomerang report`: a bearer token or the login form's password.
admin_token: ${{BOOMERANG_ADMIN_TOKEN:-{admin_token}}}
scenarios: ./scenarios
templates: ./templates
plugin_dirs: [./plugins]
default_locale: en
log_level: info

# Every channel renders as usual but writes its messages here instead of sending them.
# Remove this line (and give the channels real credentials) to send for real.
outbox: ./outbox

# The credentials below are placeholders: in outbox mode nothing reaches a provider.
channels:
  email: {{host: 127.0.0.1, port: 25, from: "Demo Shop <shop@example.com>"}}
  sms: {{account_sid: AC00000000000000000000000000000000, auth_token: demo, from: "+15550001111"}}
  whatsapp: {{account_sid: AC00000000000000000000000000000000, auth_token: demo,
             from: "whatsapp:+15550001111"}}
  push: {{vapid_private_key: ./vapid.pem, subject: "mailto:shop@example.com"}}
  telegram: {{token: "123456789:demo", bot_username: DemoShopBot,
             webhook_secret: ${{TELEGRAM_WEBHOOK_SECRET:-{webhook_secret}}}}}

# Personal codes for `promo: {{provider: local}}` steps (the cart and reactivation offers),
# made and kept here; an order that names one redeems it. `boomerang promo export` lists
# them as CSV.
promo_providers:
  local: {{prefix: BMR}}

# `boomerang report` and /report: how long after a click, an open or a delivery an order is
# still the message's doing, and the shop's currency.
report:
  currency: EUR
  attribution: {{click: 5d, open: 1d, delivery: 1d}}

# What recommendations(strategy='cross_sell') suggests for a category bought or in the cart.
recommendations:
  cross_sell: {{bicycles: [tyres, helmets, locks], helmets: [lights]}}

contact_plan:
  default_timezone: Europe/Moscow
"""


_CART = {
    "url": "https://shop.example/cart",
    "total": 79.9,
    "currency": "EUR",
    "items": [{"sku": "B-1", "name": "Bicycle", "price": 79.9, "qty": 1, "url": "https://shop.example/p/b-1"}],
}
_ORDER = {
    "id": "1001",
    "total": 79.9,
    "currency": "EUR",
    "items": [{"sku": "B-1", "name": "Bicycle", "price": 79.9, "qty": 1, "url": "https://shop.example/p/b-1"}],
    "tracking_url": "https://shop.example/track/1001",
    "courier_phone": "+15550002222",
}
# A browser's subscription at Chrome's push service; the outbox never pushes to it.
_SUBSCRIPTION = {
    "endpoint": "https://fcm.googleapis.com/fcm/send/demo-subscription",
    "keys": {
        "p256dh": "BICnGJnlgHHX07UJVIDssmhbivz2mj6rTO-yurIfrqGapQ20KpRm3wg9QRGskKyHSyzYqgDsk8Ou_FWr5O6CxFM",
        "auth": "U7oITK2HrsQTHBYbIA-zgw",
    },
}
# `events.jsonl`: one customer per channel the plan can choose (by the addresses they have).
DEMO_EVENTS = [
    {
        "id": "evt-1",
        "type": "cart.updated",
        "at": "2026-03-02T10:00:00Z",
        "customer": {"id": "c-42", "email": "anna@example.com", "locale": "ru"},
        "data": {"cart": _CART},
    },
    {
        "id": "evt-2",
        "type": "cart.updated",
        "at": "2026-03-02T10:05:00Z",
        "customer": {
            "id": "c-43",
            "email": "hanna@example.com",
            "locale": "uk",
            "push_subscriptions": [_SUBSCRIPTION],
        },
        "data": {"cart": _CART},
    },
    {
        "id": "evt-3",
        "type": "cart.updated",
        "at": "2026-03-02T10:10:00Z",
        "customer": {"id": "c-44", "email": "vera@example.com", "phone": "+15550003333", "locale": "en"},
        "data": {"cart": _CART},
    },
    {
        "id": "evt-4",
        "type": "order.shipped",
        "at": "2026-03-02T11:00:00Z",
        "customer": {
            "id": "c-45",
            "email": "boris@example.com",
            "telegram_chat_id": "100200300",
            "locale": "ru",
        },
        "data": {"order": _ORDER},
    },
]


def create_project(directory: Path) -> list[Path]:
    """Write a new project into `directory`; raises FileExistsError if one is already there."""
    config = directory / "boomerang.yaml"
    if config.exists():
        raise FileExistsError(f"{config} already exists")
    directory.mkdir(parents=True, exist_ok=True)
    created = [config]
    # The config holds the secret and the API token: 0600 whatever the umask.
    text = CONFIG_TEMPLATE.format(
        secret=secrets.token_hex(32),
        api_token=secrets.token_urlsafe(32),
        admin_token=secrets.token_urlsafe(32),
        webhook_secret=secrets.token_urlsafe(32),
    )
    write_private(config, text.encode("utf-8"))
    created.append(directory / "vapid.pem")
    write_private(created[-1], _vapid_key())
    created.append(directory / "events.jsonl")
    lines = "".join(json.dumps(event, ensure_ascii=False) + "\n" for event in DEMO_EVENTS)
    created[-1].write_text(lines, encoding="utf-8")
    for name in ("scenarios", "templates"):
        created += _copy_tree(resources.files("boomerang.examples") / name, directory / name)
    (directory / "plugins").mkdir(exist_ok=True)
    created.append(directory / "plugins")
    return created


def _vapid_key() -> bytes:
    """A new P-256 private key in PEM for the push channel's VAPID signatures, as
    `boomerang webpush-keys` writes it."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _copy_tree(source: Traversable, target: Path) -> list[Path]:
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for entry in sorted(source.iterdir(), key=lambda e: e.name):
        if entry.name.startswith(("_", ".")):
            continue
        if entry.is_dir():
            written += _copy_tree(entry, target / entry.name)
        else:
            (target / entry.name).write_bytes(entry.read_bytes())
            written.append(target / entry.name)
    return written
