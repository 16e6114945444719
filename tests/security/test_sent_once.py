"""Each message is sent once (issue 9, section 3).

A send cut off by `kill -9` after the provider took the message and before the store recorded
it is settled at the next start: marketing is not sent again (at most once, marked `unknown`,
shown by `explain`, counted by `/metrics`); transactional goes again with the same idempotency
key, so every copy carries one `Message-ID`. A send that outlasts its job's lease is not
claimed and sent a second time by the daemon still running it. The SMTP server is a real
aiosmtpd, the daemon the real `boomerang run`, the window a real drop-in plugin.

A reload closes the old channels while sends are under way on them (section 5): those sends
finish on the connections they hold, which are then closed, and nothing is opened afterwards.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sqlite3
import subprocess
import time
import urllib.request
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_channel_telegram import TOKEN, channel_for

import conftest
from boomerang import scheduler
from boomerang.config import load_config
from boomerang.model import DeliveryStatus, Message
from boomerang.plugins.channels import sms, whatsapp
from boomerang.plugins.channels.email import EmailChannel
from boomerang.plugins.channels.push import PushChannel, load_private_key, write_key_pair
from fakes.push_service import PushService
from fakes.smtp_server import header
from fakes.telegram_api import FakeBotApi
from fakes.twilio_server import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio

SCENARIO = """\
scenario: order-mail
category: {category}
trigger: {{event: order.placed}}
steps:
  - send: order_mail
    channels: [email]
"""

# A drop-in plugin that holds the daemon in the window between the SMTP server's answer and
# the store's record of it, and says so by writing a file beside the config.
SLOW_HOOK = '''\
"""Sleeps in message_finished: the send is done, the store does not know yet."""

import asyncio
from pathlib import Path

from boomerang import hookimpl


@hookimpl
async def message_finished(message, delivery):
    (Path(__file__).parent.parent / "in-the-window").write_text(message.id)
    await asyncio.sleep(600)  # a sleep on purpose: hold the window open until the test kills the daemon
'''


def mail_project(project: Path, smtp_port: int, category: str) -> None:
    """The project sends the one scenario's email to the test's SMTP server, not to the outbox."""
    config = project / "boomerang.yaml"
    text = config.read_text().replace("outbox: ./outbox\n", "").replace("port: 25,", f"port: {smtp_port},")
    config.write_text(text)
    for old in (project / "scenarios").glob("*.yaml"):
        old.unlink()
    (project / "scenarios" / "order-mail.yaml").write_text(SCENARIO.format(category=category))
    (project / "templates" / "order_mail").mkdir()
    (project / "templates" / "order_mail" / "email.en.html").write_text(
        "---\nsubject: Your order\n---\n<p>Thank you for your order.</p>\n"
    )


def order(event_id: str, customer: str = "c-1") -> dict:
    """An order.placed event for a customer with an email address."""
    return conftest.event(event_id, "order.placed", id=customer, email=f"{customer}@example.com")


def post(port: int, item: dict) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/events", data=json.dumps(item).encode(), headers=conftest.AUTH
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200


def unknown(metrics: str) -> float:
    """`boomerang_messages_total{result="unknown"}` of a scrape, over every channel."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "boomerang_messages_total" and sample.labels["result"] == "unknown"
    )


def settled(project: Path) -> str | None:
    """The message's status once no send job is left, else None."""
    with conftest.project_database(project) as db:
        jobs = db.execute("SELECT count(*) FROM jobs WHERE kind = 'send'").fetchone()[0]
        row = db.execute("SELECT status FROM messages").fetchone()
    return row[0] if row and jobs == 0 else None


