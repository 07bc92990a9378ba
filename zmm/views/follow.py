"""Following jobs through the spool until they finish: what `zmm wait` and a
waiting `zmm generate` do. Reads only; reports each job's state, queue
position and progress to a callback, so the caller chooses how to show it,
tells `zmm wait` when no worker is alive to run its jobs, says once why a
job waits when no live backend can run it and when the queue is paused, and
what runs the jobs left when a person stops following.
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


NO_WORKER = ("no worker is running: start one with `zmm serve-worker`, or use `zmm generate`, "
             "which runs its jobs itself")


class NoWorkerNotice:
    """Says once that no worker is alive (zmm.liveness: a row in the spool's
    workers table with a heartbeat within LIVE_LEASES leases, as every other
    view counts it); the lock file is not touched, so a worker starting at that
    moment never finds it taken. Looks at most every `every` seconds."""

    def __init__(self, store: Store, *, lease_s: float, say: Callable[[str], None],
                 every: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.store, self.lease_s, self.say = store, lease_s, say
        self.every, self.clock = every, clock
        self.said = False
        self._next = 0.0

    def __call__(self) -> None:
        if self.said or self.clock() < self._next:
            return
        self._next = self.clock() + self.every
        if not self.store.live_workers(self.lease_s):
            self.said = True
            self.say(NO_WORKER)


PAUSED = "the queue is paused: no worker starts a job until `zmm queue resume`"


class PausedNotice:
    """Says when the queue is paused (`zmm queue pause`) while jobs are followed,
    and again when it is resumed; a paused queue otherwise looks like a queue
    that never moves. Looks at most every `every` seconds."""

    def __init__(self, store: Store, *, say: Callable[[str], None], every: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store, self.say, self.every, self.clock = store, say, every, clock
        self.paused = False
        self._next = 0.0

    def __call__(self) -> None:
        if self.clock() < self._next:
            return
        self._next = self.clock() + self.every
        paused = self.store.is_paused()
        if paused != self.paused:
            self.paused = paused
            self.say(PAUSED if paused else "the queue was resumed")


def after_interrupt(store: Store, job_ids: list[str], *, lease_s: float) -> str:
    """What to tell a person who stopped following: which jobs are left, and what
    will run them (a live worker, or nothing until one starts); `zmm wait` only
    follows jobs, it never runs them."""
    left = [job for job in store.get_many(job_ids) if not job.finished]
    if not left:
        return "interrupted: every job had already finished"
    batches = {job.batch_id for job in store.get_many(job_ids)}
    batch = next(iter(batches)) if len(batches) == 1 else None
    follow = f"zmm wait --batch {batch}" if batch else "zmm wait " + " ".join(
        job.id for job in left)
    count = (f"{len(left)} job(s) not finished stay queued or running "
             f"({', '.join(job.id for job in left[:5])}"
             + (f" and {len(left) - 5} more)" if len(left) > 5 else ")"))
    workers = store.live_workers(lease_s)
    if workers:
        runs = (f"{len(workers)} worker(s) running now will run them (`zmm queue` shows "
                "the order)")
    else:
        runs = ("no worker is running, so nothing runs them until one starts: "
                "`zmm serve-worker` (`--once` to run the queue and exit)")
    paused = "; the queue is paused: `zmm queue resume`" if store.is_paused() else ""
    return f"interrupted: {count}; {runs}{paused}; `{follow}` follows them"


class WaitingReasons:
    """Says once per job why it waits when no live backend can run it (pinned to
    a backend no live worker serves, a model file no live backend has; see
    zmm.views.routing). Looks at most every `every` seconds."""

    def __init__(self, store: Store, job_ids: list[str], *, lease_s: float,
                 say: Callable[[str], None], every: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store, self.job_ids, self.lease_s, self.say = store, job_ids, lease_s, say
        self.every, self.clock = every, clock
        self.told: set[str] = set()
        self._next = 0.0

    def __call__(self) -> None:
        from zmm.views import routing

        if self.clock() < self._next:
            return
        self._next = self.clock() + self.every
        waiting = [job for job in self.store.get_many(
            [job_id for job_id in self.job_ids if job_id not in self.told])
            if job.status == "queued" and job.backend_requested != "cloud"]
        if not waiting:
            return
        live = routing.read_live(self.store, self.lease_s)
        for job in waiting:
            why = routing.waiting_reason(routing.needs_of(job.needs), job.on_backend, live)
            if why is not None:
                self.told.add(job.id)
                self.say(f"{job.id} waits: {why}")
