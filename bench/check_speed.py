"""`boomerang check` on 30 scenarios, against the same process doing nothing but start."""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.figures import Figure
from boomerang.scaffold import create_project

GOAL = "boomerang check on 30 scenarios in under 1 s"
SCENARIO = """
scenario: generated-{n}
category: trigger
trigger: {{event: cart.updated, if: "cart.items | length > 0 and cart.total >= {n}"}}
restart: true
reentry: 7d
exit_on: [order.placed]
goal: order.placed
holdout: 10%
steps:
  - wait: 20m
    until_idle: 20m
  - send: cart_reminder
    channels: [push, sms, email]
  - wait: 24h
  - if: cart.total >= 50 and days_since(customer.last_order_at) > 30
    then:
      - send: cart_offer
        promo: {{percent: 10, expires: 48h}}
    else:
      - split:
          a: {{weight: 50%, steps: [{{send: cart_reminder_2, channels: [email]}}]}}
          b: 50%
"""


def timed(command: list[str], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, check=False, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def run() -> list[Figure]:
    boomerang = str(Path(sys.executable).parent / "boomerang")
    with tempfile.TemporaryDirectory() as directory:
        project = Path(directory) / "project"
        create_project(project)
        existing = len(list((project / "scenarios").glob("*.yaml")))
        for n in range(30 - existing):
            (project / "scenarios" / f"generated_{n:02}.yaml").write_text(SCENARIO.format(n=n))
        count = len(list((project / "scenarios").glob("*.yaml")))
        config = str(project / "boomerang.yaml")
        check = subprocess.run([boomerang, "check", "--config", config], capture_output=True, text=True)
        if check.returncode != 0:
            print(check.stdout, check.stderr)
            raise SystemExit("the generated project does not pass check")
        startup = timed([boomerang, "--version"])
        whole = timed([boomerang, "check", "--config", config])
    print(f"baseline: `boomerang --version` (interpreter and imports)   {startup * 1000:7.0f} ms")
    print(f"`boomerang check` on {count} scenarios                      {whole * 1000:7.0f} ms")
    print(f"of which checking                                        {(whole - startup) * 1000:7.0f} ms")
    return [
        Figure("check", round(whole * 1000), "ms", round(startup * 1000), GOAL, whole < 1.0,
               f"{count} scenarios; baseline: boomerang --version"),
    ]
