"""GPU facts through NVML (pynvml, from the nvidia-ml-py distribution), behind a
seam: `use_backend()` swaps in any object shaped like the pynvml module. pynvml
is imported only when a snapshot is taken, so importing this module is cheap.

Without a driver, `snapshot()` raises GpuUnavailable with one line.
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

_NOT_AVAILABLE = 2**64 - 1  # NVML's "value not available" for usedGpuMemory

_backend: Any = None  # set through use_backend(); None = pynvml


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    name: str  # "?" where /proc does not show the pid (another pid namespace)
    used_bytes: int | None  # None inside some containers
    role: str | None  # "comfyui" | "ollama" | None: a guess from name, cmdline, cwd


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
    """Use `backend` (pynvml-shaped) instead of the driver inside the block."""
    global _backend
    previous, _backend = _backend, backend
    try:
        yield
    finally:
        _backend = previous


def _uses_driver() -> bool:
    return _backend is None


def _nvml() -> Any:
    if _backend is not None:
        return _backend
    try:
        import pynvml
    except ImportError as exc:  # the dependency is declared; a broken install still gets one line
        raise GpuUnavailable(f"no NVML: pynvml cannot be imported ({exc})") from None
    return pynvml


def snapshot() -> GpuSnapshot:
    """Every GPU NVML sees. nvmlShutdown always follows a successful nvmlInit."""
    nvml = _nvml()
    error = getattr(nvml, "NVMLError", OSError)
    try:
        nvml.nvmlInit()
    except error as exc:  # library not found, driver not loaded, no permission
        raise GpuUnavailable(f"no NVIDIA driver: {exc}",
                             hint="zmm runs without NVML; VRAM checks are skipped") from None
    try:
        driver = _optional(nvml, nvml.nvmlSystemGetDriverVersion)
        gpus = [_device(nvml, index) for index in range(nvml.nvmlDeviceGetCount())]
        return GpuSnapshot(_text(driver) if driver is not None else None, gpus)
    except error as exc:  # e.g. "GPU is lost" halfway through
        raise GpuUnavailable(f"NVML failed: {exc}") from None
    finally:
        with contextlib.suppress(error):
            nvml.nvmlShutdown()


def _device(nvml: Any, index: int) -> GpuInfo:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
    rates = _optional(nvml, nvml.nvmlDeviceGetUtilizationRates, handle)
    temperature = _optional(nvml, nvml.nvmlDeviceGetTemperature, handle,
                            getattr(nvml, "NVML_TEMPERATURE_GPU", 0))
    power_mw = _optional(nvml, nvml.nvmlDeviceGetPowerUsage, handle)
    uuid = _optional(nvml, nvml.nvmlDeviceGetUUID, handle)
    running = _optional(nvml, nvml.nvmlDeviceGetComputeRunningProcesses, handle) or []
    return GpuInfo(
        index=index, name=_text(nvml.nvmlDeviceGetName(handle)),
        uuid=_text(uuid) if uuid is not None else None, total_bytes=int(memory.total),
        used_bytes=int(memory.used), free_bytes=int(memory.free),
        utilization_pct=int(rates.gpu) if rates is not None else None,
        temperature_c=int(temperature) if temperature is not None else None,
        power_w=power_mw / 1000 if power_mw is not None else None,
        processes=[_process(nvml, p.pid, p.usedGpuMemory) for p in running])


def _optional(nvml: Any, call: Any, *args: Any) -> Any:
    """A field some GPUs do not report (NVMLError_NotSupported): None, not a failure."""
    try:
        return call(*args)
    except getattr(nvml, "NVMLError", OSError):
        return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _process(nvml: Any, pid: int, used: int | None) -> GpuProcess:
    if used is not None and used >= _NOT_AVAILABLE:
        used = None
    named = getattr(nvml, "zmm_process_name", None)  # a state backend's pids are not real
    name = named(pid) if named is not None else None
    if name:
        return GpuProcess(pid, name, used, role_of(name, ""))
    name, cmdline, cwd = _proc_facts(pid)
    return GpuProcess(pid, name, used, role_of(name, cmdline, cwd))


def _proc_facts(pid: int) -> tuple[str, str, str]:
    """Name, command line and working directory from /proc; what can't be read is empty."""
    base = Path("/proc") / str(pid)
    try:
        name = (base / "comm").read_text().strip()
    except OSError:
        return "?", "", ""
    try:
        cmdline = (base / "cmdline").read_bytes().replace(b"\x00", b" ").decode(errors="replace")
    except OSError:
        cmdline = ""
    try:
        cwd = os.readlink(base / "cwd")  # another user's process: permission denied
    except OSError:
        cwd = ""
    return name, cmdline.strip(), cwd


def role_of(name: str, cmdline: str, cwd: str = "") -> str | None:
    """Which tenant a GPU process is: "ollama" (ollama, ollama_llama_server, `ollama
    runner`), "comfyui" ("comfy" anywhere, or `main.py --listen`), else None."""
    text = f"{name} {cmdline}".lower()
    if "ollama" in text:
        return "ollama"
    if "comfy" in text or "comfy" in cwd.lower() or ("main.py" in text and "--listen" in text):
        return "comfyui"
    return None


# A missing driver is remembered for a while, so the worker does not probe
# (and fail to load libnvidia-ml) before every job. Only the driver is cached:
# a backend set through use_backend() is cheap and must change between tests.
_RETRY_AFTER_S = 30.0
_driver_missing_until = 0.0


def memory(index: int = 0) -> GpuInfo | None:
    """One GPU's reading, or None where NVML is not available or has no such index."""
    global _driver_missing_until
    driver = _uses_driver()
    if driver and time.monotonic() < _driver_missing_until:
        return None
    try:
        gpus = snapshot().gpus
    except GpuUnavailable:
        if driver:
            _driver_missing_until = time.monotonic() + _RETRY_AFTER_S
        return None
    return gpus[index] if index < len(gpus) else None


def free_bytes(index: int = 0) -> int | None:
    """Free memory of one GPU, or None where NVML is not available."""
    info = memory(index)
    return info.free_bytes if info else None


def used_bytes(index: int = 0) -> int | None:
    info = memory(index)
    return info.used_bytes if info else None
