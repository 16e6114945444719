"""`channels.telegram`: its settings, validated with their positions in the config."""

from __future__ import annotations

import re
from dataclasses import dataclass

from boomerang.plugin_api import Config, SettingsCheck, did_you_mean

SETTINGS = ("token", "api_base", "bot_username", "webhook_secret", "mode", "per_second")
MODES = ("webhook", "polling")
DEFAULT_API_BASE = "https://api.telegram.org"
MESSAGES_PER_SECOND = 25.0  # the bot's messages in all, below Telegram's ~30/s

_TOKEN = re.compile(r"^\d+:[A-Za-z0-9_-]+$")
_USERNAME = re.compile(r"^@?[A-Za-z][A-Za-z0-9_]{3,31}$")
_WEBHOOK_SECRET = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


@dataclass(frozen=True)
class TelegramSettings:
    """`channels.telegram`, validated, with the installation's `secret` for link tokens."""

    token: str
    api_base: str = DEFAULT_API_BASE
    bot_username: str | None = None
    webhook_secret: str | None = None
    mode: str = "webhook"
    per_second: float = MESSAGES_PER_SECOND
    secret: str | None = None
    default_locale: str = "en"
    outbox: bool = False  # messages go to the outbox: the bot's own replies are not sent either


def read_settings(config: Config) -> TelegramSettings:
    """Validate `channels.telegram`; raises `ProblemError` pointing at every wrong setting."""
    check = SettingsCheck(config, "channels", "telegram", SETTINGS)
    problem = check.problem
    text = check.text

    token = text("token")
    if token is None:
        problem("token", "'token' is required: the bot token from @BotFather")
    elif not _TOKEN.match(token):
        problem("token", "'token' does not look like a bot token from @BotFather (123456789:AAE...)")
    api_base = text("api_base") or DEFAULT_API_BASE
    if not re.match(r"^https?://[^/\s]+", api_base):
        problem("api_base", f"'api_base': '{api_base}' is not an http(s) URL such as {DEFAULT_API_BASE}")
    username = text("bot_username")
    if username is not None and not _USERNAME.match(username):
        problem("bot_username", f"'bot_username': '{username}' is not a Telegram username such as ShopBot")
    webhook_secret = text("webhook_secret")
    if webhook_secret is not None and not _WEBHOOK_SECRET.match(webhook_secret):
        problem(
            "webhook_secret",
            "'webhook_secret' must be 1 to 256 characters of A-Z, a-z, 0-9, _ and - (Telegram's rule)",
        )
    mode = (text("mode") or "webhook").lower()
    if mode not in MODES:
        problem("mode", f"'mode': '{mode}' is not one of {', '.join(MODES)}{did_you_mean(mode, MODES)}")
    per_second = check.positive_number("per_second") or MESSAGES_PER_SECOND
    check.done()
    assert token is not None
    return TelegramSettings(
        token=token,
        api_base=api_base.rstrip("/"),
        bot_username=username.lstrip("@") if username else None,
        webhook_secret=webhook_secret,
        mode=mode,
        per_second=per_second,
        secret=config.secret,
        default_locale=config.default_locale,
        outbox=config.outbox is not None,
    )
