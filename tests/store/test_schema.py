"""The schema check `zmm doctor` runs: a spool against what its migrations create."""

from __future__ import annotations

import sqlite3

from zmm import doctor, errors
from zmm.store import Store, schema
from zmm.store.db import _statements, migrations


def test_a_fresh_spool_and_an_older_one_match_their_schema(settings, tmp_path):
    Store(settings.spool_path).close()
    check = doctor.check_schema(settings)
    assert check.status == "ok" and f"schema {len(migrations())}" in check.detail
    old = sqlite3.connect(tmp_path / "old.db")
    for version, _name, script in migrations()[:3]:
        for statement in _statements(script):
            old.execute(statement)
        old.execute(f"PRAGMA user_version = {version}")
    found = schema.compare(old)
    assert (found.version, found.missing, found.extra) == (3, [], [])


def test_a_changed_index_condition_a_lost_trigger_and_own_tables_are_named(settings):
    Store(settings.spool_path).close()
    conn = sqlite3.connect(settings.spool_path)
    conn.executescript("""
        DROP INDEX jobs_done;
        CREATE INDEX jobs_done ON jobs (status, seq) WHERE status IN ('succeeded', 'failed');
        DROP TRIGGER job_counts_insert;
        CREATE TABLE my_notes (job_id TEXT, note TEXT);
    """)
    conn.close()
    check = doctor.check_schema(settings)
    assert check.status == "fail" and check.code == errors.SPOOL_UNUSABLE
    assert "no trigger job_counts_insert" in check.detail
    assert "index jobs.jobs_done differs" in check.detail
    assert "my_notes" not in check.detail  # not zmm's: reported, never a failure
    conn = sqlite3.connect(settings.spool_path)
    found = schema.compare(conn)
    conn.close()
    assert found.extra == ["table my_notes"]


def test_only_someone_elses_additions_are_a_warning(settings):
    Store(settings.spool_path).close()
    conn = sqlite3.connect(settings.spool_path)
    conn.execute("CREATE INDEX my_prompt_index ON jobs (prompt)")
    conn.close()
    check = doctor.check_schema(settings)
    assert check.status == "warn" and "index jobs.my_prompt_index" in check.detail
