"""Fake NVML for tests, reading the shared VRAM ledger: in-process through
`gpu.use_backend(fake_nvml(ledger))`, and for `zmm` subprocesses through
$ZMM_TEST_NVML naming a JSON file that `LedgerFile` rewrites on every ledger
change. Errors are pynvml's own NVMLError classes, so zmm's handling is real."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, Self

import pynvml

from tests.fakes.nvml_state import StateNvml
from tests.fakes.vram import VramLedger

GPU_NAME = "NVIDIA GeForce RTX 4090"
GPU_UUID = "GPU-5f2e1c3a-0000-4000-8000-000000000001"
DRIVER = "580.95.05"


def ledger_state(ledger: VramLedger, *, name: str = GPU_NAME, utilization: int | None = 37,
                 temperature: int | None = 51, power_mw: int | None = 215000) -> dict[str, Any]:
    """The state `StateNvml` reads (see tests/fakes/nvml_state.py) for one GPU = the ledger.
    A None reading is one the GPU does not support."""
    processes = ledger.processes()  # one locked read; `used` is derived from it
    used = ledger.reserved + sum(nbytes for _, _, nbytes in processes)
    return {"driver": DRIVER, "gpus": [{
        "name": name, "uuid": GPU_UUID, "total": ledger.total, "used": used,
        "utilization": utilization, "temperature": temperature, "power_mw": power_mw,
        "processes": [{"pid": pid, "used": nbytes, "name": process}
                      for pid, process, nbytes in processes]}]}


class LedgerNvml(StateNvml):
    """StateNvml whose unsupported readings raise NVMLError_NotSupported, as a real
    GPU without a sensor does (StateNvml itself does so for utilization only)."""

    def nvmlDeviceGetTemperature(self, gpu: dict[str, Any], sensor: int) -> int:
        return _supported(gpu.get("temperature"))

    def nvmlDeviceGetPowerUsage(self, gpu: dict[str, Any]) -> int:
        return _supported(gpu.get("power_mw"))


def _supported(value: Any) -> Any:
    if value is None:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
    return value


def fake_nvml(ledger: VramLedger, **readings: Any) -> StateNvml:
    """A pynvml-shaped backend showing `ledger` as GPU 0, read afresh at every nvmlInit."""
    return LedgerNvml(lambda: ledger_state(ledger, **readings))


def gpus_state(*ledgers: VramLedger) -> dict[str, Any]:
    """Several GPUs, one per ledger, NVML index = position (each its own uuid)."""
    gpus = []
    for index, ledger in enumerate(ledgers):
        (card,) = ledger_state(ledger)["gpus"]
        gpus.append(dict(card, uuid=f"{GPU_UUID[:-2]}{index + 1:02d}"))
    return {"driver": DRIVER, "gpus": gpus}


def fake_nvml_gpus(*ledgers: VramLedger) -> StateNvml:
    """A pynvml-shaped backend showing each ledger as one GPU (index 0, 1, ...)."""
    return LedgerNvml(lambda: gpus_state(*ledgers))


def no_driver() -> StateNvml:
    """nvmlInit raises NVMLError_DriverNotLoaded (code 9), as on a machine without a driver."""
    return StateNvml(lambda: {"no_driver": True})


class LedgerFile:
    """Keeps `path` a current JSON picture of the ledger for $ZMM_TEST_NVML, by
    subscribing to the ledger's listeners. Writes are serialised and atomic
    (temp file + os.replace), and each write reads the ledger inside the lock,
    so the last write always shows the latest state even when the fake Ollama
    and fake ComfyUI threads change the ledger at once."""

    def __init__(self, ledger: VramLedger, path: Path, **readings: Any) -> None:
        self.ledger, self.path, self.readings = ledger, Path(path), readings
        self._lock = threading.Lock()
        ledger.listeners.append(self._write)
        self._write(ledger)

    def _write(self, _ledger: VramLedger) -> None:
        with self._lock:
            temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            temporary.write_text(json.dumps(ledger_state(self.ledger, **self.readings)))
            os.replace(temporary, self.path)

    def close(self) -> None:
        """Stop following the ledger (the file keeps its last state)."""
        if self._write in self.ledger.listeners:
            self.ledger.listeners.remove(self._write)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def persist(ledger: VramLedger, path: Path) -> Path:
    """Follow `ledger` into `path` for the ledger's lifetime; returns `path`."""
    return LedgerFile(ledger, path).path


def write_no_driver(path: Path) -> Path:
    path.write_text(json.dumps({"no_driver": True}))
    return path
