"""`sources.bitrix24`: its settings, validated with their positions in the config; read by the
Bitrix24 source and by the `bitrix.*` actions, which call the same portal."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from boomerang.plugin_api import Config, SettingsCheck
from boomerang.plugins.sources.signed_hooks import order_event_mapping

SETTINGS = ("rest_url", "application_token", "stages", "requests_per_second")
_REST_URL = re.compile(r"^https?://[^/\s]+/rest/\d+/[^/\s]+/?$")


@dataclass(frozen=True)
class Bitrix24Settings:
    """`sources.bitrix24`, validated; `pending` is the folder of records waiting to be fetched."""

    rest_url: str
    pending: Path
    application_token: str | None = None
    stages: dict[str, tuple[str, ...]] = field(default_factory=dict)
    requests_per_second: float = 2.0


def read_settings(config: Config) -> Bitrix24Settings:
    """Validate `sources.bitrix24`; raises `ProblemError` pointing at every wrong setting."""
    check = SettingsCheck(config, "sources", "bitrix24", SETTINGS)
    raw = check.settings
    rest_url = raw.get("rest_url")
    if not isinstance(rest_url, str) or not _REST_URL.match(rest_url.strip()):
        check.problem(
            "rest_url",
            "'rest_url' is required: the inbound webhook URL Bitrix24 gives, such as "
            "https://x.bitrix24.ru/rest/1/abc123/",
        )
    token = raw.get("application_token")
    if token is not None and (
        isinstance(token, bool) or not isinstance(token, str | int) or not str(token).strip()
    ):
        check.problem("application_token", "'application_token' must be the outbound webhook's token (text)")
    stages = order_event_mapping(check, "stages", "{WON: order.paid}")
    rate = raw.get("requests_per_second", 2)
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate <= 50:
        check.problem("requests_per_second", "'requests_per_second' must be a number above 0, at most 50")
    check.done()
    assert isinstance(rest_url, str)
    rest_url = rest_url.strip()
    return Bitrix24Settings(
        rest_url=rest_url if rest_url.endswith("/") else rest_url + "/",
        pending=config.state_folder / "bitrix24-pending",
        application_token=str(token).strip() if token is not None else None,
        stages=stages,
        requests_per_second=float(rate),
    )
