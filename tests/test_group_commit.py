"""Group commit: concurrent requests' events are written in one transaction, each request is
answered only once that transaction has committed, duplicates are acknowledged and ignored
across the group, and a request that fails fails alone."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from boomerang.clock import WallClock
from boomerang.ingest import Ingestor
from boomerang.kinds import IngestResult
from boomerang.model import Event
from boomerang.store import Store
from conftest import (
    API_TOKEN,
    AUTH,
    database_connection,
    event,
    incoming,
    project_database,
    running,
    start_daemon,
    url,
    wait_until_serving,
)


class Listener:
    """`on_stored` that keeps each call's events: one call per group written."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def __call__(self, events: list[Event]) -> None:
        self.calls.append([e.id for e in events])


def ids_in(database: Path | str) -> set[str]:
    """The event ids in the database, read through a connection of its own."""
    with database_connection(database) as db:
        return {row[0] for row in db.execute("SELECT id FROM events")}


def project_ids(project: Path) -> set[str]:
    """The event ids in the project's database (SQLite's or PostgreSQL's)."""
    with project_database(project) as db:
        return {row[0] for row in db.execute("SELECT id FROM events")}


@pytest.fixture
def store(database: Path | str):
    store = Store(database)
    yield store
    store.close()


async def test_concurrent_requests_are_one_group_each_answered_after_its_commit(
    store: Store, database: Path | str
) -> None:
    listener = Listener()
    ingest = Ingestor(store, WallClock(), listener, verified=lambda source: True)
    requests = [[incoming(f"e-{n}-{k}", customer={"id": f"c-{k}"}) for k in range(3)] for n in range(5)]

    async def send(events: list[Event]) -> tuple[IngestResult, set[str]]:
        result = await ingest(events, "api")
        return result, ids_in(database)  # what another reader sees when the answer comes

    answers = await asyncio.gather(*(send(events) for events in requests))
    assert len(listener.calls) == 1  # one group, one transaction
    assert sorted(listener.calls[0]) == sorted(e.id for events in requests for e in events)
    for events, (result, visible) in zip(requests, answers, strict=True):
        assert result == IngestResult(accepted=3, duplicates=0)
        assert {e.id for e in events} <= visible  # committed before the answer


async def test_duplicates_within_a_group_are_acknowledged_and_stored_once(
    store: Store, database: Path | str
) -> None:
    ingest = Ingestor(store, WallClock(), Listener(), verified=lambda source: True)
    await ingest([incoming("old")], "api")
    first = [incoming("a"), incoming("b"), incoming("a")]
    second = [incoming("b"), incoming("c"), incoming("old")]
    results = await asyncio.gather(ingest(first, "api"), ingest(second, "api"))
    assert results == [IngestResult(accepted=2, duplicates=1), IngestResult(accepted=1, duplicates=2)]
    assert sorted(ids_in(database)) == ["a", "b", "c", "old"]


async def test_a_request_that_fails_in_the_store_fails_alone_and_leaves_nothing(
    store: Store, database: Path | str
) -> None:
    listener = Listener()
    ingest = Ingestor(store, WallClock(), listener, verified=lambda source: True)
    before = [incoming("a-1", customer={"id": "c-a", "name": "Ann"})]
    # A source's bug: data JSON cannot hold (a set), met only when the event is written.
    broken = [
        incoming("b-1", customer={"id": "c-b", "name": "Bob"}),
        incoming("b-2", customer={"id": "c-a", "name": "Not Ann"}),
    ]
    broken[1].data = {"tags": {"x"}}
    after = [incoming("c-1", customer={"id": "c-a", "email": "ann@example.com"})]
    results = await asyncio.gather(
        ingest(before, "api"), ingest(broken, "api"), ingest(after, "api"), return_exceptions=True
    )
    assert results[0] == results[2] == IngestResult(accepted=1, duplicates=0)
    assert isinstance(results[1], TypeError)
    assert listener.calls == [["a-1", "c-1"]]
    assert sorted(ids_in(database)) == ["a-1", "c-1"]
    with database_connection(database) as db:
        customers = dict(db.execute("SELECT id, name FROM customers"))
        emails = dict(db.execute("SELECT id, email FROM customers"))
    assert customers == {"c-a": "Ann"}  # nothing of the failed request, not even its profile changes
    assert emails == {"c-a": "ann@example.com"}
    # The next group works as ever.
    assert await ingest([incoming("d-1", customer={"id": "c-b"})], "api") == IngestResult(1, 0)


