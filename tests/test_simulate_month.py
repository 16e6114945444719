"""`boomerang simulate` of a generated shop's month (bench/shop_month.py) gives the very timeline
it gave before simulate was made faster: the same lines, in the same order, byte for byte.

The golden figures were taken from the code before the batching of `simulate` (commit eb5dee3:
one event, one job, one transaction at a time) on the `boomerang init` project with every
channel in outbox mode. A change of the engine that changes outcomes on purpose changes them
here too, in the same commit, saying why.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.shop_month import write_month
from boomerang.cli import cli

pytestmark = pytest.mark.no_store  # simulate runs on a temporary SQLite file of its own

CUSTOMERS = 400
# Lines of the timeline by (scenario, kind).
GOLDEN_COUNTS: dict[tuple[str, str], int] = {
    ('abandoned-cart', 'drop'): 46,
    ('abandoned-cart', 'enter'): 148,
    ('abandoned-cart', 'exit'): 148,
    ('abandoned-cart', 'goal'): 53,
    ('abandoned-cart', 'holdout'): 15,
    ('abandoned-cart', 'send'): 144,
    ('birthday', 'drop'): 1,
    ('birthday', 'enter'): 11,
    ('birthday', 'exit'): 11,
    ('birthday', 'send'): 10,
    ('browse-abandonment', 'drop'): 66,
    ('browse-abandonment', 'enter'): 371,
    ('browse-abandonment', 'exit'): 318,
    ('browse-abandonment', 'goal'): 28,
    ('browse-abandonment', 'holdout'): 31,
    ('browse-abandonment', 'send'): 386,
    ('cross-sell-bicycle', 'drop'): 2,
    ('cross-sell-bicycle', 'enter'): 10,
    ('cross-sell-bicycle', 'exit'): 10,
    ('cross-sell-bicycle', 'send'): 8,
    ('delivery-status', 'drop'): 3,
    ('delivery-status', 'enter'): 60,
    ('delivery-status', 'exit'): 60,
    ('delivery-status', 'send'): 57,
    ('recommendations', 'drop'): 6,
    ('recommendations', 'enter'): 53,
    ('recommendations', 'exit'): 53,
    ('recommendations', 'send'): 47,
    ('review-request', 'drop'): 2,
    ('review-request', 'enter'): 37,
    ('review-request', 'exit'): 37,
    ('review-request', 'send'): 21,
}
GOLDEN_SHA256 = "251cebea0ef64a3de17f517cd2acd4dcca48f8610b1cb6c4c19ceff0874531a2"


def test_a_generated_month_gives_the_timeline_it_always_gave(demo: Path, tmp_path: Path) -> None:
    month = io.StringIO()
    write_month(CUSTOMERS, month)
    events = tmp_path / "month.jsonl"
    events.write_text(month.getvalue(), encoding="utf-8")
    result = CliRunner().invoke(
        cli, ["simulate", "--config", str(demo / "boomerang.yaml"), "--events", str(events), "--json"]
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    counts = Counter((line["scenario"], line["kind"]) for line in lines)
    assert dict(sorted(counts.items())) == GOLDEN_COUNTS
    # Every rule of the contact plan still held: the lines are the ones it gave, in its order.
    assert hashlib.sha256(result.stdout.encode()).hexdigest() == GOLDEN_SHA256
