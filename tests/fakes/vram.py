"""A shared, thread-safe ledger of fake GPU memory.

The fake ComfyUI, fake Ollama and fake NVML all read and write one ledger, so a
test sees memory move: Ollama unloading frees bytes that NVML then reports free.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

GIB = 1024**3


@dataclass(frozen=True)
class Holder:
    owner: str  # e.g. "ollama:llama3.2" or "comfyui:sd_xl_base_1.0.safetensors"
    pid: int
    process_name: str
    nbytes: int


class VramLedger:
    def __init__(self, total_bytes: int = 24 * GIB, reserved_bytes: int = 0) -> None:
        self.total = total_bytes
        self.reserved = reserved_bytes  # the desktop / driver's own share
        self._holders: dict[str, Holder] = {}
        self._lock = threading.Lock()
        self.listeners: list = []  # called after every change (e.g. to persist for subprocesses)

    def allocate(self, owner: str, nbytes: int, *, pid: int, process_name: str) -> bool:
        """Take `nbytes` for `owner`; False (and nothing taken) if it does not fit."""
        with self._lock:
            current = self._holders.get(owner)
            already = current.nbytes if current else 0
            if self._used_locked() - already + nbytes > self.total:
                return False
            self._holders[owner] = Holder(owner, pid, process_name, nbytes)
        self._changed()
        return True

    def release(self, owner: str) -> int:
        with self._lock:
            holder = self._holders.pop(owner, None)
        self._changed()
        return holder.nbytes if holder else 0

    def release_prefix(self, prefix: str) -> int:
        with self._lock:
            gone = [key for key in self._holders if key.startswith(prefix)]
            freed = sum(self._holders.pop(key).nbytes for key in gone)
        self._changed()
        return freed

    def _changed(self) -> None:
        for listener in list(self.listeners):
            listener(self)

    def holds(self, owner: str) -> bool:
        with self._lock:
            return owner in self._holders

    @property
    def used(self) -> int:
        with self._lock:
            return self._used_locked()

    @property
    def free(self) -> int:
        return self.total - self.used

    def processes(self) -> list[tuple[int, str, int]]:
        """(pid, process name, bytes) per process, summed over its holdings."""
        with self._lock:
            per_pid: dict[int, tuple[str, int]] = {}
            for holder in self._holders.values():
                name, nbytes = per_pid.get(holder.pid, (holder.process_name, 0))
                per_pid[holder.pid] = (name, nbytes + holder.nbytes)
            return [(pid, name, nbytes) for pid, (name, nbytes) in sorted(per_pid.items())]

    def _used_locked(self) -> int:
        return self.reserved + sum(h.nbytes for h in self._holders.values())