@pytest.mark.slow
@pytest.mark.parametrize("category", ["trigger", "promo", "transactional"])
def test_kill_between_the_provider_and_the_store(
    project: Path, smtp, tmp_path: Path, category: str, request: pytest.FixtureRequest
) -> None:
    mailbox, smtp_port = smtp
    mail_project(project, smtp_port, category)
    hook = project / "plugins" / "slow_hook.py"
    hook.write_text(SLOW_HOOK)
    window = project / "in-the-window"
    port = int(os.environ["BOOMERANG_PORT"])
    log = tmp_path / "daemon.log"
    lease = conftest.killed_daemons_lease(request)
    process = conftest.start_daemon(project, log, lease)
    try:
        conftest.wait_until_serving(port)
        post(port, order("o-1"))
        conftest.wait_until(window.exists, 40)
        assert len(mailbox.raw) == 1  # the SMTP server took it; the store still says `sending`
        process.kill()
        process.wait()
        hook.unlink()
        process = conftest.start_daemon(project, log, lease)
        conftest.wait_until_serving(port)
        conftest.wait_until(lambda: settled(project), 60)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            metrics = answer.read().decode()
        process.terminate()
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    status = settled(project)
    explained = subprocess.run(
        [conftest.BOOMERANG, "explain", "c-1", "--config", str(project / "boomerang.yaml")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if category == "transactional":
        # sent again, recognisably the same message: one Message-ID on every copy
        assert status == "sent"
        assert len(mailbox.raw) == 2
        assert len({header(raw, b"Message-ID") for raw in mailbox.raw}) == 1
        assert len({header(raw, b"X-Boomerang-Message-Id") for raw in mailbox.raw}) == 1
        assert unknown(metrics) == 0
    else:
        # marketing goes at most once: not sent again, and said so
        assert len(mailbox.raw) == 1, log.read_text()
        assert status == "unknown"
        assert unknown(metrics) == 1
        [line] = [line for line in explained.splitlines() if " unknown " in line]
        assert "order_mail email" in line and "not sent again" in line


@pytest.mark.slow
async def test_a_transactional_send_cut_off_goes_again_to_the_same_provider(
    project: Path, smtp, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Had the message gone to another channel the second time, the key would mean nothing there."""
    mailbox, smtp_port = smtp
    twilio = FakeTwilio()
    await twilio.start()
    mail_project(project, smtp_port, "transactional")
    scenario = project / "scenarios" / "order-mail.yaml"
    scenario.write_text(scenario.read_text().replace("channels: [email]", "channels: [sms, email]"))
    (project / "templates" / "order_mail" / "sms.en.txt").write_text("Thank you for your order.\n")
    config = project / "boomerang.yaml"
    sms_settings = (
        f'  sms: {{account_sid: {ACCOUNT_SID}, auth_token: {AUTH_TOKEN}, from: "+15550001111",'
        f" api_base: {twilio.base_url}}}\n"
    )
    plan = "contact_plan:\n  channels: {sms: {cost: 0}, email: {cost: 0.001}}\n"  # SMS, once it can
    text = config.read_text().replace("channels:\n", "channels:\n" + sms_settings)
    config.write_text(text.replace("contact_plan:\n", plan, 1))
    (project / "plugins" / "slow_hook.py").write_text(SLOW_HOOK)
    port = int(os.environ["BOOMERANG_PORT"])
    log = tmp_path / "daemon.log"
    lease = conftest.killed_daemons_lease(request)
    process = conftest.start_daemon(project, log, lease)
    try:
        await asyncio.to_thread(conftest.wait_until_serving, port)
        await asyncio.to_thread(post, port, order("o-1"))  # no phone yet: it goes by email
        await conftest.wait_for((project / "in-the-window").exists, 40)
        # in the window, the customer gives a phone number: SMS is now the better channel
        phone = {**order("u-1"), "type": "customer.updated"}
        phone["customer"] = {**phone["customer"], "phone": "+15557770001"}
        await asyncio.to_thread(post, port, phone)
        process.kill()
        await asyncio.to_thread(process.wait)
        (project / "plugins" / "slow_hook.py").unlink()
        process = conftest.start_daemon(project, log, lease)
        await asyncio.to_thread(conftest.wait_until_serving, port)
        await conftest.wait_for(lambda: settled(project), 60)
        process.terminate()
        assert await asyncio.to_thread(process.wait, 15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        await twilio.stop()
    assert twilio.requests == [], log.read_text()
    assert len(mailbox.raw) == 2
    assert len({header(raw, b"Message-ID") for raw in mailbox.raw}) == 1


async def test_a_send_longer_than_its_lease_is_sent_once(project: Path, smtp, monkeypatch) -> None:
    mailbox, smtp_port = smtp
    mail_project(project, smtp_port, "trigger")
    # 150 s under a 120 s lease, shrunk: 5 s under a 2 s lease
    monkeypatch.setattr(scheduler, "LEASE_SECONDS", 2.0)
    mailbox.delay = 5.0
    async with conftest.running(project) as daemon, aiohttp.ClientSession() as session:

        async def post(item: dict) -> None:
            async with session.post(
                conftest.url(daemon, "/events"), data=json.dumps(item), headers=conftest.AUTH
            ) as answer:
                assert answer.status == 200

        def status() -> str | None:
            with conftest.project_database(project) as db:
                row = db.execute("SELECT status FROM messages").fetchone()
            return row[0] if row else None

        await post(order("o-1"))
        await conftest.wait_for(lambda: mailbox.started)
        # a sleep on purpose: the lease the send was claimed with runs out while the send goes on
        await asyncio.sleep(3)
        # A busy daemon looks at the queue again (here: another event comes in).
        await post(conftest.event("v-1", "product.viewed", id="c-2"))
        await conftest.wait_for(lambda: status() == "sent", 20)
    assert mailbox.started == 1
    assert len(mailbox.raw) == 1


def twilio_channel(tmp_path: Path, name: str, twilio: FakeTwilio) -> sms.TwilioChannel:
    """The SMS or WhatsApp channel, made by its plugin from a config, sending to the fake Twilio."""
    sender = '"+15550001111"' if name == "sms" else '"whatsapp:+15550001111"'
    path = tmp_path / "boomerang.yaml"
    path.write_text(
        f"channels:\n  {name}: {{account_sid: {ACCOUNT_SID}, auth_token: {AUTH_TOKEN},"
        f" from: {sender}, api_base: {twilio.base_url}}}\n"
    )
    [channel] = (sms if name == "sms" else whatsapp).register_channels(load_config(path))
    return channel


@pytest.mark.parametrize("name", ["sms", "whatsapp"])
async def test_twilio_gets_the_idempotency_key(tmp_path: Path, name: str) -> None:
    twilio = FakeTwilio()
    await twilio.start()
    channel = twilio_channel(tmp_path, name, twilio)
    message = Message(
        id="m-7f3a", customer_id="c-1", channel=name, to="+15557770001", template="t", body="Your order"
    )
    try:
        # the same message twice (a re-send after a crash): the same key both times
        for _ in range(2):
            assert (await channel.send(message)).status is DeliveryStatus.SENT
    finally:
        await channel.close()
        await twilio.stop()
    assert [r.headers.get("I-Twilio-Idempotency-Token") for r in twilio.requests] == ["m-7f3a", "m-7f3a"]


async def test_a_smtp_connection_held_during_close_is_quit_not_kept(smtp) -> None:
    mailbox, port = smtp
    mailbox.delay = 1.0
    channel = EmailChannel({"host": "127.0.0.1", "port": port, "from": "shop@example.com", "pool": 2})
    message = Message(
        id="m-1", customer_id="c-1", channel="email", to="a@example.com", template="t", body="x"
    )
    sending = asyncio.create_task(channel.send(message))
    await conftest.wait_for(lambda: mailbox.started)
    await channel.close()  # a reload closes the old channel while this send holds a connection
    assert (await sending).status is DeliveryStatus.SENT
    await conftest.wait_for(lambda: mailbox.quits)
    # the connection said QUIT once its send was done; none is left open in the pool
    assert (channel.pool.opened, mailbox.quits) == (1, 1)
    assert channel.pool._idle == []


async def test_twilio_close_lets_a_send_finish_and_opens_no_session_after(tmp_path: Path) -> None:
    twilio = FakeTwilio()
    await twilio.start()
    twilio.delay = 1.0
    channel = twilio_channel(tmp_path, "sms", twilio)
    message = Message(id="m-1", customer_id="c-1", channel="sms", to="+15557770001", template="t", body="Hi")
    try:
        sending = asyncio.create_task(channel.send(message))
        await conftest.wait_for(lambda: twilio.requests)
        await channel.close()  # a reload, while Twilio is still answering
        assert (await sending).status is DeliveryStatus.SENT
        late = await channel.send(dataclasses.replace(message, id="m-2"))
    finally:
        await channel.close()
        await twilio.stop()
    assert late.status is DeliveryStatus.RETRY  # the new channel sends it
    assert len(twilio.requests) == 1
    assert channel._http is None


async def test_push_close_lets_a_send_finish_and_opens_no_session_after(tmp_path: Path) -> None:
    service = PushService()
    await service.start(tmp_path)
    service.delay = 1.0
    key_file, _ = write_key_pair(tmp_path / "keys")
    channel = PushChannel(
        load_private_key(key_file),
        "mailto:ops@shop.example",
        ca_file=service.cert_file,
        allowed_hosts=("127.0.0.1",),
        allow_private_endpoints=True,  # the push service stand-in listens on loopback
    )
    subscription = service.subscribe()
    message = Message(
        id="m-1",
        customer_id="c-1",
        channel="push",
        to=json.dumps([subscription]),
        template="t",
        body="Your order is on its way",
        extra={"title": "Order", "url": "https://shop.example/o/1"},
    )
    try:
        sending = asyncio.create_task(channel.send(message))
        await service.wait_for(1)
        await channel.close()  # a reload, while the push service is still answering
        assert (await sending).status is DeliveryStatus.SENT
        late = await channel.send(dataclasses.replace(message, id="m-2"))
    finally:
        await channel.close()
        await service.stop()
    assert late.status is DeliveryStatus.RETRY  # the new channel sends it
    assert len(service.pushes) == 1
    assert channel._session is None


async def test_telegram_close_lets_a_send_finish_and_opens_no_session_after(tmp_path: Path) -> None:
    async with FakeBotApi(TOKEN) as api:
        api.delay = 1.0
        channel = channel_for(tmp_path, api)
        message = Message(
            id="m-1", customer_id="c-1", channel="telegram", to="4242", template="t", body="Your order"
        )
        try:
            sending = asyncio.create_task(channel.send(message))
            await conftest.wait_for(api.sent)
            await channel.close()  # a reload, while the Bot API is still answering
            assert (await sending).status is DeliveryStatus.SENT
            late = await channel.send(dataclasses.replace(message, id="m-2"))
        finally:
            await channel.close()
    assert late.status is DeliveryStatus.RETRY  # the new channel sends it
    assert len(api.calls_of("sendMessage")) == 1
    assert channel.bot._session is None


@pytest.mark.parametrize("category", ["trigger", "transactional"])
async def test_a_send_whose_record_failed_is_not_sent_again_if_marketing(
    project: Path, smtp, category: str
) -> None:
    """No crash: the provider took the message, then recording its answer failed (a bug, a
    full disk) and the scheduler retried the job. Marketing is settled `unknown`, not re-sent;
    transactional goes again with the same Message-ID."""
    mailbox, smtp_port = smtp
    mail_project(project, smtp_port, category)
    async with conftest.running(project) as daemon, aiohttp.ClientSession() as session:
        engine = daemon.engine
        record_delivery = engine._record_delivery
        failures = []

        def fail_once(*args, **kwargs):
            if not failures:
                failures.append(args)
                raise sqlite3.OperationalError("disk I/O error")
            return record_delivery(*args, **kwargs)

        engine._record_delivery = fail_once
        async with session.post(
            conftest.url(daemon, "/events"), data=json.dumps(order("o-1")), headers=conftest.AUTH
        ) as answer:
            assert answer.status == 200
        await conftest.wait_for(lambda: failures)
        store = daemon.store
        # the scheduler gives the job back, due in a minute: then it can be claimed (here)
        [job_id] = [
            job.id
            for job in await conftest.wait_for(lambda: store.run(store.claim_due, time.time() + 3600, 60, 10))
        ]
        await store.run(store.retry_job, job_id, time.time())  # due now rather than in a minute
        daemon.scheduler.wake()
        await conftest.wait_for(lambda: settled(project))
    if category == "transactional":
        assert settled(project) == "sent"
        assert len(mailbox.raw) == 2
        assert len({header(raw, b"Message-ID") for raw in mailbox.raw}) == 1
    else:
        assert settled(project) == "unknown"
        assert len(mailbox.raw) == 1
