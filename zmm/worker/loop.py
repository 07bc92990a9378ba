"""The worker loop: keeps one job submitted ahead of the running one on
ComfyUI, follows the websocket, and hands every outcome to the Recorder.

The Worker owns the in-flight jobs and the websocket; it is built by
`assembly.build_worker` from one `WorkerContext` (spool, client, settings,
observer, clock, stop switch) and its parts, which are handed what they need:
the Submitter (claims, the local LLM's prompt, the VRAM gate, submitting),
ChildWatch (the managed ComfyUI child and the crash guard), Upkeep (leases,
adoption, the review of jobs on ComfyUI), CloudFallback (the cloud lane's
side), Capability (the server's files), SpoolWatch (waits that end when a job
is queued), Scope (what to take on, when done) and the Recorder, through which
every outcome goes (`_record`). `run_once()` is one iteration (tests drive it
with injected clocks). Signal handlers only set the stop switch. Display is an
injected observer: this module never imports rich.
"""

from __future__ import annotations

import uuid
from typing import Any

from zmm.assets import DiskFull
from zmm.backends.comfy_events import Event, EventStream
from zmm.errors import ComfyServerError, ComfyUnavailable
from zmm.outcome import Outcome, OutcomeKind
from zmm.store import Job
from zmm.worker import execution, progress
from zmm.worker.assembly import WorkerContext, WorkerParts
from zmm.worker.counts import JobCounts
from zmm.worker.execution import Inflight
from zmm.worker.outcomes import after_out_of_memory
from zmm.worker.upkeep import Adopted

# How long a worker whose disk is full waits before it tries to save again.
DISK_RETRY_S = 10.0

# How long a worker told to stop now gives ComfyUI to let go of its jobs
# (interrupted, taken off its queue) before it leaves them to the next worker.
STOP_GRACE_S = 5.0


