"""What a worker reports when it stops: how many jobs it took to a final state,
by status. Counts only, so a worker that runs for months holds no job rows."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class JobCounts:
    by_status: Counter[str] = field(default_factory=Counter)

    def add(self, status: str) -> None:
        self.by_status[status] += 1

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    @property
    def succeeded(self) -> int:
        return self.by_status["succeeded"]

    @property
    def other(self) -> int:
        return self.total - self.succeeded
