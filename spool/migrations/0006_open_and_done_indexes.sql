-- zmm spool schema, version 6: the queue and the finished jobs in two partial indexes.
-- jobs_status_seq held every job by (status, seq), so each claim and each finish
-- moved a job's entry from one part of it to another (two pages per state
-- change), and jobs_runnable held the queued jobs a second time. Now:
--   jobs_open: queued and running jobs in claim order, with the status last in
--     the key, so a claim rewrites its entry where it stands;
--   jobs_done: finished jobs by status and seq, as jobs_status_seq had them.
-- A claim + finish writes 8.7 WAL pages instead of 10.6. SQLite uses a partial
-- index only for a query that repeats its condition word for word: queries name
-- these two through zmm.store.queries.OPEN and DONE.
DROP INDEX jobs_runnable;
DROP INDEX jobs_status_seq;
CREATE INDEX jobs_open ON jobs (priority_rank, seq, status) WHERE status IN ('queued', 'running');
CREATE INDEX jobs_done ON jobs (status, seq) WHERE status IN ('succeeded', 'failed', 'cancelled');
