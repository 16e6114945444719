"""The SMS and WhatsApp channels against a local fake Twilio (tests/fakes/twilio_server.py): the wire
format, error codes, signed status callbacks into a running daemon, SMS segments, and one run
of the real `boomerang run` process."""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from boomerang.config import load_config
from boomerang.model import Customer, DeliveryStatus, Message
from boomerang.pacing import Pace
from boomerang.plugins.channels import sms, whatsapp
from boomerang.problems import ProblemError
from conftest import (
    API_TOKEN,
    AUTH,
    daemon_process,
    event,
    free_port,
    project_database,
    running,
    url,
    wait_for,
)
from fakes.twilio_server import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio, Received

SERVICE_SID = "MG" + "fedcba9876543210" * 2
CONTENT_SID = "HX" + "00112233445566778899aabbccddeeff"


@pytest.fixture
async def twilio():
    """The fake Twilio, serving for one test."""
    server = FakeTwilio()
    await server.start()
    yield server
    await server.stop()


def channel_config(tmp_path: Path, name: str, settings: str, public_url: str = "https://hooks.shop.example"):
    """A config whose only section is one channel with these flow-style settings."""
    path = tmp_path / "boomerang.yaml"
    path.write_text(f"public_url: {public_url}\nchannels:\n  {name}: {settings}\n")
    return load_config(path)


def make_channel(
    tmp_path: Path, base: str, name: str = "sms", sender: str = '"+15550001111"', extra: str = ""
):
    """A channel made by its plugin from a config, sending to `base`."""
    settings = (
        f"{{account_sid: {ACCOUNT_SID}, auth_token: {AUTH_TOKEN}, from: {sender}, api_base: {base}{extra}}}"
    )
    module = sms if name == "sms" else whatsapp
    [channel] = module.register_channels(channel_config(tmp_path, name, settings))
    return channel


def message(**fields) -> Message:
    """An SMS message, with these fields changed."""
    values = {
        "id": "m-1",
        "customer_id": "c-1",
        "channel": "sms",
        "to": "+15557770001",
        "template": "hello",
        "body": "Hi Anna, your cart is waiting",
    }
    return Message(**{**values, **fields})


# sending


async def test_a_message_goes_with_twilios_form_fields_and_basic_auth(tmp_path: Path, twilio) -> None:
    channel = make_channel(tmp_path, twilio.base_url)
    first = await channel.send(message())
    second = await channel.send(message(id="m-2", to="+15557770002"))
    http = channel._http
    await channel.close()
    assert first.status is second.status is DeliveryStatus.SENT
    one, two = twilio.requests
    assert first.provider_id == one.sid and one.sid.startswith("SM")
    assert one.account_sid == ACCOUNT_SID and one.auth == (ACCOUNT_SID, AUTH_TOKEN)
    assert one.form["From"] == "+15550001111"
    assert one.form["To"] == "+15557770001"
    assert one.form["Body"] == "Hi Anna, your cart is waiting"
    assert one.form["StatusCallback"] == "https://hooks.shop.example/callbacks/sms?m=m-1"
    assert "MessagingServiceSid" not in one.form
    assert "boomerang/" in one.user_agent
    assert one.peer == two.peer  # one session, its connection kept open between messages
    assert http.session.closed and channel._http is None


async def test_a_messaging_service_can_stand_in_for_from(tmp_path: Path, twilio) -> None:
    settings = (
        f"{{account_sid: {ACCOUNT_SID}, auth_token: {AUTH_TOKEN}, messaging_service_sid: {SERVICE_SID}, "
    )
    settings += f"api_base: {twilio.base_url}}}"
    [channel] = sms.register_channels(channel_config(tmp_path, "sms", settings))
    delivery = await channel.send(message())
    await channel.close()
    assert delivery.status is DeliveryStatus.SENT and delivery.detail == "Twilio: accepted"
    [request] = twilio.requests
    assert request.form["MessagingServiceSid"] == SERVICE_SID and "From" not in request.form


