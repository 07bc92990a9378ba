"""Fixtures for `zmm serve` and `zmm mcp`: a fake ComfyUI, a real worker process,
and a server on a free port of 127.0.0.1 with a token."""

from __future__ import annotations

import socket

import pytest

from tests.conftest import LiveProcess, closed_url, run_zmm, wait_until
from tests.fakes.comfyui import FakeComfyUI

pytest.importorskip("starlette")
pytest.importorskip("mcp")


@pytest.fixture
def comfy(tmp_path):
    fake = FakeComfyUI(step_time=0.01, output_dir=tmp_path / "comfy-output")
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def serve_env(home, comfy, monkeypatch):
    """Real `zmm` subprocesses pointed at the fake ComfyUI."""
    monkeypatch.setenv("ZMM_COMFYUI_URL", comfy.url)
    monkeypatch.setenv("ZMM_WORKER_POLL_S", "0.05")
    monkeypatch.setenv("ZMM_COMFYUI_RETRY_MAX_S", "0.5")
    monkeypatch.setenv("ZMM_OLLAMA_URL", closed_url())  # never the default port
    return {"ZMM_HOME": str(home), "ZMM_COMFYUI_URL": comfy.url}


@pytest.fixture
def worker(serve_env):
    process = LiveProcess("serve-worker", "--no-progress")
    try:
        yield process
    finally:
        process.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_token(*args: str) -> tuple[str, str]:
    """(token, id) of a new token."""
    import json

    result = run_zmm("serve", "token", "create", *args, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    return data["token"], data["id"]


class Server:
    def __init__(self, process: LiveProcess, url: str, token: str) -> None:
        self.process, self.url, self.token = process, url, token

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def server(serve_env):
    import httpx

    token, _ = make_token("tests")
    port = free_port()
    process = LiveProcess("serve", "--port", str(port))
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(url + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(healthy, timeout=30, message=f"zmm serve on {url}; {process.stderr[-5:]}")
        yield Server(process, url, token)
    finally:
        process.stop()
