"""What `zmm queue` shows: the running jobs, the queued ones in run order with
each one's position, ETA and why it waits (when no live backend can run it),
the live workers, the pause switch and, with --all, the last finished jobs.

`read` takes one look at the spool through the Store; `build` is pure (the
running and queued jobs, recent generation times and live backends as plain
values), so the ETAs are tested without a spool. Nothing here formats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from zmm import measures
from zmm.jobs import FINISHED
from zmm.timestamps import parse_iso
from zmm.views import routing

FINISHED_SHOWN = 20  # `zmm queue --all`


@dataclass(frozen=True)
class Queued:
    position: int  # 1-based place in run order
    job: Any  # a zmm.store.Job
    eta_s: float | None  # None: unknown (no times yet), or no backend can run it
    waiting_reason: str | None  # zmm.views.routing.waiting_reason


@dataclass(frozen=True)
class QueueView:
    at: float
    paused: bool
    workers: list[dict[str, Any]]  # the live ones (zmm.liveness)
    running: list[Any]
    queued: list[Queued]
    finished: list[Any]  # newest first; empty unless asked for

    def age_s(self, job: Any) -> float:
        """How long ago `job` was created."""
        return max(0.0, self.at - parse_iso(job.created_at))

    def public(self, assets_root: Any) -> dict[str, Any]:
        """The JSON shape of `zmm queue --json` (and of the server's queue)."""
        return {
            "paused": self.paused,
            "workers": [{("worker_id" if key == "id" else key): value
                         for key, value in worker.items()} for worker in self.workers],
            "running": [job.public(assets_root) for job in self.running],
            "queued": [dict(item.job.public(assets_root), position=item.position,
                            eta_s=item.eta_s, waiting_reason=item.waiting_reason)
                       for item in self.queued],
            "finished": [job.public(assets_root) for job in self.finished],
        }


def read(store: Any, settings: Any, *, with_finished: bool = False) -> QueueView:
    """One look at the spool `store` (a zmm.store.Store) as of its clock."""
    lease_s = settings.get("worker.lease_s")
    running = store.running()
    queued = store.run_order(settings.get("worker.aging_s"))
    times = store.recent_generation_times()
    workers = store.live_workers(lease_s)
    now = store.clock()
    live = routing.live_backends(store.backends(), workers, now, lease_s)
    finished: list[Any] = []
    if with_finished:
        from zmm.store import HistoryFilter  # zmm.store.history: only for --all

        finished = store.history_page(HistoryFilter(statuses=FINISHED, limit=FINISHED_SHOWN))[0]
    return build(now=now, paused=store.is_paused(), workers=workers, running=running,
                 queued=queued, times=times, live=live, finished=finished)


def build(*, now: float, paused: bool, workers: list[dict[str, Any]], running: list[Any],
          queued: list[Any], times: list[float], live: dict[str, routing.LiveBackend],
          finished: list[Any]) -> QueueView:
    """The view of these values: a queued job's ETA is the typical (median)
    generation time for each job ahead of it that a backend can run, running
    ones included, plus its own; a job no live backend can run has a waiting
    reason and no ETA, and holds up nobody behind it."""
    typical = measures.median(times)
    ahead = len(running)
    entries = []
    before = 0  # jobs ahead of this one that a backend can run
    for position, job in enumerate(queued, start=1):
        why = None if job.backend_requested == "cloud" else routing.waiting_reason(
            routing.needs_of(job.needs), job.on_backend, live)
        eta = None
        if typical and why is None:
            eta = round((before + ahead) * typical + typical, 1)
            before += 1
        entries.append(Queued(position, job, eta, why))
    return QueueView(at=now, paused=paused, workers=workers, running=running, queued=entries,
                     finished=finished)
