"""The built-in `local` promo provider, the `promo_codes` table and redemption by orders.

Codes are issued by the engine of `simulate` on the virtual clock (the contact-plan tests'
`Rig`, with their drop-in channels, not in dry run), and by the in-process daemon answering
real `POST /events`; the store is a real SQLite file or PostgreSQL schema each time.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from test_contact_plan import FALLBACK_RULE, QUIET, SMS_FIRST, Rig, configure, customer, rig_for, shop
from test_daemon import post

from boomerang import promo_codes
from boomerang.cli import cli
from boomerang.clock import to_iso
from boomerang.config import load_config
from boomerang.plugins.promo.local import LocalPromoProvider, read_settings
from boomerang.problems import ProblemError
from boomerang.scenarios import load_scenarios
from boomerang.store import Store
from conftest import event, incoming, project_store, running, t, wait_for

# The contact-plan tests' fixtures, used here by name.
__all__ = ["rig_for", "shop"]

CODE = re.compile(r"^(?:[A-Z0-9]+-)?[A-HJKMNP-Z2-9]{4}(?:-[A-HJKMNP-Z2-9]{4})+$")


def local_shop(
    shop: Path,
    plan: str = "",
    promo: str = "percent: 10, expires: 2h",
    expires: str | None = None,
    provider: str = "local",
) -> Path:
    """The contact-plan shop with a `cart` trigger whose message carries a `local` code."""
    cart = (
        "scenario: cart\ncategory: trigger\ntrigger: {event: cart.updated}\nsteps:\n"
        f"  - send: cart\n    promo: {{provider: {provider}, {promo}}}\n"
    ) + (f"    expires: {expires}\n" if expires else "")
    config = configure(shop, [cart], plan)
    text = config.read_text(encoding="utf-8")
    assert "local: {prefix: BMR}" in text  # the demo's setting, from `init`
    folder = shop / "mytemplates" / "cart"
    (folder / "sms.en.txt").write_text("Your code {{ promo.code }}\n", encoding="utf-8")
    (folder / "push.en.txt").write_text("---\ntitle: A code\n---\nYour code {{ promo.code }}\n")
    (folder / "email.en.html").write_text(
        "---\nsubject: Your code {{ promo.code }}\n---\n<p>{{ promo.code }}</p>\n"
    )
    return config


def issuing(rig_for: Any, config: Path) -> Rig:
    """A rig whose engine issues real codes, as the daemon's does."""
    rig = rig_for(config)
    rig.engine.dry_run = False
    return rig


def kept(store: Store) -> list[dict[str, Any]]:
    return store.issued_promo_codes()


def order(event_id: str, at: str, who: dict[str, Any], order_id: str, **codes: Any) -> Any:
    return incoming(event_id, "order.placed", at, who, {"order": {"id": order_id, "total": 50, **codes}})


def test_a_hundred_thousand_codes_are_unique_and_use_only_the_alphabet(database: Path | str) -> None:
    store = Store(database, durable=False)
    now = t("2026-03-02 10:00")
    wanted, batch, retried = 100_000, 5_000, 0
    issued: dict[str, str] = {}
    pending = [f"m-{n}" for n in range(wanted)]
    while pending:
        rows = [
            promo_codes.issued(
                promo_codes.new_code("BMR", 2),  # the local provider's shortest codes: the most collisions
                "local",
                {"id": message_id, "customer_id": f"c-{message_id}"},
                {"percent": 10},
                now,
            )
            for message_id in pending[:batch]
        ]
        with store.transaction():
            answer = store.keep_promo_codes(rows)
        issued.update(answer)
        retried += sum(1 for row in rows if row["message_id"] not in answer)
        pending = [message_id for message_id in pending if message_id not in issued]
    codes = [row["code"] for row in kept(store)]
    assert len(codes) == len(set(codes)) == wanted == len(set(issued.values()))
    assert all(CODE.match(code) and code.startswith("BMR-") for code in codes)
    assert not set("".join(code[4:] for code in codes)) - set(promo_codes.ALPHABET + "-")
    assert not set("01OIL") & set(promo_codes.ALPHABET)
    # the database refuses a code twice, whatever its case, and a message a second code
    taken = promo_codes.issued(codes[0].lower(), "local", {"id": "m-new", "customer_id": "c"}, {}, now)
    second = promo_codes.issued("BMR-2222-3333", "local", {"id": "m-0", "customer_id": "c-m-0"}, {}, now)
    with store.transaction():
        assert store.keep_promo_codes([taken, second]) == {"m-0": issued["m-0"]}
    store.close()


