-- zmm spool schema, version 17: what a worker decided about a job gets columns of
-- its own, and `params` stays the request as queued (written once, never again).
--   oom_retried      1: ComfyUI ran out of GPU memory once; the next time fails
--   enhance_skipped  why the local LLM could not enhance the prompt (--enhance on)
--   vram_wait_ts     when the VRAM gate first held the job back (Unix time)
--   downgraded_from  the model the job asked for before the VRAM gate moved it to
--                    SD1.5 (model_requested, width, height, workflow are the SD1.5 ones)
-- A job's earlier decisions, kept inside `params` by older versions, move here.
ALTER TABLE jobs ADD COLUMN oom_retried INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN enhance_skipped TEXT;
ALTER TABLE jobs ADD COLUMN vram_wait_ts REAL;
ALTER TABLE jobs ADD COLUMN downgraded_from TEXT;
UPDATE jobs SET
    oom_retried = CASE WHEN json_extract(params, '$.oom_retried') THEN 1 ELSE 0 END,
    enhance_skipped = json_extract(params, '$.enhance_skipped'),
    vram_wait_ts = json_extract(params, '$.vram_wait_since'),
    downgraded_from = json_extract(params, '$.downgraded_from'),
    params = json_remove(params, '$.oom_retried', '$.enhance_skipped', '$.vram_wait_since',
                         '$.downgraded_from')
WHERE json_type(params, '$.oom_retried') IS NOT NULL
   OR json_type(params, '$.enhance_skipped') IS NOT NULL
   OR json_type(params, '$.vram_wait_since') IS NOT NULL
   OR json_type(params, '$.downgraded_from') IS NOT NULL;
