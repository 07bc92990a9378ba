"""What a worker reports when it stops: how many jobs it took to a final state,
by status, and the ids of the first ones that did not succeed (for `--once`'s
error line). Counts and a few ids only: a worker that runs for months holds no
job rows."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from zmm.jobs import JobState
from zmm.store import Job

# How many ids of jobs that did not succeed a worker keeps to name them.
NAMED_MAX = 20


@dataclass
class JobCounts:
    by_status: Counter[str] = field(default_factory=Counter)
    not_succeeded: list[str] = field(default_factory=list)  # the first NAMED_MAX ids

    def add(self, job: Job) -> None:
        self.by_status[job.status] += 1
        if job.status != JobState.SUCCEEDED and len(self.not_succeeded) < NAMED_MAX:
            self.not_succeeded.append(job.id)

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    @property
    def succeeded(self) -> int:
        return self.by_status["succeeded"]

    @property
    def other(self) -> int:
        return self.total - self.succeeded
