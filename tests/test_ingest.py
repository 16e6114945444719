"""Reading request bodies and files into validated events; durations."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import conftest
from boomerang.clock import parse_duration
from boomerang.ingest import EventError, parse_body, parse_event, parse_events

CONSENTS_MESSAGE = "customer.consents must map channel names (email, sms, push...) to true or false"
PUSH_MESSAGE = (
    "customer.push_subscriptions must be a list of PushSubscription.toJSON() objects "
    "(endpoint, keys.p256dh, keys.auth)"
)
SUBSCRIPTION = {
    "endpoint": "https://fcm.googleapis.com/fcm/send/abc123",
    "expirationTime": None,
    "keys": {"p256dh": "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA", "auth": "tBHItJI5svbpez7KI4CCXg"},
}


def raw_event(event_id: Any = "e-1", **changes: Any) -> dict[str, Any]:
    """A valid generic event; keyword arguments replace (or, given None, remove) its fields."""
    event = conftest.event(event_id)
    for key, value in changes.items():
        if value is None:
            event.pop(key, None)
        else:
            event[key] = value
    return event


def with_customer(**customer: Any) -> dict[str, Any]:
    return raw_event(customer=customer)


def error_of(raw: Any) -> str:
    with pytest.raises(EventError) as excinfo:
        parse_event(raw)
    return str(excinfo.value)


def body_error(body: bytes | str) -> str:
    with pytest.raises(EventError) as excinfo:
        parse_body(body)
    return str(excinfo.value)


# parse_body


def test_body_with_one_json_object() -> None:
    assert parse_body(b'{"id": "e-1", "type": "cart.updated"}') == [
        ("event", {"id": "e-1", "type": "cart.updated"})
    ]
    assert parse_body('  {"id": "\u00e9v-1"}\n') == [("event", {"id": "\u00e9v-1"})]


def test_body_with_a_json_array() -> None:
    body = json.dumps([{"id": "e-1"}, {"id": "e-2"}, {"id": "e-3"}], indent=2).encode()
    assert parse_body(body) == [
        ("event 1", {"id": "e-1"}),
        ("event 2", {"id": "e-2"}),
        ("event 3", {"id": "e-3"}),
    ]


def test_json_lines_skip_blank_lines_and_keep_line_numbers() -> None:
    body = b'{"id": "e-1"}\n\n   \n{"id": "e-2"}\r\n{"id": "e-3"}\n\n'
    assert parse_body(body) == [
        ("line 1", {"id": "e-1"}),
        ("line 4", {"id": "e-2"}),
        ("line 5", {"id": "e-3"}),
    ]


def test_malformed_json_line_is_named_by_its_number() -> None:
    body = '{"id": "e-1"}\n\n{"id": "e-2",}\n{"id": "e-3"}\n'
    assert (
        body_error(body)
        == "line 3, column 14: invalid JSON: Expecting property name enclosed in double quotes"
    )


def test_malformed_first_json_line() -> None:
    assert body_error('{"id": \n{"id": "e-2"}\n') == "line 1, column 8: invalid JSON: Expecting value"


def test_malformed_single_object() -> None:
    assert body_error('{"id": }') == "line 1, column 8: invalid JSON: Expecting value"


def test_malformed_pretty_printed_array_names_the_real_line() -> None:
    body = '[\n  {"id": "e-1"},\n  {"id": "e-2" "type": "cart.updated"}\n]\n'
    assert body_error(body) == "line 3, column 16: invalid JSON: Expecting ',' delimiter"


@pytest.mark.parametrize("body", [b"", "", "   \n\t\n"])
def test_empty_body(body: bytes | str) -> None:
    assert body_error(body) == "no events: the body is empty"


def test_body_that_is_not_utf8() -> None:
    assert body_error(b'{"id": "\xff"}') == "the body is not UTF-8 text (byte 8)"
    assert body_error("{}".encode("utf-16")) == "the body is not UTF-8 text (byte 0)"


# parse_event: a valid event


def test_valid_event_from_the_product_page() -> None:
    raw = {
        "id": "evt-1001",
        "type": "cart.updated",
        "at": "2026-03-02T13:00:00+03:00",
        "customer": {
            "id": "c-42",
            "email": "anna@example.com",
            "phone": "+79990001122",
            "name": "Anna",
            "locale": "ru",
            "timezone": "Europe/Moscow",
            "birthday": "--03-08",
            "consents": {"email": True, "sms": False},
            "attributes": {"tier": "gold"},
            "push_subscriptions": [SUBSCRIPTION],
            "telegram_chat_id": 123456789,
        },
        "data": {"cart": {"total": 79.9, "currency": "EUR", "items": [{"sku": "B-1", "qty": 1}]}},
    }
    event = parse_event(raw)
    assert (event.id, event.type, event.at) == (
        "evt-1001",
        "cart.updated",
        datetime(2026, 3, 2, 10, tzinfo=UTC),
    )
    assert event.data == raw["data"]
    assert event.customer_id is None
    profile = event.profile
    assert (profile.id, profile.email, profile.phone, profile.name) == (
        "c-42",
        "anna@example.com",
        "+79990001122",
        "Anna",
    )
    assert (profile.locale, profile.timezone, profile.birthday) == ("ru", "Europe/Moscow", "--03-08")
    assert profile.telegram_chat_id == "123456789"
    assert profile.consents == {"email": True, "sms": False}
    assert profile.attributes == {"tier": "gold"}
    assert profile.push_subscriptions == [SUBSCRIPTION]
    assert profile.identities() == [
        ("id", "c-42"),
        ("email", "anna@example.com"),
        ("phone", "+79990001122"),
        ("telegram", "123456789"),
    ]


def test_numeric_ids_become_strings_and_data_defaults_to_empty() -> None:
    event = parse_event(raw_event(1001, data=None, customer={"id": 42}))
    assert (event.id, event.profile.id, event.data) == ("1001", "42", {})


def test_custom_event_types_are_accepted() -> None:
    assert parse_event(raw_event(type="bitrix.deal.stage_changed")).type == "bitrix.deal.stage_changed"


# parse_event: what is wrong, and where


@pytest.mark.parametrize("event_id", [None, "", True, 1.5, ["e-1"]])
def test_missing_or_bad_id(event_id: Any) -> None:
    raw = raw_event(id=None) if event_id is None else raw_event(event_id)
    assert error_of(raw) == "event: 'id' is required (a string unique to this event)"


@pytest.mark.parametrize("event_type", [None, "cart", "cart updated", "cart.", 7])
def test_missing_or_bad_type(event_type: Any) -> None:
    raw = raw_event(type=None) if event_type is None else raw_event(type=event_type)
    assert error_of(raw) == "event 'e-1': 'type' must be a dotted name such as cart.updated"


def test_missing_at() -> None:
    assert error_of(raw_event(at=None)) == "event 'e-1': 'at' is required (ISO-8601 with a timezone)"


def test_naive_timestamp() -> None:
    assert error_of(raw_event(at="2026-03-02T10:00:00")) == (
        "event 'e-1': 'at': '2026-03-02T10:00:00' has no timezone; add Z for UTC or an offset such as +03:00"
    )


@pytest.mark.parametrize("at", ["yesterday", "2026-13-02T10:00:00Z", 1767261600])
def test_unreadable_timestamp(at: Any) -> None:
    assert error_of(raw_event(at=at)) == (
        f"event 'e-1': 'at': '{at}' is not an ISO-8601 timestamp such as 2026-03-02T10:00:00Z"
    )


def test_data_must_be_an_object() -> None:
    assert error_of(raw_event(data=[1, 2])) == "event 'e-1': 'data' must be a JSON object"


def test_event_must_be_an_object() -> None:
    assert error_of(["e-1"]) == "event: an event must be a JSON object, not list"


def test_unknown_event_fields() -> None:
    assert error_of(raw_event(payload={}, extra=1)) == (
        "event: unknown field(s) extra, payload; an event has id, type, at, customer and data"
    )


def test_missing_customer() -> None:
    expected = "event 'e-1': 'customer' is required: an object with an id, email or phone"
    assert error_of(raw_event(customer=None)) == expected
    assert error_of(raw_event(customer="c-42")) == expected


@pytest.mark.parametrize("email", ["anna", "anna@example", "an na@example.com", "anna@@example.com"])
def test_bad_email(email: str) -> None:
    assert error_of(with_customer(email=email)) == "event 'e-1': customer.email is not an email address"


def test_email_is_trimmed_and_lower_cased() -> None:
    assert parse_event(with_customer(email="  Anna.K@Example.COM ")).profile.email == "anna.k@example.com"


@pytest.mark.parametrize(
    ("phone", "normalised"),
    [
        ("+7 (999) 000-11-22", "+79990001122"),
        ("8.999.000.11.22", "89990001122"),
        (" +44 20 7946 0958 ", "+442079460958"),
        (79990001122, "79990001122"),
    ],
)
def test_phone_is_normalised(phone: Any, normalised: str) -> None:
    profile = parse_event(with_customer(phone=phone, whatsapp=phone)).profile
    assert (profile.phone, profile.whatsapp) == (normalised, normalised)
    assert ("phone", normalised) in profile.identities()


@pytest.mark.parametrize(
    "phone", ["12-34", "call me", "+7 999 000 11 22 ext 5", "+1234567890123456", "++79990001122"]
)
def test_bad_phone(phone: str) -> None:
    assert error_of(with_customer(phone=phone)) == (
        "event 'e-1': customer.phone is not a phone number (7 to 15 digits, + country code)"
    )


def test_bad_whatsapp_number_names_the_field() -> None:
    assert error_of(with_customer(id="c-1", whatsapp="n/a")) == (
        "event 'e-1': customer.whatsapp is not a phone number (7 to 15 digits, + country code)"
    )


def test_unknown_customer_field() -> None:
    assert error_of(with_customer(id="c-1", vip=True, loyalty="gold")) == (
        "event 'e-1': unknown customer field(s) loyalty, vip; put free-form values under customer.attributes"
    )


def test_customer_text_field_must_be_text() -> None:
    assert error_of(with_customer(id="c-1", name=["Anna"])) == "event 'e-1': customer.name must be a string"


def test_bad_customer_timezone_and_birthday() -> None:
    assert error_of(with_customer(id="c-1", timezone="Mars/Base")) == (
        "event 'e-1': customer.timezone 'Mars/Base' is not an IANA timezone such as Europe/Moscow"
    )
    assert error_of(with_customer(id="c-1", birthday="08.03.1990")) == (
        "event 'e-1': customer.birthday must be YYYY-MM-DD or --MM-DD"
    )
    assert parse_event(with_customer(id="c-1", birthday="1990-03-08")).profile.birthday == "1990-03-08"


@pytest.mark.parametrize("consents", [{"Fax!": True}, {"email": "yes"}, {"email": 1}, ["email"]])
def test_bad_consents(consents: Any) -> None:
    assert error_of(with_customer(id="c-1", consents=consents)) == f"event 'e-1': {CONSENTS_MESSAGE}"


def test_attributes_must_be_an_object() -> None:
    assert error_of(with_customer(id="c-1", attributes=["vip"])) == (
        "event 'e-1': customer.attributes must be a JSON object"
    )


@pytest.mark.parametrize(
    "subscriptions",
    [
        SUBSCRIPTION,  # not a list
        [{**SUBSCRIPTION, "endpoint": "http://push.example/insecure"}],
        [{"endpoint": SUBSCRIPTION["endpoint"], "keys": {"p256dh": "BNc"}}],
        [{"endpoint": SUBSCRIPTION["endpoint"]}],
        ["https://push.example/a"],
    ],
)
def test_bad_push_subscription(subscriptions: Any) -> None:
    assert (
        error_of(with_customer(id="c-1", push_subscriptions=subscriptions)) == f"event 'e-1': {PUSH_MESSAGE}"
    )


@pytest.mark.parametrize(
    "customer",
    [{}, {"name": "Anna"}, {"id": "   ", "locale": "ru"}, {"whatsapp": "+79990001122"}],
)
def test_customer_without_any_identity(customer: dict[str, Any]) -> None:
    assert error_of(raw_event(customer=customer)) == (
        "event 'e-1': customer needs an id, email, phone or telegram_chat_id"
    )


def test_telegram_chat_id_alone_is_an_identity() -> None:
    assert parse_event(with_customer(telegram_chat_id="987")).profile.identities() == [("telegram", "987")]


# parse_events: a batch


def test_batch_of_valid_events() -> None:
    body = json.dumps([raw_event("e-1"), raw_event("e-2", type="order.placed")])
    events = parse_events(parse_body(body))
    assert [(e.id, e.type) for e in events] == [("e-1", "cart.updated"), ("e-2", "order.placed")]


def test_one_bad_event_in_an_array_rejects_the_batch() -> None:
    body = json.dumps([raw_event("e-1"), raw_event("e-2", at="2026-03-02 10:00"), raw_event("e-3")])
    with pytest.raises(EventError) as excinfo:
        parse_events(parse_body(body))
    assert str(excinfo.value) == (
        "event 2 'e-2': 'at': '2026-03-02 10:00' has no timezone; add Z for UTC or an offset such as +03:00"
    )


def test_one_bad_event_in_an_array_without_an_id() -> None:
    body = json.dumps([raw_event("e-1"), raw_event(id=None)])
    with pytest.raises(EventError) as excinfo:
        parse_events(parse_body(body))
    assert str(excinfo.value) == "event 2: 'id' is required (a string unique to this event)"


def test_one_bad_json_line_rejects_the_batch() -> None:
    body = "\n".join(
        json.dumps(e)
        for e in [raw_event("e-1"), raw_event("e-2", customer={"email": "nope"}), raw_event("e-3")]
    )
    with pytest.raises(EventError) as excinfo:
        parse_events(parse_body(body))
    assert str(excinfo.value) == "line 2 'e-2': customer.email is not an email address"


# parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("20m", timedelta(minutes=20)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("7d", timedelta(days=7)),
        ("3w", timedelta(weeks=3)),
        (" 48 h ", timedelta(hours=48)),
        ("0s", timedelta(0)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "10", 10, "1.5h", "-1d", "1y", "h", "1d2h", "twenty minutes"])
def test_parse_duration_rejects(text: str | int) -> None:
    with pytest.raises(ValueError) as excinfo:
        parse_duration(text)
    assert (
        str(excinfo.value) == f"'{text}' is not a duration; write a number and a unit: 30s, 20m, 2h, 1d, 3w"
    )
