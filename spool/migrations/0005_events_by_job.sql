-- zmm spool schema, version 5: events stored next to their job's other events.
-- Every claim and finish adds an event. As a rowid table with an index on
-- job_id, each one wrote the table's last page and an index page (about 2.4
-- WAL pages per event, with the splits of an index keyed by random ids). Keyed
-- by (job_seq, n), an event is one row written beside its job's others, and a
-- job's timeline is read from one place without an index. `n` numbers a job's
-- events 1, 2, ... in the order they were written; jobs.seq is never reused.
-- Events of jobs whose row is gone (none are written that way) are not kept.
CREATE TABLE job_events_by_job (
    job_seq INTEGER NOT NULL,
    n INTEGER NOT NULL,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    from_state TEXT,
    to_state TEXT,
    message TEXT,
    data TEXT,
    PRIMARY KEY (job_seq, n)
) WITHOUT ROWID;
INSERT INTO job_events_by_job (job_seq, n, at, kind, from_state, to_state, message, data)
    SELECT jobs.seq, ROW_NUMBER() OVER (PARTITION BY jobs.seq ORDER BY job_events.id),
           job_events.at, job_events.kind, job_events.from_state, job_events.to_state,
           job_events.message, job_events.data
    FROM job_events JOIN jobs ON jobs.id = job_events.job_id
    ORDER BY 1, 2;
DROP TABLE job_events;
ALTER TABLE job_events_by_job RENAME TO job_events;
-- As in schema 4: only the rare events `zmm stats` counts are indexed.
CREATE INDEX job_events_notable ON job_events (kind, at)
    WHERE kind IN ('swap', 'downgrade', 'cloud_fallback', 'vram_wait');
