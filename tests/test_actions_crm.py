"""Actions for staff: `bitrix.create_task`, `bitrix.set_stage` and `bitrix.set_responsible`
against a stand-in Bitrix24 portal, the generic signed `webhook` action against a local
receiver; each directly, and run by a scenario in the daemon from a deal the CRM moved."""

from __future__ import annotations

import hashlib
import hmac
import json
import textwrap
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from click.testing import CliRunner
from test_source_bitrix24 import CONTACT, DEAL

from boomerang.cli import cli
from boomerang.kinds import ActionFailed
from boomerang.plugins.actions.bitrix24 import BitrixActions
from boomerang.plugins.actions.webhook import WebhookAction
from boomerang.plugins.sources.bitrix24_rest import Bucket
from conftest import free_port, project_database, running, url, wait_for
from fakes.bitrix24_api import APPLICATION_TOKEN, FakeBitrix24, outbound_form

HOOK_SECRET = "crm-webhook-secret-0123456789"


@pytest.fixture
async def crm() -> AsyncIterator[FakeBitrix24]:
    async with FakeBitrix24() as portal:
        portal.deals["42"] = dict(DEAL)
        portal.contacts["7"] = dict(CONTACT)
        yield portal


class Receiver:
    """A CRM's endpoint for the webhook action: keeps what it gets, answers `status`."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, dict[str, str]]] = []
        self.status = 200
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((await request.read(), dict(request.headers)))
        return web.json_response({}, status=self.status)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    target = Receiver()
    app = web.Application()
    app.router.add_post("/hooks/boomerang", target.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    target.url = f"http://127.0.0.1:{port}/hooks/boomerang"
    yield target
    await runner.cleanup()


def actions(crm: FakeBitrix24) -> BitrixActions:
    return BitrixActions(crm.rest_url, Bucket(100))


async def test_create_task_is_a_todo_bound_to_the_deal(crm: FakeBitrix24) -> None:
    before = datetime.now(UTC)
    result = await actions(crm).create_task(deal_id="42", kind="meeting", due_in="1d", responsible_id="7")
    assert result == {"activity_id": 901}
    [todo] = crm.activities
    deadline = datetime.fromisoformat(todo.pop("deadline"))
    assert (
        before + timedelta(days=1) - timedelta(seconds=1) <= deadline <= datetime.now(UTC) + timedelta(days=1)
    )
    assert todo == {
        "ownerTypeId": 2,
        "ownerId": 42,
        "title": "Meeting with the customer",
        "description": "",
        "responsibleId": 7,
    }
    await actions(crm).create_task(
        deal_id=42, deadline="2026-03-03T10:00:00+03:00", title="Call about the cart"
    )
    assert crm.activities[1]["deadline"] == "2026-03-03T07:00:00+00:00"
    assert crm.activities[1]["title"] == "Call about the cart"


async def test_stage_and_responsible_are_deal_updates(crm: FakeBitrix24) -> None:
    assert await actions(crm).set_stage(deal_id="42", stage="C1:PREPARATION") == {
        "deal_id": 42,
        "stage": "C1:PREPARATION",
    }
    assert await actions(crm).set_responsible(deal_id="42", user_id=" 9 ") == {"deal_id": 42, "user_id": 9}
    assert crm.deals["42"]["STAGE_ID"] == "C1:PREPARATION" and crm.deals["42"]["ASSIGNED_BY_ID"] == 9
    assert [method for method, _ in crm.calls] == ["crm.deal.update", "crm.deal.update"]


@pytest.mark.parametrize(
    ("action", "arguments", "message"),
    [
        (
            "create_task",
            {"deal_id": "{{ deal.id }}"},
            "deal_id must be a Bitrix24 id (a whole number), not '{{ deal.id }}'",
        ),
        ("create_task", {"deal_id": 42, "kind": "lunch"}, "kind must be call or meeting, not 'lunch'"),
        ("create_task", {"deal_id": 42, "due_in": "soon"}, "deadline: 'soon' is not a duration"),
        ("create_task", {"deal_id": 42, "owner": 1}, "bitrix.create_task takes no argument owner"),
        ("set_stage", {"deal_id": 42, "stage": "WON; DROP"}, "stage must be a stage id"),
        ("set_responsible", {"deal_id": 42}, "user_id must be a Bitrix24 id"),
        (
            "set_stage",
            {"deal_id": 41, "stage": "WON"},
            "crm.deal.update: Bitrix24 answered 400 (no error code): Not found",
        ),
    ],
)
async def test_a_failure_trying_again_cannot_mend_is_final(
    crm: FakeBitrix24, action: str, arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises(ActionFailed) as caught:
        await getattr(actions(crm), action)(**arguments)
    assert message in str(caught.value) and caught.value.retry is False


async def test_the_crm_down_or_busy_is_a_failure_to_try_again(crm: FakeBitrix24) -> None:
    crm.down = True
    with pytest.raises(ActionFailed) as down:
        await actions(crm).set_stage(deal_id=42, stage="WON")
    assert down.value.retry is True and "500 INTERNAL_SERVER_ERROR" in str(down.value)
    gone = BitrixActions(f"http://127.0.0.1:{free_port()}/rest/1/x/", Bucket(100))
    with pytest.raises(ActionFailed) as unreachable:
        await gone.set_stage(deal_id=42, stage="WON")
    assert unreachable.value.retry is True and "cannot be reached" in str(unreachable.value)


async def test_the_webhook_action_posts_the_arguments_signed(receiver: Receiver) -> None:
    action = WebhookAction(receiver.url, HOOK_SECRET)
    assert await action.run(task="call", customer="c-42", phone="+79990001122") == {"status": 200}
    [(body, headers)] = receiver.received
    assert json.loads(body) == {"customer": "c-42", "phone": "+79990001122", "task": "call"}
    expected = "sha256=" + hmac.new(HOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Boomerang-Signature"] == expected and headers["Content-Type"] == "application/json"


@pytest.mark.parametrize(
    ("status", "retry"), [(500, True), (503, True), (429, True), (404, False), (400, False)]
)
async def test_the_webhook_action_retries_only_what_may_pass_later(
    receiver: Receiver, status: int, retry: bool
) -> None:
    receiver.status = status
    with pytest.raises(ActionFailed) as caught:
        await WebhookAction(receiver.url, HOOK_SECRET).run(task="call")
    assert caught.value.retry is retry and f"answered {status}" in str(caught.value)
    with pytest.raises(ActionFailed) as refused:
        await WebhookAction(f"http://127.0.0.1:{free_port()}/", HOOK_SECRET).run(task="call")
    assert refused.value.retry is True


SCENARIO = """\
scenario: won-deal
description: S20, staff tasks from the CRM's own deal moves.
trigger: {event: bitrix.deal.stage_changed, if: "deal.stage_id == 'WON'"}
steps:
  - action: bitrix.create_task
    with: {deal_id: "{{ deal.id }}", kind: call, due_in: 2h, responsible_id: "{{ deal.assigned_by_id }}",
           description: "{{ customer.name }}: {{ deal.title }}"}
  - action: bitrix.set_stage
    with: {deal_id: "{{ deal.id }}", stage: "C1:NEW"}
  - action: webhook
    with: {task: thank, deal: "{{ deal.id }}", email: "{{ customer.email }}"}
  - action: bitrix.set_responsible
    with: {deal_id: "999", user_id: 3}