async def test_the_provider_draws_fresh_codes_with_the_steps_prefix_and_a_sample_for_simulate() -> None:
    provider = LocalPromoProvider(prefix="BMR")
    first, second = await provider.issue(None, {}), await provider.issue(None, {"prefix": "cart"})
    assert CODE.match(first) and first.startswith("BMR-") and len(first) == 3 + 3 * 5
    assert CODE.match(second) and second.startswith("CART-")
    assert first != await provider.issue(None, {})
    assert provider.sample({}, "m-1") == provider.sample({}, "m-1") != provider.sample({}, "m-2")
    assert CODE.match(provider.sample({}, "m-1"))


async def test_a_code_is_kept_with_its_message_and_shown_in_it(shop: Path, rig_for) -> None:
    rig = issuing(rig_for, local_shop(shop))
    await rig.send_event(incoming("a1", "cart.updated", "2026-03-02 10:00", customer("ann")))
    [row] = kept(rig.store)
    [sent] = rig.channels["email"].sent
    assert CODE.match(row["code"]) and row["code"].startswith("BMR-")
    assert sent.body == row["code"]
    assert (row["customer_id"], row["message_id"], row["scenario"], row["step"]) == (
        "ann",
        sent.id,
        "cart",
        "0",
    )
    assert (row["percent"], row["amount"], row["provider"]) == (10, None, "local")
    assert (row["issued_at"], row["expires_at"]) == (
        to_iso(t("2026-03-02 10:00")),
        to_iso(t("2026-03-02 12:00")),
    )
    assert rig.store.message(sent.id)["promo"]["code"] == row["code"]
    rig.store.forget("ann", t("2026-03-02 11:00"))  # the code counts on, for nobody in particular
    [row] = kept(rig.store)
    assert row["customer_id"].startswith("forgotten-") and rig.store.message(sent.id)["promo"] is None


async def test_a_capped_message_issues_no_code(shop: Path, rig_for) -> None:
    plan = "caps:\n  - {categories: [trigger], max: 1, per: 1d}\n"
    rig = issuing(rig_for, local_shop(shop, plan, expires="2h"))
    ann = customer("ann")
    await rig.send_event(incoming("a1", "cart.updated", "2026-03-02 10:00", ann))
    await rig.send_event(incoming("a2", "cart.updated", "2026-03-02 11:00", ann))  # capped past its expiry
    await rig.run_until(t("2026-03-03 12:00"))
    assert [e.kind for e in rig.journal() if e.kind in ("send", "defer", "drop")] == ["send", "drop"]
    [row] = kept(rig.store)
    assert row["message_id"] == rig.channels["email"].sent[0].id


async def test_a_fallback_reuses_the_code_of_its_first_message(shop: Path, rig_for) -> None:
    rig = issuing(rig_for, local_shop(shop, QUIET + FALLBACK_RULE + SMS_FIRST, "percent: 10"))
    rig.channels["sms"].outcome = "failed"
    await rig.send_event(
        incoming(
            "c1", "cart.updated", "2026-03-02 10:00", customer("cid", email=False, phone=True, push=True)
        )
    )
    [first], [fallback] = rig.channels["sms"].sent, rig.channels["push"].sent
    [row] = kept(rig.store)
    assert row["message_id"] == first.id != fallback.id
    assert first.body == fallback.body == f"Your code {row['code']}"


REPEATING = """
    from boomerang import hookimpl
    from boomerang.kinds import PromoProvider

    class Repeating(PromoProvider):
        name = "repeating"
        codes = ["TAKEN-1", "taken-1", "FRESH-2"]

        async def issue(self, customer, spec):
            return self.codes.pop(0)

    @hookimpl
    def register_promo_providers(config):
        return [Repeating()]
"""


