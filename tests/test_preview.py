"""`boomerang preview`: a template as one customer would get it."""

from __future__ import annotations

import json
import re
from pathlib import Path

from click.testing import CliRunner

from boomerang.cli import cli
from boomerang.ingest import parse_events
from boomerang.store import Store

DATA = {
    "customer": {"id": "c-1", "email": "anna@example.com", "name": "Анна", "locale": "ru"},
    "data": {
        "cart": {
            "url": "https://shop.example/cart/1",
            "total": 79.9,
            "currency": "EUR",
            "items": [{"name": "Bicycle", "price": 79.9, "qty": 1, "url": "https://shop.example/p/1"}],
        },
        "promo": {"percent": 10, "expires_hours": 48},
    },
}


def preview(project: Path, *args: str):
    return CliRunner().invoke(cli, ["preview", "--config", str(project / "boomerang.yaml"), *args])


def test_preview_from_a_data_file_in_the_customers_locale(project: Path, tmp_path: Path) -> None:
    data = tmp_path / "data.json"
    data.write_text(json.dumps(DATA))
    result = preview(project, "cart_offer", "--channel", "email", "--data", str(data))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[:4] == [
        "Channel:  email",
        "To:       anna@example.com",
        "Locale:   ru",
        "Subject:  Скидка 10% на товары из корзины",
    ]
    assert "Bicycle (https://shop.example/p/1) — 1 \u00d7 79,90\u00a0€" in lines
    assert "--- HTML ---" in lines


def test_preview_a_stored_customer_with_their_latest_event(project: Path) -> None:
    from boomerang.config import load_config
    from boomerang.ingest import parse_body

    config = load_config(project / "boomerang.yaml")
    raw = {
        "id": "e-1",
        "type": "cart.updated",
        "at": "2026-03-02T10:00:00Z",
        "customer": {"id": "c-7", "email": "olena@example.com", "name": "Олена", "locale": "uk"},
        "data": DATA["data"],
    }
    store = Store(config.database)
    from datetime import UTC, datetime

    store.ingest(parse_events(parse_body(json.dumps(raw))), datetime.now(UTC))
    store.close()
    result = preview(project, "cart_reminder", "--channel", "email", "--customer", "olena@example.com")
    assert result.exit_code == 0, result.output
    assert "Subject:  Ви забули товари в кошику" in result.stdout
    assert "Вітаємо, Олена!" in result.stdout


def test_unknown_template_channel_or_customer_is_a_clear_error(project: Path) -> None:
    result = preview(project, "cart_ofer", "--channel", "email")
    assert result.exit_code == 1 and "no template named 'cart_ofer'" in result.stderr
    result = preview(project, "cart_reminder_2", "--channel", "push")
    assert result.exit_code == 1
    assert "has no push version; it has: email, sms, telegram, whatsapp" in result.stderr
    result = preview(project, "cart_reminder", "--channel", "email", "--customer", "nobody")
    assert result.exit_code == 1 and "no customer 'nobody'" in result.stderr
    assert "Traceback" not in result.output


def test_a_data_file_nested_too_deep_is_a_clear_error(project: Path, tmp_path: Path) -> None:
    data = tmp_path / "deep.json"
    data.write_text('{"data": ' + "[" * 100_000 + "]" * 100_000 + "}")
    result = preview(project, "cart_reminder", "--channel", "email", "--data", str(data))
    assert result.exit_code == 1, result.output
    assert "deep.json: the JSON is nested 100001 levels deep" in result.stderr
    assert "Traceback" not in result.output


def test_a_name_the_data_does_not_have_is_an_error_not_an_empty_string(project: Path, tmp_path: Path) -> None:
    folder = project / "templates" / "oops"
    folder.mkdir()
    (folder / "email.en.html").write_text(
        '---\nsubject: Hi\n---\n<p>{{ cart.url }} {{ promo.code }}</p><a href="{{ ordr.url }}">order</a>\n'
    )
    data = tmp_path / "data.json"
    data.write_text(json.dumps(DATA))
    result = preview(project, "oops", "--channel", "email", "--data", str(data))
    assert result.exit_code == 1
    assert "cannot render" in result.output and "'ordr' is undefined" in result.output
    assert "Traceback" not in result.output
    # A key the data lacks (the promo has no code) is still nothing: only unknown names fail.
    (folder / "email.en.html").write_text("---\nsubject: Hi\n---\n<p>{{ cart.url }}{{ promo.code }}</p>\n")
    result = preview(project, "oops", "--channel", "email", "--data", str(data))
    assert result.exit_code == 0, result.output
    assert "<p>https://shop.example/cart/1</p>" in result.output