@pytest.mark.parametrize(
    ("code", "http_status", "retry_after", "expected", "wait"),
    [
        (21610, 400, None, DeliveryStatus.OPTED_OUT, None),
        (21211, 400, None, DeliveryStatus.ADDRESS_INVALID, None),
        (21614, 400, None, DeliveryStatus.ADDRESS_INVALID, None),
        (20429, 429, "7", DeliveryStatus.RETRY, 7.0),
        (20429, 429, None, DeliveryStatus.RETRY, None),
        (20500, 500, None, DeliveryStatus.RETRY, None),
        (20503, 503, "Wed, 21 Oct 2015 07:28:00 GMT", DeliveryStatus.RETRY, 0.0),
        (21408, 400, None, DeliveryStatus.FAILED, None),
        (21606, 400, "30", DeliveryStatus.FAILED, None),
    ],
)
async def test_twilio_error_codes_map_to_delivery_results(
    tmp_path: Path, twilio, code, http_status, retry_after, expected, wait
) -> None:
    twilio.fail("+15557770001", code, http_status, "no luck", retry_after=retry_after)
    channel = make_channel(tmp_path, twilio.base_url)
    delivery = await channel.send(message())
    await channel.close()
    assert delivery.status is expected
    assert delivery.detail == f"Twilio {code}: Unable to create record: no luck"
    assert delivery.retry_after == wait
    assert delivery.provider_id is None


async def test_wrong_credentials_fail_and_an_unreachable_api_means_retry(tmp_path: Path, twilio) -> None:
    twilio.auth_token = "another-token"
    channel = make_channel(tmp_path, twilio.base_url)
    delivery = await channel.send(message())
    await channel.close()
    assert delivery.status is DeliveryStatus.FAILED and delivery.detail.startswith("Twilio 20003:")
    channel = make_channel(tmp_path, f"http://127.0.0.1:{free_port()}", extra=", timeout: 2")
    delivery = await channel.send(message())
    await channel.close()
    assert delivery.status is DeliveryStatus.RETRY and "Connect" in delivery.detail


async def test_an_empty_body_is_not_sent(tmp_path: Path, twilio) -> None:
    channel = make_channel(tmp_path, twilio.base_url)
    delivery = await channel.send(message(body="  "))
    await channel.close()
    assert delivery.status is DeliveryStatus.FAILED and not twilio.requests


def test_the_address_is_the_phone_in_e164(tmp_path: Path) -> None:
    channel = make_channel(tmp_path, "http://127.0.0.1:9")
    assert channel.address(Customer("c", phone="+1 (555) 000-1111")) == "+15550001111"
    assert channel.address(Customer("c", phone="89990001122")) is None  # no country code
    assert channel.address(Customer("c")) is None
    wa = make_channel(tmp_path, "http://127.0.0.1:9", "whatsapp", '"whatsapp:+15550001111"')
    assert wa.address(Customer("c", phone="+15550002222", whatsapp="+15550003333")) == "whatsapp:+15550003333"
    assert wa.address(Customer("c", phone="+15550002222")) == "whatsapp:+15550002222"
    assert wa.address(Customer("c")) is None


async def test_whatsapp_sends_an_approved_template_by_content_sid(tmp_path: Path, twilio) -> None:
    channel = make_channel(tmp_path, twilio.base_url, "whatsapp", '"whatsapp:+15550001111"')
    extra = {"content_sid": CONTENT_SID, "variables": ["Анна", "79.9"]}
    template = await channel.send(message(channel="whatsapp", to="whatsapp:+15557770001", extra=extra))
    text = await channel.send(message(id="m-2", channel="whatsapp", to="+15557770002"))
    await channel.close()
    assert template.status is text.status is DeliveryStatus.SENT
    first, second = twilio.requests
    assert first.form["From"] == "whatsapp:+15550001111" and first.form["To"] == "whatsapp:+15557770001"
    assert first.form["ContentSid"] == CONTENT_SID and "Body" not in first.form
    assert json.loads(first.form["ContentVariables"]) == {"1": "Анна", "2": "79.9"}
    assert first.form["StatusCallback"] == "https://hooks.shop.example/callbacks/whatsapp?m=m-1"
    assert second.form["To"] == "whatsapp:+15557770002" and second.form["Body"].startswith("Hi Anna")
    assert "ContentSid" not in second.form


