"""The worker loop: claims jobs from the spool, keeps one submitted ahead of the
running one on ComfyUI, follows the websocket, and records every outcome.

The Worker owns the in-flight jobs, the websocket, the stop mode, the clock and
the counters; its collaborators are handed what they need and return outcomes:
Upkeep (leases, adoption, the review of jobs on ComfyUI), CloudFallback (the
cloud lane's side), Capability (the server's files: which jobs it may claim),
the VRAM gate, SpoolWatch (waits that end when a job is queued), Scope (what to
take on, when done) and the OutcomeLadder, through which every outcome goes
(`_record`). `run_once()` is one iteration (tests drive it with
injected clocks). Signal handlers only set `stop_mode`. Display is an injected
observer: this module never imports rich.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from zmm.backends.comfy import ComfyClient
from zmm.backends.comfy_events import Event, EventStream
from zmm.cloud import lane
from zmm.config import Config, fleet
from zmm.errors import (
    ComfyServerError,
    ComfyUnavailable,
    InvalidInput,
    NotFound,
    WorkflowRejected,
)
from zmm.outcome import Outcome, zmm_metadata
from zmm.store import Job, Store
from zmm.store.db import iso
from zmm.worker import execution, progress
from zmm.worker.alerts import DownAlarm
from zmm.worker.capability import Capability
from zmm.worker.cloud_fallback import CloudFallback
from zmm.worker.counts import JobCounts
from zmm.worker.enhancing import PromptStep, wanted
from zmm.worker.execution import Inflight
from zmm.worker.managed.supervisor import ChildReport, CrashGuard
from zmm.worker.observer import Observer, QuietObserver
from zmm.worker.outcomes import OutcomeLadder, after_out_of_memory, failed, requeue
from zmm.worker.scope import Scope
from zmm.worker.status import BackendStatus
from zmm.worker.upkeep import Adopted, RunLimit, Upkeep
from zmm.worker.wake import SpoolWatch


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


class Worker:
    def __init__(self, store: Store, client: ComfyClient, settings: Config, *,
                 observer: Observer | None = None, once: bool = False,
                 max_jobs: int | None = None, only_ids: list[str] | None = None,
                 until_finished: list[str] | None = None,
                 gate: Any | None = None, vram_used: Callable[[], int | None] | None = None,
                 cloud_lane: lane.CloudLane | None = None,
                 monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] | None = None,
                 holds_lock: bool = False, supervisor: Any | None = None,
                 make_enhancer: Callable[[Config], Any] | None = None,
                 vram: Any | None = None) -> None:
        self.store, self.client, self.settings = store, client, settings
        self.observer = observer or QuietObserver()
        self.scope = Scope(once=once, max_jobs=max_jobs, only_ids=only_ids,
                           until_finished=until_finished)
        self.only_ids = only_ids
        self.holds_lock = holds_lock  # the worker lock of this URL: its other workers are dead
        self._woken = threading.Event()  # a stop request cuts the current sleep short
        self.monotonic, self.sleep = monotonic, sleep or self._sleep
        self.watch = SpoolWatch(store, self._woken)  # ends idle waits when a job is queued
        self.idle_wait = sleep or self.watch.wait
        self.id = new_worker_id()
        self.url = client.base_url
        worker = settings.section("worker")
        self.lease_s, self.poll_s, self.aging_s = worker["lease_s"], worker["poll_s"], worker["aging_s"]
        self.group_window = worker["model_group_window"]
        self.retry_max_s = settings.get("comfyui.retry_max_s")
        self.gate = gate  # a gate.VramGate, or None to skip VRAM checks
        self.builder = execution.GraphBuilder(client, settings.workflows_dir, settings.assets_dir)
        self.backend = fleet.serving(settings)
        self.capability = Capability(  # the server's files: which jobs this worker claims
            store, client, name=self.backend.name, refresh_s=worker["files_refresh_s"],
            notice=self.observer.notice, monotonic=monotonic)
        self.cloud = CloudFallback(  # a lane of None: no cloud at all (jobs asking for it wait)
            store, cloud_lane, worker_id=self.id, url=self.url, lease_s=self.lease_s,
            poll_s=self.poll_s, max_wait_s=dict(settings.section("max_wait_s")),
            only_ids=only_ids, observer=self.observer, monotonic=monotonic,
            waited_for=self.scope.waited_for)
        self.upkeep = Upkeep(
            store, client, self.builder, worker_id=self.id, url=self.url, lease_s=self.lease_s,
            backend=self.backend.name,
            silence_s=settings.get("comfyui.silence_timeout_s"), aging_s=self.aging_s,
            only_ids=only_ids, observer=self.observer, monotonic=monotonic,
            run_limit=RunLimit.from_section(worker, settings.get("comfyui.silence_timeout_s")))
        self.outcomes = OutcomeLadder(
            store, self.id, max_attempts=worker["max_attempts"], backoff_s=worker["backoff_s"],
            observer=self.observer, fall_back=lambda job, outcome: self.cloud.take_failure(
                job, outcome, stopping=bool(self.stop_mode)))
        self.prompts = PromptStep(store, settings, worker_id=self.id, lease_s=self.lease_s,
                                  make_enhancer=make_enhancer)
        self.supervisor = supervisor  # a supervisor.Supervisor in managed mode, else None
        self.crashes = CrashGuard(settings.get("comfyui.crash_limit"))
        self.status = BackendStatus(  # the backend's row (and the down alarm), the drain switch
            store, self.backend, self.id, vram=vram, vram_used=vram_used, probe=client.ping,
            monotonic=monotonic,
            alarm=DownAlarm(
                store, self.url, webhook_url=settings.get("alerts.webhook_url"),
                after_s=settings.get("comfyui.alert_after_s"), notice=self.observer.notice,
                monotonic=monotonic))
        self.status.supervisor = supervisor
        self.progress = progress.ProgressWriter(
            store, self.id, interval_s=worker["progress_interval_s"], observer=self.observer,
            monotonic=monotonic)
        self.inflight: list[Inflight] = []  # on ComfyUI: the running one first, then one ahead
        self.foreign: set[str] = set()  # other zmm prompts on ComfyUI's queue (a dead worker's)
        self.stream: EventStream | None = None
        self.client_id = ""
        self.counts = JobCounts()  # counts only: a long-running worker keeps no jobs
        self.stop_mode: str | None = None  # None | "drain" | "now"
        self.done = False
        self._loaded_model: str | None = None  # the checkpoint of the last job submitted
        self._retry_delay = 1.0
        self._next_upkeep = 0.0

    # -- the loop --------------------------------------------------------------

    def run(self) -> JobCounts:
        self.store.register_worker(self.id, self.url, "starting", backend=self.backend.name)
        try:
            self.status.beat(None, force=True)
            self.adopt_orphans()
            while not self.done:
                self.run_once()
        finally:
            self._close_stream()
            self.prompts.close()
            self.store.unregister_worker(self.id)
            self.status.stopped(self._loaded_model)
        return self.counts

    def adopt_orphans(self) -> None:
        """At start-up: with the lock for this URL, its other workers' jobs are ours."""
        if self.holds_lock:
            self._adopt(self.upkeep.adopt_orphans({i.job.id for i in self.inflight}))
            self.store.forget_other_workers(self.url, self.id)

    def run_once(self) -> None:
        self._supervise()
        self._cloud_step()
        self.scope.close_if_waited_for_done(self.store)
        if self.gate is not None and self.stream is None and not self.inflight:
            self.gate.maybe_restore(self._image_work_queued())
        if self.stream is None and (not self._needs_comfy() or self._claims_used_up()):
            self._heartbeat()  # only cloud work or no more claims: ComfyUI is not asked
            if not self._check_done():
                self.idle_wait(self.poll_s)  # idle: only the cloud lane has work
            return
        if self.stream is None and not self._connect():
            return
        self._fill()
        if not self.inflight:
            if not self._check_done():
                self._upkeep(force=True)
                self.idle_wait(self.poll_s)  # idle: nothing to run on ComfyUI
            return
        try:
            event = self._next_event()
        except ComfyUnavailable as exc:
            self._lost_connection(exc)
            return
        if event is not None:
            self._dispatch(event)
        self._upkeep()

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

    def _check_done(self) -> bool:
        """Nothing on ComfyUI: done if stopping or nothing is left (a drained --once:
        nothing more to take), once the lane is idle."""
        self.done = bool(self.stop_mode or self.scope.nothing_left(self.store) or (
            self.scope.once and self.status.draining())) and not self.cloud.busy()
        return self.done

    def _claims_used_up(self) -> bool:
        return not self.scope.may_claim() and not self.inflight

    def _room_ahead(self) -> bool:
        """Whether `_fill` would claim another job if one were queued."""
        return (len(self.inflight) + len(self.foreign) < 2 and not self.stop_mode
                and self.scope.may_claim())

    def _next_event(self) -> Event | None:
        """The next websocket event within poll_s; with room for a job ahead, the
        wait also ends when the spool changes, so a new job is submitted at once."""
        if self.stream is None:  # ComfyUI went away while submitting
            return None
        if self._room_ahead():
            return self.watch.recv(self.stream, self.poll_s)
        return self.stream.recv(timeout=self.poll_s)

    def _needs_comfy(self) -> bool:
        """Whether to reach ComfyUI: a serving worker always does; a foreground one
        (inline generate, --once) only for jobs it could run there."""
        if self.inflight:
            return True
        if self.only_ids is not None:
            return any(job.status == "queued" and job.backend_requested != "cloud"
                       for job in self.store.get_many(self.only_ids))
        return not self.scope.once or (self._image_work_queued() and not self.status.draining())

    def _image_work_queued(self) -> bool:
        return self.store.next_runnable(self.aging_s, only_ids=self.only_ids,
                                        route=self.capability.route) is not None

    # -- connection ----------------------------------------------------------------

    def _connect(self) -> bool:
        try:
            self.client.ping()
            self.client_id = uuid.uuid4().hex
            self.stream = self.client.events(self.client_id)
        except ComfyUnavailable as exc:
            self._wait_for_comfy(exc)
            return False
        self._retry_delay = 1.0
        if self.supervisor is not None:
            self.supervisor.answered()
        self.status.connected()
        self.cloud.comfy_up()
        self.observer.connected(self.url)
        for inflight in self.inflight:
            inflight.attached = False  # its events go to the previous client id
        held = {i.job.id for i in self.inflight} | set(self.cloud.ids())
        self._adopt(self.upkeep.adopt_expired(held, offline=False))
        try:  # before submitting anything: what a dead worker left on the server counts
            self.capability.refresh()
            self.foreign = self.upkeep.zmm_prompts_queued(self.inflight)
        except ComfyUnavailable as exc:
            self._lost_connection(exc)
            return False
        return True

    def _wait_for_comfy(self, exc: ComfyUnavailable) -> None:
        self.cloud.comfy_down()
        self.status.unreachable(exc.reason)
        delay = min(self._retry_delay, self.cloud.until_due(bool(self.stop_mode)))
        restarting = self.supervisor is not None and self.supervisor.restarting
        if restarting:
            delay = min(delay, 1.0)  # a managed server coming back: look again soon
        self.observer.waiting(self.url, exc.reason, delay)
        if (self.scope.foreground and not self.inflight and not restarting
                and not self.cloud.may_take_over(bool(self.stop_mode))):
            raise exc  # a foreground generate or --once reports it instead of waiting
        if self.stop_mode and not self.inflight and not self.cloud.busy():
            self.done = True  # stopping with nothing left to finish: no need to wait
            return
        self._heartbeat()
        self.sleep(delay)  # idle: waiting for ComfyUI to answer
        self._retry_delay = min(self._retry_delay * 2, self.retry_max_s)

    # -- managed mode: the ComfyUI child ------------------------------------------

    def _supervise(self) -> None:
        if self.supervisor is None:
            return
        report = self.supervisor.poll()
        if report is None:
            last = max((i.last_event for i in self.inflight), default=None)
            report = self.supervisor.check_health(last)
        if report is not None:
            self._child_changed(report)

    def _child_changed(self, report: ChildReport) -> None:
        """The child exited, hung (and was ended) or was started again: its jobs
        go back to the queue (or fail, at the crash limit), and it is recorded."""
        if report.kind != "started":  # the Supervisor said that one as it started
            self.observer.notice(report.message)
        self.status.child_changed(report)
        if report.kind in ("started", "restarted"):
            self._retry_delay = 1.0
            return
        self._close_stream()
        lost, self.inflight, self.foreign = self.inflight, [], set()
        for index, inflight in enumerate(lost):
            running = index == 0 or inflight.executing
            self.store.add_event(inflight.job.id, f"comfyui-{report.kind}", report.message)
            self._record(inflight.job, self.crashes.outcome(
                inflight.job.id, report.message.partition(";")[0], running=running))

    def _lost_connection(self, exc: ComfyUnavailable) -> None:
        self.observer.notice(f"lost the connection to ComfyUI ({exc.reason}); reconnecting")
        self.status.failed(f"lost the connection to ComfyUI: {exc.reason}")
        self._close_stream()

    def _close_stream(self) -> None:
        if self.stream is not None:
            self.stream.close()  # never raises: a dead socket has nothing left to close
            self.stream = None

    # -- claiming and submitting ------------------------------------------------

    def _fill(self) -> None:
        """Claim and submit until one job runs and one waits on ComfyUI (counting
        zmm prompts of others still there)."""
        while len(self.inflight) + len(self.foreign) < 2 and not self.stop_mode:
            if not self.scope.may_claim() or not self.capability.known:
                return  # known: the server has said which files it has (a drained backend's
                # claim takes nothing: the claim's UPDATE checks the switch)
            job = self.store.claim(self.id, lease_s=self.lease_s, aging_s=self.aging_s,
                                   only_ids=self.only_ids, prefer_model=self._loaded_model,
                                   group_window=self.group_window, route=self.capability.route)
            if job is None:
                return
            if wanted(job):
                job = self._enhance(job)
                if job is None:
                    continue
            if self.gate is not None:
                admission = self.gate.admit(job, cloud_ok=self.cloud.ok(bool(self.stop_mode)))
                if admission.to_cloud:
                    self.scope.claimed += 1
                    self.cloud.hand_over(job, lane.VRAM, admission.message)
                    continue
                if admission.job is None:
                    self.outcomes.defer(job, admission.message,
                                        retry_in=min(5.0, max(self.poll_s * 4, 0.2)))
                    return
                job = admission.job
            self.scope.claimed += 1
            if not self._start(job):
                return

    def _enhance(self, job: Job) -> Job | None:
        """The local LLM writes the job's prompt, before the VRAM gate looks at
        the GPU: Ollama answers first, then a swap can unload it for the image.
        None: the job failed (enhancement required) or is no longer ours."""
        self._heartbeat()  # the leases held are fresh for as long as Ollama may take
        enhanced, outcome = self.prompts.prepare(job)
        self._heartbeat()
        if outcome is not None:
            self.scope.claimed += 1
            self._record(job, outcome)
            return None
        return enhanced

    def _start(self, job: Job) -> bool:
        """Build, check and submit a claimed job. False if ComfyUI went away."""
        prompt_id = execution.prompt_id_for(job)
        graph = None
        try:
            graph = self.builder.build(job)
            self.store.update(job.id, worker_id=self.id, comfy_prompt_id=prompt_id,
                              comfy_url=self.url, submitted_at=iso(self.store.clock()),
                              phase="submitted", phase_detail=None,
                              event=("submitted", f"prompt {prompt_id} to {self.url}"))
            execution.submit(self.client, graph, prompt_id, self.client_id,
                             zmm_metadata(job), ui_workflow=job.param_values.get("ui_workflow"))
        except WorkflowRejected as exc:  # a missing model file: back to the queue
            self._record(job, self.capability.after_rejection(
                job, exc, graph or self.builder.bind(job), self.builder)
                or failed(exc.message, "rejected"))
            return True
        except (InvalidInput, NotFound) as exc:
            self._record(job, failed(exc.message, "rejected"))
            return True
        except ComfyUnavailable as exc:
            self._record(job, requeue(f"ComfyUI unreachable: {exc.reason}", consume=False))
            self._close_stream()
            return False
        except ComfyServerError as exc:
            self._record(job, requeue(f"ComfyUI failed to take it: {exc.message}",
                                      consume=True, backoff=True, kind="unavailable"))
            return True
        now = self.monotonic()
        self._loaded_model = job.model_requested
        self.inflight.append(Inflight(job=job, prompt_id=prompt_id, graph=graph,
                                      submitted=now, last_event=now))
        self.observer.job_changed(self.inflight[-1])
        return True

    # -- events --------------------------------------------------------------------

    def _dispatch(self, event: Event) -> None:
        inflight = progress.owner(self.inflight, event)
        if inflight is None:
            return
        if progress.apply_event(inflight, event, self.monotonic()):
            self._complete(inflight)
        else:
            self.progress.flush(inflight)

    # -- upkeep: leases, adoption, the review of jobs on ComfyUI -------------------

    def _upkeep(self, force: bool = False) -> None:
        now = self.monotonic()
        if not force and now < self._next_upkeep:
            return
        self._next_upkeep = now + self.poll_s
        self._heartbeat()
        if self.stream is not None:
            try:
                self.capability.maybe_refresh()
            except ComfyUnavailable as exc:
                self._lost_connection(exc)
        for inflight in list(self.inflight):
            self.progress.flush(inflight, force=True)
        self.status.sample_peaks(self.inflight)
        if self.gate is not None:
            self.gate.maybe_restore(bool(self.inflight) or self._image_work_queued())
        review = self.upkeep.review(self.inflight, self.stop_mode, now, self.foreign)
        self.foreign = review.foreign
        for inflight, outcome in review.outcomes:
            self.inflight.remove(inflight)
            self._record(inflight.job, outcome)
        for inflight in review.finished:
            self._complete(inflight)
        if review.hung:
            self.status.failed("ComfyUI stopped answering (a hang)")
            self._close_stream()
        if review.lost is not None and self.stream is not None:
            self._lost_connection(review.lost)

    def _heartbeat(self) -> None:
        """Renew the leases held; when it did, adopt the jobs whose lease expired."""
        held = [inflight.job.id for inflight in self.inflight] + self.cloud.ids()
        self.status.beat(self._loaded_model, idle=not self.inflight and self.stream is not None)
        if self.upkeep.heartbeat(held):
            self._adopt(self.upkeep.adopt_expired(set(held), offline=self.stream is None))

    def _adopt(self, adopted: Adopted) -> None:
        for inflight in adopted.follow:
            self.inflight.append(inflight)
            self.observer.notice(f"adopted {inflight.job.id} (prompt {inflight.prompt_id})")
        for job, outcome in adopted.outcomes:
            self._record(job, outcome)

    # -- the cloud lane ----------------------------------------------------------------

    def _cloud_step(self) -> None:
        self.cloud.between_events(
            connected=self.stream is not None, stop_mode=self.stop_mode, scope=self.scope,
            record=lambda job, outcome: self._record(job, outcome, cloud_fallback=False))

    # -- outcomes ------------------------------------------------------------------

    def _complete(self, inflight: Inflight) -> None:
        """ComfyUI finished the prompt: read its history, judge it, record it."""
        self.status.sample_peaks([inflight])  # the model is still loaded: a short job gets one too
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
        self._record(inflight.job, self._judge(inflight, entry))

    def _judge(self, inflight: Inflight, entry: Any) -> Outcome:
        outcome = execution.verdict(inflight, entry, self.client, self.settings.assets_dir,
                                    self.monotonic, self.settings.brands_dir)
        if outcome.fields.get("oom"):
            execution.free_vram(self.client)
            outcome = after_out_of_memory(self.store, self.settings, self.id, inflight.job, outcome)
        if outcome.kind == "succeeded" and inflight.peak_vram:
            outcome.fields["vram_used_gb"] = round(inflight.peak_vram / 1024**3, 2)
        return outcome

    def _record(self, job: Job, outcome: Outcome, *, cloud_fallback: bool = True) -> None:
        """Every outcome, local or cloud, goes through here and the ladder."""
        written = self.outcomes.record(job, outcome, cloud_fallback=cloud_fallback)
        if written is not None and written.finished:
            self.counts.add(written)
