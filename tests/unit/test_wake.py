"""SpoolWatch: a wait ends when another connection commits to the spool or a
wake-up call comes, and lasts its full time otherwise."""

from __future__ import annotations

import threading
import time

import pytest

from zmm import intake
from zmm.store import Store
from zmm.worker.wake import SpoolWatch


class SilentStream:
    """A websocket with nothing to say: recv waits its timeout out."""

    def __init__(self) -> None:
        self.timeouts: list[float] = []

    def recv(self, timeout: float):
        self.timeouts.append(timeout)
        time.sleep(timeout)
        return None


class OneEventStream(SilentStream):
    def recv(self, timeout: float):
        self.timeouts.append(timeout)
        return "an event"


@pytest.fixture
def other(settings, store):
    """A second connection to the same spool, as `zmm generate` would open."""
    with Store(settings.spool_path) as opened:
        yield opened


def enqueue(store, settings):
    store.enqueue(intake.build({"prompt": "a lighthouse"}, settings))


def commit_soon(store, settings, delay: float) -> threading.Thread:
    thread = threading.Timer(delay, enqueue, args=(store, settings))
    thread.start()
    return thread


def test_a_commit_by_another_connection_ends_the_wait(store, other, settings):
    watch = SpoolWatch(store, threading.Event())
    committer = commit_soon(other, settings, 0.05)
    began = time.monotonic()
    assert watch.wait(30.0) is True
    assert time.monotonic() - began < 10.0  # far below the 30 s asked for
    committer.join()
    assert watch.changed() is False  # the change was taken once


def test_a_commit_made_before_the_wait_ends_it_at_once(store, other, settings):
    watch = SpoolWatch(store, threading.Event())
    enqueue(other, settings)
    began = time.monotonic()
    assert watch.wait(30.0) is True
    assert time.monotonic() - began < 10.0


def test_with_nothing_changed_it_waits_the_full_time(store):
    watch = SpoolWatch(store, threading.Event())
    began = time.monotonic()
    assert watch.wait(0.2) is False
    assert time.monotonic() - began >= 0.2


def test_the_watching_connection_s_own_commits_do_not_end_the_wait(store, settings):
    watch = SpoolWatch(store, threading.Event())
    enqueue(store, settings)
    assert watch.wait(0.1) is False


def test_a_wake_up_call_ends_the_wait_at_once_and_is_used_once(store):
    wake = threading.Event()
    watch = SpoolWatch(store, wake)
    wake.set()
    began = time.monotonic()
    assert watch.wait(30.0) is True
    assert time.monotonic() - began < 10.0
    assert not wake.is_set()
    assert watch.wait(0.05) is False


def test_a_wake_up_call_from_another_thread_cuts_a_wait_short(store):
    wake = threading.Event()
    watch = SpoolWatch(store, wake)
    timer = threading.Timer(0.05, wake.set)
    timer.start()
    began = time.monotonic()
    assert watch.wait(30.0) is True
    assert time.monotonic() - began < 10.0
    timer.join()


def test_recv_returns_none_early_when_the_spool_changes(store, other, settings):
    watch = SpoolWatch(store, threading.Event(), check_s=0.01)
    stream = SilentStream()
    committer = commit_soon(other, settings, 0.05)
    began = time.monotonic()
    assert watch.recv(stream, 30.0) is None
    assert time.monotonic() - began < 10.0
    committer.join()
    assert len(stream.timeouts) >= 2 and max(stream.timeouts) <= 0.01


def test_recv_with_nothing_changed_waits_out_its_time_in_slices(store):
    watch = SpoolWatch(store, threading.Event(), check_s=0.01)
    stream = SilentStream()
    began = time.monotonic()
    assert watch.recv(stream, 0.2) is None
    assert time.monotonic() - began >= 0.19
    assert len(stream.timeouts) >= 5


def test_recv_hands_over_an_event_as_it_comes(store):
    watch = SpoolWatch(store, threading.Event())
    assert watch.recv(OneEventStream(), 30.0) == "an event"
