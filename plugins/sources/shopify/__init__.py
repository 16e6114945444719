"""The Shopify source: a shop's signed webhooks as events, personal discount codes made in the
shop, and the privacy webhooks every Shopify app must answer.

Configured under `sources.shopify`:

```yaml
sources:
  shopify:
    secret: ${SHOPIFY_SECRET}          # the app's API secret key: Shopify signs webhooks with it
    shop: my-shop.myshopify.com        # the shop's own domain
    admin_token: ${SHOPIFY_TOKEN}      # Admin API access token (setup, discount codes)
    admin_api_base: https://my-shop.myshopify.com   # the default; a local server in tests
    api_version: 2025-01               # the Admin API version
    timeout: 10                        # seconds an Admin API call may take
```

The modules: `settings` (the config section), `payloads` (topics to events, pure),
`webhooks` (`ShopifySource`: the endpoint, privacy requests, `setup`, `read_export`),
`admin_api` (the REST client), `promo` (`ShopifyPromoProvider`); this one registers them.
"""

from __future__ import annotations

import weakref

from boomerang import hookimpl
from boomerang.kinds import PromoProvider, Source
from boomerang.plugin_api import Config, ProblemError
from boomerang.plugins.sources.shopify.admin_api import AdminApi, AdminApiError
from boomerang.plugins.sources.shopify.promo import ShopifyPromoProvider
from boomerang.plugins.sources.shopify.settings import ShopifySettings, read_settings
from boomerang.plugins.sources.shopify.webhooks import ShopifySource

__all__ = [
    "AdminApi",
    "AdminApiError",
    "ShopifyPromoProvider",
    "ShopifySettings",
    "ShopifySource",
    "register_promo_providers",
    "register_sources",
]

# registration: the source and the promo provider of one configuration share one AdminApi
_apis: dict[int, AdminApi] = {}


def _api_for(config: Config) -> AdminApi:
    """The Admin API client of this configuration, made by whichever registration comes first."""
    key = id(config)
    api = _apis.get(key)
    if api is None:
        api = _apis[key] = AdminApi(read_settings(config))
        weakref.finalize(config, _apis.pop, key, None)
    return api


@hookimpl
def register_sources(config: Config) -> list[Source]:
    """The Shopify webhooks, when `sources.shopify` is configured."""
    if "shopify" not in config.sources:
        return []
    api = _api_for(config)
    return [ShopifySource(api.settings, api, config.ingest_window)]


@hookimpl
def register_promo_providers(config: Config) -> list[PromoProvider]:
    """`promo: {provider: shopify, ...}`, when `sources.shopify` is configured."""
    if "shopify" not in config.sources:
        return []
    try:
        return [ShopifyPromoProvider(_api_for(config))]
    except ProblemError:
        return []  # the source's registration reports the problems, once
