"""The backend's row in the spool as its worker sees it, and the drain switch
it obeys. The worker tells it when its ComfyUI answers or not, and what went
wrong (unreachable, a crash, a hang); `beat()` writes the row every few
seconds (state, managed and restarts, GPU memory, the model of the last job
run there, the last error) and `stopped()` writes the last one. It also
raises the down alarm, which follows the same reachability. Never claims.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from zmm.backends.vram_source import VramReading, VramSource
from zmm.config.fleet import Backend
from zmm.errors import ComfyUnavailable
from zmm.secrets import scrub
from zmm.store import Store
from zmm.store.backends import BackendReport
from zmm.timestamps import iso
from zmm.worker.alerts import DownAlarm
from zmm.worker.execution import Inflight
from zmm.worker.managed.supervisor import ChildReport

# How often the row is written while nothing changes: `zmm backends` and
# `zmm top` show GPU memory this fresh. A change of state is written at once.
STATUS_EVERY_S = 2.0


class BackendStatus:
    def __init__(self, store: Store, backend: Backend, worker_id: str, *, alarm: DownAlarm,
                 vram: VramSource | None = None,
                 vram_used: Callable[[], int | None] | None = None,
                 probe: Callable[[], Any] | None = None, every_s: float = STATUS_EVERY_S,
                 monotonic: Callable[[], float] = time.monotonic,
                 supervisor: Any | None = None) -> None:
        self.store, self.backend, self.worker_id = store, backend, worker_id
        self.alarm, self.vram = alarm, vram
        self.vram_used = vram_used or (vram.used_bytes if vram is not None else lambda: None)
        self.probe = probe  # asks the server (client.ping) when idle: a dead idle server shows
        self.every_s, self.monotonic = every_s, monotonic
        self.supervisor = supervisor  # the Supervisor in managed mode: restarts, starting
        self._reachable: bool | None = None  # None: not asked yet
        self._error: str | None = None  # not yet written
        self._written: str | None = None  # the state last written
        self._next = 0.0

    # -- what the worker tells it ----------------------------------------------------

    def connected(self) -> None:
        self._reachable = True
        self.alarm.reachable()

    def unreachable(self, reason: str) -> None:
        self._reachable = False
        self.failed(f"ComfyUI unreachable: {reason}")
        self.alarm.unreachable(reason)

    def failed(self, message: str) -> None:
        """Something went wrong on the server (a crash, a hang, a lost connection)."""
        message = scrub(message)
        if message != self._error:
            self._error = message
            self._next = 0.0  # written with the next beat

    def child_changed(self, report: ChildReport) -> None:
        """Managed mode: the child started, exited, hung or came back; recorded for
        `zmm doctor` (spool_state comfyui:<url>) and, when it went down, as the error."""
        self.store.set_state(f"comfyui:{self.backend.url}", dict(
            report.status, event=report.kind, message=report.message,
            at=iso(self.store.clock())))
        if report.kind not in ("started", "restarted"):
            self.failed(report.message)

    def sample_peaks(self, inflights: list[Inflight]) -> None:
        """Each executing job's peak GPU memory so far (its history's vram_used_gb)."""
        executing = [inflight for inflight in inflights if inflight.executing]
        if not executing:
            return
        used = self.vram_used()
        if used is not None:
            for inflight in executing:
                inflight.peak_vram = max(inflight.peak_vram or 0, used)

    def draining(self) -> bool:
        """The operator's switch (`zmm backends drain`): claim nothing while set."""
        return self.store.is_draining(self.backend.name)

    # -- the row ---------------------------------------------------------------------

    def state(self) -> str:
        if self.supervisor is not None and self.supervisor.restarting:
            return "starting"
        if self._reachable is None:
            return "starting"
        return "up" if self._reachable else "down"

    def beat(self, loaded_model: str | None, *, idle: bool = False, force: bool = False) -> None:
        """Write the row when it is due or the state changed. `idle` (connected,
        nothing on the server): ask the server first, since no event would say it died."""
        now = self.monotonic()
        if not force and now < self._next and self.state() == self._written:
            return
        self._next = now + self.every_s
        if idle and self.probe is not None:
            try:
                self.probe()
                self.connected()
            except ComfyUnavailable as exc:
                self.unreachable(exc.reason)
        state = self.state()
        reading = self.vram.read() if self.vram is not None and self._reachable is not False \
            else None
        self._write(state, self.worker_id, loaded_model, reading)

    def stopped(self, loaded_model: str | None, store: Store | None = None) -> None:
        """The worker stops: state stopped, no worker, no GPU reading. `store`: a
        connection of the calling thread, when the worker's own thread is stuck."""
        self._write("stopped", None, loaded_model, None, store)

    def _write(self, state: str, worker_id: str | None, loaded_model: str | None,
               reading: VramReading | None, store: Store | None = None) -> None:
        supervisor = self.supervisor
        (store or self.store).report_backend(BackendReport(
            name=self.backend.name, url=self.backend.url, gpu=self.backend.gpu,
            worker_id=worker_id, state=state, managed=supervisor is not None,
            restarts=supervisor.restarts if supervisor is not None else 0,
            loaded_model=loaded_model,
            vram_total_bytes=reading.total_bytes if reading else None,
            vram_free_bytes=reading.free_bytes if reading else None,
            last_error=self._error))
        self._written, self._error = state, None
