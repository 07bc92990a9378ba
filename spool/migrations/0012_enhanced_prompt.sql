-- zmm spool schema, version 12: the prompt the local LLM wrote for a job
-- (`zmm generate --enhance`, docs/enhance.md). `prompt` keeps what the user
-- typed; the workflow binds `enhanced_prompt` when it is set. NULL: not enhanced
-- (not asked, not yet, or Ollama could not: the job's events say which).
ALTER TABLE jobs ADD COLUMN enhanced_prompt TEXT;
