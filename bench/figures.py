"""A benchmark's figures, and the file `make bench` writes them to.

Every benchmark measures its own baseline in the same run, on the same machine, so that the
ratio means something on a busy laptop and on CI alike. `make bench` prints each figure and
appends it as one JSON line to `bench/results/<date>-<commit>.jsonl`.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


@dataclass
class Figure:
    """One measured figure beside its baseline: `ratio` is value / baseline."""

    benchmark: str  # ingest, sends, scheduler, simulate, check
    value: float
    unit: str
    baseline: float | None
    goal: str  # what the figure must show, in words
    met: bool  # whether it does
    detail: str = ""  # what was measured, for the printed line

    @property
    def ratio(self) -> float | None:
        """The figure over its baseline, or None without one."""
        return round(self.value / self.baseline, 3) if self.baseline else None

    def line(self) -> str:
        """The printed form."""
        baseline = f"{self.baseline:,.1f}" if self.baseline is not None else "-"
        ratio = f"{self.ratio:.2f}x" if self.ratio is not None else "-"
        verdict = "ok" if self.met else "MISSED"
        return (
            f"{self.benchmark:<10} {self.value:>12,.1f} {self.unit:<12} baseline {baseline:>12} "
            f"ratio {ratio:>7}  [{verdict}: {self.goal}] {self.detail}"
        )


def commit() -> str:
    """The commit measured (with `+` if the work tree has changes), or `unknown`."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "core", "plugins", "bench", ":!bench/results"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+" if dirty else "")


def write(figures: list[Figure]) -> Path:
    """Append the figures to today's results file for this commit; returns its path."""
    revision = commit()
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{datetime.now(UTC):%Y-%m-%d}-{revision}.jsonl"
    with path.open("a", encoding="utf-8") as out:
        for figure in figures:
            record = asdict(figure) | {"ratio": figure.ratio, "commit": revision}
            out.write(json.dumps(record) + "\n")
    return path