async def test_whatsapp_variables_that_are_not_a_mapping_fail_the_message(tmp_path: Path, twilio) -> None:
    channel = make_channel(tmp_path, twilio.base_url, "whatsapp", '"whatsapp:+15550001111"')
    extra = {"content_sid": CONTENT_SID, "variables": "Anna"}
    delivery = await channel.send(message(channel="whatsapp", extra=extra))
    await channel.close()
    assert delivery.status is DeliveryStatus.FAILED and "'variables' must be a mapping" in delivery.detail
    assert not twilio.requests


def test_the_outbox_file_and_the_preview_notes(tmp_path: Path) -> None:
    channel = make_channel(tmp_path, "http://127.0.0.1:9")
    suffix, content = channel.outbox_file(message(body="Привет"))
    data = json.loads(content)
    assert suffix == ".json"
    assert data["twilio"] == {"to": "+15557770001", "body": "Привет", "from": "+15550001111"}
    assert data["segments"] == {"encoding": "UCS-2", "count": 1}
    assert channel.describe(message(body="a" * 161)) == ["note: 2 SMS segments, GSM-7, 161 characters"]
    [note] = channel.describe(message(body="Привет"))
    assert note.startswith("note: 1 SMS segment, UCS-2, 6 characters ('П' is not in GSM-7")
    wa = make_channel(tmp_path, "http://127.0.0.1:9", "whatsapp", '"whatsapp:+15550001111"')
    [note] = wa.describe(message(extra={"content_sid": CONTENT_SID, "variables": {"1": "Anna"}}))
    assert CONTENT_SID in note and '{"1": "Anna"}' in note


# configuration


def test_settings_are_validated_with_positions(tmp_path: Path) -> None:
    path = tmp_path / "boomerang.yaml"
    path.write_text(
        "channels:\n"
        "  sms:\n"
        "    account_sid: ACnope\n"
        "    auth_token: ''\n"
        "    from: +15550001111\n"
        "    api_base: ftp://twilio.example\n"
        "    tiemout: 5\n"
        "  whatsapp:\n"
        f"    account_sid: {ACCOUNT_SID}\n"
        "    auth_token: secret\n"
        '    from: "+15550001111"\n'
        "    messaging_service_sid: MG1\n"
    )
    config = load_config(path)
    with pytest.raises(ProblemError) as sms_error:
        sms.register_channels(config)
    with pytest.raises(ProblemError) as wa_error:
        whatsapp.register_channels(config)
    lines = [f"{p.line}:{p.col}: {p.message}" for p in [*sms_error.value.problems, *wa_error.value.problems]]
    assert lines == [
        "3:18: 'account_sid' must be a Twilio Account SID: AC and 32 hex digits",
        "4:17: 'auth_token' is required",
        "5:11: 'from' is read as a number; quote it: from: \"+15550001111\"",
        "6:15: 'api_base' must be an http(s) URL such as https://api.twilio.com",
        "7:5: unknown sms setting 'tiemout' (did you mean 'timeout'?)",
        "11:11: 'from' must be a WhatsApp sender such as \"whatsapp:+15550001111\"",
        "12:28: 'messaging_service_sid' must be MG and 32 hex digits",
    ]
    assert all(p.file == str(path.resolve()) for p in sms_error.value.problems)


def test_a_channel_needs_a_sender(tmp_path: Path) -> None:
    config = channel_config(tmp_path, "sms", f"{{account_sid: {ACCOUNT_SID}, auth_token: t}}")
    with pytest.raises(ProblemError) as error:
        sms.register_channels(config)
    [problem] = error.value.problems
    assert (problem.line, problem.message) == (
        3,
        "give 'from' (the sending number) or 'messaging_service_sid'",
    )


# the sender's MPS
@pytest.mark.parametrize(
    ("name", "sender", "mps"),
    [
        ("sms", '"+15550001111"', 1.0),  # a long code
        ("sms", '"+18005550111"', 3.0),  # a toll-free number
        ("sms", '"12345"', 100.0),  # a short code
        ("sms", "ShopName", 1.0),  # a sender ID
        ("whatsapp", '"whatsapp:+15550001111"', 80.0),
    ],
)
def test_a_senders_mps_is_twilios_default_for_its_kind(
    tmp_path: Path, name: str, sender: str, mps: float
) -> None:
    channel = make_channel(tmp_path, "https://api.twilio.com", name, sender)
    assert channel.mps == mps and channel.bucket == f"twilio:{sender.strip(chr(34))}"


