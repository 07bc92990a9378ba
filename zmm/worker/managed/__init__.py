"""Processes a worker owns: the managed ComfyUI (supervisor, its child process)
and `serve-worker --all` (one worker process per backend)."""
