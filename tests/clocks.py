"""Test time: a clock that moves only when a test advances it or the code under
test sleeps, so leases, backoffs and max waits are tested without waiting."""

from __future__ import annotations


class FakeClock:
    """Callable as a clock (`clock=fake`), or through `.clock` and `.sleep` for code
    that takes both; `sleeps` records every wait asked for. One float addition per
    sleep, so a worker loop and its lane threads can share it."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def clock(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
