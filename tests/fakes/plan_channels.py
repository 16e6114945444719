"""A drop-in plugin for the contact-plan tests: plain `sms`, `push` and `telegram` channels.

`tests/test_contact_plan.py` copies this file into a project's `plugins/` folder (with the
built-in plugins of the same names disabled), so multi-channel behaviour can be tested
whether or not the real channel plugins are installed. A channel is registered only when it
is configured under `channels:`; `receipts: true` there makes it one that reports delivery.
"""

from __future__ import annotations

from typing import Any

from boomerang import hookimpl
from boomerang.kinds import Channel
from boomerang.model import Customer, Delivery, DeliveryStatus, Message

NAMES = ("sms", "push", "telegram")
# The templates' front matter of the real channels these stand for.
FRONT_MATTER = {
    "sms": {},
    "push": {"title": str, "url": str, "icon": str},
    "telegram": {"button": str, "url": str},
}


class PlanChannel(Channel):
    """Finds the customer's address like the real channel would; sends nothing anywhere."""

    extensions = ("html", "txt")

    def __init__(self, name: str, settings: dict[str, Any]):
        self.name = name
        self.receipts = bool(settings.get("receipts"))

    def address(self, customer: Customer) -> str | None:
        if self.name == "sms":
            return customer.phone
        if self.name == "push":
            subscriptions = customer.push_subscriptions or []
            return subscriptions[0]["endpoint"] if subscriptions else None
        return customer.telegram_chat_id

    async def send(self, message: Message) -> Delivery:
        return Delivery(DeliveryStatus.SENT, detail="plan test channel", provider_id=message.id)


@hookimpl
def register_channel_kinds() -> list[type[Channel]]:
    return [
        type(f"Plan{name.title()}", (PlanChannel,), {"name": name, "front_matter": FRONT_MATTER[name]})
        for name in NAMES
    ]


@hookimpl
def register_channels(config: Any) -> list[Channel]:
    return [PlanChannel(name, dict(config.channels[name] or {})) for name in NAMES if name in config.channels]
