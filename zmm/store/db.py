"""Opening the spool database: file permissions, pragmas, migrations, write
transactions and read snapshots (which only the Store opens), and the mapping
of SQLite failures to zmm errors.

Migrations are the numbered `.sql` files in the shipped `spool/migrations/`
folder; `PRAGMA user_version` records how many have been applied.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import zmm
from zmm.errors import InvalidInput, SpoolUnusable
from zmm.fs import private_dirs
from zmm.jobs import BACKENDS, JobState, Priority

# Storage settings (bench/spool_bench.py and bench/history_bench.py weigh others).
# A new spool gets 2,048-byte pages: a claim + finish writes fewer bytes than with
# SQLite's 4,096 while reads stay about as fast. A spool's page size is fixed when
# it is created (spool/README.md converts one).
PAGE_BYTES = 2048
CHECKPOINT_PAGES = 10_000  # ~20 MB of WAL
MMAP_BYTES = 1 << 30


def data_dir(name: str) -> Path:
    """A top-level folder shipped with zmm (`spool`, `workflows`), wheel or checkout."""
    package = Path(zmm.__file__).parent
    shipped = package / "_data" / name
    return shipped if shipped.is_dir() else package.parent / name


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every migration file, in order."""
    found = []
    for path in sorted(data_dir("spool").joinpath("migrations").glob("[0-9][0-9][0-9][0-9]_*.sql")):
        found.append((int(path.name[:4]), path.stem, path.read_text(encoding="utf-8")))
    versions = [version for version, _, _ in found]
    if versions != list(range(1, len(found) + 1)):
        raise SpoolUnusable(f"spool migrations are not numbered 1..n: {versions}")
    return found


def _statements(script: str) -> Iterator[str]:
    """Split a script into statements (executescript would commit mid-migration)."""
    pending = ""
    for line in script.splitlines(keepends=True):
        if not pending and line.lstrip().startswith("--"):
            continue
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending.strip()
            pending = ""
    if pending.strip():
        yield pending.strip()


def connect(path: Path, *, busy_timeout_ms: int = 15000) -> sqlite3.Connection:
    """Open (creating user-only if new) and migrate the spool at `path`."""
    try:
        private_dirs(path.parent)
        if not path.exists():
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        fresh = path.stat().st_size == 0  # ours, just created, or an empty file
        conn = sqlite3.connect(
            path, timeout=busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False
        )
    except (OSError, sqlite3.Error) as exc:
        raise SpoolUnusable(
            f"cannot open the spool at {path}: {getattr(exc, 'strerror', None) or exc}",
            hint="check that $ZMM_HOME exists and is writable by you",
        ) from None
    conn.row_factory = sqlite3.Row
    with translate_errors(path):
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        if fresh:  # takes effect only before the first write, which journal_mode makes
            conn.execute(f"PRAGMA page_size = {PAGE_BYTES}")
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode: a killed process loses nothing; only power loss can
        # roll back the last commits, and never corrupts.
        conn.execute("PRAGMA synchronous = NORMAL")
        # NORMAL syncs the WAL only when a checkpoint copies it into the spool, and
        # that sync costs by the megabyte: checkpoint every CHECKPOINT_PAGES rather
        # than SQLite's 1,000, so a page rewritten by many state changes is copied
        # and synced once.
        conn.execute(f"PRAGMA wal_autocheckpoint = {CHECKPOINT_PAGES}")
        # Reads through a memory map rather than a read() per page (a history count
        # over a big spool reads thousands). Writes still go through write(), so a
        # full disk is still an error, never a fault.
        conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
        _migrate(conn)
    return conn


