"""The cloud lane: a worker's jobs on cloud providers, run on background
threads so the worker's loop goes on following ComfyUI meanwhile.

A lane thread only talks HTTP (through zmm.providers) and writes the image
file; it returns an `Outcome` plus the events to record, and the worker's own
thread writes them to the spool, as it does for local jobs. `after_failure`
is the ladder from a failed cloud round to the job's next state.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from zmm.assets import metadata_for
from zmm.cloud import providers
from zmm.cloud.providers import ChainResult, CloudImage, CloudRequest, Provider
from zmm.config import Config
from zmm.errors import ZmmError
from zmm.outcome import Outcome, OutcomeKind, save_images
from zmm.store import Job

# Why a job went to the cloud (the `trigger` of its cloud_fallback event).
REQUESTED, COMFYUI_DOWN, VRAM, ATTEMPTS_EXHAUSTED, OUT_OF_MEMORY = (
    "requested", "comfyui_down", "vram", "attempts_exhausted", "out_of_memory")
NO_BACKEND = "no_backend"  # no live backend can run it (pinned elsewhere, a file missing)
LOCAL_SPENT = (ATTEMPTS_EXHAUSTED, OUT_OF_MEMORY)  # the cloud was the last chance


@dataclass
class CloudTask:
    """A job on the lane; shaped like the worker's Inflight for its observers."""

    job: Job
    trigger: str
    reason: str
    submitted: float
    phase: str = "cloud"
    progress: None = None
    detail: str = "waiting for a lane thread"
    flushed_detail: str = ""
    stop_reason: str | None = None  # cancel | signal: asked to stop before an image came
    stop: threading.Event = field(default_factory=threading.Event)
    future: Future | None = None

    @property
    def started(self) -> float:
        return self.submitted

    def request_stop(self, reason: str) -> None:
        self.stop_reason = reason
        self.stop.set()


# A job event to record: (kind, message, data).
Event = tuple[str, str, dict[str, Any] | None]


@dataclass(frozen=True)
class CloudResult:
    outcome: Outcome
    events: list[Event]


