"""`boomerang simulate` of a shop's month (bench/shop_month.py) through the reference scenarios.

The real command in a child process, on a project made by `boomerang init`, its timeline written
as JSON lines to a file: wall time and the child's own peak RSS (`os.wait4`). The baseline in the
same run is the same command on 2 000 customers, scaled linearly where a time is compared: a
ratio near 1 means the run keeps its small-file pace at 100 000 customers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

from bench.figures import Figure
from bench.shop_month import write_month
from boomerang.scaffold import create_project

GOAL = "simulate 100 000 customers (~185 000 events, 30 days) in < 60 s and < 500 MB RSS"
CUSTOMERS = 100_000
BASELINE_CUSTOMERS = 2_000
TIMEOUT = 600.0  # seconds; a run that takes longer is stopped and reported as missed


def simulate(config: Path, customers: int, directory: Path) -> tuple[float, float, bool]:
    """Run `boomerang simulate --json` on a generated month: (seconds, peak RSS in MB, finished)."""
    events = directory / f"month-{customers}.jsonl"
    with events.open("w", encoding="utf-8") as out:
        count = write_month(customers, out)
    timeline = directory / f"timeline-{customers}.jsonl"
    command = [
        str(Path(sys.executable).parent / "boomerang"),
        "simulate",
        "--config",
        str(config),
        "--events",
        str(events),
        "--json",
    ]
    started = time.perf_counter()
    with timeline.open("w", encoding="utf-8") as out, tempfile.TemporaryFile("w+") as errors:
        code, peak = _run_measured(command, out, errors)
        seconds = time.perf_counter() - started
        if code is None:
            print(
                f"{customers} customers ({count} events): not done after {TIMEOUT:.0f} s, "
                f"{peak:.0f} MB until stopped",
                flush=True,
            )
            return seconds, peak, False
        if code != 0:
            errors.seek(0)
            raise SystemExit(f"boomerang simulate failed:\n{errors.read()}")
    with timeline.open(encoding="utf-8") as lines:
        entries = sum(1 for _ in lines)
    print(
        f"{customers:>7} customers, {count:>7} events: {seconds:7.1f} s, {customers / seconds:7.0f} "
        f"customers/s, peak RSS {peak:5.0f} MB, {entries} timeline entries",
        flush=True,
    )
    return seconds, peak, True


def _run_measured(command: list[str], out: IO[str], errors: IO[str]) -> tuple[int | None, float]:
    """Run `command`: its exit code (None if stopped after `TIMEOUT`) and its own peak RSS in
    MB, from `wait4` on that child alone (`RUSAGE_CHILDREN` would report the largest child of
    the whole `make bench` run, such as another benchmark's daemon)."""
    process = subprocess.Popen(command, stdout=out, stderr=errors)
    stopped = threading.Event()

    def stop() -> None:
        stopped.set()
        process.kill()

    timer = threading.Timer(TIMEOUT, stop)
    timer.start()
    try:
        _, status, usage = os.wait4(process.pid, 0)
    finally:
        timer.cancel()
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    # ru_maxrss is in kilobytes on Linux
    return (None if stopped.is_set() else process.returncode), usage.ru_maxrss / 1024


def run() -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="bench-simulate-") as name:
        directory = Path(name)
        create_project(directory / "project")
        config = directory / "project" / "boomerang.yaml"
        # The small run first: RUSAGE_CHILDREN keeps the maximum, so its figure is its own.
        small, small_peak, _ = simulate(config, BASELINE_CUSTOMERS, directory)
        seconds, peak, finished = simulate(config, CUSTOMERS, directory)
    scale = CUSTOMERS / BASELINE_CUSTOMERS
    figures = [
        Figure(
            "simulate",
            round(seconds, 1),
            "s",
            round(small * scale, 1),
            "100 000 customers in < 60 s",
            finished and seconds < 60,
            f"{CUSTOMERS} customers{'' if finished else f' (stopped after {TIMEOUT:.0f} s)'}; "
            f"baseline: {BASELINE_CUSTOMERS} customers' time x {scale:g}",
        ),
    ]
    if finished:  # a rate of a run that was stopped would only be a guess
        figures.append(
            Figure(
                "simulate",
                round(CUSTOMERS / seconds),
                "customers/s",
                round(BASELINE_CUSTOMERS / small),
                ">= 1 667 customers/s (100 000 in a minute)",
                CUSTOMERS / seconds >= 1667,
                f"baseline: the same command on {BASELINE_CUSTOMERS} customers",
            )
        )
    figures.append(
        Figure(
            "simulate",
            round(peak),
            "MB",
            round(small_peak),
            "peak RSS < 500 MB",
            finished and peak < 500,
            f"peak RSS of the 100 000-customer run{'' if finished else ' until it was stopped'}; "
            f"baseline: {BASELINE_CUSTOMERS} customers'",
        )
    )
    return figures
