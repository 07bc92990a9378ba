"""A disk that is full below one folder: a write to a file there fails with
ENOSPC, as the kernel reports it, while every other write goes through.
Installed with pytest's monkeypatch (os.write is where Python's file writes
meet the kernel); `free()` makes room again. Linux: files are named by
/proc/self/fd."""

from __future__ import annotations

import errno
import os
from pathlib import Path


class FullDisk:
    def __init__(self, root: Path, monkeypatch) -> None:
        self.root = str(Path(root).resolve()) + os.sep
        self.full = True
        self.refused = 0  # writes refused so far
        real = os.write

        def write(fd: int, data) -> int:
            if self.full and self._below_root(fd):
                self.refused += 1
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(fd, data)

        monkeypatch.setattr(os, "write", write)

    def free(self) -> None:
        self.full = False

    def _below_root(self, fd: int) -> bool:
        try:
            return os.readlink(f"/proc/self/fd/{fd}").startswith(self.root)
        except OSError:
            return False
