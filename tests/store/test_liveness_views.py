"""Every view says the same about whether a backend is live (zmm.liveness):
`zmm backends` (roster), `zmm top` (dashboard), `zmm wait` (the no-worker
notice), `zmm queue` and the waiting reasons (routing), read from one spool
with the test's clock."""

from __future__ import annotations

import pytest

from zmm import liveness
from zmm.store.backends import BackendReport
from zmm.timestamps import iso
from zmm.views import dashboard, follow, roster, routing
from zmm.views import queue as queue_view

LEASE_S = 60.0  # worker.lease_s's default


def views(spool, settings, clock) -> dict[str, object]:
    """What each view says about the `default` backend now."""
    said: list[str] = []
    follow.NoWorkerNotice(spool, lease_s=LEASE_S, say=said.append, clock=clock)()
    live = routing.read_live(spool, LEASE_S)
    frame = dashboard.read(spool, settings)
    (line,) = [line for line in frame.backends if line.name == "default"]
    (entry,) = roster.overview(settings, spool)
    return {
        "backends": entry["state"],
        "top": line.state,
        "top workers": frame.workers,
        "wait says no worker": said == [follow.NO_WORKER],
        "queue workers": len(queue_view.read(spool, settings).workers),
        "routing": ("draining" if live["default"].draining else "up") if "default" in live
        else liveness.NO_WORKER,
    }


@pytest.fixture
def served(spool, settings, clock):
    assert settings.get("worker.lease_s") == LEASE_S
    url = settings.get("comfyui.url")
    spool.register_worker("host:1:aa", url, "idle", backend="default")
    spool.report_backend(BackendReport("default", url, 0, "host:1:aa", "up"))
    return spool


def test_ninety_seconds_after_the_last_beat_every_view_says_up(served, settings, clock):
    clock.advance(90.0)
    assert views(served, settings, clock) == {
        "backends": "up", "top": "up", "top workers": 1, "wait says no worker": False,
        "queue workers": 1, "routing": "up"}


def test_past_three_leases_every_view_says_no_worker(served, settings, clock):
    clock.advance(3 * LEASE_S + 1)
    assert views(served, settings, clock) == {
        "backends": "no worker", "top": "no worker", "top workers": 0,
        "wait says no worker": True, "queue workers": 0, "routing": "no worker"}


def test_a_draining_live_backend_is_draining_everywhere(served, settings, clock):
    served.set_draining("default", settings.get("comfyui.url"), True)
    clock.advance(90.0)
    found = views(served, settings, clock)
    assert (found["backends"], found["top"], found["routing"]) == ("draining",) * 3
    assert found["wait says no worker"] is False


def test_a_draining_dead_backend_is_no_worker_everywhere(served, settings, clock):
    served.set_draining("default", settings.get("comfyui.url"), True)
    clock.advance(3 * LEASE_S + 1)
    found = views(served, settings, clock)
    assert (found["backends"], found["top"], found["routing"]) == (liveness.NO_WORKER,) * 3
    assert found["wait says no worker"] is True


def test_the_backends_row_heartbeat_is_not_read_for_liveness(served, settings, clock):
    """The worker's row is the heartbeat: a backend row written just now by a
    worker that has not beaten in three leases is still no worker."""
    clock.advance(3 * LEASE_S + 1)
    served.report_backend(BackendReport("default", settings.get("comfyui.url"), 0,
                                        "host:1:aa", "up"))
    assert views(served, settings, clock)["backends"] == liveness.NO_WORKER
    assert views(served, settings, clock)["top"] == liveness.NO_WORKER


@pytest.mark.parametrize(("row", "beat_ago", "state"), [
    ({"state": "up"}, 0.0, "up"),
    ({"state": "down"}, 179.0, "down"),
    ({"state": "up"}, 181.0, "no worker"),
    ({"state": "up", "draining": True}, 10.0, "draining"),
    ({"state": "up", "draining": True}, 181.0, "no worker"),
    ({"state": "stopped"}, 1.0, "starting"),  # a new worker, before its first row
    (None, 1.0, "starting"),
    ({"state": "up"}, None, "no worker"),  # no worker serves it
])
def test_backend_state(row, beat_ago, state):
    now = 1_800_000_000.0
    worker = None if beat_ago is None else {
        "id": "w", "backend": "gpu0", "heartbeat_at": iso(now - beat_ago)}
    assert liveness.backend_state(row, worker, now, LEASE_S) == state
