-- zmm spool schema, version 1.
-- jobs: one row per generation, from queued to finished (the seed's
-- multimodal_generations columns plus what the worker needs).
CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused: FIFO order and the id's guarantee
    id TEXT NOT NULL UNIQUE,                 -- mmg-YYYYMMDD-HHMMSS-xxxxxxxx
    request_type TEXT NOT NULL DEFAULT 'image',
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    priority TEXT NOT NULL CHECK (priority IN ('CRITICAL', 'HIGH', 'MEDIUM', 'LOW')),
    priority_rank INTEGER NOT NULL,
    prompt TEXT NOT NULL,                    -- as the user wrote it
    negative_prompt TEXT NOT NULL DEFAULT '',
    requester TEXT NOT NULL,
    quality_tier TEXT,
    style TEXT,
    workflow TEXT NOT NULL,                  -- template name or custom workflow path
    model_requested TEXT,                    -- checkpoint the request resolved to
    params TEXT NOT NULL,                    -- JSON: resolved parameters (and a custom graph)
    seed INTEGER,
    width INTEGER,
    height INTEGER,
    steps INTEGER,
    webhook_url TEXT,
    batch_id TEXT,                           -- jobs enqueued by one command share it
    backend TEXT,                            -- 'local' or a cloud provider's name
    model_used TEXT,
    generation_time_s REAL,
    vram_used_gb REAL,
    cost_usd REAL,
    output_path TEXT,                        -- first output, relative to the assets root
    outputs TEXT,                            -- JSON list of every output
    output_url TEXT,
    file_size_bytes INTEGER,
    sha256 TEXT,
    thumbnail_path TEXT,
    created_at TEXT NOT NULL,
    queued_at TEXT NOT NULL,                 -- last time it entered the queue (aging)
    queued_ts REAL NOT NULL,                 -- the same, as epoch seconds for arithmetic
    started_at TEXT,
    completed_at TEXT,
    updated_at TEXT NOT NULL,
    error_message TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,     -- submissions to a backend that were lost or failed
    retry_count INTEGER NOT NULL DEFAULT 0,  -- explicit retries and automatic requeues
    not_before TEXT,                         -- backoff: not claimable before this time
    worker_id TEXT,
    lease_expires_at TEXT,
    comfy_prompt_id TEXT,
    comfy_url TEXT,
    submitted_at TEXT,
    phase TEXT,                              -- queued | waiting | submitted | loading | sampling | saving | done
    phase_detail TEXT,
    progress_value INTEGER,
    progress_max INTEGER,
    progress_node TEXT,
    progress_at TEXT,
    cancel_requested_at TEXT,
    pinned INTEGER NOT NULL DEFAULT 0,
    asset_deleted_at TEXT
);

CREATE INDEX jobs_runnable ON jobs (priority_rank, seq) WHERE status = 'queued';
CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE status = 'running';
CREATE INDEX jobs_status_seq ON jobs (status, seq);
CREATE INDEX jobs_requester_seq ON jobs (requester, seq);
CREATE INDEX jobs_model_seq ON jobs (model_used, seq);
CREATE INDEX jobs_created ON jobs (created_at);
CREATE INDEX jobs_batch ON jobs (batch_id);

-- Full-text index over prompts for `zmm history --search`.
CREATE VIRTUAL TABLE jobs_fts USING fts5 (prompt, negative_prompt, content = 'jobs', content_rowid = 'seq');
CREATE TRIGGER jobs_fts_insert AFTER INSERT ON jobs BEGIN
    INSERT INTO jobs_fts (rowid, prompt, negative_prompt) VALUES (new.seq, new.prompt, new.negative_prompt);
END;
CREATE TRIGGER jobs_fts_delete AFTER DELETE ON jobs BEGIN
    INSERT INTO jobs_fts (jobs_fts, rowid, prompt, negative_prompt)
    VALUES ('delete', old.seq, old.prompt, old.negative_prompt);
END;

-- Every state change, swap, downgrade, wait and notice, in order.
CREATE TABLE job_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    from_state TEXT,
    to_state TEXT,
    message TEXT,
    data TEXT
);
CREATE INDEX job_events_job ON job_events (job_id, id);

-- Spool-wide switches (paused) and the persisted VRAM swap state.
CREATE TABLE spool_state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

-- Live workers, for `zmm queue` and for `generate` to know whether to run inline.
CREATE TABLE workers (
    id TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    comfy_url TEXT,
    started_at TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL,
    state TEXT
);
