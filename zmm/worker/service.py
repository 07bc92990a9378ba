"""Running a worker for one backend: which backend, the lock (one per ComfyUI
server), the client, the backend's own GPU and Ollama for the VRAM gate,
signal handling, and the inline mode `zmm generate` uses when no worker is alive.

The CLI calls these; they wire config, store, client and observer together.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from zmm.config import Config, fleet
from zmm.errors import ComfyUnavailable, InvalidInput
from zmm.locks import FileLock, worker_lock_path
from zmm.store import Job, Store
from zmm.store.backends import BackendReport
from zmm.timestamps import iso
from zmm.worker.counts import JobCounts
from zmm.worker.observer import QuietObserver

if TYPE_CHECKING:
    from zmm.backends.comfy import ComfyClient
    from zmm.backends.vram_source import VramSource
    from zmm.cloud.lane import CloudLane
    from zmm.vram.gate import VramGate
    from zmm.worker.loop import Worker


def choose_backend(settings: Config, name: str | None) -> fleet.Backend:
    """The backend `serve-worker` serves: the one named, or the only one configured.
    Several and none named is exit 2; an unknown name exit 3 with the list."""
    if name is not None:
        return fleet.backend(settings, name)
    every = fleet.backends(settings)
    if len(every) > 1:
        names = ", ".join(item.name for item in every)
        raise InvalidInput(f"several backends are configured ({names})",
                           "pass --backend NAME or --all")
    return every[0]


def inline_backend(settings: Config, job: Job | None = None,
                   recorded: list[dict[str, Any]] | None = None) -> fleet.Backend:
    """The backend an inline `zmm generate` runs its jobs on: the one the first
    job is pinned to, else the first configured whose server has the job's
    model files (by the spool's recorded lists, else by asking), else the first."""
    if job is None:
        return fleet.backends(settings)[0]
    if job.on_backend:
        return fleet.backend(settings, job.on_backend, recorded or [])
    from zmm.intake import server_files
    from zmm.views.routing import needs_of

    able = server_files.first_able(needs_of(job.needs) or [], settings, recorded or [])
    return able or fleet.backends(settings)[0]


def worker_lock(settings: Config, role: str) -> FileLock:
    url = settings.get("comfyui.url")
    return FileLock(worker_lock_path(settings.home, url), {"role": role, "comfy_url": url})


def make_client(settings: Config) -> ComfyClient:
    from zmm.backends.comfy import ComfyClient

    return ComfyClient(settings.get("comfyui.url"), timeout=settings.get("comfyui.timeout_s"))


@contextmanager
def stop_on_signals(request_stop: Callable[[str], None]) -> Iterator[None]:
    """SIGINT: finish the running job, then stop (twice: stop now). SIGTERM (and
    Ctrl-Break on Windows): stop now, queueing the running job again."""
    wanted = {signal.SIGINT: "drain", signal.SIGTERM: "now"}
    if sys.platform == "win32":  # pragma: no cover - Windows only
        wanted[signal.SIGBREAK] = "now"
    previous = {}
    for number, mode in wanted.items():
        previous[number] = signal.signal(number, lambda *_args, mode=mode: request_stop(mode))
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def make_vram(settings: Config, client: ComfyClient) -> VramSource:
    """The backend's GPU memory: NVML at its index, or a remote server's /system_stats."""
    from zmm.backends.vram_source import VramSource

    return VramSource(fleet.serving(settings).gpu, client)


def make_gate(store: Store, settings: Config, notice: Callable[[str], None],
              vram: VramSource) -> VramGate:
    """The VRAM gate on the backend's own GPU, with the Ollama sharing it (the
    one `settings_for` set, if enabled) for the swap."""
    from zmm.vram.gate import VramGate, swap_key

    ollama = None
    if settings.get("ollama.enabled"):
        from zmm.backends.ollama import OllamaClient

        ollama = OllamaClient(settings.get("ollama.url"), timeout=10.0)
    return VramGate(store, settings, ollama=ollama, free_bytes=vram.free_bytes, notice=notice,
                    gpu_index=vram.gpu_index, swap_state=swap_key(fleet.serving(settings).name),
                    unknown_reason=vram.unknown_reason)


def make_cloud(settings: Config):
    """The cloud lane: every configured provider, whether or not its key is set
    (a job asking for the cloud then fails with the reason, not waits forever)."""
    from zmm.cloud.lane import CloudLane

    return CloudLane(settings)


# How long a stopping worker gives due webhooks (one try each) before leaving
# them in the outbox for the next worker: `zmm generate` must not hang on a
# dead endpoint.
WEBHOOK_DRAIN_S = 3.0


def start_webhooks(settings: Config, notice: Callable[[str], None]):
    """The webhook sender that runs next to a worker (its own thread and spool
    connection), so a slow endpoint never holds up the worker loop."""
    from zmm.worker.webhooks import WebhookSender

    return WebhookSender(settings, notice=notice).start()


@contextmanager
def worker_parts(settings: Config, notice: Callable[[str], None]
                 ) -> Iterator[tuple[Store, ComfyClient, CloudLane]]:
    """What a worker runs with, closed in reverse order when it stops: its spool
    connection, the ComfyUI client, the cloud lane, and the webhook sender beside
    it (which gets WEBHOOK_DRAIN_S to deliver what is due)."""
    store = Store(settings.spool_path, busy_timeout_ms=settings.get("spool.busy_timeout_ms"))
    client = make_client(settings)
    webhooks = lane = None
    try:
        lane = make_cloud(settings)
        webhooks = start_webhooks(settings, notice)
        yield store, client, lane
    finally:
        if webhooks is not None:
            webhooks.close(WEBHOOK_DRAIN_S, drain=True)
        if lane is not None:
            lane.close()
        client.close()
        store.close()


def serve(settings: Config, *, once: bool, max_jobs: int | None, observer: Any) -> JobCounts:
    """A worker for the backend of `settings` (fleet.settings_for) until it stops."""
    from zmm.worker.assembly import Equipment, build_worker
    from zmm.worker.scope import Scope

    lock = worker_lock(settings, "serve-worker")
    lock.acquire_or_raise(f"the worker lock for ComfyUI at {settings.get('comfyui.url')}")
    with lock, worker_parts(settings, observer.notice) as (store, client, lane), \
            managed_comfy(settings, store, observer.notice) as (stopped_early, supervisor):
        vram = make_vram(settings, client)
        worker = build_worker(
            settings, store, client, scope=Scope(once=once, max_jobs=max_jobs),
            observer=observer, holds_lock=True, equipment=Equipment(
                gate=make_gate(store, settings, observer.notice, vram), vram=vram,
                cloud_lane=lane, supervisor=supervisor))
        if stopped_early.is_set():  # a signal came as ComfyUI finished starting
            worker.request_stop("now")
        observer.attach(store, settings)
        with stop_on_signals(worker.request_stop), observer:
            return run_bounded(worker)


def run_bounded(worker: Worker, grace_s: float | None = None) -> JobCounts:
    """`worker.run()` on a thread of its own, so that a stop signal ends it within
    the grace (STOP_GRACE_S, plus a second) whatever its server does: a call to a
    ComfyUI that does not answer cannot hold the process. What it then still
    holds stays running, its worker row kept, for the next worker of the server;
    the backend's row says stopped, as after any stop."""
    from zmm.worker.loop import STOP_GRACE_S

    grace_s = STOP_GRACE_S + 1.0 if grace_s is None else grace_s
    ended: dict[str, Any] = {}

    def run() -> None:
        try:
            ended["counts"] = worker.run()
        except BaseException as exc:  # re-raised on the calling thread
            ended["error"] = exc

    thread = threading.Thread(target=run, name="zmm-worker", daemon=True)
    thread.start()
    deadline: float | None = None
    while thread.is_alive():
        thread.join(0.1)
        if deadline is None and worker.stop_mode == "now":
            deadline = time.monotonic() + grace_s
        if deadline is not None and time.monotonic() >= deadline and thread.is_alive():
            held = " ".join(worker.held())
            worker.observer.notice(
                "ComfyUI does not answer; stopping without it" +
                (f": {held} left running for the next worker of this server" if held else ""))
            _write_stopped(worker)
            return worker.counts
    if "error" in ended:
        raise ended["error"]
    return ended["counts"]


def _write_stopped(worker: Worker) -> None:
    """The backend's row of a worker whose thread is stuck on its server: stopped,
    written on a connection of this thread (the worker's is in use there)."""
    settings = worker.settings
    with Store(settings.spool_path, busy_timeout_ms=settings.get("spool.busy_timeout_ms")) \
            as store:
        worker.status.stopped(worker.submitter.loaded_model, store=store)


@contextmanager
def managed_comfy(settings: Config, store: Store, notice: Callable[[str], None]
                  ) -> Iterator[tuple[threading.Event, Any]]:
    """With `comfyui.command` set (managed mode), ComfyUI is started (or a child a
    killed worker left is adopted) before the worker claims anything, and what
    was started is stopped (and recorded) when the worker stops, however it stops. Called with
    the worker lock held: one process manages a URL's child at a time. Yields
    an event set if a stop signal came while ComfyUI was starting, and the
    Supervisor the worker consults (None for a server it did not start)."""
    stopping = threading.Event()
    if not settings.get("comfyui.command"):
        yield stopping, None
        return
    from zmm.worker.managed.supervisor import ManagedSettings, Supervisor

    supervisor = Supervisor(ManagedSettings.from_config(settings), settings.home, notice=notice)
    backend = fleet.serving(settings)  # `zmm backends` shows it starting meanwhile
    store.report_backend(BackendReport(backend.name, backend.url, backend.gpu, None, "starting",
                                       managed=True, restarts=0))
    try:
        with stop_on_signals(lambda _mode: stopping.set()):  # a signal ends the start wait
            started = supervisor.start(cancelled=stopping.is_set)
        yield stopping, (None if started == "external" else supervisor)
    finally:
        how = supervisor.stop()
        if how is not None:  # the spool's record says the server is down on purpose
            store.set_state(f"comfyui:{supervisor.managed.url}", dict(
                supervisor.status(), event="stopped", message=f"stopped with the worker: {how}",
                at=iso(store.clock())))


class _Reachability(QuietObserver):
    """The inline worker's observer: only whether ComfyUI answers right now."""

    def __init__(self) -> None:
        self.unreachable = False

    def waiting(self, url: str, reason: str, retry_in: float) -> None:
        self.unreachable = True

    def connected(self, url: str) -> None:
        self.unreachable = False


class InlineRunner:
    """A waiting `generate` runs the queue itself whenever no worker holds the lock.

    `poll()` (between the follower's polls) takes the lock once it is free -- at
    the start, or when the holder finishes or dies -- and starts a Worker thread
    that serves the whole queue in claim order until this process's jobs have
    finished; `finish()` then lets it finish what it has in flight (keeping
    ComfyUI fed while the next waiter takes over) and release the lock.
    """

    def __init__(self, settings: Config, job_ids: list[str],
                 notice: Callable[[str], None] = lambda _text: None,
                 backend: fleet.Backend | None = None) -> None:
        self.settings = fleet.settings_for(settings, backend or inline_backend(settings))
        self.job_ids = job_ids
        self.notice = notice
        self.lock = worker_lock(self.settings, "inline generate")  # its backend's server
        self.error: BaseException | None = None
        self._observer = _Reachability()
        self._worker: Any = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._told_holder = False

    def poll(self) -> None:
        """Re-raise what the worker thread failed with; take the lock if it is free."""
        self.check()
        if self._thread is not None or self._stopping:
            return
        if not self.lock.try_acquire():
            self._tell_holder()
            return
        if self._told_holder:  # it waited behind another process: say why it moves now
            self.notice("the worker lock is free: this process runs the queue until its "
                        "job(s) are done")
        self._thread = threading.Thread(target=self._run, name="zmm-inline-worker", daemon=True)
        self._thread.start()

    def _tell_holder(self) -> None:
        if self._told_holder:
            return
        self._told_holder = True
        holder = self.lock.holder() or {}
        if holder.get("role") == "inline generate":
            self.notice(f"another zmm generate (pid {holder.get('pid')}) runs the queue; "
                        "this one takes over when it stops")

    def _run(self) -> None:
        from zmm.worker.assembly import Equipment, build_worker
        from zmm.worker.scope import Scope

        quiet = lambda _text: None  # noqa: E731 - the waiter shows its own lines
        try:
            with worker_parts(self.settings, quiet) as (store, client, lane):
                vram = make_vram(self.settings, client)
                self._worker = build_worker(
                    self.settings, store, client, scope=Scope(until_finished=self.job_ids),
                    observer=self._observer, holds_lock=True, equipment=Equipment(
                        gate=make_gate(store, self.settings, quiet, vram), vram=vram,
                        cloud_lane=lane))
                if self._stopping:  # stop() came before the worker existed
                    self._worker.request_stop("now")
                self._worker.run()
        except BaseException as exc:  # handed to the main thread, which reports it
            self.error = exc
        finally:
            self.lock.release()

    def check(self) -> None:
        """Re-raise what the worker thread failed with."""
        if self.error is not None:
            error, self.error = self.error, None
            if isinstance(error, ComfyUnavailable):
                ids = " ".join(self.job_ids)
                error.hint = (f"job(s) {ids} stay queued and will run once a worker reaches "
                              "ComfyUI (`zmm serve-worker`); follow with `zmm wait " + ids + "`")
            raise error

    def finish(self) -> None:
        """This process's jobs are done: let the worker finish the other jobs it
        has in flight, then release the lock. If ComfyUI stops answering
        meanwhile, stop at once: the next holder of the lock adopts them."""
        thread = self._thread
        while thread is not None and thread.is_alive():
            thread.join(timeout=0.2)
            if self._observer.unreachable and thread.is_alive():
                self.stop(wait_s=3.0)
                break
        self.check()

    def stop(self, wait_s: float = 30.0) -> None:
        """Stop now: the running jobs go back to the queue (when ComfyUI answers)."""
        self._stopping = True
        if self._worker is not None:
            self._worker.request_stop("now")
        if self._thread is not None:
            self._thread.join(timeout=wait_s)
