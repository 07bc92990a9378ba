-- zmm spool schema: the handles a script gives its jobs (docs/scripting.md).
-- name: what `--out DIR` calls the job's images (NAME.png, NAME-2.png); one path
-- component, checked at intake; NULL: the job id is the name.
-- idempotency_key: `--key` and a `--from` line's `key`: queueing a job under a
-- key the spool holds returns that job instead of queueing another. Unique
-- among the jobs kept (a purged row frees its key).
ALTER TABLE jobs ADD COLUMN name TEXT;
ALTER TABLE jobs ADD COLUMN idempotency_key TEXT;
CREATE UNIQUE INDEX jobs_by_key ON jobs (idempotency_key) WHERE idempotency_key IS NOT NULL;
