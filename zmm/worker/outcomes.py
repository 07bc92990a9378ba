"""The worker's one outcome ladder: every end of a job's attempt, on ComfyUI or in
the cloud lane, is written to the spool here: finished (succeeded, failed,
cancelled), back to the queue (an attempt used or not, with backoff, failed once
the attempts are spent), or deferred. A failure the cloud may answer is offered
to `fall_back` first. The `Recorder` in front of it counts what is final and
drops the result of a job another worker took over. It talks to the spool and
the observer, never to ComfyUI.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from zmm.cloud import lane
from zmm.config import Config
from zmm.errors import Conflict
from zmm.jobs import JobState
from zmm.outcome import Outcome, OutcomeKind
from zmm.secrets import scrub
from zmm.store import Job, Store
from zmm.timestamps import iso
from zmm.worker.counts import JobCounts


class OutcomeLadder:
    def __init__(self, store: Store, worker_id: str, *, max_attempts: int, backoff_s: float,
                 observer: Any, fall_back: Callable[[Job, Outcome], bool]) -> None:
        self.store, self.worker_id, self.observer = store, worker_id, observer
        self.max_attempts, self.backoff_s = max_attempts, backoff_s
        self.fall_back = fall_back  # True when the cloud lane took the failed job instead

    def record(self, job: Job, outcome: Outcome, *, cloud_fallback: bool = True) -> Job | None:
        """Write `outcome`; the job as written, or None when it went to the cloud."""
        outcome = scrubbed(outcome)
        if outcome.kind is OutcomeKind.REQUEUE:
            return self._requeue(job, outcome, cloud_fallback=cloud_fallback)
        if self.fall_back(job, outcome):
            return None
        fields = dict(outcome.fields)
        if outcome.kind is OutcomeKind.FAILED:
            fields["error_kind"] = failure_kind(outcome)
        for notice in outcome.notices:
            self.store.add_event(job.id, "notice", notice)
        finished = self.store.transition(job.id, outcome.kind.state, expect=JobState.RUNNING,
                                         worker_id=self.worker_id, message=outcome.message,
                                         phase_detail=None, **fields)
        self.observer.job_finished(finished)
        return finished

    def _requeue(self, job: Job, outcome: Outcome, *, cloud_fallback: bool) -> Job | None:
        """Back to the queue; with `consume_attempt`, one attempt used, and failed once
        they are all used (or, where allowed and `cloud_fallback`, on to the cloud)."""
        reason, fields = outcome.message, outcome.fields
        current = self.store.get(job.id)
        consume = outcome.consume_attempt
        attempts = current.attempts + (1 if consume else 0)
        if consume and attempts >= self.max_attempts:
            message = f"gave up after {attempts} attempts: {reason}"
            return self.record(job, Outcome(
                OutcomeKind.FAILED, message, {**fields, "error_message": message, "attempts": attempts},
                fallback=lane.ATTEMPTS_EXHAUSTED if cloud_fallback else None,
                error_kind=outcome.error_kind))
        delay = self.backoff_s * (2 ** max(attempts - 1, 0)) if outcome.backoff else 0.0
        not_before = iso(self.store.clock() + delay) if delay else None
        requeued = self.store.transition(
            job.id, JobState.QUEUED, expect=JobState.RUNNING, worker_id=self.worker_id,
            kind="requeued", message=reason, attempts=attempts,
            retry_count=current.retry_count + (1 if consume else 0), not_before=not_before,
            comfy_prompt_id=None, phase_detail=reason[:200], progress_value=None,
            progress_max=None, **fields)
        self.observer.job_finished(requeued)
        return requeued

    def defer(self, job: Job, reason: str, retry_in: float) -> None:
        """Back to the queue without using an attempt, to be looked at again shortly."""
        reason = scrub(reason)
        self.store.transition(job.id, JobState.QUEUED, expect=JobState.RUNNING,
                              worker_id=self.worker_id, kind="deferred", message=reason,
                              phase_detail=reason[:200],
                              not_before=iso(self.store.clock() + retry_in))
        self.observer.notice(f"{job.id} {reason}")


def scrubbed(outcome: Outcome) -> Outcome:
    """`outcome` with no secret in its words (a provider's or a server's error
    may echo a key or a URL's password): what reaches the spool and webhooks."""
    error = outcome.fields.get("error_message")
    fields = dict(outcome.fields, error_message=scrub(error)) if isinstance(error, str) \
        else outcome.fields
    return dataclasses.replace(outcome, message=scrub(outcome.message), fields=fields)


def failure_kind(outcome: Outcome) -> str:
    """The `error_kind` a failed job is recorded with: the one its outcome names;
    one that names none is a node's error (the ladder's only unnamed failure)."""
    return outcome.error_kind or "execution"


def requeue(message: str, *, consume: bool, backoff: bool = False,
            kind: str | None = None) -> Outcome:
    """Back to the queue; `kind`: the `error_kind` should the attempts run out."""
    return Outcome(OutcomeKind.REQUEUE, message, {}, consume_attempt=consume, backoff=backoff,
                   error_kind=kind)


def failed(message: str, kind: str, **fields: Any) -> Outcome:
    return Outcome(OutcomeKind.FAILED, message, {"error_message": message, **fields}, error_kind=kind)


def after_out_of_memory(store: Store, settings: Config, worker_id: str, job: Job,
                        outcome: Outcome) -> Outcome:
    """Out of memory: one more try, on SD1.5 where the tier allows; then fail."""
    from zmm.vram import gate

    if job.oom_retried:
        message = "ComfyUI ran out of GPU memory again after freeing VRAM and retrying"
        return Outcome(OutcomeKind.FAILED, message, {"error_message": message},
                       fallback=lane.OUT_OF_MEMORY, error_kind="oom")
    store.update(job.id, worker_id=worker_id, oom_retried=1)
    if gate.can_downgrade(job):
        gate.downgrade_to_sd15(store, settings, store.get(job.id),
                               "out of GPU memory: retrying on SD1.5")
    return outcome


class Recorder:
    """Where every outcome of a worker goes, local or cloud: through the ladder,
    counted when final. A job another worker took over meanwhile (its lease ran
    out) is no longer ours: its result is dropped, as the cloud lane drops one."""

    def __init__(self, store: Store, ladder: OutcomeLadder, observer: Any) -> None:
        self.store, self.ladder, self.observer = store, ladder, observer
        self.counts = JobCounts()  # counts only: a long-running worker keeps no jobs

    def record(self, job: Job, outcome: Outcome, *, cloud_fallback: bool = True) -> None:
        try:
            written = self.ladder.record(job, outcome, cloud_fallback=cloud_fallback)
        except Conflict:
            self.observer.notice(f"{job.id} was taken over meanwhile; its result is dropped")
            self.observer.job_finished(self.store.get(job.id))
            return
        if written is not None and written.finished:
            self.counts.add(written)

    def record_cloud(self, job: Job, outcome: Outcome) -> None:
        """The cloud lane's outcome: no fallback to the cloud again."""
        self.record(job, outcome, cloud_fallback=False)
