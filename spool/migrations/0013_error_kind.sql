-- zmm spool schema, version 13: why a job failed, as a word (`error_kind`, beside
-- `error_message`; the list and its exit codes are zmm.errors.ERROR_KINDS). NULL for
-- a job that is queued, running or succeeded, and for a job that finished before
-- this version.
ALTER TABLE jobs ADD COLUMN error_kind TEXT CHECK (error_kind IN ('rejected', 'unavailable',
    'crash', 'execution', 'oom', 'timeout', 'output', 'cloud', 'enhance', 'cancelled'));
