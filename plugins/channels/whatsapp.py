"""The WhatsApp channel, through Twilio's Messages API with `whatsapp:` addresses.

Configured under `channels.whatsapp` with the same settings as `channels.sms` (see
`boomerang.plugins.channels.twilio_messages`), but `from` is a WhatsApp sender: "whatsapp:+15550001111".
A customer's address is their `whatsapp` number, else their `phone`, in E.164.

Outside WhatsApp's 24-hour customer service window only approved templates may be sent:
a template's front matter names one with `content_sid`, and `variables` (a mapping such as
`{1: "{{ customer.name }}"}`, or a list for 1, 2, 3...) are rendered per message and sent as
`content_variables`; the body is then not sent. Status callbacks arrive at
`POST /callbacks/whatsapp`; `read` becomes `message.opened`. As for SMS, each message carries
its idempotency key as `I-Twilio-Idempotency-Token`.
"""

from __future__ import annotations

import json
from types import MappingProxyType
from typing import Any

from boomerang import hookimpl
from boomerang.kinds import Channel
from boomerang.plugin_api import Config, Customer, Message, e164
from boomerang.plugins.channels.twilio_messages import TwilioChannel, validate

PREFIX = "whatsapp:"


class WhatsAppChannel(TwilioChannel):
    """WhatsApp through Twilio: free text, or an approved template by its content SID."""

    name = "whatsapp"
    front_matter = MappingProxyType({"content_sid": str, "variables": (dict, list)})
    address_fields = ("whatsapp", "phone")  # the WhatsApp number, else the phone
    prefix = PREFIX

    def address(self, customer: Customer) -> str | None:
        """`whatsapp:` and the customer's WhatsApp number, else their phone, in E.164."""
        number = e164(customer.whatsapp) or e164(customer.phone)
        return f"{PREFIX}{number}" if number else None

    def parameters(self, message: Message) -> dict[str, Any]:
        """The body, or `content_sid` and `content_variables` when the template names one."""
        parameters = super().parameters(message)
        content_sid = message.extra.get("content_sid")
        if content_sid:
            del parameters["body"]
            parameters["content_sid"] = str(content_sid)
            variables = content_variables(message.extra.get("variables"))
            if variables:
                parameters["content_variables"] = json.dumps(variables, ensure_ascii=False)
        return parameters

    def describe(self, message: Message) -> list[str]:
        """For `preview`: whether an approved template (and which variables) or the text is sent."""
        content_sid = message.extra.get("content_sid")
        if not content_sid:
            return [
                "note: sent as free text: WhatsApp delivers it only within 24 hours of the customer's "
                "last message; name an approved template with content_sid for anything else"
            ]
        try:
            variables = json.dumps(content_variables(message.extra.get("variables")), ensure_ascii=False)
        except ValueError as exc:
            return [f"note: cannot be sent: {exc}"]
        return [
            f"note: sent as the approved template {content_sid} with content variables {variables}; "
            "the text above is not sent"
        ]


def content_variables(variables: Any) -> dict[str, str]:
    """Twilio's `content_variables`: placeholder names ("1", "2"...) to text.

    A list stands for the placeholders 1, 2, 3... in order; raises ValueError for anything
    that is neither a mapping nor a list.
    """
    if variables is None:
        return {}
    if isinstance(variables, list):
        return {str(index): _text(value) for index, value in enumerate(variables, start=1)}
    if isinstance(variables, dict):
        return {str(key): _text(value) for key, value in variables.items()}
    raise ValueError("the template's 'variables' must be a mapping such as {1: \"{{ customer.name }}\"}")


def _text(value: Any) -> str:
    return "" if value is None else str(value)


@hookimpl
def register_channels(config: Config) -> list[Channel]:
    """The WhatsApp channel, when `channels.whatsapp` is configured."""
    if "whatsapp" not in config.channels:
        return []
    return [WhatsAppChannel(validate(config, "whatsapp"), config.public_url)]


@hookimpl
def register_channel_kinds() -> list[type[Channel]]:
    """WhatsApp's templates and front matter, known whether or not it is configured."""
    return [WhatsAppChannel]
