-- zmm spool schema, version 4: cloud backends, webhook deliveries, stats.
-- backend_requested: 'local' never leaves the machine, 'cloud' runs only on a
-- cloud provider, 'auto' runs locally and may fall back to the cloud when
-- cloud_allowed is 1 (resolved at enqueue time from --allow-cloud, --backend
-- and cloud.enabled, so a later config change never sends a queued job away).
ALTER TABLE jobs ADD COLUMN backend_requested TEXT NOT NULL DEFAULT 'auto'
    CHECK (backend_requested IN ('auto', 'local', 'cloud'));
ALTER TABLE jobs ADD COLUMN cloud_allowed INTEGER NOT NULL DEFAULT 0;

-- `zmm history` sums the cost of what it lists; only cloud jobs cost money,
-- so the sum walks this small index rather than every matching row.
CREATE INDEX jobs_costly ON jobs (seq, cost_usd) WHERE cost_usd > 0;

-- `zmm stats` counts swaps, downgrades and cloud fallbacks in a time window.
CREATE INDEX job_events_kind_at ON job_events (kind, at);

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
