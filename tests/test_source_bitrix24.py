"""The Bitrix24 source: outbound events as Bitrix24 posts them (a form with the application
token), the deals and contacts they name fetched from a local stand-in for the portal's REST
API (tests/fakes/bitrix24_api.py), rate limit and outage included, on the daemon in-process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from boomerang.config import load_config
from boomerang.plugins.sources.bitrix24_rest import ATTEMPTS, Bitrix24Error, Bitrix24Rest, Bucket
from boomerang.plugins.sources.bitrix24_settings import read_settings
from boomerang.problems import ProblemError
from conftest import project_database, running, url, wait_for
from fakes.bitrix24_api import APPLICATION_TOKEN, FakeBitrix24, outbound_form

DEAL: dict[str, Any] = {
    "ID": "42",
    "TITLE": "Bicycle for Anna",
    "TYPE_ID": "SALE",
    "STAGE_ID": "WON",
    "CATEGORY_ID": "0",
    "PROBABILITY": None,
    "CURRENCY_ID": "RUB",
    "OPPORTUNITY": "15900.00",
    "IS_MANUAL_OPPORTUNITY": "N",
    "CONTACT_ID": "7",
    "COMPANY_ID": "0",
    "ASSIGNED_BY_ID": "1",
    "CREATED_BY_ID": "1",
    "DATE_CREATE": "2026-03-01T10:00:00+03:00",
    "DATE_MODIFY": "2026-03-02T12:00:00+03:00",
    "MOVED_BY_ID": "1",
    "MOVED_TIME": "2026-03-02T12:00:00+03:00",
    "CLOSED": "Y",
    "SOURCE_ID": "WEB",
}
CONTACT: dict[str, Any] = {
    "ID": "7",
    "NAME": "Anna",
    "SECOND_NAME": None,
    "LAST_NAME": "Petrova",
    "TYPE_ID": "CLIENT",
    "ASSIGNED_BY_ID": "1",
    "DATE_CREATE": "2026-03-01T09:00:00+03:00",
    "DATE_MODIFY": "2026-03-01T09:30:00+03:00",
    "HAS_PHONE": "Y",
    "HAS_EMAIL": "Y",
    "PHONE": [{"ID": "21", "VALUE_TYPE": "WORK", "VALUE": "+7 999 000-11-22", "TYPE_ID": "PHONE"}],
    "EMAIL": [{"ID": "23", "VALUE_TYPE": "WORK", "VALUE": "Anna@Example.com", "TYPE_ID": "EMAIL"}],
}


@pytest.fixture
async def crm():
    """The stand-in portal with one deal and its contact."""
    async with FakeBitrix24() as portal:
        portal.deals["42"] = dict(DEAL)
        portal.contacts["7"] = dict(CONTACT)
        yield portal


def configure(project: Path, crm: FakeBitrix24, **settings: Any) -> None:
    values = {
        "rest_url": crm.rest_url,
        "application_token": APPLICATION_TOKEN,
        "stages": {"WON": "order.paid", "LOSE": "order.cancelled"},
        "requests_per_second": 50,
        **settings,
    }
    config = project / "boomerang.yaml"
    config.write_text(config.read_text() + f"sources:\n  bitrix24: {json.dumps(values)}\n")


def stored(project: Path) -> list[tuple[str, str]]:
    with project_database(project) as db:
        return db.execute("SELECT id, type FROM events WHERE source = 'bitrix24' ORDER BY rowid").fetchall()


def pending(project: Path) -> list[str]:
    folder = project / "bitrix24-pending"
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


async def post(session: aiohttp.ClientSession, daemon: Any, form: dict[str, str]) -> tuple[int, dict]:
    async with session.post(url(daemon, "/hooks/bitrix24"), data=form) as response:
        return response.status, await response.json()


async def test_a_deal_won_is_its_stage_and_the_order_event_it_means_once(
    project: Path, crm: FakeBitrix24
) -> None:
    configure(project, crm)
    crm.limit(1)  # the portal's bucket is empty: the first fetch is refused 503 QUERY_LIMIT_EXCEEDED
    async with running(project) as daemon, aiohttp.ClientSession() as session:
        assert await post(session, daemon, outbound_form("ONCRMDEALUPDATE", 42)) == (
            200,
            {"pending": "deal-42"},
        )
        await wait_for(lambda: len(stored(project)) == 2, what="the deal's events")
        await wait_for(lambda: not pending(project), what="the pending record to be forgotten")
        # The same event again (Bitrix24 sends one per update): fetched again, nothing new stored.
        calls = len(crm.calls)
        assert (await post(session, daemon, outbound_form("ONCRMDEALUPDATE", 42)))[0] == 200
        await wait_for(lambda: len(crm.calls) > calls and not pending(project), what="the second fetch")
    assert stored(project) == [
        ("bitrix24:deal:42:stage:WON:2026-03-02T09:00:00.000000Z", "bitrix.deal.stage_changed"),
        ("bitrix24:deal:42:order.paid", "order.paid"),
    ]
    # One refused request, then one batch: the deal and its contact in two commands.
    assert [method for method, _ in crm.calls[:4]] == ["batch", "batch", "crm.deal.get", "crm.contact.get"]
    assert crm.calls[1][1]["cmd"] == {
        "d42": "crm.deal.get?id=42",
        "dc42": "crm.contact.get?id=$result[d42][CONTACT_ID]",
    }
    with project_database(project) as db:
        data = json.loads(db.execute("SELECT data FROM events WHERE type = 'order.paid'").fetchone()[0])
        email, phone, name, attributes = db.execute(
            "SELECT email, phone, name, attributes FROM customers"
        ).fetchone()
    assert data == {
        "deal": {
            "id": "42",
            "title": "Bicycle for Anna",
            "stage_id": "WON",
            "category_id": "0",
            "opportunity": 15900.0,
            "currency": "RUB",
            "assigned_by_id": "1",
        },
        "order": {"id": "deal-42", "total": 15900.0, "currency": "RUB"},
    }
    assert (email, phone, name) == ("anna@example.com", "+79990001122", "Anna Petrova")
    assert json.loads(attributes) == {"bitrix24_contact_id": "7", "bitrix24_deal_id": "42"}


async def test_a_contact_update_updates_the_customer(project: Path, crm: FakeBitrix24) -> None:
    configure(project, crm)
    async with running(project) as daemon, aiohttp.ClientSession() as session:
        assert await post(session, daemon, outbound_form("ONCRMCONTACTUPDATE", 7)) == (
            200,
            {"pending": "contact-7"},
        )
        await wait_for(lambda: stored(project), what="the contact's event")
    assert stored(project) == [("bitrix24:contact:7:2026-03-01T06:30:00.000000Z", "customer.updated")]


ITEM: dict[str, Any] = {  # crm.item.get's `item`: a smart process's, camelCase
    "id": 5,
    "xmlId": None,
    "title": "Subscription box",
    "createdBy": 1,
    "updatedBy": 1,
    "movedBy": 1,
    "createdTime": "2026-03-01T10:00:00+03:00",
    "updatedTime": "2026-03-02T12:05:00+03:00",
    "movedTime": "2026-03-02T12:05:00+03:00",
    "categoryId": 16,
    "opened": "Y",
    "stageId": "DT1032_16:SUCCESS",
    "previousStageId": "DT1032_16:NEW",
    "begindate": "2026-03-01T03:00:00+03:00",
    "closedate": "2026-03-08T03:00:00+03:00",
    "companyId": 0,
    "contactId": 7,
    "opportunity": 990,
    "isManualOpportunity": "N",
    "taxValue": 0,
    "currencyId": "RUB",
    "assignedById": 3,
    "entityTypeId": 1032,
}


async def test_a_smart_process_item_is_fetched_with_crm_item_get(project: Path, crm: FakeBitrix24) -> None:
    configure(project, crm, stages={"DT1032_16:SUCCESS": "order.paid"})
    crm.items["1032", "5"] = dict(ITEM)
    form = {**outbound_form("ONCRMDYNAMICITEMUPDATE", 5), "data[FIELDS][ENTITY_TYPE_ID]": "1032"}
    async with running(project) as daemon, aiohttp.ClientSession() as session:
        assert await post(session, daemon, form) == (200, {"pending": "item-1032-5"})
        await wait_for(lambda: len(stored(project)) == 2, what="the item's events")
        bad = {**form, "data[FIELDS][ENTITY_TYPE_ID]": "DT1032"}
        assert (await post(session, daemon, bad))[0] == 400
    assert stored(project) == [
        (
            "bitrix24:item:1032:5:stage:DT1032_16:SUCCESS:2026-03-02T09:05:00.000000Z",
            "bitrix.item.stage_changed",
        ),
        ("bitrix24:item:1032:5:order.paid", "order.paid"),
    ]
    assert crm.calls[0][1]["cmd"] == {
        "i1032_5": "crm.item.get?entityTypeId=1032&id=5",
        "ci1032_5": "crm.contact.get?id=$result[i1032_5][item][contactId]",
    }
    with project_database(project) as db:
        data = json.loads(db.execute("SELECT data FROM events WHERE type = 'order.paid'").fetchone()[0])
    assert data == {
        "item": {
            "entity_type_id": "1032",
            "id": "5",
            "title": "Subscription box",
            "stage_id": "DT1032_16:SUCCESS",
            "category_id": 16,
            "opportunity": 990.0,
            "currency": "RUB",
            "assigned_by_id": 3,
        },
        "order": {"id": "item-1032-5", "total": 990.0, "currency": "RUB"},
    }


async def test_an_acknowledged_event_survives_a_restart_while_the_crm_is_down(
    project: Path, crm: FakeBitrix24
) -> None:
    configure(project, crm)
    crm.down = True
    async with running(project) as daemon, aiohttp.ClientSession() as session:
        assert (await post(session, daemon, outbound_form("ONCRMDEALUPDATE", 42)))[0] == 200
        await wait_for(lambda: crm.calls, what="a fetch the portal fails")
    assert pending(project) == ["deal-42.json"] and stored(project) == []
    crm.down = False
    async with running(project):
        await wait_for(lambda: len(stored(project)) == 2, what="the events after the restart")
        await wait_for(lambda: not pending(project), what="the pending record to be forgotten")


async def test_a_deal_gone_or_without_contact_is_dropped(project: Path, crm: FakeBitrix24) -> None:
    configure(project, crm)
    crm.deals["43"] = {**DEAL, "ID": "43", "CONTACT_ID": None}
    async with running(project) as daemon, aiohttp.ClientSession() as session:
        await post(session, daemon, outbound_form("ONCRMDEALUPDATE", 41))
        await post(session, daemon, outbound_form("ONCRMDEALUPDATE", 43))
        await wait_for(lambda: len(crm.calls) >= 2 and not pending(project), what="both fetched")
    assert stored(project) == []


@pytest.mark.parametrize(
    "form",
    [
        outbound_form("ONCRMDEALUPDATE", 42, token="another-token"),
        {k: v for k, v in outbound_form("ONCRMDEALUPDATE", 42).items() if k != "auth[application_token]"},
        outbound_form("ONCRMDEALUPDATE", 42, token=""),
    ],
    ids=["wrong token", "no token", "empty token"],
)
async def test_a_wrong_or_missing_token_is_refused_and_nothing_fetched(
    project: Path, crm: FakeBitrix24, form: dict[str, str]
) -> None:
    configure(project, crm)
    async with running(project) as daemon, aiohttp.ClientSession() as session:
        status, answer = await post(session, daemon, form)
        assert status == 401 and "application_token" in answer["error"]
    assert pending(project) == [] and crm.calls == [] and stored(project) == []


async def test_other_events_are_acknowledged_and_a_bad_id_is_a_400(project: Path, crm: FakeBitrix24) -> None:
    configure(project, crm)
    async with running(project) as daemon, aiohttp.ClientSession() as session:
        assert await post(session, daemon, outbound_form("ONCRMLEADADD", 5)) == (
            200,
            {"accepted": 0, "duplicates": 0, "ignored": "ONCRMLEADADD"},
        )
        assert (await post(session, daemon, outbound_form("ONCRMDEALUPDATE", "../x")))[0] == 400
    assert pending(project) == []


async def test_the_rest_client_waits_out_the_rate_limit_then_gives_up_saying_so(crm: FakeBitrix24) -> None:
    async with Bitrix24Rest(crm.rest_url, Bucket(100), backoff=0.01) as rest:
        crm.limit(2)
        assert (await rest.call("crm.deal.get", {"id": 42}))["STAGE_ID"] == "WON"
        crm.limit(ATTEMPTS)
        with pytest.raises(Bitrix24Error) as busy:
            await rest.call("crm.deal.get", {"id": 42})
        with pytest.raises(Bitrix24Error) as missing:
            await rest.call("crm.deal.get", {"id": 41})
    assert busy.value.retry and busy.value.code == "QUERY_LIMIT_EXCEEDED"
    assert str(busy.value) == "crm.deal.get: Bitrix24 answered 503 QUERY_LIMIT_EXCEEDED: Too many requests"
    assert (
        not missing.value.retry
        and str(missing.value) == "crm.deal.get: Bitrix24 answered 400 (no error code): Not found"
    )


def test_wrong_settings_are_reported_at_their_place(tmp_path: Path) -> None:
    path = tmp_path / "boomerang.yaml"
    path.write_text(
        "database: ./b.db\nsources:\n  bitrix24:\n    rest_url: https://x.bitrix24.ru/\n"
        "    stages: {WON: order.pai}\n    requests_per_second: 0\n"
    )
    with pytest.raises(ProblemError) as caught:
        read_settings(load_config(path))
    assert [str(problem) for problem in caught.value.problems] == [
        f"{path}:4:15: error: 'rest_url' is required: the inbound webhook URL Bitrix24 gives, such as "
        "https://x.bitrix24.ru/rest/1/abc123/",
        f"{path}:5:19: error: 'order.pai' is not one of order.placed, order.paid, order.shipped, "
        "order.delivered, order.cancelled (or null for none) (did you mean 'order.paid'?)",
        f"{path}:6:26: error: 'requests_per_second' must be a number above 0, at most 50",
    ]
