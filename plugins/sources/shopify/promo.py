"""`promo: {provider: shopify, percent: 10, expires: 48h}`: a real discount code in the shop,
made through the Admin API as a price rule (the discount) and its one discount code.

The code is for one use; it is limited to the customer when Boomerang knows their Shopify
customer id (`shopify:<id>`), and ends when the step's `expires` says. A refusal raises
`AdminApiError` with what to fix, and the send is retried later like any failed send.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from boomerang.kinds import PromoProvider
from boomerang.plugin_api import PROMO_ALPHABET, Customer
from boomerang.plugins.sources.shopify.admin_api import AdminApi, AdminApiError

CODE_PREFIX = "BACK"


class ShopifyPromoProvider(PromoProvider):
    """Personal one-use discount codes created in the shop."""

    name = "shopify"

    def __init__(self, api: AdminApi):
        self.api = api

    async def issue(self, customer: Customer, spec: dict[str, Any]) -> str:
        """Create a price rule and its code for this customer, as the step's `promo:` says."""
        code = f"{CODE_PREFIX}-{''.join(secrets.choice(PROMO_ALPHABET) for _ in range(8))}"
        answer = await self.api.call(
            "POST", "price_rules.json", {"price_rule": price_rule(spec, customer, code, datetime.now(UTC))}
        )
        rule = answer.get("price_rule")
        rule_id = rule.get("id") if isinstance(rule, dict) else None
        if not isinstance(rule_id, int) or isinstance(rule_id, bool):
            raise AdminApiError(200, "the Admin API made a price rule but gave no id for it")
        answer = await self.api.call(
            "POST", f"price_rules/{rule_id}/discount_codes.json", {"discount_code": {"code": code}}
        )
        made = answer.get("discount_code")
        if not isinstance(made, dict) or made.get("code") != code:
            raise AdminApiError(200, f"the Admin API did not make the discount code of price rule {rule_id}")
        return code


def price_rule(spec: dict[str, Any], customer: Customer, code: str, now: datetime) -> dict[str, Any]:
    """The `price_rule` object for a step's `promo:` (`percent` or `amount`, `expires` in
    seconds as the engine stores it)."""
    percent, amount = spec.get("percent"), spec.get("amount")
    if _positive(percent) and percent <= 100:
        value_type, value = "percentage", f"-{float(percent):g}"
    elif _positive(amount):
        value_type, value = "fixed_amount", f"-{float(amount):.2f}"
    else:
        raise AdminApiError(0, "a shopify promo needs 'percent' (1 to 100) or 'amount' (a positive number)")
    rule: dict[str, Any] = {
        "title": f"Boomerang {code}",
        "target_type": "line_item",
        "target_selection": "all",
        "allocation_method": "across",
        "value_type": value_type,
        "value": value,
        "customer_selection": "all",
        "once_per_customer": True,
        "usage_limit": 1,
        "starts_at": now.isoformat(timespec="seconds"),
    }
    expires = spec.get("expires")
    if _positive(expires):
        rule["ends_at"] = (now + timedelta(seconds=float(expires))).isoformat(timespec="seconds")
    shopify_id = customer.id.removeprefix("shopify:")
    if customer.id.startswith("shopify:") and shopify_id.isdigit():
        rule["customer_selection"] = "prerequisite"
        rule["prerequisite_customer_ids"] = [int(shopify_id)]
    return rule


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0
