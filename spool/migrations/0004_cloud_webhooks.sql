-- zmm spool schema, version 4: cloud backends, webhook deliveries, stats.
-- backend_requested: 'local' never leaves the machine, 'cloud' runs only on a
-- cloud provider, 'auto' runs locally and may fall back to the cloud when
-- cloud_allowed is 1 (resolved at enqueue time from --allow-cloud, --backend
-- and cloud.enabled, so a later config change never sends a queued job away).
ALTER TABLE jobs ADD COLUMN backend_requested TEXT NOT NULL DEFAULT 'auto'
    CHECK (backend_requested IN ('auto', 'local', 'cloud'));
ALTER TABLE jobs ADD COLUMN cloud_allowed INTEGER NOT NULL DEFAULT 0;

-- `zmm history --backend stability`: a page and its count from an index.
CREATE INDEX jobs_backend_seq ON jobs (backend, seq);

-- `zmm history` sums the cost of what it lists. Only cloud jobs cost money, so
-- the sum reads this small index alone (it holds every column a history filter
-- names) rather than every matching row; local jobs never enter it.
CREATE INDEX jobs_costly ON jobs (seq, cost_usd, status, request_type, requester, backend,
                                  model_used, model_requested, created_at) WHERE cost_usd > 0;

-- Fewer pages written per state change (the spool benchmark's claim + finish
-- went from 12 to 10 WAL frames): expired leases are found through
-- jobs_status_seq, since few jobs run at once, and job_events drops
-- AUTOINCREMENT, whose sqlite_sequence row was rewritten by every event. Its
-- ids still only grow: the newest event is never deleted while newer ones
-- are added, so ordering by id is ordering by insertion.
DROP INDEX jobs_leases;
CREATE TABLE job_events_rowid (
    id INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    from_state TEXT,
    to_state TEXT,
    message TEXT,
    data TEXT
);
INSERT INTO job_events_rowid (id, job_id, at, kind, from_state, to_state, message, data)
    SELECT id, job_id, at, kind, from_state, to_state, message, data FROM job_events;
DROP TABLE job_events;
ALTER TABLE job_events_rowid RENAME TO job_events;
CREATE INDEX job_events_job ON job_events (job_id, id);

-- `zmm stats` counts swaps, downgrades, cloud fallbacks and VRAM waits in a time
-- window. Only those rare events are indexed: the events every claim and finish
-- writes cost no extra page. Queries repeat this IN list word for word, which is
-- how SQLite knows the partial index applies.
CREATE INDEX job_events_notable ON job_events (kind, at)
    WHERE kind IN ('swap', 'downgrade', 'cloud_fallback', 'vram_wait');

-- The webhook outbox: a row is written in the same transaction that finishes
-- a job, so a delivery survives a killed worker. `body` is the exact JSON sent
-- (and signed) on every try; `delivery_id` lets a receiver drop duplicates.
CREATE TABLE webhook_deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id TEXT NOT NULL UNIQUE,
    job_id TEXT NOT NULL,
    url TEXT NOT NULL,
    event TEXT NOT NULL,                     -- job.succeeded | job.failed | job.cancelled
    body TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    tries INTEGER NOT NULL DEFAULT 0,
    next_try_at TEXT NOT NULL,
    claimed_by TEXT,                         -- the process delivering it now
    claim_expires_at TEXT,
    last_error TEXT,
    created_at TEXT NOT NULL,
    finished_at TEXT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_try_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_job ON webhook_deliveries (job_id);
