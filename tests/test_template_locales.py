"""Which version of a template a customer gets: their locale, then `default_locale`, then the
file with no locale in its name (`sms.txt`), then `en`."""

from __future__ import annotations

from pathlib import Path

import pytest

from boomerang.plugins.channels.email import EmailChannel
from boomerang.plugins.channels.sms import SmsChannel
from boomerang.templates import load_templates, wanted_locales

CONTEXT = {"customer": {"name": "Anna"}}


def versions(tmp_path: Path, *files: str):
    folder = tmp_path / "templates" / "hello"
    folder.mkdir(parents=True)
    for name in files:
        front = '---\nsubject: "{{ customer.name }}"\n---\n' if name.startswith("email") else ""
        (folder / name).write_text(f"{front}{name} for {{{{ customer.name }}}}\n")
    library, problems = load_templates(
        tmp_path / "templates", None, {"sms": SmsChannel, "email": EmailChannel}
    )
    assert problems == []
    template = library.get("hello")
    assert template is not None
    return template


@pytest.mark.parametrize(
    ("customer_locale", "files", "chosen"),
    [
        ("ru", ["sms.txt", "sms.ru.txt", "sms.uk.txt", "sms.en.txt"], "sms.ru.txt"),
        ("ru-RU", ["sms.txt", "sms.ru.txt", "sms.en.txt"], "sms.ru.txt"),
        ("de", ["sms.txt", "sms.uk.txt", "sms.en.txt"], "sms.uk.txt"),  # default_locale
        ("de", ["sms.txt", "sms.en.txt"], "sms.txt"),  # the neutral file before en
        (None, ["sms.txt", "sms.en.txt"], "sms.txt"),
        ("de", ["sms.ru.txt", "sms.en.txt"], "sms.en.txt"),
        ("de", ["sms.ru.txt"], "sms.ru.txt"),  # whatever there is
    ],
)
def test_the_version_chosen(
    tmp_path: Path, customer_locale: str | None, files: list[str], chosen: str
) -> None:
    template = versions(tmp_path, *files)
    rendered = template.render("sms", wanted_locales(customer_locale, "uk"), CONTEXT)
    assert rendered.body == f"{chosen} for Anna"


def test_a_neutral_email_has_its_subject_and_html(tmp_path: Path) -> None:
    template = versions(tmp_path, "email.html", "email.ru.html")
    assert template.locales("email") == ["", "ru"]
    rendered = template.render("email", wanted_locales("de", "en"), CONTEXT)
    assert (rendered.locale, rendered.subject) == ("", "Anna")
    assert rendered.html == "email.html for Anna"
