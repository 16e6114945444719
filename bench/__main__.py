"""Run every benchmark and print its figures next to the baseline measured in the same run."""

from __future__ import annotations

import sys

from bench import check_speed, scheduler_scale


def main() -> int:
    ok = True
    for benchmark in (check_speed, scheduler_scale):
        print(f"## {benchmark.__name__.removeprefix('bench.')}: {benchmark.GOAL}")
        ok &= benchmark.run()
        print()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
