"""The two lengths of the reliability tests: short in `make test`, long in `make soak`.

`make soak` sets `BOOMERANG_SOAK=1`, which multiplies the fuzzers' example counts, the crash
test's kills and the provider-fault burst; `make test` runs the short forms only.
"""

from __future__ import annotations

import os
from typing import TypeVar

from hypothesis import HealthCheck, settings

SOAK = os.environ.get("BOOMERANG_SOAK") == "1"
Count = TypeVar("Count", int, float)


def scaled(short: Count, long: Count) -> Count:
    """`short` in `make test`, `long` under `make soak`."""
    return long if SOAK else short


def fuzzing(examples: int) -> settings:
    """Hypothesis settings for a fuzzer: `examples` in `make test`, twenty times as many under
    `make soak`; no deadline (a busy machine is no bug) and the daemon fixture shared."""
    return settings(
        max_examples=scaled(examples, examples * 20),
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
