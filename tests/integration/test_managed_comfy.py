"""Managed mode end to end: real `zmm serve-worker --launch` processes starting
the fake ComfyUI as a separate process (python -m tests.fakes.comfyui)."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys

import pytest

from tests.conftest import ROOT, LiveProcess, run_zmm
from zmm.store import Store
from zmm.worker import child

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(sys.platform == "win32", reason="POSIX process groups")]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def fake_command(port: int) -> str:
    return f"{shlex.quote(sys.executable)} -m tests.fakes.comfyui --port {port}"


def worker_env(port: int) -> dict:
    return {"ZMM_COMFYUI_URL": f"http://127.0.0.1:{port}", "ZMM_OLLAMA_ENABLED": "false"}


def queue_one(settings) -> str:
    queued = run_zmm("generate", "--no-wait", "a lighthouse", "--quality", "draft")
    assert queued.returncode == 0, queued.stderr
    return queued.stdout.strip()


def test_once_launches_comfyui_runs_the_job_and_stops_it(settings):
    port = free_port()
    job_id = queue_one(settings)
    result = run_zmm("serve-worker", "--once", "--no-progress", "--launch", fake_command(port),
                     env=worker_env(port))
    assert result.returncode == 0, result.stderr
    assert "started ComfyUI (pid" in result.stderr
    with Store(settings.spool_path) as store:
        job = store.get(job_id)
    assert job.status == "succeeded"
    assert len(list(settings.assets_dir.rglob(f"{job_id}*.png"))) == 1
    assert not (settings.home / "run" / f"comfyui-{port}.pid").exists()
    assert (settings.home / "logs" / f"comfyui-{port}.log").exists()
    with socket.socket() as again:  # nothing listens on the port any more
        assert again.connect_ex(("127.0.0.1", port)) != 0


def test_an_externally_started_server_is_used_and_never_killed(settings):
    port = free_port()
    external = subprocess.Popen(shlex.split(fake_command(port)), cwd=ROOT,
                                stdout=subprocess.PIPE, text=True)
    try:
        assert external.stdout is not None and external.stdout.readline().startswith("http")
        queue_one(settings)
        result = run_zmm("serve-worker", "--once", "--no-progress", "--launch",
                         fake_command(port), env=worker_env(port))
        assert result.returncode == 0, result.stderr
        assert "already answers" in result.stderr
        assert "started ComfyUI" not in result.stderr
        assert external.poll() is None
    finally:
        external.terminate()
        external.wait(timeout=10)


def leftover_of(settings, port: int) -> child.PidRecord:
    """Start a managed worker, kill it with -9, and return the child it left."""
    pid_path = settings.home / "run" / f"comfyui-{port}.pid"
    worker = LiveProcess("serve-worker", "--no-progress", "--launch", fake_command(port),
                         env=worker_env(port))
    worker.wait_for_line("connected to ComfyUI")
    record = child.read_pid_file(pid_path)
    assert record is not None
    worker.kill()
    worker.wait()
    assert record.running()  # the child outlives a worker killed with -9
    return record


def test_a_new_worker_adopts_a_live_orphan_and_stops_it_when_it_stops(settings):
    port = free_port()
    orphan = leftover_of(settings, port)
    worker = LiveProcess("serve-worker", "--no-progress", "--launch", fake_command(port),
                         env=worker_env(port))
    try:
        worker.wait_for_line(f"adopted the ComfyUI (pid {orphan.pid})")
        worker.wait_for_line("connected to ComfyUI")
        assert orphan.running()
        worker.signal(signal.SIGTERM)
        assert worker.wait() == 0
        assert not orphan.running()
    finally:
        if orphan.running():
            os.killpg(orphan.pid, signal.SIGKILL)


def test_a_new_worker_ends_a_hung_orphan_and_launches_its_own(settings):
    port = free_port()
    orphan = leftover_of(settings, port)
    os.kill(orphan.pid, signal.SIGSTOP)  # still there, answering nothing
    worker = LiveProcess("serve-worker", "--no-progress", "--launch", fake_command(port),
                         env=worker_env(port))
    try:
        worker.wait_for_line("does not answer", timeout=30)
        worker.wait_for_line("connected to ComfyUI", timeout=30)
        assert not orphan.running()
        fresh = child.read_pid_file(settings.home / "run" / f"comfyui-{port}.pid")
        assert fresh is not None and fresh.pid != orphan.pid
        worker.signal(signal.SIGTERM)
        assert worker.wait() == 0
        assert not fresh.running()
    finally:
        if orphan.running():
            os.killpg(orphan.pid, signal.SIGKILL)
