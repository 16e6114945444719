"""`boomerang preview`: a template as one customer would get it."""

from __future__ import annotations

import json
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
    assert "Bicycle (https://shop.example/p/1) — 1 \u00d7 79.9 EUR" in lines
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
    result = preview(project, "cart_reminder_2", "--channel", "sms")
    assert result.exit_code == 1 and "has no sms version; it has: email" in result.stderr
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