class CloudLane:
    def __init__(self, settings: Config, *, provider_list: list[Provider] | None = None,
                 transport: Any = None, sleep: Callable[[float], None] = time.sleep,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.providers = (provider_list if provider_list is not None
                          else providers.build(settings, transport=transport))
        cloud = settings.section("cloud")
        self.concurrency = max(1, int(cloud["concurrency"]))
        self.max_retries = max(0, int(cloud["max_retries"]))
        self.retry_after_max_s = float(cloud["retry_after_max_s"])
        self.assets_dir = settings.assets_dir
        self.brands_dir = settings.brands_dir
        self.sleep, self.monotonic = sleep, monotonic
        self.tasks: list[CloudTask] = []
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency,
                                        thread_name_prefix="zmm-cloud")

    # -- the worker's side -------------------------------------------------------

    @property
    def usable(self) -> bool:
        """Some provider can be called (its key is set)."""
        return any(provider.usable() is None for provider in self.providers)

    def has_room(self) -> bool:
        return len(self.tasks) < self.concurrency

    def start(self, job: Job, trigger: str, reason: str) -> CloudTask:
        task = CloudTask(job, trigger, reason, self.monotonic())
        task.future = self._pool.submit(self._run, task)
        self.tasks.append(task)
        return task

    def finished(self) -> list[tuple[CloudTask, CloudResult]]:
        """Tasks whose thread is done, taken off the lane."""
        done = [task for task in self.tasks if task.future is not None and task.future.done()]
        for task in done:
            self.tasks.remove(task)
        return [(task, task.future.result()) for task in done if task.future is not None]

    def job_ids(self) -> list[str]:
        return [task.job.id for task in self.tasks]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for provider in self.providers:
            getattr(provider, "close", lambda: None)()

    # -- a lane thread ------------------------------------------------------------

    def _run(self, task: CloudTask) -> CloudResult:
        job = task.job

        def on_try(name: str, number: int) -> None:
            task.detail = f"{name}: generating" + (f" (try {number})" if number > 1 else "")

        result = providers.generate(
            self.providers,
            CloudRequest(prompt=job.enhanced_prompt or job.request.prompt or job.prompt,
                         negative=job.request.negative, width=job.width or 1024,
                         height=job.height or 1024, seed=job.seed,
                         quality=job.quality_tier or "standard"),
            max_retries=self.max_retries, retry_after_max_s=self.retry_after_max_s,
            should_stop=task.stop.is_set, on_try=on_try, sleep=self.sleep, clock=self.monotonic)
        events: list[Event] = [("cloud", f"{a.provider}: {a.message}",
                   {"provider": a.provider, "ok": a.ok, "seconds": round(a.seconds, 3),
                    "cost_usd": a.cost_usd}) for a in result.attempts]
        cost = round((job.cost_usd or 0.0) + result.cost_usd, 6)
        if task.stop.is_set():
            return CloudResult(_stopped(task, cost), events)
        if result.image is None:
            return CloudResult(after_failure(job, result, task.trigger, task.reason, cost), events)
        try:
            outcome = self._save(job, result, result.image, cost)
        except ZmmError as exc:  # disk full, unwritable folder: the money is spent anyway
            outcome = Outcome(OutcomeKind.FAILED, exc.message, {"error_message": exc.message,
                                                      "backend": result.image.provider,
                                                      "cost_usd": cost}, error_kind="output")
        if result.image.cost_usd is None:
            events.append(("cloud", f"{result.image.provider}: no price configured for "
                           f"{result.image.model}; its cost is not counted", None))
        return CloudResult(outcome, events)

    def _save(self, job: Job, result: ChainResult, image: CloudImage, cost: float) -> Outcome:
        metadata = dict(metadata_for(job), backend=image.provider, cloud_model=image.model,
                        seed=image.seed)
        saved = save_images(self.assets_dir, job, [image.data], metadata, self.brands_dir)
        seconds = next(a.seconds for a in reversed(result.attempts) if a.ok)
        return Outcome(OutcomeKind.SUCCEEDED, saved.outputs[0].relative, {
            "backend": image.provider, "model_used": image.model, "seed": image.seed,
            "generation_time_s": round(seconds, 3), "cost_usd": cost, "error_message": None,
            "vram_used_gb": None, **saved.fields}, notices=saved.notes)


def _stopped(task: CloudTask, cost: float) -> Outcome:
    if task.stop_reason == "cancel":
        return Outcome(OutcomeKind.CANCELLED, "cancelled by user", {"error_message": "cancelled by user",
                                                          "cost_usd": cost})
    return Outcome(OutcomeKind.REQUEUE, "interrupted (signal) during a cloud request; queued again",
                   {"cost_usd": cost})


def after_failure(job: Job, result: ChainResult, trigger: str, reason: str,
                  cost: float) -> Outcome:
    """No provider gave an image. Passing failures (429, 5xx, network) send the job
    back to the queue, using an attempt, to be tried again later. Otherwise a job
    that asked for the cloud, or whose local attempts are spent, fails; a fallback
    job waits for ComfyUI again, never sent to the cloud again (every provider
    refused it)."""
    summary = result.summary or "no provider is configured"
    spent = {"cost_usd": cost} if cost else {}
    last = result.attempts[-1].provider if result.attempts else None
    if result.transient and trigger not in LOCAL_SPENT:
        return Outcome(OutcomeKind.REQUEUE, f"cloud providers failed for now: {summary}", spent,
                       consume_attempt=True, backoff=True, error_kind="cloud")
    if job.backend_requested == "cloud" or trigger in LOCAL_SPENT:
        prefix = "no cloud provider could take it" if job.backend_requested == "cloud" else \
            f"{reason}; the cloud fallback failed too"
        message = f"{prefix}: {summary}"
        return Outcome(OutcomeKind.FAILED, message, {"error_message": message, "backend": last, **spent},
                       error_kind="cloud")
    return Outcome(OutcomeKind.REQUEUE, f"waiting for ComfyUI: the cloud refused it ({summary})",
                   dict(spent, cloud_allowed=0))
