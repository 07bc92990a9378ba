-- zmm spool schema, version 7: events are written at the end of job_events.
-- Two changes, both so that a claim or a finish adds its event as the last row
-- of the table instead of splitting a full page in the middle of it (events
-- were 3.9 of the 10.1 WAL pages a claim + finish wrote):
-- * A job's `enqueued` event is kept in its row, as enqueued_note (the row has
--   the time: created_at). As a job_events row it sat among the other queued
--   jobs' events, and each later event of the job had to fit in beside it.
--   Jobs queued before schema 7 keep their stored `enqueued` event.
-- * Rows are keyed by an integer id, job_seq * 2^20 + n (n = 1, 2, ... within
--   the job), in a rowid table: a job's events are one id range, read without
--   an index, and a new last row costs one page (a WITHOUT ROWID table
--   rebalanced its last pages every few rows). job_seq and n remain, computed.
ALTER TABLE jobs ADD COLUMN enqueued_note TEXT;
CREATE TABLE job_events_by_id (
    id INTEGER PRIMARY KEY CHECK ((id & 1048575) > 0),  -- n never reaches the next job's ids
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    from_state TEXT,
    to_state TEXT,
    message TEXT,
    data TEXT,
    job_seq INTEGER GENERATED ALWAYS AS (id >> 20) VIRTUAL,
    n INTEGER GENERATED ALWAYS AS (id & 1048575) VIRTUAL
);
INSERT INTO job_events_by_id (id, at, kind, from_state, to_state, message, data)
    SELECT job_seq * 1048576 + n, at, kind, from_state, to_state, message, data
    FROM job_events ORDER BY job_seq, n;
DROP TABLE job_events;
ALTER TABLE job_events_by_id RENAME TO job_events;
-- As in schemas 4 and 5: only the rare events `zmm stats` counts are indexed.
CREATE INDEX job_events_notable ON job_events (kind, at)
    WHERE kind IN ('swap', 'downgrade', 'cloud_fallback', 'vram_wait');