def test_a_locale_is_chosen_and_a_steps_promo_reads_as_it_will(project: Path) -> None:
    result = preview(project, "cart_offer", "--channel", "email", "--locale", "uk")
    assert result.exit_code == 0, result.output
    assert "Locale:   uk" in result.stdout
    # abandoned_cart.yaml sends cart_offer with `promo: {provider: local, percent: 10, expires: 48h}`
    assert "Subject:  Знижка 10% на товари з кошика" in result.stdout
    assert "наступні 48 год. на них знижка 10%" in result.stdout
    # a sample code of the local provider's look, with the demo's prefix, issued nowhere
    code = r"Ваш особистий промокод: <b>BMR(-[A-HJKMNP-Z2-9]{4}){3}</b>"
    assert re.search(code, result.stdout), result.stdout
    # no customer named: the sample one of the locale, with a sample cart whose items have links
    assert "Вітаємо, Ганна!" in result.stdout and "https://shop.example/p/bk-29" in result.stdout
    result = preview(project, "cart_offer", "--channel", "email", "--locale", "de")
    assert result.exit_code == 1 and "has no de email version; it has: en, ru, uk" in result.stderr


def test_sms_segments_show_with_a_phone_from_the_data_though_sms_is_not_configured(
    project: Path, tmp_path: Path
) -> None:
    assert "sms:" not in (project / "boomerang.yaml").read_text()
    data = tmp_path / "data.json"
    data.write_text(json.dumps({"customer": {"id": "c-1", "phone": "+15551234567", "locale": "en"}}))
    result = preview(project, "birthday_gift", "--channel", "sms", "--data", str(data))
    assert result.exit_code == 0, result.output
    assert "To:       +15551234567" in result.stdout
    assert "BIRTHDAY20" in result.stdout  # the step's own code
    assert "SMS segment" in result.stdout and "GSM-7" in result.stdout
    assert "not configured" not in result.stdout


def test_out_writes_the_preview_as_a_page(project: Path, tmp_path: Path) -> None:
    page = tmp_path / "cart_offer.html"
    result = preview(project, "cart_offer", "--channel", "sms", "--locale", "en", "--out", str(page))
    assert result.exit_code == 0, result.output
    text = page.read_text()
    assert (text.startswith("<!doctype html>") and "SAMPLE10" not in text) or "10%" in text
    assert 'data-template="cart_offer" data-channel="sms"' in text


def test_all_puts_every_template_channel_and_locale_on_one_page(project: Path, tmp_path: Path) -> None:
    page = tmp_path / "gallery.html"
    result = preview(project, "--all", "--out", str(page))
    assert result.exit_code == 0, result.output
    text = page.read_text()
    templates = sorted(path.name for path in (project / "templates").iterdir())
    files = sorted((project / "templates").glob("*/*.*"))
    assert text.count('<section class="card"') == len(files)
    assert all(f'<h2 id="{name}">' in text for name in templates)
    # self-contained: nothing to load but an empty data: icon
    assert "src=" not in text.replace("srcdoc=", "") and text.count("<link") == 1 and "<script" not in text
    assert "https://shop.example/p/bk-29" in text  # the sample cart's item links
    assert "GSM-7" in text or "UCS-2" in text
    assert f"{len(files)} previews" in result.stdout


def test_a_template_that_fails_shows_its_error_in_its_card_and_exits_1(project: Path, tmp_path: Path) -> None:
    broken = "{{ cart.items | sum(attribute='nope') }}\n"  # fails when rendered, not when loaded
    (project / "templates" / "cart_reminder" / "sms.en.txt").write_text(broken)
    page = tmp_path / "gallery.html"
    result = preview(project, "--all", "--out", str(page))
    assert result.exit_code == 1
    assert "cart_reminder sms en: cannot render" in result.stderr
    text = page.read_text()
    assert text.count('class="card failed"') == 1 and "cannot render" in text
    assert '<section class="card" data-template="cart_reminder" data-channel="email"' in text


def test_all_takes_no_template(project: Path, tmp_path: Path) -> None:
    result = preview(project, "cart_offer", "--all", "--out", str(tmp_path / "g.html"))
    assert result.exit_code == 2 and "--all takes only --out" in result.stderr
    result = preview(project, "--all")
    assert result.exit_code == 2
