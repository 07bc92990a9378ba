-- zmm spool schema, version 2: model grouping.
-- A worker may take a later job of the same priority class that uses the
-- checkpoint already loaded; every job it passes counts it here, and a job
-- passed over `worker.model_group_window` times is never passed again.
ALTER TABLE jobs ADD COLUMN passed_over INTEGER NOT NULL DEFAULT 0;
