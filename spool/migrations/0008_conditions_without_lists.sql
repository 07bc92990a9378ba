-- zmm spool schema, version 8: partial-index conditions SQLite tests by comparing.
-- SQLite evaluates `x IN (a, b, c)` against three or more constants by building
-- a temporary b-tree of them each time a statement runs; against one or two it
-- compares. Every claim and finish tested jobs_done's three-value condition for
-- the job's old and new row, and every event insert job_events_notable's
-- four-value one: 13 % of the instructions a claim + finish cost. The
-- conditions below select the same rows. Queries repeat them word for word
-- (zmm.store.queries.DONE, zmm.store.stats._NOTABLE), or SQLite would not use
-- these indexes.
DROP INDEX jobs_done;
CREATE INDEX jobs_done ON jobs (status, seq) WHERE status NOT IN ('queued', 'running');
DROP INDEX job_events_notable;
CREATE INDEX job_events_notable ON job_events (kind, at)
    WHERE kind = 'swap' OR kind = 'downgrade' OR kind = 'cloud_fallback' OR kind = 'vram_wait';
