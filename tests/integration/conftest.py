"""Fixtures for tests against fake servers on 127.0.0.1."""

from __future__ import annotations

import pytest


@pytest.fixture
def comfy_options() -> dict:
    """Jobs here take a little time on the fake ComfyUI, as real ones do."""
    return {"step_time": 0.01}


@pytest.fixture
def worker_env(home, comfy, monkeypatch):
    """Environment for real `zmm` subprocesses pointed at the fake ComfyUI."""
    monkeypatch.setenv("ZMM_WORKER_POLL_S", "0.05")
    monkeypatch.setenv("ZMM_COMFYUI_RETRY_MAX_S", "0.5")
    return {"ZMM_HOME": str(home), "ZMM_COMFYUI_URL": comfy.url}
