"""Cross-process file locks: one worker per ComfyUI server, one cleanup at a time.

The OS releases an flock (or msvcrt lock) when its process dies, even by
kill -9, so a crashed worker never leaves a stale lock behind. The lock file
holds the owner's pid and role, to name it in the "already running" message.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from zmm.errors import SpoolUnusable, WorkerAlreadyRunning
from zmm.fs import private_dirs


def worker_lock_path(home: Path, comfy_url: str) -> Path:
    digest = hashlib.sha256(comfy_url.rstrip("/").encode()).hexdigest()[:12]
    return home / "locks" / f"worker-{digest}.lock"


class FileLock:
    def __init__(self, path: Path, info: dict[str, Any]) -> None:
        self.path = path
        self.info = info
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        """True once held. A lock file that cannot be written (a full disk, a
        read-only home) is SpoolUnusable (exit 7) with why, never a traceback."""
        try:
            private_dirs(self.path.parent)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise _unwritable(self.path, exc) from None
        if not _lock(fd):
            os.close(fd)
            return False
        try:
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(dict(self.info, pid=os.getpid())).encode())
        except OSError as exc:
            _unlock(fd)
            os.close(fd)
            raise _unwritable(self.path, exc) from None
        self._fd = fd
        return True

    def acquire_or_raise(self, what: str) -> None:
        if not self.try_acquire():
            holder = self.holder()
            who = f"pid {holder.get('pid')} ({holder.get('role', 'worker')})" if holder else "another process"
            raise WorkerAlreadyRunning(
                f"{what} is already held by {who}",
                hint="one worker per ComfyUI server; stop the other one or use another --comfyui URL",
            )

    def holder(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text() or "null")
        except (OSError, json.JSONDecodeError):
            return None

    def release(self) -> None:
        if self._fd is not None:
            _unlock(self._fd)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _unwritable(path: Path, exc: OSError) -> SpoolUnusable:
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    why = f"the disk is full ({exc.strerror})" if full else (exc.strerror or str(exc))
    return SpoolUnusable(f"cannot write the lock file {path}: {why}",
                         hint="free disk space (`zmm cleanup`)" if full else
                         "check that $ZMM_HOME is writable")


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
else:
    import fcntl

    def _lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            return False

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
