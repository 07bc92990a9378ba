-- zmm spool schema, version 3: one indexed column for `zmm history --model`.
-- The checkpoint a job ran on, or the one it asked for if it has not run;
-- `model_used OR model_requested` in a query could use no index.
ALTER TABLE jobs ADD COLUMN model TEXT GENERATED ALWAYS AS (COALESCE(model_used, model_requested)) VIRTUAL;
CREATE INDEX jobs_model_any_seq ON jobs (model, seq);
DROP INDEX jobs_model_seq;
