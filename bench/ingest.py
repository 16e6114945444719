"""`POST /events` on the real `boomerang run` process, beside a bare aiohttp handler.

The load generator is wrk (`apt-get install wrk`; `make bench` installs it when it can), the
same for both servers: 32 connections, one `product.viewed` per request, each with an id of
its own. The baseline is `bench/bare_ingest.py` in its own process: JSON parse and one SQLite
insert per request, WAL, synchronous=FULL. Then Boomerang takes batches of 500 events per
request, and finally a steady half of its maximum rate (wrk's `delay()` spacing each
connection's requests), where its p99 latency is read beside the bare handler's at half its own.

Between runs the daemon is given time to act on the events it stored (its engine runs as
usual during every run), so that no run inherits the previous one's backlog.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.figures import Figure
from boomerang.scaffold import create_project

GOAL = (
    "ingest >= 0.5x a bare aiohttp+SQLite handler; batches of 500 >= 20,000 events/s; "
    "p99 < 50 ms at half rate"
)
CONNECTIONS = 32
SECONDS = 10
BATCH = 500
TOKEN = "bench-token-0123456789abcdef"
BOOMERANG = str(Path(sys.executable).parent / "boomerang")

# A request per call of request(); ids unique across threads and runs. `delay()` is defined
# only for the half-rate run.
SCRIPT = """
local counter = 0
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("prefix", "%(run)s-" .. threads .. "-")
end
local headers = {["Authorization"] = "Bearer %(token)s", ["Content-Type"] = "application/json"}
function request()
  local events = {}
  for i = 1, %(batch)d do
    counter = counter + 1
    events[i] = string.format('{"id":"%%s%%d","type":"product.viewed","at":"%(at)s",'
      .. '"customer":{"id":"c-%%d"},"data":{"product":{"id":"p-%%d","name":"Lamp","price":20}}}',
      prefix, counter, counter %% 20000, counter %% 50)
  end
  local body = events[1]
  if %(batch)d > 1 then body = "[" .. table.concat(events, ",") .. "]" end
  return wrk.format("POST", "/events", headers, body)
end
if %(delay)d > 0 then
  function delay() return %(delay)d end
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('RESULT {"requests": %%d, "duration_us": %%d, "errors": %%d, "p99_us": %%d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(99)))
end
"""


@dataclass
class Load:
    """What one wrk run measured."""

    events_per_second: float
    requests: int
    errors: int
    p99_ms: float


def wrk(
    port: int,
    run: str,
    *,
    batch: int = 1,
    delay_ms: int = 0,
    seconds: int = SECONDS,
    connections: int = CONNECTIONS,
) -> Load:
    """Drive `POST /events` on the port with wrk for `seconds` over `connections`; the events it
    carried per second."""
    at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(SCRIPT % {"run": run, "token": TOKEN, "batch": batch, "at": at, "delay": delay_ms})
        script.flush()
        output = subprocess.run(
            [
                "wrk",
                "-t2",
                f"-c{connections}",
                f"-d{seconds}s",
                "--timeout",
                "10s",
                "-s",
                script.name,
                f"http://127.0.0.1:{port}/events",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    line = next(line for line in output.splitlines() if line.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    seconds_taken = result["duration_us"] / 1e6
    return Load(
        events_per_second=result["requests"] * batch / seconds_taken,
        requests=result["requests"],
        errors=result["errors"],
        p99_ms=result["p99_us"] / 1000,
    )


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_serving(port: int, process: subprocess.Popen, seconds: float = 30) -> None:
    """Wait until /healthz answers; fail if the process ends first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server on port {port} exited with {process.returncode}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing serves on port {port} after {seconds} s")


def stop(process: subprocess.Popen) -> None:
    """SIGTERM, then wait (kill if it does not end)."""
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def backlog(database: Path) -> int:
    """Events the daemon has stored but not acted on yet."""
    with sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True, timeout=10) as db:
        return db.execute("SELECT count(*) FROM events WHERE handled = 0").fetchone()[0]


def settle(database: Path, seconds: float = 120) -> int:
    """Wait (bounded) for the daemon's engine to act on what it stored; the backlog found first."""
    first = backlog(database)
    deadline = time.monotonic() + seconds
    while backlog(database) and time.monotonic() < deadline:
        time.sleep(0.5)
    return first


