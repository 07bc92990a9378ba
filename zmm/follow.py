"""Following jobs through the spool until they finish: what `zmm wait` and a
waiting `zmm generate` do. Reads only; reports each job's state, queue
position and progress to a callback, so the caller chooses how to show it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from zmm.errors import TimedOut
from zmm.store import Job, Store


@dataclass(frozen=True)
class Snapshot:
    job: Job
    position: int | None  # 1-based place in run order while queued
    queued_total: int

    @property
    def finished(self) -> bool:
        return self.job.finished


def snapshot(store: Store, job_ids: list[str], aging_s: float) -> list[Snapshot]:
    order = store.run_order(aging_s)
    places = {job.id: index for index, job in enumerate(order, start=1)}
    return [Snapshot(job, places.get(job.id), len(order)) for job in store.get_many(job_ids)]


def wait_for(store: Store, job_ids: list[str], *, aging_s: float,
             on_change: Callable[[Snapshot], None], timeout: float | None = None,
             poll: float = 0.2, between: Callable[[], None] | None = None,
             clock: Callable[[], float] = time.monotonic,
             sleep: Callable[[float], None] = time.sleep) -> list[Job]:
    """Block until every job has finished; `between` runs once per poll (the
    inline worker hooks in there). Raises TimedOut after `timeout` seconds."""
    deadline = None if timeout is None else clock() + timeout
    seen: dict[str, tuple] = {}
    while True:
        snaps = snapshot(store, job_ids, aging_s)
        for snap in snaps:
            key = (snap.job.status, snap.position, snap.job.phase, snap.job.phase_detail,
                   snap.job.progress_value, snap.job.progress_max)
            if seen.get(snap.job.id) != key:
                seen[snap.job.id] = key
                on_change(snap)
        if all(snap.finished for snap in snaps):
            return [snap.job for snap in snaps]
        if deadline is not None and clock() >= deadline:
            pending = [s.job.id for s in snaps if not s.finished]
            raise TimedOut(f"timed out after {timeout:g}s; still unfinished: {', '.join(pending)}",
                           hint="the jobs go on; `zmm wait ID` follows them again")
        if between is not None:
            between()
        sleep(poll)
