"""A worker's scope: what it claims and when it is done, read from a real spool."""

from __future__ import annotations

from zmm import intake
from zmm.jobs import JobState
from zmm.worker.scope import Scope


def _job(store, settings):
    return store.enqueue(intake.build({"prompt": "a"}, settings))[0]


def _finish(store, job_id):
    store.claim("w", lease_s=60, aging_s=60, only_ids=[job_id])
    store.transition(job_id, JobState.SUCCEEDED, expect=JobState.RUNNING, worker_id="w")


def test_a_serving_worker_never_runs_out_and_waits_out_comfyui(store, settings):
    scope = Scope()
    _job(store, settings)
    assert scope.may_claim() and scope.budget() is None
    assert not scope.nothing_left(store) and not scope.foreground


def test_max_jobs_is_a_budget_of_claims(store):
    scope = Scope(max_jobs=2)
    scope.claimed = 1
    assert scope.budget() == 1 and scope.may_claim()
    scope.claimed = 2
    assert scope.budget() == 0 and not scope.may_claim() and scope.nothing_left(store)


def test_only_ids_is_done_when_they_have_finished(store, settings):
    job = _job(store, settings)
    scope = Scope(only_ids=[job.id])
    assert scope.foreground and scope.waited_for == [job.id]
    assert not scope.nothing_left(store)
    _finish(store, job.id)
    assert scope.nothing_left(store)


def test_until_finished_claims_no_more_once_its_jobs_are_done(store, settings):
    mine, other = _job(store, settings), _job(store, settings)
    scope = Scope(until_finished=[mine.id])
    assert scope.foreground and scope.waited_for == [mine.id]
    scope.claimed = 3
    scope.close_if_waited_for_done(store)
    assert scope.may_claim()  # its job is still queued: it serves the queue
    _finish(store, mine.id)
    scope.close_if_waited_for_done(store)
    assert not scope.may_claim() and scope.max_jobs == 3
    assert store.get(other.id).status == JobState.QUEUED  # left for the next worker
