"""Managed mode: the worker owns the ComfyUI server process.

The Supervisor starts ComfyUI (`comfyui.command`) when nothing answers on its
URL, waits until /system_stats answers, and stops what it started when the
worker stops. Its pid file (pid + start time) lets the next worker adopt a
child left by one killed with -9 if it answers, or end it if it does not --
never a process it did not start. It is handed what it needs and says what
it did; the process side lives in child.py, the worker's side (what becomes of
the jobs on a child that went down) in watch.py.
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
from zmm.worker.managed import child

# How often the log's size is checked while the child runs.
LOG_CHECK_S = 5.0
# Restarts wait 1 s, doubling to this; a child that has answered this long resets it.
RESTART_MAX_S = 60.0
# Failed idle health checks in a row that make a hang.
HEALTH_FAILURES = 3


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
    crash_limit: int = 2
    hang_s: float = 120.0
    health_s: float = 30.0
    max_quick_exits: int = 5

    @classmethod
    def from_config(cls, settings: Config) -> ManagedSettings:
        section = settings.section("comfyui")
        return cls(url=section["url"], command=section["command"], cwd=section["cwd"],
                   env={str(k): str(v) for k, v in section["env"].items()},
                   start_timeout_s=section["start_timeout_s"],
                   stop_grace_s=section["stop_grace_s"],
                   log_max_bytes=section["log_max_bytes"],
                   crash_limit=section["crash_limit"], hang_s=section["hang_s"],
                   health_s=section["health_s"], max_quick_exits=section["max_quick_exits"])


def port_of(url: str) -> int:
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


# The longest a health probe waits for /system_stats (less when health_s is shorter).
PROBE_TIMEOUT_S = 2.0


def default_probe(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a ComfyUI server answers /system_stats on `url` (short timeout)."""
    from zmm.backends.comfy import ComfyClient

    client = ComfyClient(url, timeout=timeout)
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
                 probe: Callable[[str], bool] | None = None,
                 monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.managed, self.notice = managed, notice
        # a probe fits health_s: three of them in a row stay near 3 x health_s
        wait = max(0.1, min(PROBE_TIMEOUT_S, managed.health_s))
        self.probe = probe or (lambda url: default_probe(url, wait))
        self.monotonic, self.sleep = monotonic, sleep
        port = port_of(managed.url)
        self.pid_path = home / "run" / f"comfyui-{port}.pid"
        self.log_path = home / "logs" / f"comfyui-{port}.log"
        self.owned: child.PidRecord | None = None  # the process this worker will stop
        self._process: Any = None  # its Popen, when this worker started it
        self._log: Any = None
        self._log_stop = threading.Event()
        self._log_thread: threading.Thread | None = None
        self.restarts = 0
        self.last_exit: str | None = None
        self._restart_in = 1.0  # the next restart's delay
        self._restart_at: float | None = None  # the child is down: when to start it again
        self._start_deadline: float | None = None  # started, not answered yet: until when
        self._up_since: float | None = None
        self._next_health = 0.0
        self._health_failures = 0
        self._pending: ChildReport | None = None  # the start, for the worker to record
        self.quick_exits = 0  # exits in a row within RESTART_MAX_S of starting
        self.gave_up: str | None = None  # why it is no longer restarted

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
                self.answered()
                self._pending = ChildReport("started", f"adopted ComfyUI (pid {leftover.pid})",
                                            self.status())
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
        self.answered()
        self._pending = ChildReport("started", f"started ComfyUI (pid {self.owned.pid})"
                                    if self.owned else "started ComfyUI", self.status())
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
        child.rotate_log(self.log_path, self.managed.log_max_bytes)
        self._log = child.open_log(self.log_path)
        try:
            process = child.launch(self.managed.command, cwd=self.managed.cwd,
                                   env=self.managed.env, log=self._log)
        except (OSError, ValueError) as exc:  # no such program or folder; unbalanced quotes
            self._log.close()
            self._log = None
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ComfyUnavailable(self.managed.url, f"cannot start comfyui.command "
                                   f"{self.managed.command!r}: {why}") from None
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

    # -- supervising (called from the worker loop) ------------------------------------

    @property
    def restarting(self) -> bool:
        """Down or starting again: the worker waits for it rather than giving up."""
        return self._restart_at is not None or self._start_deadline is not None

    def poll(self) -> ChildReport | None:
        """What happened to the child since the last call, without waiting: it
        exited (a crash), it was started again (its restart was due), or it did
        not answer within the start timeout (ended, to be started again)."""
        now = self.monotonic()
        pending, self._pending = self._pending, None
        if pending is not None:
            return pending
        if self.owned is not None and not self._alive():
            return self._down(now, "exited", f"ComfyUI (pid {self.owned.pid}) exited with "
                              f"{self._exit_reason()}")
        if self.owned is not None and self._start_deadline is not None \
                and now >= self._start_deadline:
            self.stop()
            return self._down(now, "exited", "ComfyUI did not answer within "
                              f"{self.managed.start_timeout_s:g} s of starting again")
        if self.owned is None and self._restart_at is not None and now >= self._restart_at:
            self._restart_at = None
            self._launch()
            self.restarts += 1
            self._start_deadline = now + self.managed.start_timeout_s
            return ChildReport("restarted", f"restarted ComfyUI (restart {self.restarts}, "
                               f"pid {self.owned.pid if self.owned else '?'})", self.status())
        if self._up_since is not None and now - self._up_since >= RESTART_MAX_S:
            self._restart_in = 1.0
        return None

    def check_health(self, last_event: float | None) -> ChildReport | None:
        """Whether the running child hangs. `last_event` is when the websocket last
        said something about the jobs ComfyUI runs (None: it runs none). Busy: no
        event for hang_s and no answer from /system_stats (a long model load that
        still answers is not a hang). Idle: HEALTH_FAILURES failed checks in a row,
        one every health_s. Ends a hung child (started again after the backoff)."""
        now = self.monotonic()
        if self.owned is None or self.restarting or now < self._next_health:
            return None
        silent_s = None if last_event is None else now - last_event
        if silent_s is not None and silent_s < self.managed.hang_s:
            return None
        self._next_health = now + min(self.managed.health_s, self.managed.hang_s)
        if self.probe(self.managed.url):
            self._health_failures = 0
            return None
        self._health_failures += 1
        if silent_s is not None:
            return self.end(f"ComfyUI (pid {self.owned.pid}) hangs: no event for "
                            f"{silent_s:.0f} s and no answer from /system_stats")
        if self._health_failures >= HEALTH_FAILURES:
            return self.end(f"ComfyUI (pid {self.owned.pid}) hangs: {self._health_failures} "
                            "health checks in a row failed")
        return None

    def answered(self) -> None:
        """The worker reached the server: it is up (again)."""
        self._start_deadline = None
        if self._up_since is None and self.owned is not None:
            self._up_since = self.monotonic()

    def end(self, reason: str) -> ChildReport:
        """End a child that hangs; it is started again after the backoff."""
        self.stop()
        return self._down(self.monotonic(), "hung", reason)

    def status(self) -> dict[str, Any]:
        """The spool-wide record `zmm doctor` reads."""
        return {"managed": True, "pid": self.owned.pid if self.owned else None,
                "restarts": self.restarts, "last_exit": self.last_exit,
                "down": self.owned is None and (self.restarting or self.gave_up is not None),
                "gave_up": self.gave_up, "log": str(self.log_path)}

    def _down(self, now: float, kind: str, reason: str) -> ChildReport:
        quick = self._up_since is None or now - self._up_since < RESTART_MAX_S
        self.quick_exits = self.quick_exits + 1 if quick and kind == "exited" else 0
        if self.owned is not None:
            self._forget()
        self.last_exit = reason
        self._up_since = self._start_deadline = None
        self._health_failures = 0
        if self.quick_exits >= self.managed.max_quick_exits:
            # A crash loop: restarting again would only print and alert forever.
            self._restart_at = None
            self.gave_up = (f"{reason}; it exited {self.quick_exits} times in a row within "
                            f"{RESTART_MAX_S:g} s of starting (comfyui.max_quick_exits), so zmm "
                            f"no longer restarts it: see {self.log_path}, then restart the worker")
            return ChildReport("gave-up", self.gave_up, self.status())
        self._restart_at = now + self._restart_in
        message = f"{reason}; starting it again in {self._restart_in:g} s"
        self._restart_in = min(self._restart_in * 2, RESTART_MAX_S)
        return ChildReport(kind, message, self.status())

    def _alive(self) -> bool:
        if self._process is not None:
            return self._process.poll() is None
        return self.owned is not None and self.owned.running()

    def _exit_reason(self) -> str:
        code = self._process.poll() if self._process is not None else None
        return exit_reason(code) if code is not None else "an unknown code (adopted process)"

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


@dataclass(frozen=True)
class ChildReport:
    """One thing that happened to the managed child: "started" (or adopted) by
    start(), "exited", "hung", "restarted", or "gave-up" (a crash loop: it is not
    started again)."""

    kind: str
    message: str
    status: dict[str, Any]


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
