"""Building a Worker. `WorkerContext` is what every part of a worker shares (the
spool, the ComfyUI client, settings, the observer, the clock, the stop switch,
its id, URL, backend and timings), made once; `build_worker` makes the parts
from it (capability, cloud side, upkeep, outcome ladder, prompt step, backend
status, progress writer) and hands both to the Worker. What varies between a
serving worker, `--once`, an inline `generate` and a test is passed in as a few
explicit pieces: the `Scope`, the `Equipment` (gate, GPU memory, cloud lane,
managed ComfyUI, enhancer) and the `Clock`.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zmm.config import Config, fleet
from zmm.outcome import Outcome
from zmm.store import Job, Store
from zmm.worker import execution, progress
from zmm.worker.alerts import DownAlarm
from zmm.worker.capability import Capability
from zmm.worker.cloud_fallback import CloudFallback
from zmm.worker.enhancing import PromptStep
from zmm.worker.managed.watch import ChildWatch, CrashGuard
from zmm.worker.observer import Observer, QuietObserver
from zmm.worker.outcomes import OutcomeLadder, Recorder
from zmm.worker.scope import Scope
from zmm.worker.status import BackendStatus
from zmm.worker.submit import Submitter
from zmm.worker.upkeep import RunLimit, Upkeep
from zmm.worker.wake import SpoolWatch

if TYPE_CHECKING:
    from zmm.backends.comfy import ComfyClient
    from zmm.cloud.lane import CloudLane
    from zmm.worker.loop import Worker


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


class StopSwitch:
    """What a stop signal sets: None, "drain" (finish the running job) or "now".
    A request also cuts the worker's current wait short."""

    def __init__(self) -> None:
        self.mode: str | None = None
        self.woken = threading.Event()

    def request(self, mode: str) -> None:
        self.mode = "now" if mode == "now" or self.mode == "drain" else "drain"
        self.woken.set()

    def stopping(self) -> bool:
        return self.mode is not None

    def sleep(self, seconds: float) -> None:
        # time.sleep would carry on after a signal handler returns (PEP 475): a
        # worker waiting 30 s for ComfyUI must still stop at once on Ctrl-C.
        self.woken.wait(seconds)
        self.woken.clear()


@dataclass(frozen=True)
class Clock:
    """Time as the worker sees it. An injected `sleep` replaces every wait
    (tests drive the loop on a fake clock); None: the worker's own waits."""
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] | None = None


@dataclass
class Equipment:
    """What a worker may be given besides its server: the VRAM gate, its GPU's
    memory, the cloud lane, the managed ComfyUI's Supervisor, the enhancer maker."""
    gate: Any | None = None  # a gate.VramGate; None: no VRAM checks
    vram: Any | None = None  # a VramSource
    vram_used: Callable[[], int | None] | None = None
    cloud_lane: CloudLane | None = None  # None: no cloud at all (jobs asking for it wait)
    supervisor: Any | None = None  # a Supervisor in managed mode
    make_enhancer: Callable[[Config], Any] | None = None


@dataclass
class WorkerContext:
    """What every part of one worker shares, made once by `build_worker`."""
    store: Store
    client: ComfyClient
    settings: Config
    observer: Observer
    clock: Clock
    stop: StopSwitch
    id: str
    url: str
    backend: fleet.Backend
    holds_lock: bool  # the worker lock of this URL: its other workers are dead
    lease_s: float
    poll_s: float
    aging_s: float
    group_window: int
    retry_max_s: float


@dataclass
class WorkerParts:
    """The collaborators a Worker hands its work to."""
    scope: Scope
    watch: SpoolWatch
    builder: execution.GraphBuilder
    capability: Capability
    cloud: CloudFallback
    upkeep: Upkeep
    outcomes: OutcomeLadder
    recorder: Recorder
    prompts: PromptStep
    submitter: Submitter
    managed: ChildWatch
    status: BackendStatus
    progress: progress.ProgressWriter
    gate: Any | None


