"""Fake NVML for tests: the pynvml-shaped `StateNvml` backend reading the
shared VRAM ledger, in-process or (through $ZMM_TEST_NVML) from a JSON file
the ledger rewrites on every change, for `zmm` subprocesses."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tests.fakes.vram import VramLedger
from zmm.nvml_file import StateNvml


def ledger_state(ledger: VramLedger, *, name: str = "NVIDIA GeForce RTX 4090") -> dict[str, Any]:
    return {"driver": "580.95.05", "gpus": [{
        "name": name, "uuid": "GPU-5f2e1c3a-0000-4000-8000-000000000001", "total": ledger.total,
        "used": ledger.used, "utilization": 37, "temperature": 51, "power_mw": 215000,
        "processes": [{"pid": pid, "used": nbytes, "name": process}
                      for pid, process, nbytes in ledger.processes()]}]}


def fake_nvml(ledger: VramLedger) -> StateNvml:
    return StateNvml(lambda: ledger_state(ledger))


def no_driver() -> StateNvml:
    return StateNvml(lambda: {"no_driver": True})


def persist(ledger: VramLedger, path: Path) -> Path:
    """Keep `path` a current JSON picture of the ledger (atomic rewrites)."""
    def write(current: VramLedger) -> None:
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(ledger_state(current)))
        os.replace(temporary, path)

    ledger.listeners.append(write)
    write(ledger)
    return path


def write_no_driver(path: Path) -> Path:
    path.write_text(json.dumps({"no_driver": True}))
    return path
