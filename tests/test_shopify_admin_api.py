"""The Shopify source's Admin API calls, against a local stand-in speaking the REST Admin API
(tests/fakes/shopify_admin.py): webhook subscriptions (`boomerang sources setup shopify`, run
twice), discount codes for `promo: {provider: shopify}` (through the daemon and alone), and how
refusals, throttling and timeouts are told. Also `read_export`, the order records of an export."""

from __future__ import annotations

import asyncio
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_source_shopify import admin, configure, deliver

from boomerang.cli import cli
from boomerang.ingest import EventError
from boomerang.model import Customer
from boomerang.plugins.sources.shopify import AdminApi, AdminApiError, ShopifyPromoProvider, ShopifySource
from boomerang.plugins.sources.shopify.payloads import TOPICS
from boomerang.plugins.sources.shopify.settings import ShopifySettings
from boomerang.store import Store
from conftest import running, wait_for
from fakes import shopify_payloads as shopify
from fakes.shopify_admin import ADMIN_TOKEN, FakeAdminApi

__all__ = ["admin"]  # the fixture, used here by name


def settings(base: str, token: str = ADMIN_TOKEN, timeout: float = 10.0) -> ShopifySettings:
    return ShopifySettings(
        secret=shopify.SHOPIFY_SECRET,
        shop=shopify.SHOP,
        admin_token=token,
        admin_api_base=base,
        timeout=timeout,
        public_url="https://track.shop.example",
    )


def setup_command(config: Path) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["sources", "setup", "shopify", "--config", str(config)])
    return result.exit_code, result.output


# webhook subscriptions


async def test_setup_subscribes_every_topic_once_run_twice(project: Path, admin: FakeAdminApi) -> None:
    config = configure(project, admin.base)
    text = config.read_text().replace(
        "${BOOMERANG_PUBLIC_URL:-}", "https://track.shop.example"
    )
    config.write_text(text)
    admin.webhooks.append(  # the shop's own, to another address: left alone
        {"id": 1, "topic": "orders/create", "address": "https://erp.shop.example/hook", "format": "json"}
    )
    code, output = await asyncio.to_thread(setup_command, config)
    assert code == 0, output
    address = "https://track.shop.example/hooks/shopify"
    assert output.splitlines()[: len(TOPICS)] == [f"created: {topic} -> {address}" for topic in TOPICS]
    assert "customers/redact" in output.splitlines()[-1]  # said where the privacy webhooks go
    code, output = await asyncio.to_thread(setup_command, config)
    assert code == 0, output
    assert output.splitlines()[: len(TOPICS)] == [f"exists: {topic} -> {address}" for topic in TOPICS]
    ours = [(w["topic"], w["address"]) for w in admin.webhooks if w["address"] == address]
    assert sorted(ours) == sorted((topic, address) for topic in TOPICS)  # nothing doubled
    assert len(admin.webhooks) == len(TOPICS) + 1


async def test_setup_says_why_the_admin_api_refused(project: Path, admin: FakeAdminApi) -> None:
    admin.token = "shpat_another"
    code, output = await asyncio.to_thread(setup_command, configure(project, admin.base))
    assert code == 1
    assert "Error: shopify: the admin_token was refused: check sources.shopify.admin_token" in output
    assert "Traceback" not in output


# discount codes


async def test_a_promo_step_sends_a_real_shopify_code(project: Path, admin: FakeAdminApi) -> None:
    configure(project, admin.base)
    for old in (project / "scenarios").glob("*.yaml"):
        old.unlink()
    (project / "scenarios" / "comeback.yaml").write_text(
        textwrap.dedent(
            """
            scenario: comeback
            category: promo
            trigger: {event: customer.created}
            steps:
              - send: comeback
                promo: {provider: shopify, percent: 15, expires: 48h}
            """
        )
    )
    (project / "templates" / "comeback").mkdir()
    (project / "templates" / "comeback" / "email.en.html").write_text(
        "---\nsubject: A gift\n---\n<p>Your code: {{ promo.code }}</p>\n"
    )
    async with running(project) as daemon:
        await deliver(daemon, "customers/create", shopify.customer(), "e1")
        [eml] = await wait_for(lambda: list((project / "outbox").glob("*-email-*.eml")), 20, "the email")
    [made] = admin.discount_codes
    assert made["code"].startswith("BACK-") and made["code"] in eml.read_text()
    rule = admin.price_rules[made["price_rule_id"]]
    assert (rule["value_type"], rule["value"], rule["usage_limit"]) == ("percentage", "-15", 1)
    assert rule["customer_selection"] == "prerequisite" and rule["prerequisite_customer_ids"] == [207119551]
    starts, ends = (datetime.fromisoformat(rule[key]) for key in ("starts_at", "ends_at"))
    assert (ends - starts).total_seconds() == 48 * 3600


