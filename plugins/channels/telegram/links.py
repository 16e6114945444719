"""Deep links: `https://t.me/<bot>?start=<token>` links the chat that presses Start to a
customer; `telegram_link()` makes one in templates."""

from __future__ import annotations

from typing import TYPE_CHECKING

from jinja2 import pass_context

from boomerang.plugin_api import SEALED_OVERHEAD, Config, seal, unseal

if TYPE_CHECKING:
    from jinja2.runtime import Context

MAX_START_PARAMETER = 64  # Telegram's limit for ?start=..., characters A-Z a-z 0-9 _ -
MAX_LINKED_ID = MAX_START_PARAMETER * 3 // 4 - SEALED_OVERHEAD  # bytes of customer id in a deep link


def link_parameter(secret: str, customer_id: str) -> str:
    """The `start` parameter that links a chat to `customer_id`: a sealed token (core/tokens.py).

    It is already in Telegram's alphabet; raises ValueError when the id makes it longer than
    Telegram's 64 characters.
    """
    parameter = seal(secret, "telegram", customer_id)
    if len(parameter) > MAX_START_PARAMETER:
        raise ValueError(
            f"customer id '{customer_id}' is too long for a Telegram deep link "
            f"(at most {MAX_LINKED_ID} bytes, or a UUID)"
        )
    return parameter


def read_link_parameter(secret: str, parameter: str) -> str | None:
    """The customer id of a genuine `start` parameter made within the last 7 days, or None."""
    if len(parameter) > MAX_START_PARAMETER:
        return None
    return unseal(secret, "telegram", parameter)


def deep_link(config: Config, customer_id: str) -> str:
    """`https://t.me/<bot_username>?start=<token>`: opening it and pressing Start links the chat.

    Needs `secret` and `channels.telegram.bot_username` in the config; raises ValueError otherwise.
    """
    raw = config.channels.get("telegram")
    if raw is None:
        raise ValueError("the telegram channel is not configured (channels.telegram)")
    return _deep_link(config.secret, str(raw.get("bot_username") or ""), str(customer_id))


def _deep_link(secret: str | None, bot_username: str | None, customer_id: str) -> str:
    username = (bot_username or "").strip().lstrip("@")
    if not username:
        raise ValueError("a Telegram deep link needs channels.telegram.bot_username")
    if not secret:
        raise ValueError("a Telegram deep link needs 'secret' in the config to sign it")
    if not customer_id:
        raise ValueError("a Telegram deep link needs a customer id")
    return f"https://t.me/{username}?start={link_parameter(secret, customer_id)}"


# The configuration loaded last, for `telegram_link()` in templates: `register_conditions`
# is given no config, so the channel's registration leaves what links need here.
_linking: dict[str, str | None] = {}


def remember_linking(secret: str | None, bot_username: str | None) -> None:
    """Keep what `telegram_link()` needs from the configuration the channel was made for."""
    _linking.update(secret=secret, bot_username=bot_username)


@pass_context
def telegram_link(context: Context, customer_id: str | None = None) -> str:
    """In templates: the deep link for `customer_id`, by default the customer the message is for."""
    if customer_id is None:
        customer = context.get("customer") or {}
        customer_id = customer.get("id") if isinstance(customer, dict) else None
    if "bot_username" not in _linking:
        raise ValueError("telegram_link(): the telegram channel is not configured")
    return _deep_link(_linking.get("secret"), _linking.get("bot_username"), str(customer_id or ""))
