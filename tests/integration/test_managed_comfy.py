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

from tests.conftest import ROOT, LiveProcess, run_zmm, wait_until
from zmm.store import Store
from zmm.worker.managed import child

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(sys.platform == "win32", reason="POSIX process groups")]


@pytest.fixture(autouse=True)
def no_leftovers(settings):
    """Whatever a failing test leaves: its workers, then the children they started."""
    yield
    for worker in list(LIVE):
        if worker.process.poll() is None:
            worker.kill()
            worker.wait()
    LIVE.clear()
    for pid_file in (settings.home / "run").glob("comfyui-*.pid"):
        record = child.read_pid_file(pid_file)
        if record is not None and record.running():
            os.killpg(record.pid, signal.SIGCONT)
            os.killpg(record.pid, signal.SIGKILL)


LIVE: list[LiveProcess] = []


def managed_worker(*args: str, port: int) -> LiveProcess:
    worker = LiveProcess("serve-worker", "--no-progress", *args, env=worker_env(port))
    LIVE.append(worker)
    return worker


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
    worker = managed_worker("--launch", fake_command(port), port=port)
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
    worker = managed_worker("--launch", fake_command(port), port=port)
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
    worker = managed_worker("--launch", fake_command(port), port=port)
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


def job_of(settings, job_id: str):
    with Store(settings.spool_path) as store:
        return store.get(job_id)


def sampling(settings, job_id: str):
    job = job_of(settings, job_id)
    return job.status == "running" and job.progress_value  # ComfyUI is executing it


def kill_child_mid_job(settings, port: int, job_id: str, previous: int | None = None) -> int:
    """SIGKILL the managed child once it runs the job; its pid."""
    pid_path = settings.home / "run" / f"comfyui-{port}.pid"
    record = wait_until(lambda: (r := child.read_pid_file(pid_path)) and r.pid != previous and r,
                        timeout=30, message="a (new) managed child")
    wait_until(lambda: sampling(settings, job_id), timeout=30, message="the job sampling")
    os.kill(record.pid, signal.SIGKILL)
    return record.pid


def test_a_crash_mid_job_restarts_comfyui_and_the_job_runs_again_once(settings):
    port = free_port()
    job_id = queue_one(settings)
    worker = managed_worker("--once", "--launch", fake_command(port) + " --step-time 0.1",
                            port=port)
    kill_child_mid_job(settings, port, job_id)
    worker.wait_for_line("exited with signal 9 (SIGKILL)")
    worker.wait_for_line("restarted ComfyUI (restart 1")
    assert worker.wait(timeout=60) == 0, worker.stderr
    job = job_of(settings, job_id)
    assert job.status == "succeeded" and job.attempts == 0
    assert len(list(settings.assets_dir.rglob(f"{job_id}*.png"))) == 1
    with Store(settings.spool_path) as store:
        record = store.get_state(f"comfyui:http://127.0.0.1:{port}")
        kinds = [event["kind"] for event in store.events(job_id)]
    assert record["restarts"] == 1 and "SIGKILL" in record["last_exit"]
    assert "comfyui-exited" in kinds
    doctor = run_zmm("doctor", env=worker_env(port))
    line = next(line for line in doctor.stdout.splitlines() if "comfyui-managed" in line)
    assert "1 restart," in line and "signal 9 (SIGKILL)" in line


def test_a_job_running_during_two_crashes_fails_instead_of_crash_looping(settings):
    port = free_port()
    job_id = queue_one(settings)
    worker = managed_worker("--once", "--launch", fake_command(port) + " --step-time 0.1",
                            port=port)
    first = kill_child_mid_job(settings, port, job_id)
    worker.wait_for_line("restarted ComfyUI (restart 1")
    kill_child_mid_job(settings, port, job_id, previous=first)
    assert worker.wait(timeout=60) == 1
    job = job_of(settings, job_id)
    assert job.status == "failed"
    assert "ComfyUI crashed twice while running this job" in job.error_message
    assert not list(settings.assets_dir.rglob(f"{job_id}*.png"))


# timeout_s too: a SIGSTOP right after "connected" can catch the worker's first
# GET /queue, which waits that long before the connection counts as lost.
HANG_ENV = {"ZMM_COMFYUI_HANG_S": "1.5", "ZMM_COMFYUI_HEALTH_S": "0.3",
            "ZMM_COMFYUI_TIMEOUT_S": "2"}