def test_each_message_is_paced_by_its_segments_in_the_senders_bucket(tmp_path: Path) -> None:
    settings = (
        f"{{account_sid: {ACCOUNT_SID}, auth_token: {AUTH_TOKEN}, messaging_service_sid: {SERVICE_SID}, "
        "mps: 5}"
    )
    [channel] = sms.register_channels(channel_config(tmp_path, "sms", settings))
    bucket = f"twilio:{SERVICE_SID}"
    assert channel.pace(message()) == Pace(bucket, 1, 5.0)
    long = channel.pace(message(id="m-2", body="x" * 200))  # two GSM-7 segments
    assert long == Pace(bucket, 2, 5.0) and long.key == (bucket, 5.0, 1.0)


def test_mps_must_be_a_number_above_0(tmp_path: Path) -> None:
    for value in ("0", "fast", "-1", "true"):
        settings = f'{{account_sid: {ACCOUNT_SID}, auth_token: t, from: "+15550001111", mps: {value}}}'
        with pytest.raises(ProblemError) as error:
            sms.register_channels(channel_config(tmp_path, "sms", settings))
        [problem] = error.value.problems
        assert (problem.line, problem.col, problem.message) == (
            3,
            len("  sms: ") + settings.index("mps:") + len("mps: ") + 1,
            "'mps' must be a number above 0, such as 1 or 2.5",
        )


# segments


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ("GSM-7", 0)),
        ("a" * 160, ("GSM-7", 1)),
        ("a" * 161, ("GSM-7", 2)),
        ("a" * 306, ("GSM-7", 2)),
        ("a" * 307, ("GSM-7", 3)),
        ("Ça coûte 5 €", ("UCS-2", 1)),  # û is not GSM-7
        ("€" * 80, ("GSM-7", 1)),  # extension characters count double: 160
        ("€" * 81, ("GSM-7", 2)),
        ("a" * 152 + "[", ("GSM-7", 1)),  # 154 septets in all: one segment
        ("a" * 152 + "[" + "a" * 7, ("GSM-7", 2)),  # the escape pair is not split at 153
        ("é@£$¥ñÑüÜ{}|~", ("GSM-7", 1)),
        ("Привет" * 11 + "Прив", ("UCS-2", 1)),  # 70
        ("Привет" * 12, ("UCS-2", 2)),  # 72
        ("я" * 134, ("UCS-2", 2)),
        ("я" * 135, ("UCS-2", 3)),
        ("😀" * 35, ("UCS-2", 1)),  # two UTF-16 units each: 70
        ("😀" * 36, ("UCS-2", 2)),
        ("я" * 66 + "😀", ("UCS-2", 1)),  # 68 units: fits in one
        ("я" * 66 + "😀" + "я" * 3, ("UCS-2", 2)),  # the pair moves whole to the second part
    ],
)
def test_segments(text: str, expected: tuple[str, int]) -> None:
    assert sms.segments(text) == expected


# status callbacks into a running daemon

SMS_SCENARIO = """scenario: welcome-sms
category: transactional
trigger: {event: signup.completed}
steps:
  - send: hello
    channels: [sms]
"""
WHATSAPP_SCENARIO = """scenario: welcome-whatsapp
category: transactional
trigger: {event: whatsapp.optin}
steps:
  - send: hello
    channels: [whatsapp]
"""
WHATSAPP_TEMPLATE = f"""---
content_sid: {CONTENT_SID}
variables: {{1: "{{{{ customer.name }}}}", 2: "{{{{ customer.id | upper }}}}"}}
---
Hi {{{{ customer.name }}}}!
"""


