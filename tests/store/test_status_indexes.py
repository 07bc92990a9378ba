"""Jobs by status come from the partial indexes jobs_open and jobs_done: every
status query must name the index's condition (SQLite reads the whole table
otherwise), and what it returns must be exactly the jobs in those states."""

from __future__ import annotations

import itertools
import re

import pytest

from zmm import intake
from zmm.jobs import JobState
from zmm.store import Store, history, queries, retention, stats

STATES = [state.value for state in JobState]


def one_job_in_each_state(spool: Store, settings) -> dict[str, str]:
    """state -> id, two of each, oldest first (queued ones are the newest)."""
    made: dict[str, list[str]] = {state: [] for state in STATES}
    for _ in range(2):
        for state in STATES:
            job = spool.enqueue(intake.build({"prompt": f"a {state} job"}, settings))[0]
            if state != "queued":
                spool.claim("w", lease_s=60, aging_s=600, only_ids=[job.id])
            if state not in ("queued", "running"):
                spool.transition(job.id, JobState(state), expect=JobState.RUNNING)
            made[state].append(job.id)
    return made


def full_scans(conn, run) -> list[str]:
    """The statements `run` executes whose plan reads all of `jobs` without an index."""
    traced: list[str] = []
    conn.set_trace_callback(traced.append)
    try:
        run()
    finally:
        conn.set_trace_callback(None)
    scans = []
    for sql in traced:
        if not sql.lstrip().upper().startswith("SELECT"):
            continue
        plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}")]
        if any(re.fullmatch(r"SCAN jobs", step) for step in plan):
            scans.append(f"{sql}\n  -> {plan}")
    return scans


@pytest.mark.parametrize("name,run", [
    ("claim order", lambda s: queries.candidates(s.conn, s.clock(), 600, limit=5)),
    ("running", lambda s: queries.running(s.conn)),
    ("expired leases", lambda s: s.expired_leases()),
    ("queued", lambda s: queries.jobs_in_state(s.conn, "queued")),
    ("failed", lambda s: queries.jobs_in_state(s.conn, "failed")),
    ("run order", lambda s: queries.run_order(s.conn, s.clock(), 600)),
    ("recent times", lambda s: queries.recent_generation_times(s.conn)),
    ("cloud", lambda s: s.conn.execute(*queries.cloud_query(
        s.clock(), down_since=0, max_wait_s={}))),
    ("cloud fallback", lambda s: queries.next_cloud_fallback(s.conn, down_since=0,
                                                             max_wait_s={})),
    ("history, open", lambda s: history.page(
        s.conn, history.HistoryFilter(statuses=("queued", "running")))),
    ("history, finished", lambda s: history.page(
        s.conn, history.HistoryFilter(statuses=("failed",)))),
    ("history, both", lambda s: history.page(
        s.conn, history.HistoryFilter(statuses=("running", "failed")))),
    ("cleanup candidates", lambda s: list(retention.eligible(
        s.conn, ("succeeded", "failed"), include_deleted=True))),
    ("active ids", lambda s: retention.active_ids(s.conn)),
    ("stats", lambda s: stats.report(s.conn, None, s.clock())),
])
def test_status_queries_read_an_index_not_the_table(spool, settings, name, run):
    one_job_in_each_state(spool, settings)
    assert full_scans(spool.conn, lambda: run(spool)) == []


def test_the_check_above_sees_a_query_without_the_index_condition(spool, settings):
    one_job_in_each_state(spool, settings)
    scans = full_scans(spool.conn, lambda: spool.conn.execute(
        "SELECT id FROM jobs WHERE status = 'failed'").fetchall())
    assert len(scans) == 1


def test_every_combination_of_statuses_lists_exactly_those_jobs(spool, settings):
    made = one_job_in_each_state(spool, settings)
    everything = [job.id for job in history.page(spool.conn, history.HistoryFilter(
        limit=100))[0]]
    for size in range(1, len(STATES) + 1):
        for chosen in itertools.combinations(STATES, size):
            expected = [job_id for job_id in everything
                        if any(job_id in made[state] for state in chosen)]
            page, total = history.page(spool.conn, history.HistoryFilter(
                statuses=chosen, limit=100))
            assert [job.id for job in page] == expected, chosen  # newest first
            assert total == len(expected) == 2 * size
            for offset in range(len(expected) + 1):  # pages of two across both parts
                page, _ = history.page(spool.conn, history.HistoryFilter(
                    statuses=chosen, limit=2, offset=offset))
                assert [job.id for job in page] == expected[offset:offset + 2], (chosen, offset)


def test_stats_count_open_and_finished_jobs(spool, settings):
    one_job_in_each_state(spool, settings)
    by_status, _, _ = stats.counts(spool.conn, stats.Window(None, "9999"))
    assert by_status == dict.fromkeys(STATES, 2)


def test_a_status_filter_needs_a_status():
    with pytest.raises(ValueError):
        queries.status_parts([])
    with pytest.raises(ValueError):
        queries.status_in(["queued", "failed"])


def test_partial_index_conditions_compare_instead_of_listing_three_or_more_values(spool):
    """SQLite tests `x IN (a, b, c)` by building a temporary b-tree of the values each
    time a statement runs (one or two it compares), and every state change and event
    insert tests the partial indexes' conditions (migration 0008)."""
    conditions = {name: sql.split(" WHERE ", 1)[1] for name, sql in spool.conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql LIKE '% WHERE %'")}
    assert {"jobs_open", "jobs_done", "job_events_notable"} <= set(conditions)
    for name, condition in conditions.items():
        for values in re.findall(r"IN \(([^)]*)\)", condition):
            assert values.count(",") < 2, f"{name}: {condition}"


def test_a_history_page_by_model_and_time_walks_newest_first_without_sorting(spool, settings):
    """The page takes the first rows in seq order and stops; through the range of
    jobs_model_created it would collect and sort every match instead."""
    one_job_in_each_state(spool, settings)
    model = spool.get(one_job_in_each_state(spool, settings)["queued"][0]).model_requested
    traced: list[str] = []
    spool.conn.set_trace_callback(traced.append)
    jobs, total = history.page(spool.conn, history.HistoryFilter(
        model=model, since_iso="2000-01-01T00:00:00.000000Z", limit=3))
    spool.conn.set_trace_callback(None)
    assert len(jobs) == 3 and total == 2 * 2 * len(STATES)
    page_sql = [sql for sql in traced if " OFFSET " in sql]  # traced with its values bound
    assert len(page_sql) == 1
    plan = [row[3] for row in spool.conn.execute(f"EXPLAIN QUERY PLAN {page_sql[0]}")]
    assert not any("TEMP B-TREE" in step and "ORDER BY" in step for step in plan[:-1]), plan
