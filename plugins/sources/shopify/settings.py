"""`sources.shopify`: its settings, validated with their positions in the config."""

from __future__ import annotations

import re
from dataclasses import dataclass

from boomerang.plugin_api import Config, SettingsCheck

SETTINGS = ("secret", "shop", "admin_token", "admin_api_base", "api_version", "timeout")
# A stable version of the Admin API (Shopify supports each for a year); override with api_version.
DEFAULT_API_VERSION = "2025-01"

_SHOP = re.compile(r"^[a-z0-9][a-z0-9-]*\.myshopify\.com$")
_VERSION = re.compile(r"^\d{4}-(01|04|07|10)$")


@dataclass(frozen=True)
class ShopifySettings:
    """`sources.shopify`, validated, with the installation's public URL for the webhooks."""

    secret: str
    shop: str
    admin_token: str | None = None
    admin_api_base: str = ""
    api_version: str = DEFAULT_API_VERSION
    timeout: float = 10.0
    public_url: str = ""

    @property
    def admin_api(self) -> str:
        """The Admin API's REST root: `<admin_api_base>/admin/api/<version>`."""
        return f"{self.admin_api_base}/admin/api/{self.api_version}"


def read_settings(config: Config) -> ShopifySettings:
    """Validate `sources.shopify`; raises `ProblemError` pointing at every wrong setting."""
    check = SettingsCheck(config, "sources", "shopify", SETTINGS)
    raw = check.settings
    problem = check.problem
    text = check.text

    secret = text("secret")
    if secret is None:
        problem("secret", "'secret' is required: the app's API secret key, which signs Shopify's webhooks")
    shop = (text("shop") or "").lower()
    if not shop:
        problem("shop", "'shop' is required: the shop's own domain, such as my-shop.myshopify.com")
    elif not _SHOP.match(shop):
        problem("shop", f"'shop': '{shop}' is not a shop domain such as my-shop.myshopify.com")
    admin_api_base = text("admin_api_base") or f"https://{shop}"
    if not re.match(r"^https?://[^/\s]+", admin_api_base):
        problem(
            "admin_api_base",
            f"'admin_api_base': '{admin_api_base}' is not an http(s) URL such as https://my-shop.myshopify.com",
        )
    version = text("api_version") or DEFAULT_API_VERSION
    if not _VERSION.match(version):
        problem(
            "api_version", f"'api_version': '{version}' is not an Admin API version such as 2025-01"
        )
    timeout = raw.get("timeout", 10)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 60:
        problem("timeout", "'timeout' is the seconds an Admin API call may take: a number from 1 to 60")
        timeout = 10
    check.done()
    assert secret is not None
    return ShopifySettings(
        secret=secret,
        shop=shop,
        admin_token=text("admin_token"),
        admin_api_base=admin_api_base.rstrip("/"),
        api_version=version,
        timeout=float(timeout),
        public_url=config.public_url,
    )