def twilio_project(project: Path, api_base: str, whatsapp_too: bool = True) -> str:
    """Send real SMS (no outbox) to `api_base`; returns the daemon's public URL."""
    public_url = f"http://127.0.0.1:{os.environ['BOOMERANG_PORT']}"
    config = project / "boomerang.yaml"
    common = f"account_sid: {ACCOUNT_SID}, auth_token: {AUTH_TOKEN}, api_base: {api_base}"
    channels = f'channels:\n  sms: {{{common}, from: "+15550001111"}}\n'
    if whatsapp_too:
        channels += f'  whatsapp: {{{common}, from: "whatsapp:+15550001111"}}\n'
    text = config.read_text().replace("outbox: ./outbox\n", "").replace("channels:\n", channels)
    text = text.replace("${BOOMERANG_PUBLIC_URL:-}", public_url)
    config.write_text(text)
    for old in (project / "scenarios").glob("*.yaml"):
        old.unlink()
    (project / "scenarios" / "welcome_sms.yaml").write_text(SMS_SCENARIO)
    (project / "scenarios" / "welcome_whatsapp.yaml").write_text(WHATSAPP_SCENARIO)
    (project / "templates" / "hello").mkdir()
    (project / "templates" / "hello" / "sms.en.txt").write_text("Hi {{ customer.name }}, welcome!\n")
    (project / "templates" / "hello" / "whatsapp.en.txt").write_text(WHATSAPP_TEMPLATE)
    return public_url


def signup(event_id: str, customer_id: str, phone: str, type_: str = "signup.completed") -> dict:
    """An event that starts one of the test scenarios for a customer with a phone."""
    return event(event_id, type_, id=customer_id, phone=phone, name=customer_id.title(), locale="en")


def message_id(received: Received) -> str:
    """Our message id, from the status callback URL the request carried."""
    return parse_qs(urlsplit(received.form["StatusCallback"]).query)["m"][0]


async def sent_to(twilio: FakeTwilio, daemon, to: str) -> Received:
    """The request that went to `to`, once the daemon has recorded the message as sent."""

    async def sent() -> bool:
        requests = [r for r in twilio.requests if r.form.get("To") == to and r.sid]
        if not requests:
            return False
        record = await daemon.store.run(daemon.store.message, message_id(requests[0]))
        return record["status"] == "sent"

    await wait_for(sent)
    return next(r for r in twilio.requests if r.form.get("To") == to)


async def post_events(daemon, events: list[dict]) -> None:
    """POST events to the in-process daemon."""
    body = "\n".join(json.dumps(e) for e in events)
    async with (
        aiohttp.ClientSession() as session,
        session.post(url(daemon, "/events"), data=body, headers=AUTH) as answer,
    ):
        assert answer.status == 200


async def test_signed_sms_callbacks_mark_messages_delivered_or_failed(project: Path, twilio) -> None:
    public_url = twilio_project(project, twilio.base_url)
    async with running(project) as daemon:
        await post_events(
            daemon, [signup("s-1", "c-1", "+15557770001"), signup("s-2", "c-2", "+15557770002")]
        )
        first = await sent_to(twilio, daemon, "+15557770001")
        second = await sent_to(twilio, daemon, "+15557770002")
        first_id, second_id = message_id(first), message_id(second)
        assert first.form["StatusCallback"] == f"{public_url}/callbacks/sms?m={first_id}"
        assert first.form["Body"] == "Hi C-1, welcome!" and first.form["From"] == "+15550001111"
        assert first.auth == (ACCOUNT_SID, AUTH_TOKEN)
        record = await daemon.store.run(daemon.store.message, first_id)
        assert record["provider_id"] == first.sid

        # no signature, a made-up one, one made with another token, one for another message
        assert await twilio.callback(first, "delivered", signature="") == 403
        assert await twilio.callback(first, "delivered", signature="bm90IGEgc2lnbmF0dXJl") == 403
        forged = FakeTwilio(auth_token="not-the-auth-token")
        params = {"MessageSid": first.sid, "MessageStatus": "delivered"}
        bad = forged.sign(first.form["StatusCallback"], params)
        assert await twilio.callback(first, "delivered", signature=bad) == 403
        other = twilio.sign(second.form["StatusCallback"], params)
        assert await twilio.callback(first, "delivered", signature=other) == 403
        assert (await daemon.store.run(daemon.store.message, first_id))["status"] == "sent"

        assert await twilio.callback(first, "sent") == 204  # nothing to record
        assert await twilio.callback(first, "delivered") == 204
        assert await twilio.callback(first, "delivered") == 204  # Twilio retried: stored once
        record = await daemon.store.run(daemon.store.message, first_id)
        assert record["status"] == "delivered" and record["delivered_at"]
        events = await daemon.store.run(daemon.store.events_of, "c-1")
        assert [e["type"] for e in events if e["type"].startswith("message.")] == [
            "message.sent",
            "message.delivered",
        ]

        assert await twilio.callback(second, "undelivered", error_code="30006") == 204
        record = await daemon.store.run(daemon.store.message, second_id)
        assert record["status"] == "failed" and record["detail"] == "30006"
        [failed] = [
            e for e in await daemon.store.run(daemon.store.events_of, "c-2") if e["type"] == "message.failed"
        ]
        data = failed["data"] if isinstance(failed["data"], dict) else json.loads(failed["data"])
        assert (data["reason"], data["detail"]) == ("address_invalid", "30006")
        customer = await daemon.store.run(daemon.store.customer, "c-2")
        assert "sms" in customer.unreachable


