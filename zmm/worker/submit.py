"""Claiming and submitting: the worker's intake. `Submitter.fill` claims jobs
from the spool until one runs on ComfyUI and one waits there (counting other
workers' zmm prompts still queued), and for each: the local LLM writes its
prompt (before the VRAM gate looks at the GPU), the gate admits it, hands it to
the cloud lane or defers it, and its graph is built, checked and submitted. It
remembers the checkpoint of the last job submitted (the claim prefers it).
Every outcome goes through the worker's `Recorder`; it never follows events.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zmm.assets import metadata_for
from zmm.cloud import lane
from zmm.errors import ComfyServerError, ComfyUnavailable, InvalidInput, NotFound, WorkflowRejected
from zmm.store import Job
from zmm.timestamps import iso
from zmm.worker import execution
from zmm.worker.capability import Capability
from zmm.worker.cloud_fallback import CloudFallback
from zmm.worker.enhancing import PromptStep, wanted
from zmm.worker.execution import Inflight
from zmm.worker.outcomes import OutcomeLadder, Recorder, failed, requeue
from zmm.worker.scope import Scope


class Submitter:
    """Made by `assembly.build_worker`; the Worker calls `fill` between events."""

    def __init__(self, ctx: Any, *, scope: Scope, capability: Capability,
                 cloud: CloudFallback, outcomes: OutcomeLadder, prompts: PromptStep,
                 builder: execution.GraphBuilder, recorder: Recorder,
                 gate: Any | None) -> None:
        self.ctx, self.store, self.client = ctx, ctx.store, ctx.client
        self.scope, self.capability, self.cloud = scope, capability, cloud
        self.outcomes, self.prompts, self.builder = outcomes, prompts, builder
        self.recorder, self.gate = recorder, gate
        self.loaded_model: str | None = None  # the checkpoint of the last job submitted

    def fill(self, inflight: list[Inflight], foreign: set[str], client_id: str, *,
             heartbeat: Callable[[], None], paused: bool = False) -> bool:
        """Claim and submit into `inflight` until one job runs and one waits on
        ComfyUI (counting `foreign`, zmm prompts of others still there); nothing
        while `paused` (images cannot be saved). False if ComfyUI went away while
        submitting (the worker closes its stream). `heartbeat` renews the
        worker's leases (it may adopt jobs into `inflight`)."""
        stop = self.ctx.stop
        while len(inflight) + len(foreign) < 2 and not stop.mode:
            if not self.scope.may_claim() or not self.capability.known or paused:
                return True  # known: the server has said which files it has (a drained
                # backend's claim takes nothing: the claim's UPDATE checks the switch)
            job = self.store.claim(self.ctx.id, lease_s=self.ctx.lease_s,
                                   aging_s=self.ctx.aging_s, only_ids=self.scope.only_ids,
                                   prefer_model=self.loaded_model,
                                   group_window=self.ctx.group_window,
                                   route=self.capability.route, backend=self.ctx.backend.name)
            if job is None:
                return True
            if wanted(job):
                job = self._enhance(job, heartbeat)
                if job is None:
                    continue
            if self.gate is not None:
                admission = self.gate.admit(job, cloud_ok=self.cloud.ok(bool(stop.mode)))
                if admission.to_cloud:
                    self.scope.claimed += 1
                    self.cloud.hand_over(job, lane.VRAM, admission.message)
                    continue
                if admission.job is None:
                    self.outcomes.defer(job, admission.message,
                                        retry_in=min(5.0, max(self.ctx.poll_s * 4, 0.2)))
                    return True
                job = admission.job
            self.scope.claimed += 1
            started = self._start(job, client_id)
            if started is None:
                return False
            if isinstance(started, Inflight):
                inflight.append(started)
                self.ctx.observer.job_changed(started)
        return True

    def _enhance(self, job: Job, heartbeat: Callable[[], None]) -> Job | None:
        """The local LLM writes the job's prompt, before the VRAM gate looks at
        the GPU: Ollama answers first, then a swap can unload it for the image.
        None: the job failed (enhancement required) or is no longer ours."""
        heartbeat()  # the leases held are fresh for as long as Ollama may take
        enhanced, outcome = self.prompts.prepare(job)
        heartbeat()
        if outcome is not None:
            self.scope.claimed += 1
            self.recorder.record(job, outcome)
            return None
        return enhanced

    def _start(self, job: Job, client_id: str) -> Inflight | bool | None:
        """Build, check and submit a claimed job: its Inflight; True when it was
        recorded instead (rejected, back to the queue); None if ComfyUI went away."""
        ctx = self.ctx
        prompt_id = execution.prompt_id_for(job)
        graph = None
        try:
            graph = self.builder.build(job)
            self.store.update(job.id, worker_id=ctx.id, comfy_prompt_id=prompt_id,
                              comfy_url=ctx.url, submitted_at=iso(self.store.clock()),
                              phase="submitted", phase_detail=None,
                              event=("submitted", f"prompt {prompt_id} to {ctx.url}"))
            execution.submit(self.client, graph, prompt_id, client_id, metadata_for(job),
                             ui_workflow=job.request.get("ui_workflow"))
        except WorkflowRejected as exc:  # a missing model file: back to the queue
            self.recorder.record(job, self.capability.after_rejection(
                job, exc, graph or self.builder.bind(job), self.builder)
                or failed(exc.message, "rejected"))
            return True
        except (InvalidInput, NotFound) as exc:
            self.recorder.record(job, failed(exc.message, "rejected"))
            return True
        except ComfyUnavailable as exc:
            self.recorder.record(job, requeue(f"ComfyUI unreachable: {exc.reason}",
                                              consume=False))
            return None
        except ComfyServerError as exc:
            self.recorder.record(job, requeue(f"ComfyUI failed to take it: {exc.message}",
                                              consume=True, backoff=True, kind="unavailable"))
            return True
        now = ctx.clock.monotonic()
        self.loaded_model = job.model_requested
        return Inflight(job=job, prompt_id=prompt_id, graph=graph, submitted=now,
                        last_event=now)
