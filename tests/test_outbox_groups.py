"""The outbox writes the sends handed over together in one go, each still answered on its own:
its own file, its own failure, on whichever event loop sends."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from boomerang.kinds import Channel
from boomerang.model import Delivery, DeliveryStatus, Message
from boomerang.outbox import Outbox


class Notes(Channel):
    """A channel whose outbox file is the message as JSON, but that cannot write one message."""

    name = "notes"

    async def send(self, message: Message) -> Delivery:
        """Never asked: the outbox writes the file instead."""
        raise AssertionError(f"{message.id} went to the channel, not the outbox")

    def outbox_file(self, message: Message) -> tuple[str, bytes]:
        """The default file, or a failure for the message whose body says so."""
        if message.body == "unwritable":
            raise ValueError(f"cannot write {message.id}")
        return super().outbox_file(message)


def note(number: int, body: str = "hello") -> Message:
    """Message `number` to customer `c-<number>`."""
    return Message(
        id=f"m-{number}",
        customer_id=f"c-{number}",
        channel="notes",
        to=f"coop-{number}",
        template="t",
        body=body,
        created_at="2026-12-07T10:00:00Z",
    )


def test_sends_handed_over_together_each_get_their_own_file(tmp_path: Path) -> None:
    outbox = Outbox(Notes(), tmp_path)

    async def send_all() -> list:
        return await asyncio.gather(*(outbox.send(note(number)) for number in range(30)))

    deliveries = asyncio.run(send_all())

    assert [delivery.status for delivery in deliveries] == [DeliveryStatus.SENT] * 30
    for number, delivery in enumerate(deliveries):
        written = tmp_path / delivery.provider_id
        assert json.loads(written.read_text())["id"] == f"m-{number}"
    assert len(list(tmp_path.iterdir())) == 30  # no temporary file left behind


def test_one_message_that_cannot_be_written_fails_its_own_send_alone(tmp_path: Path) -> None:
    outbox = Outbox(Notes(), tmp_path)

    async def send_all() -> list:
        sends = [outbox.send(note(number, "unwritable" if number == 2 else "hello")) for number in range(5)]
        return await asyncio.gather(*sends, return_exceptions=True)

    outcomes = asyncio.run(send_all())

    assert isinstance(outcomes[2], ValueError) and "m-2" in str(outcomes[2])
    sent = [outcome for number, outcome in enumerate(outcomes) if number != 2]
    assert [delivery.status for delivery in sent] == [DeliveryStatus.SENT] * 4
    assert sorted(path.name.rsplit("-", 2)[-1] for path in tmp_path.iterdir()) == [
        "0.json",
        "1.json",
        "3.json",
        "4.json",
    ]


def test_an_outbox_sends_on_each_event_loop_it_is_used_from(tmp_path: Path) -> None:
    outbox = Outbox(Notes(), tmp_path)

    first = asyncio.run(outbox.send(note(1)))
    second = asyncio.run(outbox.send(note(2)))

    assert (first.status, second.status) == (DeliveryStatus.SENT, DeliveryStatus.SENT)
    assert (tmp_path / second.provider_id).exists()


@pytest.mark.parametrize("count", [1, 64, 65])
def test_every_send_of_a_turn_is_answered(tmp_path: Path, count: int) -> None:
    outbox = Outbox(Notes(), tmp_path)

    async def send_all() -> list:
        return await asyncio.gather(*(outbox.send(note(number)) for number in range(count)))

    assert len({delivery.provider_id for delivery in asyncio.run(send_all())}) == count