def test_a_child_stopped_mid_job_is_found_hung_ended_and_the_job_runs_again(settings, monkeypatch):
    for name, value in HANG_ENV.items():
        monkeypatch.setenv(name, value)
    port = free_port()
    job_id = queue_one(settings)
    worker = managed_worker("--once", "--launch", fake_command(port) + " --step-time 0.1",
                            port=port)
    pid_path = settings.home / "run" / f"comfyui-{port}.pid"
    record = wait_until(lambda: child.read_pid_file(pid_path), timeout=30)
    wait_until(lambda: sampling(settings, job_id), timeout=30, message="the job sampling")
    os.kill(record.pid, signal.SIGSTOP)
    worker.wait_for_line("no answer from /system_stats", timeout=30)
    worker.wait_for_line("restarted ComfyUI (restart 1")
    assert worker.wait(timeout=60) == 0, worker.stderr
    assert not record.running()
    job = job_of(settings, job_id)
    assert job.status == "succeeded" and job.attempts == 0
    assert len(list(settings.assets_dir.rglob(f"{job_id}*.png"))) == 1


def test_an_idle_child_that_stops_answering_is_ended_and_started_again(settings, monkeypatch):
    for name, value in HANG_ENV.items():
        monkeypatch.setenv(name, value)
    port = free_port()
    worker = managed_worker("--launch", fake_command(port), port=port)
    worker.wait_for_line("connected to ComfyUI")
    record = child.read_pid_file(settings.home / "run" / f"comfyui-{port}.pid")
    assert record is not None
    os.kill(record.pid, signal.SIGSTOP)
    worker.wait_for_line("3 health checks in a row failed", timeout=30)
    worker.wait_for_line("restarted ComfyUI (restart 1", timeout=30)
    assert not record.running()
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


def test_an_idle_hang_is_caught_near_three_health_periods_not_the_http_timeout(settings,
                                                                              monkeypatch):
    """comfyui.timeout_s stays at its 30 s default: no probe may wait that long
    (docs/managed-comfyui.md gives the bound this measures)."""
    import time

    monkeypatch.setenv("ZMM_COMFYUI_HEALTH_S", "1")
    port = free_port()
    worker = managed_worker("--launch", fake_command(port), port=port)
    worker.wait_for_line("connected to ComfyUI")
    record = child.read_pid_file(settings.home / "run" / f"comfyui-{port}.pid")
    assert record is not None

    def idle_and_up() -> bool:  # past connecting: its file lists read, its row written up
        with Store(settings.spool_path) as store:
            row = store.conn.execute("SELECT state, files_at FROM backends").fetchone()
        return row is not None and row[0] == "up" and row[1] is not None

    wait_until(idle_and_up, timeout=30)
    stopped = time.monotonic()
    os.kill(record.pid, signal.SIGSTOP)
    worker.wait_for_line("3 health checks in a row failed", timeout=60)
    caught_s = time.monotonic() - stopped
    print(f"idle hang caught after {caught_s:.1f} s")
    # 3 x health_s, plus per loop turn one 1 s health probe and one 5 s status ping
    assert caught_s < 3 * 1 + 3 * (1 + 5) + 5, caught_s
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


def test_once_after_a_crash_loop_exits_4_saying_why(settings, tmp_path):
    """The first child answers and is killed mid-job; every child started after it
    exits 1 at once. After comfyui.max_quick_exits quick exits zmm stops restarting
    it, and --once exits 4 with that reason, not the refused connection."""
    port = free_port()
    job_id = queue_one(settings)
    marker = tmp_path / "started-once"
    script = tmp_path / "comfyui.sh"
    script.write_text(f"test -e {shlex.quote(str(marker))} && exit 1\n"
                      f"touch {shlex.quote(str(marker))}\n"
                      f"exec {fake_command(port)} --step-time 0.1\n")
    worker = LiveProcess("serve-worker", "--no-progress", "--once", "--launch",
                         f"sh {shlex.quote(str(script))}",
                         env={**worker_env(port), "ZMM_COMFYUI_MAX_QUICK_EXITS": "2"})
    LIVE.append(worker)
    kill_child_mid_job(settings, port, job_id)
    assert worker.wait(timeout=60) == 4, worker.stderr
    error = [line for line in worker.stderr if line.startswith("error: ")]
    assert len(error) == 1 and "comfyui.max_quick_exits" in error[0], worker.stderr
    assert "exited 2 times in a row" in error[0] and "connection refused" not in error[0]
    job = job_of(settings, job_id)
    assert job.status == "queued" and job.attempts == 0  # back to the queue, for later
