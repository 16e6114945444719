"""The `webhook` action: a scenario step's `with:` arguments POSTed as JSON to another system
(a CRM Boomerang has no plugin for, a help desk, a staff chat bot), signed.

```yaml
actions:
  webhook:
    url: https://crm.example/hooks/boomerang
    secret: ${CRM_WEBHOOK_SECRET}      # at least 16 characters
    timeout: 10                        # seconds; the default
```

```yaml
steps:
  - action: webhook
    with: {task: call, id: "{{ journey.id }}-call", customer: "{{ customer.id }}",
           phone: "{{ customer.phone }}"}
```

The body is the JSON object of the arguments; `X-Boomerang-Signature: sha256=<hex>` is the hex
HMAC-SHA256 of that raw body with `secret` (the header the 1C-Bitrix module signs with), for
the receiver to check in constant time. A 2xx answer is success. A 408, 425, 429, a 5xx, a
timeout or a refused connection fails the step for now: it is tried again under the retry
policy (six attempts over about a quarter of an hour), so the receiver may get one request
more than once; pass an id in `with:` (`{{ journey.id }}` and a step name) to recognise it.
Any other answer fails it for good.
"""

from __future__ import annotations

import json
import re
from typing import Any

from boomerang import hookimpl
from boomerang.kinds import Action, ActionFailed
from boomerang.plugin_api import Config, SettingsCheck
from boomerang.plugins.sources.signed_hooks import hmac_sha256

SETTINGS = ("url", "secret", "timeout")
SIGNATURE_HEADER = "X-Boomerang-Signature"
RETRY_STATUSES = frozenset((408, 425, 429))


class WebhookAction:
    """POST the arguments, signed, to one configured URL."""

    def __init__(self, url: str, secret: str, timeout: float = 10.0):
        self.url = url
        self.secret = secret
        self.timeout = timeout

    async def run(self, **arguments: Any) -> dict[str, Any]:
        """Send the arguments; returns the receiver's HTTP status."""
        import aiohttp

        body = json.dumps(arguments, ensure_ascii=False, sort_keys=True, default=str).encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: "sha256=" + hmac_sha256(self.secret, body).hex(),
        }
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as session,
                session.post(self.url, data=body, headers=headers) as response,
            ):
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ActionFailed(f"{self.url} cannot be reached ({exc or type(exc).__name__})") from None
        if 200 <= status < 300:
            return {"status": status}
        retry = status >= 500 or status in RETRY_STATUSES
        raise ActionFailed(f"{self.url} answered {status}", retry=retry)


def read_settings(config: Config) -> WebhookAction:
    """Validate `actions.webhook`; raises `ProblemError` pointing at every wrong setting."""
    check = SettingsCheck(config, "actions", "webhook", SETTINGS)
    raw = check.settings
    url = raw.get("url")
    if not isinstance(url, str) or not re.match(r"^https?://[^/\s]+", url.strip()):
        check.problem("url", "'url' is required: the http(s) address the action posts to")
    secret = raw.get("secret")
    if isinstance(secret, bool) or not isinstance(secret, str | int) or len(str(secret).strip()) < 16:
        check.problem("secret", "'secret' is required: at least 16 characters, to sign each request")
    timeout = raw.get("timeout", 10)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 120:
        check.problem("timeout", "'timeout' must be seconds above 0, at most 120")
    check.done()
    assert isinstance(url, str)
    return WebhookAction(url.strip(), str(secret).strip(), float(timeout))


@hookimpl
def register_actions(config: Config) -> list[Action]:
    """The `webhook` action, when `actions.webhook` is configured."""
    if "webhook" not in config.actions:
        return []
    action = read_settings(config)
    return [Action("webhook", action.run, "POST the arguments as signed JSON to actions.webhook.url")]
