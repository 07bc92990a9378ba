-- zmm spool schema, version 10: several ComfyUI backends draining one spool.
-- backends: one row per configured backend ([[backends]] in config.toml, or the
-- one default backend), written by the worker that serves it on every heartbeat
-- and read by `zmm backends`, `zmm top`, `zmm queue` and the claim. `draining`
-- is the operator's switch (`zmm backends drain NAME`): the worker finishes what
-- runs there and claims no more until `resume`.
CREATE TABLE backends (
    name TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    gpu INTEGER,                        -- NVML index of a local server; NULL = remote
    worker_id TEXT,                     -- the worker serving it now (NULL: none)
    state TEXT NOT NULL DEFAULT 'unknown',  -- up | down | starting | stopped | unknown
    draining INTEGER NOT NULL DEFAULT 0,
    managed INTEGER NOT NULL DEFAULT 0, -- the worker starts and stops its ComfyUI
    restarts INTEGER NOT NULL DEFAULT 0,
    loaded_model TEXT,                  -- the checkpoint or diffusion model loaded last
    vram_total_bytes INTEGER,
    vram_free_bytes INTEGER,
    last_error TEXT,
    last_error_at TEXT,
    files TEXT,                         -- JSON list of 'folder/name' the server has
    files_at TEXT,                      -- when `files` was last read from the server
    heartbeat_at TEXT,
    updated_at TEXT NOT NULL
);

-- A job's routing: the backend it is pinned to (`zmm generate --on NAME`) and
-- the model files its graph loads, as a JSON list of 'folder/name' (read from
-- the bound graph at enqueue, custom --workflow graphs included). A worker
-- claims only jobs whose every needed file its server has.
ALTER TABLE jobs ADD COLUMN on_backend TEXT;
ALTER TABLE jobs ADD COLUMN needs TEXT;

-- Which backend a live worker serves.
ALTER TABLE workers ADD COLUMN backend TEXT;

-- Jobs by when they finished, for what `zmm backends` and `zmm top` count over the
-- last hour (a job queued long ago that finished a minute ago counts too).
CREATE INDEX jobs_completed ON jobs (completed_at) WHERE completed_at IS NOT NULL;