def half_rate(
    port: int, run: str, full: float, before: Callable[[], object] = lambda: None
) -> tuple[Load, int]:
    """Load at half the `full` rate: wrk's `delay()` spaces each connection's requests (calibrated
    once on the latency seen); the load and the delay used."""
    target = full / 2
    delay = round(CONNECTIONS * 1000 / target)
    before()
    half = wrk(port, run, delay_ms=delay)
    if not 0.9 * target <= half.events_per_second <= 1.1 * target:
        # Each connection waits `delay` plus the answer's latency: correct for the latency seen.
        latency_ms = max(0.0, CONNECTIONS * 1000 / half.events_per_second - delay)
        delay = max(1, round(CONNECTIONS * 1000 / target - latency_ms))
        before()
        half = wrk(port, run + "2", delay_ms=delay)
    return half, delay


def baseline(directory: Path) -> tuple[Load, Load]:
    """The bare handler's rate at one event per request, and its latency at half that rate."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.bare_ingest", str(port), str(directory / "bare.db")],
        cwd=Path(__file__).parent.parent,
    )
    try:
        wait_serving(port, process)
        wrk(port, "bare-warm", seconds=2)
        full = wrk(port, "bare")
        half, _ = half_rate(port, "bare-half", full.events_per_second)
        return full, half
    finally:
        stop(process)


def boomerang(directory: Path) -> tuple[Load, Load, Load, list[str]]:
    """The daemon's rate at one event per request, with batches, and its latency at half rate."""
    project = directory / "project"
    create_project(project)
    port = free_port()
    env = {**os.environ, "BOOMERANG_PORT": str(port), "BOOMERANG_API_TOKEN": TOKEN}
    env.pop("NOTIFY_SOCKET", None)
    process = subprocess.Popen(
        [BOOMERANG, "run", "--config", str(project / "boomerang.yaml")],
        cwd=directory,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(directory / "daemon.log").open("ab"),
    )
    database = project / "boomerang.db"
    notes = []
    try:
        wait_serving(port, process)
        wrk(port, "warm", seconds=2)
        settle(database)
        single = wrk(port, "single")
        notes.append(f"single: {settle(database)} events left for the engine after the run")
        batch = wrk(port, "batch", batch=BATCH)
        notes.append(f"batch: {settle(database)} events left for the engine after the run")
        half, delay = half_rate(port, "half", single.events_per_second, lambda: settle(database))
        notes.append(
            f"half rate: target {single.events_per_second / 2:,.0f}/s, wrk delay {delay} ms per connection"
        )
    finally:
        stop(process)
    return single, batch, half, notes


def run() -> list[Figure]:
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk, or `make bench` as root): ingest not measured")
        return []
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as name:
        directory = Path(name)
        bare, bare_half = baseline(directory)
        single, batch, half, notes = boomerang(directory)
    print(f"{'':>28} {'events/s':>10} {'requests':>9} {'errors':>7} {'p99 ms':>8}")
    for label, load in (
        ("bare handler, 1 per request", bare),
        ("bare handler, half rate", bare_half),
        ("boomerang, 1 per request", single),
        (f"boomerang, {BATCH} per request", batch),
        ("boomerang, half rate", half),
    ):
        rate = f"{load.events_per_second:10,.0f}"
        print(f"{label:>28} {rate} {load.requests:9,} {load.errors:7} {load.p99_ms:8.1f}")
    for note in notes:
        print(f"  {note}")
    errors = bare.errors + bare_half.errors + single.errors + batch.errors + half.errors
    clean = f"; {errors} failed requests" if errors else ""
    return [
        Figure(
            "ingest",
            round(single.events_per_second),
            "events/s",
            round(bare.events_per_second),
            "ratio >= 0.5 of the bare handler",
            single.events_per_second >= 0.5 * bare.events_per_second and not single.errors,
            f"POST /events, 1 product.viewed per request, wrk -c{CONNECTIONS}, p99 {single.p99_ms:.0f} ms"
            + clean,
        ),
        Figure(
            "ingest",
            round(batch.events_per_second),
            "events/s",
            None,
            ">= 20,000 events/s",
            batch.events_per_second >= 20_000 and not batch.errors,
            f"batches of {BATCH} events per request, wrk -c{CONNECTIONS}",
        ),
        Figure(
            "ingest",
            round(half.p99_ms, 1),
            "ms p99",
            round(bare_half.p99_ms, 1),
            "< 50 ms at half the maximum rate",
            half.p99_ms < 50 and not half.errors,
            f"at {half.events_per_second:,.0f} events/s (half of {single.events_per_second:,.0f}); "
            f"baseline: the bare handler at half its rate ({bare_half.events_per_second:,.0f}/s)",
        ),
    ]
