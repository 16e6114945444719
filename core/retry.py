"""How often and how soon work that failed is tried again: one policy for every job.

The scheduler retries a job whose handler raised (a bug, a full disk), a send retries a
message its channel said to try later, and an action retries a plugin that failed; all three
follow `RETRY`, modelled on procrastinate's `RetryStrategy` (a number of attempts, an
exponential wait).

The numbers: six attempts in all, the first retry after 30 seconds, each wait twice the last
(30 s, 1 min, 2 min, 4 min, 8 min): about a quarter of an hour from the first attempt to the
last. That rides out a provider's or a database's short outage, yet gives a message up while
it is still timely (an abandoned-cart reminder a day late is worse than none). A provider
that says how long to wait (Retry-After) is believed instead of the backoff.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from boomerang.model import Job
    from boomerang.store import JobQueue

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` tries in all; the wait after the n-th failure (n from 0) is `wait * 2**n` seconds."""

    attempts: int = 6
    wait: float = 30.0

    def retries(self, attempts_made: int) -> bool:
        """Whether a job that has failed `attempts_made` times before this failure is tried again."""
        return attempts_made + 1 < self.attempts

    def backoff(self, attempts_made: int) -> float:
        """Seconds to wait before the next attempt of a job that failed `attempts_made` times before."""
        return self.wait * 2**attempts_made

    def settle_failure(self, queue: JobQueue, job: Job, now: float, error: BaseException) -> None:
        """A job whose handler raised (a bug, a full disk; a provider's answer is the handler's
        own business): queued again after the backoff, or given up after its last attempt.
        Logged with the error either way. Call it where the queue's calls may block."""
        if self.retries(job.attempts):
            log.error("job %s (%s) failed; it will be retried", job.id, job.kind, exc_info=error)
            queue.retry_job(job.id, now + self.backoff(job.attempts))
        else:
            log.error(
                "job %s (%s) failed %d times; giving it up", job.id, job.kind, self.attempts, exc_info=error
            )
            queue.complete_job(job.id)


RETRY = RetryPolicy()
