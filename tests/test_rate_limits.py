"""The providers' rate limits as token buckets: the arithmetic in memory on a fake clock, the
same in PostgreSQL's `rate_buckets` (one statement for a batch of takers, the database's
clock), and three daemons' worth of buckets on one schema never granting more than
rate * time + burst between them."""

from __future__ import annotations

import asyncio
import random
import threading
from pathlib import Path

import psycopg
import pytest
from rate_buckets import migrated

from boomerang.plugins.sources.bitrix24_rest import bucket_for
from boomerang.rate_limits import Grant, LocalRateLimits, RateLimits, burst_for, rate_limits_for, waits
from boomerang.store.rate_buckets import SharedRateLimits


class FakeClock:
    """Seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def shared(postgresql_url: str) -> str:
    """The URL of a schema of the test's own, migrated: `rate_buckets` is there."""
    return migrated(postgresql_url)


def move_bucket_clock(url: str, name: str, seconds: float) -> None:
    """Make the bucket's last take `seconds` earlier (later, if negative), as if time had passed."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE rate_buckets SET updated_at = updated_at - %s WHERE name = %s", [seconds, name])


# the arithmetic, in memory on a fake clock
async def test_a_full_bucket_gives_its_burst_at_once_then_one_token_per_interval() -> None:
    clock = FakeClock()
    limits = LocalRateLimits(clock)
    grants = [await limits.take("b", 1, rate=10, burst=3) for _ in range(6)]
    assert [round(g.wait, 9) for g in grants] == [0, 0, 0, 0.1, 0.2, 0.3]
    assert all(g.at == clock.now for g in grants)
    assert grants[-1].ready_at == pytest.approx(clock.now + 0.3)


async def test_time_refills_the_bucket_up_to_its_burst_and_no_further() -> None:
    clock = FakeClock()
    limits = LocalRateLimits(clock)
    for _ in range(3):
        await limits.take("b", 1, rate=10, burst=3)
    clock.now += 0.2  # two tokens back
    assert [(await limits.take("b", 1, 10, 3)).wait for _ in range(3)] == [0, 0, pytest.approx(0.1)]
    clock.now += 60  # a minute idle: still only the burst
    assert [round((await limits.take("b", 1, 10, 3)).wait, 9) for _ in range(4)] == [0, 0, 0, 0.1]


async def test_a_debt_is_waited_off_in_the_order_taken() -> None:
    clock = FakeClock()
    limits = LocalRateLimits(clock)
    assert (await limits.take("b", 5, rate=2, burst=2)).wait == pytest.approx(1.5)  # 5 > burst: pays it all
    clock.now += 1.0  # two tokens in: the debt of 3 is now 1
    assert (await limits.take("b", 1, 2, 2)).wait == pytest.approx(1.0)


async def test_a_clock_going_back_adds_no_tokens() -> None:
    clock = FakeClock()
    limits = LocalRateLimits(clock)
    await limits.take("b", 2, rate=1, burst=2)
    clock.now -= 30
    grant = await limits.take("b", 1, 1, 2)
    assert grant.wait == pytest.approx(1.0) and grant.at == 1000.0  # the bucket's time holds


async def test_buckets_are_apart_by_name() -> None:
    limits = LocalRateLimits(FakeClock())
    await limits.take("a", 1, rate=1, burst=1)
    assert (await limits.take("b", 1, 1, 1)).wait == 0
    assert (await limits.take("a", 1, 1, 1)).wait == pytest.approx(1.0)


@pytest.mark.parametrize(("count", "rate", "burst"), [(0, 1, 1), (1, 0, 1), (1, -2, 1), (1, 1, 0.5)])
async def test_a_meaningless_take_is_refused(count: float, rate: float, burst: float) -> None:
    with pytest.raises(ValueError, match=r"above 0|at least 1"):
        await LocalRateLimits().take("b", count, rate, burst)


async def test_tokens_given_back_shorten_the_next_wait_up_to_the_burst() -> None:
    clock = FakeClock()
    limits = LocalRateLimits(clock)
    for _ in range(5):  # burst 1 at 1 a second: 4 short
        await limits.take("b", 1, rate=1, burst=1)
    await limits.give_back("b", 3, 1, 1)  # three of those did not go
    assert (await limits.take("b", 1, 1, 1)).wait == pytest.approx(2.0)
    await limits.give_back("b", 10, 1, 1)  # more than was short: full, no fuller
    assert [(await limits.take("b", 1, 1, 1)).wait for _ in range(2)] == [0, pytest.approx(1.0)]
    await limits.give_back("new", 1, 1, 1)  # a bucket never taken from is full already
    assert (await limits.take("new", 1, 1, 1)).wait == 0


def test_takers_together_each_wait_for_their_own_tokens() -> None:
    # three takers took 1, 2 and 3 from a bucket holding 2: 4 short, at 2 a second
    assert waits(-4, [1, 2, 3], rate=2) == [0, pytest.approx(0.5), pytest.approx(2.0)]
    assert burst_for(25) == 5 and burst_for(1) == 1


async def test_acquire_returns_once_the_tokens_are_in() -> None:
    limits = LocalRateLimits()
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(3):  # burst 1 at 20 a second: the third waits two intervals
        await limits.acquire("b", 1, 20, 1)
    assert loop.time() - started >= 0.09


def test_the_database_decides_where_the_buckets_live(tmp_path: Path) -> None:
    assert isinstance(rate_limits_for(tmp_path / "boomerang.db"), LocalRateLimits)
    for url in ("postgresql://u@db.example/shop", "postgres://db.example/shop"):
        limits = rate_limits_for(url)
        assert isinstance(limits, SharedRateLimits) and isinstance(limits, RateLimits) and limits.url == url


# the same in PostgreSQL
async def test_a_batch_of_takers_is_one_statement_with_the_same_arithmetic(shared: str) -> None:
    limits = SharedRateLimits(shared)
    try:
        grants = await asyncio.gather(*(limits.take("b", 1, rate=10, burst=3) for _ in range(6)))
    finally:
        await limits.close()
    assert len({g.at for g in grants}) == 1  # one round trip: one reading of the clock
    assert [round(g.wait, 9) for g in grants] == [0, 0, 0, 0.1, 0.2, 0.3]
    with psycopg.connect(shared) as conn:
        tokens, updated_at = conn.execute(
            "SELECT tokens, updated_at FROM rate_buckets WHERE name = 'b'"
        ).fetchone()
    assert tokens == pytest.approx(-3) and updated_at == grants[0].at


async def test_the_database_refills_by_its_clock_up_to_the_burst(shared: str) -> None:
    limits = SharedRateLimits(shared)
    try:
        await asyncio.gather(*(limits.take("b", 1, 10, 3) for _ in range(3)))
        move_bucket_clock(shared, "b", 60)  # a minute since: the bucket is full, no fuller
        grants = await asyncio.gather(*(limits.take("b", 1, 10, 3) for _ in range(4)))
        assert [round(g.wait, 9) for g in grants] == [0, 0, 0, 0.1]
        move_bucket_clock(shared, "b", -3600)  # a daemon whose clock is ahead wrote it: no refill
        [grant] = await asyncio.gather(limits.take("b", 2, 10, 3))
        before = grants[0].at + 3600
        assert grant.at == pytest.approx(before) and grant.wait == pytest.approx(0.3)
    finally:
        await limits.close()


async def test_the_database_takes_back_tokens_up_to_the_burst(shared: str) -> None:
    limits = SharedRateLimits(shared)
    try:
        await limits.give_back("b", 1, 1, 1)  # no row: nothing to do, nothing written
        await asyncio.gather(*(limits.take("b", 1, rate=1, burst=1) for _ in range(5)))
        await limits.give_back("b", 3, 1, 1)
        [grant] = await asyncio.gather(limits.take("b", 1, 1, 1))
        assert grant.wait == pytest.approx(2.0, abs=0.05)  # the clock ran a little meanwhile
        await limits.give_back("b", 10, 1, 1)
        with psycopg.connect(shared) as conn:
            [tokens] = conn.execute("SELECT tokens FROM rate_buckets WHERE name = 'b'").fetchone()
        assert tokens == 1  # full, no fuller
    finally:
        await limits.close()


async def test_a_broken_connection_is_replaced_on_the_next_take(shared: str) -> None:
    limits = SharedRateLimits(shared)
    try:
        await limits.take("b", 1, 10, 3)
        connection = limits._connection
        assert connection is not None
        with psycopg.connect(shared, autocommit=True) as conn:  # as a server restart would
            conn.execute("SELECT pg_terminate_backend(%s)", [connection.info.backend_pid])
        with pytest.raises(psycopg.OperationalError):
            await limits.take("b", 1, 10, 3)
        assert (await limits.take("b", 1, 10, 3)).wait == 0
    finally:
        await limits.close()


# three daemons on one database
RATE, BURST = 40.0, 4.0


def daemon_takes(url: str, senders: int, takes: int, seed: int) -> list[tuple[Grant, float]]:
    """One daemon's buckets and `senders` concurrent senders, each taking `takes` times 1 or 2
    tokens and waiting for them as a channel does; what each grant was, with its count."""

    async def run() -> list[tuple[Grant, float]]:
        limits = SharedRateLimits(url)
        chance = random.Random(seed)
        granted: list[tuple[Grant, float]] = []

        async def sender() -> None:
            for _ in range(takes):
                count = float(chance.choice((1, 2)))
                grant = await limits.take("twilio:+15550001111", count, RATE, BURST)
                granted.append((grant, count))
                await asyncio.sleep(grant.wait)

        try:
            await asyncio.gather(*(sender() for _ in range(senders)))
        finally:
            await limits.close()
        return granted

    return asyncio.run(run())


def test_three_daemons_never_get_more_than_rate_times_time_plus_burst(shared: str) -> None:
    results: list[list[tuple[Grant, float]]] = [[], [], []]

    def daemon(index: int) -> None:
        results[index] = daemon_takes(shared, senders=4, takes=12, seed=index)

    threads = [threading.Thread(target=daemon, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    grants = sorted((grant.ready_at, count) for result in results for grant, count in result)
    assert len(grants) == 3 * 4 * 12
    # In every window between two grants' times (the database's clock), the tokens that came
    # in at most fill the burst and what the rate brought meanwhile; 0.5 token of slack for
    # the doubles' rounding. Buckets kept per daemon would have given three times as much.
    for first in range(len(grants)):
        total = 0.0
        for last in range(first, len(grants)):
            total += grants[last][1]
            window = grants[last][0] - grants[first][0]
            assert total <= BURST + RATE * window + 0.5, (first, last, total, window)


async def test_a_bitrix24_portal_is_one_bucket_for_every_daemon_named_without_its_secret(shared: str) -> None:
    """Two daemons' clients of one portal (the source's fetches and the actions) take turns from
    one row of `rate_buckets`, named by a digest: the webhook URL's secret code stays out of the
    database."""
    rest_url = "https://shop.bitrix24.ru/rest/1/s3cr3tc0de/"
    first, second = SharedRateLimits(shared), SharedRateLimits(shared)
    try:
        buckets = [bucket_for(rest_url, 10, first), bucket_for(rest_url, 10, second)]
        started = asyncio.get_running_loop().time()
        for n in range(6):
            await buckets[n % 2].turn()
        elapsed = asyncio.get_running_loop().time() - started
    finally:
        await first.close()
        await second.close()
    # Six turns of one bucket at 10 a second: the burst at once, then 0.1 s apart (0.4 s); a
    # bucket per daemon would let them through in 0.1 s. A slow machine only spreads them further.
    assert elapsed >= (6 - burst_for(10)) / 10 - 0.05
    with psycopg.connect(shared) as conn:
        names = [name for (name,) in conn.execute("SELECT name FROM rate_buckets")]
    assert len(names) == 1 and names[0].startswith("bitrix24:") and "s3cr3t" not in names[0]