async def test_a_code_another_message_has_makes_the_engine_ask_the_provider_again(
    shop: Path, rig_for
) -> None:
    (shop / "plugins" / "repeating.py").write_text(textwrap.dedent(REPEATING), encoding="utf-8")
    config = local_shop(shop, provider="repeating")
    rig = issuing(rig_for, config)
    other = promo_codes.issued(
        "TAKEN-1", "repeating", {"id": "m-other", "customer_id": "bob"}, {}, t("2026-03-01")
    )
    with rig.store.transaction():
        rig.store.keep_promo_codes([other])
    await rig.send_event(incoming("a1", "cart.updated", "2026-03-02 10:00", customer("ann")))
    [sent] = rig.channels["email"].sent
    assert sent.body == "FRESH-2"
    assert sorted(row["code"] for row in kept(rig.store)) == ["FRESH-2", "TAKEN-1"]


async def test_orders_naming_expired_foreign_or_unknown_codes_are_reported_not_redeemed(
    shop: Path, rig_for, caplog: pytest.LogCaptureFixture
) -> None:
    rig = issuing(rig_for, local_shop(shop))
    ann, bob = customer("ann"), customer("bob")
    await rig.send_event(incoming("a1", "cart.updated", "2026-03-02 10:00", ann))
    [row] = kept(rig.store)
    code = row["code"]
    caplog.set_level(logging.INFO, logger="boomerang.redemptions")
    await rig.send_event(order("o1", "2026-03-02 10:30", bob, "B-1", discount_codes=[code]))
    await rig.send_event(order("o1-again", "2026-03-02 10:31", bob, "B-1", discount_codes=[code]))  # once
    await rig.send_event(order("o2", "2026-03-02 10:40", ann, "A-0", coupon="NOPE-2345"))
    await rig.send_event(
        order("o3", "2026-03-02 13:00", ann, "A-1", coupon=[code.lower()])
    )  # expired at 12:00
    rejected = [
        (who, e["data"]["code"], e["data"]["order_id"], e["data"]["reason"])
        for who in ("ann", "bob")
        for e in rig.store.events_of_types(who, ["promo.rejected"])
    ]
    assert sorted(rejected) == sorted(
        [
            ("ann", "NOPE-2345", "A-0", "unknown code"),
            ("ann", code, "A-1", "expired"),
            ("bob", code, "B-1", "issued to another customer"),
        ]
    )
    assert rig.store.events_of_types("ann", ["promo.redeemed"]) == []
    assert kept(rig.store)[0]["redeemed_at"] is None
    lines = [record.getMessage() for record in caplog.records if record.name == "boomerang.redemptions"]
    assert len(lines) == 3 and all("not redeemed" in line for line in lines)  # the replay: silent
    assert not any(word in line for line in lines for word in ("@example.com", "ann", "bob", code))


