"""Pacing: a batch's sends kept to their providers' rate limits before they are marked
`sending` (`boomerang.pacing`). The turns of a batch on buckets in memory; then the real
`boomerang run` sending 30 SMS at 3 MPS to the fake Twilio, stopped by SIGTERM in the middle
and started again: nothing is left `unknown`, and every message goes exactly once, at the rate."""

from __future__ import annotations

import json
import os
from pathlib import Path

import aiohttp
import pytest
from test_channel_sms import message_id, signup, twilio_project

from boomerang.model import Message
from boomerang.pacing import HORIZON, Pace, take_turns
from boomerang.rate_limits import LocalRateLimits
from conftest import API_TOKEN, daemon_process, project_database, wait_for
from fakes.twilio_server import FakeTwilio, Received


def message(n: int, customer: str | None = None) -> Message:
    """A message `m-<n>` to customer `c-<n>` (or `customer`)."""
    fields = {"channel": "sms", "to": "+15550000000", "template": "t", "body": "b"}
    return Message(id=f"m-{n}", customer_id=customer or f"c-{n}", **fields)


class FakeClock:
    """Seconds that move only when the test says so."""

    now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_messages_whose_turn_is_past_the_horizon_are_put_back_with_their_tokens() -> None:
    limits = LocalRateLimits(FakeClock())
    one_a_second = Pace("twilio:+1", 1, rate=1)  # burst 1: turns at 0, 1, 2, 3... seconds
    messages = [message(n) for n in range(6)]
    turns = await take_turns(limits, messages, [one_a_second] * 6)
    assert set(turns.ready) == {"m-0", "m-1", "m-2"}  # within HORIZON (2 s)
    assert turns.later == {"m-3": 3.0, "m-4": 4.0, "m-5": 5.0}
    await turns.give_back({"m-0", "m-1", "m-2"})
    # The three put back did not pay: the next take waits only behind the three that went.
    assert (await limits.take("twilio:+1", 1, 1, 1)).wait == pytest.approx(3.0)
    assert HORIZON == 2.0


async def test_messages_not_paced_go_at_once_unless_their_customer_waits() -> None:
    limits = LocalRateLimits(FakeClock())
    slow = Pace("slow", 1, rate=0.1)  # one each 10 s
    messages = [message(0), message(1), message(2, customer="c-1"), message(3)]
    turns = await take_turns(limits, messages, [slow, slow, None, None])
    assert set(turns.ready) == {"m-0"}  # m-3 is not paced: it has no turn to wait for
    # m-2 is not paced, but its customer's earlier message waits 10 s: it waits behind it.
    assert turns.later == {"m-1": pytest.approx(10.0), "m-2": pytest.approx(10.0)}
    assert set(turns.taken) == {"m-0", "m-1"}
    unpaced = await take_turns(limits, messages, [None] * 4)
    assert (unpaced.ready, unpaced.later, unpaced.taken) == ({}, {}, {})


MARKETING_SCENARIO = """scenario: welcome-sms
category: trigger
trigger: {event: signup.completed}
steps:
  - send: hello
    channels: [sms]
"""


def statuses(project: Path) -> dict[str, str]:
    """Every message's status, by id, in the project's database."""
    with project_database(project) as db:
        return dict(db.execute("SELECT id, status FROM messages").fetchall())


MPS = 3  # the sender's rate: 30 SMS take 10 s, and a stop after the first few leaves most pending


# How much later than its turn a request may reach the server: a token is taken before the
# message is rendered and posted, and on a loaded machine the first of a run is often the
# slowest to arrive (a new connection), which makes the next ones look early beside it.
ARRIVAL_JITTER = 0.25


def sent_at_the_rate(requests: list[Received], mps: float) -> bool:
    """Whether no request came sooner than the rate allows after the first (burst 1), give or
    take the arrival jitter; without pacing all 30 would arrive within a fraction of a second."""
    first = requests[0].at
    return all(r.at - first >= n / mps - ARRIVAL_JITTER for n, r in enumerate(requests))


@pytest.mark.slow
async def test_a_stop_leaves_paced_sms_pending_and_the_next_start_sends_each_once(project: Path) -> None:
    twilio = FakeTwilio()
    await twilio.start()
    try:
        twilio_project(project, twilio.base_url, whatsapp_too=False)
        config = project / "boomerang.yaml"
        sender = 'from: "+15550001111"'
        config.write_text(config.read_text().replace(f"{sender}}}", f"{sender}, mps: {MPS}}}"))
        (project / "scenarios" / "welcome_sms.yaml").write_text(MARKETING_SCENARIO)  # at most once
        log = project / "daemon.log"
        port = int(os.environ["BOOMERANG_PORT"])
        async with daemon_process(project, log):  # stopped by SIGTERM on leaving
            events = [signup(f"e-{n}", f"c-{n}", f"+1555777{n:04d}") for n in range(30)]
            async with aiohttp.ClientSession() as session:
                headers = {"Authorization": f"Bearer {API_TOKEN}"}
                address = f"http://127.0.0.1:{port}/events"
                async with session.post(address, data=json.dumps(events), headers=headers) as answer:
                    assert answer.status == 200
            await wait_for(lambda: len(twilio.requests) >= 3, 30, "three SMS sent")
        first_run = list(twilio.requests)
        after_stop = statuses(project)
        assert len(after_stop) == 30 and set(after_stop.values()) <= {"sent", "pending"}, after_stop
        assert sum(status == "sent" for status in after_stop.values()) == len(first_run) < 30

        async with daemon_process(project, log):
            await wait_for(lambda: set(statuses(project).values()) == {"sent"}, 120, "all 30 sent")
        ids = [message_id(r) for r in twilio.requests]
        assert len(ids) == len(set(ids)) == 30  # each exactly once, none `unknown`
        second_run = twilio.requests[len(first_run) :]
        assert sent_at_the_rate(first_run, MPS) and sent_at_the_rate(second_run, MPS)
    finally:
        await twilio.stop()

