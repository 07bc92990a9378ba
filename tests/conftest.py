"""Shared fixtures. Every test is isolated by default (`isolated`, autouse): ComfyUI,
Ollama and the cloud APIs are ports nothing listens on, NVML has no driver, $HOME is
empty and no ZMM_* variable or cloud key of the developer's shell is seen, in the test
and in every process it starts. A test opts in to a fake through its fixture (`comfy`,
an `ollama` fixture, `gpu.use_backend(...)` or $ZMM_TEST_NVML), which overrides that.
`home` adds a temporary $ZMM_HOME with a real spool."""

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
from tests.fakes.nvml import write_no_driver
from tests.fakes.nvml_state import FileNvml
from zmm.backends import gpu
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
# The servers zmm talks to, each pointed at a closed port unless a test asks for a fake.
SERVER_URL_ENV = ("ZMM_COMFYUI_URL", "ZMM_OLLAMA_URL", "ZMM_STABILITY_URL", "ZMM_OPENAI_URL")

_held_ports: list[socket.socket] = []


def closed_url() -> str:
    """The URL of a port on 127.0.0.1 that refuses connections: bound but never
    listened on, and held until the test ends, so no server the test starts can
    be given it meanwhile."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    _held_ports.append(holder)
    return f"http://127.0.0.1:{holder.getsockname()[1]}"


@pytest.fixture(autouse=True)
def isolated(tmp_path_factory, monkeypatch):
    """Every test, and every process it starts, sees no server, GPU or home of the
    machine it runs on (see the module's docstring)."""
    for name in list(os.environ):
        if name.startswith(("ZMM_", "XDG_")) or name in CLOUD_KEYS:
            monkeypatch.delenv(name)  # a developer's real settings and keys never reach a test
    place = tmp_path_factory.mktemp("isolated")
    (place / "home").mkdir()
    monkeypatch.setenv("HOME", str(place / "home"))
    for name in SERVER_URL_ENV:
        monkeypatch.setenv(name, closed_url())
    no_driver = write_no_driver(place / "nvml.json")
    monkeypatch.setenv(TEST_NVML_ENV, str(no_driver))
    try:
        with gpu.use_backend(FileNvml(no_driver)):
            yield
    finally:
        while _held_ports:
            _held_ports.pop().close()


@pytest.fixture
def real_nvml():
    """The machine's own NVML (pynvml and its driver, if any), for the tests of it."""
    with gpu.use_backend(None):
        yield


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "zmm-home"
    monkeypatch.setenv("ZMM_HOME", str(path))
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
def make_comfy(tmp_path):
    """Start fake ComfyUIs (tests/fakes/comfyui.py) on 127.0.0.1, stopped after the test."""
    from tests.fakes.comfyui import FakeComfyUI

    started: list[FakeComfyUI] = []

    def make(**options) -> FakeComfyUI:
        options.setdefault("output_dir", tmp_path / f"comfy-output-{len(started)}")
        started.append(FakeComfyUI(**options).start())
        return started[-1]

    yield make
    for fake in started:
        fake.stop()


@pytest.fixture
def comfy_options() -> dict:
    """The `comfy` fixture's FakeComfyUI arguments; a folder or module overrides this
    fixture, a test passes its own through `parametrize("comfy", [{...}], indirect=True)`."""
    return {}


@pytest.fixture
def comfy(request, make_comfy, comfy_options, monkeypatch):
    """The fake ComfyUI, and $ZMM_COMFYUI_URL (of this test and its processes) on it."""
    fake = make_comfy(**{**comfy_options, **getattr(request, "param", {})})
    monkeypatch.setenv("ZMM_COMFYUI_URL", fake.url)
    return fake


@pytest.fixture
def stability():
    """The fake Stability AI (tests/fakes/stability.py); its URL is the test's to pass."""
    from tests.fakes.stability import FakeStability

    with FakeStability() as fake:
        yield fake


@pytest.fixture
def openai():
    """The fake OpenAI Images API (tests/fakes/openai_images.py)."""
    from tests.fakes.openai_images import FakeOpenAI

    with FakeOpenAI() as fake:
        yield fake


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

    def stop(self, timeout: float = 20.0) -> None:
        """Ctrl-C, then a kill if it has not exited within `timeout`."""
        self.signal(2)
        try:
            self.wait(timeout=timeout)
        except Exception:
            self.kill()

    def wait(self, timeout: float = 30.0) -> int:
        code = self.process.wait(timeout=timeout)
        for thread in self._threads:
            thread.join(timeout=5)
        return code
