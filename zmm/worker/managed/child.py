"""The operating-system side of a ComfyUI process the worker manages: starting
it in a process group of its own, ending that group (SIGTERM, a grace period,
SIGKILL), telling a live process from a reused pid by its start time, the pid
file a later worker reads, and the size-limited log the child writes to (both
user-only, in user-only folders). The child's environment holds none of zmm's
secrets (zmm.secrets.child_environment).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from zmm.fs import private_dirs
from zmm.secrets import child_environment

WINDOWS = sys.platform == "win32"


def start_time(pid: int) -> str | None:
    """When `pid` started (field 22 of /proc/<pid>/stat, in clock ticks since
    boot), or None if no such process is running. Elsewhere: psutil if it is
    installed, else the pid alone ("?": a reused pid cannot be told apart)."""
    stat = Path(f"/proc/{pid}/stat")
    try:
        text = stat.read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return None
    if not text:
        return None
    # the command name (field 2) is in parentheses and may hold spaces: split after it
    fields = text[text.rfind(")") + 2:].split()
    if fields and fields[0] in ("Z", "X"):
        return None  # a zombie has exited; only its parent's wait() is missing
    return fields[19] if len(fields) > 19 else None


def _start_time_elsewhere(pid: int) -> str | None:  # pragma: no cover - not Linux
    try:
        import psutil  # type: ignore[import-untyped]
    except ImportError:
        return "?" if _pid_alive(pid) else None
    try:
        return str(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def _pid_alive(pid: int) -> bool:  # pragma: no cover - not Linux
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_start(pid: int) -> str | None:
    if Path("/proc/self/stat").exists():
        return start_time(pid)
    return _start_time_elsewhere(pid)  # pragma: no cover - not Linux


@dataclass(frozen=True)
class PidRecord:
    """What the pid file says: the child's pid, its start time, and what it was."""

    pid: int
    started: str
    command: str
    url: str

    def running(self) -> bool:
        """The very process recorded is still there (not a later one with its pid)."""
        return process_start(self.pid) == self.started


def read_pid_file(path: Path) -> PidRecord | None:
    try:
        data = json.loads(path.read_text())
        return PidRecord(int(data["pid"]), str(data["started"]), str(data.get("command", "")),
                         str(data.get("url", "")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable: treated as absent (it names no process we can trust)


def write_pid_file(path: Path, record: PidRecord) -> None:
    private_folder(path.parent)
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps({"pid": record.pid, "started": record.started,
                                 "command": record.command, "url": record.url}))
    os.replace(temporary, path)


def private_folder(path: Path) -> None:
    """`path` as a user-only folder (one an older zmm made 0755 is closed too)."""
    private_dirs(path)
    if not WINDOWS:
        os.chmod(path, 0o700)


def open_log(path: Path) -> BinaryIO:
    """The child's log, opened for appending, user-only (it may echo anything)."""
    private_folder(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    if not WINDOWS:
        os.fchmod(fd, 0o600)
    return os.fdopen(fd, "ab")


def rotate_log(path: Path, max_bytes: int) -> bool:
    """Keep the log under `max_bytes`: its content moves to `<name>.1` and it is
    emptied in place (copy and truncate, since the child holds it open for
    appending and keeps writing at the new end). True if it rotated."""
    try:
        if path.stat().st_size <= max_bytes:
            return False
    except FileNotFoundError:
        return False
    rotated = path.with_name(path.name + ".1")
    fd = os.open(rotated, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with path.open("rb") as source, os.fdopen(fd, "wb") as copy:
        while chunk := source.read(1 << 20):
            copy.write(chunk)
    os.truncate(path, 0)
    return True


def launch(command: str, *, cwd: str | None, env: Mapping[str, str], log: BinaryIO
           ) -> subprocess.Popen:
    """Start `command` in a new process group (POSIX: a new session; Windows:
    CREATE_NEW_PROCESS_GROUP), its output appended to `log`, with zmm's
    environment less its secrets, plus `env` (comfyui.env)."""
    options: dict[str, Any] = {"cwd": cwd or None, "env": child_environment(extra=env),
                               "stdin": subprocess.DEVNULL, "stdout": log,
                               "stderr": subprocess.STDOUT}
    if WINDOWS:  # pragma: no cover - Windows only
        options["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
        return subprocess.Popen(command, **options)
    return subprocess.Popen(shlex.split(command), start_new_session=True, **options)


def end_group(pid: int, started: str, grace_s: float, *,
              sleep: Callable[[float], None] = time.sleep,
              monotonic: Callable[[], float] = time.monotonic,
              reap: Callable[[], object] | None = None) -> str:
    """End the process group led by `pid` (only while `pid` is still the process
    that started at `started`): SIGTERM (SIGCONT too, so a stopped one gets it),
    up to `grace_s` to exit, then SIGKILL. Returns how it ended."""
    record = PidRecord(pid, started, "", "")

    def gone() -> bool:
        if reap is not None:
            reap()  # our own child: collect its exit so it is not left a zombie
        return not record.running()

    if gone():
        return "already gone"
    _signal_group(pid, "term")
    deadline = monotonic() + grace_s
    while monotonic() < deadline:
        if gone():
            return "ended"
        sleep(0.05)
    if gone():
        return "ended"
    _signal_group(pid, "kill")
    deadline = monotonic() + 5.0
    while not gone() and monotonic() < deadline:
        sleep(0.05)
    return "killed"


def _signal_group(pid: int, kind: str) -> None:
    if WINDOWS:  # pragma: no cover - Windows only
        try:
            if kind == "term":
                os.kill(pid, signal.CTRL_BREAK_EVENT)  # type: ignore[attr-defined]
            else:
                subprocess.run(["taskkill", "/F", "/T", "/PID", str(pid)], capture_output=True)
        except OSError:
            pass
        return
    numbers = [signal.SIGTERM, signal.SIGCONT] if kind == "term" else [signal.SIGKILL]
    for number in numbers:
        try:
            os.killpg(pid, number)
        except ProcessLookupError:
            return  # the group has already gone
