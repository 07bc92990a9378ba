"""The worker loop: claims jobs from the spool, keeps one submitted ahead of the
running one on ComfyUI, follows the websocket, and records every outcome.

`run_once()` is one iteration (tests drive it with injected clocks); all
outcomes go through `_finish()`. Signal handlers only set `stop_mode`.
Display is an injected observer: this module never imports rich.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from zmm import execution
from zmm.comfy import ComfyClient, Event
from zmm.config import Config
from zmm.errors import (ComfyServerError, ComfyUnavailable, InvalidInput, NotFound,
                        WorkflowRejected, ZmmError)
from zmm.execution import Inflight, Outcome
from zmm.jobs import JobState
from zmm.store import Job, Store
from zmm.store import queries
from zmm.store.db import iso


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


class Worker:
    def __init__(self, store: Store, client: ComfyClient, settings: Config, *,
                 observer: Observer | None = None, once: bool = False,
                 max_jobs: int | None = None, only_ids: list[str] | None = None,
                 gate: Any | None = None, vram_used: Callable[[], int | None] | None = None,
                 monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.store, self.client, self.settings = store, client, settings
        self.observer = observer or QuietObserver()
        self.once, self.max_jobs, self.only_ids = once, max_jobs, only_ids
        self.monotonic, self.sleep = monotonic, sleep
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
        self.gate = gate  # a swap.VramGate, or None to skip VRAM checks
        self.vram_used = vram_used or (lambda: None)
        self.inflight: list[Inflight] = []
        self.stream = None
        self.client_id = ""
        self.claimed = 0
        self.finished: list[Job] = []
        self.stop_mode: str | None = None  # None | "drain" | "now"
        self.done = False
        self._retry_delay = 1.0
        self._next_housekeeping = 0.0
        self._next_heartbeat = 0.0

    # -- the loop --------------------------------------------------------------

    def run(self) -> list[Job]:
        self.store.register_worker(self.id, self.url, "starting")
        try:
            while not self.done:
                self.run_once()
        finally:
            self._close_stream()
            self.store.unregister_worker(self.id)
        return self.finished

    def run_once(self) -> None:
        if self.gate is not None and self.stream is None and not self.inflight:
            self.gate.maybe_restore(self._image_work_queued())
        if self.stream is None and not self._connect():
            if self.stop_mode and not self.inflight:
                self.done = True
            return
        self._fill()
        if not self.inflight:
            if self.stop_mode or self._nothing_left():
                self.done = True
            else:
                self._housekeeping(force=True)
                self.sleep(self.poll_s)
            return
        try:
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
            delay = self._retry_delay
            self.observer.waiting(self.url, exc.reason, delay)
            if (self.only_ids is not None or self.once) and not self.inflight:
                raise  # a foreground generate or --once reports it instead of waiting
            self.sleep(delay)
            self._retry_delay = min(self._retry_delay * 2, self.retry_max_s)
            return False
        self._retry_delay = 1.0
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
            try:
                self.stream.close()
            except Exception:  # noqa: BLE001 - closing a broken socket may fail; nothing to do
                pass
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
                admission = self.gate.admit(job)
                if admission.job is None:
                    self._defer(job, admission.message)
                    return
                job = admission.job
            self.claimed += 1
            if not self._start(job):
                return

    def _start(self, job: Job, *, front: bool = False) -> bool:
        """Build, check and submit a claimed job. False if ComfyUI went away."""
        try:
            graph = self.builder.build(job)
        except (WorkflowRejected, InvalidInput, NotFound) as exc:
            self._finish_job(job, Outcome("failed", exc.message, {"error_message": exc.message}))
            return True
        except ComfyUnavailable as exc:
            self._requeue(job, f"ComfyUI unreachable: {exc.reason}", consume=False)
            self._close_stream()
            return False
        prompt_id = execution.prompt_id_for(job)
        self.store.update(job.id, worker_id=self.id, comfy_prompt_id=prompt_id,
                          comfy_url=self.url, submitted_at=iso(self.store.clock()),
                          phase="submitted", phase_detail=None,
                          event=("submitted", f"prompt {prompt_id} to {self.url}"))
        try:
            execution.submit(self.client, graph, prompt_id, self.client_id,
                             execution.zmm_metadata(job), front=front)
        except WorkflowRejected as exc:
            self._finish_job(job, Outcome("failed", exc.message, {"error_message": exc.message}))
            return True
        except ComfyUnavailable as exc:
            self._requeue(job, f"ComfyUI unreachable: {exc.reason}", consume=False)
            self._close_stream()
            return False
        except ComfyServerError as exc:
            self._requeue(job, f"ComfyUI failed to queue it: {exc.message}", consume=True,
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
        if outcome.kind == "succeeded" and inflight.peak_vram:
            outcome.fields["vram_used_gb"] = round(inflight.peak_vram / 1024**3, 2)
        self._finish_job(inflight.job, outcome)

    def _finish_job(self, job: Job, outcome: Outcome) -> None:
        if outcome.kind == "requeue":
            self._requeue(job, outcome.message, consume=outcome.consume_attempt,
                          backoff=outcome.backoff)
            return
        fields = {k: v for k, v in outcome.fields.items() if k != "oom"}
        finished = self.store.transition(job.id, JobState(outcome.kind), expect=JobState.RUNNING,
                                         worker_id=self.id, message=outcome.message,
                                         phase_detail=None, **fields)
        self.finished.append(finished)
        self.observer.job_finished(finished)

    def _requeue(self, job: Job, reason: str, *, consume: bool, backoff: bool = False) -> None:
        current = self.store.get(job.id)
        attempts = current.attempts + (1 if consume else 0)
        if consume and attempts >= self.max_attempts:
            message = f"gave up after {attempts} attempts: {reason}"
            self._finish_job(job, Outcome("failed", message, {"error_message": message,
                                                              "attempts": attempts}))
            return
        delay = self.backoff_s * (2 ** max(attempts - 1, 0)) if backoff else 0.0
        not_before = iso(self.store.clock() + delay) if delay else None
        requeued = self.store.transition(
            job.id, JobState.QUEUED, expect=JobState.RUNNING, worker_id=self.id, kind="requeued",
            message=reason, attempts=attempts, retry_count=current.retry_count + (1 if consume else 0),
            not_before=not_before, comfy_prompt_id=None, phase_detail=reason[:200],
            progress_value=None, progress_max=None)
        self.observer.job_finished(requeued)

    def _defer(self, job: Job, reason: str) -> None:
        """Back to the queue without using an attempt, to be looked at again shortly."""
        retry_in = min(5.0, max(self.poll_s * 4, 0.2))
        self.store.transition(job.id, JobState.QUEUED, expect=JobState.RUNNING, worker_id=self.id,
                              kind="deferred", message=reason, phase_detail=reason[:200],
                              not_before=iso(self.store.clock() + retry_in))
        self.observer.notice(f"{job.id} {reason}")

    def _free_vram(self) -> None:
        try:
            self.client.free(unload_models=True, free_memory=True)
        except (ComfyUnavailable, ComfyServerError):
            pass  # the retry will meet the same server state and report it

    # -- housekeeping --------------------------------------------------------------

    def _housekeeping(self, force: bool = False) -> None:
        now = self.monotonic()
        if not force and now < self._next_housekeeping:
            return
        self._next_housekeeping = now + self.poll_s
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.lease_s / 3
            self.store.heartbeat(self.id, [i.job.id for i in self.inflight], lease_s=self.lease_s)
            self.store.register_worker(self.id, self.url, "busy" if self.inflight else "idle")
            self._recover()  # a worker that died meanwhile: its leases have expired
        for inflight in list(self.inflight):
            self._flush_progress(inflight, force=True)
        self._sample_vram()
        if self.gate is not None:
            self.gate.maybe_restore(bool(self.inflight) or self._image_work_queued())
        self._handle_cancels()
        self._handle_stop()
        self._preempt_for_critical()
        self._check_silence(now)
        self._poll_detached()

    def _image_work_queued(self) -> bool:
        return queries.next_runnable(self.store.conn, self.store.clock(), self.aging_s,
                                     only_ids=self.only_ids) is not None

    def _sample_vram(self, inflights: list[Inflight] | None = None) -> None:
        executing = [i for i in (inflights or self.inflight) if i.executing]
        if not executing:
            return
        used = self.vram_used()
        if used is not None:
            for inflight in executing:
                inflight.peak_vram = max(inflight.peak_vram or 0, used)

    def _handle_cancels(self) -> None:
        for inflight in list(self.inflight):
            job = self.store.get(inflight.job.id)
            if job.cancel_requested_at and inflight.stop_reason is None:
                self._stop_inflight(inflight, "cancel")

    def _handle_stop(self) -> None:
        if not self.stop_mode:
            return
        for inflight in list(self.inflight):
            if not inflight.executing or self.stop_mode == "now":
                if inflight.stop_reason is None:
                    self._stop_inflight(inflight, "signal")

    def _stop_inflight(self, inflight: Inflight, reason: str) -> None:
        """Take a job off ComfyUI: delete it if still pending, interrupt it if running."""
        inflight.stop_reason = reason
        try:
            state = self.client.queue()
            pending = {item.prompt_id for item in state.pending}
            if inflight.prompt_id in pending:
                self.client.delete_from_queue([inflight.prompt_id])
                if inflight.prompt_id not in {i.prompt_id for i in self.client.queue().pending}:
                    self.inflight.remove(inflight)
                    if reason == "cancel":
                        self._finish_job(inflight.job, Outcome(
                            "cancelled", "cancelled by user", {"error_message": "cancelled by user"}))
                    else:
                        self._requeue(inflight.job, f"taken off ComfyUI's queue ({reason})",
                                      consume=False)
                    return
            self.client.interrupt(inflight.prompt_id)
            inflight.interrupted = True
        except ComfyUnavailable as exc:
            self._lost_connection(exc)
        except ComfyServerError as exc:
            # Try again at the next housekeeping round rather than end the worker.
            inflight.stop_reason = None
            self.observer.notice(f"could not stop {inflight.job.id} ({reason}): {exc.message}")

    def _preempt_for_critical(self) -> None:
        if len(self.inflight) < 2:
            return
        ahead = self.inflight[-1]
        if ahead.executing or ahead.job.priority_rank == 0 or ahead.stop_reason:
            return
        if queries.next_runnable(self.store.conn, self.store.clock(), self.aging_s, min_rank=0,
                                 only_ids=self.only_ids) is None:
            return
        self.observer.notice(f"a CRITICAL job goes ahead of {ahead.job.id}")
        self._stop_inflight(ahead, "preempt")

    def _check_silence(self, now: float) -> None:
        head = next((i for i in self.inflight if i.attached), None)
        if head is None or now - head.last_event < self.silence_s:
            return
        if head.stop_reason == "silence":
            # Interrupted and still silent: ComfyUI is hung. Give the job back.
            self.inflight.remove(head)
            self._requeue(head.job, "ComfyUI stopped answering", consume=True, backoff=True)
            self._close_stream()
            return
        head.last_event = now
        self.observer.notice(f"no word from ComfyUI for {self.silence_s:g}s on {head.job.id}; "
                             "interrupting it")
        self._stop_inflight(head, "silence")

    def _poll_detached(self) -> None:
        for inflight in [i for i in self.inflight if not i.attached]:
            try:
                entry = self.client.history(inflight.prompt_id)
                if entry is not None:
                    self._complete(inflight)
                    continue
                state = self.client.queue()
            except ComfyUnavailable as exc:
                self._lost_connection(exc)
                return
            except ComfyServerError as exc:
                self.observer.notice(f"ComfyUI error while checking {inflight.job.id}: {exc.message}")
                return
            known = {item.prompt_id for item in state.running + state.pending}
            if inflight.prompt_id not in known:
                self.inflight.remove(inflight)
                self._requeue(inflight.job, "ComfyUI lost the prompt (restarted?); queued again",
                              consume=True)

    # -- recovery after a crash ------------------------------------------------

    def _recover(self) -> None:
        """Adopt jobs whose worker died (expired lease) on this ComfyUI server."""
        mine = {inflight.job.id for inflight in self.inflight}
        for job in self.store.expired_leases():
            if job.comfy_url not in (None, self.url) or job.id in mine:
                continue
            adopted = self.store.adopt(job.id, self.id, lease_s=self.lease_s,
                                       reason=f"lease of {job.worker_id} expired")
            if adopted is None:
                continue
            try:
                self._resume(adopted)
            except (ComfyUnavailable, ComfyServerError) as exc:
                # Not requeued: it may still run on ComfyUI. Unrenewed, its new lease
                # expires and the next recovery round looks again.
                self.observer.notice(f"could not check {adopted.id} on ComfyUI: {exc.message}")

    def _resume(self, job: Job) -> None:
        if not job.comfy_prompt_id:
            self._requeue(job, "its worker stopped before submitting it", consume=False)
            return
        entry = self.client.history(job.comfy_prompt_id)
        state = self.client.queue()
        known = {item.prompt_id for item in state.running + state.pending}
        if entry is None and job.comfy_prompt_id not in known:
            self._requeue(job, "its worker died and ComfyUI has no record of it", consume=True)
            return
        graph = self.builder.build(job)
        now = self.monotonic()
        inflight = Inflight(job=job, prompt_id=job.comfy_prompt_id, graph=graph, submitted=now,
                            last_event=now, attached=False)
        self.inflight.append(inflight)
        if entry is not None:
            self._complete(inflight)
