"""`zmm wait`'s notice that no worker is alive, read from the spool's workers
table with the test's clock: said once, only without a heartbeat in three leases."""

from __future__ import annotations

from zmm.views.follow import NO_WORKER, NoWorkerNotice


def notice_for(spool, clock, said: list[str]) -> NoWorkerNotice:
    return NoWorkerNotice(spool, lease_s=60.0, say=said.append, every=1.0, clock=clock)


def test_no_worker_at_all_is_said_once(spool, clock):
    said: list[str] = []
    notice = notice_for(spool, clock, said)
    for _ in range(5):
        notice()
        clock.advance(2.0)
    assert said == [NO_WORKER]


def test_a_worker_with_a_fresh_heartbeat_silences_it(spool, clock):
    said: list[str] = []
    spool.register_worker("host:1:ab", "http://127.0.0.1:8188", "idle")
    notice = notice_for(spool, clock, said)
    clock.advance(59.0)
    notice()
    assert said == []


def test_a_worker_silent_for_three_leases_counts_as_gone(spool, clock):
    said: list[str] = []
    spool.register_worker("host:1:ab", "http://127.0.0.1:8188", "busy")  # then killed -9
    notice = notice_for(spool, clock, said)
    notice()
    clock.advance(3 * 60.0 - 1)  # zmm.liveness.LIVE_LEASES, as every other view counts
    notice()
    assert said == []
    clock.advance(2.0)
    notice()
    assert said == [NO_WORKER]


def test_it_looks_at_most_once_per_interval(spool, clock):
    said: list[str] = []
    spool.register_worker("host:1:ab", "http://127.0.0.1:8188", "idle")
    notice = notice_for(spool, clock, said)
    notice()
    spool.unregister_worker("host:1:ab")
    notice()  # the same instant: not looked at again yet
    assert said == []
    clock.advance(1.0)
    notice()
    assert said == [NO_WORKER]