"""


async def test_a_scenario_acts_in_the_crm_on_a_deal_it_moved(
    project: Path, crm: FakeBitrix24, receiver: Receiver
) -> None:
    (project / "scenarios" / "won_deal.yaml").write_text(SCENARIO)
    settings = {"rest_url": crm.rest_url, "application_token": APPLICATION_TOKEN, "requests_per_second": 50}
    config = project / "boomerang.yaml"
    config.write_text(
        config.read_text()
        + f"sources:\n  bitrix24: {json.dumps(settings)}\n"
        + textwrap.dedent(f"""\
            actions:
              webhook: {{url: "{receiver.url}", secret: {HOOK_SECRET}}}
            """)
    )
    async with running(project) as daemon, aiohttp.ClientSession() as session:
        async with session.post(
            url(daemon, "/hooks/bitrix24"), data=outbound_form("ONCRMDEALUPDATE", 42)
        ) as answer:
            assert answer.status == 200
        await wait_for(lambda: len(journal(project)) == 4, what="the four actions")
    # The actions run as jobs, side by side: in step order once sorted.
    assert sorted(journal(project), key=lambda entry: entry[1]) == [
        ("action", "0", "bitrix.create_task: done ({'activity_id': 901})"),
        ("action", "1", "bitrix.set_stage: done ({'deal_id': 42, 'stage': 'C1:NEW'})"),
        ("action", "2", "webhook: done ({'status': 200})"),
        # A deal the CRM does not have: failed for good, not retried.
        (
            "action",
            "3",
            "bitrix.set_responsible: failed: crm.deal.update: Bitrix24 answered 400 (no error code): "
            "Not found",
        ),
    ]
    assert crm.activities[0]["description"] == "Anna Petrova: Bicycle for Anna"
    assert crm.activities[0]["responsibleId"] == 1 and crm.deals["42"]["STAGE_ID"] == "C1:NEW"
    assert json.loads(receiver.received[0][0]) == {"deal": "42", "email": "anna@example.com", "task": "thank"}


async def test_an_action_the_crm_cannot_take_now_is_deferred_for_a_retry(
    project: Path, crm: FakeBitrix24
) -> None:
    (project / "scenarios" / "won_deal.yaml").write_text(SCENARIO.split("  - action: webhook")[0])
    settings = {"rest_url": crm.rest_url, "application_token": APPLICATION_TOKEN, "requests_per_second": 50}
    config = project / "boomerang.yaml"
    config.write_text(config.read_text() + f"sources:\n  bitrix24: {json.dumps(settings)}\n")
    crm.failing = {"crm.activity.todo.add", "crm.deal.update"}
    async with running(project) as daemon, aiohttp.ClientSession() as session:
        async with session.post(
            url(daemon, "/hooks/bitrix24"), data=outbound_form("ONCRMDEALUPDATE", 42)
        ) as answer:
            assert answer.status == 200
        await wait_for(lambda: len(journal(project)) == 2, what="both actions tried")
    assert [entry[0] for entry in journal(project)] == ["defer", "defer"]
    assert "Bitrix24 answered 500 INTERNAL_SERVER_ERROR" in journal(project)[0][2]
    with project_database(project) as db:
        assert db.execute("SELECT attempts FROM jobs WHERE kind = 'action'").fetchall() == [(1,), (1,)]


def journal(project: Path) -> list[tuple[str, str, str]]:
    """(kind, step, reason) of the journal's action lines, in order."""
    with project_database(project) as db:
        return db.execute(
            "SELECT kind, step, reason FROM journal WHERE kind IN ('action', 'defer') ORDER BY id"
        ).fetchall()


def test_check_knows_the_crm_event_type_and_actions_once_bitrix24_is_configured(project: Path) -> None:
    (project / "scenarios" / "won_deal.yaml").write_text(SCENARIO)
    config = project / "boomerang.yaml"
    settings = {"rest_url": "https://x.bitrix24.ru/rest/1/abc123/", "application_token": APPLICATION_TOKEN}
    config.write_text(
        config.read_text()
        + f"sources:\n  bitrix24: {json.dumps(settings)}\n"
        + f"actions:\n  webhook: {{url: https://crm.example/hook, secret: {HOOK_SECRET}}}\n"
    )
    result = CliRunner().invoke(cli, ["check", "--config", str(config)])
    assert result.exit_code == 0 and "won_deal" not in result.output, result.output
    config.write_text(config.read_text().replace("secret: " + HOOK_SECRET, "secret: short"))
    result = CliRunner().invoke(cli, ["check", "--config", str(config)])
    assert result.exit_code == 1
    assert (
        "boomerang.yaml:" in result.output and "'secret' is required: at least 16 characters" in result.output
    )
