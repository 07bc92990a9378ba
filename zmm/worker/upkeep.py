"""The worker's upkeep between websocket events: lease heartbeats, adopting the
jobs of dead workers, and reviewing the jobs on ComfyUI (cancel requests, stop
signals, CRITICAL preemption of the job submitted ahead, silence timeouts, the
maximum run time, polling prompts whose events went to an old connection or to
a dead worker, failing a job ComfyUI keeps answering nonsense about).

It is handed the worker's in-flight jobs and returns what became of them
(`Review`, `Adopted`); the worker records those through its outcome ladder.
It never claims or submits jobs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from zmm.backends.comfy import ComfyClient
from zmm.errors import ComfyServerError, ComfyUnavailable
from zmm.jobs import job_id_of_prompt
from zmm.outcome import Outcome, OutcomeKind
from zmm.store import Job, Store
from zmm.worker.execution import GraphBuilder, Inflight, limit_name, locate, over_time
from zmm.worker.outcomes import failed, requeue

# Unreadable answers in a row about one job (invalid JSON, too large, too deep)
# after which it fails with the last one as its reason.
BAD_ANSWERS = 5


@dataclass(frozen=True)
class RunLimit:
    """How long a job may run on ComfyUI (from its execution_start): its own
    `--max-run-s`, else its style's entry in worker.max_run_s_by_style, else
    worker.max_run_s; 0 is no limit. Past it the
    job is interrupted and fails; if ComfyUI does not end it within `grace_s`
    more, it fails anyway and the worker moves on."""

    default_s: float = 0.0
    by_style: dict[str, float] = field(default_factory=dict)
    grace_s: float = 60.0

    @classmethod
    def from_section(cls, worker: dict[str, Any], grace_s: float) -> RunLimit:
        return cls(float(worker.get("max_run_s") or 0.0),
                   {str(k): float(v) for k, v in (worker.get("max_run_s_by_style") or {}).items()},
                   grace_s)

    def for_job(self, inflight: Inflight) -> float:
        own = inflight.job.request.max_run_s
        if own is not None:
            return own
        return self.by_style.get(inflight.job.style or "", self.default_s)


@dataclass
class Review:
    outcomes: list[tuple[Inflight, Outcome]] = field(default_factory=list)  # off ComfyUI: record
    finished: list[Inflight] = field(default_factory=list)  # done on ComfyUI: read its history
    hung: bool = False  # ComfyUI stopped answering: drop the connection
    lost: ComfyUnavailable | None = None  # ComfyUI went away during the review
    foreign: set[str] = field(default_factory=set)  # other zmm prompts still on the server


@dataclass
class Adopted:
    follow: list[Inflight] = field(default_factory=list)  # detached: polled until they end
    outcomes: list[tuple[Job, Outcome]] = field(default_factory=list)


class Upkeep:
    def __init__(self, store: Store, client: ComfyClient, builder: GraphBuilder, *,
                 worker_id: str, url: str, lease_s: float, silence_s: float, aging_s: float,
                 only_ids: list[str] | None, observer: Any,
                 monotonic: Callable[[], float], backend: str | None = None,
                 run_limit: RunLimit | None = None) -> None:
        self.store, self.client, self.builder, self.observer = store, client, builder, observer
        self.run_limit = run_limit or RunLimit()
        self.worker_id, self.url, self.backend = worker_id, url, backend
        self.lease_s, self.silence_s, self.aging_s = lease_s, silence_s, aging_s
        self.only_ids, self.monotonic = only_ids, monotonic
        self._next_heartbeat = 0.0

    # -- leases and adoption -------------------------------------------------------

    def heartbeat(self, held: list[str]) -> bool:
        """Renew the leases of every job held (ComfyUI's and the cloud lane's), every
        lease_s / 3. True when it did: time to look for expired leases too."""
        now = self.monotonic()
        if now < self._next_heartbeat:
            return False
        self._next_heartbeat = now + self.lease_s / 3
        self.store.heartbeat(self.worker_id, held, lease_s=self.lease_s)
        self.store.register_worker(self.worker_id, self.url, "busy" if held else "idle",
                                   backend=self.backend)
        return True

    def adopt_orphans(self, mine: set[str]) -> Adopted:
        """At start-up, holding the worker lock for this URL: every running job on it
        owned by another worker id belongs to a dead worker. Adopt them all now."""
        adopted = Adopted()
        for job in self.store.orphans(self.url, self.worker_id):
            if job.id not in mine:
                taken = self.store.adopt(job.id, self.worker_id, lease_s=self.lease_s,
                                         owner=job.worker_id, backend=self.backend,
                                         reason=f"its worker {job.worker_id} is gone "
                                                "(this worker holds the lock for its server)")
                self._take(taken, adopted)
        return adopted

    def adopt_expired(self, mine: set[str], *, offline: bool) -> Adopted:
        """Adopt jobs on this server (or none yet) whose lease expired: what the lock
        cannot prove (a worker on another URL, a spool shared where locks are not).
        `offline` (ComfyUI is down): only those it need not be asked about."""
        adopted = Adopted()
        for job in self.store.expired_leases():
            if job.comfy_url not in (None, self.url) or job.id in mine:
                continue
            if offline and job.comfy_prompt_id:
                continue
            taken = self.store.adopt(job.id, self.worker_id, lease_s=self.lease_s,
                                     backend=self.backend,
                                     reason=f"lease of {job.worker_id} expired")
            self._take(taken, adopted)
        return adopted

    def _take(self, job: Job | None, adopted: Adopted) -> None:
        if job is None:
            return  # another worker was faster, or it moved on meanwhile
        if job.phase == "cloud":  # its request may have been answered, and charged
            adopted.outcomes.append((job, requeue("its worker died during a cloud request",
                                                  consume=True, kind="cloud")))
        elif not job.comfy_prompt_id:
            adopted.outcomes.append((job, requeue("its worker stopped before submitting it",
                                                  consume=False)))
        else:
            # Where it is (queued, done, lost) is asked at the next review, once connected.
            now = self.monotonic()
            adopted.follow.append(Inflight(job=job, prompt_id=job.comfy_prompt_id,
                                           graph=self.builder.bind(job), submitted=now,
                                           last_event=now, attached=False))

    # -- reviewing the jobs on ComfyUI -------------------------------------------------

    def review(self, inflight: list[Inflight], stop_mode: str | None, now: float,
               foreign: set[str]) -> Review:
        """One round over the jobs on ComfyUI, in this order: cancels, stop signals,
        CRITICAL preemption, silence, run time, detached prompts, other zmm prompts
        queued."""
        result = Review(foreign=set(foreign))
        try:
            for job in list(inflight):
                if self.store.get(job.job.id).cancel_requested_at and job.stop_reason is None:
                    self._stop(job, "cancel", result)
            for job in list(inflight) if stop_mode else []:
                if (not job.executing or stop_mode == "now") and job.stop_reason is None:
                    self._stop(job, "signal", result)
            self._preempt(inflight, result)
            self._check_silence(inflight, now, result)
            self._check_run_time(inflight, now, result)
            self._poll_detached(inflight, result)
            if result.foreign:
                result.foreign = self.zmm_prompts_queued(inflight)
        except ComfyUnavailable as exc:
            result.lost = exc
        except ComfyServerError as exc:  # /queue answered nonsense: asked again next round
            self.observer.notice(f"ComfyUI error during upkeep: {exc.message}")
        return result

    def zmm_prompts_queued(self, inflight: list[Inflight]) -> set[str]:
        """Prompts on ComfyUI's queue under a zmm job id that are not this worker's:
        left by a dead worker, or by another spool. They count against the one-ahead
        rule."""
        state = self.client.queue()
        mine = {job.prompt_id for job in inflight}
        return {item.prompt_id for item in state.running + state.pending
                if item.prompt_id not in mine and job_id_of_prompt(item.prompt_id) is not None}

    def _stop(self, inflight: Inflight, reason: str, result: Review) -> None:
        """Take a job off ComfyUI: delete it if still pending, interrupt it if running."""
        inflight.stop_reason = reason
        try:
            pending = {item.prompt_id for item in self.client.queue().pending}
            if inflight.prompt_id in pending:
                self.client.delete_from_queue([inflight.prompt_id])
                if inflight.prompt_id not in {i.prompt_id for i in self.client.queue().pending}:
                    result.outcomes.append((inflight, _taken_off(reason)))
                    return
            self.client.interrupt(inflight.prompt_id)
            inflight.interrupted = True
        except ComfyServerError as exc:
            # Try again at the next review rather than end the worker.
            inflight.stop_reason = None
            self.observer.notice(f"could not stop {inflight.job.id} ({reason}): {exc.message}")

    def _preempt(self, inflight: list[Inflight], result: Review) -> None:
        waiting = [job for job in inflight if job not in _taken(result)]
        if len(waiting) < 2:
            return
        ahead = waiting[-1]
        if ahead.executing or ahead.job.priority_rank == 0 or ahead.stop_reason:
            return
        if self.store.next_runnable(self.aging_s, min_rank=0, only_ids=self.only_ids) is None:
            return
        self.observer.notice(f"a CRITICAL job goes ahead of {ahead.job.id}")
        self._stop(ahead, "preempt", result)

    def _check_silence(self, inflight: list[Inflight], now: float, result: Review) -> None:
        head = next((job for job in inflight if job.attached and job not in _taken(result)), None)
        if head is None or now - head.last_event < self.silence_s:
            return
        if head.stop_reason == "silence":
            # Interrupted and still silent: ComfyUI is hung. Give the job back.
            result.outcomes.append((head, requeue("ComfyUI stopped answering", consume=True,
                                                  backoff=True, kind="timeout")))
            result.hung = True
            return
        head.last_event = now
        self.observer.notice(f"no word from ComfyUI for {self.silence_s:g}s on {head.job.id}; "
                             "interrupting it")
        self._stop(head, "silence", result)

    def _check_run_time(self, inflight: list[Inflight], now: float, result: Review) -> None:
        for job in [i for i in inflight if i.executing and i not in _taken(result)]:
            limit = self.run_limit.for_job(job)
            ran = now - (job.started or now)
            if not limit or ran < limit:
                continue
            if job.stop_reason == "max-run" and ran >= limit + self.run_limit.grace_s:
                result.outcomes.append((job, failed(
                    f"{over_time(job)}, which did not end it within "
                    f"{self.run_limit.grace_s:g} s", "timeout")))
            elif job.stop_reason is None:
                job.max_run_s = limit
                self.observer.notice(f"{job.job.id} ran longer than {limit:g} s "
                                     f"({limit_name(job)}); interrupting it")
                self._stop(job, "max-run", result)

    def _poll_detached(self, inflight: list[Inflight], result: Review) -> None:
        for job in [i for i in inflight if not i.attached and i not in _taken(result)]:
            try:
                where = locate(self.client, job.prompt_id)
            except ComfyServerError as exc:
                job.bad_answers += 1
                if job.bad_answers >= BAD_ANSWERS:
                    result.outcomes.append((job, failed(
                        f"{exc.message} ({job.bad_answers} times in a row)", "unavailable")))
                    continue
                self.observer.notice(f"ComfyUI error while checking {job.job.id}: {exc.message}")
                return
            job.bad_answers = 0
            if where == "done":
                result.finished.append(job)
            elif where == "lost":
                result.outcomes.append((job, requeue(
                    "ComfyUI lost the prompt (restarted?); queued again", consume=True,
                    kind="unavailable")))


def _taken(result: Review) -> list[Inflight]:
    return [inflight for inflight, _ in result.outcomes]


def _taken_off(reason: str) -> Outcome:
    if reason == "cancel":
        return Outcome(OutcomeKind.CANCELLED, "cancelled by user", {"error_message": "cancelled by user"})
    if reason == "max-run":
        return failed("ran longer than worker.max_run_s; taken off ComfyUI's queue", "timeout")
    return requeue(f"taken off ComfyUI's queue ({reason})", consume=False)
