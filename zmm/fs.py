"""File-system helpers every layer may use (stdlib only, cheap to import):
private folders, and reading a file a user named, safely.

`read_user_file` is the one way zmm reads a file a person gave it (`--from`,
`--init-image`, `--from-image`, `--workflow`, brand files, config.toml): it
checks what the path is before opening it, so a FIFO cannot hang the command
and `/dev/zero` or a huge file cannot fill the memory.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from zmm.errors import InvalidInput, NotFound

MB = 1024 * 1024


def private_dirs(path: Path) -> None:
    """Create `path` and any missing parents user-only (mkdir's mode only applies
    to the last folder it creates)."""
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _size(size: int) -> str:
    return f"{size / MB:.1f} MB" if size >= MB else f"{size} bytes"


def read_user_file(path: Path, field: str, max_bytes: int) -> bytes:
    """The bytes of the file a user named for `field` (e.g. "from"). A missing
    file is NotFound ("from: no such file x.jsonl", exit 3); a directory, FIFO,
    device or socket, a file larger than `max_bytes` or one that cannot be read
    is InvalidInput naming `field` (exit 2). The type and size are checked
    before the file is opened, the open does not block on a FIFO swapped in
    meanwhile, and no more than `max_bytes` + 1 bytes are ever read."""
    limit = f"a regular file of at most {_size(max_bytes)}"
    try:
        before = os.stat(path)
    except FileNotFoundError:
        raise NotFound(f"{field}: no such file {path}") from None
    except OSError as exc:
        if exc.errno == errno.ENOTDIR:
            raise NotFound(f"{field}: no such file {path}") from None
        raise InvalidInput(field, f"{limit}; {path} cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(before.st_mode):
        raise InvalidInput(field, f"{limit}; {path} is {_kind(before.st_mode)}")
    if before.st_size > max_bytes:
        raise InvalidInput(field, f"{limit}; {path} is {_size(before.st_size)}")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise InvalidInput(field, f"{limit}; {path} cannot be read ({exc.strerror})") from None
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):  # replaced between the stat and the open
            raise InvalidInput(field, f"{limit}; {path} is {_kind(opened.st_mode)}")
        chunks, total = [], 0
        while total <= max_bytes:
            chunk = os.read(fd, min(MB, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise InvalidInput(field, f"{limit}; {path} cannot be read ({exc.strerror})") from None
    finally:
        os.close(fd)
    if total > max_bytes:  # grew after the stat
        raise InvalidInput(field, f"{limit}; {path} is larger")
    return b"".join(chunks)


def read_user_text(path: Path, field: str, max_bytes: int) -> str:
    """`read_user_file` as UTF-8 text (a byte-order mark is dropped)."""
    data = read_user_file(path, field, max_bytes)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(field, f"UTF-8 text; {path} is not (byte {exc.start})") from None
