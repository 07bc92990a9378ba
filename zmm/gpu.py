"""GPU facts through NVML (pynvml, from the nvidia-ml-py distribution), behind
a seam: `use_backend()` swaps in any object shaped like pynvml (tests use a
fake sharing one VRAM ledger with the fake servers).

Without a driver, `snapshot()` raises GpuUnavailable with one line. Test seam:
when ZMM_TEST_NVML names a JSON ledger file, a `zmm` subprocess reads it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zmm.errors import GpuUnavailable

_backend: Any = None


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    name: str
    used_bytes: int | None
    role: str | None  # comfyui | ollama | None


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    uuid: str | None
    total_bytes: int
    used_bytes: int
    free_bytes: int
    utilization_pct: int | None
    temperature_c: int | None
    power_w: float | None
    processes: list[GpuProcess]


@dataclass(frozen=True)
class GpuSnapshot:
    driver_version: str | None
    gpus: list[GpuInfo]


@contextlib.contextmanager
def use_backend(backend: Any) -> Iterator[None]:
    global _backend
    previous, _backend = _backend, backend
    try:
        yield
    finally:
        _backend = previous


def _nvml() -> Any:
    if _backend is not None:
        return _backend
    ledger = os.environ.get("ZMM_TEST_NVML")
    if ledger:
        from zmm.nvml_file import FileNvml

        return FileNvml(Path(ledger))
    try:
        import pynvml
    except ImportError as exc:  # the dependency is declared; a broken install still gets one line
        raise GpuUnavailable(f"no NVML: pynvml cannot be imported ({exc})") from None
    return pynvml


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _optional(call: Any, *args: Any) -> Any:
    try:
        return call(*args)
    except Exception:  # noqa: BLE001 - NVMLError_NotSupported and friends: the field is unknown
        return None


def snapshot() -> GpuSnapshot:
    nvml = _nvml()
    try:
        nvml.nvmlInit()
    except getattr(nvml, "NVMLError", OSError) as exc:  # library not found, driver not loaded
        raise GpuUnavailable(f"no NVIDIA driver: {exc}",
                             hint="zmm runs without NVML; VRAM checks are skipped") from None
    try:
        driver = _optional(nvml.nvmlSystemGetDriverVersion)
        gpus = [_device(nvml, index) for index in range(nvml.nvmlDeviceGetCount())]
        return GpuSnapshot(_text(driver) if driver is not None else None, gpus)
    finally:
        _optional(nvml.nvmlShutdown)


def _device(nvml: Any, index: int) -> GpuInfo:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
    rates = _optional(nvml.nvmlDeviceGetUtilizationRates, handle)
    temperature = _optional(nvml.nvmlDeviceGetTemperature, handle,
                            getattr(nvml, "NVML_TEMPERATURE_GPU", 0))
    power = _optional(nvml.nvmlDeviceGetPowerUsage, handle)
    uuid = _optional(nvml.nvmlDeviceGetUUID, handle)
    processes = [_process(nvml, p.pid, p.usedGpuMemory)
                 for p in (_optional(nvml.nvmlDeviceGetComputeRunningProcesses, handle) or [])]
    return GpuInfo(index, _text(nvml.nvmlDeviceGetName(handle)),
                   _text(uuid) if uuid is not None else None, int(memory.total),
                   int(memory.used), int(memory.free), rates.gpu if rates is not None else None,
                   temperature, power / 1000 if power is not None else None, processes)


def _process(nvml: Any, pid: int, used: int | None) -> GpuProcess:
    named = getattr(nvml, "zmm_process_name", None)  # a state backend knows its pids' names
    name, cmdline = (named(pid), "") if named and named(pid) else _proc_name(pid)
    return GpuProcess(pid, name, used, role_of(name, cmdline))


def _proc_name(pid: int) -> tuple[str, str]:
    base = Path("/proc") / str(pid)
    try:
        name = (base / "comm").read_text().strip()
        cmdline = (base / "cmdline").read_bytes().replace(b"\x00", b" ").decode(errors="replace")
        return name, cmdline
    except OSError:
        return "?", ""


def role_of(name: str, cmdline: str) -> str | None:
    text = f"{name} {cmdline}".lower()
    if "ollama" in text:
        return "ollama"
    if "comfy" in text or ("main.py" in text and "--listen" in text):
        return "comfyui"
    return None


_RETRY_AFTER_S = 30.0
_unavailable_until = 0.0


def _memory(index: int) -> GpuInfo | None:
    """One GPU's reading for the worker's per-job checks; a missing driver is
    remembered for a while rather than probed again before every job."""
    global _unavailable_until
    if _backend is None and time.monotonic() < _unavailable_until:
        return None
    try:
        gpus = snapshot().gpus
    except GpuUnavailable:
        _unavailable_until = time.monotonic() + _RETRY_AFTER_S
        return None
    return gpus[index] if index < len(gpus) else None


def free_bytes(index: int = 0) -> int | None:
    """Free memory of one GPU, or None where NVML is not available."""
    info = _memory(index)
    return info.free_bytes if info else None


def used_bytes(index: int = 0) -> int | None:
    info = _memory(index)
    return info.used_bytes if info else None
