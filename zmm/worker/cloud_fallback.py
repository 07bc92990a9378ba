"""The worker's side of the cloud lane: which jobs go to a cloud provider and
when (asked for; ComfyUI down past the job's max wait; no VRAM; local attempts
spent), handing them over, and recording what the lane brings back.

A mixin of `zmm.worker.Worker`, like `zmm.upkeep.Upkeep`: it uses the worker's
store, lane (`self.cloud`, a zmm.cloud.CloudLane or None) and observer. Every
spool write for a cloud job happens here, on the worker's thread.
"""

from __future__ import annotations

import math

from zmm.cloud import lane
from zmm.errors import Conflict
from zmm.store import Job
from zmm.worker.execution import Outcome


class CloudFallback:
    def _cloud_ids(self) -> list[str]:
        return self.cloud.job_ids() if self.cloud is not None else []

    def _cloud_busy(self) -> bool:
        return self.cloud is not None and bool(self.cloud.tasks)

    def _cloud_ok(self) -> bool:
        """A provider could take a fallback job now."""
        return self.cloud is not None and self.cloud.usable and not self.stop_mode

    def _may_fall_back(self, job: Job) -> bool:
        return self._cloud_ok() and bool(job.cloud_allowed) and job.backend_requested != "cloud"

    def _cloud_step(self) -> None:
        """Between events: record what the lane finished, claim what it may take."""
        if self.cloud is None:
            return
        for task, result in self.cloud.finished():
            self._record_cloud(task, result)
        now = self.monotonic()
        if self.stream is not None and now < self._next_cloud_check:
            return  # connected, this runs per websocket event: look only every poll_s
        self._next_cloud_check = now + self.poll_s
        if self.stop_mode == "now":
            self._stop_cloud("signal")
        self._cancel_cloud()
        for task in list(self.cloud.tasks):
            if task.detail != task.flushed_detail:
                task.flushed_detail = task.detail
                self.store.update(task.job.id, worker_id=self.id, phase_detail=task.detail[:200])
                self.observer.job_changed(task)
        while self.cloud.has_room() and not self.stop_mode:
            if self.max_jobs is not None and self.claimed >= self.max_jobs:
                return
            down_since = self._down_since if self.cloud.usable else None
            job = self.store.claim_for_cloud(self.id, lease_s=self.lease_s, down_since=down_since,
                                             max_wait_s=self.max_wait_s, only_ids=self.only_ids)
            if job is None:
                return
            self.claimed += 1
            if job.backend_requested == "cloud":
                self._to_cloud(job, lane.REQUESTED, "sent to the cloud as asked (--backend cloud)")
            else:
                waited = self.store.clock() - max(job.queued_ts, down_since or job.queued_ts)
                self._to_cloud(job, lane.COMFYUI_DOWN, (
                    f"ComfyUI at {self.url} unreachable for {waited:.0f}s, past the "
                    f"{self.max_wait_s.get(job.priority, 0):g}s a {job.priority} job may wait"))

    def _to_cloud(self, job: Job, trigger: str, reason: str, *,
                  attempts: int | None = None) -> None:
        """Hand a running job of this worker's to the lane."""
        fields = {"attempts": attempts} if attempts is not None else {}
        kind = "cloud" if trigger == lane.REQUESTED else "cloud_fallback"
        self.store.update(job.id, worker_id=self.id, phase="cloud", phase_detail=reason[:200],
                          comfy_prompt_id=None, event=(kind, reason), data={"trigger": trigger},
                          **fields)
        task = self.cloud.start(self.store.get(job.id), trigger, reason)
        self.observer.notice(f"{job.id} goes to the cloud: {reason}")
        self.observer.job_changed(task)

    def _record_cloud(self, task: lane.CloudTask, result: lane.CloudResult) -> None:
        job, outcome = task.job, result.outcome
        for kind, message, data in result.events:
            self.store.add_event(job.id, kind, message, data)
        try:
            if outcome.kind == "requeue":
                self._requeue(job, outcome.message, consume=outcome.consume_attempt,
                              backoff=outcome.backoff, fields=outcome.fields,
                              cloud_fallback=False)
            else:
                self._finish_job(job, outcome)
        except Conflict:  # its lease ran out and another worker took it over
            self.observer.notice(f"{job.id} was taken over meanwhile; its cloud result is dropped")

    def _fall_back_or_fail(self, job: Job, outcome: Outcome) -> bool:
        """True if a failed local outcome went to the cloud instead."""
        if outcome.kind != "failed" or outcome.fallback is None or not self._may_fall_back(job):
            return False
        self._to_cloud(job, outcome.fallback, outcome.message,
                       attempts=outcome.fields.get("attempts"))
        return True

    def _stop_cloud(self, reason: str) -> None:
        """Stop now: the lane's jobs go back to the queue at once; a request in
        flight may still be charged, and its answer is dropped."""
        for task in list(self.cloud.tasks if self.cloud is not None else []):
            task.request_stop(reason)
            self.cloud.tasks.remove(task)
            self._requeue(task.job, f"interrupted ({reason}) during a cloud request; queued again",
                          consume=False, cloud_fallback=False)

    def _cancel_cloud(self) -> None:
        for task in list(self.cloud.tasks if self.cloud is not None else []):
            if task.stop_reason is None and self.store.get(task.job.id).cancel_requested_at:
                task.request_stop("cancel")

    def _needs_comfy(self) -> bool:
        """Whether to reach ComfyUI: a serving worker always does; a foreground one
        (inline generate, --once) only for jobs it could run there."""
        if self.inflight:
            return True
        if self.only_ids is not None:
            return any(job.status == "queued" and job.backend_requested != "cloud"
                       for job in self.store.get_many(self.only_ids))
        return not self.once or self._image_work_queued()

    def _cloud_may_take_over(self) -> bool:
        """While ComfyUI is down: the lane is busy, or one of a foreground worker's
        jobs may still fall back to the cloud."""
        if self._cloud_busy():
            return True
        if not self._cloud_ok():
            return False
        return any(job.status == "queued" and job.cloud_allowed
                   for job in self.store.get_many(self.only_ids or self.until_finished or []))

    def _until_cloud(self) -> float:
        """Seconds until the lane may have something to do (inf: nothing pending)."""
        if self._cloud_busy():
            return self.poll_s
        if not self._cloud_ok() or self._down_since is None:
            return math.inf
        due = self.store.next_cloud_fallback(down_since=self._down_since,
                                          max_wait_s=self.max_wait_s, only_ids=self.only_ids)
        if due is None:
            return math.inf
        left = due - self.store.clock()
        return left if left > 0 else self.poll_s  # due already, yet not claimed: look again soon