def open_for_reading(path: Path, *, timeout_s: float = 15.0) -> sqlite3.Connection:
    """A `mode=ro` connection to an existing spool: it works when the spool or its
    folder is not writable. Where even that cannot set up the WAL index (a full
    disk, no right to create `-shm`) and there is no WAL content to miss, the
    file is read as it is (`immutable`). Raises sqlite3.Error."""
    uri = "file:" + urllib.parse.quote(str(path.absolute()))
    try:
        conn = sqlite3.connect(uri + "?mode=ro", uri=True, timeout=timeout_s,
                               isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA user_version").fetchone()
        return conn
    except sqlite3.OperationalError:
        conn.close()
        if _wal_bytes(path) > 0:
            raise
    conn = sqlite3.connect(uri + "?mode=ro&immutable=1", uri=True, timeout=timeout_s,
                           isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA user_version").fetchone()
    return conn


def connect_read_only(path: Path, *, busy_timeout_ms: int = 15000) -> sqlite3.Connection:
    """The spool for a command that only reads it (`open_for_reading`); a spool
    that is missing, empty or needs migrating is opened by `connect`."""
    try:
        if path.stat().st_size == 0:
            return connect(path, busy_timeout_ms=busy_timeout_ms)
        conn = open_for_reading(path, timeout_s=busy_timeout_ms / 1000)
    except (OSError, sqlite3.Error):
        return connect(path, busy_timeout_ms=busy_timeout_ms)  # it says why, in words
    if conn.execute("PRAGMA user_version").fetchone()[0] < len(migrations()):
        conn.close()
        return connect(path, busy_timeout_ms=busy_timeout_ms)
    conn.row_factory = sqlite3.Row
    with translate_errors(path):
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        _migrate(conn)  # refuses a spool newer than this zmm
    return conn


def _wal_bytes(path: Path) -> int:
    try:
        return os.stat(f"{path}-wal").st_size
    except OSError:
        return 0


def _migrate(conn: sqlite3.Connection) -> None:
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    known = migrations()  # read once: every command opens the spool
    if current >= len(known):
        if current > len(known):
            raise SpoolUnusable(
                f"the spool has schema version {current}, newer than this zmm knows ({len(known)})",
                hint="upgrade zmm",
            )
        return
    with transaction(conn):
        # Re-read inside the write lock: another process may have migrated meanwhile.
        current = conn.execute("PRAGMA user_version").fetchone()[0]
        for version, _name, script in known:
            if version <= current:
                continue
            for statement in _statements(script):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")


class transaction:
    """A write transaction that takes the write lock up front (BEGIN IMMEDIATE),
    so it waits on the busy timeout instead of failing at its first write.

    `with transaction(conn) as conn:` commits on success and rolls back on any
    exception. A class rather than a generator: every claim and finish enters one.
    """

    __slots__ = ("conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        _begin_immediate(self.conn)
        return self.conn

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")


class snapshot:
    """A read transaction: every query inside it sees the same state of the
    spool, even while other processes commit. A deferred BEGIN takes no lock;
    the COMMIT at the end keeps and undoes nothing. Inside a transaction
    already, that one is the snapshot."""

    __slots__ = ("conn", "started")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.started = False

    def __enter__(self) -> sqlite3.Connection:
        self.started = not self.conn.in_transaction
        if self.started:
            self.conn.execute("BEGIN")
        return self.conn

    def __exit__(self, *_: object) -> None:
        if self.started:
            self.conn.execute("COMMIT")


def _begin_immediate(conn: sqlite3.Connection) -> None:
    # The busy handler covers most waits; a short retry loop covers the rare
    # SQLITE_BUSY that WAL returns without calling it (e.g. during a checkpoint).
    deadline = time.monotonic() + 2.0
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


# What the CHECK constraints of `jobs` allow, by column (spool/migrations/0001, 0004);
# the key is the name a user knows the value by.
_ALLOWED = {
    "status": ("status", "one of " + ", ".join(JobState)),
    "priority": ("priority", "one of " + ", ".join(Priority)),
    "backend_requested": ("backend", "one of " + ", ".join(BACKENDS)),
}


def refused_value(exc: sqlite3.IntegrityError) -> InvalidInput:
    """A constraint the spool's schema enforced (CHECK, NOT NULL) as the one-line
    error naming the field and what it allows: the input was bad, not the spool."""
    kind, _, detail = str(exc).partition(" constraint failed: ")
    if kind == "NOT NULL":
        column = detail.rpartition(".")[2]
        return InvalidInput(column, "must be given (the spool stores no empty value here)")
    if kind == "CHECK":
        column = detail.split()[0].strip("()") if detail.split() else detail
        field, allowed = _ALLOWED.get(column, ("job", f"refused by the spool ({exc})"))
        return InvalidInput(field, allowed)
    return InvalidInput("job", f"refused by the spool ({exc})")


def disk_full(path: Path) -> bool:
    """No free block left for this user on the file system holding `path`."""
    try:
        return shutil.disk_usage(path.parent).free == 0
    except OSError:
        return False


class translate_errors:
    """Turn SQLite failures inside the block into one-line SpoolUnusable errors."""

    __slots__ = ("path",)

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 _tb: object) -> None:
        if exc_type is None or not issubclass(exc_type, sqlite3.DatabaseError):
            return
        path = self.path
        if issubclass(exc_type, sqlite3.OperationalError):
            text = str(exc)
            if "locked" in text or "busy" in text:
                raise SpoolUnusable(
                    f"the spool at {path} stayed locked by another process",
                    hint="raise spool.busy_timeout_ms, or look for a stuck zmm process",
                ) from None
            if "full" in text or ("disk I/O" in text and disk_full(path)):
                raise SpoolUnusable(
                    f"the disk holding the spool at {path} is full",
                    hint="free space on it (`zmm cleanup --dry-run` lists what can go); "
                         "reading commands (queue, history, stats, doctor) still work") from None
            if "readonly" in text or "unable to open" in text or "disk I/O" in text:
                raise SpoolUnusable(f"the spool at {path} cannot be written: {text}") from None
            return
        raise SpoolUnusable(
            f"the spool at {path} is not a usable SQLite database ({exc})",
            hint="run `zmm doctor`; move the file aside to start a fresh spool",
        ) from None


def errors_mapped(cls: type) -> type:
    """Every public method `cls` defines runs inside `translate_errors(self.path)`,
    so no read or write of the spool lets a raw SQLite error out of the store,
    whichever method forgets its own block (nested blocks are harmless).
    Generator methods map errors themselves, around their iteration."""
    import functools
    import inspect

    def mapped(method: Any) -> Any:
        @functools.wraps(method)
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            with translate_errors(self.path):
                return method(self, *args, **kwargs)
        return call

    for name, value in list(vars(cls).items()):
        if name.startswith("_") or not inspect.isfunction(value) \
                or inspect.isgeneratorfunction(value):
            continue
        setattr(cls, name, mapped(value))
    return cls
