"""Fuzzing `POST /hooks/shopify` on the real `boomerang run` process: any body and headers,
signed with the app's secret or not, for every topic it maps, the privacy topics and others. The
answer is below 500 and holds no traceback, and the daemon's log holds none at the end.

Bodies are random JSON, random bytes, or Shopify's own payloads (tests/fakes/shopify_payloads.py)
with fields replaced by random values, so that the mapping meets every shape a field may take.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import string
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from boomerang.ingest import EventError, IngestWindow, parse_event
from boomerang.plugins.sources.shopify.payloads import TOPICS, events_for, order_events
from boomerang.plugins.sources.shopify.webhooks import PRIVACY_TOPICS
from boomerang.scaffold import create_project
from conftest import free_port
from fakes import shopify_payloads as shopify
from fakes.shopify_admin import ADMIN_TOKEN
from reliability.soak import fuzzing
from reliability.test_fuzz import fuzzed_daemon


class Hook:
    """The running daemon's Shopify endpoint."""

    def __init__(self, port: int):
        self.port = port

    def post(self, body: bytes, headers: dict[str, str]) -> int:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            connection.request("POST", "/hooks/shopify", body=body, headers=headers)
            response = connection.getresponse()
            answer = response.read()
        finally:
            connection.close()
        assert response.status < 500, (headers, body[:300], response.status, answer[:500])
        assert b"Traceback" not in answer and b'File "' not in answer, answer[:500]
        return response.status


@pytest.fixture(scope="module")
def hook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hook]:
    """The real daemon with the Shopify source (its Admin API nowhere); no traceback in its log."""
    directory = tmp_path_factory.mktemp("fuzz-shopify") / "project"
    create_project(directory)
    settings = {
        "secret": shopify.SHOPIFY_SECRET,
        "shop": shopify.SHOP,
        "admin_token": ADMIN_TOKEN,
        "admin_api_base": "http://127.0.0.1:9",
    }
    config = directory / "boomerang.yaml"
    config.write_text(config.read_text() + f"sources:\n  shopify: {json.dumps(settings)}\n")
    port = free_port()
    with fuzzed_daemon(directory, port):
        yield Hook(port)


TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=12,
)
SHOPIFY_BODIES = [
    shopify.checkout(),
    shopify.checkout(completed=True),
    shopify.order(),
    shopify.fulfillment(shipment_status="delivered"),
    shopify.customer(),
    shopify.redact(),
    shopify.data_request(),
]


def mutated(base: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A Shopify body with some of its fields (or its customer's) given random values."""
    values = JSON | st.sampled_from(SHOPIFY_BODIES)
    fields = st.dictionaries(st.sampled_from(sorted(base)), values, max_size=4)
    return fields.map(lambda changes: {**base, **changes})


BODIES = (
    st.sampled_from(SHOPIFY_BODIES).flatmap(mutated).map(lambda body: json.dumps(body).encode())
    | JSON.map(lambda value: json.dumps(value).encode())
    | st.binary(max_size=200)
)
HEADER_VALUES = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=60
)
TOPIC_NAMES = st.sampled_from([*TOPICS, *PRIVACY_TOPICS, "products/update", ""]) | HEADER_VALUES
HEADERS = st.dictionaries(
    st.sampled_from(
        [
            "X-Shopify-Event-Id",
            "X-Shopify-Webhook-Id",
            "X-Shopify-Shop-Domain",
            "X-Shopify-Triggered-At",
            "Content-Type",
            "Content-Encoding",
        ]
    )
    | st.text(string.ascii_letters + "-", min_size=1, max_size=15),
    HEADER_VALUES,
    max_size=4,
)


@pytest.mark.slow
@fuzzing(100)
@given(topic=TOPIC_NAMES, body=BODIES, headers=HEADERS, signed=st.booleans(), shop=st.booleans())
def test_any_delivery_is_answered_below_500(
    hook: Hook, topic: str, body: bytes, headers: dict[str, str], signed: bool, shop: bool
) -> None:
    """Signed or not, any topic, body and headers: an answer below 500, and 401 when unsigned."""
    sent = {**headers, "X-Shopify-Topic": topic}
    if shop:
        sent["X-Shopify-Shop-Domain"] = shopify.SHOP
    if signed:
        sent["X-Shopify-Hmac-Sha256"] = shopify.signature(body)
    status = hook.post(body, sent)
    if not signed:
        assert status == 401


def deeply_mutated(value: Any) -> st.SearchStrategy[Any]:
    """`value` with any of its fields, at any depth, given random values (or left as they are)."""
    if isinstance(value, dict) and value:
        return st.fixed_dictionaries({key: deeply_mutated(item) | JSON for key, item in value.items()})
    if isinstance(value, list) and value:
        return st.tuples(*(deeply_mutated(item) | JSON for item in value)).map(list)
    return st.just(value) | JSON


@fuzzing(100)
@given(
    topic=st.sampled_from(sorted(TOPICS)),
    body=st.sampled_from(SHOPIFY_BODIES[:5]).flatmap(deeply_mutated).filter(lambda b: isinstance(b, dict)),
)
def test_any_shape_of_a_known_topic_maps_to_valid_events_or_a_clear_error(topic: str, body: dict) -> None:
    """The mapping itself, at every depth of Shopify's bodies: events that either validate or
    raise `EventError` (a 400 saying what), never anything else; the same for exports."""
    now = datetime(2026, 12, 7, tzinfo=UTC)
    for raw in [*(events_for(topic, body, "evt", now) or []), *order_events(body, now)]:
        with contextlib.suppress(EventError):
            parse_event(raw, "event", IngestWindow(), now)