async def test_the_daemon_redeems_a_code_an_order_names_once_and_a_scenario_starts_on_it(
    project: Path,
) -> None:
    for old in (project / "scenarios").glob("*.yaml"):
        old.unlink()
    (project / "scenarios" / "cart.yaml").write_text(
        "scenario: cart\ncategory: trigger\ntrigger: {event: cart.updated}\nsteps:\n"
        "  - send: cart\n    promo: {provider: local, amount: 5, currency: EUR, expires: 7d}\n"
    )
    (project / "scenarios" / "thanks.yaml").write_text(
        "scenario: thanks\ncategory: transactional\ntrigger: {event: promo.redeemed}\n"
        "steps:\n  - send: thanks\n"
    )
    for name, subject in (
        ("cart", "Your code {{ promo.code }}"),
        ("thanks", "Thanks for using {{ event.data.code }}"),
    ):
        (project / "templates" / name).mkdir(exist_ok=True)
        (project / "templates" / name / "email.en.html").write_text(
            f"---\nsubject: {subject}\n---\n<p>Hi</p>\n"
        )
    who = {"id": "c-1", "email": "a@b.cc"}
    async with running(project) as daemon:
        store = daemon.store

        async def codes() -> list[dict[str, Any]]:
            return await store.run(store.issued_promo_codes)

        async def redeemed() -> list[dict[str, Any]]:
            return await store.run(store.events_of_types, "c-1", ["promo.redeemed", "promo.rejected"])

        assert (await post(daemon, json.dumps({**event("k-1", "cart.updated"), "customer": who})))[0] == 200

        async def issued() -> bool:
            return len(await codes()) == 1

        await wait_for(issued, what="a code to be issued")
        [row] = await codes()
        assert row["amount"] == 5 and row["currency"] == "EUR" and row["percent"] is None
        shopify_shape = [{"code": f" {row['code'].lower()} ", "amount": "5.00", "type": "fixed_amount"}]
        placed = {
            **event("o-1", "order.placed", "2026-03-02 11:00"),
            "customer": who,
            "data": {"order": {"id": "#1001", "total": 60, "discount_codes": shopify_shape}},
        }
        assert (await post(daemon, json.dumps(placed)))[0] == 200

        async def thanked() -> bool:
            journal = await store.run(store.journal, "c-1")
            return [e.scenario for e in journal if e.kind == "send"] == ["cart", "thanks"]

        await wait_for(thanked, what="the thanks scenario to send")
        # the same order again, as a second webhook delivery with another id would bring it
        again = {**placed, "id": "o-1-again"}
        assert (await post(daemon, json.dumps(again)))[0] == 200
        await wait_for(lambda: _handled(store), what="the replayed order to be acted on")
        [found] = await redeemed()
        [row] = await codes()
    assert found["id"] == f"promo.redeemed:{row['code']}"
    assert found["data"] == {
        "code": row["code"],
        "order_id": "#1001",
        "message_id": row["message_id"],
        "scenario": "cart",
        "step": "0",
        "value": {"amount": 5, "currency": "EUR"},
        "message": {"id": row["message_id"], "scenario": "cart", "step": "0"},
    }
    assert row["order_id"] == "#1001" and row["redeemed_at"] == to_iso(t("2026-03-02 11:00"))


async def _handled(store: Store) -> bool:
    return await store.run(lambda: not store.unhandled_events(1))


