"""The worker loop: claims jobs from the spool, keeps one submitted ahead of the
running one on ComfyUI, follows the websocket, and records every outcome.

`run_once()` is one iteration (tests drive it with injected clocks); all
outcomes go through `_finish()`. Signal handlers only set `stop_mode`.
Display is an injected observer: this module never imports rich.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from zmm.backends.comfy import ComfyClient, Event
from zmm.cloud import lane
from zmm.config import Config
from zmm.errors import ComfyServerError, ComfyUnavailable, InvalidInput, NotFound, WorkflowRejected, ZmmError
from zmm.jobs import JobState
from zmm.store import Job, Store
from zmm.store.db import iso
from zmm.worker import execution
from zmm.worker.cloud_fallback import CloudFallback
from zmm.worker.counts import JobCounts
from zmm.worker.execution import Inflight, Outcome
from zmm.worker.upkeep import Upkeep
from zmm.worker.wake import SpoolWatch


class Observer(Protocol):
    def waiting(self, url: str, reason: str, retry_in: float) -> None: ...
    def connected(self, url: str) -> None: ...
    def job_changed(self, inflight: Inflight) -> None: ...
    def job_finished(self, job: Job) -> None: ...
    def notice(self, text: str) -> None: ...


class QuietObserver:
    def waiting(self, url, reason, retry_in): pass
    def connected(self, url): pass
    def job_changed(self, inflight): pass
    def job_finished(self, job): pass
    def notice(self, text): pass


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


class Worker(Upkeep, CloudFallback):
    def __init__(self, store: Store, client: ComfyClient, settings: Config, *,
                 observer: Observer | None = None, once: bool = False,
                 max_jobs: int | None = None, only_ids: list[str] | None = None,
                 gate: Any | None = None, vram_used: Callable[[], int | None] | None = None,
                 cloud_lane: lane.CloudLane | None = None,
                 monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] | None = None) -> None:
        self.store, self.client, self.settings = store, client, settings
        self.observer = observer or QuietObserver()
        self.once, self.max_jobs, self.only_ids = once, max_jobs, only_ids
        self._woken = threading.Event()  # a stop request cuts the current sleep short
        self.monotonic, self.sleep = monotonic, sleep or self._sleep
        self.watch = SpoolWatch(store, self._woken)  # ends idle waits when a job is queued
        self.idle_wait = sleep or self.watch.wait
        self.id = new_worker_id()
        self.url = client.base_url
        worker = settings.section("worker")
        self.lease_s = worker["lease_s"]
        self.poll_s = worker["poll_s"]
        self.aging_s = worker["aging_s"]
        self.max_attempts = worker["max_attempts"]
        self.progress_interval = worker["progress_interval_s"]
        self.backoff_s = worker["backoff_s"]
        self.group_window = worker["model_group_window"]
        self._loaded_model: str | None = None  # the checkpoint of the last job submitted
        self.silence_s = settings.get("comfyui.silence_timeout_s")
        self.retry_max_s = settings.get("comfyui.retry_max_s")
        self.builder = execution.GraphBuilder(client, settings.workflows_dir)
        self.gate = gate  # a gate.VramGate, or None to skip VRAM checks
        self.cloud = cloud_lane  # None: no cloud at all (jobs asking for it wait)
        self.max_wait_s = dict(settings.section("max_wait_s"))
        self._down_since: float | None = None  # store clock when ComfyUI stopped answering
        self._next_cloud_check = 0.0
        self.vram_used = vram_used or (lambda: None)
        self.inflight: list[Inflight] = []
        self.stream = None
        self.client_id = ""
        self.claimed = 0
        self.counts = JobCounts()  # counts only: a long-running worker keeps no jobs
        self.stop_mode: str | None = None  # None | "drain" | "now"
        self.done = False
        self._retry_delay = 1.0
        self._next_housekeeping = 0.0
        self._next_heartbeat = 0.0

    # -- the loop --------------------------------------------------------------

    def run(self) -> JobCounts:
        self.store.register_worker(self.id, self.url, "starting")
        try:
            while not self.done:
                self.run_once()
        finally:
            self._close_stream()
            self.store.unregister_worker(self.id)
        return self.counts

    def run_once(self) -> None:
        self._cloud_step()
        if self.gate is not None and self.stream is None and not self.inflight:
            self.gate.maybe_restore(self._image_work_queued())
        if self.stream is None and not self._needs_comfy():
            self._heartbeat_if_due()  # only cloud work: ComfyUI is not asked at all
            if (self.stop_mode or self._nothing_left()) and not self._cloud_busy():
                self.done = True
            else:
                self.idle_wait(self.poll_s)
            return
        if self.stream is None and not self._connect():
            if self.stop_mode and not self.inflight and not self._cloud_busy():
                self.done = True
            return
        self._fill()
        if not self.inflight:
            if (self.stop_mode or self._nothing_left()) and not self._cloud_busy():
                self.done = True
            else:
                self._housekeeping(force=True)
                self.idle_wait(self.poll_s)
            return
        try:
            if self._room_ahead():  # a job queued now is submitted ahead at once
                event = self.watch.recv(self.stream, self.poll_s)
            else:
                event = self.stream.recv(timeout=self.poll_s)
            if event is not None:
                self._dispatch(event)
        except ComfyUnavailable as exc:
            self._lost_connection(exc)
            return
        self._housekeeping()

    def request_stop(self, mode: str) -> None:
        """Called from signal handlers: 'drain' finishes the running job, 'now' stops it."""
        if mode == "now" or self.stop_mode == "drain":
            self.stop_mode = "now"
        else:
            self.stop_mode = "drain"
        self._woken.set()

    def _sleep(self, seconds: float) -> None:
        # time.sleep would carry on after a signal handler returns (PEP 475): a
        # worker waiting 30 s for ComfyUI must still stop at once on Ctrl-C.
        self._woken.wait(seconds)
        self._woken.clear()

    def _room_ahead(self) -> bool:
        """Whether `_fill` would claim another job if one were queued."""
        return (len(self.inflight) < 2 and not self.stop_mode
                and (self.max_jobs is None or self.claimed < self.max_jobs))

    def _nothing_left(self) -> bool:
        if self.max_jobs is not None and self.claimed >= self.max_jobs:
            return True
        if self.only_ids is not None:
            return all(self.store.get(job_id).status in ("succeeded", "failed", "cancelled")
                       for job_id in self.only_ids)
        return self.once

    # -- connection ----------------------------------------------------------------

    def _connect(self) -> bool:
        try:
            self.client.ping()
            self.client_id = uuid.uuid4().hex
            self.stream = self.client.events(self.client_id)
        except ComfyUnavailable as exc:
            if self._down_since is None:
                self._down_since = self.store.clock()
            delay = min(self._retry_delay, self._until_cloud())
            self.observer.waiting(self.url, exc.reason, delay)
            if ((self.only_ids is not None or self.once) and not self.inflight
                    and not self._cloud_may_take_over()):
                raise  # a foreground generate or --once reports it instead of waiting
            if self.stop_mode and not self.inflight and not self._cloud_busy():
                return False  # stopping with nothing left to finish: no need to wait
            self._heartbeat_if_due()
            self.sleep(delay)
            self._retry_delay = min(self._retry_delay * 2, self.retry_max_s)
            return False
        self._retry_delay = 1.0
        self._down_since = None
        self.observer.connected(self.url)
        self._recover()
        for inflight in self.inflight:
            inflight.attached = False  # its events went to the previous client id
        return True

    def _lost_connection(self, exc: ComfyUnavailable) -> None:
        self.observer.notice(f"lost the connection to ComfyUI ({exc.reason}); reconnecting")
        self._close_stream()

    def _close_stream(self) -> None:
        if self.stream is not None:
            self.stream.close()  # never raises: a dead socket has nothing left to close
            self.stream = None

    # -- claiming and submitting ------------------------------------------------

    def _fill(self) -> None:
        while len(self.inflight) < 2 and not self.stop_mode:
            if self.max_jobs is not None and self.claimed >= self.max_jobs:
                return
            job = self.store.claim(self.id, lease_s=self.lease_s, aging_s=self.aging_s,
                                   only_ids=self.only_ids, prefer_model=self._loaded_model,
                                   group_window=self.group_window)
            if job is None:
                return
            if self.gate is not None:
                admission = self.gate.admit(job, cloud_ok=self._cloud_ok())
                if admission.to_cloud:
                    self.claimed += 1
                    self._to_cloud(job, lane.VRAM, admission.message)
                    continue
                if admission.job is None:
                    self._defer(job, admission.message)
                    return
                job = admission.job
            self.claimed += 1
            if not self._start(job):
                return

    def _start(self, job: Job, *, front: bool = False) -> bool:
        """Build, check and submit a claimed job. False if ComfyUI went away."""
        prompt_id = execution.prompt_id_for(job)
        try:
            graph = self.builder.build(job)
            self.store.update(job.id, worker_id=self.id, comfy_prompt_id=prompt_id,
                              comfy_url=self.url, submitted_at=iso(self.store.clock()),
                              phase="submitted", phase_detail=None,
                              event=("submitted", f"prompt {prompt_id} to {self.url}"))
            execution.submit(self.client, graph, prompt_id, self.client_id,
                             execution.zmm_metadata(job), front=front)
        except (WorkflowRejected, InvalidInput, NotFound) as exc:
            self._finish_job(job, Outcome("failed", exc.message, {"error_message": exc.message}))
            return True
        except ComfyUnavailable as exc:
            self._requeue(job, f"ComfyUI unreachable: {exc.reason}", consume=False)
            self._close_stream()
            return False
        except ComfyServerError as exc:
            self._requeue(job, f"ComfyUI failed to take it: {exc.message}", consume=True,
                          backoff=True)
            return True
        now = self.monotonic()
        self._loaded_model = job.model_requested
        self.inflight.append(Inflight(job=job, prompt_id=prompt_id, graph=graph,
                                      submitted=now, last_event=now))
        self.observer.job_changed(self.inflight[-1])
        return True

    # -- events --------------------------------------------------------------------

    def _dispatch(self, event: Event) -> None:
        inflight = self._find(event.prompt_id)
        if inflight is None:
            if event.type == "executing" and event.prompt_id is None and self.inflight:
                inflight = next((i for i in self.inflight if i.executing), None)
            if inflight is None:
                return
        inflight.last_event = self.monotonic()
        data = event.data
        if event.type == "execution_start":
            inflight.started = inflight.last_event
            self._set_phase(inflight, "starting")
        elif event.type == "executing":
            if data.get("node") is None and event.prompt_id is not None:
                self._complete(inflight)
                return
            self._set_phase(inflight, inflight.phase_of(data.get("node")))
        elif event.type == "progress":
            inflight.progress = (int(data.get("value", 0)), int(data.get("max", 0)),
                                 str(data.get("node")))
            self._flush_progress(inflight)
        elif event.type == "execution_error":
            inflight.error = data
        elif event.type == "execution_interrupted":
            inflight.interrupted = True

    def _find(self, prompt_id: str | None) -> Inflight | None:
        return next((i for i in self.inflight if i.prompt_id == prompt_id), None)

    def _set_phase(self, inflight: Inflight, phase: str) -> None:
        if phase != inflight.phase:
            inflight.phase = phase
            self._flush_progress(inflight)

    def _flush_progress(self, inflight: Inflight, force: bool = False) -> None:
        """Write phase and sampler step to the spool, at most every
        `progress_interval_s` per job (a last step or a forced flush always goes)."""
        state = (inflight.phase, inflight.progress)
        if state == inflight.flushed_progress:
            return
        now = self.monotonic()
        done = inflight.progress is not None and inflight.progress[0] >= inflight.progress[1]
        if not force and not done and now - inflight.last_flush < self.progress_interval:
            return
        inflight.last_flush = now
        inflight.flushed_progress = state
        fields = {"phase": inflight.phase}
        if inflight.progress is not None:
            value, maximum, node = inflight.progress
            fields.update(progress_value=value, progress_max=maximum, progress_node=node,
                          progress_at=iso(self.store.clock()))
        self.store.update(inflight.job.id, worker_id=self.id, **fields)
        self.observer.job_changed(inflight)

    # -- outcomes ------------------------------------------------------------------

    def _complete(self, inflight: Inflight) -> None:
        self._sample_vram([inflight])  # the model is still loaded: a short job still gets a reading
        try:
            entry = self.client.history(inflight.prompt_id)
        except ComfyUnavailable as exc:
            inflight.attached = False
            self._lost_connection(exc)
            return
        except ComfyServerError as exc:
            inflight.attached = False  # polled from /history until it answers
            self.observer.notice(f"ComfyUI error reading {inflight.job.id}'s history: {exc.message}")
            return
        self.inflight.remove(inflight)
        try:
            outcome = execution.judge(inflight, entry, self.client, self.settings.assets_dir,
                                      self.monotonic)
        except ComfyUnavailable as exc:
            outcome = Outcome("requeue", f"ComfyUI went away while fetching outputs: {exc.reason}",
                              {}, consume_attempt=False)
        except ZmmError as exc:  # an image that cannot be saved or read: fail with why
            outcome = Outcome("failed", exc.message, {"error_message": exc.message})
        if outcome.fields.get("oom"):
            self._free_vram()
            outcome = self._after_out_of_memory(inflight.job, outcome)
        if outcome.kind == "succeeded" and inflight.peak_vram:
            outcome.fields["vram_used_gb"] = round(inflight.peak_vram / 1024**3, 2)
        self._finish_job(inflight.job, outcome)

    def _finish_job(self, job: Job, outcome: Outcome) -> None:
        if outcome.kind == "requeue":
            self._requeue(job, outcome.message, consume=outcome.consume_attempt,
                          backoff=outcome.backoff)
            return
        if self._fall_back_or_fail(job, outcome):
            return
        fields = {k: v for k, v in outcome.fields.items() if k != "oom"}
        finished = self.store.transition(job.id, JobState(outcome.kind), expect=JobState.RUNNING,
                                         worker_id=self.id, message=outcome.message,
                                         phase_detail=None, **fields)
        self.counts.add(finished.status)
        self.observer.job_finished(finished)

    def _requeue(self, job: Job, reason: str, *, consume: bool, backoff: bool = False,
                 fields: dict[str, Any] | None = None, cloud_fallback: bool = True) -> None:
        """Back to the queue; with `consume`, one attempt used, and failed once they
        are all used (or, where allowed and `cloud_fallback`, on to the cloud)."""
        current = self.store.get(job.id)
        attempts = current.attempts + (1 if consume else 0)
        if consume and attempts >= self.max_attempts:
            message = f"gave up after {attempts} attempts: {reason}"
            self._finish_job(job, Outcome(
                "failed", message, {**(fields or {}), "error_message": message,
                                    "attempts": attempts},
                fallback=lane.ATTEMPTS_EXHAUSTED if cloud_fallback else None))
            return
        delay = self.backoff_s * (2 ** max(attempts - 1, 0)) if backoff else 0.0
        not_before = iso(self.store.clock() + delay) if delay else None
        requeued = self.store.transition(
            job.id, JobState.QUEUED, expect=JobState.RUNNING, worker_id=self.id, kind="requeued",
            message=reason, attempts=attempts, retry_count=current.retry_count + (1 if consume else 0),
            not_before=not_before, comfy_prompt_id=None, phase_detail=reason[:200],
            progress_value=None, progress_max=None, **(fields or {}))
        self.observer.job_finished(requeued)

    def _defer(self, job: Job, reason: str) -> None:
        """Back to the queue without using an attempt, to be looked at again shortly."""
        retry_in = min(5.0, max(self.poll_s * 4, 0.2))
        self.store.transition(job.id, JobState.QUEUED, expect=JobState.RUNNING, worker_id=self.id,
                              kind="deferred", message=reason, phase_detail=reason[:200],
                              not_before=iso(self.store.clock() + retry_in))
        self.observer.notice(f"{job.id} {reason}")

    def _after_out_of_memory(self, job: Job, outcome: Outcome) -> Outcome:
        """Out of memory: one more try, on SD1.5 where the tier allows; then fail."""
        from zmm.vram import gate

        params = job.param_values
        if params.get("oom_retried"):
            message = "ComfyUI ran out of GPU memory again after freeing VRAM and retrying"
            return Outcome("failed", message, {"error_message": message},
                           fallback=lane.OUT_OF_MEMORY)
        self.store.update(job.id, worker_id=self.id,
                          params=json.dumps(dict(params, oom_retried=True), separators=(",", ":")))
        if gate.can_downgrade(job):
            gate.downgrade_to_sd15(self.store, self.settings, self.store.get(job.id),
                                   "out of GPU memory: retrying on SD1.5")
        return outcome

    def _free_vram(self) -> None:
        try:
            self.client.free(unload_models=True, free_memory=True)
        except (ComfyUnavailable, ComfyServerError):
            pass  # the retry will meet the same server state and report it