async def test_a_code_for_a_customer_shopify_does_not_know_is_for_anyone_once(admin: FakeAdminApi) -> None:
    provider = ShopifyPromoProvider(AdminApi(settings(admin.base)))
    code = await provider.issue(Customer(id="c-42"), {"provider": "shopify", "amount": 5})
    rule = admin.price_rules[admin.discount_codes[0]["price_rule_id"]]
    assert code == admin.discount_codes[0]["code"]
    assert (rule["value_type"], rule["value"], rule["customer_selection"]) == ("fixed_amount", "-5.00", "all")
    assert "ends_at" not in rule and "prerequisite_customer_ids" not in rule
    await provider.api.close()


async def test_a_throttled_call_is_tried_again_after_the_wait_shopify_asks(admin: FakeAdminApi) -> None:
    provider = ShopifyPromoProvider(AdminApi(settings(admin.base)))
    throttled = {"errors": "Exceeded 2 calls per second for api client. Reduce request rates to resume."}
    admin.failures = [(429, throttled, {"Retry-After": "0.05"}), (429, throttled, {"Retry-After": "0.05"})]
    code = await provider.issue(Customer(id="shopify:1"), {"percent": 10})
    assert [call.path for call in admin.calls] == ["price_rules.json"] * 3 + [
        f"price_rules/{admin.discount_codes[0]['price_rule_id']}/discount_codes.json"
    ]
    assert code == admin.discount_codes[0]["code"]
    await provider.api.close()


@pytest.mark.parametrize(
    ("failure", "status", "said"),
    [
        ((401, {"errors": "[API] Invalid API key or access token"}, {}), 401, "the admin_token was refused"),
        ((403, {"errors": "This action requires merchant approval for write_discounts scope."}, {}), 403,
         "lacks an access scope"),
        ((422, {"errors": {"value": ["must be less than 0"], "title": ["can't be blank"]}}, {}), 422,
         "(422 on POST price_rules.json): value must be less than 0; title can't be blank"),
        ((429, {"errors": "Exceeded 2 calls per second"}, {"Retry-After": "30"}), 429, "throttled"),
        ((503, {"errors": "Service Unavailable"}, {}), 503, "the Admin API failed"),
    ],
)
async def test_a_refusal_says_what_it_means(admin: FakeAdminApi, failure, status: int, said: str) -> None:
    provider = ShopifyPromoProvider(AdminApi(settings(admin.base)))
    admin.failures = [failure]
    with pytest.raises(AdminApiError) as raised:
        await provider.issue(Customer(id="c-1"), {"percent": 10})
    assert raised.value.status == status and said in str(raised.value)
    assert raised.value.retry_after == (30.0 if status == 429 else None)
    assert admin.discount_codes == []
    await provider.api.close()


async def test_a_slow_admin_api_is_a_timeout_error(admin: FakeAdminApi) -> None:
    admin.delay = 2
    provider = ShopifyPromoProvider(AdminApi(settings(admin.base, timeout=0.2)))
    with pytest.raises(AdminApiError, match=r"did not answer within 0.2 s \(POST price_rules.json\)"):
        await provider.issue(Customer(id="c-1"), {"percent": 10})
    await provider.api.close()


async def test_a_promo_without_percent_or_amount_is_refused_before_any_call(admin: FakeAdminApi) -> None:
    provider = ShopifyPromoProvider(AdminApi(settings(admin.base)))
    with pytest.raises(AdminApiError, match="needs 'percent'"):
        await provider.issue(Customer(id="c-1"), {"percent": 150})
    assert admin.calls == []


# exports


def test_an_exported_order_gives_the_events_its_webhooks_give(database: Path | str) -> None:
    source = ShopifySource(settings("http://127.0.0.1:9"), AdminApi(settings("http://127.0.0.1:9")))
    order = {
        **shopify.order(),
        "fulfillments": [shopify.fulfillment()],
        "cancelled_at": "2026-03-05T10:00:00-05:00",
    }
    events = source.read_export(order)
    assert [(e.type, e.id) for e in events] == [
        ("order.placed", "shopify:order:checkout-0123456789abcdef0456456789abcdef:placed"),
        ("order.paid", "shopify:order:450789469:paid"),
        ("order.shipped", "shopify:order:450789469:shipped"),
        ("order.cancelled", "shopify:order:450789469:cancelled"),
    ]
    assert events[0].profile.id == "shopify:207119551" and events[0].data["order"]["total"] == 200.94
    store = Store(database)
    now = datetime(2026, 12, 7, tzinfo=UTC)
    assert len(store.ingest(events, now)) == 4
    assert store.ingest(source.read_export(order), now) == []  # twice: nothing new
    store.close()
    nobody = {**shopify.order(), "customer": None, "email": None, "contact_email": None, "phone": None}
    with pytest.raises(EventError, match="names no customer"):
        source.read_export(nobody)
