# ruff: noqa: RUF001, RUF003  (the expected texts are Russian and Ukrainian on purpose)
"""Money, numbers and dates as each locale writes them: the `money`, `number`, `date` and
`datetime` filters, in template bodies and front matter, on the customer's clock."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from boomerang.cli import cli
from boomerang.expressions import Scope, evaluating, make_environment, render
from boomerang.kinds import Channel
from boomerang.templates import load_templates

NBSP = "\u00a0"  # Babel's spaces that never break a line: in numbers and before a symbol
NNBSP = "\u202f"  # and before "г." and "PM"
EVENING = datetime(2026, 3, 3, 21, 30, tzinfo=UTC)  # 4 March, 00:30 in Moscow


class Email(Channel):
    name = "email"
    extensions = ("html", "txt")
    front_matter = {"subject": str}


def library(tmp_path: Path, files: dict[str, str]):
    folder = tmp_path / "templates" / "receipt"
    folder.mkdir(parents=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    templates, problems = load_templates(tmp_path / "templates", {}, {"email": Email})
    assert problems == []
    return templates.get("receipt")


def written(text: str, locale: str, zone: str = "UTC", **names) -> str:
    template = make_environment(autoescape=True).from_string(text)
    with evaluating(Scope(locale=locale, zone=ZoneInfo(zone))):
        return render(template, names)


@pytest.mark.parametrize(
    ("locale", "euros", "roubles", "hryvnias"),
    [
        ("ru", f"79,90{NBSP}€", f"1{NBSP}290{NBSP}₽", f"1{NBSP}250,50{NBSP}₴"),
        ("uk", f"79,90{NBSP}€", f"1{NBSP}290{NBSP}₽", f"1{NBSP}250,50{NBSP}₴"),
        ("en", "€79.90", "₽1,290", "₴1,250.50"),
    ],
)
def test_money_as_each_locale_writes_it(locale: str, euros: str, roubles: str, hryvnias: str) -> None:
    text = "{{ a | money('EUR') }}|{{ b | money('RUB') }}|{{ c | money('uah') }}"
    assert written(text, locale, a=79.9, b=1290, c="1250.5") == f"{euros}|{roubles}|{hryvnias}"


@pytest.mark.parametrize(
    ("locale", "number", "fixed"),
    [
        ("ru", f"1{NBSP}234{NBSP}567,5", "3,00"),
        ("uk", f"1{NBSP}234{NBSP}567,5", "3,00"),
        ("en", "1,234,567.5", "3.00"),
    ],
)
def test_numbers_as_each_locale_writes_them(locale: str, number: str, fixed: str) -> None:
    assert written("{{ n | number }}|{{ 3 | number(2) }}", locale, n=1234567.5) == f"{number}|{fixed}"


@pytest.mark.parametrize(
    ("locale", "day", "moment"),
    [
        ("ru", f"3 марта 2026{NNBSP}г.", f"3 марта 2026{NNBSP}г., 21:30"),
        ("uk", f"3 березня 2026{NNBSP}р.", f"3 березня 2026{NNBSP}р., 21:30"),
        ("en", "March 3, 2026", f"March 3, 2026, 9:30{NNBSP}PM"),
    ],
)
def test_dates_as_each_locale_writes_them(locale: str, day: str, moment: str) -> None:
    assert written("{{ at | date }}|{{ at | datetime }}", locale, at=EVENING) == f"{day}|{moment}"


def test_dates_are_on_the_customers_clock_across_midnight() -> None:
    # 21:30 UTC on 3 March is already 4 March in Moscow and still 3 March in New York; ISO text
    # (as event data carries it) is read the same as a datetime.
    text = "{{ at | date }}|{{ at | datetime('short') }}|{{ iso | date('d MMMM') }}"
    iso = "2026-03-03T21:30:00Z"
    assert (
        written(text, "ru", "Europe/Moscow", at=EVENING, iso=iso)
        == f"4 марта 2026{NNBSP}г.|04.03.2026, 00:30|4 марта"
    )
    assert (
        written(text, "en", "America/New_York", at=EVENING, iso=iso)
        == f"March 3, 2026|3/3/26, 4:30{NNBSP}PM|3 March"
    )


def test_nothing_prints_as_nothing_and_bad_input_is_a_clear_render_error() -> None:
    empty = (
        "[{{ none | money('EUR') }}{{ missing.total | money('EUR') }}{{ none | date }}{{ none | number }}]"
    )
    assert written(empty, "ru", none=None, missing={}) == "[]"
    assert written("{{ 5 | money(none) }}", "en", none=None) == "5.00"  # no currency: the sum alone
    assert written("{{ 5 | money('XYZ') }}", "ru") == f"5{NBSP}XYZ"  # a code Babel does not know
    for text, names, message in [
        ("{{ 'abc' | money('EUR') }}", {}, "money: expected a number, got 'abc'"),
        ("{{ 5 | money('euro') }}", {}, "money: the currency must be a code such as EUR or RUB, got 'euro'"),
        ("{{ x | money('EUR') }}", {"x": [1, 2]}, "money: expected a number, got a list"),
        ("{{ true | number }}", {}, "number: expected a number, got True"),
        ("{{ 5 | number(99) }}", {}, "number: the digits must be a whole number from 0 to 10, got 99"),
        (
            "{{ 'soon' | date }}",
            {},
            "date: expected a date or a time such as 2026-03-03T10:00:00Z, got 'soon'",
        ),
        ("{{ 7 | datetime }}", {}, "datetime: expected a date or a time, got a int"),
        (
            "{{ now | date('y' * 100) }}",
            {"now": EVENING},
            "date: the format is one of short, medium, long, full",
        ),
        ("{{ now | date('xyz') }}", {"now": EVENING}, "date: cannot write the format 'xyz'"),
        ("{{ '1e99999' | number }}", {}, "number: expected a number of at most 18 digits, got '1e99999'"),
    ]:
        with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
            written(text, "en", **names)


def test_the_templates_file_locale_and_the_customers_clock_in_body_and_subject(tmp_path: Path) -> None:
    template = library(
        tmp_path,
        {
            "email.ru.html": '---\nsubject: "Заказ на {{ order.total | money(order.currency) }}"\n---\n'
            "<p>Оформлен {{ order.created_at | date }}</p>",
            "email.en.html": '---\nsubject: "Your order of {{ order.total | money(order.currency) }}"\n---\n'
            "<p>Placed on {{ order.created_at | date }}</p>",
        },
    )
    names = {"order": {"total": 1290, "currency": "RUB", "created_at": "2026-03-03T21:30:00Z"}}
    with evaluating(Scope(zone=ZoneInfo("Europe/Moscow"))):
        russian = template.render("email", ["ru"], names)
        # A customer whose locale has no file gets the English one, written in English.
        english = template.render("email", ["de", "en"], names)
    assert (russian.subject, russian.html) == (
        f"Заказ на 1{NBSP}290{NBSP}₽",
        f"<p>Оформлен 4 марта 2026{NNBSP}г.</p>",
    )
    assert (english.subject, english.html) == ("Your order of ₽1,290", "<p>Placed on March 4, 2026</p>")
    with evaluating(Scope()):
        # The customer's own variant of the file's language: en_GB writes the day first.
        british = template.render("email", ["en_GB"], names)
    assert british.html == "<p>Placed on 3 March 2026</p>"


def test_check_knows_the_filters_and_preview_uses_them(project: Path, tmp_path: Path) -> None:
    folder = project / "templates" / "cart_reminder"
    (folder / "email.ru.html").write_text(
        '---\nsubject: "Корзина на {{ cart.total | money(cart.currency) }}"\n---\n'
        "<p>{{ cart.total | monye(cart.currency) }}</p>",
        encoding="utf-8",
    )
    config = str(project / "boomerang.yaml")
    result = CliRunner().invoke(cli, ["check", "--config", config])
    assert result.exit_code == 1
    assert "email.ru.html:4:1: error: template syntax: No filter named 'monye'" in result.output
    (folder / "email.ru.html").write_text(
        '---\nsubject: "Корзина на {{ cart.total | money(cart.currency) }}"\n---\n'
        "<p>{{ cart.total | money(cart.currency) }}, {{ event.at | date }}</p>",
        encoding="utf-8",
    )
    result = CliRunner().invoke(cli, ["check", "--config", config])
    assert "email.ru.html" not in result.output, result.output
    data = tmp_path / "data.json"
    customer = {"id": "c-1", "email": "anna@example.com", "locale": "ru", "timezone": "Asia/Vladivostok"}
    data.write_text(json.dumps({"customer": customer, "data": {"cart": {"total": 79.9, "currency": "EUR"}}}))
    result = CliRunner().invoke(
        cli, ["preview", "cart_reminder", "--config", config, "--channel", "email", "--data", str(data)]
    )
    assert result.exit_code == 0, result.output
    assert f"Subject:  Корзина на 79,90{NBSP}€" in result.output
    (folder / "email.ru.html").write_text(
        '---\nsubject: "-"\n---\n<p>{{ "abc" | money("EUR") }}</p>', encoding="utf-8"
    )
    result = CliRunner().invoke(
        cli, ["preview", "cart_reminder", "--config", config, "--channel", "email", "--data", str(data)]
    )
    assert result.exit_code == 1
    assert "cannot render: ValueError: money: expected a number, got 'abc'" in result.output