def test_promo_export_prints_the_codes_as_csv(project: Path, tmp_path: Path) -> None:
    config = project / "boomerang.yaml"
    runner = CliRunner()
    store = project_store(project)
    now = t("2026-03-02 10:00")
    rows = [
        promo_codes.issued(
            "BMR-AAAA-BBBB",
            "local",
            {"id": "m-1", "customer_id": "c-1", "scenario": "cart", "step": "0"},
            {"percent": 10, "expires": 7200},
            now,
        ),
        promo_codes.issued(
            "BMR-CCCC-DDDD",
            "local",
            {"id": "m-2", "customer_id": "c-2", "scenario": "reactivation", "step": "0"},
            {"amount": 5.5, "currency": "EUR"},
            now,
        ),
    ]
    with store.transaction():
        store.keep_promo_codes(rows)
        store.redeem_promo_codes([("BMR-AAAA-BBBB", "#1001")], t("2026-03-02 11:00"))
    store.close()
    result = runner.invoke(cli, ["promo", "export", "--config", str(config), "--since", "100000d"])
    assert result.exit_code == 0, result.output
    table = list(csv.DictReader(io.StringIO(result.output)))
    assert table == [
        {
            "code": "BMR-AAAA-BBBB",
            "value": "10",
            "currency": "",
            "percent": "true",
            "expires_at": "2026-03-02T12:00:00Z",
            "issued_at": "2026-03-02T10:00:00Z",
            "customer_id": "c-1",
            "scenario": "cart",
            "step": "0",
            "redeemed_at": "2026-03-02T11:00:00Z",
        },
        {
            "code": "BMR-CCCC-DDDD",
            "value": "5.5",
            "currency": "EUR",
            "percent": "false",
            "expires_at": "",
            "issued_at": "2026-03-02T10:00:00Z",
            "customer_id": "c-2",
            "scenario": "reactivation",
            "step": "0",
            "redeemed_at": "",
        },
    ]
    out = tmp_path / "codes.csv"
    args = ["promo", "export", "--config", str(config), "--scenario", "reactivation", "--output", str(out)]
    assert runner.invoke(cli, args).exit_code == 0
    assert [row["code"] for row in csv.DictReader(out.open())] == ["BMR-CCCC-DDDD"]
    recent = runner.invoke(cli, ["promo", "export", "--config", str(config), "--since", "7d"])
    assert recent.exit_code == 0 and recent.output == ",".join(promo_codes.CSV_COLUMNS) + "\n"
    since = runner.invoke(
        cli, ["promo", "export", "--config", str(config), "--since", "2026-03-02T10:00:00Z"]
    )
    assert len(list(csv.DictReader(io.StringIO(since.output)))) == 2
    bad = runner.invoke(cli, ["promo", "export", "--config", str(config), "--since", "last week"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    assert "'last week' is neither a duration (7d, 12h, 30m) nor a moment" in bad.output


def test_the_readmes_promo_examples_are_what_boomerang_takes_and_prints(tmp_path: Path) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Promo codes") : readme.index("### Check before you merge")]
    step = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    table = re.search(r"```\n(code,.*?)```", section, re.DOTALL)
    assert step and table
    scenario = "scenario: back\ncategory: promo\ntrigger: {event: customer.created}\nsteps:\n"
    (tmp_path / "back.yaml").write_text(scenario + step.group(1), encoding="utf-8")
    [compiled] = load_scenarios([tmp_path / "back.yaml"])
    assert compiled.steps[0].promo == {"provider": "local", "percent": 15, "expires": timedelta(days=7)}
    row = promo_codes.issued(
        "BMR-7KQ4-XW9P-M3RT",
        "local",
        {"id": "m-1", "customer_id": "c-1", "scenario": "reactivation", "step": "0"},
        {**compiled.steps[0].promo, "expires": 7 * 86400},  # as the message keeps it
        t("2026-03-02 10:00"),
    )
    assert promo_codes.export_csv([{**row, "redeemed_at": None}]) == table.group(1)


async def test_a_damaged_code_row_is_set_aside_and_fails_alone(shop: Path, rig_for) -> None:
    rig = issuing(rig_for, local_shop(shop))
    ann = customer("ann")
    await rig.send_event(incoming("a1", "cart.updated", "2026-03-02 10:00", ann))
    [row] = kept(rig.store)
    rig.store.db.execute("UPDATE promo_codes SET expires_at = 'soon' WHERE code = ?", [row["code"]])
    await rig.send_event(order("o1", "2026-03-02 10:30", ann, "A-1", discount_codes=[row["code"]]))
    [rejected] = rig.store.events_of_types("ann", ["promo.rejected"])
    assert rejected["data"]["reason"] == "unknown code"
    assert kept(rig.store) == []  # the export leaves it out too
    found = rig.store.db.execute("SELECT table_name, row_id FROM quarantine").fetchall()
    assert found == [("promo_codes", row["code"])]


def test_wrong_settings_and_promo_keys_are_reported_at_their_place(tmp_path: Path) -> None:
    path = tmp_path / "boomerang.yaml"
    path.write_text(
        "database: ./b.db\npromo_providers:\n  local:\n    prefix: B-1\n    groups: 9\n    prefx: X\n"
    )
    with pytest.raises(ProblemError) as caught:
        read_settings(load_config(path))
    assert [str(problem) for problem in caught.value.problems] == [
        f"{path}:4:13: error: 'prefix': a promo code prefix is letters and digits, such as BMR",
        f"{path}:5:13: error: 'groups' is a whole number from 2 to 6",
        f"{path}:6:5: error: unknown local setting 'prefx' (did you mean 'prefix'?)",
    ]
    (tmp_path / "back.yaml").write_text(
        "scenario: back\ncategory: promo\ntrigger: {event: customer.created}\nsteps:\n"
        "  - send: back\n    promo: {provider: local, prefix: WAY-TOO-LONG, amount: 5, currency: euro}\n"
    )
    with pytest.raises(ProblemError) as caught:
        load_scenarios([tmp_path / "back.yaml"])
    assert [str(problem).removeprefix(f"{tmp_path / 'back.yaml'}:") for problem in caught.value.problems] == [
        "6:38: error: a promo code prefix is letters and digits, such as BMR",
        "6:73: error: currency is a three-letter code such as EUR",
    ]
