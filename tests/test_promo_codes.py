"""Personal promo codes are issued only once the contact plan has decided a message goes.

Mostly driven through `simulate`'s engine and scheduler on the virtual clock (the contact-plan
tests' `Rig`, with their drop-in sms/push channels), but not in dry-run: the engine asks a
drop-in promo provider for real codes, as the daemon does, and the provider counts what it
issued. The last test runs the same through the in-process daemon on the wall clock.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from test_contact_plan import (
    FALLBACK_RULE,
    QUIET,
    SMS_FIRST,
    Rig,
    configure,
    customer,
    rig_for,
    shop,
)
from test_daemon import post

from conftest import event, incoming, running, t, wait_for

# The contact-plan tests' fixtures, used here by name.
__all__ = ["rig_for", "shop"]

COUNTING = """
    from boomerang import hookimpl
    from boomerang.kinds import PromoProvider

    class Counting(PromoProvider):
        name = "counting"

        def __init__(self):
            self.issued = []

        async def issue(self, customer, spec):
            code = f"BACK{spec['percent']}-{customer.id}-{len(self.issued) + 1}"
            self.issued.append(code)
            return code

    @hookimpl
    def register_promo_providers(config):
        return [Counting()]
"""


def promo_shop(shop: Path, plan: str, expires: str | None = None) -> Path:
    """The contact-plan shop with a `cart` trigger whose message carries a personal code."""
    (shop / "plugins" / "codes.py").write_text(textwrap.dedent(COUNTING), encoding="utf-8")
    cart = (
        "scenario: cart\ncategory: trigger\ntrigger: {event: cart.updated}\nsteps:\n"
        "  - send: cart\n    promo: {provider: counting, percent: 10}\n"
    )
    config = configure(shop, [cart + (f"    expires: {expires}\n" if expires else "")], plan)
    folder = shop / "mytemplates" / "cart"
    (folder / "sms.en.txt").write_text("Your code {{ promo.code }}\n", encoding="utf-8")
    (folder / "push.en.txt").write_text(
        "---\ntitle: A code\n---\nYour code {{ promo.code }}\n", encoding="utf-8"
    )
    (folder / "email.en.html").write_text(
        "---\nsubject: Your code {{ promo.code }}\n---\n<p>{{ promo.code }}</p>\n", encoding="utf-8"
    )
    return config


def issuing(rig_for: Callable[[Path], Rig], config: Path) -> tuple[Rig, list[str]]:
    """A rig whose engine issues codes as the daemon's does; and the provider's list of codes."""
    rig = rig_for(config)
    rig.engine.dry_run = False
    return rig, rig.engine.project.registry.promo_providers["counting"].issued


async def test_a_message_quiet_hours_hold_past_its_expiry_issues_no_code(shop: Path, rig_for) -> None:
    config = promo_shop(shop, QUIET + SMS_FIRST, expires="2h")
    rig, issued = issuing(rig_for, config)
    # 23:00 in Moscow, SMS only: it would wait until 09:00, after it expires at 01:00
    await rig.send_event(
        incoming("b1", "cart.updated", "2026-03-02 20:00", customer("bob", email=False, phone=True))
    )
    await rig.run_until(t("2026-03-03 12:00"))
    assert [e.kind for e in rig.journal() if e.kind in ("send", "defer", "drop")] == ["drop"]
    assert issued == []


async def test_a_message_a_cap_holds_past_its_expiry_issues_no_code(shop: Path, rig_for) -> None:
    config = promo_shop(shop, "caps:\n  - {categories: [trigger], max: 1, per: 1d}\n", expires="2h")
    rig, issued = issuing(rig_for, config)
    ann = customer("ann")
    await rig.send_event(incoming("a1", "cart.updated", "2026-03-02 10:00", ann))
    await rig.send_event(incoming("a2", "cart.updated", "2026-03-02 11:00", ann))  # capped until tomorrow
    await rig.run_until(t("2026-03-03 12:00"))
    assert [e.kind for e in rig.journal() if e.kind in ("send", "defer", "drop")] == ["send", "drop"]
    assert issued == ["BACK10-ann-1"]  # the message that went, not the dropped one
    assert "BACK10-ann-1" in rig.channels["email"].sent[0].body


async def test_a_deferred_message_issues_one_code_when_it_goes(shop: Path, rig_for) -> None:
    config = promo_shop(shop, QUIET + SMS_FIRST, expires="12h")
    rig, issued = issuing(rig_for, config)
    await rig.send_event(
        incoming("b1", "cart.updated", "2026-03-02 20:00", customer("bob", email=False, phone=True))
    )
    assert [e.kind for e in rig.journal() if e.kind in ("send", "defer", "drop")] == ["defer"]
    assert issued == []  # waiting for the morning costs no code
    await rig.run_until(t("2026-03-03 12:00"))  # 09:00 in Moscow is 06:00 UTC
    assert [(e.at, e.kind) for e in rig.journal() if e.kind in ("send", "defer", "drop")] == [
        (t("2026-03-02 20:00"), "defer"),
        (t("2026-03-03 06:00"), "send"),
    ]
    assert issued == ["BACK10-bob-1"]
    [sent] = rig.channels["sms"].sent
    assert sent.body == "Your code BACK10-bob-1"
    # kept with the message: a replan, a retry or a restart reuses it
    assert rig.store.message(sent.id)["promo"]["code"] == "BACK10-bob-1"


async def test_a_fallback_reuses_the_code_of_the_first_message(shop: Path, rig_for) -> None:
    config = promo_shop(shop, QUIET + FALLBACK_RULE + SMS_FIRST)
    rig, issued = issuing(rig_for, config)
    rig.channels["sms"].outcome = "failed"
    # 23:00 in Moscow: SMS and push are both quiet, so the message waits for the morning
    who = customer("cid", email=False, phone=True, push=True)
    await rig.send_event(incoming("c1", "cart.updated", "2026-03-02 20:00", who))
    assert issued == []
    await rig.run_until(t("2026-03-03 12:00"))
    assert [(e.kind, e.channel) for e in rig.journal() if e.kind in ("send", "drop")] == [
        ("drop", "sms"),
        ("send", "push"),
    ]
    [first], [fallback] = rig.channels["sms"].sent, rig.channels["push"].sent
    assert first.id != fallback.id and rig.store.message(fallback.id)["fallback_of"] == first.id
    assert issued == ["BACK10-cid-1"]
    assert first.body == fallback.body == "Your code BACK10-cid-1"


class Died(BaseException):
    """The process ending in the middle of a send (not an error the engine could handle)."""


async def test_a_code_issued_before_the_daemon_died_is_reused_when_the_message_goes(
    shop: Path, rig_for
) -> None:
    config = promo_shop(shop, QUIET + SMS_FIRST, expires="12h")
    rig, issued = issuing(rig_for, config)
    await rig.send_event(
        incoming("b1", "cart.updated", "2026-03-02 20:00", customer("bob", email=False, phone=True))
    )
    assert issued == []
    render = rig.engine._render

    def die_once(*args):
        rig.engine._render = render
        raise Died

    rig.engine._render = die_once
    rig.clock.advance_to(t("2026-03-03 06:00"))
    with pytest.raises(Died):  # planned, code issued and stored, then gone before it was sent
        await rig.scheduler.run_due()
    assert issued == ["BACK10-bob-1"] and rig.channels["sms"].sent == []
    rig.clock.advance_to(t("2026-03-03 06:05"))  # the dead run's lease on the job has run out
    await rig.scheduler.run_due()
    [sent] = rig.channels["sms"].sent
    assert issued == ["BACK10-bob-1"]  # not issued twice
    assert sent.body == "Your code BACK10-bob-1"


async def test_the_daemon_issues_the_code_of_a_message_min_gap_holds_when_it_goes(project: Path) -> None:
    (project / "plugins" / "codes.py").write_text(textwrap.dedent(COUNTING), encoding="utf-8")
    config = project / "boomerang.yaml"
    config.write_text(config.read_text(encoding="utf-8") + "  min_gap: 2s\n", encoding="utf-8")
    for old in (project / "scenarios").glob("*.yaml"):
        old.unlink()
    head = "category: trigger\nsteps:\n  - send: "
    (project / "scenarios" / "welcome.yaml").write_text(
        f"scenario: welcome\ntrigger: {{event: signup.completed}}\n{head}welcome\n"
    )
    (project / "scenarios" / "cart.yaml").write_text(
        f"scenario: cart\ntrigger: {{event: cart.updated}}\n{head}cart\n"
        "    promo: {provider: counting, percent: 10}\n"
    )
    for name, subject in (("welcome", "Welcome"), ("cart", "Your code {{ promo.code }}")):
        (project / "templates" / name).mkdir(exist_ok=True)
        (project / "templates" / name / "email.en.html").write_text(
            f"---\nsubject: {subject}\n---\n<p>Hi</p>\n"
        )
    who = {"id": "c-1", "email": "a@b.cc"}
    async with running(project) as daemon:
        issued = daemon.project.registry.promo_providers["counting"].issued

        async def until(kinds: list[str]) -> None:
            async def reached() -> bool:
                journal = await daemon.store.run(daemon.store.journal, "c-1")
                return [e.kind for e in journal if e.kind in ("send", "defer", "drop")] == kinds

            await wait_for(reached, what=f"the journal to read {kinds}")

        assert (await post(daemon, json.dumps({**event("s-1", "signup.completed"), "customer": who})))[
            0
        ] == 200
        await until(["send"])  # the welcome
        assert (await post(daemon, json.dumps({**event("k-1", "cart.updated"), "customer": who})))[0] == 200
        await until(["send", "defer"])  # the cart waits out the gap after the welcome
        assert issued == []
        await until(["send", "defer", "send"])
    assert issued == ["BACK10-c-1-1"]
    subjects = sorted(
        line
        for file in (project / "outbox").glob("*-email-*.eml")
        for line in file.read_text().splitlines()
        if line.startswith("Subject:")
    )
    assert subjects == ["Subject: Welcome", "Subject: Your code BACK10-c-1-1"]
