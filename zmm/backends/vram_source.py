"""Where one backend's GPU memory is read: NVML at the backend's index for a
local server, its ComfyUI's `/system_stats` (`devices[0].vram_free` and
`vram_total`) for a remote one, which never touches NVML.

A reading that cannot be taken is None (no driver, no such GPU, the server
does not answer): callers treat VRAM as unknown, never as a failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from zmm.backends import gpu
from zmm.errors import ComfyServerError, ComfyUnavailable, NotFound


@dataclass(frozen=True)
class VramReading:
    total_bytes: int
    free_bytes: int

    @property
    def used_bytes(self) -> int:
        return max(0, self.total_bytes - self.free_bytes)


class VramSource:
    """One backend's GPU memory. `gpu_index` None: remote, read through `client`
    (a ComfyClient of that server)."""

    def __init__(self, gpu_index: int | None, client: Any | None = None) -> None:
        if gpu_index is None and client is None:
            raise ValueError("a remote backend's VRAM is read through its ComfyUI client")
        self.gpu_index, self.client = gpu_index, client

    @property
    def remote(self) -> bool:
        return self.gpu_index is None

    @property
    def unknown_reason(self) -> str:
        """What the VRAM gate says once when a reading cannot be taken."""
        if self.remote:
            return "the remote ComfyUI reports no VRAM in /system_stats: VRAM is not checked"
        return f"NVML is not available for GPU {self.gpu_index}: VRAM is not checked before jobs"

    def read(self) -> VramReading | None:
        if self.gpu_index is not None:
            info = gpu.memory(self.gpu_index)
            return VramReading(info.total_bytes, info.free_bytes) if info else None
        return _from_system_stats(self.client)

    def free_bytes(self) -> int | None:
        reading = self.read()
        return reading.free_bytes if reading else None

    def used_bytes(self) -> int | None:
        reading = self.read()
        return reading.used_bytes if reading else None


def _from_system_stats(client: Any) -> VramReading | None:
    try:
        stats = client.system_stats()
    except (ComfyUnavailable, ComfyServerError, NotFound):  # a 404: not a ComfyUI server
        return None
    devices = stats.get("devices") if isinstance(stats, dict) else None
    if not isinstance(devices, list) or not devices or not isinstance(devices[0], dict):
        return None
    total, free = devices[0].get("vram_total"), devices[0].get("vram_free")
    if not all(isinstance(value, int) and not isinstance(value, bool) and value >= 0
               for value in (total, free)):
        return None
    return VramReading(int(total), int(free))  # type: ignore[arg-type]