def build_worker(settings: Config, store: Store, client: ComfyClient, *,
                 scope: Scope | None = None, observer: Observer | None = None,
                 equipment: Equipment | None = None, clock: Clock | None = None,
                 holds_lock: bool = False) -> Worker:
    """A Worker for the backend of `settings` (fleet.settings_for), on `client`'s server."""
    from zmm.worker.loop import Worker

    scope, equipment, clock = scope or Scope(), equipment or Equipment(), clock or Clock()
    worker = settings.section("worker")
    ctx = WorkerContext(
        store=store, client=client, settings=settings, observer=observer or QuietObserver(),
        clock=clock, stop=StopSwitch(), id=new_worker_id(), url=client.base_url,
        backend=fleet.serving(settings), holds_lock=holds_lock, lease_s=worker["lease_s"],
        poll_s=worker["poll_s"], aging_s=worker["aging_s"],
        group_window=worker["model_group_window"],
        retry_max_s=settings.get("comfyui.retry_max_s"))
    return Worker(ctx, _parts(ctx, scope, equipment))


def _parts(ctx: WorkerContext, scope: Scope, equipment: Equipment) -> WorkerParts:
    settings, store, client, monotonic = ctx.settings, ctx.store, ctx.client, ctx.clock.monotonic
    worker = settings.section("worker")
    capability = Capability(store, client, name=ctx.backend.name,  # the server's files
                            refresh_s=worker["files_refresh_s"], notice=ctx.observer.notice,
                            monotonic=monotonic)
    builder = execution.GraphBuilder(client, settings.workflows_dir, settings.assets_dir,
                                     files=capability)  # checks graphs against that one list
    cloud = CloudFallback(
        store, equipment.cloud_lane, worker_id=ctx.id, url=ctx.url, lease_s=ctx.lease_s,
        poll_s=ctx.poll_s, max_wait_s=dict(settings.section("max_wait_s")),
        only_ids=scope.only_ids, observer=ctx.observer, monotonic=monotonic,
        waited_for=scope.waited_for)

    def fall_back(job: Job, outcome: Outcome) -> bool:
        return cloud.take_failure(job, outcome, stopping=ctx.stop.stopping())

    alarm = DownAlarm(store, ctx.url, webhook_url=settings.get("alerts.webhook_url"),
                      after_s=settings.get("comfyui.alert_after_s"),
                      notice=ctx.observer.notice, monotonic=monotonic)
    outcomes = OutcomeLadder(store, ctx.id, max_attempts=worker["max_attempts"],
                             backoff_s=worker["backoff_s"], observer=ctx.observer,
                             fall_back=fall_back)
    recorder = Recorder(store, outcomes, ctx.observer)
    prompts = PromptStep(store, settings, worker_id=ctx.id, lease_s=ctx.lease_s,
                         make_enhancer=equipment.make_enhancer)
    status = BackendStatus(store, ctx.backend, ctx.id, vram=equipment.vram,
                           vram_used=equipment.vram_used, probe=client.ping,
                           monotonic=monotonic, alarm=alarm, supervisor=equipment.supervisor)
    return WorkerParts(
        scope=scope, watch=SpoolWatch(store, ctx.stop.woken), builder=builder,
        capability=capability, cloud=cloud,
        upkeep=Upkeep(store, client, builder, worker_id=ctx.id, url=ctx.url,
                      lease_s=ctx.lease_s, backend=ctx.backend.name,
                      silence_s=settings.get("comfyui.silence_timeout_s"), aging_s=ctx.aging_s,
                      only_ids=scope.only_ids, observer=ctx.observer, monotonic=monotonic,
                      run_limit=RunLimit.from_section(
                          worker, settings.get("comfyui.silence_timeout_s"))),
        outcomes=outcomes, recorder=recorder, prompts=prompts,
        submitter=Submitter(ctx, scope=scope, capability=capability, cloud=cloud,
                            outcomes=outcomes, prompts=prompts, builder=builder,
                            recorder=recorder, gate=equipment.gate),
        managed=ChildWatch(equipment.supervisor, CrashGuard(settings.get("comfyui.crash_limit")),
                           store=store, status=status, observer=ctx.observer,
                           recorder=recorder),
        status=status,
        progress=progress.ProgressWriter(store, ctx.id,
                                         interval_s=worker["progress_interval_s"],
                                         observer=ctx.observer, monotonic=monotonic),
        gate=equipment.gate)
