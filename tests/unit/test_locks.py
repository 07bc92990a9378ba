"""The worker lock on a disk that cannot take it: one clear error, exit 7."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes.disk import FullDisk
from zmm.errors import SPOOL_UNUSABLE, SpoolUnusable
from zmm.worker.service import worker_lock


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="the full disk fake needs /proc")
def test_a_worker_starting_on_a_full_disk_says_so_in_one_error(settings, monkeypatch):
    FullDisk(settings.home / "locks", monkeypatch)
    lock = worker_lock(settings, "serve-worker")
    with pytest.raises(SpoolUnusable) as caught:
        lock.acquire_or_raise("the worker lock")
    assert caught.value.exit_code == SPOOL_UNUSABLE
    assert "the disk is full" in caught.value.message and caught.value.hint
    assert not lock.held


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="the full disk fake needs /proc")
def test_the_lock_is_taken_once_there_is_room(settings, monkeypatch):
    disk = FullDisk(settings.home / "locks", monkeypatch)
    lock = worker_lock(settings, "serve-worker")
    with pytest.raises(SpoolUnusable):
        lock.try_acquire()
    disk.free()
    assert lock.try_acquire() and lock.held
    lock.release()
