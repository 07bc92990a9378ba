"""The Supervisor and its process helpers, with real child processes (small
Python sleepers) and an injected probe standing in for /system_stats."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

import pytest

from tests.clocks import FakeClock
from tests.conftest import wait_until
from zmm.errors import ComfyUnavailable
from zmm.worker.managed import child
from zmm.worker.managed.supervisor import ManagedSettings, Supervisor, exit_reason
from zmm.worker.managed.watch import CrashGuard

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX process groups")

PY = shlex.quote(sys.executable)
SLEEPER = f"{PY} -c 'import time; time.sleep(60)'"
URL = "http://127.0.0.1:18999"


def managed(command: str = SLEEPER, **changes) -> ManagedSettings:
    values = dict(url=URL, command=command, cwd="", env={}, start_timeout_s=5.0,
                  stop_grace_s=2.0, log_max_bytes=1_000_000)
    values.update(changes)
    return ManagedSettings(**values)


class Probe:
    """/system_stats as the test decides: `answers` (a bool or a callable)."""

    def __init__(self, answers=False) -> None:
        self.answers, self.calls = answers, 0

    def __call__(self, url: str) -> bool:
        self.calls += 1
        return self.answers() if callable(self.answers) else self.answers


def own_session_sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                            start_new_session=True)


def test_start_time_tells_a_live_process_from_a_reused_pid():
    mine = child.process_start(os.getpid())
    assert mine is not None
    assert child.PidRecord(os.getpid(), mine, "", "").running()
    assert not child.PidRecord(os.getpid(), str(int(mine) + 1), "", "").running()
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    assert child.process_start(process.pid) is None


def test_the_log_rotates_past_its_limit_in_place(tmp_path):
    log = tmp_path / "comfyui-1.log"
    log.write_bytes(b"x" * 100)
    assert not child.rotate_log(log, 100)
    with log.open("ab", buffering=0) as appending:  # as the child holds it
        appending.write(b"y")
        assert child.rotate_log(log, 100)
        appending.write(b"after")
    assert (tmp_path / "comfyui-1.log.1").read_bytes() == b"x" * 100 + b"y"
    assert log.read_bytes() == b"after"


def test_a_server_that_already_answers_is_used_and_never_stopped(tmp_path):
    notices: list[str] = []
    supervisor = Supervisor(managed(), tmp_path, notice=notices.append, probe=Probe(True))
    assert supervisor.start() == "external"
    assert supervisor.stop() is None
    assert not supervisor.pid_path.exists()
    assert "launching nothing" in notices[0]


def test_a_launched_child_is_recorded_and_ended_with_its_group(tmp_path):
    process_started = lambda: child.read_pid_file(tmp_path / "run" / "comfyui-18999.pid")  # noqa: E731
    supervisor = Supervisor(managed(), tmp_path, probe=Probe(lambda: process_started() is not None))
    assert supervisor.start() == "launched"
    record = child.read_pid_file(supervisor.pid_path)
    assert record is not None and record.running()
    assert os.getpgid(record.pid) == record.pid  # its own process group
    assert supervisor.stop() == "ended"
    assert not record.running()
    assert not supervisor.pid_path.exists()
    assert supervisor.log_path.exists()


def test_a_child_that_exits_while_starting_is_reported_with_its_code(tmp_path):
    supervisor = Supervisor(managed(f"{PY} -c 'raise SystemExit(3)'"), tmp_path, probe=Probe())
    with pytest.raises(ComfyUnavailable, match="exit code 3 before answering"):
        supervisor.start()
    assert not supervisor.pid_path.exists()


def test_a_child_that_never_answers_is_ended_at_the_start_timeout(tmp_path):
    supervisor = Supervisor(managed(start_timeout_s=0.3), tmp_path, probe=Probe())
    with pytest.raises(ComfyUnavailable, match="no answer within 0.3 s"):
        supervisor.start()
    assert supervisor.owned is None and not supervisor.pid_path.exists()


def test_a_sigterm_ignoring_child_is_killed_after_the_grace_period(tmp_path):
    stubborn = (f"{PY} -c 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "print(1, flush=True); time.sleep(60)'")
    log = tmp_path / "logs" / "comfyui-18999.log"
    supervisor = Supervisor(managed(stubborn, stop_grace_s=0.3), tmp_path,
                            probe=Probe(lambda: log.exists() and log.read_text() != ""))
    supervisor.start()
    assert supervisor.stop() == "killed"


def test_a_live_leftover_that_answers_is_adopted_and_stopped_later(tmp_path):
    orphan = own_session_sleeper()
    try:
        started = wait_until(lambda: child.process_start(orphan.pid))
        child.write_pid_file(tmp_path / "run" / "comfyui-18999.pid",
                             child.PidRecord(orphan.pid, started, SLEEPER, URL))
        supervisor = Supervisor(managed(), tmp_path, probe=Probe(True))
        assert supervisor.start() == "adopted"
        assert supervisor.stop() == "ended"
        wait_until(lambda: orphan.poll() is not None)
    finally:
        orphan.kill()
        orphan.wait()


def test_a_leftover_that_does_not_answer_is_ended_and_a_new_one_launched(tmp_path):
    orphan = own_session_sleeper()
    try:
        started = wait_until(lambda: child.process_start(orphan.pid))
        pid_path = tmp_path / "run" / "comfyui-18999.pid"
        child.write_pid_file(pid_path, child.PidRecord(orphan.pid, started, SLEEPER, URL))
        answers = iter([False, False, True])  # the leftover, before launching, the new one
        supervisor = Supervisor(managed(), tmp_path, probe=Probe(lambda: next(answers)))
        assert supervisor.start() == "launched"
        wait_until(lambda: orphan.poll() is not None)
        record = child.read_pid_file(pid_path)
        assert record is not None and record.pid != orphan.pid
        supervisor.stop()
    finally:
        orphan.kill()
        orphan.wait()


def test_a_pid_file_naming_another_process_is_never_acted_on(tmp_path):
    stranger = own_session_sleeper()  # alive, with the recorded pid but another start time
    try:
        started = wait_until(lambda: child.process_start(stranger.pid))
        pid_path = tmp_path / "run" / "comfyui-18999.pid"
        child.write_pid_file(pid_path, child.PidRecord(stranger.pid, str(int(started) - 1),
                                                       SLEEPER, URL))
        supervisor = Supervisor(managed(), tmp_path, probe=Probe(True))
        assert supervisor.start() == "external"
        assert supervisor.stop() is None
        assert stranger.poll() is None
        assert not pid_path.exists()
    finally:
        stranger.kill()
        stranger.wait()


def test_exit_reasons_in_words():
    assert exit_reason(1) == "exit code 1"
    assert exit_reason(-9) == "signal 9 (SIGKILL)"


def test_a_crashed_child_is_started_again_after_a_doubling_backoff(tmp_path):
    clock = FakeClock()
    launched = lambda: child.read_pid_file(tmp_path / "run" / "comfyui-18999.pid")  # noqa: E731
    supervisor = Supervisor(managed(), tmp_path, probe=Probe(lambda: launched() is not None),
                            monotonic=clock, sleep=lambda _s: None)
    supervisor.start()
    started = supervisor.poll()  # the start, once, for the worker to record
    assert started is not None and started.kind == "started" and supervisor.poll() is None
    delays = []
    try:
        for _ in range(3):
            first = supervisor.owned
            assert first is not None and supervisor.poll() is None
            os.killpg(first.pid, 9)
            report = wait_until(supervisor.poll)
            assert report.kind == "exited" and "signal 9 (SIGKILL)" in report.message
            assert supervisor.restarting and supervisor.owned is None
            delays.append(float(report.message.rsplit(" in ", 1)[1].split()[0]))
            clock.now += delays[-1] - 0.01
            assert supervisor.poll() is None  # not yet due
            clock.now += 0.01
            restarted = supervisor.poll()
            assert restarted is not None and restarted.kind == "restarted"
            assert supervisor.owned is not None and supervisor.owned.pid != first.pid
            supervisor.answered()
        assert delays == [1.0, 2.0, 4.0]
        assert supervisor.status()["restarts"] == 3
        clock.now += 60  # up for the longest backoff: the next crash waits 1 s again
        assert supervisor.poll() is None
        os.killpg(supervisor.owned.pid, 9)
        assert "again in 1 s" in wait_until(supervisor.poll).message
    finally:
        supervisor.stop()


def test_a_restarted_child_that_never_answers_is_ended_at_the_start_timeout(tmp_path):
    clock = FakeClock()
    supervisor = Supervisor(managed(start_timeout_s=30.0), tmp_path, probe=Probe(True),
                            monotonic=clock, sleep=lambda _s: None)
    supervisor.pid_path.parent.mkdir(parents=True)
    supervisor._launch()  # as a restart does: started, not answered yet
    supervisor._start_deadline = clock.now + 30.0
    pid = supervisor.owned.pid
    clock.now += 30.0
    report = supervisor.poll()
    assert report is not None and report.kind == "exited" and "did not answer" in report.message
    assert child.process_start(pid) is None


def test_the_crash_guard_fails_a_job_running_during_two_crashes_in_a_row():
    guard = CrashGuard(limit=2)
    first = guard.outcome("a", "ComfyUI exited", running=True)
    assert first.kind == "requeue" and not first.consume_attempt
    assert guard.outcome("b", "ComfyUI exited", running=False).kind == "requeue"  # waiting
    second = guard.outcome("a", "ComfyUI exited", running=True)
    assert second.kind == "failed"
    assert "ComfyUI crashed twice while running this job" in second.message
    assert guard.outcome("b", "ComfyUI exited", running=True).kind == "requeue"


def test_a_busy_child_that_still_answers_is_not_hung_and_one_that_does_not_is_ended(tmp_path):
    clock = FakeClock()
    answers = {"now": True}
    supervisor = Supervisor(managed(hang_s=120.0, health_s=30.0), tmp_path,
                            probe=Probe(lambda: answers["now"]), monotonic=clock,
                            sleep=lambda _s: None)
    answers["now"] = False
    supervisor.pid_path.parent.mkdir(parents=True)
    supervisor._launch()
    supervisor.answered()
    pid = supervisor.owned.pid
    last_event = clock.now
    clock.now += 119
    assert supervisor.check_health(last_event) is None  # events are recent enough
    clock.now += 1
    answers["now"] = True  # a long model load: silent websocket, /system_stats answers
    assert supervisor.check_health(last_event) is None and supervisor.owned is not None
    clock.now += 30
    answers["now"] = False
    report = supervisor.check_health(last_event)
    assert report is not None and report.kind == "hung"
    assert "no event for 150 s and no answer from /system_stats" in report.message
    assert child.process_start(pid) is None and supervisor.restarting


def test_an_idle_child_is_hung_after_three_failed_health_checks_in_a_row(tmp_path):
    clock = FakeClock()
    answers = iter([False, False, True, False, False, False])
    supervisor = Supervisor(managed(health_s=30.0), tmp_path, probe=Probe(lambda: next(answers)),
                            monotonic=clock, sleep=lambda _s: None)
    supervisor.pid_path.parent.mkdir(parents=True)
    supervisor._launch()
    supervisor.answered()
    reports = []
    for _ in range(6):
        reports.append(supervisor.check_health(None))
        assert supervisor.check_health(None) is None  # not due again until health_s passed
        clock.now += 30
    assert reports[:5] == [None] * 5
    assert reports[5] is not None and "3 health checks in a row failed" in reports[5].message


def test_a_crash_loop_stops_after_max_quick_exits_and_says_so_once(tmp_path):
    import dataclasses

    clock = FakeClock()
    launched = lambda: child.read_pid_file(tmp_path / "run" / "comfyui-18999.pid")  # noqa: E731
    supervisor = Supervisor(managed(max_quick_exits=3), tmp_path,
                            probe=Probe(lambda: launched() is not None),
                            monotonic=clock, sleep=lambda _s: None)
    supervisor.start()
    assert supervisor.poll().kind == "started"
    supervisor.managed = dataclasses.replace(supervisor.managed,
                                             command=f"{PY} -c 'raise SystemExit(1)'")
    os.killpg(supervisor.owned.pid, 9)
    kinds = []
    for _ in range(20):
        report = wait_until(supervisor.poll)
        kinds.append(report.kind)
        if report.kind == "gave-up":
            break
        if report.kind == "exited":
            clock.now += 60  # the restart is due
    assert kinds == ["exited", "restarted", "exited", "restarted", "gave-up"]
    assert "exit code 1" in report.message and "no longer restarts it" in report.message
    assert "comfyui.max_quick_exits" in report.message
    clock.now += 3600
    assert supervisor.poll() is None and supervisor.owned is None  # never started again
    assert not supervisor.restarting
    assert supervisor.status()["down"] and supervisor.status()["gave_up"] == supervisor.gave_up


def test_a_child_up_for_a_while_between_exits_is_no_crash_loop(tmp_path):
    clock = FakeClock()
    launched = lambda: child.read_pid_file(tmp_path / "run" / "comfyui-18999.pid")  # noqa: E731
    supervisor = Supervisor(managed(max_quick_exits=2), tmp_path,
                            probe=Probe(lambda: launched() is not None),
                            monotonic=clock, sleep=lambda _s: None)
    supervisor.start()
    supervisor.poll()
    try:
        for _ in range(3):
            clock.now += 61  # up longer than RESTART_MAX_S
            os.killpg(supervisor.owned.pid, 9)
            assert wait_until(supervisor.poll).kind == "exited"
            clock.now += 60
            assert supervisor.poll().kind == "restarted"
            supervisor.answered()
    finally:
        supervisor.stop()


def test_health_probes_wait_no_longer_than_health_s(tmp_path, monkeypatch):
    from zmm.worker.managed import supervisor as module

    waits = []
    monkeypatch.setattr(module, "default_probe", lambda url, timeout: waits.append(timeout))
    Supervisor(managed(health_s=0.5), tmp_path).probe(URL)
    Supervisor(managed(health_s=30.0), tmp_path).probe(URL)
    assert waits == [0.5, module.PROBE_TIMEOUT_S]
