-- zmm spool schema, version 11: composition (text and branding drawn onto an
-- image with Pillow; the text itself is in the job's params, key `compose`).
-- plain_outputs: the JSON list of the images without text, kept beside the
-- composed ones in `outputs` (same order), relative to the assets root; NULL for
-- a job with nothing composed. source_job_id: the job whose image `zmm compose`
-- composed again (that job's plain image), without generating anything.
ALTER TABLE jobs ADD COLUMN plain_outputs TEXT;
ALTER TABLE jobs ADD COLUMN source_job_id TEXT;