class Worker:
    """Made by `assembly.build_worker`, from one context and its parts."""

    def __init__(self, ctx: WorkerContext, parts: WorkerParts) -> None:
        self.ctx, self.parts = ctx, parts
        self.store, self.client, self.settings = ctx.store, ctx.client, ctx.settings
        self.observer, self.id, self.url = ctx.observer, ctx.id, ctx.url
        self.lease_s, self.poll_s, self.aging_s = ctx.lease_s, ctx.poll_s, ctx.aging_s
        self.monotonic = ctx.clock.monotonic
        self.sleep = ctx.clock.sleep or ctx.stop.sleep
        self.idle_wait = ctx.clock.sleep or parts.watch.wait  # ends when a job is queued
        self.scope, self.watch, self.upkeep = parts.scope, parts.watch, parts.upkeep
        self.capability, self.cloud, self.status = parts.capability, parts.cloud, parts.status
        self.submitter, self.managed, self.gate = parts.submitter, parts.managed, parts.gate
        self.recorder, self.prompts = parts.recorder, parts.prompts
        self.only_ids = parts.scope.only_ids
        self.inflight: list[Inflight] = []  # on ComfyUI: the running one first, then one ahead
        self.foreign: set[str] = set()  # other zmm prompts on ComfyUI's queue (a dead worker's)
        self.stream: EventStream | None = None
        self.client_id = ""
        self.done = False
        self._retry_delay = 1.0
        self._next_upkeep = 0.0
        self._stop_deadline: float | None = None
        self._disk_full_until: float | None = None  # images cannot be saved: wait till then
        self._left: list[str] = []  # left running at a stop (see leave_for_adoption)

    @property
    def counts(self) -> JobCounts:
        """How many jobs it took to a final state (counts only, no job rows)."""
        return self.recorder.counts

    @property
    def stop_mode(self) -> str | None:
        """None, "drain" or "now": set by `request_stop`, from signal handlers."""
        return self.ctx.stop.mode

    # -- the loop --------------------------------------------------------------

    def run(self) -> JobCounts:
        """Until done. However it ends (an error too), a worker that still holds
        jobs keeps its row, so the next worker of this server adopts them."""
        self.store.register_worker(self.id, self.url, "starting", backend=self.ctx.backend.name)
        try:
            self.status.beat(None, force=True)
            self.adopt_orphans()
            if self.scope.once:  # before deciding there is nothing to do
                self._adopt(self.upkeep.adopt_expired(set(self.held()), offline=False))
            while not self.done:
                self.run_once()
        finally:
            self._close_stream()
            self.prompts.close()
            if not self.held():
                self.store.unregister_worker(self.id)
            self.status.stopped(self.submitter.loaded_model)
        return self.counts

    def held(self) -> list[str]:
        """The jobs this worker holds: on ComfyUI, in the cloud lane, or left
        running on a server that did not let go of them in time."""
        return [i.job.id for i in self.inflight] + self.cloud.ids() + self._left

    def adopt_orphans(self) -> None:
        """At start-up: with the lock for this URL, its other workers' jobs are ours."""
        if self.ctx.holds_lock:
            self._adopt(self.upkeep.adopt_orphans({i.job.id for i in self.inflight}))
            self.store.forget_other_workers(self.url, self.id)

    def run_once(self) -> None:
        if self._past_stop_grace():
            return
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
        self.ctx.stop.request(mode)

    def _past_stop_grace(self) -> bool:
        """Stopping now and the server has not let go of the jobs on it within
        STOP_GRACE_S: leave them running (their prompts with them) for the next
        worker of this server to adopt, and stop."""
        if self.stop_mode != "now" or not self.inflight:
            return False
        now = self.monotonic()
        if self._stop_deadline is None:
            self._stop_deadline = now + STOP_GRACE_S
        if now < self._stop_deadline:
            return False
        self.leave_for_adoption()
        return True

    def leave_for_adoption(self) -> None:
        """Stop now without waiting for ComfyUI: the jobs on it stay running."""
        self._left = [inflight.job.id for inflight in self.inflight]
        self.inflight = []
        self.done = True
        if self._left:
            self.observer.notice(
                f"ComfyUI did not let go of {' '.join(self._left)} within {STOP_GRACE_S:g}s "
                "of the stop; left running for the next worker of this server to adopt")

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
        self.managed.answered()
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
        restarting = self.managed.restarting
        if restarting:
            delay = min(delay, 1.0)  # a managed server coming back: look again soon
        self.observer.waiting(self.url, exc.reason, delay)
        if (self.scope.foreground and not self.inflight and not restarting
                and not self.cloud.may_take_over(bool(self.stop_mode))):
            raise self.managed.unreachable(exc)  # a foreground generate or --once says why
        if self.stop_mode and not self.inflight and not self.cloud.busy():
            self.done = True  # stopping with nothing left to finish: no need to wait
            return
        self._heartbeat()
        self.sleep(delay)  # idle: waiting for ComfyUI to answer
        self._retry_delay = min(self._retry_delay * 2, self.ctx.retry_max_s)

    # -- managed mode: the ComfyUI child ------------------------------------------

    def _supervise(self) -> None:
        """The child exited or hung (its jobs go back to the queue, or fail at the
        crash limit) or was started again (look for it again soon)."""
        report = self.managed.check(self.inflight)
        if report is None:
            return
        if report.kind in ("started", "restarted"):
            self._retry_delay = 1.0
            return
        self._close_stream()
        lost, self.inflight, self.foreign = self.inflight, [], set()
        self.managed.jobs_lost(report, lost)

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
        """Claim and submit until one job runs and one waits on ComfyUI."""
        if not self.submitter.fill(self.inflight, self.foreign, self.client_id,
                                   heartbeat=self._heartbeat,
                                   paused=self._disk_full_until is not None):
            self._close_stream()  # ComfyUI went away while submitting

    # -- events --------------------------------------------------------------------

    def _dispatch(self, event: Event) -> None:
        inflight = progress.owner(self.inflight, event)
        if inflight is None:
            return
        if progress.apply_event(inflight, event, self.monotonic()):
            self._complete(inflight)
        else:
            self.parts.progress.flush(inflight)

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
            self.parts.progress.flush(inflight, force=True)
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
        self.status.beat(self.submitter.loaded_model, idle=not self.inflight and self.stream is not None)
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
            record=self.recorder.record_cloud)

    # -- outcomes ------------------------------------------------------------------

    def _complete(self, inflight: Inflight) -> None:
        """ComfyUI finished the prompt: read its history, judge it, record it."""
        if self._disk_full_until is not None and self.monotonic() < self._disk_full_until:
            inflight.attached = False
            return  # still waiting for disk space
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
        try:
            outcome = self._judge(inflight, entry)
        except DiskFull as exc:
            self._wait_for_disk(inflight, exc)
            return
        self._disk_full_until = None
        self.inflight.remove(inflight)
        self._record(inflight.job, outcome)

    def _wait_for_disk(self, inflight: Inflight, exc: DiskFull) -> None:
        """The images cannot be saved for want of space: the job stays running, its
        images in ComfyUI's history, read again every DISK_RETRY_S (a stop leaves
        it to the next worker); nothing is claimed meanwhile."""
        inflight.attached = False  # read from /history again, after the wait
        self._disk_full_until = self.monotonic() + DISK_RETRY_S
        self.status.failed(exc.message)
        self.observer.notice(f"{exc.message}: {inflight.job.id} stays running, its images on "
                             f"ComfyUI; trying again in {DISK_RETRY_S:g}s, claiming nothing")

    def _judge(self, inflight: Inflight, entry: Any) -> Outcome:
        outcome = execution.verdict(inflight, entry, self.client, self.settings.assets_dir,
                                    self.monotonic, self.settings.brands_dir)
        if outcome.oom:
            execution.free_vram(self.client)
            outcome = after_out_of_memory(self.store, self.settings, self.id, inflight.job, outcome)
        if outcome.kind is OutcomeKind.SUCCEEDED and inflight.peak_vram:
            outcome.fields["vram_used_gb"] = round(inflight.peak_vram / 1024**3, 2)
        return outcome

    def _record(self, job: Job, outcome: Outcome, *, cloud_fallback: bool = True) -> None:
        """Every outcome, local or cloud, goes through the Recorder."""
        self.recorder.record(job, outcome, cloud_fallback=cloud_fallback)
