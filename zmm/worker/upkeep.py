"""The worker's periodic upkeep, run between websocket events: lease heartbeats,
cancel requests, stop signals, CRITICAL preemption of the job submitted ahead,
silence timeouts, polling jobs whose events went to an old connection, and
adopting the jobs of workers that died.

A mixin of `zmm.worker.Worker`: it reads the worker's state (inflight, store,
client, observer, settings) and reports outcomes through `_finish_job` and
`_requeue`. It does not claim or submit jobs.
"""

from __future__ import annotations

from zmm.errors import ComfyServerError, ComfyUnavailable
from zmm.store import Job
from zmm.worker.execution import Inflight, Outcome, locate


class Upkeep:
    def _housekeeping(self, force: bool = False) -> None:
        now = self.monotonic()
        if not force and now < self._next_housekeeping:
            return
        self._next_housekeeping = now + self.poll_s
        self._heartbeat_if_due()
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

    def _heartbeat_if_due(self) -> None:
        """Renew the leases of every job this worker holds (ComfyUI's and the cloud
        lane's), and adopt the jobs of workers that died meanwhile."""
        now = self.monotonic()
        if now < self._next_heartbeat:
            return
        self._next_heartbeat = now + self.lease_s / 3
        held = [i.job.id for i in self.inflight] + self._cloud_ids()
        self.store.heartbeat(self.id, held, lease_s=self.lease_s)
        self.store.register_worker(self.id, self.url, "busy" if held else "idle")
        self._recover(offline=self.stream is None)

    def _image_work_queued(self) -> bool:
        return self.store.next_runnable(self.aging_s,
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
        if self.store.next_runnable(self.aging_s, min_rank=0,
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
                where = locate(self.client, inflight.prompt_id)
            except ComfyUnavailable as exc:
                self._lost_connection(exc)
                return
            except ComfyServerError as exc:
                self.observer.notice(f"ComfyUI error while checking {inflight.job.id}: {exc.message}")
                return
            if where == "done":
                self._complete(inflight)
            elif where == "lost":
                self.inflight.remove(inflight)
                self._requeue(inflight.job, "ComfyUI lost the prompt (restarted?); queued again",
                              consume=True)

    def _recover(self, offline: bool = False) -> None:
        """Adopt jobs whose worker died (expired lease) on this ComfyUI server.
        `offline` (ComfyUI is down): only those it need not be asked about."""
        mine = {inflight.job.id for inflight in self.inflight} | set(self._cloud_ids())
        for job in self.store.expired_leases():
            if job.comfy_url not in (None, self.url) or job.id in mine:
                continue
            if offline and job.comfy_prompt_id:
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
        if job.phase == "cloud":  # its request may have been answered, and charged
            self._requeue(job, "its worker died during a cloud request", consume=True)
            return
        if not job.comfy_prompt_id:
            self._requeue(job, "its worker stopped before submitting it", consume=False)
            return
        where = locate(self.client, job.comfy_prompt_id)
        if where == "lost":
            self._requeue(job, "its worker died and ComfyUI has no record of it", consume=True)
            return
        graph = self.builder.build(job)
        now = self.monotonic()
        inflight = Inflight(job=job, prompt_id=job.comfy_prompt_id, graph=graph, submitted=now,
                            last_event=now, attached=False)
        self.inflight.append(inflight)
        if where == "done":
            self._complete(inflight)

