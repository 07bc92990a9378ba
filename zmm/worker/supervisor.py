"""Managed mode: the worker owns the ComfyUI server process.

The Supervisor starts ComfyUI (`comfyui.command`) when nothing answers on its
URL, waits until /system_stats answers, and stops what it started when the
worker stops. Its pid file (pid + start time) lets the next worker adopt a
child left by one killed with -9 if it answers, or end it if it does not --
never a process it did not start. It is handed what it needs and says what
it did; the process side lives in child.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from zmm.config import Config
from zmm.errors import ComfyUnavailable
from zmm.worker import child

# How often the log's size is checked while the child runs.
LOG_CHECK_S = 5.0


@dataclass(frozen=True)
class ManagedSettings:
    """The [comfyui] keys of managed mode."""

    url: str
    command: str
    cwd: str
    env: Mapping[str, str]
    start_timeout_s: float
    stop_grace_s: float
    log_max_bytes: int

    @classmethod
    def from_config(cls, settings: Config) -> ManagedSettings:
        section = settings.section("comfyui")
        return cls(url=section["url"], command=section["command"], cwd=section["cwd"],
                   env={str(k): str(v) for k, v in section["env"].items()},
                   start_timeout_s=section["start_timeout_s"],
                   stop_grace_s=section["stop_grace_s"],
                   log_max_bytes=section["log_max_bytes"])


def port_of(url: str) -> int:
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


def default_probe(url: str) -> bool:
    """Whether a ComfyUI server answers /system_stats on `url` (short timeout)."""
    from zmm.backends.comfy import ComfyClient

    client = ComfyClient(url, timeout=2.0)
    try:
        client.ping()
        return True
    except ComfyUnavailable:
        return False
    finally:
        client.close()


class Supervisor:
    """Start, adopt and stop the ComfyUI process of one URL (see the module)."""

    def __init__(self, managed: ManagedSettings, home: Path, *,
                 notice: Callable[[str], None] = lambda _text: None,
                 probe: Callable[[str], bool] = default_probe,
                 monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.managed, self.notice, self.probe = managed, notice, probe
        self.monotonic, self.sleep = monotonic, sleep
        port = port_of(managed.url)
        self.pid_path = home / "run" / f"comfyui-{port}.pid"
        self.log_path = home / "logs" / f"comfyui-{port}.log"
        self.owned: child.PidRecord | None = None  # the process this worker will stop
        self._process: Any = None  # its Popen, when this worker started it
        self._log: Any = None
        self._log_stop = threading.Event()
        self._log_thread: threading.Thread | None = None

    # -- starting -------------------------------------------------------------------

    def start(self, cancelled: Callable[[], bool] = lambda: False) -> str:
        """Make sure ComfyUI answers on the URL. Returns "adopted" (a child a dead
        worker left), "external" (someone else's server: nothing launched) or
        "launched". Raises ComfyUnavailable if a launched child exits or does not
        answer within the start timeout (it is ended first)."""
        url = self.managed.url
        leftover = self._leftover()
        if leftover is not None:
            if self.probe(url):
                self.owned = leftover
                self.notice(f"adopted the ComfyUI (pid {leftover.pid}) a previous worker "
                            f"started on {url}")
                return "adopted"
            how = child.end_group(leftover.pid, leftover.started, self.managed.stop_grace_s,
                                  sleep=self.sleep, monotonic=self.monotonic)
            self.notice(f"the ComfyUI (pid {leftover.pid}) a previous worker started does not "
                        f"answer: {how}")
            self.pid_path.unlink(missing_ok=True)
        if self.probe(url):
            self.notice(f"a ComfyUI already answers on {url}: using it, launching nothing "
                        "(zmm will not stop or restart it)")
            return "external"
        self._launch()
        self._wait_until_up(cancelled)
        return "launched"

    def _leftover(self) -> child.PidRecord | None:
        """The child a previous worker recorded, if that very process still runs."""
        record = child.read_pid_file(self.pid_path)
        if record is None:
            return None
        if not record.running():  # gone, or its pid now belongs to another process
            self.pid_path.unlink(missing_ok=True)
            return None
        return record

    def _launch(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        child.rotate_log(self.log_path, self.managed.log_max_bytes)
        self._log = self.log_path.open("ab")
        process = child.launch(self.managed.command, cwd=self.managed.cwd,
                               env=self.managed.env, log=self._log)
        started = child.process_start(process.pid)
        if started is None:  # it exited at once: its exit code says why
            started = "?"
        self._process = process
        self.owned = child.PidRecord(process.pid, started, self.managed.command,
                                     self.managed.url)
        child.write_pid_file(self.pid_path, self.owned)
        self.notice(f"started ComfyUI (pid {process.pid}): {self.managed.command}; "
                    f"output in {self.log_path}")
        self._log_stop.clear()
        self._log_thread = threading.Thread(target=self._watch_log, name="zmm-comfyui-log",
                                            daemon=True)
        self._log_thread.start()

    def _wait_until_up(self, cancelled: Callable[[], bool]) -> None:
        deadline = self.monotonic() + self.managed.start_timeout_s
        delay = 0.1
        while True:
            code = self._process.poll()
            if code is not None:
                self._forget()
                raise ComfyUnavailable(self.managed.url, f"the ComfyUI zmm started exited with "
                                       f"{exit_reason(code)} before answering",
                                       hint=f"its output is in {self.log_path}")
            if self.probe(self.managed.url):
                self.notice(f"ComfyUI answers on {self.managed.url}")
                return
            if cancelled() or self.monotonic() >= deadline:
                self.stop()
                why = ("stopped while waiting for it" if cancelled() else
                       f"no answer within {self.managed.start_timeout_s:g} s "
                       "(comfyui.start_timeout_s)")
                raise ComfyUnavailable(self.managed.url, f"the ComfyUI zmm started: {why}",
                                       hint=f"its output is in {self.log_path}")
            self.sleep(delay)
            delay = min(delay * 2, 1.0)

    # -- stopping -------------------------------------------------------------------

    def stop(self) -> str | None:
        """End the process this worker owns (started or adopted); None if it owns
        none (an external server is never touched)."""
        owned = self.owned
        if owned is None:
            return None
        reap = self._process.poll if self._process is not None else None
        how = child.end_group(owned.pid, owned.started, self.managed.stop_grace_s,
                              sleep=self.sleep, monotonic=self.monotonic, reap=reap)
        self.notice(f"stopped ComfyUI (pid {owned.pid}): {how}")
        self._forget()
        return how

    def _forget(self) -> None:
        self.owned = None
        if self._process is not None:
            self._process.poll()
            self._process = None
        self.pid_path.unlink(missing_ok=True)
        self._log_stop.set()
        if self._log_thread is not None:
            self._log_thread.join(timeout=LOG_CHECK_S + 1)
            self._log_thread = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def _watch_log(self) -> None:
        while not self._log_stop.wait(LOG_CHECK_S):
            child.rotate_log(self.log_path, self.managed.log_max_bytes)


def exit_reason(code: int) -> str:
    """A Popen return code in words: 'exit code 1' or 'signal 9 (SIGKILL)'."""
    if code < 0:
        import signal

        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "?"
        return f"signal {-code} ({name})"
    return f"exit code {code}"
