"""The unsubscribe link in a marketing email's body and the page it leads to: the customer's
language, and only the channels they can be reached on; tested on the wire of the daemon."""

from __future__ import annotations

import email
import email.policy
import json
import re
from pathlib import Path

import aiohttp
from click.testing import CliRunner

from boomerang.cli import cli
from boomerang.config import load_config
from conftest import AUTH, event, running, url, wait_for

SCENARIO = """\
scenario: hello
category: trigger
trigger: {event: cart.updated}
steps:
  - send: cart_reminder
    channels: [email]
"""
CART = {"cart": {"url": "https://shop.example/cart", "total": 79.9, "currency": "EUR", "items": []}}


def set_up(project: Path) -> None:
    """One marketing email at once on a cart, and SMS configured beside email (in the outbox)."""
    for old in (project / "scenarios").glob("*.yaml"):
        old.unlink()
    (project / "scenarios" / "hello.yaml").write_text(SCENARIO)
    config = project / "boomerang.yaml"
    sms = '  sms: {account_sid: AC0123456789abcdef0123456789abcdef, auth_token: t, from: "+15550001111"}\n'
    config.write_text(config.read_text().replace("channels:\n", "channels:\n" + sms, 1))


async def emailed(project: Path, customer_id: str) -> email.message.EmailMessage:
    """The email the outbox holds for a customer (its `To` names them)."""

    def found() -> email.message.EmailMessage | None:
        for file in (project / "outbox").glob("*-email-*.eml"):
            mail = email.message_from_bytes(file.read_bytes(), policy=email.policy.default)
            if mail["To"].startswith(customer_id):
                return mail
        return None

    return await wait_for(found, what=f"an email to {customer_id}")


async def test_the_body_links_the_page_in_the_customers_language_with_their_channels(project: Path) -> None:
    set_up(project)
    customers = [
        {"id": "c-ru", "email": "c-ru@example.com", "phone": "+79161234567", "locale": "ru"},
        {"id": "c-uk", "email": "c-uk@example.com", "locale": "uk"},
        {"id": "c-de", "email": "c-de@example.com", "phone": "+4915112345678", "locale": "de"},
    ]
    async with running(project) as daemon, aiohttp.ClientSession() as session:
        events = [event(f"e-{c['id']}", customer=c, data=CART) for c in customers]
        async with session.post(url(daemon, "/events"), json=events, headers=AUTH) as answer:
            assert answer.status == 200
        pages = {}
        for customer in customers:
            mail = await emailed(project, customer["id"])
            header = mail["List-Unsubscribe"]
            page = re.search(r"<(https?://[^>]+/u/[^>]+)>", header)[1]
            html = mail.get_body(("html",)).get_content()
            # The footer's link is the page of this very message, left out of click tracking.
            assert f'href="{page}"' in html
            assert html.count("/c/") == 1  # the cart link is tracked, the unsubscribe link is not
            pages[customer["id"]] = url(daemon, "/u/" + page.rsplit("/u/", 1)[1])

        async with session.get(pages["c-ru"]) as answer:
            assert answer.status == 200
            body = await answer.read()
        assert '<html lang="ru">' in body.decode()
        assert "Больше не присылать сообщения по каналам:".encode() in body
        assert 'value="email" checked> электронная почта'.encode() in body
        assert b'value="sms"> SMS' in body
        assert "Отписаться".encode() in body

        async with session.get(pages["c-uk"]) as answer:
            body = await answer.read()
        assert 'value="email" checked> електронна пошта'.encode() in body
        assert "Відписатися".encode() in body
        assert b'value="sms"' not in body  # no phone: SMS cannot reach them

        async with session.get(pages["c-de"]) as answer:
            body = await answer.read()
        assert b'<html lang="en">' in body and b"Stop messages over:" in body  # no German page
        assert b'value="email" checked> email' in body and b'value="sms"> SMS' in body

        # Opted out of SMS, they are not offered it again; the answer is in their language.
        async with session.post(pages["c-ru"], data={"channel": "sms"}) as answer:
            assert answer.status == 200
            assert "Вы больше не будете получать сообщения по каналам: SMS.".encode() in await answer.read()
        async with session.get(pages["c-ru"]) as answer:
            body = await answer.read()
        assert 'value="email" checked> электронная почта'.encode() in body
        assert b'value="sms"' not in body
        customer = await daemon.store.run(daemon.store.customer, "c-ru")
        assert list(customer.opt_outs) == ["sms"]


async def test_a_transactional_email_has_no_unsubscribe_link(project: Path) -> None:
    set_up(project)
    scenario = project / "scenarios" / "hello.yaml"
    scenario.write_text(SCENARIO.replace("category: trigger", "category: transactional"))
    template = project / "templates" / "cart_reminder" / "email.en.html"
    template.write_text(template.read_text() + "<p>[{{ unsubscribe_url }}|{{ preferences_url }}]</p>\n")
    customer = {"id": "c-en", "email": "c-en@example.com", "locale": "en"}
    async with running(project) as daemon, aiohttp.ClientSession() as session:
        async with session.post(
            url(daemon, "/events"), json=event("e-1", customer=customer, data=CART), headers=AUTH
        ) as answer:
            assert answer.status == 200
        mail = await emailed(project, "c-en")
    html = mail.get_body(("html",)).get_content()
    assert "<p>[|]</p>" in html and "/u/" not in html
    assert mail["List-Unsubscribe"] is None


def test_simulate_and_preview_render_a_sample_link(project: Path, tmp_path: Path) -> None:
    set_up(project)
    config = str(project / "boomerang.yaml")
    customer = {"id": "c-ru", "email": "c-ru@example.com", "locale": "ru"}
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(event("e-1", customer=customer, data=CART)) + "\n")
    rehearsal = tmp_path / "rehearsal"
    result = CliRunner().invoke(
        cli, ["simulate", "--config", config, "--events", str(events), "--outbox", str(rehearsal)]
    )
    assert result.exit_code == 0, result.output
    [page] = rehearsal.glob("*.html")
    sample = f"{load_config(project / 'boomerang.yaml').public_url}/u/sample"  # the demo's port
    assert f'href="{sample}">Отписаться</a>' in page.read_text()
    result = CliRunner().invoke(cli, ["preview", "cart_reminder", "--config", config, "--channel", "email"])
    assert result.exit_code == 0, result.output
    assert f'href="{sample}">Unsubscribe</a>' in result.output
