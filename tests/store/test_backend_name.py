"""A job records the name of the backend that holds it (`jobs.backend_name`,
spool/migrations/0016): set by the claim and by adoption, counted by
`zmm backends`, shown by `zmm top`, and filled in for older spools from the
backends' URLs where one row has the URL."""

from __future__ import annotations

import json
import sqlite3

from zmm import intake
from zmm.jobs import JobState
from zmm.store import Store
from zmm.store.backends import BackendReport
from zmm.store.db import _statements, migrations
from zmm.store.queries import Route
from zmm.views import dashboard


def queue(spool, settings, count: int = 1):
    return spool.enqueue(intake.build({"prompt": "x", "size": "64x64", "count": count}, settings))


def test_the_claim_records_the_backend_given_else_the_routes(spool, settings):
    first, second, third = queue(spool, settings, 3)
    assert first.backend_name is None
    named = spool.claim("w1", lease_s=60, aging_s=600, only_ids=[first.id], backend="gpu1")
    routed = spool.claim("w2", lease_s=60, aging_s=600, only_ids=[second.id],
                         route=Route.of("gpu2", json.loads(second.needs or "[]")))
    plain = spool.claim("w3", lease_s=60, aging_s=600, only_ids=[third.id])
    assert (named.backend_name, routed.backend_name, plain.backend_name) == ("gpu1", "gpu2", None)
    assert spool.get(first.id).public()["backend_name"] == "gpu1"  # the job JSON carries it


def test_a_cloud_claim_clears_the_name_of_an_earlier_attempt(spool, settings):
    (job,) = queue(spool, settings)
    spool.claim("w1", lease_s=60, aging_s=600, only_ids=[job.id], backend="gpu1")
    spool.transition(job.id, JobState.QUEUED, expect=JobState.RUNNING)
    spool.conn.execute("UPDATE jobs SET backend_requested = 'cloud', cloud_allowed = 1")
    taken = spool.claim_for_cloud("cloud-w", lease_s=60, down_since=None, max_wait_s={})
    assert taken is not None and taken.id == job.id and taken.backend_name is None


def test_adoption_records_the_adopting_workers_backend(spool, settings):
    first, second = queue(spool, settings, 2)
    for job in (first, second):
        spool.claim("dead", lease_s=60, aging_s=600, only_ids=[job.id], backend="gpu0")
    adopted = spool.adopt(first.id, "alive", lease_s=60, reason="test", owner="dead",
                          backend="gpu1")
    kept = spool.adopt(second.id, "alive", lease_s=60, reason="test", owner="dead")
    assert adopted.backend_name == "gpu1" and kept.backend_name == "gpu0"


def test_backends_sharing_one_url_are_counted_apart(spool, settings, clock):
    """Two rows with one URL (a backend renamed, or two names for one server): the
    jobs each worker ran count for its own backend, not for both."""
    url = "http://127.0.0.1:8189"
    for name in ("old-name", "new-name"):
        spool.report_backend(BackendReport(name, url, 0, f"w-{name}", "up"))
    jobs = queue(spool, settings, 3)
    for job, name in zip(jobs, ("old-name", "new-name", "new-name"), strict=True):
        spool.claim(f"w-{name}", lease_s=60, aging_s=600, only_ids=[job.id], backend=name)
        spool.update(job.id, comfy_url=url)
    spool.transition(jobs[1].id, JobState.SUCCEEDED, expect=JobState.RUNNING)
    counts = spool.backend_job_counts(since=clock() - 3600)
    assert counts == {"old-name": {"running": 1, "succeeded": 0, "failed": 0},
                      "new-name": {"running": 1, "succeeded": 1, "failed": 0}}


def test_top_shows_where_a_job_runs_by_its_backends_name(spool, settings):
    (job,) = queue(spool, settings)
    spool.claim("gone-worker", lease_s=60, aging_s=600, only_ids=[job.id], backend="gpu1")
    spool.update(job.id, comfy_url="http://127.0.0.1:8189")
    (line,) = dashboard.read(spool, settings).running
    assert line.where == "gpu1"


def test_an_older_spool_gets_the_names_of_backends_with_one_row_per_url(tmp_path):
    path = tmp_path / "spool.db"
    conn = sqlite3.connect(path)
    for version, _name, script in migrations()[:14]:
        for statement in _statements(script):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {version}")
    for name, url in (("gpu0", "http://a:1"), ("twin-1", "http://b:2"), ("twin-2", "http://b:2")):
        conn.execute("INSERT INTO backends (name, url, updated_at) VALUES (?, ?, 'x')", [name, url])
    for job_id, url in (("j-a", "http://a:1"), ("j-b", "http://b:2"), ("j-none", None),
                        ("j-gone", "http://c:3")):
        conn.execute(
            "INSERT INTO jobs (id, status, priority, priority_rank, prompt, requester, workflow, "
            "params, created_at, queued_at, queued_ts, updated_at, comfy_url) VALUES "
            "(?, 'succeeded', 'MEDIUM', 2, 'p', 'me', 'w', '{}', 'x', 'x', 0, 'x', ?)",
            [job_id, url])
    conn.commit()
    conn.close()
    with Store(path) as upgraded:
        names = dict(upgraded.conn.execute("SELECT id, backend_name FROM jobs"))
    assert names == {"j-a": "gpu0", "j-b": None, "j-none": None, "j-gone": None}
