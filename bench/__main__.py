"""Run the benchmarks (all, or those named) and record their figures.

    python -m bench                 # every benchmark
    python -m bench ingest sends    # only these

Each prints its figures beside the baseline measured in the same run; all of them are
appended to `bench/results/<date>-<commit>.jsonl` (see bench/figures.py).
"""

from __future__ import annotations

import sys

from bench import (
    check_speed,
    cluster,
    engine,
    ingest,
    rate_limits,
    recommendations,
    report,
    scheduler_scale,
    sends,
    simulate,
)
from bench.figures import Figure, write

BENCHMARKS = {
    "check": check_speed,
    "cluster": cluster,
    "engine": engine,
    "ingest": ingest,
    "rate": rate_limits,
    "recommendations": recommendations,
    "report": report,
    "scheduler": scheduler_scale,
    "sends": sends,
    "simulate": simulate,
}


def main(names: list[str]) -> int:
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; there are {', '.join(BENCHMARKS)}")
        return 2
    figures: list[Figure] = []
    for name in names or list(BENCHMARKS):
        module = BENCHMARKS[name]
        print(f"## {name}: {module.GOAL}", flush=True)
        measured = module.run()
        for figure in measured:
            print(figure.line(), flush=True)
        figures += measured
        print()
    path = write(figures)
    print(f"figures written to {path}")
    return 0 if all(figure.met for figure in figures) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