async def test_whatsapp_template_and_callbacks_through_the_daemon(project: Path, twilio) -> None:
    public_url = twilio_project(project, twilio.base_url)
    async with running(project) as daemon:
        await post_events(daemon, [signup("w-1", "c-3", "+15557770003", "whatsapp.optin")])
        received = await sent_to(twilio, daemon, "whatsapp:+15557770003")
        mid = message_id(received)
        assert received.form["From"] == "whatsapp:+15550001111"
        assert received.form["ContentSid"] == CONTENT_SID and "Body" not in received.form
        assert json.loads(received.form["ContentVariables"]) == {"1": "C-3", "2": "C-3"}
        assert received.form["StatusCallback"] == f"{public_url}/callbacks/whatsapp?m={mid}"

        # a callback for the WhatsApp message signed for the SMS endpoint is refused
        sms_url = received.form["StatusCallback"].replace("/callbacks/whatsapp", "/callbacks/sms")
        params = {"MessageSid": received.sid, "MessageStatus": "delivered"}
        assert await twilio.callback(received, "delivered", signature=twilio.sign(sms_url, params)) == 403

        assert await twilio.callback(received, "delivered") == 204
        assert await twilio.callback(received, "read") == 204
        record = await daemon.store.run(daemon.store.message, mid)
        assert record["status"] == "delivered" and record["opened_at"]
        types = [e["type"] for e in await daemon.store.run(daemon.store.events_of, "c-3")]
        assert {"message.sent", "message.delivered", "message.opened"} <= set(types)

        assert await twilio.callback(received, "failed", error_code="21610") == 204
        [failed] = [
            e for e in await daemon.store.run(daemon.store.events_of, "c-3") if e["type"] == "message.failed"
        ]
        data = failed["data"] if isinstance(failed["data"], dict) else json.loads(failed["data"])
        assert (data["reason"], data["detail"]) == ("opted_out", "21610")
        customer = await daemon.store.run(daemon.store.customer, "c-3")
        assert "whatsapp" in customer.opt_outs  # they replied STOP: no more WhatsApp for them


# the real daemon process


@pytest.mark.slow
async def test_boomerang_run_sends_an_sms_and_records_the_delivery(project: Path, twilio) -> None:
    twilio_project(project, twilio.base_url, whatsapp_too=False)
    port = int(os.environ["BOOMERANG_PORT"])
    log = project / "daemon.log"

    def status(mid: str) -> str | None:
        with project_database(project) as db:
            row = db.execute("SELECT status FROM messages WHERE id = ?", [mid]).fetchone()
        return row[0] if row else None

    async with daemon_process(project, log):
        async with aiohttp.ClientSession() as session:
            event = json.dumps(signup("e-1", "c-9", "+15557770009"))
            headers = {"Authorization": f"Bearer {API_TOKEN}"}
            async with session.post(f"http://127.0.0.1:{port}/events", data=event, headers=headers) as answer:
                assert answer.status == 200

            async def sent() -> bool:
                return bool(twilio.requests) and status(message_id(twilio.requests[0])) == "sent"

            await wait_for(sent)
        [received] = twilio.requests
        assert received.form["To"] == "+15557770009" and received.form["Body"] == "Hi C-9, welcome!"
        assert await twilio.callback(received, "delivered") == 204
        assert status(message_id(received)) == "delivered"
        with project_database(project) as db:
            types = [row[0] for row in db.execute("SELECT type FROM events WHERE customer_id = 'c-9'")]
        assert "message.delivered" in types
