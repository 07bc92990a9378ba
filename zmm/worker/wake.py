"""Noticing new work within milliseconds: `SpoolWatch` waits until the spool
changed (any other connection, in any process, committed), a wake-up call came
(a stop request), or the time ran out, looking at the spool's data version
every few milliseconds. It decides nothing: the worker claims after it returns.
Only `Store.data_version` touches SQLite.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from zmm.backends.comfy_events import Event
    from zmm.store import Store

# How often the spool is looked at while waiting. Each look costs a thread
# wake-up plus a PRAGMA, ~50 us on a small VM: every 10 ms that is ~0.5 % of a
# core, and a new job waits 5 ms on average.
CHECK_S = 0.01


class EventStream(Protocol):
    def recv(self, timeout: float) -> Event | None: ...


class SpoolWatch:
    """Waits that end early when the spool changes. Commits of the watching
    connection itself (the worker's claims and updates) do not count."""

    def __init__(self, store: Store, wake: threading.Event, *, check_s: float = CHECK_S,
                 monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.store = store
        self.wake = wake
        self.check_s = check_s
        self.monotonic, self.sleep = monotonic, sleep
        self._seen = store.data_version()

    def changed(self) -> bool:
        """Whether another connection committed since the last look."""
        version = self.store.data_version()
        if version == self._seen:
            return False
        self._seen = version
        return True

    def wait(self, seconds: float) -> bool:
        """Until the spool changes, `wake` is set, or `seconds` pass; True if cut
        short. A wake-up call is used once: `wake` is cleared when it ends a wait.
        A change made since the last look ends the wait at once, so a job queued
        just before the wait began is not left for the next turn."""
        deadline = self.monotonic() + seconds
        while not self.changed():
            if self.wake.is_set():
                self.wake.clear()
                return True
            left = deadline - self.monotonic()
            if left <= 0:
                return False
            # A plain sleep costs less than Event.wait, and a signal handler that
            # sets `wake` is still seen within one slice.
            self.sleep(min(self.check_s, left))
        return True

    def recv(self, stream: EventStream, seconds: float) -> Event | None:
        """`stream.recv(seconds)` in slices of `check_s`, looking at the spool
        between them: None before `seconds` are up if the spool changed."""
        deadline = self.monotonic() + seconds
        while True:
            left = deadline - self.monotonic()
            event = stream.recv(timeout=max(0.0, min(self.check_s, left)))
            if event is not None:
                return event
            if self.changed() or left <= self.check_s:
                return None
