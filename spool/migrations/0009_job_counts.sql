-- zmm spool schema, version 9: how many jobs there are, in all and by model,
-- kept up to date as jobs come and go. `zmm history` prints how many jobs match
-- its filter; counting them walked the index entries one by one: all 1,000,000
-- jobs of the history benchmark took 20-32 ms, the 500,000 of one model 45-78 ms.
-- Triggers keep the counts with every insert, delete and change of model,
-- whoever writes the row (the pattern of sqlite-utils' enable_counts). A key is
-- 'all', or 'model:' followed by the job's model (jobs with no model are not
-- counted by model). Claims and finishes change neither, so they write nothing here.
-- A model with --since was counted by reading every row of the model for its
-- created_at (533 ms for 500,000 rows): jobs_model_created holds both, and
-- changes only when a job's model does.
CREATE INDEX jobs_model_created ON jobs (model, created_at);
CREATE TABLE job_counts (
    key TEXT PRIMARY KEY,
    n INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO job_counts (key, n) SELECT 'all', COUNT(*) FROM jobs;
INSERT INTO job_counts (key, n)
    SELECT 'model:' || model, COUNT(*) FROM jobs WHERE model IS NOT NULL GROUP BY model;
CREATE TRIGGER job_counts_insert AFTER INSERT ON jobs BEGIN
    UPDATE job_counts SET n = n + 1 WHERE key = 'all';
    INSERT INTO job_counts (key, n) SELECT 'model:' || new.model, 1 WHERE new.model IS NOT NULL
        ON CONFLICT (key) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER job_counts_delete AFTER DELETE ON jobs BEGIN
    UPDATE job_counts SET n = n - 1 WHERE key = 'all' OR key = 'model:' || old.model;
END;
CREATE TRIGGER job_counts_model AFTER UPDATE OF model_used, model_requested ON jobs
    WHEN old.model IS NOT new.model BEGIN
    UPDATE job_counts SET n = n - 1 WHERE key = 'model:' || old.model;
    INSERT INTO job_counts (key, n) SELECT 'model:' || new.model, 1 WHERE new.model IS NOT NULL
        ON CONFLICT (key) DO UPDATE SET n = n + 1;
END;
