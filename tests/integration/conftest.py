"""Fixtures for tests against fake servers on 127.0.0.1."""

from __future__ import annotations

import pytest

from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.openai_images import FakeOpenAI
from tests.fakes.stability import FakeStability


@pytest.fixture
def comfy(tmp_path):
    fake = FakeComfyUI(step_time=0.01, output_dir=tmp_path / "comfy-output")
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def worker_env(home, comfy, monkeypatch):
    """Environment for real `zmm` subprocesses pointed at the fake ComfyUI."""
    monkeypatch.setenv("ZMM_COMFYUI_URL", comfy.url)
    monkeypatch.setenv("ZMM_WORKER_POLL_S", "0.05")
    monkeypatch.setenv("ZMM_COMFYUI_RETRY_MAX_S", "0.5")
    return {"ZMM_HOME": str(home), "ZMM_COMFYUI_URL": comfy.url}


@pytest.fixture
def stability():
    with FakeStability() as fake:
        yield fake


@pytest.fixture
def openai():
    with FakeOpenAI() as fake:
        yield fake
