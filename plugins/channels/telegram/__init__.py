"""The Telegram channel: messages through the Bot API, chats linked to customers by deep links.

Configured under `channels.telegram`:

```yaml
channels:
  telegram:
    token: ${TELEGRAM_TOKEN}               # from @BotFather
    api_base: https://api.telegram.org     # the Bot API server (a local one in tests)
    bot_username: ShopBot                  # for deep links https://t.me/ShopBot?start=...
    webhook_secret: ${TELEGRAM_WEBHOOK_SECRET}   # checked on POST /hooks/telegram
    mode: webhook                          # or polling: getUpdates, no public URL needed
    per_second: 25                         # the bot's messages a second in all, across daemons
```

Sending: `sendMessage` with `parse_mode: HTML`. Telegram accepts only a few tags, so the
template's HTML is converted: paragraphs, lists and line breaks become text and newlines,
headings bold, links stay links, anything else keeps only its text. The front matter's `button`
and `url` become an inline keyboard button. At most about 25 messages a second go out in all,
and at most one a second to any one chat; the first limit (`per_second`) is a token bucket shared
by every daemon on the database (`RateLimits`), whose token a message takes before it is marked
`sending` (`pace`; a message whose turn is further off waits `pending`); the second holds per
daemon. The Bot API takes no
idempotency key: a message sent again after a crash (transactional only) arrives twice.

Linking: `deep_link(config, customer_id)` (in templates `telegram_link()`) gives
`https://t.me/<bot_username>?start=<token>`, a sealed token (core/tokens.py) that reveals no id
and expires after 7 days. When the customer opens it and presses Start, the bot gets `/start
<token>`: a `customer.updated` event links the chat to the customer and the bot says hello.
Whoever holds a link can use it, so what it claims is limited: the chat moves to that customer
(away from any other customer it was linked to), two customers are never merged, and a customer
whose own chat still works keeps it (the new chat is told so). Later text from a linked chat
becomes a `message.replied` event, so a scenario can hand the dialogue to a person (seed S1).
Updates arrive on `POST /hooks/telegram` (mode `webhook`; register it once with the Bot API's
`setWebhook`, giving `secret_token`) or by long polling `getUpdates` (mode `polling`).

The modules: `settings` (the config section), `bot_api` (the client and rate limits), `markup`
(HTML for Telegram), `links` (deep links), `channel` (sending), `updates` (the webhook and
what an update means), `polling` (getUpdates); this one registers them.
"""

from __future__ import annotations

import weakref
from typing import Any

from boomerang import hookimpl
from boomerang.kinds import Channel, Source
from boomerang.plugin_api import Config, ProblemError, RateLimits
from boomerang.plugins.channels.telegram.bot_api import BotApi
from boomerang.plugins.channels.telegram.channel import TelegramChannel
from boomerang.plugins.channels.telegram.links import (
    deep_link,
    link_parameter,
    read_link_parameter,
    remember_linking,
    telegram_link,
)
from boomerang.plugins.channels.telegram.markup import telegram_html
from boomerang.plugins.channels.telegram.settings import read_settings
from boomerang.plugins.channels.telegram.updates import TelegramSource

__all__ = [
    "TelegramChannel",
    "TelegramSource",
    "deep_link",
    "link_parameter",
    "read_link_parameter",
    "register_channels",
    "register_conditions",
    "register_sources",
    "telegram_html",
]

# registration: the channel and the source of one configuration share one BotApi
_bots: dict[int, BotApi] = {}


def _bot_for(config: Config, rate_limits: RateLimits) -> BotApi:
    """The Bot API client of this configuration, made by whichever registration comes first."""
    key = id(config)
    bot = _bots.get(key)
    if bot is None:
        bot = _bots[key] = BotApi(read_settings(config), rate_limits)
        weakref.finalize(config, _bots.pop, key, None)
    return bot


@hookimpl
def register_channels(config: Config, rate_limits: RateLimits) -> list[Channel]:
    """The Telegram channel, when `channels.telegram` is configured."""
    if "telegram" not in config.channels:
        return []
    bot = _bot_for(config, rate_limits)
    remember_linking(bot.settings.secret, bot.settings.bot_username)
    return [TelegramChannel(bot)]


@hookimpl
def register_channel_kinds() -> list[type[Channel]]:
    """Telegram's templates and front matter, known whether or not it is configured."""
    return [TelegramChannel]


@hookimpl
def register_sources(config: Config, rate_limits: RateLimits) -> list[Source]:
    """The bot's updates (webhook or polling), when `channels.telegram` is configured."""
    if "telegram" not in config.channels:
        return []
    try:
        bot = _bot_for(config, rate_limits)
    except ProblemError:
        return []  # the channel's registration reports the problems, once
    return [TelegramSource(bot.settings, bot)]


@hookimpl
def register_conditions() -> dict[str, Any]:
    """`telegram_link()` for templates: the deep link that links a customer's chat."""
    return {"telegram_link": telegram_link}
