-- zmm spool schema, version 15: the name of the backend a job ran on. A
-- backend's name is its key (the backends table); `comfy_url` stays as the
-- address the job was submitted to. Set when a worker claims the job for its
-- backend or adopts it from a dead worker; NULL: never claimed by a ComfyUI
-- backend's worker (queued, cancelled while queued, or claimed for the cloud).
-- `zmm backends` and `zmm top` count jobs per backend by it.
ALTER TABLE jobs ADD COLUMN backend_name TEXT;

-- Jobs from before: the backend whose row has the job's URL, when exactly one
-- row has it (two rows with one URL cannot tell which ran the job).
UPDATE jobs SET backend_name = (
    SELECT MIN(name) FROM backends WHERE backends.url = jobs.comfy_url HAVING COUNT(*) = 1)
WHERE comfy_url IS NOT NULL;
