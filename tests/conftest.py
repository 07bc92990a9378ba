"""Shared fixtures: every test gets its own temporary $ZMM_HOME and real spool."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.clocks import FakeClock
from zmm.cli import app
from zmm.config import load
from zmm.store import Store

ROOT = Path(__file__).resolve().parent.parent
# Every Python process a test starts imports this tree and tests/seams/sitecustomize.py
# (the $ZMM_TEST_NVML fake GPU): the seams live here, not in zmm.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT / "tests" / "seams"), str(ROOT)]
    + [part for part in os.environ.get("PYTHONPATH", "").split(os.pathsep)
       if part and part not in (str(ROOT / "tests" / "seams"), str(ROOT))])
TEST_NVML_ENV = "ZMM_TEST_NVML"  # read by tests/seams/sitecustomize.py
CLOUD_KEYS = ("STABILITY_API_KEY", "OPENAI_API_KEY")


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "zmm-home"
    monkeypatch.setenv("ZMM_HOME", str(path))
    for name in list(os.environ):
        if (name.startswith("ZMM_") and name != "ZMM_HOME") or name in CLOUD_KEYS:
            monkeypatch.delenv(name)  # a developer's real keys must never reach a test
    monkeypatch.setenv("NO_COLOR", "1")
    return path


@pytest.fixture
def settings(home):
    return load(home)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def spool(settings, clock):
    """A real spool whose time is the test's `clock`."""
    with Store(settings.spool_path, clock=clock) as opened:
        yield opened


@pytest.fixture
def store(settings):
    with Store(settings.spool_path) as opened:
        yield opened


class Cli:
    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: str, input: str | None = None):
        return self.runner.invoke(app, list(args), input=input, catch_exceptions=False)

    def json(self, *args: str):
        result = self(*args)
        assert result.exit_code == 0, result.stderr
        return json.loads(result.stdout)


@pytest.fixture
def comfy(tmp_path):
    """A fake ComfyUI on 127.0.0.1 (tests/fakes/comfyui.py), stopped after the test."""
    from tests.fakes.comfyui import FakeComfyUI

    fake = FakeComfyUI(output_dir=tmp_path / "comfy-output").start()
    try:
        yield fake
    finally:
        fake.stop()


def closed_url() -> str:
    """The URL of a port on 127.0.0.1 nothing listens on (bound once, then freed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def drive(worker, until, timeout: float = 20.0) -> None:
    """Turn an in-memory worker's loop until `until()` holds (or fail at the deadline)."""
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "condition not reached"
        worker.run_once()


@pytest.fixture
def cli(home) -> Cli:
    return Cli()


def zmm_process(*args: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    """A real `zmm` process (python -m zmm) with the test's environment."""
    return subprocess.Popen([sys.executable, "-m", "zmm", *args], cwd=ROOT,
                            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def run_zmm(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zmm", *args], cwd=ROOT,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)


def wait_until(condition, timeout: float = 10.0, interval: float = 0.02, message: str = ""):
    """Poll `condition` until it returns something truthy, or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message or condition}")
        time.sleep(interval)


class LiveProcess:
    """A running `zmm` process whose output lines are collected as they come."""

    def __init__(self, *args: str, env: dict | None = None) -> None:
        import threading

        self.process = zmm_process(*args, env=env)
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._threads = [threading.Thread(target=self._pump, args=(stream, sink), daemon=True)
                         for stream, sink in ((self.process.stdout, self.stdout),
                                              (self.process.stderr, self.stderr))]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _pump(stream, sink: list[str]) -> None:
        for line in stream:
            sink.append(line)

    def wait_for_line(self, text: str, timeout: float = 20.0) -> str:
        return wait_until(lambda: next((line for line in self.stderr if text in line), None),
                          timeout=timeout, message=f"a stderr line with {text!r}; got {self.stderr[-5:]}")

    def signal(self, number: int) -> None:
        self.process.send_signal(number)

    def kill(self) -> None:
        self.process.kill()

    def wait(self, timeout: float = 30.0) -> int:
        code = self.process.wait(timeout=timeout)
        for thread in self._threads:
            thread.join(timeout=5)
        return code