async def test_work_that_yields_to_ingest_waits_for_a_pause_but_not_forever(store: Store) -> None:
    """`Ingestor.idle`: the engine's batches wait while a group is being written, and a steady
    stream of requests delays them only up to `at_most`."""
    writing, release = threading.Event(), threading.Event()
    ingest_group = store.ingest_group

    def slow_group(*args: object) -> object:
        writing.set()
        release.wait(30)
        return ingest_group(*args)

    store.ingest_group = slow_group  # type: ignore[method-assign]
    ingest = Ingestor(store, WallClock(), Listener(), verified=lambda source: True)
    request = asyncio.ensure_future(ingest([incoming("a")], "api"))
    await asyncio.get_running_loop().run_in_executor(None, writing.wait, 10)
    # Under a write that does not end, a patient waiter still gets its turn after `at_most`.
    await asyncio.wait_for(ingest.idle(quiet=0.05, at_most=0.2), 10)
    # Without such a bound it waits for the write, and for the pause after it.
    waiter = asyncio.ensure_future(ingest.idle(quiet=0.05, at_most=60))
    await asyncio.sleep(0.3)
    assert not waiter.done()
    release.set()
    assert await request == IngestResult(accepted=1, duplicates=0)
    await asyncio.wait_for(waiter, 10)


async def test_one_bad_request_among_concurrent_ones_is_refused_alone(project: Path) -> None:
    async with running(project) as daemon, aiohttp.ClientSession() as session:

        async def post(body: object) -> tuple[int, dict]:
            async with session.post(url(daemon, "/events"), json=body, headers=AUTH) as response:
                return response.status, await response.json()

        bodies: list[object] = [
            [event(f"r{n}-{k}", "product.viewed", customer={"id": f"c-{k}"}) for k in range(4)]
            for n in range(12)
        ]
        bodies[5] = [event("bad-1"), {**event("bad-2"), "type": "no dots"}]
        bodies.append([event("r0-0", "product.viewed", customer={"id": "c-0"})])  # a resend
        answers = await asyncio.gather(*(post(body) for body in bodies))
    assert answers[5][0] == 400
    assert "'type' must be a dotted name" in answers[5][1]["error"]
    for n, (status, counts) in enumerate(answers):
        if n == 5:
            continue
        assert status == 200
        assert counts["accepted"] + counts["duplicates"] == len(bodies[n])  # type: ignore[arg-type]
    expected = {e["id"] for n, body in enumerate(bodies) if n != 5 for e in body}  # type: ignore[union-attr]
    assert project_ids(project) == expected


@pytest.mark.slow
def test_kill_minus_nine_under_concurrent_load_keeps_every_acknowledged_event(
    project: Path, tmp_path: Path
) -> None:
    port = int(os.environ["BOOMERANG_PORT"])
    process = start_daemon(project, tmp_path / "daemon.log")
    acknowledged: list[str] = []
    stop = threading.Event()

    def client(number: int) -> None:
        sequence = 0
        while not stop.is_set():
            ids = [f"t{number}-{sequence}-{k}" for k in range(3)]
            sequence += 1
            body = json.dumps([event(i, "product.viewed", customer={"id": f"c-{number}"}) for i in ids])
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/events",
                data=body.encode(),
                headers={"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    if response.status == 200:
                        acknowledged.extend(ids)
            except (urllib.error.URLError, OSError):
                return  # the daemon is gone: what was not answered was not acknowledged

    try:
        wait_until_serving(port)
        clients = [threading.Thread(target=client, args=(n,)) for n in range(16)]
        for thread in clients:
            thread.start()
        # A wait on purpose: the load runs until the kill, whatever the group in flight then.
        stop.wait(1.5)
        process.send_signal(signal.SIGKILL)
        process.wait()
        stop.set()
        for thread in clients:
            thread.join(15)
    finally:
        stop.set()
        if process.poll() is None:
            process.kill()
            process.wait()
    assert len(acknowledged) > 30, "the load did not run"
    missing = set(acknowledged) - project_ids(project)
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:5]}"
