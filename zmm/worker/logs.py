"""A worker's log for operators (journald, docker logs): Python `logging` on
stderr, one line per event, as text or as JSON lines (`serve-worker
--log-format`, `--log-level`). `LogObserver` is the Observer that writes it, in
place of the live display; `SecretFilter` passes every line through
zmm.secrets.scrub (secret values, URL credentials).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from zmm.secrets import scrub

LOGGER = "zmm.worker"
LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")


class SecretFilter(logging.Filter):
    """Every line and its fields through zmm.secrets.scrub."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = scrub(record.getMessage()), None
        fields = getattr(record, "fields", None)
        if fields:
            record.fields = {key: scrub(value) if isinstance(value, str) else value
                             for key, value in fields.items()}
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, and
    the event's fields (`event`, `job`, `status`, ...)."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                + f".{int(record.msecs):03d}Z", "level": record.levelname.lower(),
                "logger": record.name, "message": record.getMessage()}
        line.update(getattr(record, "fields", {}))
        return json.dumps(line, ensure_ascii=False)


def configure(*, level: str = "info", fmt: str = "text",
              stream: Any = None) -> logging.Logger:
    """The worker's logger, writing to stderr (or `stream`) at `level`."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(SecretFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger(LOGGER)
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False
    return logger


class LogObserver:
    """What a worker says, as log lines: one per wait, connection, phase change
    (debug), finished job and notice; each names the worker's `backend`."""

    def __init__(self, logger: logging.Logger, backend: str | None = None) -> None:
        self.log, self.backend = logger, backend

    def _say(self, level: int, message: str, **fields: Any) -> None:
        if self.backend is not None:  # which worker of `serve-worker --all` said it
            fields["backend"] = self.backend
        self.log.log(level, message, extra={"fields": fields})

    def waiting(self, url: str, reason: str, retry_in: float) -> None:
        self._say(logging.WARNING, f"waiting for ComfyUI at {url}: {reason}; retrying in "
                  f"{retry_in:g}s", event="waiting", url=url)

    def connected(self, url: str) -> None:
        self._say(logging.INFO, f"connected to ComfyUI at {url}", event="connected", url=url)

    def job_changed(self, inflight: Any) -> None:
        phase = getattr(inflight, "phase", None)
        self._say(logging.DEBUG, f"{inflight.job.id} {phase}", event="phase",
                  job=inflight.job.id, phase=phase)

    def job_finished(self, job: Any) -> None:
        status = str(getattr(job.status, "value", job.status))
        level = logging.INFO if status in ("succeeded", "queued", "running") else logging.WARNING
        detail = job.output_path if status == "succeeded" else (job.error_message or
                                                                  job.phase_detail or "")
        self._say(level, f"{job.id} {status}" + (f": {detail}" if detail else ""),
                  event="job", job=job.id, status=status)

    def notice(self, text: str) -> None:
        self._say(logging.INFO, text, event="notice")

    def stopped(self, text: str) -> None:
        self._say(logging.INFO, text, event="stopped")

    # the display's seam: nothing to draw
    def attach(self, store: Any, settings: Any) -> None:
        pass

    def __enter__(self) -> LogObserver:
        return self

    def __exit__(self, *exc: object) -> None:
        pass
