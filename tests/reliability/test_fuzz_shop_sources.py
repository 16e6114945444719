"""Fuzzing the shop and CRM sources (WooCommerce, 1C-Bitrix, Bitrix24) on the real daemon:
any request to their routes, and requests past their signature or token with any content, are
answered below 500 and never with a traceback; at the end the daemon's log holds none either.

The Bitrix24 source's REST URL points at a closed port: what it fetches fails, and must fail
quietly (a logged warning, the record kept pending)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from boomerang.scaffold import create_project
from conftest import free_port
from fakes.bitrix24_api import APPLICATION_TOKEN
from fakes.woocommerce_api import delivery_headers
from reliability.soak import fuzzing
from reliability.test_fuzz import BODIES, HEADER_VALUES, HEADERS, JSON, SAFE_TEXT, Daemon, fuzzed_daemon

WC_SECRET = "wc-webhook-secret-0123456789"
BITRIX_SECRET = "bitrix-shared-secret-0123456789"
ROUTES = ["/hooks/woocommerce", "/hooks/bitrix", "/hooks/bitrix24"]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """The real daemon with the three sources; its log must end without a traceback."""
    directory = tmp_path_factory.mktemp("fuzz-shops") / "project"
    create_project(directory)
    port = free_port()
    sources = {
        "woocommerce": {"secret": WC_SECRET},
        "bitrix": {"secret": BITRIX_SECRET},
        "bitrix24": {
            "rest_url": f"http://127.0.0.1:{free_port()}/rest/1/code/",
            "application_token": APPLICATION_TOKEN,
            "stages": {"WON": "order.paid"},
        },
    }
    config = directory / "boomerang.yaml"
    config.write_text(config.read_text() + f"sources: {json.dumps(sources)}\n")
    with fuzzed_daemon(directory, port):
        yield Daemon(port, f"http://127.0.0.1:{port}", "")


KNOWN_HEADERS = st.sampled_from(
    [
        "X-WC-Webhook-Signature",
        "X-WC-Webhook-Topic",
        "X-Boomerang-Signature",
        "Content-Type",
    ]
)


@pytest.mark.slow
@fuzzing(80)
@given(
    path=st.sampled_from(ROUTES),
    method=st.sampled_from(["POST", "GET", "PUT"]),
    headers=HEADERS | st.dictionaries(KNOWN_HEADERS, HEADER_VALUES, max_size=3),
    body=BODIES | st.just(b"webhook_id=12"),
)
def test_any_request_to_the_shop_routes_is_answered_below_500(
    daemon: Daemon, path: str, method: str, headers: dict[str, str], body: bytes
) -> None:
    daemon.request(method, path, body, headers)


TEXT_OR_ANY = SAFE_TEXT | JSON
ORDERS = st.fixed_dictionaries(
    {},
    optional={
        "id": st.integers(-5, 10**22) | TEXT_OR_ANY,
        "status": st.sampled_from(["pending", "processing", "completed", "refunded", "checkout-draft"])
        | TEXT_OR_ANY,
        "customer_id": st.integers(-1, 10**20) | TEXT_OR_ANY,
        "billing": st.fixed_dictionaries(
            {}, optional={"email": st.just("a@example.com") | TEXT_OR_ANY, "phone": TEXT_OR_ANY}
        )
        | JSON,
        "date_created_gmt": st.sampled_from(
            ["2026-03-02T10:00:00", "0001-01-01T00:00:00", "9999-12-31T23:59:59"]
        )
        | TEXT_OR_ANY,
        "date_paid_gmt": TEXT_OR_ANY,
        "total": TEXT_OR_ANY,
        "line_items": st.lists(JSON, max_size=3) | JSON,
        "email": TEXT_OR_ANY,
    },
)


@pytest.mark.slow
@fuzzing(80)
@given(
    topic=st.sampled_from(["order.created", "order.updated", "customer.created", "customer.updated"])
    | HEADER_VALUES,
    payload=ORDERS | JSON,
)
def test_signed_woocommerce_deliveries_with_any_content_are_answered_below_500(
    daemon: Daemon, topic: str, payload: Any
) -> None:
    body = json.dumps(payload).encode()
    headers = delivery_headers(WC_SECRET, body, "order.created")
    headers["X-WC-Webhook-Topic"] = topic
    daemon.request("POST", "/hooks/woocommerce", body, headers)


@pytest.mark.slow
@fuzzing(60)
@given(body=BODIES)
def test_signed_bitrix_posts_with_any_content_are_answered_below_500(daemon: Daemon, body: bytes) -> None:
    import hashlib
    import hmac

    signature = "sha256=" + hmac.new(BITRIX_SECRET.encode(), body, hashlib.sha256).hexdigest()
    daemon.request("POST", "/hooks/bitrix", body, {"X-Boomerang-Signature": signature})


@pytest.mark.slow
@fuzzing(60)
@given(
    event=st.sampled_from(["ONCRMDEALUPDATE", "ONCRMCONTACTADD", "ONCRMDYNAMICITEMUPDATE", "ONCRMLEADADD"])
    | SAFE_TEXT,
    record=st.sampled_from(["42", "7", "0", "-1", "1e3", "9" * 30]) | SAFE_TEXT,
    extra=st.dictionaries(st.just("data[FIELDS][ENTITY_TYPE_ID]") | SAFE_TEXT, SAFE_TEXT, max_size=3),
)
def test_bitrix24_events_with_the_token_and_any_form_are_answered_below_500(
    daemon: Daemon, event: str, record: str, extra: dict[str, str]
) -> None:
    form = {**extra, "event": event, "data[FIELDS][ID]": record, "auth[application_token]": APPLICATION_TOKEN}
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    daemon.request("POST", "/hooks/bitrix24", urlencode(form).encode(), headers)


def test_the_fuzzed_routes_are_served(daemon: Daemon) -> None:
    """The fixture's daemon serves the three routes (a guard against fuzzing a 404)."""
    for path in ROUTES:
        status, _ = daemon.request("POST", path, b"", {})
        assert status in (400, 401)
