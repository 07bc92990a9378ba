"""A worker's counts: by final status, with the first ids that did not succeed."""

from __future__ import annotations

from dataclasses import replace

from zmm.jobs import JobState
from zmm.worker.counts import NAMED_MAX, JobCounts


def test_counts_by_status_and_names_only_the_first_failures(store, settings):
    from zmm import intake

    job = store.enqueue(intake.build({"prompt": "a"}, settings))[0]
    counts = JobCounts()
    for n in range(NAMED_MAX + 5):
        counts.add(replace(job, id=f"failed-{n}", status=JobState.FAILED))
    counts.add(replace(job, id="ok", status=JobState.SUCCEEDED))
    counts.add(replace(job, id="gone", status=JobState.CANCELLED))
    assert (counts.succeeded, counts.other, counts.total) == (1, NAMED_MAX + 6, NAMED_MAX + 7)
    assert counts.by_status[JobState.CANCELLED] == 1
    assert counts.not_succeeded == [f"failed-{n}" for n in range(NAMED_MAX)]
