"""The worker's side of the cloud lane: which jobs go to a cloud provider and
when (asked for; ComfyUI down past the job's max wait; no live backend able to
run it past its max wait; no VRAM; local attempts spent), how long ComfyUI has
been down, handing jobs over, and collecting what
the lane brings back as (job, Outcome) pairs for the worker's outcome ladder.

Every spool write for a job in the lane, other than its outcome, happens here.
Whether the worker is stopping is passed in; nothing here reads the worker.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from zmm.cloud import lane
from zmm.errors import Conflict
from zmm.outcome import Outcome, OutcomeKind
from zmm.store import Job, Store
from zmm.views import routing

Stranded = dict[tuple[str | None, str | None], str]  # (needs, on_backend) -> why it waits


@dataclass
class CloudStep:
    results: list[tuple[Job, Outcome]] = field(default_factory=list)  # stopped: for the ladder
    claimed: int = 0  # jobs claimed for the lane (they count against --max-jobs)


class CloudFallback:
    def __init__(self, store: Store, cloud: lane.CloudLane | None, *, worker_id: str, url: str,
                 lease_s: float, poll_s: float, max_wait_s: dict[str, float],
                 only_ids: list[str] | None, observer: Any,
                 monotonic: Callable[[], float], waited_for: list[str] | None = None) -> None:
        self.store, self.cloud, self.observer = store, cloud, observer
        self.worker_id, self.url = worker_id, url
        self.lease_s, self.poll_s, self.max_wait_s = lease_s, poll_s, max_wait_s
        self.only_ids, self.monotonic = only_ids, monotonic
        # The jobs a foreground worker (inline generate) is waiting for.
        self.waited_for = waited_for if waited_for is not None else only_ids
        self.down_since: float | None = None  # store clock when ComfyUI stopped answering
        self._next_check = 0.0
        self._stranded: Stranded = {}
        self._next_stranded = 0.0

    # -- ComfyUI's health, as the worker saw it ------------------------------------

    def comfy_down(self) -> None:
        if self.down_since is None:
            self.down_since = self.store.clock()

    def comfy_up(self) -> None:
        self.down_since = None

    # -- questions -------------------------------------------------------------------

    def ids(self) -> list[str]:
        return self.cloud.job_ids() if self.cloud is not None else []

    def busy(self) -> bool:
        return self.cloud is not None and bool(self.cloud.tasks)

    def ok(self, stopping: bool) -> bool:
        """A provider could take a fallback job now."""
        return self.cloud is not None and self.cloud.usable and not stopping

    def may_take_over(self, stopping: bool) -> bool:
        """While ComfyUI is down: the lane is busy, or one of a foreground worker's
        jobs may still fall back to the cloud."""
        if self.busy():
            return True
        if not self.ok(stopping):
            return False
        return any(job.status == "queued" and job.cloud_allowed
                   for job in self.store.get_many(self.waited_for or []))

    def until_due(self, stopping: bool) -> float:
        """Seconds until the lane may have something to do (inf: nothing pending)."""
        if self.busy():
            return self.poll_s
        if not self.ok(stopping) or self.down_since is None:
            return math.inf
        due = self.store.next_cloud_fallback(down_since=self.down_since,
                                             max_wait_s=self.max_wait_s, only_ids=self.only_ids)
        if due is None:
            return math.inf
        left = due - self.store.clock()
        return left if left > 0 else self.poll_s  # due already, yet not claimed: look again soon

    # -- between events ----------------------------------------------------------------

    def collect(self) -> list[tuple[Job, Outcome]]:
        """What the lane finished (its events written), for the outcome ladder."""
        results = []
        for task, result in self.cloud.finished() if self.cloud is not None else []:
            for kind, message, data in result.events:
                self.store.add_event(task.job.id, kind, message, data)
            results.append((task.job, result.outcome))
        return results

    def between_events(self, *, connected: bool, stop_mode: str | None, scope: Any,
                       record: Callable[[Job, Outcome], None]) -> None:
        """The worker's turn for the lane: `record` (the outcome ladder) what it
        finished, then let it claim what it may take within `scope`'s budget."""
        for job, outcome in self.collect():
            self._record(job, outcome, record)
        step = self.step(connected=connected, stop_mode=stop_mode, budget=scope.budget())
        scope.claimed += step.claimed
        for job, outcome in step.results:
            self._record(job, outcome, record)

    def _record(self, job: Job, outcome: Outcome, record: Callable[[Job, Outcome], None]) -> None:
        try:
            record(job, outcome)
        except Conflict:  # its lease ran out and another worker took it over
            self.observer.notice(f"{job.id} was taken over meanwhile; its cloud result is dropped")
            self.observer.job_finished(self.store.get(job.id))  # no longer this worker's

    def step(self, *, connected: bool, stop_mode: str | None, budget: int | None) -> CloudStep:
        """Every poll_s: stop or cancel what must stop, and claim what the lane may
        take (at most `budget` jobs, None: no limit)."""
        done = CloudStep()
        if self.cloud is None:
            return done
        now = self.monotonic()
        if connected and now < self._next_check:
            return done  # connected, this runs per websocket event: look only every poll_s
        self._next_check = now + self.poll_s
        if stop_mode == "now":
            done.results += self._stop_all("signal")
        self._cancel_requested()
        self._flush_details()
        while self.cloud.has_room() and not stop_mode:
            if budget is not None and done.claimed >= budget:
                break
            job = self._claim()
            if job is None:
                break
            done.claimed += 1
        return done

    def _claim(self) -> Job | None:
        assert self.cloud is not None
        usable = self.cloud.usable
        down_since = self.down_since if usable else None
        stranded = self._stranded_routes() if usable else {}
        job = self.store.claim_for_cloud(self.worker_id, lease_s=self.lease_s,
                                         down_since=down_since, max_wait_s=self.max_wait_s,
                                         only_ids=self.only_ids, stranded=list(stranded))
        if job is None:
            return None
        wait_s = self.max_wait_s.get(job.priority, 0)
        max_wait = f"the {wait_s:g}s a {job.priority} job may wait"
        why = stranded.get((job.needs, job.on_backend))
        now = self.store.clock()
        outage = down_since is not None and now - max(job.queued_ts, down_since) >= wait_s
        if job.backend_requested == "cloud":
            self.hand_over(job, lane.REQUESTED, "sent to the cloud as asked (--backend cloud)")
        elif outage or why is None:
            waited = now - max(job.queued_ts, down_since or job.queued_ts)
            self.hand_over(job, lane.COMFYUI_DOWN, (
                f"ComfyUI at {self.url} unreachable for {waited:.0f}s, past {max_wait}"))
        else:
            self.hand_over(job, lane.NO_BACKEND, (
                f"queued {now - job.queued_ts:.0f}s and {why}, past {max_wait}"))
        return job

    def _stranded_routes(self) -> Stranded:
        """The (needs, on_backend) of fallback jobs no live backend can run, with
        why; read again every few polls (it scans the queued fallback jobs)."""
        now = self.monotonic()
        if now < self._next_stranded:
            return self._stranded
        self._next_stranded = now + 4 * self.poll_s
        routes = self.store.fallback_routes()
        if not routes:
            self._stranded = {}
            return self._stranded
        live = routing.read_live(self.store, self.lease_s)
        found = {}
        for needs, on_backend in routes:
            why = routing.waiting_reason(routing.needs_of(needs), on_backend, live)
            if why is not None:
                found[(needs, on_backend)] = why
        self._stranded = found
        return found

    def _flush_details(self) -> None:
        assert self.cloud is not None
        for task in list(self.cloud.tasks):
            if task.detail != task.flushed_detail:
                task.flushed_detail = task.detail
                self.store.update(task.job.id, worker_id=self.worker_id,
                                  phase_detail=task.detail[:200])
                self.observer.job_changed(task)

    def _stop_all(self, reason: str) -> list[tuple[Job, Outcome]]:
        """Stop now: the lane's jobs go back to the queue at once; a request in
        flight may still be charged, and its answer is dropped."""
        assert self.cloud is not None
        stopped = []
        for task in list(self.cloud.tasks):
            task.request_stop(reason)
            self.cloud.tasks.remove(task)
            stopped.append((task.job, Outcome(
                OutcomeKind.REQUEUE, f"interrupted ({reason}) during a cloud request; queued again", {})))
        return stopped

    def _cancel_requested(self) -> None:
        assert self.cloud is not None
        for task in list(self.cloud.tasks):
            if task.stop_reason is None and self.store.get(task.job.id).cancel_requested_at:
                task.request_stop("cancel")

    # -- handing over ----------------------------------------------------------------------

    def hand_over(self, job: Job, trigger: str, reason: str, *,
                  attempts: int | None = None) -> None:
        """Give a running job of this worker's to the lane."""
        assert self.cloud is not None
        fields = {"attempts": attempts} if attempts is not None else {}
        kind = "cloud" if trigger == lane.REQUESTED else "cloud_fallback"
        self.store.update(job.id, worker_id=self.worker_id, phase="cloud",
                          phase_detail=reason[:200], comfy_prompt_id=None,
                          event=(kind, reason), data={"trigger": trigger}, **fields)
        task = self.cloud.start(self.store.get(job.id), trigger, reason)
        self.observer.notice(f"{job.id} goes to the cloud: {reason}")
        self.observer.job_changed(task)

    def take_failure(self, job: Job, outcome: Outcome, *, stopping: bool) -> bool:
        """True if a failed local outcome went to the cloud instead."""
        if outcome.kind is not OutcomeKind.FAILED or outcome.fallback is None:
            return False
        if not (self.ok(stopping) and job.cloud_allowed and job.backend_requested != "cloud"):
            return False
        self.hand_over(job, outcome.fallback, outcome.message,
                       attempts=outcome.fields.get("attempts"))
        return True
