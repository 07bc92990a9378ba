"""A pynvml-shaped NVML backend fed by a state dict instead of a driver.

Used where there is no GPU: tests hand `gpu.use_backend()` a `StateNvml`, and
a `zmm` subprocess reads one from the JSON file named by $ZMM_TEST_NVML, which
tests/seams/sitecustomize.py installs at the subprocess's start. Stdlib only
(pynvml for its error class), so that start stays cheap. The state:
{"driver": str, "gpus": [{"name", "uuid", "total", "used", "utilization",
"temperature", "power_mw", "processes": [{"pid", "used", "name"}]}]} or
{"no_driver": true}.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any


def _nvml_error(code_name: str, fallback: int) -> Exception:
    try:
        import pynvml

        return pynvml.NVMLError(getattr(pynvml, code_name, fallback))
    except ImportError:  # pragma: no cover - pynvml is a dependency
        return RuntimeError(code_name)


class StateNvml:
    NVML_TEMPERATURE_GPU = 0

    try:  # the same error class pynvml raises, so callers catch one thing
        from pynvml import NVMLError
    except ImportError:  # pragma: no cover - pynvml is a dependency
        NVMLError = RuntimeError

    def __init__(self, state: Callable[[], dict[str, Any]]) -> None:
        self._state = state
        self._current: dict[str, Any] = {}

    def nvmlInit(self) -> None:
        self._current = self._state()
        if self._current.get("no_driver"):
            raise _nvml_error("NVML_ERROR_DRIVER_NOT_LOADED", 9)

    def nvmlShutdown(self) -> None:
        self._current = {}

    def nvmlSystemGetDriverVersion(self) -> str:
        return self._current.get("driver", "fake")

    def nvmlDeviceGetCount(self) -> int:
        return len(self._current.get("gpus", []))

    def nvmlDeviceGetHandleByIndex(self, index: int) -> dict[str, Any]:
        return self._current["gpus"][index]

    def nvmlDeviceGetName(self, gpu: dict[str, Any]) -> str:
        return gpu.get("name", "Fake GPU")

    def nvmlDeviceGetUUID(self, gpu: dict[str, Any]) -> str:
        return gpu.get("uuid", "GPU-00000000")

    def nvmlDeviceGetMemoryInfo(self, gpu: dict[str, Any]) -> SimpleNamespace:
        return SimpleNamespace(total=gpu["total"], used=gpu["used"], free=gpu["total"] - gpu["used"])

    def nvmlDeviceGetUtilizationRates(self, gpu: dict[str, Any]) -> SimpleNamespace:
        if gpu.get("utilization") is None:
            raise _nvml_error("NVML_ERROR_NOT_SUPPORTED", 3)
        return SimpleNamespace(gpu=gpu["utilization"], memory=0)

    def nvmlDeviceGetTemperature(self, gpu: dict[str, Any], _sensor: int) -> int:
        return gpu.get("temperature", 40)

    def nvmlDeviceGetPowerUsage(self, gpu: dict[str, Any]) -> int:
        return gpu.get("power_mw", 100000)

    def nvmlDeviceGetComputeRunningProcesses(self, gpu: dict[str, Any]) -> list[SimpleNamespace]:
        return [SimpleNamespace(pid=p["pid"], usedGpuMemory=p.get("used"))
                for p in gpu.get("processes", [])]

    def zmm_process_name(self, pid: int) -> str | None:
        """Process names travel in the state, since the pids are not real."""
        for gpu in self._current.get("gpus", []) or self._state().get("gpus", []):
            for process in gpu.get("processes", []):
                if process["pid"] == pid:
                    return process.get("name")
        return None


def FileNvml(path: Path) -> StateNvml:  # noqa: N802 - reads like the class it returns
    return StateNvml(lambda: json.loads(path.read_text()))
